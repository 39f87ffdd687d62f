//! Poisson log-normal (PLN) by Laplace: per cell, `x ~ N(μ, Σ)` with
//! `Σ = W Wᵀ + diag(d)` and `u_g | x ~ Poisson(e^{x_g})`. The MAP of each
//! cell's `x` comes from damped Newton; the global `(μ, W, d)` maximise the
//! Laplace approximation of the marginal likelihood with the MAPs held fixed.
//!
//! Outer gradient (per cell, `e = x̂ − μ`, `b = Σ⁻¹ e`, `λ = e^{x̂}`): the
//! Gaussian term and `−½ log det(diag λ + Σ⁻¹)` combine into
//! `∂ELBO/∂Σ = ½ (b bᵀ − B)` with `B = (Σ + diag(1/λ))⁻¹`, so
//! `∂/∂μ = b`, `∂/∂W = b (bᵀ W) − B W`, `∂/∂d = ½ (b² − diag B)`; every term
//! costs O(G k²) through Woodbury.

use super::woodbury::{inv_sigma_plus_diag, NewtonFactor, SigmaFactor};
use crate::data::CountMatrix;

const CLIP: f64 = 30.0;
/// Lower bound of the capture latent `η` (ν = e^{−η} ≤ 1).
const ETA_MIN: f64 = 1e-3;

/// One cell's counts as a dense vector (reused buffer).
pub fn dense_counts(data: &CountMatrix, c: usize, u: &mut [f64]) {
    u.iter_mut().for_each(|v| *v = 0.0);
    for p in data.cell_ptr[c]..data.cell_ptr[c + 1] {
        u[data.gene_idx[p] as usize] = data.counts[p] as f64;
    }
}

/// Gradient of the per-cell objective `f(x) = uᵀx − 1ᵀe^x − ½ eᵀΣ⁻¹e` into `g`; returns ‖g‖∞.
fn cell_gradient(
    u: &[f64],
    x: &[f64],
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
    lam: &mut [f64],
    g: &mut [f64],
) -> f64 {
    let n = x.len();
    let e: Vec<f64> = (0..n).map(|i| x[i] - mu[i]).collect();
    sig.solve(w, &e, g);
    let mut norm: f64 = 0.0;
    for i in 0..n {
        lam[i] = x[i].clamp(-CLIP, CLIP).exp();
        g[i] = u[i] - lam[i] - g[i];
        norm = norm.max(g[i].abs());
    }
    norm
}

/// `n_iter` damped Newton steps on one cell's `x` (warm-started in place).
/// Returns the sup-norm of the gradient before the last step (NaN if a
/// factorisation failed).
#[allow(clippy::too_many_arguments)]
pub fn newton_cell(
    u: &[f64],
    x: &mut [f64],
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
    n_iter: usize,
    damping: f64,
    max_step: f64,
) -> f64 {
    let n = x.len();
    let (mut lam, mut g, mut dx) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut norm = f64::NAN;
    for _ in 0..n_iter {
        norm = cell_gradient(u, x, mu, w, sig, &mut lam, &mut g);
        let Some(nf) = NewtonFactor::new(sig, w, &lam, damping) else {
            return f64::NAN;
        };
        nf.solve(sig, w, &g, &mut dx);
        let big = dx.iter().fold(1e-12f64, |a, v| a.max(v.abs()));
        let kappa = (max_step / big).min(1.0);
        for i in 0..n {
            x[i] += kappa * dx[i];
        }
    }
    norm
}

/// The gradient sup-norm of one cell's objective at `x`.
pub fn cell_grad_norm(u: &[f64], x: &[f64], mu: &[f64], w: &[f64], sig: &SigmaFactor) -> f64 {
    let n = x.len();
    let (mut lam, mut g) = (vec![0.0; n], vec![0.0; n]);
    cell_gradient(u, x, mu, w, sig, &mut lam, &mut g)
}

