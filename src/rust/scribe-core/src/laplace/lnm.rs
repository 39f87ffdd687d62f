//! One cell of the logistic-normal multinomial (LNM): composition latent
//! `y ∈ R^{G−1}` in additive log-ratio coordinates against a reference gene,
//! `y ~ N(μ, Σ)`, `u ~ Multinomial(N, softmax([y, 0]))` (logits clipped
//! to ±30; the multinomial coefficient dropped, as in the original). The
//! total `N` has its own NB model (see [`totals`]).
//!
//! Newton: `g = u − Nρ − Σ⁻¹(y − μ)`, `−H = A − N ρρᵀ` with
//! `A = diag(Nρ) + Σ⁻¹ (+δ)`, solved by Sherman–Morrison with the
//! denominator floored at `0.01/N` (a divergence defence of the original).
//! ELBO gradient in Σ: `½ (b bᵀ − B)` with `B = (Σ + C⁻¹)⁻¹`,
//! `C = N (diag ρ − ρρᵀ)`, `C⁻¹ = diag(1/(Nρ)) + 11ᵀ/(N ρ_ref)`: a diagonal
//! plus rank one, so `B W` and `diag B` come from the same Woodbury routine
//! with W augmented by the column `1/√(N ρ_ref)`.

use super::cell::OuterGrad;
use super::woodbury::{inv_sigma_plus_diag, NewtonFactor, SigmaFactor};
use crate::math::{digamma, lgamma};
use crate::models::lognormal::lnm::{softmax_alr, CLIP};
use crate::models::lognormal::ETA_MIN;

/// Gradient into `g` and `ρ` into `rho`; returns the sup-norm.
#[allow(clippy::too_many_arguments)]
fn gradient(
    u: &[f64],
    n_tot: f64,
    y: &[f64],
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
    rho: &mut [f64],
    g: &mut [f64],
) -> f64 {
    let e: Vec<f64> = y.iter().zip(mu).map(|(a, b)| a - b).collect();
    sig.solve(w, &e, g);
    softmax_alr(y, rho);
    let mut norm: f64 = 0.0;
    for i in 0..y.len() {
        g[i] = u[i] - n_tot * rho[i] - g[i];
        norm = norm.max(g[i].abs());
    }
    norm
}

/// `(A − Nρρᵀ)⁻¹ v` by Sherman–Morrison, given the factor of `A`.
fn sm_solve(
    nf: &NewtonFactor,
    sig: &SigmaFactor,
    w: &[f64],
    rho: &[f64],
    n_tot: f64,
    v: &[f64],
) -> Vec<f64> {
    let n = v.len();
    let (mut av, mut ar) = (vec![0.0; n], vec![0.0; n]);
    nf.solve(sig, w, v, &mut av);
    nf.solve(sig, w, rho, &mut ar);
    let rar: f64 = rho.iter().zip(&ar).map(|(p, q)| p * q).sum();
    let rav: f64 = rho.iter().zip(&av).map(|(p, q)| p * q).sum();
    let denom = (1.0 / n_tot - rar).max(0.01 / n_tot);
    let alpha = rav / denom;
    av.iter().zip(&ar).map(|(p, q)| p + alpha * q).collect()
}

/// At most `n_iter` damped Newton steps on one cell's `y` (warm-started in
/// place), stopping once the gradient sup-norm is at most `tol`; returns
/// that sup-norm (see [`super::cell::newton`]) and the steps taken.
#[allow(clippy::too_many_arguments)]
pub fn newton(
    u: &[f64],
    n_tot: f64,
    y: &mut [f64],
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
    n_iter: usize,
    tol: f64,
    damping: f64,
    max_step: f64,
) -> (f64, usize) {
    let n = y.len();
    let (mut rho, mut g) = (vec![0.0; n], vec![0.0; n]);
    let mut norm = f64::NAN;
    for it in 0..n_iter {
        norm = gradient(u, n_tot, y, mu, w, sig, &mut rho, &mut g);
        if norm <= tol {
            return (norm, it);
        }
        let a: Vec<f64> = rho.iter().map(|r| n_tot * r).collect();
        let Some(nf) = NewtonFactor::new(sig, &a, damping) else {
            return (f64::NAN, it + 1);
        };
        let step = sm_solve(&nf, sig, w, &rho, n_tot, &g);
        let big = step.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        let kappa = (max_step / big).min(1.0);
        for i in 0..n {
            y[i] += kappa * step[i];
        }
    }
    (norm, n_iter)
}

