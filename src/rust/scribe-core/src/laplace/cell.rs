//! One cell of a log-normal model: `x ~ N(μ, Σ)`, optional capture `η`, and
//! counts that depend on the log-rates `ℓ = x − η` through an observation
//! model ([`Obs`]: Poisson for PLN, negative binomial for NBLN).
//!
//! * Newton: `g_x = ∂obs/∂ℓ − Σ⁻¹(x − μ)`, `A = diag(a) + Σ⁻¹ + δI` with the
//!   observation curvature `a = −∂²obs/∂ℓ²`; a free `η` joins through the
//!   Schur complement `s = Σa + 1/σ² − aᵀA⁻¹a + δ`. Steps are capped in
//!   sup-norm and `η ≥ 1e-3`; at that bound the step holds `η` (active set).
//! * ELBO at the MAP: `Σ obs + log N(x̂; μ, Σ) [+ ln TruncN(η̂)] − ½ log det(−H)`
//!   with `log det(−H) = log det A (+ log s)` at zero damping. Its gradient in
//!   Σ is `½ (b bᵀ − B + q qᵀ/s)` with `b = Σ⁻¹e`, `B = (Σ + diag(1/a))⁻¹`,
//!   `q = Σ⁻¹A⁻¹a` (the last term only with a free η): O(G k²) by Woodbury.
//!   The dispersion `r` of NBLN enters through `obs` and through `a`:
//!   `∂ log det A/∂a_g = (A⁻¹)_gg`, `∂ log s/∂a_g = (1 − (A⁻¹a)_g)²/s`.

use super::woodbury::{inv_sigma_plus_diag, NewtonFactor, SigmaFactor};
use crate::models::lognormal::obs::Obs;
pub use crate::models::lognormal::ETA_MIN;

/// How a cell's capture latent `η` enters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EtaMode {
    /// No capture: `ℓ = x`.
    None,
    /// A latent with prior `TruncN(anchor, σ², low = 0)`, solved jointly with `x`.
    Free { anchor: f64, sigma: f64 },
    /// A fixed offset (`η` frozen from a cascade): `ℓ = x − η`, x-only Newton.
    Fixed,
}

fn offset(eta: f64, mode: EtaMode) -> f64 {
    if mode == EtaMode::None {
        0.0
    } else {
        eta
    }
}

/// Fills `a` (curvature) and `g` (x-gradient); returns (sup-norm incl. the
/// projected η gradient, η gradient).
#[allow(clippy::too_many_arguments)]
fn gradient<O: Obs + ?Sized>(
    obs: &O,
    u: &[f64],
    x: &[f64],
    eta: f64,
    mode: EtaMode,
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
    a: &mut [f64],
    g: &mut [f64],
) -> (f64, f64) {
    let n = x.len();
    let off = offset(eta, mode);
    let e: Vec<f64> = (0..n).map(|i| x[i] - mu[i]).collect();
    sig.solve(w, &e, g);
    let (mut norm, mut sd): (f64, f64) = (0.0, 0.0);
    for i in 0..n {
        let (d, c) = obs.terms(i, u[i], x[i] - off);
        a[i] = c;
        g[i] = d - g[i];
        norm = norm.max(g[i].abs());
        sd += d;
    }
    let mut g_eta = 0.0;
    if let EtaMode::Free { anchor, sigma } = mode {
        g_eta = -sd - (eta - anchor) / (sigma * sigma);
        // At the bound a gradient pushing η lower is converged (KKT).
        let g_proj = if eta <= ETA_MIN * (1.0 + 1e-9) && g_eta < 0.0 {
            0.0
        } else {
            g_eta
        };
        norm = norm.max(g_proj.abs());
    }
    (norm, g_eta)
}

/// At most `n_iter` damped Newton steps on `(x, η)` (warm-started in
/// place), stopping once the gradient sup-norm is at most `tol`. Returns
/// that sup-norm (at the final point when converged, else before the last
/// step; NaN if a factorisation failed) and the steps taken.
#[allow(clippy::too_many_arguments)]
pub fn newton<O: Obs + ?Sized>(
    obs: &O,
    u: &[f64],
    x: &mut [f64],
    eta: &mut f64,
    mode: EtaMode,
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
    n_iter: usize,
    tol: f64,
    damping: f64,
    max_step: f64,
) -> (f64, usize) {
    let n = x.len();
    let (mut a, mut g, mut ag, mut aa) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut norm = f64::NAN;
    for it in 0..n_iter {
        let (nm, g_eta) = gradient(obs, u, x, *eta, mode, mu, w, sig, &mut a, &mut g);
        norm = nm;
        if norm <= tol {
            return (norm, it);
        }
        let Some(nf) = NewtonFactor::new(sig, &a, damping) else {
            return (f64::NAN, it + 1);
        };
        nf.solve(sig, w, &g, &mut ag);
        let mut d_eta = 0.0;
        if let EtaMode::Free { sigma, .. } = mode {
            let (v, s) = schur(&nf, sig, w, &a, sigma, damping);
            aa.copy_from_slice(&v);
            let aag: f64 = a.iter().zip(&ag).map(|(p, q)| p * q).sum();
            d_eta = (g_eta + aag) / s;
            // Active set: with η at its bound and the step pushing it below,
            // hold η and take the x-only step.
            if *eta <= ETA_MIN * (1.0 + 1e-9) && *eta + d_eta < ETA_MIN {
                d_eta = 0.0;
            }
        }
        let big = (0..n).fold(d_eta.abs().max(1e-12), |m, i| {
            m.max((ag[i] + aa[i] * d_eta).abs())
        });
        let kappa = (max_step / big).min(1.0);
        for i in 0..n {
            x[i] += kappa * (ag[i] + aa[i] * d_eta);
        }
        if d_eta != 0.0 {
            *eta = (*eta + kappa * d_eta).max(ETA_MIN);
        }
    }
    (norm, n_iter)
}

