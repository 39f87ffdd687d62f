//! Observation kernels of PLN and NBLN: the log-density of one gene's count
//! given its log-rate `ℓ`, with the first two derivatives in `ℓ` that Newton
//! solvers and the Laplace log-determinant need, and the derivatives in the
//! NB dispersion.

use crate::math::{digamma, lgamma, sigmoid, softplus};

/// The observation model of one gene's count given its log-rate.
pub trait Obs: Sync {
    /// `(∂/∂ℓ, −∂²/∂ℓ²)` of the log-density of count `u` of gene `g` at log-rate `ℓ`.
    fn terms(&self, g: usize, u: f64, ell: f64) -> (f64, f64);
    /// The log-density itself (only the ELBO needs it; Newton does not).
    fn value(&self, g: usize, u: f64, ell: f64) -> f64;
    /// `(∂ log-density/∂r_g, ∂a_g/∂r_g)` for models with a dispersion.
    fn d_r(&self, _g: usize, _u: f64, _ell: f64) -> (f64, f64) {
        (0.0, 0.0)
    }
}

/// `u ~ Poisson(e^ℓ)`, `ℓ` clipped to ±30, `ln u!` dropped (as in the original).
pub struct Poisson;

impl Obs for Poisson {
    #[inline]
    fn terms(&self, _g: usize, u: f64, ell: f64) -> (f64, f64) {
        let lam = ell.clamp(-30.0, 30.0).exp();
        (u - lam, lam)
    }
    fn value(&self, _g: usize, u: f64, ell: f64) -> f64 {
        let l = ell.clamp(-30.0, 30.0);
        u * l - l.exp()
    }
}

/// `u ~ NB(mean e^ℓ, concentration r_g)` with the full pmf; `ℓ` clipped to
/// ±50 and all probabilities in log space through `δ = ℓ − ln r`.
pub struct NegBin<'a> {
    pub r: &'a [f64],
}

impl NegBin<'_> {
    #[inline]
    fn parts(&self, g: usize, ell: f64) -> (f64, f64, f64, f64) {
        let r = self.r[g].max(1e-6);
        let delta = ell.clamp(-50.0, 50.0) - r.ln();
        let q = sigmoid(delta); // 1 − p
        (r, delta, 1.0 - q, q)
    }
}

impl Obs for NegBin<'_> {
    #[inline]
    fn terms(&self, g: usize, u: f64, ell: f64) -> (f64, f64) {
        let (r, _, p, q) = self.parts(g, ell);
        (u - (u + r) * q, (u + r) * p * q)
    }
    fn value(&self, g: usize, u: f64, ell: f64) -> f64 {
        let (r, delta, _, _) = self.parts(g, ell);
        let ln_p = -softplus(delta);
        let ln_q = delta - softplus(delta);
        lgamma(u + r) - lgamma(r) - lgamma(u + 1.0) + r * ln_p + u * ln_q
    }
    #[inline]
    fn d_r(&self, g: usize, u: f64, ell: f64) -> (f64, f64) {
        let (r, delta, p, q) = self.parts(g, ell);
        let dv = digamma(u + r) - digamma(r) - softplus(delta) + q - u * p / r;
        let da = p * q + (u + r) * (1.0 - 2.0 * p) * p * q / r;
        (dv, da)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nb_terms_match_the_pmf_and_its_derivatives() {
        let r = [2.5];
        let nb = NegBin { r: &r };
        for (u, ell) in [(0.0f64, -1.0f64), (3.0, 0.5), (40.0, 3.0)] {
            let m: f64 = ell.exp();
            let p = 2.5 / (2.5 + m);
            let pmf =
                lgamma(u + 2.5) - lgamma(2.5) - lgamma(u + 1.0) + 2.5 * p.ln() + u * (1.0 - p).ln();
            let (dv, a) = nb.terms(0, u, ell);
            assert!((nb.value(0, u, ell) - pmf).abs() < 1e-10);
            let h = 1e-5;
            let fd = (nb.value(0, u, ell + h) - nb.value(0, u, ell - h)) / (2.0 * h);
            assert!((fd - dv).abs() < 1e-6);
            let fd2 = -(nb.terms(0, u, ell + h).0 - nb.terms(0, u, ell - h).0) / (2.0 * h);
            assert!((fd2 - a).abs() < 1e-6);
        }
    }

    /// Both kernels: the first two ℓ-derivatives and the NB dispersion
    /// derivatives (`d_r`: of the value and of the curvature) match finite
    /// differences.
    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-5;
        for (u, ell) in [(0.0f64, -2.0f64), (2.0, 0.3), (17.0, 2.5)] {
            let p = Poisson;
            let fd = (p.value(0, u, ell + h) - p.value(0, u, ell - h)) / (2.0 * h);
            assert!((fd - p.terms(0, u, ell).0).abs() < 1e-6 * fd.abs().max(1.0));
            let fd2 = -(p.terms(0, u, ell + h).0 - p.terms(0, u, ell - h).0) / (2.0 * h);
            assert!((fd2 - p.terms(0, u, ell).1).abs() < 1e-6 * fd2.abs().max(1.0));
            for r in [0.4, 3.0, 40.0] {
                let at = |r: f64| NegBin { r: &[r] }.value(0, u, ell);
                let curv = |r: f64| NegBin { r: &[r] }.terms(0, u, ell).1;
                let (dv, da) = NegBin { r: &[r] }.d_r(0, u, ell);
                let fdv = (at(r + h) - at(r - h)) / (2.0 * h);
                let fda = (curv(r + h) - curv(r - h)) / (2.0 * h);
                assert!(
                    (fdv - dv).abs() < 1e-6 * fdv.abs().max(1.0),
                    "{u} {ell} {r}"
                );
                assert!(
                    (fda - da).abs() < 1e-6 * fda.abs().max(1.0),
                    "{u} {ell} {r}"
                );
            }
        }
    }
}
