//! Analyses of log-normal-family fits given latent values, whatever engine
//! inferred them (the Laplace approximation's per-cell Gaussians, a VAE's
//! decoder): posterior predictive counts and log-likelihoods by cell or by
//! gene.
//!
//! Every cell's random stream derives from the seed and the cell's index, so
//! subsets and chunks of cells give the same draws.

use crate::data::CountMatrix;
use crate::dist::draw;
use crate::error::Result;
use crate::math::lgamma;
use crate::models::lognormal::lnm::{softmax_alr, totals};
use crate::models::lognormal::obs::{NegBin, Obs, Poisson};
use crate::models::lognormal::LnModel;
use crate::posterior::By;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

pub mod gof;

/// The observation side of a fitted log-normal model.
pub struct LnObs<'a> {
    pub model: LnModel,
    /// NBLN dispersions (empty otherwise).
    pub r: &'a [f64],
    /// LNM `(μ_T, r_T)` (empty otherwise).
    pub totals: &'a [f64],
    /// LNM reference gene (the latents cover the other genes).
    pub reference: Option<usize>,
}

impl LnObs<'_> {
    fn with_obs<T>(&self, f: impl FnOnce(&dyn Obs) -> T) -> T {
        match self.model {
            LnModel::Pln | LnModel::Lnm => f(&Poisson),
            LnModel::Nbln => f(&NegBin::new(self.r)),
        }
    }

    /// Full-gene composition `softmax([y, 0])` (reference inserted) of an LNM cell.
    pub(crate) fn composition(&self, y: &[f64]) -> Vec<f64> {
        let mut rho = vec![0.0; y.len()];
        let (_, rho_ref) = softmax_alr(y, &mut rho);
        rho.insert(self.reference.unwrap_or(y.len()), rho_ref);
        rho
    }

    /// The counts of `genes` (distinct) in one LNM draw: total `N ~ NB(mean
    /// μ_T e^{−η}, r_T)`, then the genes' share of `Multinomial(N, ρ)` by
    /// sequential binomials over `genes` only (their joint law is the
    /// multinomial's marginal; the other genes are never drawn).
    fn lnm_draw(&self, y: &[f64], eta: f64, genes: &[usize], rng: &mut ChaCha8Rng) -> Vec<f64> {
        let rho = self.composition(y);
        let (mu_t, r_t) = (self.totals[0], self.totals[1]);
        let mean = mu_t * (-eta).clamp(-30.0, 30.0).exp();
        let lam = draw::gamma(rng, r_t, mean / r_t);
        let mut left = draw::poisson(rng, lam) as u64;
        let mut rest = 1.0;
        let every = genes.len() == rho.len();
        let mut out = vec![0.0; genes.len()];
        for (i, &gi) in genes.iter().enumerate() {
            if left == 0 {
                break;
            }
            let p = rho[gi];
            let q = if every && i + 1 == rho.len() {
                1.0
            } else {
                (p / rest).clamp(0.0, 1.0)
            };
            let x = rand_distr::Binomial::new(left, q).map_or(0, |b| rng.sample(b));
            out[i] = x as f64;
            left -= x;
            rest -= p;
        }
        out
    }
}

/// Latent values of some cells, `n` per cell (`n = 1`: one setting, e.g. the
/// MAP, shared by every draw): `x` at `(cell·g + gene)·n + s` (log-rates, or
/// LNM log-ratios), capture `η` at `cell·n + s` (empty without capture).
pub struct Latents {
    pub n: usize,
    pub g: usize,
    pub x: Vec<f64>,
    pub eta: Vec<f64>,
}

impl Latents {
    #[inline]
    pub(crate) fn x(&self, ci: usize, gi: usize, s: usize) -> f64 {
        let s = if self.n == 1 { 0 } else { s };
        self.x[(ci * self.g + gi) * self.n + s]
    }
    /// All latent values of row `ci` in draw `s`.
    pub(crate) fn row(&self, ci: usize, s: usize) -> Vec<f64> {
        (0..self.g).map(|gi| self.x(ci, gi, s)).collect()
    }
    /// These latents at the coordinates `coords` only, in that order.
    pub fn select(&self, coords: &[usize]) -> Latents {
        let (n, rows) = (self.n, self.x.len() / (self.g * self.n).max(1));
        let mut x = Vec::with_capacity(rows * coords.len() * n);
        for ci in 0..rows {
            for &gi in coords {
                let at = (ci * self.g + gi) * n;
                x.extend_from_slice(&self.x[at..at + n]);
            }
        }
        Latents {
            n,
            g: coords.len(),
            x,
            eta: self.eta.clone(),
        }
    }

