//! Coupling layers: half the coordinates pass through and condition an
//! elementwise map of the other half, affine (Real NVP) or a
//! rational-quadratic spline ([`super::spline`]).
//!
//! Layer parity `q` keeps the coordinates with `i mod 2 == q` (the
//! conditioning half `m`) and transforms the rest (`t`). A conditioner
//! [`Mlp`] on `x_m` feeds one head with the map's raw values for each
//! transformed coordinate; its kernel starts at zero and its bias at the
//! identity map, so a new layer is the identity.
//!
//! Affine: raw values `[shift, raw]`, `s = clamp(raw)`; the density
//! direction is `y_t = x_t e^s + shift` (log-det `Σ s`), the generative
//! direction its inverse `x_t = (y_t − shift) e^{−s}` (log-det `−Σ s`).
//!
//! The soft clamp `s = (2/π) a atan(raw/a)` with `a = 0.1` above zero and
//! `a = 2` below bounds one layer's expansion by `e^{0.1}` and its
//! contraction by `e^{−2}`; without it `raw` is clipped to `[−5, 5]`.

use super::spline::Spline;
use super::Direction;
use crate::nn::{Dense, Mlp, MlpTape};
use rand::Rng;
use std::f64::consts::FRAC_2_PI;

/// The elementwise map of a coupling layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementMap {
    Affine { soft_clamp: bool },
    Spline(Spline),
}

impl ElementMap {
    /// Raw values per transformed coordinate.
    fn width(&self) -> usize {
        match self {
            ElementMap::Affine { .. } => 2,
            ElementMap::Spline(sp) => sp.width(),
        }
    }

    fn clamp(soft: bool, raw: f64) -> (f64, f64) {
        if soft {
            let a = if raw >= 0.0 { 0.1 } else { 2.0 };
            let u = raw / a;
            (FRAC_2_PI * a * u.atan(), FRAC_2_PI / (1.0 + u * u))
        } else if raw.abs() <= 5.0 {
            (raw, 1.0)
        } else {
            (raw.clamp(-5.0, 5.0), 0.0)
        }
    }

    /// `(output, log |det|)` of one value with raw values `o`.
    fn apply(&self, dir: Direction, v: f64, o: &[f64]) -> (f64, f64) {
        match *self {
            ElementMap::Affine { soft_clamp } => {
                let (s, _) = Self::clamp(soft_clamp, o[1]);
                match dir {
                    Direction::Density => (v * s.exp() + o[0], s),
                    Direction::Generative => ((v - o[0]) * (-s).exp(), -s),
                }
            }
            ElementMap::Spline(sp) => sp.apply(dir, v, o),
        }
    }

