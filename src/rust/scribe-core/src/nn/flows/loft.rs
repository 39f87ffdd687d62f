//! LOFT (log soft extension, Andrade 2024): the identity on `[−τ, τ]`, a
//! logarithmic tail beyond, so that heavy-tailed values cannot overflow
//! later layers. No parameters.
//!
//! Density direction `y = sign(z)(ln(e + 1) + min(|z|, τ))`, `e = max(|z| − τ, 0)`,
//! log-det `−Σ ln(e + 1)`; generative direction its inverse
//! `z = sign(y)(exp(e) − 1 + min(|y|, τ))`, `e = max(|y| − τ, 0)`, log-det `Σ e`.

use super::Direction;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loft {
    pub tau: f64,
}

impl Loft {
    /// `(output, ∂output/∂input, log |det|, ∂logdet/∂input)` of one value.
    fn one(&self, dir: Direction, v: f64) -> (f64, f64, f64, f64) {
        let a = v.abs();
        let sg = v.signum();
        let e = (a - self.tau).max(0.0);
        match dir {
            Direction::Density => {
                if e > 0.0 {
                    let out = sg * ((e + 1.0).ln() + self.tau);
                    (out, 1.0 / (e + 1.0), -(e + 1.0).ln(), -sg / (e + 1.0))
                } else {
                    (v, 1.0, 0.0, 0.0)
                }
            }
            Direction::Generative => {
                if e > 0.0 {
                    let out = sg * (e.exp() - 1.0 + self.tau);
                    (out, e.exp(), e, sg)
                } else {
                    (v, 1.0, 0.0, 0.0)
                }
            }
        }
    }

    pub fn apply(
        &self,
        dir: Direction,
        input: &[f64],
        dim: usize,
        output: &mut [f64],
        logdet: &mut [f64],
    ) {
        for (r, (ir, or)) in input
            .chunks_exact(dim)
            .zip(output.chunks_exact_mut(dim))
            .enumerate()
        {
            for (o, &v) in or.iter_mut().zip(ir) {
                let (y, _, ld, _) = self.one(dir, v);
                *o = y;
                logdet[r] += ld;
            }
        }
    }

    /// `g_in = g_out ⊙ ∂output/∂input + g_ld ∂logdet/∂input`.
    pub fn backward(
        &self,
        dir: Direction,
        input: &[f64],
        dim: usize,
        g_out: &[f64],
        g_ld: &[f64],
        g_in: &mut [f64],
    ) {
        for (k, (&v, &g)) in input.iter().zip(g_out).enumerate() {
            let (_, dy, _, dld) = self.one(dir, v);
            g_in[k] = g * dy + g_ld[k / dim] * dld;
        }
    }
}
