//! Markov chain Monte Carlo: NUTS on a model's full-data log-joint in its
//! unconstrained coordinates (the Jacobians of the links are part of
//! [`Model::prior`], so nothing is added here).
//!
//! Chains run in parallel (rayon); each chain's random streams derive from
//! the seed and the chain index only, so results do not depend on the number
//! of threads. The sampler moves in preconditioned coordinates
//! `x = loc + scale · z`: with a warm start, `loc`/`scale` are the SVI
//! posterior's location and scales, which is how the mass-matrix adaptation
//! "starts from the SVI scales" (nuts-rs offers no initial mass matrix; an
//! affine change of variables is the same thing). Cold starts use `loc = 0`,
//! `scale = 1` and the spec's uniform(−2, 2) initial values.

pub mod init;
mod nuts;

use crate::data::Batch;
use crate::error::{CoreError, Result};
use crate::models::{log_joint_grad, Model};
use crate::progress::{Cancel, ChainProgress, ChainStatus};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

/// Mass-matrix adaptation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MassMatrix {
    /// Diagonal, adapted from draws and gradients (the default).
    Diagonal,
    /// Diagonal plus a low-rank correction from the leading eigenvectors of
    /// the draws' covariance; the "dense" option for small, correlated models.
    LowRank,
}

#[derive(Debug, Clone, PartialEq)]
pub struct McmcConfig {
    /// Kept draws per chain.
    pub n_samples: usize,
    /// Adaptation draws per chain (discarded).
    pub n_warmup: usize,
    pub n_chains: usize,
    pub seed: u64,
    pub target_accept: f64,
    pub max_tree_depth: usize,
    pub mass_matrix: MassMatrix,
}

impl Default for McmcConfig {
    fn default() -> Self {
        McmcConfig {
            n_samples: 2000,
            n_warmup: 1000,
            n_chains: 1,
            seed: 42,
            target_accept: 0.8,
            max_tree_depth: 10,
            mass_matrix: MassMatrix::Diagonal,
        }
    }
}

/// Half-width of uniform starts on the unconstrained scale (the spec's (−2, 2)).
pub const DEFAULT_INIT_RADIUS: f64 = 2.0;
/// Half-width of starts around an SVI fit, in its posterior standard deviations.
pub const DEFAULT_INIT_SPREAD: f64 = 1.0;

/// Where chains start.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// Every coordinate uniform in `(−radius, radius)` (unconstrained space).
    Uniform { radius: f64 },
    /// Around a point with known posterior scales: `x = loc + scale · z`,
    /// `z` uniform in `(−spread, spread)`; the sampler is preconditioned by `scale`.
    Around {
        loc: Vec<f64>,
        scale: Vec<f64>,
        spread: f64,
    },
}

/// One chain's kept draws (unconstrained `x`, draw-major: draw `s` is
/// `draws[s·dim .. (s+1)·dim]`) and per-draw sampler statistics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChainTrace {
    pub draws: Vec<f64>,
    pub diverging: Vec<bool>,
    pub tree_depth: Vec<u32>,
    pub n_leapfrog: Vec<u32>,
    pub step_size: Vec<f64>,
    /// Hamiltonian at each draw (for E-BFMI).
    pub energy: Vec<f64>,
    /// Log-joint at each draw (in the sampler's coordinates; a constant apart from `x`'s).
    pub lp: Vec<f64>,
    pub warmup_divergences: usize,
    /// Gradient evaluations, warmup included.
    pub n_grad: u64,
}

impl ChainTrace {
    fn with_capacity(dim: usize, n: usize) -> Self {
        ChainTrace {
            draws: Vec::with_capacity(dim * n),
            ..Default::default()
        }
    }

