//! Laplace inference for the log-normal family: per-cell MAP latents by
//! damped Newton (nested Woodbury, O(G k² + k³) per step, cells in
//! parallel), and an outer optimiser on the global parameters of the
//! Laplace-approximated marginal likelihood, with the MAPs held fixed.
//! PLN and NBLN (with or without capture, with empirical priors and frozen
//! values from an SVI cascade) are implemented; LNM and LNMVCP are not yet.

pub mod cascade;
pub mod cell;
pub mod init;
pub mod lnm;
pub mod posterior;
pub mod w_prior;
pub mod woodbury;

use crate::data::{BatchSampler, CountMatrix};
use crate::error::{CoreError, Result};
use crate::math::{sigmoid, softplus, softplus_inv};
use crate::progress::{Cancel, Progress};
use crate::svi::optim::{Optimizer, OptimizerConfig};
use cell::{EtaMode, NegBin, Obs, OuterGrad, Poisson};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use woodbury::SigmaFactor;

/// A snapshot of the fit: `(θ, latents, η)`.
type State = (Vec<f64>, Vec<f64>, Vec<f64>);

/// Cells per parallel work unit; fixed so sums group the same way on any
/// number of threads.
const CELL_CHUNK: usize = 32;

/// Which log-normal model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LnModel {
    /// `u ~ Poisson(e^ℓ)`.
    Pln,
    /// `u ~ NB(mean e^ℓ, r_g)`, with a global per-gene dispersion `r`.
    Nbln,
    /// Logistic-normal multinomial: compositions in log-ratio coordinates
    /// against a reference gene, with an NB model of the totals.
    Lnm,
}

/// The capture block.
#[derive(Debug, Clone, PartialEq)]
pub enum Capture {
    None,
    /// `η_c ~ TruncN(ln M0 − ln L_c, σ, low = 0)`.
    Anchor {
        ln_m0: f64,
        sigma: f64,
    },
    /// Per-cell empirical prior `η_c ~ TruncN(loc_c, scale_c, low = 0)` (cascade).
    PerCell {
        loc: Vec<f64>,
        scale: Vec<f64>,
    },
    /// `η_c` frozen at these values (cascade): an offset, not a latent.
    Frozen(Vec<f64>),
}

/// Empirical priors and frozen values for the globals (NBLN cascade). Priors
/// are Normal on `r_loc = softplus⁻¹(r)` and on `μ`; frozen values win.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cascade {
    pub r_prior: Option<(Vec<f64>, Vec<f64>)>,
    pub mu_prior: Option<(Vec<f64>, Vec<f64>)>,
    /// Frozen dispersions `r` (not `r_loc`).
    pub r_frozen: Option<Vec<f64>>,
    pub mu_frozen: Option<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaplaceConfig {
    pub model: LnModel,
    pub latent_dim: usize,
    pub n_steps: usize,
    pub batch_size: Option<usize>,
    pub n_newton_steps: usize,
    /// Tikhonov term added to the Newton matrix (not to the ELBO's log-det).
    pub damping: f64,
    /// Sup-norm of a cell's gradient below which its MAP counts as converged.
    pub newton_tolerance: f64,
    pub newton_max_step: f64,
    pub rescue_diverged_cells: bool,
    pub rescue_threshold_multiplier: f64,
    pub rescue_n_newton: usize,
    pub rescue_damping_multiplier: f64,
    pub optimizer: OptimizerConfig,
    pub seed: u64,
    pub n_reports: usize,
    pub capture: Capture,
    pub cascade: Cascade,
    pub loadings_prior: w_prior::LoadingsPrior,
    /// LNM `d_mode = "low_rank"`: `y = μ + W z`, `z ~ N(0, I_k)`, Newton over
    /// `z` (d unused); otherwise ("learned") Newton over `y ~ N(μ, WWᵀ + diag d)`.
    pub lnm_low_rank: bool,
    /// The SVI engine's early-stopping rule on the outer loss (`None`: off,
    /// and unlike the original nothing is restored unless it is given).
    pub early_stopping: Option<crate::svi::early_stop::EarlyStopping>,
}

impl Default for LaplaceConfig {
    fn default() -> Self {
        LaplaceConfig {
            model: LnModel::Pln,
            latent_dim: 10,
            n_steps: 50_000,
            batch_size: None,
            n_newton_steps: 5,
            damping: 1e-2,
            newton_tolerance: 1e-4,
            newton_max_step: 5.0,
            rescue_diverged_cells: true,
            rescue_threshold_multiplier: 10.0,
            rescue_n_newton: 50,
            rescue_damping_multiplier: 10.0,
            optimizer: OptimizerConfig::default(),
            seed: 42,
            n_reports: 100,
            capture: Capture::None,
            cascade: Cascade::default(),
            loadings_prior: w_prior::LoadingsPrior::None,
            lnm_low_rank: false,
            early_stopping: None,
        }
    }
}

