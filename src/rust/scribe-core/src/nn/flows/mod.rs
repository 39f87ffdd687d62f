//! Normalizing flows: invertible maps with tractable log-determinants.
//!
//! Two directions, as in the original: the *density* direction maps data
//! `x` to the base `z` with `ln|det ∂z/∂x|` (so `ln q(x) = ln N(z) + logdet`);
//! the *generative* direction maps `z` to `x` with `ln|det ∂x/∂z|` (so
//! `ln q(x) = ln N(z) − logdet`). A [`FlowChain`] is, in density order,
//! coupling layers of alternating parity, then LOFT, then (optionally) an
//! elementwise affine `y = e^σ ⊙ x + μ` starting at the identity; the
//! generative direction runs the inverses in reverse order. Both directions
//! have backward passes (to the input, the parameters and through the
//! log-determinant), so a flow can be a guide (generative direction, the
//! reparameterised draw) or a learned prior (density direction).

pub mod autoregressive;
pub mod coupling;
pub mod loft;
pub mod spline;

pub use autoregressive::{Autoregression, Autoregressive, Made, MadeTape};
pub use coupling::{Coupling, CouplingTape, ElementMap};
pub use loft::Loft;
pub use spline::Spline;

use super::{Activation, Mlp};
use crate::error::{CoreError, Result};
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `x → z`.
    Density,
    /// `z → x`.
    Generative,
}

/// The flow families of the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    AffineCoupling,
    SplineCoupling,
    Maf,
    Iaf,
}

impl FlowKind {
    pub fn parse(name: &str, arg: &str) -> Result<Self> {
        match name {
            "affine_coupling" | "coupling_affine" => Ok(FlowKind::AffineCoupling),
            "spline_coupling" | "coupling_spline" => Ok(FlowKind::SplineCoupling),
            "maf" => Ok(FlowKind::Maf),
            "iaf" => Ok(FlowKind::Iaf),
            other => Err(CoreError::arg(
                arg,
                format!("'{other}' is not one of affine_coupling, spline_coupling, maf, iaf"),
            )),
        }
    }
}

/// The architecture of a chain (the original's `FlowChain` defaults: four
/// layers of `[64, 64]` relu conditioners with layer norm and residual skips,
/// soft clamp, LOFT at τ = 100).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    pub kind: FlowKind,
    pub num_layers: usize,
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub layer_norm: bool,
    pub residual: bool,
    pub soft_clamp: bool,
    /// Bins of spline coupling.
    pub n_bins: usize,
    pub loft_tau: Option<f64>,
    pub final_affine: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            kind: FlowKind::AffineCoupling,
            num_layers: 4,
            hidden: vec![64, 64],
            activation: Activation::Relu,
            layer_norm: true,
            residual: true,
            soft_clamp: true,
            n_bins: 8,
            loft_tau: Some(100.0),
            final_affine: true,
        }
    }
}

/// A chain of flows over `dim` coordinates; parameters are the layers' in
/// order, then `[μ (dim) | σ (dim)]` of the final affine.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowChain {
    pub dim: usize,
    pub layers: Vec<FlowLayer>,
    pub loft: Option<Loft>,
    pub final_affine: bool,
}

/// One layer of a chain.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowLayer {
    Coupling(Coupling),
    Autoregressive(Autoregressive),
}

/// What one layer's pass leaves for its backward pass.
#[derive(Debug, Default, Clone)]
pub struct LayerTape {
    coupling: CouplingTape,
    made: MadeTape,
}

impl FlowLayer {
    pub fn n_params(&self) -> usize {
        match self {
            FlowLayer::Coupling(c) => c.n_params(),
            FlowLayer::Autoregressive(a) => a.n_params(),
        }
    }

    fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        match self {
            FlowLayer::Coupling(c) => c.init(rng, p),
            FlowLayer::Autoregressive(a) => a.init(rng, p),
        }
    }

    /// Whether the layer has a backward pass in direction `dir` (MAF only
    /// for densities, IAF only for sampling).
    pub fn differentiable(&self, dir: Direction) -> bool {
        match self {
            FlowLayer::Coupling(_) => true,
            FlowLayer::Autoregressive(a) => a.fast() == dir,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        p: &[f64],
        dir: Direction,
        x: &[f64],
        rows: usize,
        y: &mut [f64],
        logdet: &mut [f64],
        tape: &mut LayerTape,
    ) {
        match self {
            FlowLayer::Coupling(c) => c.apply(p, dir, x, rows, y, logdet, &mut tape.coupling),
            FlowLayer::Autoregressive(a) => a.apply(p, dir, x, rows, y, logdet, &mut tape.made),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        p: &[f64],
        dir: Direction,
        tape: &LayerTape,
        g_out: &[f64],
        g_ld: &[f64],
        rows: usize,
        g_in: &mut [f64],
        gp: &mut [f64],
    ) {
        match self {
            FlowLayer::Coupling(c) => {
                c.backward(p, dir, &tape.coupling, g_out, g_ld, rows, g_in, gp)
            }
            FlowLayer::Autoregressive(a) => {
                a.backward(p, dir, &tape.made, g_out, g_ld, rows, g_in, gp)
            }
        }
    }
}

/// The stages of a chain in density order.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Layer(usize),
    Loft,
    Affine,
}

/// What one pass of a chain leaves for its backward pass.
#[derive(Debug, Default, Clone)]
pub struct ChainTape {
    rows: usize,
    dir: Option<Direction>,
    /// The values between stages in the order they ran (`vals[0]` the input).
    vals: Vec<Vec<f64>>,
    layers: Vec<LayerTape>,
    logdet: Vec<f64>,
}

impl ChainTape {
    /// The output of the last pass (`rows × dim`).
    pub fn output(&self) -> &[f64] {
        self.vals.last().map_or(&[], Vec::as_slice)
    }

    /// Each row's log |det| of the last pass.
    pub fn logdet(&self) -> &[f64] {
        &self.logdet
    }
}

