//! Per-gene summaries of `Δ`, from draws (empirical) or from a Gaussian
//! (parametric). For each practical-significance threshold `τ ≥ 0`:
//! `prob_up = P(Δ > τ)`, `prob_down = P(Δ < −τ)`,
//! `prob_effect = prob_up + prob_down`, `lfsr_tau = 1 − max(prob_up,
//! prob_down)`; and `lfsr = min(P(Δ > 0), 1 − P(Δ > 0))` (the local false
//! sign rate). Empirical probabilities count draws with strict inequalities
//! (a draw at exactly 0 is not positive), so their resolution is `1/N`.

use crate::error::{CoreError, Result};
use rayon::prelude::*;

/// Φ, accurate in both tails.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2)
}

/// `(mean, sd, P(Δ > 0), [(prob_up, prob_down) per τ])` of one gene.
type GeneSummary = (f64, f64, f64, Vec<(f64, f64)>);

/// Per-gene summaries; `τ`-dependent vectors are `g + D·t` for threshold `t`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeStats {
    pub taus: Vec<f64>,
    pub delta_mean: Vec<f64>,
    pub delta_sd: Vec<f64>,
    pub prob_positive: Vec<f64>,
    pub lfsr: Vec<f64>,
    pub prob_up: Vec<f64>,
    pub prob_down: Vec<f64>,
    pub prob_effect: Vec<f64>,
    pub lfsr_tau: Vec<f64>,
}

impl DeStats {
    /// Assembles the derived columns from per-gene `(mean, sd, P(Δ>0))` and
    /// per-gene-and-threshold `(prob_up, prob_down)`.
    fn assemble(taus: &[f64], per_gene: Vec<GeneSummary>) -> Self {
        let d_n = per_gene.len();
        let t_n = taus.len();
        let mut s = DeStats {
            taus: taus.to_vec(),
            prob_up: vec![0.0; d_n * t_n],
            prob_down: vec![0.0; d_n * t_n],
            prob_effect: vec![0.0; d_n * t_n],
            lfsr_tau: vec![0.0; d_n * t_n],
            ..Default::default()
        };
        for (g, (m, sd, pp, by_tau)) in per_gene.into_iter().enumerate() {
            s.delta_mean.push(m);
            s.delta_sd.push(sd);
            s.prob_positive.push(pp);
            s.lfsr.push(pp.min(1.0 - pp));
            for (t, (up, down)) in by_tau.into_iter().enumerate() {
                let i = g + d_n * t;
                s.prob_up[i] = up;
                s.prob_down[i] = down;
                s.prob_effect[i] = up + down;
                s.lfsr_tau[i] = 1.0 - up.max(down);
            }
        }
        s
    }
}

fn check_taus(taus: &[f64]) -> Result<()> {
    if taus.is_empty() || taus.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
        return Err(CoreError::arg(
            "tau",
            "must be one or more finite numbers of at least 0",
        ));
    }
    Ok(())
}

