//! Goodness of fit of log-normal-family fits, per gene, from latent values
//! of any engine: the randomized quantile residuals and PPC calibration
//! scores of [`crate::posterior::nb::gof`].
//!
//! A count's predictive CDF given a cell's latents is Poisson (PLN) or NB
//! (NBLN) at the rate `e^{x − η}`; for LNM it is the marginal of one gene
//! of `Multinomial(N, ρ)` with `N ~ NB(mean μ_T e^{−η}, r_T)`, which is
//! `NB(mean μ_T e^{−η} ρ_g, r_T)` (thinning keeps the NB's shape). With
//! several latent draws the CDF is their average (the posterior predictive
//! CDF). Each PPC data set is one latent draw with one count per (cell,
//! gene), binned per gene as it is drawn.
//!
//! Latents come from the caller, a chunk of cells at a time (`latents(cells,
//! coords)`, `coords = None` for all coordinates), so no cells × genes
//! array of latents exists beyond one chunk.

use super::{predictive, Latents, LnObs};
use crate::data::CountMatrix;
use crate::error::{CoreError, Result};
use crate::models::lognormal::LnModel;
use crate::posterior::nb::gof::{
    histogram_scores, nb_cdf_pair, observed_nonzero, randomized_residual, PpcScores, Residuals,
};
use crate::progress::Ctl;
use rand::RngExt;
use rayon::prelude::*;

/// Genes whose residuals are formed at once (for all cells).
const GENE_BLOCK: usize = 512;
/// Latent values per chunk of cells.
const CHUNK_VALUES: usize = 4_000_000;

/// `(F(u − 1), F(u))` of `Poisson(λ)`.
fn poisson_pair(u: u32, lam: f64) -> (f64, f64) {
    let cdf = |x: u32| statrs::function::gamma::gamma_ur(x as f64 + 1.0, lam.max(1e-300));
    (if u > 0 { cdf(u - 1) } else { 0.0 }, cdf(u))
}

/// `(F(u − 1), F(u))` of the NB with shape `r` and mean `m`.
fn nb_pair(u: u32, r: f64, m: f64) -> (f64, f64) {
    nb_cdf_pair(u, r, (m / (m + r)).clamp(0.0, 1.0 - 1e-15), 0.0)
}

/// The latent coordinates a gene subset needs: its own (PLN, NBLN) or all
/// (LNM, whose composition reads every coordinate).
fn coords_for(obs: &LnObs<'_>, genes: &[usize]) -> Option<Vec<usize>> {
    (obs.model != LnModel::Lnm).then(|| genes.to_vec())
}

/// Cells per chunk with `per_cell` latent values each.
fn chunk_len(per_cell: usize) -> usize {
    (CHUNK_VALUES / per_cell.max(1)).max(1)
}

