//! Observation kernels of PLN and NBLN: the log-density of one gene's count
//! given its log-rate `ℓ`, with the first two derivatives in `ℓ` that Newton
//! solvers and the Laplace log-determinant need, and the derivatives in the
//! NB dispersion.

use crate::math::{
    digamma, digamma_diff_scaled, lgamma, lgamma_diff_scaled, ln_1p_unit, sigmoid, softplus,
};

/// A count as an integer, when it is one (data always is).
#[inline]
fn count(u: f64) -> Option<u32> {
    (u >= 0.0 && u <= u32::MAX as f64 && u.fract() == 0.0).then_some(u as u32)
}

/// `σ(δ) − ln(1 + e^δ)`, by its series where both are tiny (δ < −7).
#[inline]
fn sigmoid_minus_softplus(delta: f64) -> f64 {
    if delta >= -7.0 {
        return sigmoid(delta) - softplus(delta);
    }
    // Σ_{k≥2} (−1)^{k+1} (1 − 1/k) tᵏ with t = e^δ < 1e-3.
    let t = delta.exp();
    let mut pow = t * t;
    let mut sum = 0.0f64;
    let mut k = 2.0f64;
    loop {
        sum -= (1.0 - 1.0 / k) * pow;
        pow *= -t;
        k += 1.0;
        if pow.abs() <= 1e-18 * sum.abs() {
            return sum;
        }
    }
}

/// The observation model of one gene's count given its log-rate.
pub trait Obs: Sync {
    /// `(∂/∂ℓ, −∂²/∂ℓ²)` of the log-density of count `u` of gene `g` at log-rate `ℓ`.
    fn terms(&self, g: usize, u: f64, ell: f64) -> (f64, f64);
    /// The log-density itself (only the ELBO needs it; Newton does not).
    fn value(&self, g: usize, u: f64, ell: f64) -> f64;
    /// `(value, −∂²/∂ℓ²)` in one go (the ELBO needs both at every gene).
    fn value_curvature(&self, g: usize, u: f64, ell: f64) -> (f64, f64) {
        (self.value(g, u, ell), self.terms(g, u, ell).1)
    }
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
    #[inline]
    fn value_curvature(&self, _g: usize, u: f64, ell: f64) -> (f64, f64) {
        let l = ell.clamp(-30.0, 30.0);
        let lam = l.exp();
        (u * l - lam, lam)
    }
}

/// `u ~ NB(mean e^ℓ, concentration r_g)` with the full pmf; `ℓ` clipped to
/// ±50 and all probabilities in log space through `δ = ℓ − ln r`. The value
/// and the dispersion derivatives are arranged so that nothing of size
/// `u ln r` cancels: they keep their precision up to the Poisson limit
/// (`r` in 1e6 … 1e12 and beyond).
pub struct NegBin<'a> {
    r: &'a [f64],
    /// `ln r_g` (of `r_g` floored at 1e-6), once per set of dispersions:
    /// Newton evaluates the terms G times per cell and step.
    ln_r: Vec<f64>,
}

impl<'a> NegBin<'a> {
    pub fn new(r: &'a [f64]) -> Self {
        let ln_r = r.iter().map(|v| v.max(1e-6).ln()).collect();
        NegBin { r, ln_r }
    }

    #[inline]
    fn parts(&self, g: usize, ell: f64) -> (f64, f64, f64, f64) {
        let r = self.r[g].max(1e-6);
        let delta = ell.clamp(-50.0, 50.0) - self.ln_r[g];
        // q = 1 − p = μ/(μ + r) and p, both from one e^{−|δ|}: exact in both tails.
        let (p, q) = sigmoid_pair(delta);
        (r, delta, p, q)
    }
}

impl NegBin<'_> {
    /// The parts of `(value, ∂value/∂ℓ, ∂value/∂r_g)` that depend on `ℓ`,
    /// in one pass (one exponential, one logarithm). What they leave out
    /// depends on the count and `r_g` only, `lnΓ(u + r) − lnΓ(r) − u ln r −
    /// ln u!` in the value and its `r`-derivative, so a fit sums it over
    /// each gene's count histogram instead of over cells. See the test
    /// `rate_terms_plus_the_count_terms_are_the_full_ones`.
    #[inline]
    pub fn rate_terms(&self, g: usize, u: f64, ell: f64) -> (f64, f64, f64) {
        let r = self.r[g].max(1e-6);
        let l = ell.clamp(-50.0, 50.0);
        let delta = l - self.ln_r[g];
        let e = (-delta.abs()).exp();
        // q = σ(δ) = μ/(μ + r).
        let q = if delta >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        let sp = delta.max(0.0) + ln_1p_unit(e);
        let q_minus_sp = if delta >= -7.0 {
            q - sp
        } else {
            sigmoid_minus_softplus(delta)
        };
        (
            u * (l - sp) - r * sp,
            u - (u + r) * q,
            q_minus_sp + u * q / r,
        )
    }
}