    /// `∂f/∂input` of one value from `g_out`, `g_ld`; the raw values'
    /// gradients go into `g_o`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        dir: Direction,
        v_in: f64,
        v_out: f64,
        o: &[f64],
        g_out: f64,
        g_ld: f64,
        g_o: &mut [f64],
    ) -> f64 {
        match *self {
            ElementMap::Affine { soft_clamp } => {
                let (s, ds) = Self::clamp(soft_clamp, o[1]);
                let (g_x, g_shift, g_s) = match dir {
                    Direction::Density => {
                        let e = s.exp();
                        (g_out * e, g_out, g_out * v_in * e + g_ld)
                    }
                    Direction::Generative => {
                        let e = (-s).exp();
                        (g_out * e, -g_out * e, -g_out * v_out - g_ld)
                    }
                };
                g_o[0] = g_shift;
                g_o[1] = g_s * ds;
                g_x
            }
            ElementMap::Spline(sp) => {
                g_o.iter_mut().for_each(|v| *v = 0.0);
                sp.backward(dir, v_in, v_out, o, g_out, g_ld, g_o)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Coupling {
    pub dim: usize,
    /// The conditioning coordinates, then the transformed ones.
    pub cond: Vec<usize>,
    pub trans: Vec<usize>,
    pub mlp: Mlp,
    pub head: Dense,
    pub map: ElementMap,
}

/// What one pass of a coupling layer leaves for its backward pass.
#[derive(Debug, Default, Clone)]
pub struct CouplingTape {
    mlp: MlpTape,
    xm: Vec<f64>,
    /// Head output (the raw values of every transformed coordinate) per row.
    head: Vec<f64>,
    /// The layer's input and output (rows × dim).
    input: Vec<f64>,
    output: Vec<f64>,
}

impl Coupling {
    /// `mlp` gives the conditioner's hidden layers; its `n_in` is set here.
    pub fn new(dim: usize, parity: usize, mut mlp: Mlp, map: ElementMap) -> Self {
        let (cond, trans): (Vec<usize>, Vec<usize>) = (0..dim).partition(|i| i % 2 == parity % 2);
        mlp.n_in = cond.len();
        let head = Dense::new(mlp.n_out(), map.width() * trans.len());
        Coupling {
            dim,
            cond,
            trans,
            mlp,
            head,
            map,
        }
    }

    pub fn n_params(&self) -> usize {
        self.mlp.n_params() + self.head.n_params()
    }

    /// Conditioner at Flax-default initialisation, head kernel at zero and
    /// its bias at the identity map.
    pub fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        let nm = self.mlp.n_params();
        self.mlp.init(rng, &mut p[..nm]);
        let head = &mut p[nm..self.n_params()];
        head.iter_mut().for_each(|v| *v = 0.0);
        if let ElementMap::Spline(sp) = self.map {
            let bias = &mut head[self.head.n_in * self.head.n_out..];
            for b in bias.chunks_exact_mut(sp.width()) {
                sp.identity_bias(b);
            }
        }
    }

    /// Maps `rows` rows of `input` in direction `dir` into `output` and adds
    /// each row's log |det| to `logdet`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        p: &[f64],
        dir: Direction,
        input: &[f64],
        rows: usize,
        output: &mut [f64],
        logdet: &mut [f64],
        tape: &mut CouplingTape,
    ) {
        let (d, nt) = (self.dim, self.trans.len());
        tape.xm.clear();
        for r in 0..rows {
            tape.xm.extend(self.cond.iter().map(|&i| input[r * d + i]));
        }
        let pm = self.mlp.n_params();
        self.mlp.forward(&p[..pm], &tape.xm, rows, &mut tape.mlp);
        let m = self.map.width();
        tape.head.resize(rows * m * nt, 0.0);
        self.head
            .forward(&p[pm..], tape.mlp.output(), rows, &mut tape.head);
        output[..rows * d].copy_from_slice(&input[..rows * d]);
        for r in 0..rows {
            let o = &tape.head[r * m * nt..(r + 1) * m * nt];
            for (k, &i) in self.trans.iter().enumerate() {
                let (y, ld) = self
                    .map
                    .apply(dir, input[r * d + i], &o[k * m..(k + 1) * m]);
                output[r * d + i] = y;
                logdet[r] += ld;
            }
        }
        tape.input.clear();
        tape.input.extend_from_slice(&input[..rows * d]);
        tape.output.clear();
        tape.output.extend_from_slice(&output[..rows * d]);
    }

    /// From `g_out = ∂f/∂output` and `g_ld = ∂f/∂logdet` (per row): writes
    /// `∂f/∂input` into `g_in` and adds the parameter gradients into `gp`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        p: &[f64],
        dir: Direction,
        tape: &CouplingTape,
        g_out: &[f64],
        g_ld: &[f64],
        rows: usize,
        g_in: &mut [f64],
        gp: &mut [f64],
    ) {
        let (d, nm, nt) = (self.dim, self.cond.len(), self.trans.len());
        g_in[..rows * d].copy_from_slice(&g_out[..rows * d]);
        let m = self.map.width();
        let mut g_head = vec![0.0; rows * m * nt];
        for r in 0..rows {
            let o = &tape.head[r * m * nt..(r + 1) * m * nt];
            let go = &mut g_head[r * m * nt..(r + 1) * m * nt];
            for (k, &i) in self.trans.iter().enumerate() {
                g_in[r * d + i] = self.map.backward(
                    dir,
                    tape.input[r * d + i],
                    tape.output[r * d + i],
                    &o[k * m..(k + 1) * m],
                    g_out[r * d + i],
                    g_ld[r],
                    &mut go[k * m..(k + 1) * m],
                );
            }
        }
        let pm = self.mlp.n_params();
        let mut gh = vec![0.0; rows * self.head.n_in];
        self.head.backward(
            &p[pm..],
            tape.mlp.output(),
            &g_head,
            rows,
            &mut gp[pm..],
            Some(&mut gh),
        );
        let mut gxm = vec![0.0; rows * nm];
        self.mlp
            .backward(&p[..pm], &tape.mlp, &mut gh, &mut gp[..pm], Some(&mut gxm));
        for r in 0..rows {
            for (k, &i) in self.cond.iter().enumerate() {
                g_in[r * d + i] += gxm[r * nm + k];
            }
        }
    }
}