/// Randomized quantile residuals of `genes` (distinct) in every cell of
/// `data`, under each cell's predictive CDF averaged over the `n_draws`
/// draws per cell that `latents` returns; the uniforms come from `(seed,
/// gene block, cell)` streams.
#[allow(clippy::too_many_arguments)]
pub fn quantile_residuals<F>(
    obs: &LnObs<'_>,
    data: &CountMatrix,
    genes: &[usize],
    keep: bool,
    epsilon: f64,
    n_draws: usize,
    latents: F,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Residuals>
where
    F: Fn(&[usize], Option<&[usize]>) -> Result<Latents>,
{
    if !(epsilon > 0.0 && epsilon < 0.5) {
        return Err(CoreError::arg("epsilon", "must be in (0, 0.5)"));
    }
    check_genes(genes, data.n_genes)?;
    let (c_n, j_n) = (data.n_cells, genes.len());
    let block = GENE_BLOCK.min(j_n.max(1));
    crate::limits::check_values(
        "genes",
        (c_n * block) as f64 + if keep { (c_n * j_n) as f64 } else { 0.0 },
    )?;
    let mut out = Residuals::new(j_n, c_n, keep);
    let mut q = vec![0.0; c_n * block];
    let cells: Vec<usize> = (0..c_n).collect();
    let work = ctl.work(j_n.div_ceil(block) * c_n);
    for (b, start) in (0..j_n).step_by(block).enumerate() {
        let len = block.min(j_n - start);
        let gb = &genes[start..start + len];
        let coords = coords_for(obs, gb);
        // Sized for every coordinate: a source may form them all first.
        for chunk in cells.chunks(chunk_len(data.n_genes * n_draws.max(1))) {
            if work.stopped() {
                return work.finish(out);
            }
            let lat = latents(chunk, coords.as_deref())?;
            q[chunk[0] * len..(chunk[0] + chunk.len()) * len]
                .par_chunks_mut(len)
                .zip(chunk.par_iter().enumerate())
                .for_each(|(row, (ci, &c))| {
                    let mut u = vec![0u32; len];
                    let (gi, ui) = data.row(c);
                    for (j, &g) in gb.iter().enumerate() {
                        if let Ok(p) = gi.binary_search(&(g as u32)) {
                            u[j] = ui[p];
                        }
                    }
                    let mut lo = vec![0.0; len];
                    let mut hi = vec![0.0; len];
                    for s in 0..lat.n {
                        let eta = lat.eta(ci, s);
                        let rho =
                            (obs.model == LnModel::Lnm).then(|| obs.composition(&lat.row(ci, s)));
                        for j in 0..len {
                            let (a, z) = match &rho {
                                Some(rho) => {
                                    let (mu_t, r_t) = (obs.totals[0], obs.totals[1]);
                                    let m = mu_t * (-eta).clamp(-30.0, 30.0).exp() * rho[gb[j]];
                                    nb_pair(u[j], r_t, m)
                                }
                                None => {
                                    let m = (lat.x(ci, j, s) - eta).clamp(-50.0, 50.0).exp();
                                    match obs.model {
                                        LnModel::Nbln => nb_pair(u[j], obs.r[gb[j]].max(1e-6), m),
                                        _ => poisson_pair(u[j], m),
                                    }
                                }
                            };
                            lo[j] += a;
                            hi[j] += z;
                        }
                    }
                    let mut rng = super::cell_rng(seed ^ ((b as u64) << 40), c);
                    let nd = lat.n as f64;
                    for (j, qv) in row.iter_mut().enumerate() {
                        *qv = randomized_residual(lo[j] / nd, hi[j] / nd, rng.random(), epsilon);
                    }
                    work.tick();
                });
        }
        out.record(&q[..c_n * len], c_n, start, len);
    }
    work.finish(out)
}

/// PPC calibration scores of `genes` (distinct): `n_sets` predictive data
/// sets, the `s`-th from latent draw `s` of every cell (`latents` returns
/// `n_sets` draws per cell), with counts from the predictive streams of
/// [`predictive`] (seeded by `seed`).
#[allow(clippy::too_many_arguments)]
pub fn ppc_scores<F>(
    obs: &LnObs<'_>,
    data: &CountMatrix,
    genes: &[usize],
    level: f64,
    max_bin: Option<usize>,
    n_sets: usize,
    latents: F,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<PpcScores>
where
    F: Fn(&[usize], Option<&[usize]>) -> Result<Latents>,
{
    if !(level > 0.0 && level < 1.0) {
        return Err(CoreError::arg("credible_level", "must be in (0, 100)"));
    }
    check_genes(genes, data.n_genes)?;
    let (c_n, j_n) = (data.n_cells, genes.len());
    let coords = coords_for(obs, genes);
    // PLN and NBLN latents cover `genes` only: column j is gene genes[j].
    let (sub, sub_r): (Vec<usize>, Vec<f64>) = match &coords {
        Some(_) => (
            (0..j_n).collect(),
            if obs.model == LnModel::Nbln {
                genes.iter().map(|&g| obs.r[g]).collect()
            } else {
                Vec::new()
            },
        ),
        None => (genes.to_vec(), Vec::new()),
    };
    let obs_sub = LnObs {
        model: obs.model,
        r: if obs.model == LnModel::Nbln {
            &sub_r
        } else {
            obs.r
        },
        totals: obs.totals,
        reference: obs.reference,
    };
    let cells: Vec<usize> = (0..c_n).collect();
    let mut hists = vec![vec![Vec::<u32>::new(); n_sets]; j_n];
    for chunk in cells.chunks(chunk_len(data.n_genes * n_sets)) {
        let lat = latents(chunk, coords.as_deref())?;
        let counts = predictive(&obs_sub, &lat, chunk, &sub, n_sets, seed, ctl)?;
        hists.par_iter_mut().enumerate().for_each(|(j, hs)| {
            for ci in 0..chunk.len() {
                for (s, h) in hs.iter_mut().enumerate() {
                    let x = counts[(ci * j_n + j) * n_sets + s] as usize;
                    if x >= h.len() {
                        h.resize(x + 1, 0);
                    }
                    h[x] += 1;
                }
            }
        });
    }
    let observed = observed_nonzero(data, genes);
    let tail = (1.0 - level) / 2.0;
    let (calibration_failure, l1_distance) = hists
        .par_iter()
        .zip(&observed)
        .map(|(h, o)| histogram_scores(h, o, c_n, tail, max_bin))
        .unzip();
    Ok(PpcScores {
        calibration_failure,
        l1_distance,
    })
}

fn check_genes(genes: &[usize], n_genes: usize) -> Result<()> {
    if let Some(&g) = genes.iter().find(|&&g| g >= n_genes) {
        return Err(CoreError::arg(
            "genes",
            format!("gene {} is not a gene of the fit", g + 1),
        ));
    }
    let mut seen = vec![false; n_genes];
    for &g in genes {
        if std::mem::replace(&mut seen[g], true) {
            return Err(CoreError::arg("genes", "lists a gene more than once"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::draw;
    use rand::rngs::ChaCha8Rng;
    use rand::SeedableRng;
    use rand_distr::StandardNormal;

    /// Latents `x` (cell-major `c × g`) and counts drawn from them: PLN,
    /// NBLN (dispersions `r`) or LNM (`g` = genes − 1 log-ratios against the
    /// last gene, totals `NB(mean, shape)`), each cell with capture `η`.
    fn simulate(
        model: LnModel,
        c_n: usize,
        g: usize,
        r: &[f64],
        totals: &[f64],
        seed: u64,
    ) -> (CountMatrix, Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let width = if model == LnModel::Lnm { g - 1 } else { g };
        let x: Vec<f64> = (0..c_n * width)
            .map(|i| 0.3 * (i % width) as f64 - 1.0 + 0.5 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let eta: Vec<f64> = (0..c_n).map(|c| 0.2 + 0.1 * (c % 5) as f64).collect();
        let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
        for c in 0..c_n {
            let row = &x[c * width..(c + 1) * width];
            let counts: Vec<u32> = match model {
                LnModel::Lnm => {
                    let mut e: Vec<f64> = row.iter().map(|v| v.exp()).collect();
                    e.push(1.0);
                    let s: f64 = e.iter().sum();
                    let m = totals[0] * (-eta[c]).exp();
                    let lam = draw::gamma(&mut rng, totals[1], m / totals[1]);
                    let mut left = draw::poisson(&mut rng, lam) as u64;
                    let mut rest = 1.0;
                    e.iter()
                        .map(|ej| {
                            let q = (ej / s / rest).clamp(0.0, 1.0);
                            let k = rand_distr::Binomial::new(left, q).map_or(0, |b| rng.sample(b));
                            left -= k;
                            rest -= ej / s;
                            k as u32
                        })
                        .collect()
                }
                _ => (0..g)
                    .map(|j| {
                        let m = (row[j] - eta[c]).exp();
                        let lam = if model == LnModel::Nbln {
                            draw::gamma(&mut rng, r[j], m / r[j])
                        } else {
                            m
                        };
                        draw::poisson(&mut rng, lam) as u32
                    })
                    .collect(),
            };
            for (j, &k) in counts.iter().enumerate() {
                if k > 0 {
                    idx.push(j as i32);
                    val.push(k as f64);
                }
            }
            p.push(idx.len() as i32);
        }
        let data = CountMatrix::from_csc(g, c_n, &p, &idx, &val).unwrap();
        (data, x, eta)
    }

    /// The true latents, `n` identical draws per cell.
    fn truth_source<'a>(
        x: &'a [f64],
        eta: &'a [f64],
        width: usize,
        n: usize,
    ) -> impl Fn(&[usize], Option<&[usize]>) -> Result<Latents> + 'a {
        move |cells, coords| {
            let mut xs = Vec::new();
            for &c in cells {
                for j in 0..width {
                    xs.extend(std::iter::repeat_n(x[c * width + j], n));
                }
            }
            let es = cells
                .iter()
                .flat_map(|&c| std::iter::repeat_n(eta[c], n))
                .collect();
            let lat = Latents {
                n,
                g: width,
                x: xs,
                eta: es,
            };
            Ok(match coords {
                Some(cs) => lat.select(cs),
                None => lat,
            })
        }
    }

    #[test]
    fn cdf_pairs_sum_the_pmf() {
        for &(u, lam) in &[(0u32, 0.3), (3, 2.5), (12, 9.0)] {
            let pmf = |k: u32| {
                (-lam + k as f64 * f64::ln(lam) - crate::math::lgamma(k as f64 + 1.0)).exp()
            };
            let hi: f64 = (0..=u).map(pmf).sum();
            let (a, b) = poisson_pair(u, lam);
            assert!((b - hi).abs() < 1e-10 && (a - (hi - pmf(u))).abs() < 1e-10);
        }
        for &(u, r, m) in &[(0u32, 0.7, 2.0), (5, 3.0, 4.0), (20, 1.5, 15.0)] {
            let p: f64 = m / (m + r);
            let pmf = |k: u32| {
                let k = k as f64;
                (crate::math::lgamma(k + r) - crate::math::lgamma(r) - crate::math::lgamma(k + 1.0)
                    + r * (1.0 - p).ln()
                    + k * p.ln())
                .exp()
            };
            let hi: f64 = (0..=u).map(pmf).sum();
            let (a, b) = nb_pair(u, r, m);
            assert!((b - hi).abs() < 1e-10 && (a - (hi - pmf(u))).abs() < 1e-10);
        }
    }

    #[test]
    fn residuals_under_the_true_latents_are_standard_normal_and_ppc_is_calibrated() {
        let (c_n, g) = (1500, 6);
        let r = [0.8, 2.0, 5.0, 1.2, 3.0, 10.0];
        let totals = [400.0, 6.0];
        for model in [LnModel::Pln, LnModel::Nbln, LnModel::Lnm] {
            let (data, x, eta) = simulate(model, c_n, g, &r, &totals, 3);
            let lnm = model == LnModel::Lnm;
            let width = if lnm { g - 1 } else { g };
            let obs = LnObs {
                model,
                r: if model == LnModel::Nbln { &r } else { &[] },
                totals: if lnm { &totals } else { &[] },
                reference: lnm.then_some(g - 1),
            };
            let genes: Vec<usize> = (0..g).collect();
            let res = quantile_residuals(
                &obs,
                &data,
                &genes,
                false,
                1e-9,
                1,
                truth_source(&x, &eta, width, 1),
                7,
                Ctl::none(),
            )
            .unwrap();
            for j in 0..g {
                assert!(
                    res.mean[j].abs() < 0.1,
                    "{model:?} gene {j}: mean {}",
                    res.mean[j]
                );
                assert!(
                    (res.variance[j] - 1.0).abs() < 0.12,
                    "{model:?} gene {j}: variance {}",
                    res.variance[j]
                );
                assert!(
                    res.ks_distance[j] < 0.05,
                    "{model:?} gene {j}: KS {}",
                    res.ks_distance[j]
                );
            }
            let n = 100;
            let sc = ppc_scores(
                &obs,
                &data,
                &genes,
                0.95,
                None,
                n,
                truth_source(&x, &eta, width, n),
                9,
                Ctl::none(),
            )
            .unwrap();
            let worst = sc.calibration_failure.iter().cloned().fold(0.0, f64::max);
            assert!(
                worst <= 0.35,
                "{model:?}: calibration failures {:?}",
                sc.calibration_failure
            );
            // A wrong capture shifts every count: the checks see it.
            let wrong: Vec<f64> = eta.iter().map(|e| e + 0.7).collect();
            let bad = quantile_residuals(
                &obs,
                &data,
                &genes,
                false,
                1e-9,
                1,
                truth_source(&x, &wrong, width, 1),
                7,
                Ctl::none(),
            )
            .unwrap();
            let avg = bad.mean.iter().sum::<f64>() / g as f64;
            assert!(
                avg > 0.2 && bad.mean.iter().all(|m| *m > 0.1),
                "{model:?}: {:?}",
                bad.mean
            );
        }
    }

    #[test]
    fn residuals_do_not_depend_on_threads_and_genes_are_checked() {
        let (data, x, eta) = simulate(LnModel::Nbln, 300, 5, &[1.0; 5], &[], 4);
        let r = [1.0; 5];
        let obs = LnObs {
            model: LnModel::Nbln,
            r: &r,
            totals: &[],
            reference: None,
        };
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| {
                    quantile_residuals(
                        &obs,
                        &data,
                        &[4, 1],
                        true,
                        1e-6,
                        1,
                        truth_source(&x, &eta, 5, 1),
                        2,
                        Ctl::none(),
                    )
                    .unwrap()
                })
        };
        assert_eq!(run(1), run(2));
        let err = quantile_residuals(
            &obs,
            &data,
            &[1, 1],
            false,
            1e-6,
            1,
            truth_source(&x, &eta, 5, 1),
            2,
            Ctl::none(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("more than once"), "{err}");
    }
}