/// `(σ(−δ), σ(δ))` from one exponential.
#[inline]
fn sigmoid_pair(delta: f64) -> (f64, f64) {
    let e = (-delta.abs()).exp();
    let (big, small) = (1.0 / (1.0 + e), e / (1.0 + e));
    if delta >= 0.0 {
        (small, big)
    } else {
        (big, small)
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
        let sp = softplus(delta);
        // lnΓ(u+r) − lnΓ(r) + u ln q with the u·ln r of both taken out:
        // [lnΓ(u+r) − lnΓ(r) − u ln r] + u (ℓ − softplus δ).
        let scaled = match count(u) {
            Some(n) => lgamma_diff_scaled(n, r),
            None => lgamma(u + r) - lgamma(r) - u * r.ln(),
        };
        scaled + u * (ell.clamp(-50.0, 50.0) - sp) - lgamma(u + 1.0) - r * sp
    }
    #[inline]
    fn d_r(&self, g: usize, u: f64, ell: f64) -> (f64, f64) {
        let (r, delta, p, q) = self.parts(g, ell);
        // ψ(u+r) − ψ(r) − softplus δ + q − u p/r, as
        // [ψ(u+r) − ψ(r) − u/r] + [q − softplus δ] + u q/r.
        let psi = match count(u) {
            Some(n) => digamma_diff_scaled(n, r),
            None => digamma(u + r) - digamma(r) - u / r,
        };
        let dv = psi + sigmoid_minus_softplus(delta) + u * q / r;
        // ∂a/∂r of a = (u + r) p q, without cancelling p q against (u+r)(1−2p)pq/r.
        let da = p * q * (2.0 * q * (u + r) - u) / r;
        (dv, da)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nb_terms_match_the_pmf_and_its_derivatives() {
        let r = [2.5];
        let nb = NegBin::new(&r);
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
                let at = |r: f64| NegBin::new(&[r]).value(0, u, ell);
                let curv = |r: f64| NegBin::new(&[r]).terms(0, u, ell).1;
                let (dv, da) = NegBin::new(&[r]).d_r(0, u, ell);
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

    #[test]
    fn rate_terms_plus_the_count_terms_are_the_full_ones() {
        for r in [1e-7, 0.4, 3.0, 40.0, 1e8] {
            let rs = [r];
            let nb = NegBin::new(&rs);
            let rf = r.max(1e-6);
            for n in [0u32, 1, 7, 300] {
                let u = n as f64;
                for ell in [-60.0, -9.0, -1.0, 0.0, 0.7, 4.0, 20.0, 60.0] {
                    let (v, de, dr) = nb.rate_terms(0, u, ell);
                    let v = v + lgamma_diff_scaled(n, rf) - lgamma(u + 1.0);
                    let dr = dr + digamma_diff_scaled(n, rf);
                    let close =
                        |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
                    assert!(close(v, nb.value(0, u, ell)), "value {r} {u} {ell}");
                    assert!(close(de, nb.terms(0, u, ell).0), "d_ell {r} {u} {ell}");
                    assert!(close(dr, nb.d_r(0, u, ell).0), "d_r {r} {u} {ell}");
                }
            }
        }
    }

    /// Near the Poisson limit the NB value and its r-derivatives follow the
    /// expansion `ln NB − ln Poisson = ((u − μ)² − u)/(2r) + O(r⁻²)`, so
    /// `∂/∂r ≈ −((u − μ)² − u)/(2r²)`; the curvature `a = (u+r)pq` tends to `μ`.
    #[test]
    fn nb_keeps_its_precision_near_the_poisson_limit() {
        for &r in &[1e6f64, 1e9, 1e11] {
            for (u, ell) in [(0.0f64, 0.7f64), (3.0, 0.2), (17.0, 2.1), (250.0, 5.3)] {
                let rs = [r];
                let nb = NegBin::new(&rs);
                let mu = ell.exp();
                let c = ((u - mu).powi(2) - u) / 2.0;
                let pois = u * ell - mu - lgamma(u + 1.0);
                // The next term of the expansion is O((u + μ)/r) relative to the first.
                let tol = |x: f64| (2e-6 + 50.0 * (u + mu + 1.0) / r) * x.abs();
                let dv = nb.value(0, u, ell) - pois;
                // The value itself rounds at the scale of its terms (u ℓ, ln u!, μ);
                // differencing lnΓ at r = 1e11, as before, erred by ~1e-4.
                let ulp = 1e-14 * (u * ell.abs() + lgamma(u + 1.0) + mu + 1.0);
                assert!(
                    (dv - c / r).abs() <= tol(c / r) + ulp,
                    "value u={u} r={r}: {dv} vs {}",
                    c / r
                );
                let (dr, da) = nb.d_r(0, u, ell);
                let want = -c / (r * r);
                assert!(
                    (dr - want).abs() <= tol(want) + 1e-14 / (r * r),
                    "d_r u={u} r={r}: {dr} vs {want}"
                );
                // a = (u + r) μ r/(μ + r)², so ∂a/∂r = μ(u(μ − r) + 2rμ)/(μ + r)³.
                let exact_da = mu * (u * (mu - r) + 2.0 * r * mu) / (mu + r).powi(3);
                assert!(
                    (da - exact_da).abs() <= 1e-9 * exact_da.abs() + 1e-30,
                    "da u={u} r={r}: {da} vs {exact_da}"
                );
                let (_, curv) = nb.terms(0, u, ell);
                assert!((curv - mu).abs() < 1e-5 * mu + mu * (u + mu) / r);
            }
        }
    }
}
