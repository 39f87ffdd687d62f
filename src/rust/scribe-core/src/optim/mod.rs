//! Optimisation shared by every engine that follows a gradient (SVI, the
//! Laplace outer loop, the VAE): first-order optimizers with the update rules
//! of `jax.example_libraries.optimizers` (what NumPyro's `Adam`,
//! `ClippedAdam`, `Adagrad`, `RMSProp`, `SGD`, `Momentum` wrap), L-BFGS with
//! a backtracking line search for deterministic objectives ([`lbfgs`]), and
//! the stopping rules ([`early_stop`], [`settle`]).
//! All minimise: `params ← params − step · direction(grad)`.

pub mod early_stop;
pub mod lbfgs;
pub mod settle;

/// Why a fit stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It ran all its steps.
    MaxSteps,
    /// The original's early-stopping rule (no improvement for `patience`).
    EarlyStopping,
    /// The loss and the parameters settled ([`settle`]).
    Converged,
    /// The loss settled while these parameter groups kept drifting.
    WeaklyIdentified(Vec<String>),
    /// A line search (L-BFGS) found no step that lowers the loss, along
    /// the quasi-Newton direction or the gradient.
    LineSearch,
}

impl StopReason {
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::MaxSteps => "n_steps",
            StopReason::EarlyStopping => "early_stopping",
            StopReason::Converged => "converged",
            StopReason::WeaklyIdentified(_) => "weakly_identified",
            StopReason::LineSearch => "line_search",
        }
    }
    pub fn drifting(&self) -> &[String] {
        match self {
            StopReason::WeaklyIdentified(g) => g,
            _ => &[],
        }
    }
}

use crate::error::{CoreError, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerConfig {
    /// `clip`: element-wise clipping of the gradient to `[−clip, clip]` (ClippedAdam).
    Adam {
        step_size: f64,
        b1: f64,
        b2: f64,
        eps: f64,
        clip: Option<f64>,
    },
    Adagrad {
        step_size: f64,
        momentum: f64,
    },
    RmsProp {
        step_size: f64,
        gamma: f64,
        eps: f64,
    },
    Sgd {
        step_size: f64,
    },
    Momentum {
        step_size: f64,
        mass: f64,
    },
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Adam {
            step_size: 1e-3,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        }
    }
}

impl OptimizerConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(CoreError::arg("optimizer_config", m.to_string()));
        let (step, ok) = match *self {
            OptimizerConfig::Adam {
                step_size,
                b1,
                b2,
                eps,
                clip,
            } => (
                step_size,
                (0.0..1.0).contains(&b1)
                    && (0.0..1.0).contains(&b2)
                    && eps > 0.0
                    && clip.is_none_or(|c| c > 0.0),
            ),
            OptimizerConfig::Adagrad {
                step_size,
                momentum,
            } => (step_size, (0.0..1.0).contains(&momentum)),
            OptimizerConfig::RmsProp {
                step_size,
                gamma,
                eps,
            } => (step_size, (0.0..1.0).contains(&gamma) && eps > 0.0),
            OptimizerConfig::Sgd { step_size } => (step_size, true),
            OptimizerConfig::Momentum { step_size, mass } => {
                (step_size, (0.0..1.0).contains(&mass))
            }
        };
        if !(step > 0.0 && step.is_finite()) {
            return bad("step_size must be a positive number");
        }
        if !ok {
            return bad(
                "b1, b2, momentum and gamma must lie in [0, 1); eps and clip_norm must be positive",
            );
        }
        Ok(())
    }
}

/// Optimizer state for a flat parameter vector.
/// Parameter vectors at least this long are updated by several threads.
const PARALLEL_UPDATE_LEN: usize = 16_384;
const UPDATE_CHUNK: usize = 4096;

#[derive(Debug, Clone)]
pub struct Optimizer {
    cfg: OptimizerConfig,
    m: Vec<f64>,
    v: Vec<f64>,
    /// Number of updates applied so far (Adam's bias correction uses it).
    t: u64,
}