/// One cell's Laplace ELBO at its MAP `x̂` (the `ln u!` constant dropped, as
/// in the original), adding its gradient w.r.t. `(μ, W, d)` into the slices.
#[allow(clippy::too_many_arguments)]
pub fn cell_elbo_grad(
    u: &[f64],
    x: &[f64],
    mu: &[f64],
    w: &[f64],
    d: &[f64],
    sig: &SigmaFactor,
    k: usize,
    g_mu: &mut [f64],
    g_w: &mut [f64],
    g_d: &mut [f64],
) -> f64 {
    let n = x.len();
    let lam: Vec<f64> = x.iter().map(|v| v.clamp(-CLIP, CLIP).exp()).collect();
    let e: Vec<f64> = (0..n).map(|i| x[i] - mu[i]).collect();
    let mut b = vec![0.0; n];
    sig.solve(w, &e, &mut b);
    let Some(nf) = NewtonFactor::new(sig, w, &lam, 0.0) else {
        return f64::NAN;
    };
    let Some((bw, bdiag)) = inv_sigma_plus_diag(w, d, &lam, k) else {
        return f64::NAN;
    };
    let lik: f64 = (0..n)
        .map(|i| u[i] * x[i].clamp(-CLIP, CLIP) - lam[i])
        .sum();
    let quad: f64 = (0..n).map(|i| e[i] * b[i]).sum();
    let elbo = lik
        - 0.5 * quad
        - 0.5 * sig.logdet_sigma
        - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
        - 0.5 * nf.logdet_a;
    if !elbo.is_finite() {
        return elbo;
    }
    let mut btw = vec![0.0; k];
    for i in 0..n {
        for j in 0..k {
            btw[j] += b[i] * w[i * k + j];
        }
    }
    for i in 0..n {
        g_mu[i] += b[i];
        for j in 0..k {
            g_w[i * k + j] += b[i] * btw[j] - bw[i * k + j];
        }
        g_d[i] += 0.5 * (b[i] * b[i] - bdiag[i]);
    }
    elbo
}

/// The capture block of a cell: `η ~ TruncN(anchor, σ², low = 0)`,
/// `ℓ = x − η`. Newton treats the prior as a plain Gaussian and projects
/// `η ≥ 1e-3` (as the original does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapturePrior {
    pub anchor: f64,
    pub sigma: f64,
}

/// Gradients of the joint objective `f(x, η)` into `g` (x) and the return's
/// second value (η); the first is the sup-norm over both.
#[allow(clippy::too_many_arguments)]
fn joint_gradient(
    u: &[f64],
    x: &[f64],
    eta: f64,
    cp: CapturePrior,
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
    lam: &mut [f64],
    g: &mut [f64],
) -> (f64, f64) {
    let n = x.len();
    let e: Vec<f64> = (0..n).map(|i| x[i] - mu[i]).collect();
    sig.solve(w, &e, g);
    let mut norm: f64 = 0.0;
    let (mut su, mut sl) = (0.0, 0.0);
    for i in 0..n {
        lam[i] = (x[i] - eta).clamp(-CLIP, CLIP).exp();
        g[i] = u[i] - lam[i] - g[i];
        norm = norm.max(g[i].abs());
        su += u[i];
        sl += lam[i];
    }
    let g_eta = -su + sl - (eta - cp.anchor) / (cp.sigma * cp.sigma);
    // At the bound η = 1e-3 a gradient pushing η further down is not a
    // failure to converge (KKT): the norm uses the projected gradient.
    let g_proj = if eta <= ETA_MIN * (1.0 + 1e-9) && g_eta < 0.0 {
        0.0
    } else {
        g_eta
    };
    (norm.max(g_proj.abs()), g_eta)
}

