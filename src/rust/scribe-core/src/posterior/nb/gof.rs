//! Goodness of fit of NB-family fits, per gene.
//!
//! Randomized quantile residuals (Dunn & Smyth 1996): with `F` the fitted
//! predictive CDF of a count `u`, `v ~ Uniform(F(u − 1), F(u))` clipped to
//! `[ε, 1 − ε]` and `q = Φ⁻¹(v)` is standard normal when the model is right.
//! `F` is the full observation model of each cell: the NB with the cell's
//! identified success probability `p̂_c = p ν_c / (1 − p (1 − ν_c))` under
//! capture, the zero-inflation gate, and the mixture over components with
//! the global weights (the predictive of a new cell); with several posterior
//! draws it is their average (the posterior predictive CDF). Zeros cost one
//! power per (draw, component, cell, gene); nonzeros one regularized
//! incomplete beta.
//!
//! PPC calibration: per gene, the histogram of counts over cells of each
//! predictive draw gives per-bin central bands; the observed histogram's
//! non-empty bins outside their band are the calibration failures.

use super::draws::NbDraws;
use super::predictive::predictive;
use crate::data::CountMatrix;
use crate::error::{CoreError, Result};
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

/// Per-gene residual summaries and, when asked, the residuals (`c + C·j`).
#[derive(Debug, Clone, PartialEq)]
pub struct Residuals {
    pub mean: Vec<f64>,
    pub variance: Vec<f64>,
    /// Fraction of `|q| > 2` minus its normal value `2(1 − Φ(2))`.
    pub tail_excess: Vec<f64>,
    /// Kolmogorov–Smirnov distance to the standard normal.
    pub ks_distance: Vec<f64>,
    pub values: Option<Vec<f64>>,
}

/// `Φ⁻¹(v)`.
fn normal_quantile(v: f64) -> f64 {
    -std::f64::consts::SQRT_2 * statrs::function::erf::erfc_inv(2.0 * v)
}

/// `P(X ≤ u)` of `NB(r, p̂)` (pmf ∝ (1 − p̂)^r p̂^k): `I_{1−p̂}(r, u + 1)`.
fn nb_cdf(u: u32, r: f64, p_hat: f64) -> f64 {
    statrs::function::beta::beta_reg(r, u as f64 + 1.0, 1.0 - p_hat)
}

/// Genes per block: residuals are formed for a block of genes over all cells.
const GENE_BLOCK: usize = 128;

/// Randomized quantile residuals of `genes` for every cell.
pub fn quantile_residuals(
    d: &NbDraws,
    data: &CountMatrix,
    genes: &[usize],
    keep: bool,
    epsilon: f64,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Residuals> {
    if !(epsilon > 0.0 && epsilon < 0.5) {
        return Err(CoreError::arg("epsilon", "must be in (0, 0.5)"));
    }
    let (c_n, j_n, s_n, k_n) = (data.n_cells, genes.len(), d.n_draws, d.n_comp);
    let block = GENE_BLOCK.min(j_n.max(1));
    crate::limits::check_values(
        "genes",
        (c_n * block) as f64 + if keep { (c_n * j_n) as f64 } else { 0.0 },
    )?;
    let mut pos = vec![usize::MAX; data.n_genes];
    for (j, &g) in genes.iter().enumerate() {
        pos[g] = j;
    }
    let (sw, kw) = (1.0 / s_n as f64, |s: usize, k: usize| {
        d.weights[s * k_n + k]
    });
    let mut out = Residuals {
        mean: vec![0.0; j_n],
        variance: vec![0.0; j_n],
        tail_excess: vec![0.0; j_n],
        ks_distance: vec![0.0; j_n],
        values: keep.then(|| vec![0.0; c_n * j_n]),
    };
    let normal_tail = 2.0 * (1.0 - crate::de::stats::normal_cdf(2.0));
    let work = ctl.work(j_n.div_ceil(block) * c_n);
    let mut q = vec![0.0; c_n * block]; // cell-major within the block
    for (b, start) in (0..j_n).step_by(block).enumerate() {
        if work.stopped() {
            break;
        }
        let len = block.min(j_n - start);
        q[..c_n * len]
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(c, row)| {
                let mut u = vec![0u32; len];
                let (gi, ci) = data.row(c);
                for (&g, &x) in gi.iter().zip(ci) {
                    let j = pos[g as usize];
                    if j != usize::MAX && j >= start && j < start + len {
                        u[j - start] = x;
                    }
                }
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(((b as u64) << 32) | c as u64);
                for (i, qv) in row.iter_mut().enumerate() {
                    let g = genes[start + i];
                    let (mut lo, mut hi) = (0.0, 0.0);
                    for s in 0..s_n {
                        for k in 0..k_n {
                            let p = d.p_of(s, k);
                            let nu = d.nu_of(s, c);
                            let p_hat = p * nu / (1.0 - p * (1.0 - nu));
                            let r = d.r_of(s, k)[g];
                            let pi = d.gate_of(s, k).map_or(0.0, |gt| gt[g]);
                            let w = sw * kw(s, k);
                            let cdf = |x: u32| {
                                let f = if x == 0 {
                                    (r * (1.0 - p_hat).ln()).exp()
                                } else {
                                    nb_cdf(x, r, p_hat)
                                };
                                pi + (1.0 - pi) * f
                            };
                            hi += w * cdf(u[i]);
                            if u[i] > 0 {
                                lo += w * cdf(u[i] - 1);
                            }
                        }
                    }
                    let v: f64 = lo + rng.random::<f64>() * (hi - lo);
                    *qv = normal_quantile(v.clamp(epsilon, 1.0 - epsilon));
                }
                work.tick();
            });
        let block_scores: Vec<(f64, f64, f64, f64)> = (0..len)
            .into_par_iter()
            .map(|i| {
                let mut col: Vec<f64> = (0..c_n).map(|c| q[c * len + i]).collect();
                let n = c_n as f64;
                let mean = col.iter().sum::<f64>() / n;
                let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
                let tail = col.iter().filter(|x| x.abs() > 2.0).count() as f64 / n - normal_tail;
                col.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let ks = col
                    .iter()
                    .enumerate()
                    .map(|(idx, &x)| {
                        let f = crate::de::stats::normal_cdf(x);
                        ((idx + 1) as f64 / n - f)
                            .abs()
                            .max((f - idx as f64 / n).abs())
                    })
                    .fold(0.0, f64::max);
                (mean, var, tail, ks)
            })
            .collect();
        for (i, (m, v, t, k)) in block_scores.into_iter().enumerate() {
            let j = start + i;
            out.mean[j] = m;
            out.variance[j] = v;
            out.tail_excess[j] = t;
            out.ks_distance[j] = k;
            if let Some(vals) = out.values.as_mut() {
                for c in 0..c_n {
                    vals[c + c_n * j] = q[c * len + i];
                }
            }
        }
    }
    work.finish(out)
}

