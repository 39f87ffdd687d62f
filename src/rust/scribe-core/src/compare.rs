//! Pointwise model-comparison quantities from log-likelihood matrices
//! `L[i·S + s]` (observation-major: the `S` draws of observation `i`
//! contiguous, as an R `S × n` matrix stores them).
//!
//! WAIC: `lppd_i = log mean_s exp(L_si)`, `p_waic_i = var_s L_si` (the
//! second, recommended variant, population variance),
//! `elpd_i = lppd_i − p_waic_i`. PSIS-LOO and stacking are left to the `loo`
//! R package, which implements them with the standard truncation.

use crate::error::{CoreError, Result};
use rayon::prelude::*;

/// Per-observation WAIC terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Waic {
    pub lppd: Vec<f64>,
    pub p_waic: Vec<f64>,
    pub elpd: Vec<f64>,
}

fn check(l: &[f64], n_draws: usize) -> Result<()> {
    if n_draws < 2 || !l.len().is_multiple_of(n_draws) {
        return Err(CoreError::arg(
            "n_samples",
            "needs at least 2 posterior draws for WAIC",
        ));
    }
    Ok(())
}

/// WAIC terms of every observation.
pub fn waic(l: &[f64], n_draws: usize) -> Result<Waic> {
    check(l, n_draws)?;
    let (lppd, p_waic): (Vec<f64>, Vec<f64>) = l
        .par_chunks(n_draws)
        .map(|x| {
            let n = x.len() as f64;
            let top = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lppd = if top.is_finite() {
                top + (x.iter().map(|v| (v - top).exp()).sum::<f64>() / n).ln()
            } else {
                top
            };
            let mean = x.iter().sum::<f64>() / n;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            (lppd, var)
        })
        .unzip();
    let elpd = lppd.iter().zip(&p_waic).map(|(a, b)| a - b).collect();
    Ok(Waic { lppd, p_waic, elpd })
}

/// Per-observation posterior sd (ddof 1) of `L_A − L_B`: how uncertain the
/// difference in fit of one observation (e.g. a gene) is.
pub fn paired_sd(l_a: &[f64], l_b: &[f64], n_draws: usize) -> Result<Vec<f64>> {
    check(l_a, n_draws)?;
    if l_a.len() != l_b.len() {
        return Err(CoreError::arg(
            "fit_b",
            "its log-likelihood matrix differs in size from fit_a's",
        ));
    }
    Ok(l_a
        .par_chunks(n_draws)
        .zip(l_b.par_chunks(n_draws))
        .map(|(a, b)| {
            let n = n_draws as f64;
            let mean = a.iter().zip(b).map(|(x, y)| x - y).sum::<f64>() / n;
            (a.iter()
                .zip(b)
                .map(|(x, y)| (x - y - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0))
                .sqrt()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waic_of_constant_and_varying_draws() {
        // Observation 0: constant −2 (lppd −2, p_waic 0); observation 1: draws 0 and −2.
        let l = [-2.0, -2.0, 0.0, -2.0];
        let w = waic(&l, 2).unwrap();
        assert!((w.lppd[0] + 2.0).abs() < 1e-12 && w.p_waic[0] == 0.0);
        let lppd1 = ((1.0 + (-2.0f64).exp()) / 2.0).ln();
        assert!((w.lppd[1] - lppd1).abs() < 1e-12);
        assert!((w.p_waic[1] - 1.0).abs() < 1e-12);
        assert!((w.elpd[1] - (lppd1 - 1.0)).abs() < 1e-12);
        // Shift invariance: adding c to every draw adds c to lppd and elpd.
        let shifted: Vec<f64> = l.iter().map(|v| v - 1000.0).collect();
        let ws = waic(&shifted, 2).unwrap();
        assert!((ws.elpd[1] - w.elpd[1] + 1000.0).abs() < 1e-9);
        assert!(waic(&l, 1).is_err());
    }

    #[test]
    fn paired_sd_is_the_sd_of_differences() {
        let a = [1.0, 2.0, 3.0];
        let b = [0.0, 0.0, 0.0];
        assert!((paired_sd(&a, &b, 3).unwrap()[0] - 1.0).abs() < 1e-12);
        assert!(paired_sd(&a, &b[..2], 3).is_err());
    }
}