/// `(A⁻¹a, s)` for a free capture latent: the Schur complement
/// `s = Σa + 1/σ² − aᵀA⁻¹a + δ` (floored at 1e-30).
pub(crate) fn schur(
    nf: &NewtonFactor,
    sig: &SigmaFactor,
    w: &[f64],
    a: &[f64],
    sigma: f64,
    damping: f64,
) -> (Vec<f64>, f64) {
    let mut aa = vec![0.0; a.len()];
    nf.solve(sig, w, a, &mut aa);
    let sa: f64 = a.iter().sum();
    let aaa: f64 = a.iter().zip(&aa).map(|(p, q)| p * q).sum();
    (aa, (sa + 1.0 / (sigma * sigma) - aaa + damping).max(1e-30))
}

/// The gradient sup-norm of one cell's objective at `(x, η)`.
#[allow(clippy::too_many_arguments)]
pub fn grad_norm<O: Obs + ?Sized>(
    obs: &O,
    u: &[f64],
    x: &[f64],
    eta: f64,
    mode: EtaMode,
    mu: &[f64],
    w: &[f64],
    sig: &SigmaFactor,
) -> f64 {
    let n = x.len();
    let (mut a, mut g) = (vec![0.0; n], vec![0.0; n]);
    gradient(obs, u, x, eta, mode, mu, w, sig, &mut a, &mut g).0
}

/// Gradient accumulators of the outer objective (added into).
pub struct OuterGrad<'a> {
    pub mu: &'a mut [f64],
    pub w: &'a mut [f64],
    pub d: &'a mut [f64],
    /// `∂/∂r_g` (NBLN); empty for models without a dispersion.
    pub r: &'a mut [f64],
}

impl<'a> OuterGrad<'a> {
    /// Views a flat `[μ | W | d | r]` gradient (`r` may be empty) as its blocks.
    pub fn split(flat: &'a mut [f64], g: usize, k: usize) -> Self {
        let (mu, rest) = flat.split_at_mut(g);
        let (w, rest) = rest.split_at_mut(g * k);
        let (d, r) = rest.split_at_mut(g);
        OuterGrad { mu, w, d, r }
    }
}