/// Joint `(x, η)` damped Newton with the Schur complement of the η block:
/// `s = Σλ + 1/σ² − λᵀA⁻¹λ + δ`, `δη = (g_η + λᵀA⁻¹g_x)/s`,
/// `δx = A⁻¹g_x + (A⁻¹λ) δη`. Returns the last pre-step gradient sup-norm.
#[allow(clippy::too_many_arguments)]
pub fn newton_cell_capture(
    u: &[f64],
    x: &mut [f64],
    eta: &mut f64,
    cp: CapturePrior,
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
    n_iter: usize,
    damping: f64,
    max_step: f64,
) -> f64 {
    let n = x.len();
    let (mut lam, mut g, mut ag, mut al) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut norm = f64::NAN;
    for _ in 0..n_iter {
        let (nm, g_eta) = joint_gradient(u, x, *eta, cp, mu, w, sig, &mut lam, &mut g);
        norm = nm;
        let Some(nf) = NewtonFactor::new(sig, w, &lam, damping) else {
            return f64::NAN;
        };
        nf.solve(sig, w, &g, &mut ag);
        nf.solve(sig, w, &lam, &mut al);
        let sl: f64 = lam.iter().sum();
        let lal: f64 = lam.iter().zip(&al).map(|(a, b)| a * b).sum();
        let lag: f64 = lam.iter().zip(&ag).map(|(a, b)| a * b).sum();
        let s = sl + 1.0 / (cp.sigma * cp.sigma) - lal + damping;
        let mut d_eta = (g_eta + lag) / s;
        // Active set: with η at its bound and the step pushing it below, hold η
        // and take the x-only Newton step (otherwise x chases an η it never gets).
        if *eta <= ETA_MIN * (1.0 + 1e-9) && *eta + d_eta < ETA_MIN {
            d_eta = 0.0;
        }
        let big = ag
            .iter()
            .zip(&al)
            .fold(d_eta.abs().max(1e-12), |a, (p, q)| {
                a.max((p + q * d_eta).abs())
            });
        let kappa = (max_step / big).min(1.0);
        for i in 0..n {
            x[i] += kappa * (ag[i] + al[i] * d_eta);
        }
        *eta = (*eta + kappa * d_eta).max(ETA_MIN);
    }
    norm
}

/// The joint gradient sup-norm at `(x, η)`.
#[allow(clippy::too_many_arguments)]
pub fn cell_grad_norm_capture(
    u: &[f64],
    x: &[f64],
    eta: f64,
    cp: CapturePrior,
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
) -> f64 {
    let n = x.len();
    let (mut lam, mut g) = (vec![0.0; n], vec![0.0; n]);
    joint_gradient(u, x, eta, cp, mu, w, sig, &mut lam, &mut g).0
}

