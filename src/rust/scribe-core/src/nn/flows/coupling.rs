//! Affine coupling (Real NVP): half the coordinates pass through and
//! condition an elementwise affine map of the other half.
//!
//! Layer parity `q` keeps the coordinates with `i mod 2 == q` (the
//! conditioning half `m`) and transforms the rest (`t`). A conditioner
//! [`Mlp`] on `x_m` feeds one zero-initialised head `[shift | raw]`, so a
//! new layer is the identity. `s = clamp(raw)`; the density direction is
//! `y_t = x_t e^s + shift` (log-det `Σ s`), the generative direction its
//! inverse `x_t = (y_t − shift) e^{−s}` (log-det `−Σ s`).
//!
//! The soft clamp `s = (2/π) a atan(raw/a)` with `a = 0.1` above zero and
//! `a = 2` below bounds one layer's expansion by `e^{0.1}` and its
//! contraction by `e^{−2}`; without it `raw` is clipped to `[−5, 5]`.

use super::Direction;
use crate::nn::{Dense, Mlp, MlpTape};
use rand::Rng;
use std::f64::consts::FRAC_2_PI;

#[derive(Debug, Clone, PartialEq)]
pub struct AffineCoupling {
    pub dim: usize,
    /// The conditioning coordinates, then the transformed ones.
    pub cond: Vec<usize>,
    pub trans: Vec<usize>,
    pub mlp: Mlp,
    pub head: Dense,
    pub soft_clamp: bool,
}

/// What one pass of a coupling layer leaves for its backward pass.
#[derive(Debug, Default, Clone)]
pub struct CouplingTape {
    mlp: MlpTape,
    xm: Vec<f64>,
    /// Head output `[shift | raw]` per row.
    head: Vec<f64>,
    s: Vec<f64>,
    /// The layer's input and output (rows × dim).
    input: Vec<f64>,
    output: Vec<f64>,
}

impl AffineCoupling {
    /// `mlp` gives the conditioner's hidden layers; its `n_in` is set here.
    pub fn new(dim: usize, parity: usize, mut mlp: Mlp, soft_clamp: bool) -> Self {
        let (cond, trans): (Vec<usize>, Vec<usize>) = (0..dim).partition(|i| i % 2 == parity % 2);
        mlp.n_in = cond.len();
        let head = Dense::new(mlp.n_out(), 2 * trans.len());
        AffineCoupling {
            dim,
            cond,
            trans,
            mlp,
            head,
            soft_clamp,
        }
    }

    pub fn n_params(&self) -> usize {
        self.mlp.n_params() + self.head.n_params()
    }

    /// Conditioner at Flax-default initialisation, head at zero (identity).
    pub fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        let nm = self.mlp.n_params();
        self.mlp.init(rng, &mut p[..nm]);
        p[nm..self.n_params()].iter_mut().for_each(|v| *v = 0.0);
    }

    fn clamp(&self, raw: f64) -> (f64, f64) {
        if self.soft_clamp {
            let a = if raw >= 0.0 { 0.1 } else { 2.0 };
            let u = raw / a;
            (FRAC_2_PI * a * u.atan(), FRAC_2_PI / (1.0 + u * u))
        } else if raw.abs() <= 5.0 {
            (raw, 1.0)
        } else {
            (raw.clamp(-5.0, 5.0), 0.0)
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
        tape.head.resize(rows * 2 * nt, 0.0);
        self.head
            .forward(&p[pm..], tape.mlp.output(), rows, &mut tape.head);
        tape.s.resize(rows * nt, 0.0);
        output[..rows * d].copy_from_slice(&input[..rows * d]);
        for r in 0..rows {
            let o = &tape.head[r * 2 * nt..(r + 1) * 2 * nt];
            let mut ld = 0.0;
            for (k, &i) in self.trans.iter().enumerate() {
                let (s, _) = self.clamp(o[nt + k]);
                tape.s[r * nt + k] = s;
                let x = input[r * d + i];
                output[r * d + i] = match dir {
                    Direction::Density => x * s.exp() + o[k],
                    Direction::Generative => (x - o[k]) * (-s).exp(),
                };
                ld += s;
            }
            logdet[r] += match dir {
                Direction::Density => ld,
                Direction::Generative => -ld,
            };
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
        let mut g_head = vec![0.0; rows * 2 * nt];
        for r in 0..rows {
            let o = &tape.head[r * 2 * nt..(r + 1) * 2 * nt];
            for (k, &i) in self.trans.iter().enumerate() {
                let s = tape.s[r * nt + k];
                let (_, ds) = self.clamp(o[nt + k]);
                let g = g_out[r * d + i];
                let (g_x, g_shift, g_s) = match dir {
                    Direction::Density => {
                        let e = s.exp();
                        (g * e, g, g * tape.input[r * d + i] * e + g_ld[r])
                    }
                    Direction::Generative => {
                        let e = (-s).exp();
                        (g * e, -g * e, -g * tape.output[r * d + i] - g_ld[r])
                    }
                };
                g_in[r * d + i] = g_x;
                g_head[r * 2 * nt + k] = g_shift;
                g_head[r * 2 * nt + nt + k] = g_s * ds;
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
