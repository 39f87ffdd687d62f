//! Differences of absolute (not compositional) expression between two
//! NB-family posteriors, draw by draw: the log fold change of the means
//! `LFC = ln μ_A − ln μ_B`, the log variance ratio `LVR`, and the Jeffreys
//! divergence between the two genes' Gamma expression distributions.
//!
//! Under the NB convention used throughout (`p` the success probability,
//! mean `μ = r p/(1 − p)`), the variance is `μ/(1 − p) = μ + μ²/r` and the
//! Poisson–Gamma rate is `(1 − p)/p`. BNB fits keep the NB's mean and take
//! the BNB's variance ([`crate::models::nb::bnb_variance`]); their
//! expression distribution (a Gamma times a beta-prime odds) has no
//! closed-form divergence, so the Jeffreys divergence is NaN for them. (The original mixes in the other
//! convention here, `μ/p` and `p/(1 − p)`; these are the formulas that
//! match its own means.)

use super::compositions::{Component, NbSide};
use crate::error::{CoreError, Result};
use crate::math::{digamma, lgamma};
use crate::models::nb::bnb_variance;

/// Per-gene draws (gene-major, `x[g·n + s]`) of the three metrics, and the
/// posterior means of each side's mean and variance.
#[derive(Debug, Clone, PartialEq)]
pub struct Biological {
    pub n: usize,
    pub lfc: Vec<f64>,
    pub lvr: Vec<f64>,
    pub jeffreys: Vec<f64>,
    pub mu_a: Vec<f64>,
    pub mu_b: Vec<f64>,
    pub var_a: Vec<f64>,
    pub var_b: Vec<f64>,
}

/// `KL(Gamma(a1, rate b1) ‖ Gamma(a2, rate b2))`.
pub fn gamma_kl(a1: f64, b1: f64, a2: f64, b2: f64) -> f64 {
    (a1 - a2) * digamma(a1) - lgamma(a1)
        + lgamma(a2)
        + a2 * (b1.ln() - b2.ln())
        + a1 * (b2 / b1 - 1.0)
}

fn component(side: &NbSide<'_>, arg: &str) -> Result<usize> {
    match side.component {
        Component::One(k) if k < side.draws.n_comp => Ok(k),
        Component::One(k) => Err(CoreError::arg(
            arg,
            format!(
                "is {} but the fit has {} component(s)",
                k + 1,
                side.draws.n_comp
            ),
        )),
        Component::Weighted => Err(CoreError::arg(
            arg,
            "biological metrics compare one component per side, not a weighted mixture",
        )),
    }
}