/// One cell's Laplace ELBO with the capture block at its MAP `(x̂, η̂)`:
/// the Poisson term in `ℓ = x̂ − η̂`, `log N(x̂; μ, Σ)`, the truncated-normal
/// log-density of `η̂`, and `−½ (log det A + log s)` (the joint Hessian's
/// log-determinant by the Schur complement). `log s` adds
/// `q qᵀ/(2s)` to `∂ELBO/∂Σ`, `q = Σ⁻¹ A⁻¹ λ`.
#[allow(clippy::too_many_arguments)]
pub fn cell_elbo_grad_capture(
    u: &[f64],
    x: &[f64],
    eta: f64,
    cp: CapturePrior,
    mu: &[f64],
    w: &[f64],
    d: &[f64],
    sig: &SigmaFactor,
    k: usize,
    g_mu: &mut [f64],
    g_w: &mut [f64],
    g_d: &mut [f64],
) -> f64 {
    let n = x.len();
    let lam: Vec<f64> = x
        .iter()
        .map(|v| (v - eta).clamp(-CLIP, CLIP).exp())
        .collect();
    let e: Vec<f64> = (0..n).map(|i| x[i] - mu[i]).collect();
    let mut b = vec![0.0; n];
    sig.solve(w, &e, &mut b);
    let Some(nf) = NewtonFactor::new(sig, w, &lam, 0.0) else {
        return f64::NAN;
    };
    let mut al = vec![0.0; n];
    nf.solve(sig, w, &lam, &mut al);
    let sl: f64 = lam.iter().sum();
    let lal: f64 = lam.iter().zip(&al).map(|(a, b)| a * b).sum();
    let s = (sl + 1.0 / (cp.sigma * cp.sigma) - lal).max(1e-30);
    let mut q = vec![0.0; n];
    sig.solve(w, &al, &mut q);
    let Some((bw, bdiag)) = inv_sigma_plus_diag(w, d, &lam, k) else {
        return f64::NAN;
    };
    let lik: f64 = (0..n)
        .map(|i| u[i] * (x[i] - eta).clamp(-CLIP, CLIP) - lam[i])
        .sum();
    let quad: f64 = (0..n).map(|i| e[i] * b[i]).sum();
    let z = (eta - cp.anchor) / cp.sigma;
    let ln_tn = -0.5 * z * z
        - cp.sigma.ln()
        - 0.5 * (2.0 * std::f64::consts::PI).ln()
        - crate::math::ln_normal_sf(-cp.anchor / cp.sigma);
    let elbo = lik
        - 0.5 * quad
        - 0.5 * sig.logdet_sigma
        - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
        + ln_tn
        - 0.5 * (nf.logdet_a + s.ln());
    if !elbo.is_finite() {
        return elbo;
    }
    let (mut btw, mut qtw) = (vec![0.0; k], vec![0.0; k]);
    for i in 0..n {
        for j in 0..k {
            btw[j] += b[i] * w[i * k + j];
            qtw[j] += q[i] * w[i * k + j];
        }
    }
    for i in 0..n {
        g_mu[i] += b[i];
        for j in 0..k {
            g_w[i * k + j] += b[i] * btw[j] - bw[i * k + j] + q[i] * qtw[j] / s;
        }
        g_d[i] += 0.5 * (b[i] * b[i] - bdiag[i] + q[i] * q[i] / s);
    }
    elbo
}

#[cfg(test)]
mod tests {
    use super::*;

    type Problem = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

    fn setup(g: usize, k: usize) -> Problem {
        let w: Vec<f64> = (0..g * k)
            .map(|i| ((i as f64) * 0.731).sin() * 0.5)
            .collect();
        let d: Vec<f64> = (0..g)
            .map(|i| 0.1 + 0.2 * ((i as f64) * 1.3).cos().abs())
            .collect();
        let mu: Vec<f64> = (0..g).map(|i| ((i as f64) * 0.5).sin()).collect();
        let u: Vec<f64> = (0..g).map(|i| ((i * 7) % 5) as f64).collect();
        let x: Vec<f64> = (0..g).map(|i| (u[i] + 1.0).ln()).collect();
        (w, d, mu, u, x)
    }

    #[test]
    fn newton_converges_and_a_step_from_the_map_does_not_move() {
        let (g, k) = (15, 3);
        let (w, d, mu, u, mut x) = setup(g, k);
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        newton_cell(&u, &mut x, &mu, &w, &sig, 50, 0.0, 5.0);
        assert!(cell_grad_norm(&u, &x, &mu, &w, &sig) < 1e-10);
        let before = x.clone();
        newton_cell(&u, &mut x, &mu, &w, &sig, 1, 0.0, 5.0);
        let moved = x
            .iter()
            .zip(&before)
            .fold(0.0f64, |a, (p, q)| a.max((p - q).abs()));
        assert!(moved < 1e-6, "moved {moved}");
    }

