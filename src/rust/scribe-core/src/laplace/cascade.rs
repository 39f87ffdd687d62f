//! The NBLN cascade: empirical priors and frozen values from an SVI fit of
//! an NB model with capture (nbvcp or zinbvcp, any parameterization).
//!
//! Per coordinate, posterior draws are moment-matched by a Normal:
//! `loc = mean`, `scale = max(sd · τ, 1e-4)` (τ > 1 softens), on
//! `r_loc = softplus⁻¹(r)`, `μ = ln(mean expression)` and, per cell,
//! `η = −ln ν` (capture probability ν, clamped to [1e-8, 1 − 1e-8]; with a
//! `phi_capture` source ν = 1/(1 + φ), i.e. η = ln(1 + φ): the correct
//! conversion, where the original uses φ/(1 + φ)). Frozen values come from
//! the SVI point estimate.

use crate::math::softplus_inv;
use crate::posterior::Site;

/// Empirical priors `(loc, scale)` and point values per quantity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CascadeStats {
    pub r_loc: (Vec<f64>, Vec<f64>),
    pub mu: (Vec<f64>, Vec<f64>),
    /// Per-cell η prior; empty when the source has no capture.
    pub eta: (Vec<f64>, Vec<f64>),
    pub r_point: Vec<f64>,
    pub mu_point: Vec<f64>,
    pub eta_point: Vec<f64>,
}

fn site<'a>(sites: &'a [Site], name: &str) -> Option<&'a Site> {
    sites.iter().find(|s| s.name == name)
}

/// Per-element `(mean, max(sd·τ, 1e-4))` of `f(site)` over draws (first component).
fn moments(s: &Site, tau: f64, f: impl Fn(f64) -> f64) -> (Vec<f64>, Vec<f64>) {
    let n = s.n_draws;
    let len = s.len();
    let mut loc = Vec::with_capacity(len);
    let mut scale = Vec::with_capacity(len);
    for j in 0..len {
        let v: Vec<f64> = (0..n).map(|d| f(s.at(d, 0, j))).collect();
        let m = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        loc.push(m);
        scale.push((var.sqrt() * tau).max(1e-4));
    }
    (loc, scale)
}

fn r_to_loc(r: f64) -> f64 {
    softplus_inv(r.max(1e-8))
}
fn mu_to_log(m: f64) -> f64 {
    m.max(1e-8).ln()
}
fn nu_to_eta(nu: f64) -> f64 {
    -nu.clamp(1e-8, 1.0 - 1e-8).ln()
}

/// Empirical priors from posterior `draws` and point values from `point`
/// (both as returned by `posterior::nb_sites`, with derived `r`, `mu`, `p_capture`).
pub fn cascade_stats(draws: &[Site], point: &[Site], tau: f64) -> crate::Result<CascadeStats> {
    let need = |sites: &'_ [Site], n: &str| -> crate::Result<Site> {
        site(sites, n).cloned().ok_or_else(|| {
            crate::CoreError::arg(
                "informative_priors_from",
                format!("the SVI fit has no '{n}' estimate"),
            )
        })
    };
    let (r, mu) = (need(draws, "r")?, need(draws, "mu")?);
    let (r0, mu0) = (need(point, "r")?, need(point, "mu")?);
    let mut out = CascadeStats {
        r_loc: moments(&r, tau, r_to_loc),
        mu: moments(&mu, tau, mu_to_log),
        r_point: (0..r0.len()).map(|j| r0.at(0, 0, j).max(1e-8)).collect(),
        mu_point: (0..mu0.len()).map(|j| mu_to_log(mu0.at(0, 0, j))).collect(),
        ..Default::default()
    };
    if let (Some(nu), Some(nu0)) = (site(draws, "p_capture"), site(point, "p_capture")) {
        out.eta = moments(nu, tau, nu_to_eta);
        out.eta_point = (0..nu0.len()).map(|j| nu_to_eta(nu0.at(0, 0, j))).collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::BlockKind;

    fn site(name: &str, n: usize, vals: Vec<f64>) -> Site {
        Site {
            name: name.into(),
            kind: BlockKind::Gene,
            n_draws: n,
            n_comp: 1,
            values: vals,
        }
    }

    #[test]
    fn moments_and_conversions() {
        // 3 draws of 2 genes (draw fastest) and of 1 cell.
        let draws = vec![
            site("r", 3, vec![1.0, 2.0, 3.0, 4.0, 4.0, 4.0]),
            site("mu", 3, vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]),
            site("p_capture", 3, vec![0.5, 0.5, 0.5]),
        ];
        let point = vec![
            site("r", 1, vec![2.0, 4.0]),
            site("mu", 1, vec![1.0, 2.0]),
            site("p_capture", 1, vec![0.25]),
        ];
        let s = cascade_stats(&draws, &point, 2.0).unwrap();
        let rl: Vec<f64> = [1.0f64, 2.0, 3.0]
            .iter()
            .map(|&v| softplus_inv(v))
            .collect();
        let m = rl.iter().sum::<f64>() / 3.0;
        let sd = (rl.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!((s.r_loc.0[0] - m).abs() < 1e-12 && (s.r_loc.1[0] - 2.0 * sd).abs() < 1e-12);
        assert_eq!(s.r_loc.1[1], 1e-4); // constant draws: the scale floor
        assert!((s.mu.0[1] - 2f64.ln()).abs() < 1e-12);
        assert!((s.eta.0[0] - 2f64.ln()).abs() < 1e-12);
        assert!((s.eta_point[0] - 4f64.ln()).abs() < 1e-12);
        assert_eq!(s.r_point, vec![2.0, 4.0]);
    }
}