impl FlowChain {
    pub fn new(dim: usize, cfg: &FlowConfig) -> Result<Self> {
        if dim < 2 {
            return Err(CoreError::arg(
                "guide_flow",
                "a coupling flow needs at least two coordinates",
            ));
        }
        if cfg.kind == FlowKind::SplineCoupling && cfg.n_bins < 2 {
            return Err(CoreError::arg("guide_flow_n_bins", "must be at least 2"));
        }
        if cfg.num_layers == 0 {
            return Err(CoreError::arg(
                "guide_flow_num_layers",
                "must be at least 1",
            ));
        }
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let mlp = Mlp {
                    n_in: 0,
                    hidden: cfg.hidden.clone(),
                    activation: cfg.activation,
                    layer_norm: cfg.layer_norm,
                    residual: cfg.residual,
                };
                let coupling =
                    |map| FlowLayer::Coupling(Coupling::new(dim, i % 2, mlp.clone(), map));
                let autoregressive = |kind| {
                    FlowLayer::Autoregressive(Autoregressive {
                        kind,
                        made: Made::new(dim, mlp.clone()),
                    })
                };
                match cfg.kind {
                    FlowKind::AffineCoupling => coupling(ElementMap::Affine {
                        soft_clamp: cfg.soft_clamp,
                    }),
                    FlowKind::SplineCoupling => {
                        coupling(ElementMap::Spline(Spline { bins: cfg.n_bins }))
                    }
                    FlowKind::Maf => autoregressive(Autoregression::Maf),
                    FlowKind::Iaf => autoregressive(Autoregression::Iaf),
                }
            })
            .collect();
        Ok(FlowChain {
            dim,
            layers,
            loft: cfg.loft_tau.map(|tau| Loft { tau }),
            final_affine: cfg.final_affine,
        })
    }

    pub fn n_params(&self) -> usize {
        self.layers.iter().map(FlowLayer::n_params).sum::<usize>()
            + if self.final_affine { 2 * self.dim } else { 0 }
    }

    /// Whether [`Self::backward`] exists for passes in direction `dir`.
    pub fn differentiable(&self, dir: Direction) -> bool {
        self.layers.iter().all(|l| l.differentiable(dir))
    }

    /// Starts at the identity map (zero heads, zero final affine).
    pub fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        let mut off = 0;
        for l in &self.layers {
            l.init(rng, &mut p[off..off + l.n_params()]);
            off += l.n_params();
        }
        p[off..self.n_params()].iter_mut().for_each(|v| *v = 0.0);
    }

    fn stages(&self) -> Vec<Stage> {
        let mut s: Vec<Stage> = (0..self.layers.len()).map(Stage::Layer).collect();
        if self.loft.is_some() {
            s.push(Stage::Loft);
        }
        if self.final_affine {
            s.push(Stage::Affine);
        }
        s
    }

    fn layer_offsets(&self) -> Vec<usize> {
        let mut offs = Vec::with_capacity(self.layers.len() + 1);
        let mut off = 0;
        for l in &self.layers {
            offs.push(off);
            off += l.n_params();
        }
        offs.push(off);
        offs
    }

    /// Maps `rows` rows of `input` in direction `dir`: the result is
    /// [`ChainTape::output`], each row's log |det| [`ChainTape::logdet`].
    pub fn apply(
        &self,
        p: &[f64],
        dir: Direction,
        input: &[f64],
        rows: usize,
        tape: &mut ChainTape,
    ) {
        let d = self.dim;
        let mut stages = self.stages();
        if dir == Direction::Generative {
            stages.reverse();
        }
        let offs = self.layer_offsets();
        tape.rows = rows;
        tape.dir = Some(dir);
        tape.vals.resize(stages.len() + 1, Vec::new());
        tape.layers.resize(self.layers.len(), LayerTape::default());
        tape.vals[0].clear();
        tape.vals[0].extend_from_slice(&input[..rows * d]);
        tape.logdet.clear();
        tape.logdet.resize(rows, 0.0);
        let logdet = &mut tape.logdet;
        for (k, st) in stages.iter().enumerate() {
            let (before, after) = tape.vals.split_at_mut(k + 1);
            let (x, y) = (&before[k], &mut after[0]);
            y.resize(rows * d, 0.0);
            match *st {
                Stage::Layer(i) => self.layers[i].apply(
                    &p[offs[i]..offs[i + 1]],
                    dir,
                    x,
                    rows,
                    y,
                    logdet,
                    &mut tape.layers[i],
                ),
                Stage::Loft => self.loft.expect("loft").apply(dir, x, d, y, logdet),
                Stage::Affine => {
                    let (mu, sg) = p[offs[self.layers.len()]..].split_at(d);
                    let lds: f64 = sg[..d].iter().sum();
                    for r in 0..rows {
                        for j in 0..d {
                            let v = x[r * d + j];
                            y[r * d + j] = match dir {
                                Direction::Density => v * sg[j].exp() + mu[j],
                                Direction::Generative => (v - mu[j]) * (-sg[j]).exp(),
                            };
                        }
                        logdet[r] += if dir == Direction::Density { lds } else { -lds };
                    }
                }
            }
        }
    }

    /// From `g_out = ∂f/∂output` and `g_ld = ∂f/∂logdet` (per row) of the
    /// pass recorded in `tape`: writes `∂f/∂input` into `g_in` and adds the
    /// parameter gradients into `gp`.
    pub fn backward(
        &self,
        p: &[f64],
        tape: &ChainTape,
        g_out: &[f64],
        g_ld: &[f64],
        g_in: &mut [f64],
        gp: &mut [f64],
    ) {
        let (d, rows) = (self.dim, tape.rows);
        let dir = tape.dir.expect("a forward pass precedes the backward pass");
        let mut stages = self.stages();
        if dir == Direction::Generative {
            stages.reverse();
        }
        let offs = self.layer_offsets();
        let mut g = g_out[..rows * d].to_vec();
        let mut gi = vec![0.0; rows * d];
        for (k, st) in stages.iter().enumerate().rev() {
            let x = &tape.vals[k];
            match *st {
                Stage::Layer(i) => self.layers[i].backward(
                    &p[offs[i]..offs[i + 1]],
                    dir,
                    &tape.layers[i],
                    &g,
                    g_ld,
                    rows,
                    &mut gi,
                    &mut gp[offs[i]..offs[i + 1]],
                ),
                Stage::Loft => self
                    .loft
                    .expect("loft")
                    .backward(dir, x, d, &g, g_ld, &mut gi),
                Stage::Affine => {
                    let a = offs[self.layers.len()];
                    let sg = &p[a + d..a + 2 * d];
                    let (gmu, gsg) = gp[a..a + 2 * d].split_at_mut(d);
                    let y = &tape.vals[k + 1];
                    for r in 0..rows {
                        for j in 0..d {
                            let gv = g[r * d + j];
                            match dir {
                                Direction::Density => {
                                    let e = sg[j].exp();
                                    gi[r * d + j] = gv * e;
                                    gmu[j] += gv;
                                    gsg[j] += gv * x[r * d + j] * e + g_ld[r];
                                }
                                Direction::Generative => {
                                    let e = (-sg[j]).exp();
                                    gi[r * d + j] = gv * e;
                                    gmu[j] -= gv * e;
                                    gsg[j] += -gv * y[r * d + j] - g_ld[r];
                                }
                            }
                        }
                    }
                }
            }
            std::mem::swap(&mut g, &mut gi);
        }
        g_in[..rows * d].copy_from_slice(&g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_support::{dot, normals};
    use crate::testutil::check_gradient;

    /// A chain with random (non-identity) parameters.
    fn chain(cfg: &FlowConfig, dim: usize, seed: u64) -> (FlowChain, Vec<f64>) {
        let ch = FlowChain::new(dim, cfg).unwrap();
        let p: Vec<f64> = normals(ch.n_params(), seed)
            .iter()
            .map(|v| 0.3 * v)
            .collect();
        (ch, p)
    }

    fn configs() -> Vec<(String, FlowConfig)> {
        let base = FlowConfig {
            hidden: vec![6, 6],
            num_layers: 3,
            activation: Activation::Tanh,
            ..FlowConfig::default()
        };
        vec![
            ("default".into(), base.clone()),
            (
                "hard clip, no norm".into(),
                FlowConfig {
                    soft_clamp: false,
                    layer_norm: false,
                    residual: false,
                    final_affine: false,
                    ..base.clone()
                },
            ),
            (
                "spline".into(),
                FlowConfig {
                    kind: FlowKind::SplineCoupling,
                    n_bins: 4,
                    ..base.clone()
                },
            ),
            (
                "maf".into(),
                FlowConfig {
                    kind: FlowKind::Maf,
                    ..base.clone()
                },
            ),
            (
                "iaf, no residual".into(),
                FlowConfig {
                    kind: FlowKind::Iaf,
                    residual: false,
                    hidden: vec![6, 4],
                    ..base.clone()
                },
            ),
            (
                "small loft".into(),
                FlowConfig {
                    loft_tau: Some(0.5),
                    activation: Activation::Gelu,
                    ..base
                },
            ),
        ]
    }

    #[test]
    fn directions_are_inverse_to_each_other() {
        for (label, cfg) in configs() {
            for dim in [2, 5] {
                let (ch, p) = chain(&cfg, dim, 21);
                let rows = 4;
                let x: Vec<f64> = normals(rows * dim, 22).iter().map(|v| 2.0 * v).collect();
                let mut tape = ChainTape::default();
                ch.apply(&p, Direction::Density, &x, rows, &mut tape);
                let (z, ld1) = (tape.output().to_vec(), tape.logdet().to_vec());
                ch.apply(&p, Direction::Generative, &z, rows, &mut tape);
                let (back, ld2) = (tape.output(), tape.logdet());
                for (a, b) in x.iter().zip(back) {
                    assert!((a - b).abs() < 1e-10, "{label}: {a} vs {b}");
                }
                for (a, b) in ld1.iter().zip(ld2) {
                    assert!((a + b).abs() < 1e-10, "{label}: log-dets {a} and {b}");
                }
                assert!(
                    z.iter().zip(&x).any(|(a, b)| (a - b).abs() > 1e-3),
                    "{label}: not the identity"
                );
            }
        }
    }

    #[test]
    fn log_determinant_matches_the_jacobian() {
        // The numerical Jacobian of one row against the reported log-det
        // (for MADE flows also a test of their masks: a leak breaks it).
        for (label, cfg) in configs() {
            let (ch, p) = chain(&cfg, 3, 31);
            let x = vec![0.3, -1.2, 0.8];
            let mut tape = ChainTape::default();
            for dir in [Direction::Density, Direction::Generative] {
                let f = |x: &[f64], tape: &mut ChainTape| {
                    ch.apply(&p, dir, x, 1, tape);
                    (tape.output().to_vec(), tape.logdet()[0])
                };
                let (_, ld) = f(&x, &mut tape);
                let mut jac = [[0.0; 3]; 3];
                for j in 0..3 {
                    let h = 1e-6;
                    let (mut xp, mut xm) = (x.clone(), x.clone());
                    xp[j] += h;
                    xm[j] -= h;
                    let (yp, _) = f(&xp, &mut tape);
                    let (ym, _) = f(&xm, &mut tape);
                    for i in 0..3 {
                        jac[i][j] = (yp[i] - ym[i]) / (2.0 * h);
                    }
                }
                let det = jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
                    - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
                    + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0]);
                assert!(
                    (det.abs().ln() - ld).abs() < 1e-6,
                    "{label} {dir:?}: {} vs {ld}",
                    det.abs().ln()
                );
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (label, cfg) in configs() {
            for dir in [Direction::Density, Direction::Generative] {
                let (dim, rows) = (5, 3);
                let (ch, p) = chain(&cfg, dim, 41);
                if !ch.differentiable(dir) {
                    continue;
                }
                // Values beyond the small LOFT's τ exercise its tails.
                let x: Vec<f64> = normals(rows * dim, 42).iter().map(|v| 1.5 * v).collect();
                let c = normals(rows * dim, 43);
                let cl = normals(rows, 44);
                let mut tape = ChainTape::default();
                let mut run = |p: &[f64], x: &[f64], gp: &mut [f64], gx: &mut [f64]| {
                    ch.apply(p, dir, x, rows, &mut tape);
                    ch.backward(p, &tape, &c, &cl, gx, gp);
                    dot(&c, tape.output()) + dot(&cl, tape.logdet())
                };
                check_gradient(
                    |p, g| {
                        let mut gx = vec![0.0; rows * dim];
                        run(p, &x, g, &mut gx)
                    },
                    &p,
                    1e-5,
                    &format!("{label} {dir:?}: parameters"),
                );
                check_gradient(
                    |x, g| {
                        let mut gp = vec![0.0; p.len()];
                        let mut gx = vec![0.0; rows * dim];
                        let v = run(&p, x, &mut gp, &mut gx);
                        g.iter_mut().zip(&gx).for_each(|(a, b)| *a += b);
                        v
                    },
                    &x,
                    1e-5,
                    &format!("{label} {dir:?}: input"),
                );
            }
        }
    }

    #[test]
    fn a_new_chain_is_the_identity() {
        let cfg = FlowConfig::default();
        let ch = FlowChain::new(7, &cfg).unwrap();
        let mut p = vec![0.0; ch.n_params()];
        let mut rng = <rand::rngs::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        ch.init(&mut rng, &mut p);
        let x = normals(14, 3);
        let mut tape = ChainTape::default();
        ch.apply(&p, Direction::Generative, &x, 2, &mut tape);
        assert_eq!(x, tape.output());
        assert_eq!(tape.logdet(), &[0.0, 0.0]);
        assert!(FlowKind::parse("planar", "guide_flow").is_err());
        assert!(FlowKind::parse("coupling_affine", "guide_flow").is_ok());
        assert!(FlowChain::new(1, &cfg).is_err());
    }
}