/// A Laplace fit: globals, per-cell MAP latents (cell-major, `C × G`) and diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct LaplaceFit {
    pub n_genes: usize,
    pub latent_dim: usize,
    pub mu: Vec<f64>,
    /// Loadings, row-major `G × k`.
    pub w: Vec<f64>,
    pub d: Vec<f64>,
    /// NBLN dispersions (empty for PLN).
    pub r: Vec<f64>,
    /// LNM: `(μ_T, r_T)` of the totals model; empty otherwise.
    pub totals: Vec<f64>,
    /// LNM: the reference gene of the log-ratios (μ, W, d and latents cover the others).
    pub reference: Option<usize>,
    pub latents: Vec<f64>,
    /// Per-cell MAP (or frozen) `η` (empty without capture); `ν = e^{−η}`.
    pub eta: Vec<f64>,
    pub loss_history: Vec<f64>,
    /// Per-cell gradient sup-norm after the final sweep (and rescue).
    pub grad_norms: Vec<f64>,
    pub rescued: Vec<bool>,
    /// Cell-steps whose ELBO was non-finite (left out of that step).
    pub masked_cells: usize,
    /// Why the outer loop stopped early, if it did (best state restored).
    pub aborted: Option<String>,
    /// Stopped by the early-stopping rule.
    pub early_stopped: bool,
    /// Step (1-based) whose smoothed-best state was restored, if any.
    pub restored_step: Option<usize>,
    /// Auxiliary parameters of the loadings prior (unconstrained).
    pub w_prior_aux: Vec<f64>,
    pub w_prior: w_prior::WPriorDiagnostics,
}

/// Offsets of the blocks of `θ = [μ | W | d_loc | extra | aux]`, where
/// `extra` is `r_loc` (G, NBLN) or `(μ_T, r_T)` raw (2, LNM); `g` is the
/// latent dimension (G − 1 for LNM).
#[derive(Debug, Clone, Copy)]
struct Layout {
    g: usize,
    k: usize,
    has_r: bool,
    /// LNM's reference gene.
    reference: Option<usize>,
    /// Low-rank LNM: each cell's latent is `z ∈ R^k`.
    low_rank: bool,
}

impl Layout {
    fn w(&self) -> usize {
        self.g
    }
    fn d(&self) -> usize {
        self.g + self.g * self.k
    }
    fn r(&self) -> usize {
        self.d() + self.g
    }
    /// Length of one cell's latent vector.
    fn lat_dim(&self) -> usize {
        if self.low_rank {
            self.k
        } else {
            self.g
        }
    }
    fn n_extra(&self) -> usize {
        if self.has_r {
            self.g
        } else if self.reference.is_some() {
            2
        } else {
            0
        }
    }
    fn aux(&self) -> usize {
        self.r() + self.n_extra()
    }
}

/// The per-cell capture mode and the per-cell prior of `η`.
pub(crate) struct EtaSpec {
    pub(crate) mode: Vec<EtaMode>,
}

impl EtaSpec {
    pub(crate) fn new(capture: &Capture, data: &CountMatrix) -> Result<(Self, Vec<f64>)> {
        let n = data.n_cells;
        let bad = |m: &str| Err(CoreError::arg("priors", m.to_string()));
        Ok(match capture {
            Capture::None => (
                EtaSpec {
                    mode: vec![EtaMode::None; n],
                },
                vec![0.0; n],
            ),
            Capture::Anchor { ln_m0, sigma } => {
                if !(*sigma > 0.0) || !ln_m0.is_finite() {
                    return bad("capture_efficiency must be c(log(M0), sigma) with sigma > 0");
                }
                let anchors: Vec<f64> = data
                    .lib_size
                    .iter()
                    .map(|&l| ln_m0 - l.max(1.0).ln())
                    .collect();
                let mode = anchors
                    .iter()
                    .map(|&a| EtaMode::Free {
                        anchor: a,
                        sigma: *sigma,
                    })
                    .collect();
                let eta0 = anchors.iter().map(|a| a.max(cell::ETA_MIN)).collect();
                (EtaSpec { mode }, eta0)
            }
            Capture::PerCell { loc, scale } => {
                if loc.len() != n || scale.len() != n || scale.iter().any(|s| !(*s > 0.0)) {
                    return bad("the per-cell capture prior does not match the cells");
                }
                let mode = loc
                    .iter()
                    .zip(scale)
                    .map(|(&a, &s)| EtaMode::Free {
                        anchor: a,
                        sigma: s,
                    })
                    .collect();
                (
                    EtaSpec { mode },
                    loc.iter().map(|a| a.max(cell::ETA_MIN)).collect(),
                )
            }
            Capture::Frozen(eta) => {
                if eta.len() != n || eta.iter().any(|e| !e.is_finite()) {
                    return bad("the frozen capture values do not match the cells");
                }
                (
                    EtaSpec {
                        mode: vec![EtaMode::Fixed; n],
                    },
                    eta.clone(),
                )
            }
        })
    }
}

