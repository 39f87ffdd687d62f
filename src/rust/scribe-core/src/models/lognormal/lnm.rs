//! The logistic-normal multinomial (LNM) observation model: a cell's
//! composition latent `y ∈ R^{G−1}` in additive log-ratio coordinates
//! against a reference gene, `u ~ Multinomial(N, softmax([y, 0]))` (logits
//! clipped to ±30), and the total `N ~ NB(mean μ_T, shape r_T)` (with
//! capture, mean `μ_T e^{−η}`).

use crate::math::{digamma, lgamma};

/// Logits are clipped to ±CLIP before the softmax (as in the original).
pub const CLIP: f64 = 30.0;

/// `ρ` over the non-reference genes (softmax of `[y, 0]`) into `rho`;
/// returns `(log-sum-exp, ρ_ref)`.
pub fn softmax_alr(y: &[f64], rho: &mut [f64]) -> (f64, f64) {
    let mx = y
        .iter()
        .map(|v| v.clamp(-CLIP, CLIP))
        .fold(0.0f64, f64::max);
    let mut tot = (-mx).exp();
    for (r, &v) in rho.iter_mut().zip(y) {
        *r = (v.clamp(-CLIP, CLIP) - mx).exp();
        tot += *r;
    }
    rho.iter_mut().for_each(|r| *r /= tot);
    (mx + tot.ln(), (-mx).exp() / tot)
}

/// The totals model `N ~ NB(mean μ_T, shape r_T)` (no `ln N!`):
/// `(ln p, ∂/∂μ_T, ∂/∂r_T)`.
pub fn totals(n_tot: f64, mu_t: f64, r_t: f64) -> (f64, f64, f64) {
    let v = r_t + mu_t;
    let lp = lgamma(n_tot + r_t) - lgamma(r_t) + r_t * (r_t / v).ln() + n_tot * (mu_t / v).ln();
    let d_mu = n_tot / mu_t - (r_t + n_tot) / v;
    let d_r = digamma(n_tot + r_t) - digamma(r_t) + (r_t / v).ln() + 1.0 - (r_t + n_tot) / v;
    (lp, d_mu, d_r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::check_gradient;

    #[test]
    fn totals_match_the_pmf_and_finite_differences() {
        // Totals: the NB pmf without ln N! and its derivatives.
        let p = 3.0f64 / 23.0;
        let lp = totals(37.0, 20.0, 3.0).0;
        assert!(
            (lp - (lgamma(40.0) - lgamma(3.0) + 3.0 * p.ln() + 37.0 * (1.0 - p).ln())).abs()
                < 1e-10
        );
        let plain = |th: &[f64], grad: &mut [f64]| {
            let (v, dm, dr) = totals(37.0, th[0], th[1]);
            grad[0] += dm;
            grad[1] += dr;
            v
        };
        check_gradient(plain, &[20.0, 3.0], 1e-5, "LNM totals");
    }

    #[test]
    fn softmax_alr_is_a_composition() {
        let y = [0.5, -1.0, 40.0];
        let mut rho = [0.0; 3];
        let (lse, rho_ref) = softmax_alr(&y, &mut rho);
        assert!((rho.iter().sum::<f64>() + rho_ref - 1.0).abs() < 1e-12);
        // Clipped at 30: the third logit acts as 30.
        let want = (0.5f64.exp() + (-1.0f64).exp() + 30f64.exp() + 1.0).ln();
        assert!((lse - want).abs() < 1e-12);
    }
}