impl Optimizer {
    pub fn new(cfg: OptimizerConfig, n: usize) -> Self {
        Optimizer {
            cfg,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    pub fn step(&mut self, x: &mut [f64], g: &[f64]) {
        let i = self.t as i32;
        self.t += 1;
        match self.cfg {
            OptimizerConfig::Adam {
                step_size,
                b1,
                b2,
                eps,
                clip,
            } => {
                let c1 = 1.0 - b1.powi(i + 1);
                let c2 = 1.0 - b2.powi(i + 1);
                let update = |x: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]| {
                    for (((xk, &gk), mk), vk) in x.iter_mut().zip(g).zip(m).zip(v) {
                        let gk = match clip {
                            Some(c) => gk.clamp(-c, c),
                            None => gk,
                        };
                        *mk = (1.0 - b1) * gk + b1 * *mk;
                        *vk = (1.0 - b2) * gk * gk + b2 * *vk;
                        let mhat = *mk / c1;
                        let vhat = *vk / c2;
                        *xk -= step_size * mhat / (vhat.sqrt() + eps);
                    }
                };
                // Element-wise, so splitting across threads gives the same bits.
                if x.len() >= PARALLEL_UPDATE_LEN {
                    use rayon::prelude::*;
                    x.par_chunks_mut(UPDATE_CHUNK)
                        .zip(g.par_chunks(UPDATE_CHUNK))
                        .zip(self.m.par_chunks_mut(UPDATE_CHUNK))
                        .zip(self.v.par_chunks_mut(UPDATE_CHUNK))
                        .for_each(|(((x, g), m), v)| update(x, g, m, v));
                } else {
                    update(x, g, &mut self.m, &mut self.v);
                }
            }
            OptimizerConfig::Adagrad {
                step_size,
                momentum,
            } => {
                for k in 0..x.len() {
                    self.v[k] += g[k] * g[k];
                    let s = self.v[k].sqrt();
                    let s = if s > 0.0 { s } else { 1.0 };
                    self.m[k] = (1.0 - momentum) * (g[k] / s) + momentum * self.m[k];
                    x[k] -= step_size * self.m[k];
                }
            }
            OptimizerConfig::RmsProp {
                step_size,
                gamma,
                eps,
            } => {
                for k in 0..x.len() {
                    self.v[k] = self.v[k] * gamma + g[k] * g[k] * (1.0 - gamma);
                    x[k] -= step_size * g[k] / (self.v[k] + eps).sqrt();
                }
            }
            OptimizerConfig::Sgd { step_size } => {
                for k in 0..x.len() {
                    x[k] -= step_size * g[k];
                }
            }
            OptimizerConfig::Momentum { step_size, mass } => {
                for k in 0..x.len() {
                    self.m[k] = mass * self.m[k] + g[k];
                    x[k] -= step_size * self.m[k];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_step(cfg: OptimizerConfig, steps: usize) -> f64 {
        let mut o = Optimizer::new(cfg, 1);
        let mut x = [1.0];
        for _ in 0..steps {
            o.step(&mut x, &[0.5]);
        }
        x[0]
    }

    #[test]
    fn updates_match_hand_computed_values() {
        // Adam's first step is step_size · sign(g) (up to eps): 1 − 0.1 = 0.9.
        let a = one_step(
            OptimizerConfig::Adam {
                step_size: 0.1,
                b1: 0.9,
                b2: 0.999,
                eps: 1e-8,
                clip: None,
            },
            1,
        );
        assert!((a - (1.0 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-15);
        // ClippedAdam with clip 0.2: same direction, m/sqrt(v) still 1 on step one.
        let c = one_step(
            OptimizerConfig::Adam {
                step_size: 0.1,
                b1: 0.9,
                b2: 0.999,
                eps: 1e-8,
                clip: Some(0.2),
            },
            1,
        );
        assert!((c - (1.0 - 0.1 * 0.2 / (0.2 + 1e-8))).abs() < 1e-15);
        // Adagrad: g_sq = 0.25, m = 0.1 · (0.5/0.5) = 0.1, x = 1 − 0.01 · 0.1.
        let ag = one_step(
            OptimizerConfig::Adagrad {
                step_size: 0.01,
                momentum: 0.9,
            },
            1,
        );
        assert!((ag - (1.0 - 0.01 * 0.1)).abs() < 1e-15);
        // RMSProp: v = 0.25 · 0.1 = 0.025, x = 1 − 0.01 · 0.5 / sqrt(0.025 + 1e-8).
        let rp = one_step(
            OptimizerConfig::RmsProp {
                step_size: 0.01,
                gamma: 0.9,
                eps: 1e-8,
            },
            1,
        );
        assert!((rp - (1.0 - 0.01 * 0.5 / (0.025f64 + 1e-8).sqrt())).abs() < 1e-15);
        let sgd = one_step(OptimizerConfig::Sgd { step_size: 0.1 }, 2);
        assert!((sgd - 0.9).abs() < 1e-15);
        // Momentum: v1 = 0.5, v2 = 0.45 + 0.5 = 0.95; x = 1 − 0.1(0.5 + 0.95).
        let mo = one_step(
            OptimizerConfig::Momentum {
                step_size: 0.1,
                mass: 0.9,
            },
            2,
        );
        assert!((mo - (1.0 - 0.1 * 1.45)).abs() < 1e-15);
    }

    #[test]
    fn adam_second_step_uses_bias_correction() {
        let cfg = OptimizerConfig::Adam {
            step_size: 0.1,
            b1: 0.9,
            b2: 0.999,
            eps: 0.0,
            clip: None,
        };
        let mut o = Optimizer::new(cfg, 1);
        let mut x = [0.0];
        o.step(&mut x, &[1.0]);
        o.step(&mut x, &[-1.0]);
        let m = 0.9 * 0.1 - 0.1;
        let v = 0.999 * 0.001 + 0.001;
        let want = -0.1 - 0.1 * (m / (1.0 - 0.81)) / (v / (1.0 - 0.999f64.powi(2))).sqrt();
        assert!((x[0] - want).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(OptimizerConfig::Sgd { step_size: 0.0 }.validate().is_err());
        assert!(OptimizerConfig::Adam {
            step_size: 1e-3,
            b1: 1.5,
            b2: 0.9,
            eps: 1e-8,
            clip: None
        }
        .validate()
        .is_err());
        assert!(OptimizerConfig::default().validate().is_ok());
    }
}