/// Globals read from `θ` for one step.
struct Globals<'a> {
    mu: &'a [f64],
    w: &'a [f64],
    d: Vec<f64>,
    r: Vec<f64>,
    /// LNM totals `(μ_T, r_T)`.
    totals: (f64, f64),
    sig: SigmaFactor,
}

impl<'a> Globals<'a> {
    fn new(th: &'a [f64], lay: Layout) -> Option<Self> {
        let (g, k) = (lay.g, lay.k);
        let mu = &th[..g];
        let w = &th[lay.w()..lay.w() + g * k];
        let d: Vec<f64> = th[lay.d()..lay.d() + g]
            .iter()
            .map(|&v| softplus(v))
            .collect();
        let r = if lay.has_r {
            th[lay.r()..lay.r() + g]
                .iter()
                .map(|&v| softplus(v))
                .collect()
        } else {
            Vec::new()
        };
        let totals = if lay.reference.is_some() {
            (softplus(th[lay.r()]), softplus(th[lay.r() + 1]))
        } else {
            (f64::NAN, f64::NAN)
        };
        let sig = SigmaFactor::new(w, &d, k)?;
        Some(Globals {
            mu,
            w,
            d,
            r,
            totals,
            sig,
        })
    }
}

/// Newton on `cells` (their latents in `lat`, `len·G`, and `eta`) and, with
/// `want_grad`, the ELBO gradient in `[μ | W | d | r]` order. Returns
/// (Σ ELBO over finite cells, per-cell grad norms, masked count, gradient).
#[allow(clippy::too_many_arguments)]
fn sweep(
    data: &CountMatrix,
    cells: &[usize],
    lat: &mut [f64],
    eta: &mut [f64],
    modes: &EtaSpec,
    gl: &Globals<'_>,
    lay: Layout,
    n_newton: usize,
    damping: f64,
    max_step: f64,
    want_grad: bool,
) -> (f64, Vec<f64>, usize, Vec<f64>) {
    let (g, k) = (lay.g, lay.k);
    let np = g * (k + 2) + lay.n_extra();
    let nb = NegBin { r: &gl.r };
    let obs: &dyn Obs = if lay.has_r { &nb } else { &Poisson };
    let parts: Vec<(f64, Vec<f64>, usize, Vec<f64>)> = lat
        .par_chunks_mut(CELL_CHUNK * lay.lat_dim())
        .zip(cells.par_chunks(CELL_CHUNK))
        .zip(eta.par_chunks_mut(CELL_CHUNK))
        .map(|((lchunk, cchunk), echunk)| {
            let mut u = vec![0.0; data.n_genes];
            let mut grad = vec![0.0; if want_grad { np } else { 0 }];
            let mut tmp = vec![0.0; if want_grad { np } else { 0 }];
            let (mut elbo, mut masked) = (0.0, 0);
            let mut norms = Vec::with_capacity(cchunk.len());
            for (i, (x, &c)) in lchunk.chunks_mut(lay.lat_dim()).zip(cchunk).enumerate() {
                cell::dense_counts(data, c, &mut u);
                let (x0, e0) = (x.to_vec(), echunk[i]);
                let mode = modes.mode[c];
                if let Some(rf) = lay.reference {
                    let (gn, e) = lnm_cell(
                        &mut echunk[i],
                        mode,
                        &u,
                        rf,
                        data.lib_size[c],
                        x,
                        gl,
                        lay,
                        n_newton,
                        damping,
                        max_step,
                        want_grad,
                        &mut tmp,
                    );
                    if !x.iter().all(|v| v.is_finite()) || !echunk[i].is_finite() {
                        x.copy_from_slice(&x0);
                        echunk[i] = e0;
                    }
                    norms.push(gn);
                    if want_grad {
                        if e.is_finite() && tmp.iter().all(|v| v.is_finite()) {
                            elbo += e;
                            for (a, b) in grad.iter_mut().zip(&tmp) {
                                *a += b;
                            }
                        } else {
                            masked += 1;
                        }
                    }
                    continue;
                }
                let gn = cell::newton(
                    obs,
                    &u,
                    x,
                    &mut echunk[i],
                    mode,
                    gl.mu,
                    gl.w,
                    &gl.sig,
                    n_newton,
                    damping,
                    max_step,
                );
                if !x.iter().all(|v| v.is_finite()) || !echunk[i].is_finite() {
                    x.copy_from_slice(&x0);
                    echunk[i] = e0;
                }
                norms.push(gn);
                if want_grad {
                    tmp.iter_mut().for_each(|v| *v = 0.0);
                    let (tm, rest) = tmp.split_at_mut(g);
                    let (tw, rest) = rest.split_at_mut(g * k);
                    let (td, tr) = rest.split_at_mut(g);
                    let out = OuterGrad {
                        mu: tm,
                        w: tw,
                        d: td,
                        r: tr,
                    };
                    let e = cell::elbo_grad(
                        obs, &u, x, echunk[i], mode, gl.mu, gl.w, &gl.d, &gl.sig, k, out,
                    );
                    if e.is_finite() && tmp.iter().all(|v| v.is_finite()) {
                        elbo += e;
                        for (a, b) in grad.iter_mut().zip(&tmp) {
                            *a += b;
                        }
                    } else {
                        masked += 1;
                    }
                }
            }
            (elbo, norms, masked, grad)
        })
        .collect();
    let mut total = 0.0;
    let mut norms = Vec::with_capacity(cells.len());
    let mut masked = 0;
    let mut grad = vec![0.0; if want_grad { np } else { 0 }];
    for (e, n, m, gr) in parts {
        total += e;
        norms.extend(n);
        masked += m;
        for (a, b) in grad.iter_mut().zip(&gr) {
            *a += b;
        }
    }
    (total, norms, masked, grad)
}