/// Summaries of `n` draws per gene, gene-major (`delta[g·n + s]`).
pub fn empirical(delta: &[f64], n: usize, taus: &[f64]) -> Result<DeStats> {
    check_taus(taus)?;
    if n == 0 || !delta.len().is_multiple_of(n) {
        return Err(CoreError::arg("delta", "needs at least one draw per gene"));
    }
    let per_gene: Vec<_> = delta
        .par_chunks(n)
        .map(|x| {
            let nf = n as f64;
            let mean = x.iter().sum::<f64>() / nf;
            let sd = if n > 1 {
                (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt()
            } else {
                0.0
            };
            let frac = |f: &dyn Fn(f64) -> bool| x.iter().filter(|&&v| f(v)).count() as f64 / nf;
            let pp = frac(&|v| v > 0.0);
            let by_tau = taus
                .iter()
                .map(|&t| (frac(&|v| v > t), frac(&|v| v < -t)))
                .collect();
            (mean, sd, pp, by_tau)
        })
        .collect();
    Ok(DeStats::assemble(taus, per_gene))
}

/// Summaries of `Δ_g ~ N(mean_g, sd_g²)` (sd floored at 1e-30).
pub fn gaussian(mean: &[f64], sd: &[f64], taus: &[f64]) -> Result<DeStats> {
    check_taus(taus)?;
    if mean.len() != sd.len() {
        return Err(CoreError::arg("sd", "must have one entry per gene"));
    }
    let per_gene = mean
        .iter()
        .zip(sd)
        .map(|(&m, &s)| {
            let s = s.max(1e-30);
            let by_tau = taus
                .iter()
                .map(|&t| (1.0 - normal_cdf((t - m) / s), normal_cdf((-t - m) / s)))
                .collect();
            (m, s, normal_cdf(m / s), by_tau)
        })
        .collect();
    Ok(DeStats::assemble(taus, per_gene))
}

/// Draws of the balance `b = Δ · v` of a gene set against the other genes,
/// with the isometric-log-ratio weights `+sqrt(n₋/(n₊ D))` on the set and
/// `−sqrt(n₊/(n₋ D))` off it. `delta` is gene-major with `n` draws per gene.
pub fn balance(delta: &[f64], n: usize, set: &[usize]) -> Result<Vec<f64>> {
    let d_n = delta.len().checked_div(n).unwrap_or(0);
    let mut in_set = vec![false; d_n];
    for &g in set {
        if g >= d_n {
            return Err(CoreError::arg(
                "sets",
                "names a gene outside the comparison",
            ));
        }
        in_set[g] = true;
    }
    let n_plus = in_set.iter().filter(|&&b| b).count();
    let n_minus = d_n - n_plus;
    if n_plus == 0 || n_minus == 0 {
        return Err(CoreError::arg(
            "sets",
            "each set needs at least one gene in it and one outside it",
        ));
    }
    let (dp, dm, dd) = (n_plus as f64, n_minus as f64, d_n as f64);
    let (w_in, w_out) = ((dm / (dp * dd)).sqrt(), -(dp / (dm * dd)).sqrt());
    let mut b = vec![0.0; n];
    for (g, col) in delta.chunks(n).enumerate() {
        let w = if in_set[g] { w_in } else { w_out };
        b.iter_mut().zip(col).for_each(|(acc, &x)| *acc += w * x);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empirical_counts_with_strict_inequalities() {
        // Gene 0: draws (−1, 0, 2, 3); gene 1: all 0.5.
        let delta = [-1.0, 0.0, 2.0, 3.0, 0.5, 0.5, 0.5, 0.5];
        let s = empirical(&delta, 4, &[0.0, 1.0]).unwrap();
        assert_eq!(s.delta_mean, vec![1.0, 0.5]);
        assert!((s.delta_sd[0] - (10.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.prob_positive, vec![0.5, 1.0]);
        assert_eq!(s.lfsr, vec![0.5, 0.0]);
        // τ = 0: up/down of gene 0 = 0.5/0.25; τ = 1: 0.5/0 (−1 is not < −1).
        assert_eq!((s.prob_up[0], s.prob_down[0]), (0.5, 0.25));
        assert_eq!((s.prob_up[2], s.prob_down[2]), (0.5, 0.0));
        assert_eq!(s.lfsr_tau[2], 0.5);
        // Gene 1 at τ = 1: no effect either way.
        assert_eq!((s.prob_effect[3], s.lfsr_tau[3]), (0.0, 1.0));
        assert!(empirical(&delta, 4, &[-0.1]).is_err());
    }

    #[test]
    fn gaussian_matches_the_normal_cdf() {
        let s = gaussian(&[1.0, -2.0], &[1.0, 0.5], &[0.0, 0.5]).unwrap();
        assert!(
            (s.prob_positive[0] - 0.841_344_746_068_542_9).abs() < 1e-9,
            "{}",
            s.prob_positive[0]
        );
        assert!((s.lfsr[1] - normal_cdf(-4.0)).abs() < 1e-15);
        // τ = 0.5 for gene 0: P(Δ > 0.5) = Φ(0.5).
        assert!((s.prob_up[2] - normal_cdf(0.5)).abs() < 1e-12);
        assert!((s.lfsr_tau[2] - (1.0 - normal_cdf(0.5))).abs() < 1e-12);
        // With τ = 0 the two lfsr agree.
        assert!((s.lfsr_tau[0] - s.lfsr[0]).abs() < 1e-12);
    }

    #[test]
    fn empirical_and_gaussian_agree_on_normal_draws() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
        let n = 40000;
        let norm = Normal::new(0.3, 0.4).unwrap();
        let x: Vec<f64> = (0..n).map(|_| norm.sample(&mut rng)).collect();
        let e = empirical(&x, n, &[0.2]).unwrap();
        let g = gaussian(&[0.3], &[0.4], &[0.2]).unwrap();
        assert!((e.lfsr[0] - g.lfsr[0]).abs() < 0.01);
        assert!((e.lfsr_tau[0] - g.lfsr_tau[0]).abs() < 0.01);
    }

    #[test]
    fn balance_weights_are_an_ilr_contrast() {
        // Three genes, one draw; set = {0}: weights sqrt(2/3), −sqrt(1/6) twice.
        let b = balance(&[1.0, 0.0, -1.0], 1, &[0]).unwrap();
        assert!((b[0] - ((2.0f64 / 3.0).sqrt() + (1.0f64 / 6.0).sqrt())).abs() < 1e-12);
        assert!(balance(&[1.0, 2.0], 1, &[0, 1]).is_err());
        assert!(balance(&[1.0, 2.0], 1, &[5]).is_err());
    }
}
