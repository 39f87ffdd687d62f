//! Links from unconstrained coordinates to constrained parameters, and prior
//! densities evaluated in unconstrained space (Jacobian included).
//!
//! Every engine works on unconstrained `x`; a parameter is `θ = T(x)`. A prior
//! given on `θ` becomes `ln p_x(x) = ln p_θ(T(x)) + ln |T'(x)|`.

pub mod draw;

use crate::math::{
    lbeta, ln_normal, ln_normal_sf, ln_sigmoid, ln_softplus, sigmoid, softplus, softplus_inv,
};

/// The map `x ↦ θ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `θ = 1/(1+e^{−x})`, for parameters in (0, 1).
    Sigmoid,
    /// `θ = e^x`, for positive parameters (LogNormal-type).
    Exp,
    /// `θ = ln(1+e^x)`, for positive parameters (the original's default unconstrained link).
    Softplus,
    /// `θ = x` (coordinates that only make sense jointly, e.g. mixing logits).
    Identity,
}

/// A link evaluated at a point: the value, its log and their derivatives.
#[derive(Debug, Clone, Copy)]
pub struct LinkEval {
    pub theta: f64,
    pub ln_theta: f64,
    /// d ln θ / dx
    pub d_ln_theta: f64,
    /// ln |dθ/dx|
    pub ln_jac: f64,
    /// d ln|dθ/dx| / dx
    pub d_ln_jac: f64,
}

impl Link {
    #[inline]
    pub fn eval(self, x: f64) -> LinkEval {
        match self {
            Link::Sigmoid => {
                let s = sigmoid(x);
                let sm = sigmoid(-x);
                let ln_s = ln_sigmoid(x);
                LinkEval {
                    theta: s,
                    ln_theta: ln_s,
                    d_ln_theta: sm,
                    ln_jac: ln_s + ln_sigmoid(-x),
                    d_ln_jac: sm - s,
                }
            }
            Link::Exp => {
                let t = x.exp();
                LinkEval {
                    theta: t,
                    ln_theta: x,
                    d_ln_theta: 1.0,
                    ln_jac: x,
                    d_ln_jac: 1.0,
                }
            }
            Link::Softplus => {
                let t = softplus(x);
                let s = sigmoid(x);
                let d = if x < -30.0 { 1.0 } else { s / t };
                LinkEval {
                    theta: t,
                    ln_theta: ln_softplus(x),
                    d_ln_theta: d,
                    ln_jac: ln_sigmoid(x),
                    d_ln_jac: sigmoid(-x),
                }
            }
            Link::Identity => LinkEval {
                theta: x,
                ln_theta: x.ln(),
                d_ln_theta: 1.0 / x,
                ln_jac: 0.0,
                d_ln_jac: 0.0,
            },
        }
    }

    #[inline]
    pub fn forward(self, x: f64) -> f64 {
        match self {
            Link::Sigmoid => sigmoid(x),
            Link::Exp => x.exp(),
            Link::Softplus => softplus(x),
            Link::Identity => x,
        }
    }

    /// `(θ, dθ/dx)`, the same values as [`Link::forward`] and
    /// [`Link::deriv`], with the exponential shared where they have one.
    #[inline]
    pub fn forward_deriv(self, x: f64) -> (f64, f64) {
        match self {
            Link::Exp => {
                let t = x.exp();
                (t, t)
            }
            _ => (self.forward(x), self.deriv(x)),
        }
    }

    /// dθ/dx
    #[inline]
    pub fn deriv(self, x: f64) -> f64 {
        match self {
            Link::Sigmoid => sigmoid(x) * sigmoid(-x),
            Link::Exp => x.exp(),
            Link::Softplus => sigmoid(x),
            Link::Identity => 1.0,
        }
    }

    #[inline]
    pub fn inverse(self, theta: f64) -> f64 {
        match self {
            Link::Sigmoid => (theta / (1.0 - theta)).ln(),
            Link::Exp => theta.ln(),
            Link::Softplus => softplus_inv(theta),
            Link::Identity => theta,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Link::Sigmoid => "sigmoid",
            Link::Exp => "exp",
            Link::Softplus => "softplus",
            Link::Identity => "identity",
        }
    }

    /// The link of a name; `arg` names the argument in the error.
    pub fn parse(s: &str, arg: &str) -> crate::Result<Self> {
        Ok(match s {
            "sigmoid" => Link::Sigmoid,
            "exp" => Link::Exp,
            "softplus" => Link::Softplus,
            "identity" => Link::Identity,
            other => {
                return Err(crate::CoreError::arg(
                    arg,
                    format!("unknown link \"{other}\""),
                ))
            }
        })
    }
}

/// A prior for one scalar parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prior {
    /// `x ~ N(loc, scale)` on the unconstrained coordinate (the `unconstrained = TRUE` priors).
    Normal { loc: f64, scale: f64 },
    /// `θ ~ LogNormal(loc, scale)`.
    LogNormal { loc: f64, scale: f64 },
    /// `θ ~ Beta(a, b)` on (0, 1).
    Beta { a: f64, b: f64 },
    /// scribe's BetaPrime: `φ = (1−p)/p` with `p ~ Beta(a, b)`;
    /// density `φ^(b−1) (1+φ)^(−(a+b)) / B(b, a)`.
    BetaPrime { a: f64, b: f64 },
    /// `θ ~ N(loc, scale)` truncated to `θ ≥ 0`.
    TruncNormal0 { loc: f64, scale: f64 },
    /// No per-coordinate prior: the block's prior is joint (see `Model::joint_prior_grad`).
    Flat,
}