/// The outer loop's divergence detector (active from step 50): a
/// non-finite loss; a climb of more than half the initial |loss| above the
/// running minimum; a loss 1000 times the initial one in magnitude; and,
/// after 5000 steps, a smoothed loss (last 100) more than 1% above the
/// initial one for 500 steps in a row (checked every 100).
#[derive(Debug)]
struct Guards {
    init_signed: f64,
    running_min: f64,
    drift: usize,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            init_signed: f64::NAN,
            running_min: f64::INFINITY,
            drift: 0,
        }
    }
}

impl Guards {
    fn check(&mut self, step: usize, loss: f64, history: &[f64]) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!("the loss became {loss}"));
        }
        if self.init_signed.is_nan() {
            self.init_signed = loss;
        }
        let init = self.init_signed.abs();
        self.running_min = self.running_min.min(loss);
        if step < 50 {
            return None;
        }
        if loss - self.running_min > 0.5 * init {
            return Some(format!(
                "the loss climbed to {loss:.4e} from its minimum {:.4e}",
                self.running_min
            ));
        }
        if loss.abs() > 1000.0 * init {
            return Some(format!("the loss grew to {loss:.4e}"));
        }
        if step % 100 == 99 && step + 1 > 5000 && history.len() >= 100 {
            let last: Vec<f64> = history[history.len() - 100..]
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            let smoothed = last.iter().sum::<f64>() / last.len().max(1) as f64;
            if smoothed > self.init_signed + 0.01 * init {
                self.drift += 100;
            } else {
                self.drift = 0;
            }
            if self.drift >= 500 {
                return Some(format!(
                    "the smoothed loss {smoothed:.4e} stayed above its initial value for 500 steps"
                ));
            }
        }
        None
    }
}

/// One LNM cell: Newton on its log-ratios `y`, then (with `want_grad`) its
/// composition ELBO plus the totals' log-density, gradients into `tmp`.
#[allow(clippy::too_many_arguments)]
fn lnm_cell(
    eta: &mut f64,
    mode: EtaMode,
    u: &[f64],
    reference: usize,
    n_tot: f64,
    y: &mut [f64],
    gl: &Globals<'_>,
    lay: Layout,
    n_newton: usize,
    damping: f64,
    max_step: f64,
    want_grad: bool,
    tmp: &mut [f64],
) -> (f64, f64) {
    let (g, k) = (lay.g, lay.k);
    let ua: Vec<f64> = u
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != reference)
        .map(|(_, &v)| v)
        .collect();
    let mut gn = if lay.low_rank {
        lnm::newton_z(&ua, n_tot, y, gl.mu, gl.w, n_newton, damping, max_step)
    } else {
        lnm::newton(
            &ua, n_tot, y, gl.mu, gl.w, &gl.sig, n_newton, damping, max_step,
        )
    };
    // LNMVCP: the capture latent is its own scalar problem (the Hessian is
    // block-diagonal between composition and η).
    if let EtaMode::Free { anchor, sigma } = mode {
        let (mu_t, r_t) = gl.totals;
        let ge = lnm::eta_newton(n_tot, mu_t, r_t, anchor, sigma, eta, n_newton, damping);
        gn = gn.max(ge);
    }
    if !want_grad {
        return (gn, f64::NAN);
    }
    tmp.iter_mut().for_each(|v| *v = 0.0);
    let (tm, rest) = tmp.split_at_mut(g);
    let (tw, rest) = rest.split_at_mut(g * k);
    let (td, tr) = rest.split_at_mut(g);
    let e = if lay.low_rank {
        lnm::elbo_grad_z(&ua, n_tot, y, gl.mu, gl.w, tm, tw)
    } else {
        lnm::elbo_grad(
            &ua,
            n_tot,
            y,
            gl.mu,
            gl.w,
            &gl.d,
            &gl.sig,
            k,
            OuterGrad {
                mu: tm,
                w: tw,
                d: td,
                r: &mut [],
            },
        )
    };
    let (lp, d_mu, d_r) = match mode {
        EtaMode::Free { anchor, sigma } => {
            lnm::totals_capture(n_tot, gl.totals.0, gl.totals.1, *eta, anchor, sigma)
        }
        _ => lnm::totals(n_tot, gl.totals.0, gl.totals.1),
    };
    tr[0] += d_mu;
    tr[1] += d_r;
    (gn, e + lp)
}

