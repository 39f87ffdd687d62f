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
//! predictive data set gives per-bin central bands; the observed histogram's
//! non-empty bins outside their band are the calibration failures.

use super::draws::NbDraws;
use crate::data::CountMatrix;
use crate::dist::draw::{bnb_count, nb_count_fast};
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

/// `P(X ≤ u)` of `NB(r, p̂)` (pmf ∝ (1 − p̂)^r p̂^k): `I_{1−p̂}(r, u + 1)`.
fn nb_cdf(u: u32, r: f64, p_hat: f64) -> f64 {
    statrs::function::beta::beta_reg(r, u as f64 + 1.0, 1.0 - p_hat)
}

/// `(F(u − 1), F(u))` of a count `u` under `NB(r, p̂)` with a zero gate `π`
/// (`F(−1) = 0`).
pub(crate) fn nb_cdf_pair(u: u32, r: f64, p_hat: f64, pi: f64) -> (f64, f64) {
    let cdf = |x: u32| {
        let f = if x == 0 {
            (r * (1.0 - p_hat).ln()).exp()
        } else {
            nb_cdf(x, r, p_hat)
        };
        pi + (1.0 - pi) * f
    };
    (if u > 0 { cdf(u - 1) } else { 0.0 }, cdf(u))
}

/// `(P(X ≤ u − 1), P(X ≤ u))` of the BNB (`r`, excess dispersion `ω`,
/// odds `o` of `p̂`), summing the pmf by its recursion
/// `f(k+1)/f(k) = (r+k)(α+k) / ((k+1)(α+κ+r+k))` from
/// `f(0) = B(α, κ+r)/B(α, κ)`.
fn bnb_cdf_pair(u: u32, r: f64, omega: f64, odds: f64) -> (f64, f64) {
    let kappa = 2.0 + (r + 1.0) / omega.max(1e-6);
    let alpha = (kappa - 1.0) * odds;
    let mut f = crate::models::nb::bnb_ratio(0, r, omega, odds).exp();
    let (mut below, mut upto) = (0.0, f);
    for k in 0..u {
        below = upto;
        let k = k as f64;
        f *= (r + k) * (alpha + k) / ((k + 1.0) * (alpha + kappa + r + k));
        upto += f;
    }
    (below.min(1.0), upto.min(1.0))
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
    // A cell's component weights: the mixture's, or its own dataset's.
    let (sw, kw) = (1.0 / s_n as f64, |s: usize, k: usize, c: usize| {
        match d.known_comp(c) {
            Some(own) => f64::from(k == own),
            None => d.weights[s * k_n + k],
        }
    });
    let mut out = Residuals::new(j_n, c_n, keep);
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
                            let p = d.p_at(s, k, g);
                            let nu = d.nu_of(s, c);
                            let p_hat = p * nu / (1.0 - p * (1.0 - nu));
                            let r = d.r_of(s, k)[g];
                            let pi = d.gate_of(s, k).map_or(0.0, |gt| gt[g]);
                            let w = sw * kw(s, k, c);
                            if let Some(om) = d.omega_at(s, g) {
                                let (b, a) = bnb_cdf_pair(u[i], r, om, p_hat / (1.0 - p_hat));
                                let lift = |f: f64| pi + (1.0 - pi) * f;
                                hi += w * lift(a);
                                if u[i] > 0 {
                                    lo += w * lift(b);
                                }
                                continue;
                            }
                            let (below, upto) = nb_cdf_pair(u[i], r, p_hat, pi);
                            lo += w * below;
                            hi += w * upto;
                        }
                    }
                    *qv = randomized_residual(lo, hi, rng.random(), epsilon);
                }
                work.tick();
            });
        out.record(&q[..c_n * len], c_n, start, len);
    }
    work.finish(out)
}

/// `Φ⁻¹(v)` with `v = lo + w (hi − lo)` clipped to `[ε, 1 − ε]`: the
/// randomized quantile residual of a count whose predictive CDF is `lo`
/// just below it and `hi` at it, from a uniform `w`.
pub(crate) fn randomized_residual(lo: f64, hi: f64, w: f64, epsilon: f64) -> f64 {
    let v = lo + w * (hi - lo);
    crate::math::normal_quantile(v.clamp(epsilon, 1.0 - epsilon))
}