    /// Energy Bayesian fraction of missing information: `Σ(ΔE)² / Σ(E − Ē)²`;
    /// below 0.3 the momentum resampling explores the energy levels poorly.
    pub fn e_bfmi(&self) -> f64 {
        let e = &self.energy;
        if e.len() < 2 {
            return f64::NAN;
        }
        let mean = e.iter().sum::<f64>() / e.len() as f64;
        let num: f64 = e.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum();
        let den: f64 = e.iter().map(|v| (v - mean).powi(2)).sum();
        num / den
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct McmcFit {
    pub dim: usize,
    pub chains: Vec<ChainTrace>,
}

/// A log-density with gradient on `R^dim`: what the sampler needs. A
/// non-finite value or gradient counts as a divergence.
pub trait LogDensity: Send {
    fn dim(&self) -> usize;
    /// Writes the gradient into `grad` (overwriting) and returns the log-density.
    fn logp(&mut self, x: &[f64], grad: &mut [f64]) -> f64;
}

/// A model's full-data log-joint.
struct ModelDensity<'a, M: Model> {
    model: &'a M,
    batch: &'a Batch,
    ws: M::Workspace,
}

impl<M: Model> LogDensity for ModelDensity<'_, M> {
    fn dim(&self) -> usize {
        self.model.layout().total
    }
    fn logp(&mut self, x: &[f64], grad: &mut [f64]) -> f64 {
        log_joint_grad(self.model, x, self.batch, grad, &mut self.ws)
    }
}

/// `D` in the sampler's coordinates `z`, `x = loc + scale · z`; polls `cancel`.
struct Preconditioned<'a, D: LogDensity> {
    density: D,
    loc: &'a [f64],
    scale: &'a [f64],
    x: Vec<f64>,
    gx: Vec<f64>,
    cancel: &'a dyn Cancel,
}

impl<D: LogDensity> nuts::Target for Preconditioned<'_, D> {
    fn dim(&self) -> usize {
        self.loc.len()
    }
    fn logp(&mut self, z: &[f64], grad: &mut [f64]) -> std::result::Result<f64, nuts::TargetError> {
        if self.cancel.cancelled() {
            return Err(nuts::TargetError::Cancelled);
        }
        for (k, x) in self.x.iter_mut().enumerate() {
            *x = self.loc[k] + self.scale[k] * z[k];
        }
        let lp = self.density.logp(&self.x, &mut self.gx);
        for (k, g) in grad.iter_mut().enumerate() {
            *g = self.scale[k] * self.gx[k];
        }
        Ok(lp)
    }
}

/// Independent seeds for chain `chain`'s start and its sampler (SplitMix64).
fn chain_seeds(seed: u64, chain: usize) -> (u64, u64) {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let base = mix(seed ^ mix(chain as u64 + 1));
    (mix(base ^ 0x0053_5441_5254), mix(base ^ 0x4e55_5453))
}

/// Runs `cfg.n_chains` NUTS chains on `model`'s full-data posterior.
pub fn run<M: Model>(
    model: &M,
    cfg: &McmcConfig,
    start: &Start,
    progress: &dyn ChainProgress,
    cancel: &dyn Cancel,
) -> Result<McmcFit> {
    let batch = Batch::full(model.data());
    sample(
        || ModelDensity {
            model,
            batch: &batch,
            ws: model.workspace(),
        },
        cfg,
        start,
        progress,
        cancel,
    )
}