/// The gradient sup-norm at `y`.
pub fn grad_norm(
    u: &[f64],
    n_tot: f64,
    y: &[f64],
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
) -> f64 {
    let n = y.len();
    let (mut rho, mut g) = (vec![0.0; n], vec![0.0; n]);
    gradient(u, n_tot, y, mu, w, sig, &mut rho, &mut g)
}

/// One cell's composition ELBO at its MAP `ŷ`, adding its gradient in
/// `(μ, W, d)` (`out.r` is unused).
#[allow(clippy::too_many_arguments)]
pub fn elbo_grad(
    u: &[f64],
    n_tot: f64,
    y: &[f64],
    mu: &[f64],
    w: &[f64],
    d: &[f64],
    sig: &SigmaFactor,
    k: usize,
    out: OuterGrad<'_>,
) -> f64 {
    let n = y.len();
    let mut rho = vec![0.0; n];
    let (lse, rho_ref) = softmax_alr(y, &mut rho);
    let a: Vec<f64> = rho.iter().map(|r| n_tot * r).collect();
    let e: Vec<f64> = y.iter().zip(mu).map(|(p, q)| p - q).collect();
    let mut b = vec![0.0; n];
    sig.solve(w, &e, &mut b);
    let Some(nf) = NewtonFactor::new(sig, &a, 0.0) else {
        return f64::NAN;
    };
    let mut ar = vec![0.0; n];
    nf.solve(sig, w, &rho, &mut ar);
    let t = 1.0 - n_tot * rho.iter().zip(&ar).map(|(p, q)| p * q).sum::<f64>();
    let logdet = nf.logdet_a + t.max(1e-30).ln();
    let lik: f64 = (0..n).map(|i| u[i] * y[i].clamp(-CLIP, CLIP)).sum::<f64>() - n_tot * lse;
    let quad: f64 = e.iter().zip(&b).map(|(p, q)| p * q).sum();
    let elbo = lik
        - 0.5 * quad
        - 0.5 * sig.logdet_sigma
        - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
        - 0.5 * logdet;
    if !elbo.is_finite() {
        return elbo;
    }
    // W augmented by the rank-one part of C⁻¹.
    let k1 = k + 1;
    let c1 = (1.0 / (n_tot * rho_ref)).sqrt();
    let mut wa = vec![0.0; n * k1];
    for i in 0..n {
        wa[i * k1..i * k1 + k].copy_from_slice(&w[i * k..(i + 1) * k]);
        wa[i * k1 + k] = c1;
    }
    let Some((bw, bdiag)) = inv_sigma_plus_diag(&wa, None, d, &a, k1) else {
        return f64::NAN;
    };
    let mut btw = vec![0.0; k];
    for i in 0..n {
        for j in 0..k {
            btw[j] += b[i] * w[i * k + j];
        }
    }
    for i in 0..n {
        out.mu[i] += b[i];
        for j in 0..k {
            out.w[i * k + j] += b[i] * btw[j] - bw[i * k1 + j];
        }
        out.d[i] += 0.5 * (b[i] * b[i] - bdiag[i]);
    }
    elbo
}

/// The LNMVCP capture block of one cell: `N ~ NB(mean μ_T e^{−η}, r_T)`
/// with the prior `η ~ N(anchor, σ²)` (no truncation normaliser, as in the
/// original). Returns `(ρ_T, v, ∂/∂η, −∂²/∂η²)` of the log-density (data
/// plus prior).
fn eta_terms(
    n_tot: f64,
    mu_t: f64,
    r_t: f64,
    eta: f64,
    anchor: f64,
    sigma: f64,
) -> (f64, f64, f64, f64) {
    let rho = mu_t * (-eta).clamp(-CLIP, CLIP).exp();
    let v = r_t + rho;
    let g = r_t * (rho - n_tot) / v - (eta - anchor) / (sigma * sigma);
    let h = r_t * rho * (r_t + n_tot) / (v * v) + 1.0 / (sigma * sigma);
    (rho, v, g, h)
}

/// `n_iter` damped scalar Newton steps on `η` (step clipped to ±5, `η ≥ 1e-3`);
/// returns `|∂/∂η|` before the last step (projected at the bound).
#[allow(clippy::too_many_arguments)]
pub fn eta_newton(
    n_tot: f64,
    mu_t: f64,
    r_t: f64,
    anchor: f64,
    sigma: f64,
    eta: &mut f64,
    n_iter: usize,
    damping: f64,
) -> f64 {
    let mut norm = f64::NAN;
    for _ in 0..n_iter {
        let (_, _, g, h) = eta_terms(n_tot, mu_t, r_t, *eta, anchor, sigma);
        norm = if *eta <= ETA_MIN * (1.0 + 1e-9) && g < 0.0 {
            0.0
        } else {
            g.abs()
        };
        *eta = (*eta + (g / (h + damping)).clamp(-5.0, 5.0)).max(ETA_MIN);
    }
    norm
}