/// One cell's Laplace ELBO at its MAP `(x̂, η̂)`, adding its gradient.
#[allow(clippy::too_many_arguments)]
pub fn elbo_grad<O: Obs + ?Sized>(
    obs: &O,
    u: &[f64],
    x: &[f64],
    eta: f64,
    mode: EtaMode,
    mu: &[f64],
    w: &[f64],
    d: &[f64],
    sig: &SigmaFactor,
    k: usize,
    out: OuterGrad<'_>,
) -> f64 {
    let n = x.len();
    let mut a = vec![0.0; n];
    let mut gx = vec![0.0; n];
    gradient(obs, u, x, eta, mode, mu, w, sig, &mut a, &mut gx);
    let off = offset(eta, mode);
    let total: f64 = (0..n).map(|i| obs.value(i, u[i], x[i] - off)).sum();
    let e: Vec<f64> = (0..n).map(|i| x[i] - mu[i]).collect();
    let mut b = vec![0.0; n];
    sig.solve(w, &e, &mut b);
    let Some(nf) = NewtonFactor::new(sig, &a, 0.0) else {
        return f64::NAN;
    };
    let Some((bw, bdiag)) = inv_sigma_plus_diag(w, Some(&sig.vech), d, &a, k) else {
        return f64::NAN;
    };
    let ln2pi = (2.0 * std::f64::consts::PI).ln();
    let quad: f64 = (0..n).map(|i| e[i] * b[i]).sum();
    let mut elbo =
        total - 0.5 * quad - 0.5 * sig.logdet_sigma - 0.5 * n as f64 * ln2pi - 0.5 * nf.logdet_a;
    // Free η: its prior and the Schur term of the log-determinant.
    let mut aa = Vec::new();
    let mut q = Vec::new();
    let mut s = f64::NAN;
    if let EtaMode::Free { anchor, sigma } = mode {
        (aa, s) = schur(&nf, sig, w, &a, sigma, 0.0);
        q = vec![0.0; n];
        sig.solve(w, &aa, &mut q);
        let z = (eta - anchor) / sigma;
        elbo +=
            -0.5 * z * z - sigma.ln() - 0.5 * ln2pi - crate::math::ln_normal_sf(-anchor / sigma);
        elbo -= 0.5 * s.ln();
    }
    if !elbo.is_finite() {
        return elbo;
    }
    let (mut btw, mut qtw) = (vec![0.0; k], vec![0.0; k]);
    for i in 0..n {
        for j in 0..k {
            btw[j] += b[i] * w[i * k + j];
            if !q.is_empty() {
                qtw[j] += q[i] * w[i * k + j];
            }
        }
    }
    for i in 0..n {
        out.mu[i] += b[i];
        let qi = if q.is_empty() { 0.0 } else { q[i] };
        let qs = if q.is_empty() { 0.0 } else { qi / s };
        for j in 0..k {
            out.w[i * k + j] += b[i] * btw[j] - bw[i * k + j] + qs * qtw[j];
        }
        out.d[i] += 0.5 * (b[i] * b[i] - bdiag[i] + qi * qs);
    }
    if !out.r.is_empty() {
        let ainv = nf.diag_inv(sig, w);
        for i in 0..n {
            let (dv, da) = obs.d_r(i, u[i], x[i] - off);
            let mut dlogdet = ainv[i];
            if !aa.is_empty() {
                dlogdet += (1.0 - aa[i]).powi(2) / s;
            }
            out.r[i] += dv - 0.5 * dlogdet * da;
        }
    }
    elbo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::lognormal::obs::{NegBin, Poisson};

    type Problem = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

    fn setup(g: usize, k: usize) -> Problem {
        let (w, d) = crate::laplace::woodbury::test_loadings(g, k, 0.5, 0.1, 0.2);
        let mu: Vec<f64> = (0..g).map(|i| ((i as f64) * 0.5).sin()).collect();
        let u: Vec<f64> = (0..g).map(|i| ((i * 7) % 5) as f64).collect();
        let x: Vec<f64> = (0..g).map(|i| (u[i] + 1.0).ln()).collect();
        (w, d, mu, u, x)
    }

    /// Newton reaches a stationary point from which one more step does not
    /// move, and the analytic outer gradient (μ, W, d and, for NB, r) equals
    /// finite differences of the ELBO with the MAP held fixed.
    fn make(r: &[f64]) -> Box<dyn Obs + '_> {
        if r.is_empty() {
            Box::new(Poisson)
        } else {
            Box::new(NegBin::new(r))
        }
    }

    /// Poisson when `r` is empty, NB otherwise.
    fn check(r: &[f64], mode: EtaMode) {
        let (g, k) = (9, 2);
        let (w, d, mu, u, mut x) = setup(g, k);
        let obs = make(r);
        let obs = obs.as_ref();
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        let mut eta = match mode {
            EtaMode::Free { anchor, .. } => anchor,
            EtaMode::Fixed => 0.4,
            EtaMode::None => 0.0,
        };
        newton(
            obs, &u, &mut x, &mut eta, mode, &mu, &w, &sig, 80, 0.0, 0.0, 5.0,
        );
        assert!(
            grad_norm(obs, &u, &x, eta, mode, &mu, &w, &sig) < 1e-9,
            "{mode:?}"
        );
        let (x0, e0) = (x.clone(), eta);
        newton(
            obs, &u, &mut x, &mut eta, mode, &mu, &w, &sig, 1, 0.0, 0.0, 5.0,
        );
        let moved = x
            .iter()
            .zip(&x0)
            .fold((eta - e0).abs(), |m, (p, q)| m.max((p - q).abs()));
        assert!(moved < 1e-6, "{mode:?} moved {moved}");
        // θ = [μ | W | d | r]; the MAP stays fixed (the envelope theorem).
        let theta: Vec<f64> = mu.iter().chain(&w).chain(&d).chain(r).copied().collect();
        let f = |th: &[f64], grad: &mut [f64]| {
            let (tm, rest) = th.split_at(g);
            let (tw, rest) = rest.split_at(g * k);
            let (td, tr) = rest.split_at(g);
            let (gm, rest) = grad.split_at_mut(g);
            let (gw, rest) = rest.split_at_mut(g * k);
            let (gd, gr) = rest.split_at_mut(g);
            let s = SigmaFactor::new(tw, td, k).unwrap();
            let o = make(tr);
            let out = OuterGrad {
                mu: gm,
                w: gw,
                d: gd,
                r: gr,
            };
            elbo_grad(o.as_ref(), &u, &x, eta, mode, tm, tw, td, &s, k, out)
        };
        crate::testutil::check_gradient(f, &theta, 1e-5, &format!("{mode:?} outer gradient"));
    }

    const MODES: [EtaMode; 3] = [
        EtaMode::None,
        EtaMode::Free {
            anchor: 0.7,
            sigma: 0.5,
        },
        EtaMode::Fixed,
    ];

    #[test]
    fn poisson_newton_and_outer_gradient() {
        for mode in MODES {
            check(&[], mode);
        }
    }

    #[test]
    fn negative_binomial_newton_and_outer_gradient() {
        let r: Vec<f64> = (0..9).map(|i| 0.5 + 0.4 * i as f64).collect();
        for mode in MODES {
            check(&r, mode);
        }
    }
}