    #[inline]
    pub(crate) fn eta(&self, ci: usize, s: usize) -> f64 {
        if self.eta.is_empty() {
            return 0.0;
        }
        let s = if self.n == 1 { 0 } else { s };
        self.eta[ci * self.n + s]
    }
}

/// A reproducible random stream for item `c` of a seeded computation (SplitMix64).
pub(crate) fn cell_rng(seed: u64, c: usize) -> ChaCha8Rng {
    let mut z = seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// `n` count draws of `genes` for each of `cells` (the rows of `lat`), one
/// per latent draw: values `(s, cell, gene)` at `(cell·|genes| + gene)·n + s`.
pub fn predictive(
    obs: &LnObs<'_>,
    lat: &Latents,
    cells: &[usize],
    genes: &[usize],
    n: usize,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    let ng = genes.len();
    crate::limits::check_values("n_samples", (cells.len() * ng) as f64 * n as f64)?;
    let work = ctl.work(cells.len());
    // LNM draws only the asked-for genes when they are distinct, else all.
    let distinct = {
        let mut seen = std::collections::HashSet::new();
        genes.iter().all(|g| seen.insert(*g)).then_some(genes)
    };
    let all: Vec<usize> = if distinct.is_none() && obs.model == LnModel::Lnm {
        (0..lat.g + 1).collect()
    } else {
        Vec::new()
    };
    let out: Vec<Vec<f64>> = cells
        .par_iter()
        .enumerate()
        .map(|(ci, &c)| {
            if work.stopped() {
                return Vec::new();
            }
            work.tick();
            let mut rng = cell_rng(seed ^ 0x7070_7063, c);
            let mut v = vec![0.0; ng * n];
            if obs.model == LnModel::Lnm {
                for s in 0..n {
                    let y = lat.row(ci, s);
                    let counts = match &distinct {
                        Some(gs) => obs.lnm_draw(&y, lat.eta(ci, s), gs, &mut rng),
                        None => obs.lnm_draw(&y, lat.eta(ci, s), &all, &mut rng),
                    };
                    for (j, &gi) in genes.iter().enumerate() {
                        v[j * n + s] = match &distinct {
                            Some(_) => counts[j],
                            None => counts[gi],
                        };
                    }
                }
                return v;
            }
            for s in 0..n {
                let eta = lat.eta(ci, s);
                for (j, &gi) in genes.iter().enumerate() {
                    let m = (lat.x(ci, gi, s) - eta).clamp(-50.0, 50.0).exp();
                    let lam = match obs.model {
                        LnModel::Pln | LnModel::Lnm => m,
                        LnModel::Nbln => {
                            let r = obs.r[gi].max(1e-6);
                            draw::gamma(&mut rng, r, m / r)
                        }
                    };
                    v[j * n + s] = draw::poisson(&mut rng, lam);
                }
            }
            v
        })
        .collect();
    work.finish(out.concat())
}

/// Per-cell compositions: the share of each of `genes` in the softmax over
/// all genes of every latent row (`lat` holds every coordinate; LNM's
/// reference is inserted). Capture shifts every log-rate alike and cancels.
/// Values `(s, row, gene)` at `(row·|genes| + gene)·n + s`.
pub fn fractions(obs: &LnObs<'_>, lat: &Latents, genes: &[usize]) -> Vec<f64> {
    let (n, ng) = (lat.n, genes.len());
    let rows = lat.x.len() / (lat.g * n).max(1);
    let mut out = vec![0.0; rows * ng * n];
    out.par_chunks_mut((ng * n).max(1))
        .enumerate()
        .for_each(|(ci, o)| {
            for s in 0..n {
                let y = lat.row(ci, s);
                let rho = match obs.model {
                    LnModel::Lnm => obs.composition(&y),
                    _ => {
                        let m = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = y.iter().map(|v| (v - m).exp()).collect();
                        let t: f64 = e.iter().sum();
                        e.into_iter().map(|v| v / t).collect()
                    }
                };
                for (j, &g) in genes.iter().enumerate() {
                    o[j * n + s] = rho[g];
                }
            }
        });
    out
}

/// `n` latent rows of new cells from the population: `μ + W z_s + √d ε_s`
/// with `z_s` the rows of `z` (`n × k`, e.g. prior draws) and `ε` from
/// `seed` (one "cell" with `n` draws; `d` empty: no diagonal).
pub fn population_latents(
    mu: &[f64],
    w: &[f64],
    d: &[f64],
    z: &[f64],
    n: usize,
    seed: u64,
) -> Latents {
    let g = mu.len();
    let k = z.len().checked_div(n).unwrap_or(0);
    let mut rng = cell_rng(seed ^ 0x706f_7075, 0);
    let mut x = vec![0.0; g * n];
    for s in 0..n {
        let zs = &z[s * k..(s + 1) * k];
        for i in 0..g {
            let mut y = mu[i] + (0..k).map(|p| w[i * k + p] * zs[p]).sum::<f64>();
            if let Some(di) = d.get(i) {
                y += di.max(0.0).sqrt() * rng.sample::<f64, _>(rand_distr::StandardNormal);
            }
            x[i * n + s] = y;
        }
    }
    Latents {
        n,
        g,
        x,
        eta: Vec::new(),
    }
}

/// Log-likelihoods for each latent draw, by cell (`(s, cell)` at
/// `cell·n + s`, see [`cell_loglik`]) or by gene over `cells` (`(s, gene)`
/// at `gene·n + s`, see [`gene_loglik`]).
pub fn loglik(
    obs: &LnObs<'_>,
    data: &CountMatrix,
    lat: &Latents,
    cells: &[usize],
    by: By,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    match by {
        By::Cell => cell_loglik(obs, data, lat, cells, ctl),
        By::Gene => gene_loglik(obs, data, lat, cells, ctl),
    }
}

/// Cells per sequentially summed chunk of [`gene_loglik`]: the chunks run in
/// parallel and are added in order, so sums do not depend on the threads.
const GENE_SUM_CHUNK: usize = 64;

/// Per-gene log-likelihood `Σ_c ln p(u_cg | x_c, η_c)` over `cells` for each
/// latent draw: `(s, gene)` at `gene·n + s`. PLN and NBLN: the full pmf of
/// each count. LNM: `Σ_c u_cg ln ρ_cg`, the gene's share of the multinomial;
/// the coefficient `ln N_c! − Σ_g ln u_cg!` and the NB of the totals belong
/// to no gene and are left out (so by-gene values do not add up to by-cell
/// ones for LNM).
pub fn gene_loglik(
    obs: &LnObs<'_>,
    data: &CountMatrix,
    lat: &Latents,
    cells: &[usize],
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    let (nn, g) = (lat.n, data.n_genes);
    crate::limits::check_values("n_samples", g as f64 * nn as f64 * 2.0)?;
    let work = ctl.work(cells.len());
    let partial: Vec<Vec<f64>> = cells
        .par_chunks(GENE_SUM_CHUNK)
        .enumerate()
        .map(|(k, chunk)| {
            let mut acc = vec![0.0; g * nn];
            let mut u = vec![0.0; g];
            for (j, &c) in chunk.iter().enumerate() {
                if work.stopped() {
                    return Vec::new();
                }
                work.tick();
                let ci = k * GENE_SUM_CHUNK + j;
                data.dense_row(c, &mut u);
                for s in 0..nn {
                    if obs.model == LnModel::Lnm {
                        let y = lat.row(ci, s);
                        let rho = obs.composition(&y);
                        for (gi, (&uu, &p)) in u.iter().zip(&rho).enumerate() {
                            if uu > 0.0 {
                                acc[gi * nn + s] += uu * p.ln();
                            }
                        }
                        continue;
                    }
                    let eta = lat.eta(ci, s);
                    let pln = obs.model == LnModel::Pln;
                    obs.with_obs(|o| {
                        for (gi, &uu) in u.iter().enumerate() {
                            let lnfact = if pln { lgamma(uu + 1.0) } else { 0.0 };
                            acc[gi * nn + s] += o.value(gi, uu, lat.x(ci, gi, s) - eta) - lnfact;
                        }
                    });
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0.0; g * nn];
    for p in &partial {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
    work.finish(out)
}

/// Per-cell log-likelihood `Σ_g ln p(u_cg | x, η)` (full pmf, `ln u!`
/// included) for each latent draw: `(s, cell)` at `cell·n + s`.
pub fn cell_loglik(
    obs: &LnObs<'_>,
    data: &CountMatrix,
    lat: &Latents,
    cells: &[usize],
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    let (g, nn) = (lat.g, lat.n);
    let work = ctl.work(cells.len());
    let out: Vec<Vec<f64>> = cells
        .par_iter()
        .enumerate()
        .map(|(ci, &c)| {
            if work.stopped() {
                return Vec::new();
            }
            work.tick();
            let mut u = vec![0.0; data.n_genes];
            data.dense_row(c, &mut u);
            let lnfact: f64 = u.iter().map(|&v| lgamma(v + 1.0)).sum();
            if obs.model == LnModel::Lnm {
                // Multinomial (with its coefficient) plus the NB totals.
                let n_tot: f64 = u.iter().sum();
                let (mu_t, r_t) = (obs.totals[0], obs.totals[1]);
                return (0..nn)
                    .map(|s| {
                        let y = lat.row(ci, s);
                        let rho = obs.composition(&y);
                        let comp: f64 = u
                            .iter()
                            .zip(&rho)
                            .map(|(&uu, &p)| if uu > 0.0 { uu * p.ln() } else { 0.0 })
                            .sum();
                        let rho_t = mu_t * (-lat.eta(ci, s)).clamp(-30.0, 30.0).exp();
                        comp - lnfact + totals(n_tot, rho_t, r_t).0
                    })
                    .collect::<Vec<f64>>();
            }
            let poisson_const = if obs.model == LnModel::Pln {
                lnfact
            } else {
                0.0
            };
            obs.with_obs(|o| {
                (0..nn)
                    .map(|s| {
                        let eta = lat.eta(ci, s);
                        let total: f64 = (0..g)
                            .map(|gi| o.value(gi, u[gi], lat.x(ci, gi, s) - eta))
                            .sum();
                        total - poisson_const
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    work.finish(out.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 genes × 150 cells (more than one summing chunk), latents with two draws per cell.
    fn fixture() -> (CountMatrix, Latents) {
        let (g, c, n) = (3, 150, 2);
        let mut p = vec![0i32];
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        for cell in 0..c {
            for gene in 0..g {
                let u = ((cell * 7 + gene * 3) % 5) as f64;
                if u > 0.0 {
                    idx.push(gene as i32);
                    val.push(u);
                }
            }
            p.push(idx.len() as i32);
        }
        let data = CountMatrix::from_csc(g, c, &p, &idx, &val).unwrap();
        let x = (0..c * g * n)
            .map(|i| ((i % 11) as f64) * 0.15 - 0.3)
            .collect();
        let eta = (0..c * n).map(|i| ((i % 3) as f64) * 0.1).collect();
        (data, Latents { n, g, x, eta })
    }

    #[test]
    fn gene_loglik_adds_up_to_cell_loglik_and_matches_the_pmf() {
        let (data, lat) = fixture();
        let cells: Vec<usize> = (0..data.n_cells).collect();
        let r = [2.0, 0.5, 30.0];
        for model in [LnModel::Pln, LnModel::Nbln] {
            let obs = LnObs {
                model,
                r: &r,
                totals: &[],
                reference: None,
            };
            let by_cell = loglik(&obs, &data, &lat, &cells, By::Cell, Ctl::none()).unwrap();
            let by_gene = loglik(&obs, &data, &lat, &cells, By::Gene, Ctl::none()).unwrap();
            for s in 0..lat.n {
                let tc: f64 = (0..data.n_cells).map(|c| by_cell[c * lat.n + s]).sum();
                let tg: f64 = (0..data.n_genes).map(|g| by_gene[g * lat.n + s]).sum();
                assert!(
                    (tc - tg).abs() < 1e-9 * tc.abs(),
                    "{model:?} draw {s}: {tc} vs {tg}"
                );
            }
            if model == LnModel::Pln {
                // Gene 1, draw 0, by hand: Σ_c u ℓ − e^ℓ − ln u!.
                let mut u = vec![0.0; data.n_genes];
                let mut want = 0.0;
                for c in 0..data.n_cells {
                    data.dense_row(c, &mut u);
                    let l = lat.x(c, 1, 0) - lat.eta(c, 0);
                    want += u[1] * l - l.exp() - lgamma(u[1] + 1.0);
                }
                assert!((by_gene[lat.n] - want).abs() < 1e-9 * want.abs());
            }
        }
    }

    #[test]
    fn gene_loglik_does_not_depend_on_threads() {
        let (data, lat) = fixture();
        let cells: Vec<usize> = (0..data.n_cells).collect();
        let obs = LnObs {
            model: LnModel::Pln,
            r: &[],
            totals: &[],
            reference: None,
        };
        let run = |t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| gene_loglik(&obs, &data, &lat, &cells, Ctl::none()).unwrap())
        };
        assert_eq!(run(1), run(4));
    }

    #[test]
    fn fractions_are_each_rows_softmax_and_the_population_centres_on_mu() {
        // Two rows, two draws each, three log-rates.
        let lat = Latents {
            n: 2,
            g: 3,
            x: vec![0.0, 1.0, 0.5, 0.5, -1.0, 2.0, 1.0, 0.0, 0.3, 0.3, 0.2, 0.1],
            eta: vec![0.4, 0.4, 0.1, 0.1],
        };
        let pln = LnObs {
            model: LnModel::Pln,
            r: &[],
            totals: &[],
            reference: None,
        };
        let all = pln_fractions_all(&pln, &lat);
        for ci in 0..2 {
            for s in 0..2 {
                let y = lat.row(ci, s);
                let t: f64 = y.iter().map(|v| v.exp()).sum();
                for (gi, yv) in y.iter().enumerate() {
                    let got = all[(ci * 3 + gi) * 2 + s];
                    assert!((got - yv.exp() / t).abs() < 1e-14);
                }
            }
        }
        // A subset reads the same shares; LNM inserts its reference.
        let sub = fractions(&pln, &lat, &[2]);
        assert_eq!(sub, vec![all[4], all[5], all[10], all[11]]);
        let lnm = LnObs {
            model: LnModel::Lnm,
            r: &[],
            totals: &[10.0, 2.0],
            reference: Some(1),
        };
        let four = fractions(&lnm, &lat, &[0, 1, 2, 3]);
        for ci in 0..2 {
            for s in 0..2 {
                let sum: f64 = (0..4).map(|j| four[(ci * 4 + j) * 2 + s]).sum();
                assert!((sum - 1.0).abs() < 1e-14);
                let y = lat.row(ci, s);
                // Gene 1 is the reference (log-ratio 0); gene 2 reads y[1].
                let ratio = four[(ci * 4 + 2) * 2 + s] / four[(ci * 4 + 1) * 2 + s];
                assert!((ratio - y[1].exp()).abs() < 1e-12);
            }
        }
        // New cells of a population without loadings scatter around softmax(μ).
        let mu = [0.0, 1.0, 2.0];
        let n = 20_000;
        let pop = population_latents(&mu, &[0.0; 3], &[0.01; 3], &vec![0.0; n], n, 3);
        let rho = fractions(&pln, &pop, &[0, 1, 2]);
        let t: f64 = mu.iter().map(|v| f64::exp(*v)).sum();
        for j in 0..3 {
            let m = rho[j * n..(j + 1) * n].iter().sum::<f64>() / n as f64;
            assert!((m - mu[j].exp() / t).abs() < 0.005, "gene {j}: {m}");
        }
    }

    fn pln_fractions_all(obs: &LnObs<'_>, lat: &Latents) -> Vec<f64> {
        fractions(obs, lat, &[0, 1, 2])
    }
}
