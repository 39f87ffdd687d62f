//! Masked autoregressive flows: MADE conditioners, MAF and IAF layers.
//!
//! A MADE is a dense network whose kernels are masked so that output `d`
//! depends only on inputs before `d` (Germain et al. 2015). Input degrees
//! are `1..D`, hidden units draw degrees in `[1, D − 1]` from a fixed seed
//! (so every MADE has the same connectivity, as in the original), hidden
//! masks are `deg_out ≥ deg_in`, the output mask strict; outputs come in
//! pairs `(shift_d, log_scale_d)`, the log-scale hard-clipped to `[−5, 5]`.
//! Hidden layers are the conditioner's (dense, activation, a residual skip
//! between equal widths) with two departures from the original, whose MADE
//! is not autoregressive as written: no layer norm (a mean and variance over
//! a layer's units connect every unit to every input), and a layer that
//! takes a residual skip reuses the previous layer's degrees (with fresh
//! degrees the skip connects a unit to inputs its mask excludes). Either
//! leak makes the Jacobian non-triangular, so `Σ s` is no longer its
//! log-determinant and the sequential inverse is wrong; the chain tests
//! check both against the numerical Jacobian.
//!
//! MAF: density direction `z = (x − shift(x)) e^{−s(x)}` (one MADE pass,
//! log-det `−Σ s`), generative direction sequential (`D` passes). IAF: the
//! reverse, `x = z e^{s(z)} + shift(z)` in one pass (log-det `Σ s`). Only the
//! one-pass direction has a backward pass: MAF for densities (a learned
//! prior), IAF for sampling (a guide).

use super::Direction;
use crate::nn::{Dense, Mlp, MlpTape};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};

/// A masked autoencoder over `dim` inputs with `2·dim` outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub dim: usize,
    pub mlp: Mlp,
    pub head: Dense,
    /// 1 where a parameter is used, 0 where a mask removes it (same length
    /// as the parameters).
    mask: Vec<f64>,
}

impl Made {
    /// `mlp` gives the hidden layers; its `n_in` is set here. `dim ≥ 2`.
    pub fn new(dim: usize, mut mlp: Mlp) -> Self {
        mlp.n_in = dim;
        mlp.layer_norm = false;
        let head = Dense::new(mlp.n_out(), 2 * dim);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut deg_in: Vec<usize> = (1..=dim).collect();
        let mut mask = Vec::with_capacity(mlp.n_params() + head.n_params());
        let mut prev_width = dim;
        for &w in &mlp.hidden {
            let deg_out: Vec<usize> = if mlp.residual && w == prev_width {
                deg_in.clone()
            } else {
                (0..w).map(|_| rng.random_range(1..dim.max(2))).collect()
            };
            // Kernel (n_in × w, row-major), bias, layer norm.
            for &di in &deg_in {
                mask.extend(deg_out.iter().map(|&dj| f64::from(u8::from(dj >= di))));
            }
            mask.extend(std::iter::repeat_n(
                1.0,
                w + if mlp.layer_norm { 2 * w } else { 0 },
            ));
            deg_in = deg_out;
            prev_width = w;
        }
        let deg_out: Vec<usize> = (1..=dim).flat_map(|d| [d, d]).collect();
        for &di in &deg_in {
            mask.extend(deg_out.iter().map(|&dj| f64::from(u8::from(dj > di))));
        }
        mask.extend(std::iter::repeat_n(1.0, 2 * dim));
        Made {
            dim,
            mlp,
            head,
            mask,
        }
    }

    pub fn n_params(&self) -> usize {
        self.mask.len()
    }

    /// Hidden layers at Flax defaults, the output layer at zero.
    pub fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        let pm = self.mlp.n_params();
        self.mlp.init(rng, &mut p[..pm]);
        p[pm..self.n_params()].iter_mut().for_each(|v| *v = 0.0);
    }

    fn masked(&self, p: &[f64]) -> Vec<f64> {
        p.iter().zip(&self.mask).map(|(a, m)| a * m).collect()
    }
}

/// MAF or IAF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autoregression {
    Maf,
    Iaf,
}

/// One MAF or IAF layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoregressive {
    pub kind: Autoregression,
    pub made: Made,
}

/// What the one-pass direction leaves for its backward pass.
#[derive(Debug, Default, Clone)]
pub struct MadeTape {
    mlp: MlpTape,
    /// MADE input (MAF: the layer's input x; IAF: its input z) and output.
    cond: Vec<f64>,
    out: Vec<f64>,
    input: Vec<f64>,
    output: Vec<f64>,
}

fn clip(s: f64) -> (f64, f64) {
    if s.abs() <= 5.0 {
        (s, 1.0)
    } else {
        (s.clamp(-5.0, 5.0), 0.0)
    }
}

impl Autoregressive {
    pub fn n_params(&self) -> usize {
        self.made.n_params()
    }