/// A cell's gradient sup-norm at its current latents.
fn cell_norm(
    data: &CountMatrix,
    c: usize,
    x: &[f64],
    eta: f64,
    mode: EtaMode,
    gl: &Globals<'_>,
    lay: Layout,
) -> f64 {
    let mut u = vec![0.0; data.n_genes];
    cell::dense_counts(data, c, &mut u);
    if let Some(rf) = lay.reference {
        let ua: Vec<f64> = u
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != rf)
            .map(|(_, &v)| v)
            .collect();
        let mut gn = if lay.low_rank {
            lnm::grad_norm_z(&ua, data.lib_size[c], x, gl.mu, gl.w)
        } else {
            lnm::grad_norm(&ua, data.lib_size[c], x, gl.mu, gl.w, &gl.sig)
        };
        if let EtaMode::Free { anchor, sigma } = mode {
            let (mu_t, r_t) = gl.totals;
            gn = gn.max(lnm::eta_grad_norm(
                data.lib_size[c],
                mu_t,
                r_t,
                anchor,
                sigma,
                eta,
            ));
        }
        return gn;
    }
    let nb = NegBin { r: &gl.r };
    let obs: &dyn Obs = if lay.has_r { &nb } else { &Poisson };
    cell::grad_norm(obs, &u, x, eta, mode, gl.mu, gl.w, &gl.sig)
}