/// Runs `cfg.n_chains` NUTS chains on any log-density; `make` builds one
/// density (with its own scratch space) per chain.
pub fn sample<D: LogDensity, F: Fn() -> D + Sync>(
    make: F,
    cfg: &McmcConfig,
    start: &Start,
    progress: &dyn ChainProgress,
    cancel: &dyn Cancel,
) -> Result<McmcFit> {
    let dim = make().dim();
    if cfg.n_samples == 0 || cfg.n_chains == 0 {
        return Err(CoreError::arg("n_samples", "must be at least 1"));
    }
    // Kept draws plus six per-draw statistics, in every chain.
    let per_chain = cfg.n_samples as f64 * (dim as f64 + 6.0);
    crate::limits::check_values("n_samples", per_chain)?;
    crate::limits::check_values("n_chains", cfg.n_chains as f64 * per_chain)?;
    if cfg.n_chains > 1024 {
        return Err(CoreError::arg(
            "n_chains",
            format!("({}) must be at most 1024", cfg.n_chains),
        ));
    }
    if !(cfg.target_accept > 0.0 && cfg.target_accept < 1.0) {
        return Err(CoreError::arg("target_accept_prob", "must be in (0, 1)"));
    }
    if cfg.max_tree_depth == 0 || cfg.max_tree_depth > 30 {
        return Err(CoreError::arg("max_tree_depth", "must be between 1 and 30"));
    }
    let (loc, scale) = match start {
        Start::Uniform { .. } => (vec![0.0; dim], vec![1.0; dim]),
        Start::Around { loc, scale, .. } => {
            if loc.len() != dim || scale.len() != dim {
                return Err(CoreError::arg(
                    "svi_init",
                    "does not match the model's parameters",
                ));
            }
            if scale.iter().any(|s| !(s.is_finite() && *s > 0.0))
                || loc.iter().any(|v| !v.is_finite())
            {
                return Err(CoreError::arg(
                    "svi_init",
                    "has non-finite or non-positive scales",
                ));
            }
            (loc.clone(), scale.clone())
        }
    };
    let chains: Vec<Result<ChainTrace>> = (0..cfg.n_chains)
        .into_par_iter()
        .map(|chain| {
            let (s_init, s_nuts) = chain_seeds(cfg.seed, chain);
            let mut target = Preconditioned {
                density: make(),
                loc: &loc,
                scale: &scale,
                x: vec![0.0; dim],
                gx: vec![0.0; dim],
                cancel,
            };
            let z0 = initial_z(&mut target, start, s_init, chain)?;
            let mut on_draw = |st: &ChainStatus| {
                progress.chain(st);
                !cancel.cancelled()
            };
            let mut tr = nuts::sample_chain(target, &z0, cfg, chain, s_nuts, &mut on_draw)?;
            for d in tr.draws.chunks_mut(dim) {
                for (k, v) in d.iter_mut().enumerate() {
                    *v = loc[k] + scale[k] * *v;
                }
            }
            Ok(tr)
        })
        .collect();
    let mut out = Vec::with_capacity(chains.len());
    // A cancel anywhere wins over other errors, so Ctrl-C always reads as Ctrl-C.
    if chains
        .iter()
        .any(|c| matches!(c, Err(CoreError::Cancelled(_))))
    {
        return Err(CoreError::cancelled());
    }
    for c in chains {
        out.push(c?);
    }
    Ok(McmcFit { dim, chains: out })
}

/// A random starting point with a finite log-density and gradient (up to 100 tries).
fn initial_z<D: LogDensity>(
    target: &mut Preconditioned<'_, D>,
    start: &Start,
    seed: u64,
    chain: usize,
) -> Result<Vec<f64>> {
    use nuts::Target;
    let dim = target.dim();
    let radius = match start {
        Start::Uniform { radius } => *radius,
        Start::Around { spread, .. } => *spread,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut grad = vec![0.0; dim];
    for _ in 0..100 {
        let z: Vec<f64> = (0..dim)
            .map(|_| {
                if radius > 0.0 {
                    rng.random_range(-radius..radius)
                } else {
                    0.0
                }
            })
            .collect();
        match target.logp(&z, &mut grad) {
            Err(nuts::TargetError::Cancelled) => return Err(CoreError::cancelled()),
            Ok(lp) if lp.is_finite() && grad.iter().all(|g| g.is_finite()) => return Ok(z),
            _ => {}
        }
    }
    Err(CoreError::Mcmc(format!(
        "chain {}: no finite starting point in 100 tries",
        chain + 1
    )))
}