    pub fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        self.made.init(rng, p);
    }

    /// The direction that takes one MADE pass (and has a backward pass).
    pub fn fast(&self) -> Direction {
        match self.kind {
            Autoregression::Maf => Direction::Density,
            Autoregression::Iaf => Direction::Generative,
        }
    }

    /// MADE outputs for `rows` rows of `cond` into `out` (rows × 2D).
    fn made(&self, pm: &[f64], cond: &[f64], rows: usize, tape: &mut MlpTape, out: &mut Vec<f64>) {
        let np = self.made.mlp.n_params();
        self.made.mlp.forward(&pm[..np], cond, rows, tape);
        out.resize(rows * 2 * self.made.dim, 0.0);
        self.made.head.forward(&pm[np..], tape.output(), rows, out);
    }

    /// Maps `rows` rows of `input` in direction `dir` into `output`, adding
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
        tape: &mut MadeTape,
    ) {
        let d = self.made.dim;
        let pm = self.made.masked(p);
        let n = rows * d;
        tape.input.clear();
        tape.input.extend_from_slice(&input[..n]);
        if dir == self.fast() {
            // MAF density: cond = x; IAF generative: cond = z. Both: the input.
            tape.cond.clear();
            tape.cond.extend_from_slice(&input[..n]);
            let mut out = std::mem::take(&mut tape.out);
            self.made(&pm, &tape.cond, rows, &mut tape.mlp, &mut out);
            for r in 0..rows {
                for j in 0..d {
                    let (shift, (s, _)) =
                        (out[r * 2 * d + 2 * j], clip(out[r * 2 * d + 2 * j + 1]));
                    let v = input[r * d + j];
                    let (o, ld) = match self.kind {
                        Autoregression::Maf => ((v - shift) * (-s).exp(), -s),
                        Autoregression::Iaf => (v * s.exp() + shift, s),
                    };
                    output[r * d + j] = o;
                    logdet[r] += ld;
                }
            }
            tape.out = out;
        } else {
            // Sequential: coordinate j needs the MADE of the values before it.
            let mut cond = vec![0.0; n];
            let mut out = Vec::new();
            let mut mt = MlpTape::default();
            for j in 0..d {
                self.made(&pm, &cond, rows, &mut mt, &mut out);
                for r in 0..rows {
                    let (shift, (s, _)) =
                        (out[r * 2 * d + 2 * j], clip(out[r * 2 * d + 2 * j + 1]));
                    let v = input[r * d + j];
                    cond[r * d + j] = match self.kind {
                        Autoregression::Maf => v * s.exp() + shift,
                        Autoregression::Iaf => (v - shift) * (-s).exp(),
                    };
                }
            }
            // The log-det from one final pass on the finished values.
            self.made(&pm, &cond, rows, &mut mt, &mut out);
            for r in 0..rows {
                let ls: f64 = (0..d).map(|j| clip(out[r * 2 * d + 2 * j + 1]).0).sum();
                logdet[r] += match self.kind {
                    Autoregression::Maf => ls,
                    Autoregression::Iaf => -ls,
                };
            }
            output[..n].copy_from_slice(&cond);
        }
        tape.output.clear();
        tape.output.extend_from_slice(&output[..n]);
    }

    /// Backward pass of the one-pass direction ([`Self::fast`]); panics for
    /// the other, which callers refuse up front.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        p: &[f64],
        dir: Direction,
        tape: &MadeTape,
        g_out: &[f64],
        g_ld: &[f64],
        rows: usize,
        g_in: &mut [f64],
        gp: &mut [f64],
    ) {
        assert_eq!(
            dir,
            self.fast(),
            "only the one-pass direction of MAF/IAF has a backward pass"
        );
        let d = self.made.dim;
        let pm = self.made.masked(p);
        let mut g_made = vec![0.0; rows * 2 * d];
        for r in 0..rows {
            for j in 0..d {
                let o = &tape.out[r * 2 * d..];
                let (s, ds) = clip(o[2 * j + 1]);
                let (v, y, g) = (
                    tape.input[r * d + j],
                    tape.output[r * d + j],
                    g_out[r * d + j],
                );
                let (g_v, g_shift, g_s) = match self.kind {
                    Autoregression::Maf => {
                        let e = (-s).exp();
                        (g * e, -g * e, -g * y - g_ld[r])
                    }
                    Autoregression::Iaf => {
                        let e = s.exp();
                        (g * e, g, g * v * e + g_ld[r])
                    }
                };
                g_in[r * d + j] = g_v;
                g_made[r * 2 * d + 2 * j] = g_shift;
                g_made[r * 2 * d + 2 * j + 1] = g_s * ds;
            }
        }
        let np = self.made.mlp.n_params();
        let mut gpm = vec![0.0; self.n_params()];
        let mut gh = vec![0.0; rows * self.made.head.n_in];
        self.made.head.backward(
            &pm[np..],
            tape.mlp.output(),
            &g_made,
            rows,
            &mut gpm[np..],
            Some(&mut gh),
        );
        let mut gx = vec![0.0; rows * d];
        self.made
            .mlp
            .backward(&pm[..np], &tape.mlp, &mut gh, &mut gpm[..np], Some(&mut gx));
        for (a, b) in g_in[..rows * d].iter_mut().zip(&gx) {
            *a += b;
        }
        for ((g, gm), m) in gp.iter_mut().zip(&gpm).zip(&self.made.mask) {
            *g += gm * m;
        }
    }
}