/// The `m` cells (1-based) with the largest (or non-finite) gradient norms.
fn worst_cells(cells: &[usize], norms: &[f64], m: usize) -> String {
    let mut idx: Vec<usize> = (0..cells.len()).collect();
    let key = |i: usize| {
        if norms[i].is_finite() {
            norms[i]
        } else {
            f64::INFINITY
        }
    };
    idx.sort_by(|&a, &b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    idx.iter()
        .take(m)
        .map(|&i| format!("cell {} ({:.2e})", cells[i] + 1, norms[i]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sup-norm summary `(max, p99, median)` of per-cell gradient norms.
pub fn norm_summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v
        .iter()
        .map(|x| if x.is_finite() { *x } else { f64::INFINITY })
        .collect();
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let q = |p: f64| s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
    (s[s.len() - 1], q(0.99), q(0.5))
}

/// `Σ ln N(v; loc, scale)`, adding its gradient into `g`.
fn normal_prior(v: &[f64], loc: &[f64], scale: &[f64], g: &mut [f64]) -> f64 {
    let mut lp = 0.0;
    for i in 0..v.len() {
        let z = (v[i] - loc[i]) / scale[i];
        lp += -0.5 * z * z - scale[i].ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
        g[i] -= z / scale[i];
    }
    lp
}

/// Method-of-moments dispersion per gene, `r = m²/(v − m)` (1 for unexpressed genes).
fn mom_dispersion(data: &CountMatrix) -> Vec<f64> {
    let (g, n) = (data.n_genes, data.n_cells as f64);
    let (mut s1, mut s2) = (vec![0.0; g], vec![0.0; g]);
    for (p, &gi) in data.gene_idx.iter().enumerate() {
        let u = data.counts[p] as f64;
        s1[gi as usize] += u;
        s2[gi as usize] += u * u;
    }
    (0..g)
        .map(|i| {
            let m = s1[i] / n;
            if m == 0.0 {
                return 1.0;
            }
            let v = (s2[i] - n * m * m) / (n - 1.0).max(1.0);
            (m * m / (v - m).max(1e-3)).max(1e-3)
        })
        .collect()
}

/// Fits PLN or NBLN by Laplace.
pub fn run(
    data: &CountMatrix,
    cfg: &LaplaceConfig,
    progress: &dyn Progress,
    cancel: &dyn Cancel,
) -> Result<LaplaceFit> {
    let n = data.n_cells;
    let k = cfg.latent_dim;
    let is_lnm = cfg.model == LnModel::Lnm;
    // LNM's reference: the gene with the most counts (the most stable ratios).
    let reference = is_lnm.then(|| {
        let mut tot = vec![0.0; data.n_genes];
        for (p, &gi) in data.gene_idx.iter().enumerate() {
            tot[gi as usize] += data.counts[p] as f64;
        }
        (0..data.n_genes).fold(0, |b, i| if tot[i] > tot[b] { i } else { b })
    });
    if is_lnm {
        if matches!(cfg.capture, Capture::PerCell { .. } | Capture::Frozen(_)) {
            return Err(CoreError::arg(
                "informative_priors_from",
                "the cascade applies to nbln",
            ));
        }
        if cfg.loadings_prior != w_prior::LoadingsPrior::None {
            return Err(CoreError::arg(
                "priors$loadings",
                "loadings priors apply to pln and nbln, not lnm",
            ));
        }
        if cfg.cascade != Cascade::default() {
            return Err(CoreError::arg(
                "informative_priors_from",
                "the cascade applies to nbln",
            ));
        }
    }
    let g = if is_lnm {
        data.n_genes - 1
    } else {
        data.n_genes
    };
    if k == 0 || k >= g {
        return Err(CoreError::arg(
            "latent_dim",
            format!("must be between 1 and the number of genes − 1 ({})", g - 1),
        ));
    }
    if cfg.n_newton_steps == 0 || cfg.n_newton_steps > 200 {
        return Err(CoreError::arg(
            "laplace_config$n_newton_steps",
            "must be between 1 and 200",
        ));
    }
    if !(cfg.damping >= 0.0) {
        return Err(CoreError::arg("laplace_config$damping", "must be >= 0"));
    }
    cfg.optimizer.validate()?;
    cfg.loadings_prior.validate()?;
    let lay = Layout {
        g,
        k,
        has_r: cfg.model == LnModel::Nbln,
        reference,
        low_rank: is_lnm && cfg.lnm_low_rank,
    };
    let ld = lay.lat_dim();
    let cas = &cfg.cascade;
    for (what, v) in [
        ("r", cas.r_prior.as_ref().map(|p| (p.0.len(), p.1.len()))),
        ("mu", cas.mu_prior.as_ref().map(|p| (p.0.len(), p.1.len()))),
    ] {
        if v.is_some_and(|(a, b)| a != g || b != g) {
            return Err(CoreError::arg(
                "informative_priors_from",
                format!("its '{what}' prior does not match the genes"),
            ));
        }
    }
    let (modes, mut eta) = EtaSpec::new(&cfg.capture, data)?;
    let start = match reference {
        Some(rf) => init::lnm_start(data, rf, k, cfg.seed),
        None => init::pln_start(data, k, cfg.seed),
    };
    // θ: μ (frozen > prior loc > data), W (PCA), d = 0.1, r (frozen > prior > moments), aux.
    let mu0 = cas
        .mu_frozen
        .clone()
        .or_else(|| cas.mu_prior.as_ref().map(|p| p.0.clone()))
        .unwrap_or(start.mu);
    let mut th: Vec<f64> = mu0.iter().chain(&start.w).copied().collect();
    th.extend(std::iter::repeat_n(
        softplus_inv(if is_lnm { 0.01 } else { 0.1 }),
        g,
    ));
    if is_lnm {
        let mean_total = data.lib_size.iter().sum::<f64>() / n as f64;
        // With capture, μ_T is the total at full capture, M0.
        let mu_t0 = match cfg.capture {
            Capture::Anchor { ln_m0, .. } => ln_m0.exp(),
            _ => mean_total.max(1.0),
        };
        th.push(softplus_inv(mu_t0));
        th.push(softplus_inv(4.0));
    }
    if lay.has_r {
        let r_loc: Vec<f64> = match (&cas.r_frozen, &cas.r_prior) {
            (Some(r), _) => r.iter().map(|&v| softplus_inv(v.max(1e-8))).collect(),
            (None, Some(p)) => p.0.clone(),
            _ => mom_dispersion(data)
                .iter()
                .map(|&v| softplus_inv(v))
                .collect(),
        };
        th.extend(r_loc);
    }
    th.extend(cfg.loadings_prior.init_aux(k));
    // Frozen coordinates, restored after every update.
    let mut frozen: Vec<(usize, f64)> = Vec::new();
    if let Some(m) = &cas.mu_frozen {
        frozen.extend(m.iter().enumerate().map(|(i, &v)| (i, v)));
    }
    if lay.has_r && cas.r_frozen.is_some() {
        frozen.extend((0..g).map(|i| (lay.r() + i, th[lay.r() + i])));
    }
    // Low-rank LNM cells start at z = 0 (y = μ).
    let mut latents = if lay.low_rank {
        vec![0.0; n * k]
    } else {
        start.latents
    };
    for (c, e) in eta.iter().enumerate() {
        // LNM's η does not shift the log-ratios.
        if modes.mode[c] != EtaMode::None && !is_lnm {
            latents[c * ld..(c + 1) * ld]
                .iter_mut()
                .for_each(|v| *v += e);
        }
    }
    let mut opt = Optimizer::new(cfg.optimizer.clone(), th.len());
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut sampler = cfg
        .batch_size
        .filter(|&b| b < n)
        .map(|b| BatchSampler::new(n, b));
    let mut history = Vec::with_capacity(cfg.n_steps);
    let (mut best, mut best_loss) = ((th.clone(), latents.clone(), eta.clone()), f64::INFINITY);
    let mut guards = Guards::default();
    let mut tracker = cfg
        .early_stopping
        .clone()
        .map(crate::svi::early_stop::Tracker::new);
    // (θ, latents, η, step) at the smoothed-best check.
    let mut es_best: Option<(State, usize)> = None;
    let mut early_stopped = false;
    let mut masked_total = 0;
    let mut aborted = None;
    let report_every = (cfg.n_steps / cfg.n_reports.max(1)).max(1);
    for step in 0..cfg.n_steps {
        if cancel.cancelled() {
            return Err(CoreError::Cancelled);
        }
        let cells: Vec<usize> = match sampler.as_mut() {
            Some(s) => s.draw(&mut rng).iter().map(|&c| c as usize).collect(),
            None => (0..n).collect(),
        };
        let scale = n as f64 / cells.len() as f64;
        let Some(gl) = Globals::new(&th, lay) else {
            aborted = Some(format!(
                "step {}: the prior covariance is not positive definite",
                step + 1
            ));
            break;
        };
        let mut lat: Vec<f64> = cells
            .iter()
            .flat_map(|&c| latents[c * ld..(c + 1) * ld].iter().copied())
            .collect();
        let mut eta_b: Vec<f64> = cells.iter().map(|&c| eta[c]).collect();
        let (elbo, norms, masked, grad) = sweep(
            data,
            &cells,
            &mut lat,
            &mut eta_b,
            &modes,
            &gl,
            lay,
            cfg.n_newton_steps,
            cfg.damping,
            cfg.newton_max_step,
            true,
        );
        masked_total += masked;
        // Global priors (unscaled by N/B): loadings shrinkage and the cascade's
        // empirical priors on free μ and r_loc.
        let mut g_prior = vec![0.0; th.len()];
        let mut lp = {
            let (gw, rest) = g_prior[lay.w()..].split_at_mut(g * k);
            let aux_off = lay.aux() - lay.d();
            cfg.loadings_prior
                .log_prob_grad(gl.w, g, k, &th[lay.aux()..], gw, &mut rest[aux_off..])
        };
        if let (Some((loc, sc)), None) = (&cas.mu_prior, &cas.mu_frozen) {
            lp += normal_prior(&th[..g], loc, sc, &mut g_prior[..g]);
        }
        if let (true, Some((loc, sc)), None) = (lay.has_r, &cas.r_prior, &cas.r_frozen) {
            lp += normal_prior(
                &th[lay.r()..lay.r() + g],
                loc,
                sc,
                &mut g_prior[lay.r()..lay.r() + g],
            );
        }
        let loss = -scale * elbo - lp;
        history.push(loss);
        let all_masked = masked == cells.len();
        if let Some(why) = guards
            .check(step, loss, &history)
            .or_else(|| all_masked.then(|| "every cell's ELBO was non-finite".to_string()))
        {
            aborted = Some(format!(
                "step {}: {why} (first loss {:.4e}, best {:.4e}); worst cells by Newton gradient: {}; the best parameters were restored. Lower the step size, raise laplace_config$damping, or reduce latent_dim",
                step + 1,
                guards.init_signed,
                best_loss,
                worst_cells(&cells, &norms, 3)
            ));
            break;
        }
        for (i, &c) in cells.iter().enumerate() {
            latents[c * ld..(c + 1) * ld].copy_from_slice(&lat[i * ld..(i + 1) * ld]);
            eta[c] = eta_b[i];
        }
        if loss < best_loss {
            best_loss = loss;
            best = (th.clone(), latents.clone(), eta.clone());
        }
        if let Some(tr) = tracker.as_mut() {
            use crate::svi::early_stop::Decision;
            match tr.check(step, &history) {
                Decision::Improved if tr.cfg.restore_best => {
                    es_best = Some(((th.clone(), latents.clone(), eta.clone()), step + 1));
                }
                Decision::Stop => {
                    early_stopped = true;
                    progress.report(step + 1, cfg.n_steps, loss);
                    break;
                }
                _ => {}
            }
        }
        // Loss gradient = −scale · ∇ELBO − ∇ priors, chained through softplus for d and r.
        let mut lg: Vec<f64> = grad.iter().map(|v| -scale * v).collect();
        lg.resize(th.len(), 0.0);
        for i in 0..g {
            lg[lay.d() + i] *= sigmoid(th[lay.d() + i]);
            if lay.has_r {
                lg[lay.r() + i] *= sigmoid(th[lay.r() + i]);
            }
        }
        if is_lnm {
            for i in 0..2 {
                lg[lay.r() + i] *= sigmoid(th[lay.r() + i]);
            }
        }
        for (a, b) in lg.iter_mut().zip(&g_prior) {
            *a -= b;
        }
        opt.step(&mut th, &lg);
        for &(i, v) in &frozen {
            th[i] = v;
        }
        if (step + 1) % report_every == 0 || step + 1 == cfg.n_steps {
            let (mx, p99, med) = norm_summary(&norms);
            let block = match (
                is_lnm,
                matches!(cfg.capture, Capture::None | Capture::Frozen(_)),
            ) {
                (true, true) => "comp",
                (true, false) => "comp, η",
                (false, true) => "x",
                (false, false) => "x, η",
            };
            progress.detail(format!("{block} max/p99/med {mx:.2e}/{p99:.2e}/{med:.2e}"));
            progress.report(step + 1, cfg.n_steps, loss);
        }
    }
    let mut restored_step = None;
    if aborted.is_some() {
        (th, latents, eta) = best;
    } else if let Some((state, at)) = es_best {
        (th, latents, eta) = state;
        restored_step = Some(at);
    }
    // Final sweep over all cells at the final globals, then rescue.
    let gl = Globals::new(&th, lay).ok_or_else(|| CoreError::NonFinite {
        step: history.len(),
        msg: "the prior covariance is not positive definite".into(),
    })?;
    let all: Vec<usize> = (0..n).collect();
    let n_final = (2 * cfg.n_newton_steps).max(10);
    let (_, mut norms, _, _) = sweep(
        data,
        &all,
        &mut latents,
        &mut eta,
        &modes,
        &gl,
        lay,
        n_final,
        cfg.damping,
        cfg.newton_max_step,
        false,
    );
    let mut rescued = vec![false; n];
    if cfg.rescue_diverged_cells {
        let bad: Vec<usize> = (0..n)
            .filter(|&c| !(norms[c] <= cfg.newton_tolerance * cfg.rescue_threshold_multiplier))
            .collect();
        if !bad.is_empty() {
            let mut lat: Vec<f64> = bad
                .iter()
                .flat_map(|&c| latents[c * ld..(c + 1) * ld].iter().copied())
                .collect();
            let mut eta_b: Vec<f64> = bad.iter().map(|&c| eta[c]).collect();
            let damp = cfg.damping * cfg.rescue_damping_multiplier;
            sweep(
                data,
                &bad,
                &mut lat,
                &mut eta_b,
                &modes,
                &gl,
                lay,
                cfg.rescue_n_newton,
                damp,
                cfg.newton_max_step,
                false,
            );
            for (i, &c) in bad.iter().enumerate() {
                latents[c * ld..(c + 1) * ld].copy_from_slice(&lat[i * ld..(i + 1) * ld]);
                eta[c] = eta_b[i];
                rescued[c] = true;
                let x = &latents[c * ld..(c + 1) * ld];
                norms[c] = cell_norm(data, c, x, eta[c], modes.mode[c], &gl, lay);
            }
        }
    }
    let has_eta = !matches!(cfg.capture, Capture::None);
    // Low-rank LNM reports the MAP log-ratios y = μ + W ẑ, like the learned mode.
    if lay.low_rank {
        latents = (0..n)
            .flat_map(|c| {
                let z = &latents[c * k..(c + 1) * k];
                (0..g)
                    .map(|i| gl.mu[i] + (0..k).map(|j| gl.w[i * k + j] * z[j]).sum::<f64>())
                    .collect::<Vec<f64>>()
            })
            .collect();
    }
    Ok(LaplaceFit {
        n_genes: data.n_genes,
        latent_dim: k,
        mu: gl.mu.to_vec(),
        w: gl.w.to_vec(),
        d: gl.d.clone(),
        r: gl.r.clone(),
        totals: if is_lnm {
            vec![gl.totals.0, gl.totals.1]
        } else {
            Vec::new()
        },
        reference,
        latents,
        eta: if has_eta { eta } else { Vec::new() },
        loss_history: history,
        grad_norms: norms,
        rescued,
        masked_cells: masked_total,
        aborted,
        early_stopped,
        restored_step,
        w_prior: cfg.loadings_prior.diagnostics(gl.w, g, k, &th[lay.aux()..]),
        w_prior_aux: th[lay.aux()..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_stop_on_each_kind_of_divergence() {
        let run = |losses: &[f64]| {
            let mut g = Guards::default();
            let mut h = Vec::new();
            for (i, &l) in losses.iter().enumerate() {
                h.push(l);
                if let Some(w) = g.check(i, l, &h) {
                    return Some((i, w));
                }
            }
            None
        };
        let mut steady = vec![-100.0; 60];
        assert!(run(&steady).is_none());
        steady.push(f64::NAN);
        assert_eq!(run(&steady).unwrap().0, 60);
        let mut climb = vec![-100.0; 60];
        climb.push(-40.0); // 60 above the minimum > 0.5 · 100
        assert!(run(&climb).unwrap().1.contains("climbed"));
        let mut blow = vec![100.0; 60];
        blow.push(-200000.0); // far below: not a climb, but 1000× in magnitude
        assert!(run(&blow).unwrap().1.contains("grew"));
        // Early steps are exempt (except non-finite values).
        assert!(run(&[-100.0, 1e9, -100.0]).is_none());
        // Drift: slowly above the initial value for 500 steps after 5000.
        let mut drift = vec![-100.0; 5000];
        drift.extend(std::iter::repeat_n(-98.0, 700));
        let (at, why) = run(&drift).unwrap();
        assert!(
            why.contains("stayed above") && (5400..5700).contains(&at),
            "{at} {why}"
        );
    }
}