impl Residuals {
    /// Empty summaries of `n_genes` genes over `n_cells` cells, keeping
    /// the residuals when `keep`.
    pub(crate) fn new(n_genes: usize, n_cells: usize, keep: bool) -> Self {
        Residuals {
            mean: vec![0.0; n_genes],
            variance: vec![0.0; n_genes],
            tail_excess: vec![0.0; n_genes],
            ks_distance: vec![0.0; n_genes],
            values: keep.then(|| vec![0.0; n_cells * n_genes]),
        }
    }

    /// Summarizes the residuals `q` (cell-major, `len` genes per cell) of
    /// the genes `start..start + len`.
    pub(crate) fn record(&mut self, q: &[f64], c_n: usize, start: usize, len: usize) {
        let normal_tail = 2.0 * (1.0 - crate::de::stats::normal_cdf(2.0));
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
            self.mean[j] = m;
            self.variance[j] = v;
            self.tail_excess[j] = t;
            self.ks_distance[j] = k;
            if let Some(vals) = self.values.as_mut() {
                for c in 0..c_n {
                    vals[c + c_n * j] = q[c * len + i];
                }
            }
        }
    }
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

/// PPC scores of `genes`: one predictive data set per parameter setting of
/// `d` (its draws). Counts are drawn gene by gene and binned on the fly, from
/// a `(seed, gene, draw)` stream, so no predictive count matrix is ever
/// held; each cell's component is drawn from the weights (the genes' marginal
/// predictive, which is all a per-gene histogram sees).
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
    let (c_n, s_n, k_n) = (data.n_cells, d.n_draws, d.n_comp);
    let observed = observed_nonzero(data, genes);
    // Odds of the capture-adjusted success probability per (draw, component,
    // cell), shared by all genes unless p is gene-specific.
    let odds_at = |s: usize, k: usize, c: usize, g: usize| {
        let (p, nu) = (d.p_at(s, k, g), d.nu_of(s, c));
        let p_hat = p * nu / (1.0 - p * (1.0 - nu));
        p_hat / (1.0 - p_hat)
    };
    let odds: Vec<f64> = if d.gene_specific_p() {
        Vec::new()
    } else {
        (0..s_n * k_n * c_n)
            .map(|i| {
                let (sk, c) = (i / c_n, i % c_n);
                odds_at(sk / k_n, sk % k_n, c, 0)
            })
            .collect()
    };
    let work = ctl.work(genes.len());
    let tail = (1.0 - level) / 2.0;
    let scores: Vec<(f64, f64)> = genes
        .par_iter()
        .enumerate()
        .map(|(j, &g)| {
            if work.stopped() {
                return (f64::NAN, f64::NAN);
            }
            let mut hists: Vec<Vec<u32>> = Vec::with_capacity(s_n);
            for s in 0..s_n {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(((g as u64 + 1) << 32) | s as u64);
                let w = &d.weights[s * k_n..(s + 1) * k_n];
                let mut h: Vec<u32> = Vec::new();
                for c in 0..c_n {
                    let k = match d.known_comp(c) {
                        Some(k) => k,
                        None if k_n == 1 => 0,
                        None => crate::math::pick_index(w, rng.random()),
                    };
                    let gated = d
                        .gate_of(s, k)
                        .is_some_and(|pi| rng.random::<f64>() < pi[g]);
                    let x = if gated {
                        0
                    } else {
                        let o = if odds.is_empty() {
                            odds_at(s, k, c, g)
                        } else {
                            odds[(s * k_n + k) * c_n + c]
                        };
                        let x = match d.omega_at(s, g) {
                            Some(om) => bnb_count(&mut rng, d.r_of(s, k)[g], o, om),
                            None => nb_count_fast(&mut rng, d.r_of(s, k)[g], o),
                        };
                        x as usize
                    };
                    if x >= h.len() {
                        h.resize(x + 1, 0);
                    }
                    h[x] += 1;
                }
                hists.push(h);
            }
            work.tick();
            histogram_scores(&hists, &observed[j], c_n, tail, max_bin)
        })
        .collect();
    let (calibration_failure, l1_distance) = scores.into_iter().unzip();
    work.finish(PpcScores {
        calibration_failure,
        l1_distance,
    })
}