impl Prior {
    /// `(ln p_x(x), d/dx ln p_x(x))` for `θ = link(x)`.
    #[inline]
    pub fn ln_density_x(&self, x: f64, link: Link) -> (f64, f64) {
        match *self {
            Prior::Normal { loc, scale } => {
                return (ln_normal(x, loc, scale), -(x - loc) / (scale * scale))
            }
            Prior::Flat => return (0.0, 0.0),
            _ => {}
        }
        let e = link.eval(x);
        let (lp, dlp) = match *self {
            Prior::Normal { .. } | Prior::Flat => unreachable!(),
            Prior::LogNormal { loc, scale } => {
                let z = (e.ln_theta - loc) / scale;
                let lp = -e.ln_theta + ln_normal(e.ln_theta, loc, scale);
                let d = (-1.0 - z / scale) * e.d_ln_theta;
                (lp, d)
            }
            Prior::Beta { a, b } => {
                let (ln1m, dln1m) = if link == Link::Sigmoid {
                    (ln_sigmoid(-x), -sigmoid(x))
                } else {
                    let t = e.theta;
                    ((-t).ln_1p(), -t / (1.0 - t) * e.d_ln_theta)
                };
                let lp = (a - 1.0) * e.ln_theta + (b - 1.0) * ln1m - lbeta(a, b);
                (lp, (a - 1.0) * e.d_ln_theta + (b - 1.0) * dln1m)
            }
            Prior::BetaPrime { a, b } => {
                let ln1p = softplus(e.ln_theta); // ln(1 + θ)
                let lp = (b - 1.0) * e.ln_theta - (a + b) * ln1p - lbeta(b, a);
                let d = ((b - 1.0) - (a + b) * sigmoid(e.ln_theta)) * e.d_ln_theta;
                (lp, d)
            }
            Prior::TruncNormal0 { loc, scale } => {
                let lp = ln_normal(e.theta, loc, scale) - ln_normal_sf(-loc / scale);
                let d = -(e.theta - loc) / (scale * scale) * e.theta * e.d_ln_theta;
                (lp, d)
            }
        };
        (lp + e.ln_jac, dlp + e.d_ln_jac)
    }

    /// The prior is Gaussian in `x` (so the ELBO can use an analytic KL): `(loc, scale)`.
    pub fn normal_in_x(&self, link: Link) -> Option<(f64, f64)> {
        match *self {
            Prior::Normal { loc, scale } => Some((loc, scale)),
            Prior::LogNormal { loc, scale } if link == Link::Exp => Some((loc, scale)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(f: impl Fn(f64) -> f64, x: f64) -> f64 {
        let h = 1e-6 * x.abs().max(1.0);
        (f(x + h) - f(x - h)) / (2.0 * h)
    }

    #[test]
    fn prior_gradients_match_finite_differences() {
        let priors = [
            (
                Prior::Normal {
                    loc: -2.0,
                    scale: 1.0,
                },
                Link::Sigmoid,
            ),
            (
                Prior::LogNormal {
                    loc: 0.5,
                    scale: 1.3,
                },
                Link::Exp,
            ),
            (
                Prior::LogNormal {
                    loc: 0.5,
                    scale: 1.3,
                },
                Link::Softplus,
            ),
            (Prior::Beta { a: 1.0, b: 9.0 }, Link::Sigmoid),
            (Prior::Beta { a: 2.5, b: 0.7 }, Link::Sigmoid),
            (Prior::BetaPrime { a: 1.0, b: 1.0 }, Link::Exp),
            (Prior::BetaPrime { a: 3.0, b: 2.0 }, Link::Softplus),
            (
                Prior::TruncNormal0 {
                    loc: 3.0,
                    scale: 0.5,
                },
                Link::Softplus,
            ),
        ];
        for (prior, link) in priors {
            for &x in &[-3.0, -0.4, 0.0, 0.7, 2.5] {
                let (_, d) = prior.ln_density_x(x, link);
                let want = fd(|y| prior.ln_density_x(y, link).0, x);
                assert!(
                    (d - want).abs() < 1e-6 * want.abs().max(1.0),
                    "{prior:?} {link:?} x={x}: {d} vs {want}"
                );
            }
        }
    }

    #[test]
    fn densities_integrate_to_one_in_x() {
        // A trapezoid over a wide grid checks normalisation including the Jacobian.
        let cases = [
            (Prior::Beta { a: 2.0, b: 5.0 }, Link::Sigmoid, 40.0),
            (Prior::BetaPrime { a: 2.0, b: 3.0 }, Link::Exp, 40.0),
            (
                Prior::LogNormal {
                    loc: 0.0,
                    scale: 1.0,
                },
                Link::Softplus,
                1e4,
            ),
            (
                Prior::TruncNormal0 {
                    loc: 1.0,
                    scale: 2.0,
                },
                Link::Softplus,
                40.0,
            ),
        ];
        for (prior, link, hi) in cases {
            let (lo, n) = (-40.0, 2_000_000);
            let h = (hi - lo) / n as f64;
            let mut s = 0.0;
            for k in 0..=n {
                let x = lo + k as f64 * h;
                let w = if k == 0 || k == n { 0.5 } else { 1.0 };
                s += w * prior.ln_density_x(x, link).0.exp();
            }
            assert!((s * h - 1.0).abs() < 1e-4, "{prior:?}: {}", s * h);
        }
    }

    #[test]
    fn links_round_trip() {
        for link in [Link::Sigmoid, Link::Exp, Link::Softplus] {
            for &x in &[-5.0, -0.1, 0.0, 1.0, 4.0] {
                assert!((link.inverse(link.forward(x)) - x).abs() < 1e-9);
                let want = fd(|y| link.forward(y), x);
                assert!((link.deriv(x) - want).abs() < 1e-7 * want.abs().max(1.0));
            }
        }
    }
}