/// The metrics for draws paired by index (both sides hold the same number).
pub fn biological(a: &NbSide<'_>, b: &NbSide<'_>) -> Result<Biological> {
    let (ka, kb) = (component(a, "component_a")?, component(b, "component_b")?);
    let (da, db) = (a.draws, b.draws);
    if da.n_draws != db.n_draws || da.n_genes != db.n_genes {
        return Err(CoreError::arg(
            "fit_b",
            "differs from fit_a in draws or genes",
        ));
    }
    let (n, g_n) = (da.n_draws, da.n_genes);
    crate::limits::check_values("n_samples", 3.0 * (n * g_n) as f64)?;
    let mut out = Biological {
        n,
        lfc: vec![0.0; n * g_n],
        lvr: vec![0.0; n * g_n],
        jeffreys: vec![0.0; n * g_n],
        mu_a: vec![0.0; g_n],
        mu_b: vec![0.0; g_n],
        var_a: vec![0.0; g_n],
        var_b: vec![0.0; g_n],
    };
    for s in 0..n {
        let (ra, rb) = (da.r_of(s, ka), db.r_of(s, kb));
        for g in 0..g_n {
            let (pa, pb) = (da.p_at(s, ka, g), db.p_at(s, kb, g));
            let (ba, bb) = ((1.0 - pa) / pa, (1.0 - pb) / pb);
            let (mua, mub) = (ra[g] * pa / (1.0 - pa), rb[g] * pb / (1.0 - pb));
            let (oa, ob) = (da.omega_at(s, g), db.omega_at(s, g));
            let var = |mu: f64, p: f64, r: f64, om: Option<f64>| match om {
                None => mu / (1.0 - p),
                Some(om) => bnb_variance(r, p / (1.0 - p), om),
            };
            let (va, vb) = (var(mua, pa, ra[g], oa), var(mub, pb, rb[g], ob));
            let i = g * n + s;
            out.lfc[i] = mua.max(1e-30).ln() - mub.max(1e-30).ln();
            out.lvr[i] = va.max(1e-30).ln() - vb.max(1e-30).ln();
            out.jeffreys[i] = if oa.is_some() || ob.is_some() {
                f64::NAN
            } else {
                gamma_kl(ra[g], ba, rb[g], bb) + gamma_kl(rb[g], bb, ra[g], ba)
            };
            out.mu_a[g] += mua / n as f64;
            out.mu_b[g] += mub / n as f64;
            out.var_a[g] += va / n as f64;
            out.var_b[g] += vb / n as f64;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nb::Variant;
    use crate::posterior::nb::draws::NbDraws;

    fn one(r: Vec<f64>, p: f64) -> NbDraws {
        NbDraws {
            variant: Variant::Nbdm,
            n_draws: 1,
            n_comp: 1,
            n_genes: r.len(),
            n_cells: 0,
            r,
            p: vec![p],
            p_gene: None,
            omega: None,
            nu: None,
            gate: None,
            weights: vec![1.0],
            cell_comp: None,
        }
    }

    #[test]
    fn metrics_follow_the_nb_mean_and_variance() {
        let a = one(vec![2.0, 5.0], 0.5);
        let b = one(vec![1.0, 5.0], 0.5);
        let side = |d| NbSide {
            draws: d,
            component: Component::One(0),
        };
        let m = biological(&side(&a), &side(&b)).unwrap();
        // μ = r (odds 1): LFC = ln 2 for gene 0, 0 for gene 1; var = 2μ, so LVR = LFC.
        assert!((m.lfc[0] - 2f64.ln()).abs() < 1e-12 && m.lfc[1].abs() < 1e-12);
        assert!((m.lvr[0] - 2f64.ln()).abs() < 1e-12);
        assert!((m.var_a[0] - 4.0).abs() < 1e-12);
        // Identical genes have zero divergence; different ones a positive one.
        assert!(m.jeffreys[1].abs() < 1e-12 && m.jeffreys[0] > 0.0);
        // KL of Gamma(2, 1) from Gamma(1, 1): (2−1)ψ(2) − lnΓ(2) + lnΓ(1) = 1 − γ.
        assert!((gamma_kl(2.0, 1.0, 1.0, 1.0) - (1.0 - 0.577_215_664_901_532_9)).abs() < 1e-9);
        let w = NbSide {
            draws: &a,
            component: Component::Weighted,
        };
        assert_eq!(
            biological(&w, &side(&b)).unwrap_err().argument(),
            Some("component_a")
        );
    }

    #[test]
    fn bnb_sides_keep_the_mean_and_take_the_bnb_variance() {
        let a = one(vec![2.0, 5.0], 0.5);
        let mut b = one(vec![2.0, 5.0], 0.5);
        b.omega = Some(vec![1e-9, 0.8]);
        let side = |d| NbSide {
            draws: d,
            component: Component::One(0),
        };
        let m = biological(&side(&b), &side(&a)).unwrap();
        // Same means; ω → 0 is the NB; ω = 0.8 inflates the variance.
        assert!(m.lfc.iter().all(|v| v.abs() < 1e-12));
        assert!(m.lvr[0].abs() < 1e-6, "{}", m.lvr[0]);
        let want = bnb_variance(5.0, 1.0, 0.8);
        assert!((m.var_a[1] - want).abs() < 1e-12 && want > 10.0 * 1.5);
        assert!((m.lvr[1] - (want / 10.0).ln()).abs() < 1e-12);
        assert!(m.jeffreys.iter().all(|v| v.is_nan()));
    }
}