/// The observed nonzero counts of each of `genes` (the other cells are zeros).
pub(crate) fn observed_nonzero(data: &CountMatrix, genes: &[usize]) -> Vec<Vec<u32>> {
    let mut pos = vec![usize::MAX; data.n_genes];
    for (j, &g) in genes.iter().enumerate() {
        pos[g] = j;
    }
    let mut observed: Vec<Vec<u32>> = vec![Vec::new(); genes.len()];
    for c in 0..data.n_cells {
        let (gi, ci) = data.row(c);
        for (&g, &x) in gi.iter().zip(ci) {
            if pos[g as usize] != usize::MAX {
                observed[pos[g as usize]].push(x);
            }
        }
    }
    observed
}

/// One gene's PPC scores from the count histograms of its predictive data
/// sets (`hists[s][x]`: cells with count `x`) and its observed nonzero
/// counts over `c_n` cells: the fraction of non-empty observed bins outside
/// the central band (tail mass `tail` each side) and the L1 distance to the
/// median predictive histogram.
pub(crate) fn histogram_scores(
    hists: &[Vec<u32>],
    observed: &[u32],
    c_n: usize,
    tail: f64,
    max_bin: Option<usize>,
) -> (f64, f64) {
    let s_n = hists.len();
    let lo = hists
        .iter()
        .map(|h| h.iter().position(|&v| v > 0).unwrap_or(0))
        .min()
        .unwrap_or(0);
    let mut hi = hists.iter().map(|h| h.len().max(1) - 1).max().unwrap_or(0);
    if let Some(m) = max_bin {
        hi = hi.min(lo + m);
    }
    let n_bins = hi - lo + 1;
    let in_range = |h: &[u32]| -> f64 {
        h.iter()
            .enumerate()
            .filter(|(x, _)| *x >= lo && *x <= hi)
            .map(|(_, &v)| v as f64)
            .sum()
    };
    let totals: Vec<f64> = hists.iter().map(|h| in_range(h)).collect();
    let mut obs = vec![0.0; n_bins];
    let n_zero = c_n - observed.len();
    if lo == 0 && n_zero > 0 {
        obs[0] = n_zero as f64;
    }
    for &x in observed {
        let x = x as usize;
        if x >= lo && x <= hi {
            obs[x - lo] += 1.0;
        }
    }
    let o_tot: f64 = obs.iter().sum();
    let (mut fails, mut nonempty, mut l1) = (0usize, 0usize, 0.0);
    let mut col = vec![0.0; s_n];
    for b in 0..n_bins {
        for (s, h) in hists.iter().enumerate() {
            let v = h.get(lo + b).copied().unwrap_or(0) as f64;
            col[s] = if totals[s] > 0.0 { v / totals[s] } else { 0.0 };
        }
        col.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let (lower, upper, med) = (
            percentile(&col, tail),
            percentile(&col, 1.0 - tail),
            percentile(&col, 0.5),
        );
        let ob = if o_tot > 0.0 { obs[b] / o_tot } else { 0.0 };
        if obs[b] > 0.0 {
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
            p_gene: None,
            omega: None,
            nu: t.nu.clone(),
            gate: t.gate.clone(),
            weights: vec![1.0],
            cell_comp: None,
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
        assert!((crate::math::normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-9);
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

#[cfg(test)]
mod bnb_cdf_tests {
    use super::*;
    use crate::math::lgamma;

    #[test]
    fn the_bnb_cdf_sums_the_pmf_and_tends_to_the_nb() {
        let (r, omega, odds) = (1.7, 0.6, 1.3);
        let pmf = |k: u32| {
            (lgamma(k as f64 + r) - lgamma(r) - lgamma(k as f64 + 1.0)
                + crate::models::nb::bnb_ratio(k, r, omega, odds))
            .exp()
        };
        for u in [0u32, 1, 4, 20] {
            let want: f64 = (0..=u).map(pmf).sum();
            let (below, upto) = bnb_cdf_pair(u, r, omega, odds);
            assert!((upto - want).abs() < 1e-12, "u {u}: {upto} vs {want}");
            assert!((upto - below - pmf(u)).abs() < 1e-12);
        }
        // Far in the tail the CDF reaches 1.
        assert!((bnb_cdf_pair(20_000, r, omega, odds).1 - 1.0).abs() < 1e-4);
        // ω → 0: the NB's CDF.
        let p_hat = odds / (1.0 + odds);
        let (_, near_nb) = bnb_cdf_pair(5, r, 1e-6, odds);
        assert!((near_nb - nb_cdf(5, r, p_hat)).abs() < 1e-4);
    }
}