/// `|∂/∂η|` at `η` (projected at the bound).
pub fn eta_grad_norm(n_tot: f64, mu_t: f64, r_t: f64, anchor: f64, sigma: f64, eta: f64) -> f64 {
    let g = eta_terms(n_tot, mu_t, r_t, eta, anchor, sigma).2;
    if eta <= ETA_MIN * (1.0 + 1e-9) && g < 0.0 {
        0.0
    } else {
        g.abs()
    }
}

/// The totals' Laplace ELBO term with capture at `η̂`:
/// `ln NB(N; μ_T e^{−η̂}, r_T) − ½(η̂ − anchor)²/σ² − ½ ln(−H_ηη)`, with its
/// derivatives in `(μ_T, r_T)`.
pub fn totals_capture(
    n_tot: f64,
    mu_t: f64,
    r_t: f64,
    eta: f64,
    anchor: f64,
    sigma: f64,
) -> (f64, f64, f64) {
    let (rho, v, _, h) = eta_terms(n_tot, mu_t, r_t, eta, anchor, sigma);
    let (u, r) = (n_tot, r_t);
    let lp = lgamma(u + r) - lgamma(r) + r * (r / v).ln() + u * (rho / v).ln();
    let z = (eta - anchor) / sigma;
    let value = lp - 0.5 * z * z - 0.5 * h.max(1e-30).ln();
    // ∂/∂ρ and ∂/∂r of ln NB and of the data curvature f = r ρ (r + u)/(r + ρ)².
    let dlp_rho = u / rho - (r + u) / v;
    let dlp_r = digamma(u + r) - digamma(r) + (r / v).ln() + 1.0 - (r + u) / v;
    let df_rho = r * (r + u) * (r - rho) / (v * v * v);
    let df_r = rho * ((2.0 * r + u) * v - 2.0 * r * (r + u)) / (v * v * v);
    let d_rho = dlp_rho - 0.5 * df_rho / h;
    let d_mu = d_rho * rho / mu_t;
    let d_r = dlp_r - 0.5 * df_r / h;
    (value, d_mu, d_r)
}

/// `d_mode = "low_rank"`: the log-ratios are `y = μ + W z` with
/// `z ~ N(0, I_k)` (d unused), so each cell is a k-dimensional problem:
/// `∇ = Wᵀ(u − Nρ) − z`, `−H = Wᵀ C W + I`, `C = N(diag ρ − ρρᵀ)`, solved by
/// an explicit k × k Cholesky. Returns `(gradient, −H)`.
fn z_terms(
    u: &[f64],
    n_tot: f64,
    z: &[f64],
    mu: &[f64],
    w: &[f64],
    rho: &mut [f64],
) -> (Vec<f64>, Vec<f64>) {
    let (g, k) = (mu.len(), z.len());
    let y: Vec<f64> = (0..g)
        .map(|i| mu[i] + (0..k).map(|j| w[i * k + j] * z[j]).sum::<f64>())
        .collect();
    softmax_alr(&y, rho);
    let mut grad: Vec<f64> = z.iter().map(|v| -v).collect();
    for i in 0..g {
        let resid = u[i] - n_tot * rho[i];
        for j in 0..k {
            grad[j] += w[i * k + j] * resid;
        }
    }
    let h = low_rank_hessian(w, rho, n_tot, k);
    (grad, h)
}

/// `−H = Wᵀ C W + I` of low-rank LNM at composition `ρ`, `C = N(diag ρ − ρρᵀ)` (k × k).
pub(crate) fn low_rank_hessian(w: &[f64], rho: &[f64], n_tot: f64, k: usize) -> Vec<f64> {
    let mut wr = vec![0.0; k];
    let mut h = vec![0.0; k * k];
    for (i, &r) in rho.iter().enumerate() {
        let row = &w[i * k..(i + 1) * k];
        for j in 0..k {
            wr[j] += row[j] * r;
            for l in 0..k {
                h[j * k + l] += n_tot * r * row[j] * row[l];
            }
        }
    }
    for j in 0..k {
        for l in 0..k {
            h[j * k + l] -= n_tot * wr[j] * wr[l];
        }
        h[j * k + j] += 1.0;
    }
    h
}