/// Per-gene PPC calibration: fraction of the observed histogram's non-empty
/// bins outside the central `level` band of the predictive histograms, and
/// the L1 distance to the predictive median histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct PpcScores {
    pub calibration_failure: Vec<f64>,
    pub l1_distance: Vec<f64>,
}

/// Percentile with linear interpolation of a sorted sample.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// PPC scores of `genes` from `n_draws` predictive draws per parameter
/// setting of `d` (one predictive count matrix per setting).
pub fn ppc_scores(
    d: &NbDraws,
    data: &CountMatrix,
    genes: &[usize],
    level: f64,
    max_bin: Option<usize>,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<PpcScores> {
    if !(level > 0.0 && level < 1.0) {
        return Err(CoreError::arg("credible_level", "must be in (0, 100)"));
    }
    let (c_n, s_n) = (data.n_cells, d.n_draws);
    let cells: Vec<usize> = (0..c_n).collect();
    // Predictive counts of a block of genes: at most ~1e7 values at a time.
    let block = (10_000_000 / (c_n * s_n).max(1)).clamp(1, GENE_BLOCK / 4);
    let mut out = PpcScores {
        calibration_failure: Vec::with_capacity(genes.len()),
        l1_distance: Vec::with_capacity(genes.len()),
    };
    let mut pos = vec![usize::MAX; data.n_genes];
    let work = ctl.work(genes.len());
    for chunk in genes.chunks(block) {
        if work.stopped() {
            break;
        }
        let pred = predictive(d, &cells, chunk, false, seed, Ctl::none())?;
        chunk.iter().enumerate().for_each(|(j, &g)| pos[g] = j);
        let mut obs = vec![vec![0u32; c_n]; chunk.len()];
        for c in 0..c_n {
            let (gi, ci) = data.row(c);
            for (&g, &x) in gi.iter().zip(ci) {
                let j = pos[g as usize];
                if j != usize::MAX && j < chunk.len() && chunk[j] == g as usize {
                    obs[j][c] = x;
                }
            }
        }
        let scores: Vec<(f64, f64)> = (0..chunk.len())
            .into_par_iter()
            .map(|j| {
                let col = &pred[s_n * c_n * j..s_n * c_n * (j + 1)];
                let lo = col.iter().cloned().fold(f64::INFINITY, f64::min) as usize;
                let mut hi = col.iter().cloned().fold(0.0, f64::max) as usize;
                if let Some(m) = max_bin {
                    hi = hi.min(lo + m);
                }
                let n_bins = hi - lo + 1;
                // Density histograms per draw: bins × draws.
                let mut dens = vec![0.0; n_bins * s_n];
                for s in 0..s_n {
                    let mut tot = 0.0;
                    for c in 0..c_n {
                        let x = col[s + s_n * c] as usize;
                        if x >= lo && x <= hi {
                            dens[(x - lo) * s_n + s] += 1.0;
                            tot += 1.0;
                        }
                    }
                    if tot > 0.0 {
                        for b in 0..n_bins {
                            dens[b * s_n + s] /= tot;
                        }
                    }
                }
                let mut o = vec![0.0; n_bins];
                let mut o_tot = 0.0;
                for &x in &obs[j] {
                    let x = x as usize;
                    if x >= lo && x <= hi {
                        o[x - lo] += 1.0;
                        o_tot += 1.0;
                    }
                }
                let (mut fails, mut nonempty, mut l1) = (0usize, 0usize, 0.0);
                let tail = (1.0 - level) / 2.0;
                for b in 0..n_bins {
                    let row = &mut dens[b * s_n..(b + 1) * s_n];
                    row.sort_by(|x, y| x.partial_cmp(y).unwrap());
                    let (lower, upper, med) = (
                        percentile(row, tail),
                        percentile(row, 1.0 - tail),
                        percentile(row, 0.5),
                    );
                    let ob = if o_tot > 0.0 { o[b] / o_tot } else { 0.0 };
                    if o[b] > 0.0 {
                        nonempty += 1;
                        if ob < lower || ob > upper {
                            fails += 1;
                        }
                    }
                    l1 += (ob - med).abs();
                }
                let fail = if nonempty > 0 {
                    fails as f64 / nonempty as f64
                } else {
                    0.0
                };
                (fail, l1)
            })
            .collect();
        chunk.iter().for_each(|&g| pos[g] = usize::MAX);
        for (f, l) in scores {
            out.calibration_failure.push(f);
            out.l1_distance.push(l);
            work.tick();
        }
    }
    work.finish(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::Variant;

    fn truth_draws(variant: Variant, t: &NbTruth) -> NbDraws {
        NbDraws {
            variant,
            n_draws: 1,
            n_comp: 1,
            n_genes: t.r.len(),
            n_cells: t.nu.as_ref().map_or(0, Vec::len),
            r: t.r.clone(),
            p: vec![t.p],
            nu: t.nu.clone(),
            gate: t.gate.clone(),
            weights: vec![1.0],
        }
    }

    #[test]
    fn nb_cdf_matches_summed_pmf() {
        let (r, p): (f64, f64) = (2.5, 0.4);
        let mut acc = 0.0;
        for k in 0..30u32 {
            let ln_pmf = crate::math::lgamma(r + k as f64)
                - crate::math::lgamma(r)
                - crate::math::lgamma(k as f64 + 1.0)
                + r * (1.0 - p).ln()
                + k as f64 * p.ln();
            acc += ln_pmf.exp();
            assert!((nb_cdf(k, r, p) - acc).abs() < 1e-10, "k = {k}");
        }
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-9);
    }

    #[test]
    fn residuals_of_the_true_model_are_standard_normal() {
        for variant in [Variant::Nbvcp, Variant::Zinbvcp] {
            let t = NbTruth::random(variant, 20, 2000, 5);
            let data = simulate_nb(&t, 6);
            let d = truth_draws(variant, &t);
            let genes: Vec<usize> = (0..20).collect();
            let res = quantile_residuals(&d, &data, &genes, true, 1e-6, 1, Ctl::none()).unwrap();
            for j in 0..20 {
                assert!(
                    res.mean[j].abs() < 0.1,
                    "{variant:?} gene {j} mean {}",
                    res.mean[j]
                );
                assert!(
                    (res.variance[j] - 1.0).abs() < 0.15,
                    "gene {j} var {}",
                    res.variance[j]
                );
                assert!(
                    res.ks_distance[j] < 0.05,
                    "gene {j} ks {}",
                    res.ks_distance[j]
                );
            }
            // Ignoring capture breaks calibration on capture-varying data.
            let mut no_capture = d.clone();
            no_capture.nu = None;
            no_capture.n_cells = 0;
            let bad = quantile_residuals(&no_capture, &data, &genes, false, 1e-6, 1, Ctl::none())
                .unwrap();
            let worse = (0..20).filter(|&j| bad.ks_distance[j] > 0.1).count();
            assert!(
                worse >= 15,
                "{variant:?}: only {worse} genes miscalibrated without capture"
            );
            assert!(bad.values.is_none());
        }
    }

    #[test]
    fn residuals_do_not_depend_on_threads_and_ppc_scores_of_the_truth_are_calibrated() {
        let t = NbTruth::random(Variant::Nbdm, 12, 400, 2);
        let data = simulate_nb(&t, 3);
        let d = truth_draws(Variant::Nbdm, &t);
        let genes: Vec<usize> = (0..12).collect();
        let run = |n: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
                .install(|| {
                    quantile_residuals(&d, &data, &genes, true, 1e-6, 9, Ctl::none()).unwrap()
                })
        };
        assert_eq!(run(1), run(3));
        let many = d.replicate(200).unwrap();
        let sc = ppc_scores(&many, &data, &genes, 0.95, None, 4, Ctl::none()).unwrap();
        let mean_fail = sc.calibration_failure.iter().sum::<f64>() / 12.0;
        assert!(mean_fail < 0.2, "mean calibration failure {mean_fail}");
    }
}