    /// The analytic outer gradient equals finite differences of the ELBO
    /// with the MAP held fixed.
    #[test]
    fn outer_gradient_matches_finite_differences() {
        let (g, k) = (9, 2);
        let (w, d, mu, u, mut x) = setup(g, k);
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        newton_cell(&u, &mut x, &mu, &w, &sig, 30, 0.0, 5.0);
        let elbo = |mu: &[f64], w: &[f64], d: &[f64]| {
            let s = SigmaFactor::new(w, d, k).unwrap();
            let (mut a, mut b, mut c) = (vec![0.0; g], vec![0.0; g * k], vec![0.0; g]);
            cell_elbo_grad(&u, &x, mu, w, d, &s, k, &mut a, &mut b, &mut c)
        };
        let (mut gm, mut gw, mut gd) = (vec![0.0; g], vec![0.0; g * k], vec![0.0; g]);
        cell_elbo_grad(&u, &x, &mu, &w, &d, &sig, k, &mut gm, &mut gw, &mut gd);
        let h = 1e-6;
        for i in 0..g {
            let (mut p, mut m) = (mu.clone(), mu.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (elbo(&p, &w, &d) - elbo(&m, &w, &d)) / (2.0 * h);
            assert!(
                (fd - gm[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "mu {i}: {fd} vs {}",
                gm[i]
            );
            let (mut p, mut m) = (d.clone(), d.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (elbo(&mu, &w, &p) - elbo(&mu, &w, &m)) / (2.0 * h);
            assert!(
                (fd - gd[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "d {i}: {fd} vs {}",
                gd[i]
            );
        }
        for i in 0..g * k {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (elbo(&mu, &p, &d) - elbo(&mu, &m, &d)) / (2.0 * h);
            assert!(
                (fd - gw[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "W {i}: {fd} vs {}",
                gw[i]
            );
        }
    }

    #[test]
    fn capture_newton_and_gradient() {
        let (g, k) = (9, 2);
        let (w, d, mu, u, mut x) = setup(g, k);
        let cp = CapturePrior {
            anchor: 0.7,
            sigma: 0.5,
        };
        let mut eta = cp.anchor;
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        newton_cell_capture(&u, &mut x, &mut eta, cp, &mu, &w, &sig, 60, 0.0, 5.0);
        assert!(cell_grad_norm_capture(&u, &x, eta, cp, &mu, &w, &sig) < 1e-9);
        let (x0, e0) = (x.clone(), eta);
        newton_cell_capture(&u, &mut x, &mut eta, cp, &mu, &w, &sig, 1, 0.0, 5.0);
        let moved = x
            .iter()
            .zip(&x0)
            .fold((eta - e0).abs(), |a, (p, q)| a.max((p - q).abs()));
        assert!(moved < 1e-6, "moved {moved}");
        let elbo = |mu: &[f64], w: &[f64], d: &[f64]| {
            let s = SigmaFactor::new(w, d, k).unwrap();
            let (mut a, mut b, mut c) = (vec![0.0; g], vec![0.0; g * k], vec![0.0; g]);
            cell_elbo_grad_capture(&u, &x, eta, cp, mu, w, d, &s, k, &mut a, &mut b, &mut c)
        };
        let (mut gm, mut gw, mut gd) = (vec![0.0; g], vec![0.0; g * k], vec![0.0; g]);
        cell_elbo_grad_capture(
            &u, &x, eta, cp, &mu, &w, &d, &sig, k, &mut gm, &mut gw, &mut gd,
        );
        let h = 1e-6;
        for i in 0..g {
            let (mut p, mut m) = (d.clone(), d.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (elbo(&mu, &w, &p) - elbo(&mu, &w, &m)) / (2.0 * h);
            assert!(
                (fd - gd[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "d {i}: {fd} vs {}",
                gd[i]
            );
            let (mut p, mut m) = (mu.clone(), mu.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (elbo(&p, &w, &d) - elbo(&m, &w, &d)) / (2.0 * h);
            assert!(
                (fd - gm[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "mu {i}: {fd} vs {}",
                gm[i]
            );
        }
        for i in 0..g * k {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (elbo(&mu, &p, &d) - elbo(&mu, &m, &d)) / (2.0 * h);
            assert!(
                (fd - gw[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "W {i}: {fd} vs {}",
                gw[i]
            );
        }
    }
}