/// Low-rank LNM: at most `n_iter` damped Newton steps on `z`, stopping
/// once the gradient sup-norm is at most `tol` (as [`newton`]).
#[allow(clippy::too_many_arguments)]
pub fn newton_z(
    u: &[f64],
    n_tot: f64,
    z: &mut [f64],
    mu: &[f64],
    w: &[f64],
    n_iter: usize,
    tol: f64,
    damping: f64,
    max_step: f64,
) -> (f64, usize) {
    let k = z.len();
    let mut rho = vec![0.0; mu.len()];
    let mut norm = f64::NAN;
    for it in 0..n_iter {
        let (mut g, mut h) = z_terms(u, n_tot, z, mu, w, &mut rho);
        norm = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if norm <= tol {
            return (norm, it);
        }
        for j in 0..k {
            h[j * k + j] += damping;
        }
        if !super::woodbury::cholesky(&mut h, k) {
            return (f64::NAN, it + 1);
        }
        super::woodbury::chol_solve(&h, k, &mut g);
        let big = g.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        let kappa = (max_step / big).min(1.0);
        for j in 0..k {
            z[j] += kappa * g[j];
        }
    }
    (norm, n_iter)
}

/// The gradient sup-norm of a low-rank LNM cell at `z`.
pub fn grad_norm_z(u: &[f64], n_tot: f64, z: &[f64], mu: &[f64], w: &[f64]) -> f64 {
    let mut rho = vec![0.0; mu.len()];
    z_terms(u, n_tot, z, mu, w, &mut rho)
        .0
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Low-rank LNM ELBO at `ẑ`: `Σ u log softmax(y) − ½‖ẑ‖² − ½ log det(−H)`
/// with `y = μ + W ẑ`. The log-determinant depends on μ and W also through
/// ρ(y): `∂ log det/∂y_g = N ρ_g (q_g − ρᵀq)` with
/// `q_i = P_ii − 2 (Pρ)_i`, `P = W (−H)⁻¹ Wᵀ`.
pub fn elbo_grad_z(
    u: &[f64],
    n_tot: f64,
    z: &[f64],
    mu: &[f64],
    w: &[f64],
    g_mu: &mut [f64],
    g_w: &mut [f64],
) -> f64 {
    let (g, k) = (mu.len(), z.len());
    let mut rho = vec![0.0; g];
    let y: Vec<f64> = (0..g)
        .map(|i| mu[i] + (0..k).map(|j| w[i * k + j] * z[j]).sum::<f64>())
        .collect();
    let (lse, _) = softmax_alr(&y, &mut rho);
    let (_, mut h) = z_terms(u, n_tot, z, mu, w, &mut rho);
    if !super::woodbury::cholesky(&mut h, k) {
        return f64::NAN;
    }
    let logdet: f64 = (0..k).map(|j| 2.0 * h[j * k + j].ln()).sum();
    let lik: f64 = (0..g).map(|i| u[i] * y[i].clamp(-CLIP, CLIP)).sum::<f64>() - n_tot * lse;
    let elbo = lik - 0.5 * z.iter().map(|v| v * v).sum::<f64>() - 0.5 * logdet;
    if !elbo.is_finite() {
        return elbo;
    }
    // M⁻¹ wᵢ for every gene (k × G), then P_ii, Pρ and M⁻¹ Wᵀ ρ.
    let mut minv_w = vec![0.0; g * k];
    for i in 0..g {
        let mut col = w[i * k..(i + 1) * k].to_vec();
        super::woodbury::chol_solve(&h, k, &mut col);
        minv_w[i * k..(i + 1) * k].copy_from_slice(&col);
    }
    let mut wr = vec![0.0; k];
    for i in 0..g {
        for j in 0..k {
            wr[j] += w[i * k + j] * rho[i];
        }
    }
    let mut minv_wr = wr.clone();
    super::woodbury::chol_solve(&h, k, &mut minv_wr);
    let q: Vec<f64> = (0..g)
        .map(|i| {
            let row = &w[i * k..(i + 1) * k];
            let pii: f64 = (0..k).map(|j| row[j] * minv_w[i * k + j]).sum();
            let prho: f64 = (0..k).map(|j| row[j] * minv_wr[j]).sum();
            pii - 2.0 * prho
        })
        .collect();
    let rq: f64 = rho.iter().zip(&q).map(|(a, b)| a * b).sum();
    for i in 0..g {
        // Through y: the likelihood and the ρ-dependence of log det.
        let dy = u[i] - n_tot * rho[i] - 0.5 * n_tot * rho[i] * (q[i] - rq);
        g_mu[i] += dy;
        for j in 0..k {
            // Directly through W in −H = Wᵀ C W + I: ∂ log det/∂W = 2 C W M⁻¹.
            let cwm = n_tot * rho[i] * minv_w[i * k + j] - n_tot * rho[i] * minv_wr[j];
            g_w[i * k + j] += dy * z[j] - cwm;
        }
    }
    elbo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newton_and_outer_gradient() {
        let (g1, k) = (8, 2);
        let (w, d) = crate::laplace::woodbury::test_loadings(g1, k, 0.5, 0.1, 0.2);
        let mu: Vec<f64> = (0..g1).map(|i| ((i as f64) * 0.5).sin() - 0.5).collect();
        let u: Vec<f64> = (0..g1).map(|i| ((i * 7) % 5) as f64).collect();
        let n_tot = u.iter().sum::<f64>() + 6.0; // 6 counts of the reference gene
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        let mut y = mu.clone();
        newton(&u, n_tot, &mut y, &mu, &w, &sig, 60, 0.0, 0.0, 5.0);
        assert!(grad_norm(&u, n_tot, &y, &mu, &w, &sig) < 1e-9);
        let y0 = y.clone();
        newton(&u, n_tot, &mut y, &mu, &w, &sig, 1, 0.0, 0.0, 5.0);
        assert!(y.iter().zip(&y0).all(|(p, q)| (p - q).abs() < 1e-6));
        use crate::testutil::check_gradient;
        // Composition: θ = [μ | W | d] with ŷ fixed.
        let theta: Vec<f64> = mu.iter().chain(&w).chain(&d).copied().collect();
        let comp = |th: &[f64], grad: &mut [f64]| {
            let (tm, rest) = th.split_at(g1);
            let (tw, td) = rest.split_at(g1 * k);
            let (gm, rest) = grad.split_at_mut(g1);
            let (gw, gd) = rest.split_at_mut(g1 * k);
            let s = SigmaFactor::new(tw, td, k).unwrap();
            let out = OuterGrad {
                mu: gm,
                w: gw,
                d: gd,
                r: &mut [],
            };
            elbo_grad(&u, n_tot, &y, tm, tw, td, &s, k, out)
        };
        check_gradient(comp, &theta, 1e-5, "LNM composition");
        // Capture block: Newton reaches the mode; derivatives of its ELBO term in (μ_T, r_T).
        let mut eta = 0.5;
        eta_newton(37.0, 200.0, 3.0, 1.2, 0.5, &mut eta, 50, 0.0);
        assert!(eta_grad_norm(37.0, 200.0, 3.0, 1.2, 0.5, eta) < 1e-10);
        let capture = |th: &[f64], grad: &mut [f64]| {
            let (v, dm, dr) = totals_capture(37.0, th[0], th[1], eta, 1.2, 0.5);
            grad[0] += dm;
            grad[1] += dr;
            v
        };
        check_gradient(capture, &[200.0, 3.0], 1e-5, "LNMVCP totals");
    }

    #[test]
    fn low_rank_newton_and_outer_gradient() {
        let (g1, k) = (8, 3);
        let (w, _) = crate::laplace::woodbury::test_loadings(g1, k, 0.5, 0.1, 0.2);
        let mu: Vec<f64> = (0..g1).map(|i| ((i as f64) * 0.5).sin() - 0.5).collect();
        let u: Vec<f64> = (0..g1).map(|i| ((i * 7) % 5) as f64).collect();
        let n_tot = u.iter().sum::<f64>() + 6.0;
        let mut z = vec![0.0; k];
        newton_z(&u, n_tot, &mut z, &mu, &w, 60, 0.0, 0.0, 5.0);
        assert!(grad_norm_z(&u, n_tot, &z, &mu, &w) < 1e-9);
        let theta: Vec<f64> = mu.iter().chain(&w).copied().collect();
        let f = |th: &[f64], grad: &mut [f64]| {
            let (tm, tw) = th.split_at(g1);
            let (gm, gw) = grad.split_at_mut(g1);
            elbo_grad_z(&u, n_tot, &z, tm, tw, gm, gw)
        };
        crate::testutil::check_gradient(f, &theta, 1e-5, "low-rank LNM");
    }
}
