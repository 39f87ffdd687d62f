//! Per-cell posteriors of a Laplace fit: Gaussian around each cell's MAP
//! with the inverse of the negative Hessian as covariance, sampled exactly
//! through its square root (no G × G matrix):
//! `x̃ = x̂ + m^{−1/2} ⊙ ε₁ + (1/m) ⊙ V L_S^{−T} ε₂` has covariance `A⁻¹`
//! (`A = M − V K⁻¹ Vᵀ`, `S = K − Vᵀ M⁻¹ V = L_S L_Sᵀ`). With a free capture
//! latent, `η̃ = η̂ + δ`, `δ ~ N(0, 1/s)` (Schur complement) and `x̃` shifts
//! by `A⁻¹ a δ`. Every cell's random stream derives from the seed and the
//! cell's index, so subsets and chunks give the same draws.

use super::cell::{self, EtaMode};
use super::lnm;
use super::woodbury::{NewtonFactor, SigmaFactor};
use super::{Capture, EtaSpec, LnModel};
use crate::data::CountMatrix;
use crate::error::{CoreError, Result};
use crate::models::lognormal::lnm::softmax_alr;
use crate::models::lognormal::obs::{NegBin, Obs, Poisson};
use crate::posterior::lognormal::{self, cell_rng, Latents, LnObs};
use crate::posterior::By;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::RngExt;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// A fitted log-normal model, as stored by the results object.
pub struct Fitted<'a> {
    pub model: LnModel,
    pub k: usize,
    pub mu: &'a [f64],
    pub w: &'a [f64],
    pub d: &'a [f64],
    pub r: &'a [f64],
    /// MAP latents, cell-major `C × G`.
    pub latents: &'a [f64],
    /// MAP (or frozen) `η` per cell; empty without capture.
    pub eta: &'a [f64],
    pub capture: &'a Capture,
    /// LNM: `(μ_T, r_T)` and the reference gene (μ, W, d, latents cover the others).
    pub totals: &'a [f64],
    pub reference: Option<usize>,
    /// Low-rank LNM (`y = μ + W z`): draws are `ŷ + W v`, `v ~ N(0, (WᵀCW + I)⁻¹)`.
    pub low_rank: bool,
}

impl Fitted<'_> {
    /// The observation model of the fit (what turns latents into counts).
    fn obs(&self) -> LnObs<'_> {
        LnObs {
            model: self.model,
            r: self.r,
            totals: self.totals,
            reference: self.reference,
        }
    }

    /// The MAP latents of `cells` as one "draw" per cell.
    fn map_latents(&self, cells: &[usize]) -> Latents {
        let g = self.mu.len();
        Latents {
            n: 1,
            g,
            x: cells
                .iter()
                .flat_map(|&c| self.latents[c * g..(c + 1) * g].iter().copied())
                .collect(),
            eta: if self.eta.is_empty() {
                Vec::new()
            } else {
                cells.iter().map(|&c| self.eta[c]).collect()
            },
        }
    }

    fn check(&self, data: &CountMatrix) -> Result<()> {
        let g = self.mu.len();
        let g_data = if self.model == LnModel::Lnm { g + 1 } else { g };
        if self.model == LnModel::Lnm && (self.reference.is_none() || self.totals.len() != 2) {
            return Err(CoreError::arg(
                "fit",
                "an LNM fit needs its totals and reference gene",
            ));
        }
        if data.n_genes != g_data || self.latents.len() != g * data.n_cells {
            return Err(CoreError::arg(
                "x",
                "does not match the genes and cells of the fit",
            ));
        }
        Ok(())
    }
    fn with_obs<T>(&self, f: impl FnOnce(&dyn Obs) -> T) -> T {
        match self.model {
            // LNM cells do not use an `Obs` (see `sample_cell_lnm`).
            LnModel::Pln | LnModel::Lnm => f(&Poisson),
            LnModel::Nbln => f(&NegBin::new(self.r)),
        }
    }
}

/// `n` draws of cell `c`'s latent log-rates (`n × G`, then `n` draws of η).
#[allow(clippy::too_many_arguments)]
fn sample_cell(
    obs: &dyn Obs,
    f: &Fitted<'_>,
    sig: &SigmaFactor,
    u: &[f64],
    c: usize,
    mode: EtaMode,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let (g, k) = (f.mu.len(), f.k);
    let xh = &f.latents[c * g..(c + 1) * g];
    let eh = if f.eta.is_empty() { 0.0 } else { f.eta[c] };
    let off = if mode == EtaMode::None { 0.0 } else { eh };
    let a: Vec<f64> = (0..g).map(|i| obs.terms(i, u[i], xh[i] - off).1).collect();
    let nf = NewtonFactor::new(sig, &a, 0.0)?;
    // A⁻¹ a and s for a free η.
    let (aa, s) = match mode {
        EtaMode::Free { sigma, .. } => cell::schur(&nf, sig, f.w, &a, sigma, 0.0),
        _ => (Vec::new(), f64::NAN),
    };
    let mut xs = Vec::with_capacity(n * g);
    let mut es = Vec::with_capacity(n);
    let (mut e2, mut z) = (vec![0.0; k], vec![0.0; g]);
    for _ in 0..n {
        nf.sample(sig, f.w, rng, &mut e2, &mut z);
        let delta = if aa.is_empty() {
            0.0
        } else {
            rng.sample::<f64, _>(StandardNormal) / s.sqrt()
        };
        for gi in 0..g {
            let shift = if aa.is_empty() { 0.0 } else { aa[gi] * delta };
            xs.push(xh[gi] + z[gi] + shift);
        }
        es.push(if aa.is_empty() {
            eh
        } else {
            (eh + delta).max(cell::ETA_MIN)
        });
    }
    Some((xs, es))
}

/// `n` draws of an LNM cell's log-ratios from `N(ŷ, (A − Nρρᵀ)⁻¹)`: a draw
/// `z ~ N(0, A⁻¹)` (as for PLN) plus `c A⁻¹ρ (ρᵀz)` with
/// `2c + c² t = N/(1 − N t)`, `t = ρᵀA⁻¹ρ`; and of η (LNMVCP) from its
/// scalar Gaussian.
#[allow(clippy::too_many_arguments)]
fn sample_cell_lnm(
    f: &Fitted<'_>,
    sig: &SigmaFactor,
    u: &[f64],
    c: usize,
    mode: EtaMode,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let g = f.mu.len();
    f.reference?;
    let n_tot: f64 = u.iter().sum();
    let yh = &f.latents[c * g..(c + 1) * g];
    let mut rho = vec![0.0; g];
    softmax_alr(yh, &mut rho);
    let ys = if f.low_rank {
        sample_low_rank(f, &rho, n_tot, yh, n, rng)?
    } else {
        sample_learned(f, sig, &rho, n_tot, yh, n, rng)?
    };
    // LNMVCP: η from its scalar Gaussian (the Hessian is block-diagonal).
    let eh = if f.eta.is_empty() { 0.0 } else { f.eta[c] };
    let es = match mode {
        EtaMode::Free { sigma, .. } => {
            let (mu_t, r_t) = (f.totals[0], f.totals[1]);
            let rho_t = mu_t * (-eh).clamp(-30.0, 30.0).exp();
            let v = r_t + rho_t;
            let h = r_t * rho_t * (r_t + n_tot) / (v * v) + 1.0 / (sigma * sigma);
            (0..n)
                .map(|_| (eh + rng.sample::<f64, _>(StandardNormal) / h.sqrt()).max(cell::ETA_MIN))
                .collect()
        }
        _ => vec![eh; n],
    };
    Some((ys, es))
}

/// Learned-d LNM draws `ŷ + z + c A⁻¹ρ (ρᵀz)`, `z ~ N(0, A⁻¹)`.
fn sample_learned(
    f: &Fitted<'_>,
    sig: &SigmaFactor,
    rho: &[f64],
    n_tot: f64,
    yh: &[f64],
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Option<Vec<f64>> {
    let (g, k) = (f.mu.len(), f.k);
    let a: Vec<f64> = rho.iter().map(|r| n_tot * r).collect();
    let nf = NewtonFactor::new(sig, &a, 0.0)?;
    let mut ar = vec![0.0; g];
    nf.solve(sig, f.w, rho, &mut ar);
    let t: f64 = rho.iter().zip(&ar).map(|(p, q)| p * q).sum();
    let q = (1.0 - n_tot * t).max(1e-12);
    let coef = if t > 0.0 {
        (1.0 / q.sqrt() - 1.0) / t
    } else {
        0.0
    };
    let mut ys = Vec::with_capacity(n * g);
    let (mut e2, mut z) = (vec![0.0; k], vec![0.0; g]);
    for _ in 0..n {
        nf.sample(sig, f.w, rng, &mut e2, &mut z);
        let rz: f64 = rho.iter().zip(&z).map(|(p, q)| p * q).sum();
        for gi in 0..g {
            ys.push(yh[gi] + z[gi] + coef * ar[gi] * rz);
        }
    }
    Some(ys)
}

/// Low-rank LNM draws `ŷ + W L⁻ᵀ ε`, `L Lᵀ = Wᵀ C W + I` at `ŷ`, `C = N(diag ρ − ρρᵀ)`.
fn sample_low_rank(
    f: &Fitted<'_>,
    rho: &[f64],
    n_tot: f64,
    yh: &[f64],
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Option<Vec<f64>> {
    let (g, k) = (f.mu.len(), f.k);
    let mut m = lnm::low_rank_hessian(f.w, rho, n_tot, k);
    if !super::woodbury::cholesky(&mut m, k) {
        return None;
    }
    let mut ys = Vec::with_capacity(n * g);
    let mut v = vec![0.0; k];
    for _ in 0..n {
        for x in v.iter_mut() {
            *x = rng.sample(StandardNormal);
        }
        super::woodbury::solve_lt(&m, k, &mut v);
        for i in 0..g {
            ys.push(yh[i] + (0..k).map(|j| f.w[i * k + j] * v[j]).sum::<f64>());
        }
    }
    Some(ys)
}

/// Latent draws of `cells`: values `(s, cell, gene)` at `(cell·G + gene)·n + s`
/// (draw fastest), and η draws at `cell·n + s` (empty without capture).
pub fn latent_draws(
    f: &Fitted<'_>,
    data: &CountMatrix,
    cells: &[usize],
    n: usize,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    f.check(data)?;
    crate::limits::check_values(
        "n_samples",
        2.0 * (cells.len() * f.mu.len()) as f64 * n as f64,
    )?;
    let work = ctl.work(cells.len());
    let (spec, _) = EtaSpec::new(f.capture, data)?;
    let sig = SigmaFactor::new(f.w, f.d, f.k)
        .ok_or_else(|| CoreError::arg("fit", "the covariance is not positive definite"))?;
    let g = f.mu.len();
    let per: Vec<Option<(Vec<f64>, Vec<f64>)>> = cells
        .par_iter()
        .map(|&c| {
            if work.stopped() {
                return None;
            }
            work.tick();
            let mut u = vec![0.0; data.n_genes];
            data.dense_row(c, &mut u);
            let mut rng = cell_rng(seed, c);
            if f.model == LnModel::Lnm {
                return sample_cell_lnm(f, &sig, &u, c, spec.mode[c], n, &mut rng);
            }
            f.with_obs(|obs| sample_cell(obs, f, &sig, &u, c, spec.mode[c], n, &mut rng))
        })
        .collect();
    work.finish(())?;
    let mut xs = vec![0.0; cells.len() * g * n];
    let mut es = Vec::new();
    for (ci, p) in per.into_iter().enumerate() {
        let (x, e) =
            p.ok_or_else(|| CoreError::arg("fit", "a cell's Hessian is not positive definite"))?;
        for s in 0..n {
            for gi in 0..g {
                xs[(ci * g + gi) * n + s] = x[s * g + gi];
            }
        }
        if !f.eta.is_empty() {
            es.extend(e);
        }
    }
    Ok((xs, es))
}

/// Count draws `(s, cell, gene)` at `(cell·|genes| + gene)·n + s`: at the
/// MAP latents (`use_map`: `n` count draws from the MAP) or with each draw's
/// own latent draw (Laplace uncertainty).
#[allow(clippy::too_many_arguments)]
pub fn predictive(
    f: &Fitted<'_>,
    data: &CountMatrix,
    cells: &[usize],
    genes: &[usize],
    n: usize,
    use_map: bool,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    f.check(data)?;
    let lat = if use_map {
        f.map_latents(cells)
    } else {
        let (x, eta) = latent_draws(f, data, cells, n, seed, ctl)?;
        Latents {
            n,
            g: f.mu.len(),
            x,
            eta,
        }
    };
    lognormal::predictive(&f.obs(), &lat, cells, genes, n, seed, ctl)
}

/// Per-cell log-likelihood `Σ_g ln p(u_cg | x, η)` (full pmf, `ln u!`
/// included): at the MAP (one value per cell) or for `n` latent draws
/// (`(s, cell)` at `cell·n + s`).
pub fn loglik(
    f: &Fitted<'_>,
    data: &CountMatrix,
    cells: &[usize],
    n: Option<(usize, u64)>,
    by: By,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    f.check(data)?;
    let lat = match n {
        None => f.map_latents(cells),
        Some((n, seed)) => {
            let (x, eta) = latent_draws(f, data, cells, n, seed, ctl)?;
            Latents {
                n,
                g: f.mu.len(),
                x,
                eta,
            }
        }
    };
    lognormal::loglik(&f.obs(), data, &lat, cells, by, ctl)
}

/// Replaces each latent row `x` by the model's prediction of a new
/// observation of its cell: `μ + W E[z | x]` (without `draw`) or `μ + W z +
/// √d ε` with `z ~ p(z | x)` and fresh `ε` (a mixed predictive: the cell's
/// low-rank part from its posterior, the per-gene part from its prior).
/// Goodness of fit needs this because a latent per (cell, gene) sees its
/// own count, so the plain posterior predictive hugs the data. A fit
/// without a diagonal (low-rank LNM) keeps its rows.
fn mixed_rows(
    f: &Fitted<'_>,
    lat: &mut Latents,
    cells: &[usize],
    draw: bool,
    seed: u64,
) -> Result<()> {
    let (g, k) = (f.mu.len(), f.k);
    if f.low_rank || f.d.len() != g || k == 0 {
        return Ok(());
    }
    // A = I + Wᵀ D⁻¹ W: z | x ~ N(A⁻¹ Wᵀ D⁻¹ (x − μ), A⁻¹).
    let dinv: Vec<f64> = f.d.iter().map(|d| 1.0 / d.max(1e-12)).collect();
    let mut a = vec![0.0; k * k];
    for i in 0..g {
        let wi = &f.w[i * k..(i + 1) * k];
        for p in 0..k {
            for q in 0..=p {
                a[p * k + q] += wi[p] * wi[q] * dinv[i];
            }
        }
    }
    for p in 0..k {
        a[p * k + p] += 1.0;
        for q in 0..p {
            a[q * k + p] = a[p * k + q];
        }
    }
    if !super::woodbury::cholesky(&mut a, k) {
        return Err(CoreError::arg(
            "fit",
            "its loadings do not give a positive definite posterior of z",
        ));
    }
    let n = lat.n;
    lat.x
        .par_chunks_mut(g * n)
        .zip(cells.par_iter())
        .for_each(|(xc, &c)| {
            let mut rng = cell_rng(seed ^ 0x6d69_7865, c);
            let (mut b, mut xi) = (vec![0.0; k], vec![0.0; k]);
            for s in 0..n {
                b.iter_mut().for_each(|v| *v = 0.0);
                for i in 0..g {
                    let r = (xc[i * n + s] - f.mu[i]) * dinv[i];
                    for p in 0..k {
                        b[p] += f.w[i * k + p] * r;
                    }
                }
                super::woodbury::chol_solve(&a, k, &mut b);
                if draw {
                    xi.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
                    super::woodbury::solve_lt(&a, k, &mut xi);
                    b.iter_mut().zip(&xi).for_each(|(z, e)| *z += e);
                }
                for i in 0..g {
                    let mut y = f.mu[i] + (0..k).map(|p| f.w[i * k + p] * b[p]).sum::<f64>();
                    if draw {
                        y += f.d[i].sqrt() * rng.sample::<f64, _>(StandardNormal);
                    }
                    xc[i * n + s] = y;
                }
            }
        });
    Ok(())
}

/// The mixed-predictive latents ([`mixed_rows`]) of `cells` from their MAP
/// (`draws = None`: `μ + W E[z | x̂]`) or from `n` posterior draws of
/// `seed`, at `coords` (`None`: all).
fn latents_of(
    f: &Fitted<'_>,
    data: &CountMatrix,
    cells: &[usize],
    coords: Option<&[usize]>,
    draws: Option<(usize, u64)>,
) -> Result<Latents> {
    let mut lat = match draws {
        None => f.map_latents(cells),
        Some((n, seed)) => {
            let (x, eta) = latent_draws(f, data, cells, n, seed, Ctl::none())?;
            Latents {
                n,
                g: f.mu.len(),
                x,
                eta,
            }
        }
    };
    mixed_rows(
        f,
        &mut lat,
        cells,
        draws.is_some(),
        draws.map_or(0, |d| d.1),
    )?;
    Ok(match coords {
        Some(cs) => lat.select(cs),
        None => lat,
    })
}

/// Per-cell compositions of `genes` in `cells` (see
/// [`lognormal::fractions`]): at the MAP latents or for `n` posterior
/// draws from `seed`; values `(s, cell, gene)` at `(cell·|genes| + gene)·n + s`.
pub fn fractions(
    f: &Fitted<'_>,
    data: &CountMatrix,
    cells: &[usize],
    genes: &[usize],
    draws: Option<(usize, u64)>,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    f.check(data)?;
    let n = draws.map_or(1, |d| d.0);
    crate::limits::check_values("n_samples", (cells.len() * genes.len()) as f64 * n as f64)?;
    let chunk = (4_000_000 / (data.n_genes * n).max(1)).max(1);
    let work = ctl.work(cells.len().div_ceil(chunk));
    let mut out = Vec::with_capacity(cells.len() * genes.len() * n);
    for part in cells.chunks(chunk) {
        if work.stopped() {
            break;
        }
        let lat = match draws {
            None => f.map_latents(part),
            Some((n, seed)) => {
                let (x, eta) = latent_draws(f, data, part, n, seed, Ctl::none())?;
                Latents {
                    n,
                    g: f.mu.len(),
                    x,
                    eta,
                }
            }
        };
        out.extend(lognormal::fractions(&f.obs(), &lat, genes));
        work.tick();
    }
    work.finish(out)
}

/// Compositions of `genes` in `n` new cells of the fitted population:
/// `softmax(μ + W z + √d ε)`, `z ~ N(0, I)` (LNM: the reference inserted);
/// values `(s, gene)` at `gene·n + s`.
pub fn population_fractions(
    f: &Fitted<'_>,
    genes: &[usize],
    n: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    crate::limits::check_values("n_samples", (n * f.mu.len()) as f64)?;
    let mut rng = cell_rng(seed, usize::MAX);
    let z: Vec<f64> = (0..n * f.k).map(|_| rng.sample(StandardNormal)).collect();
    let d: &[f64] = if f.low_rank { &[] } else { f.d };
    let lat = lognormal::population_latents(f.mu, f.w, d, &z, n, seed);
    Ok(lognormal::fractions(&f.obs(), &lat, genes))
}

/// Randomized quantile residuals of `genes` in every cell under the mixed
/// predictive ([`mixed_rows`]) from the MAP or averaged over `n` posterior
/// draws (see [`lognormal::gof::quantile_residuals`]).
#[allow(clippy::too_many_arguments)]
pub fn quantile_residuals(
    f: &Fitted<'_>,
    data: &CountMatrix,
    genes: &[usize],
    keep: bool,
    epsilon: f64,
    draws: Option<(usize, u64)>,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<crate::posterior::nb::gof::Residuals> {
    f.check(data)?;
    let n = draws.map_or(1, |d| d.0);
    lognormal::gof::quantile_residuals(
        &f.obs(),
        data,
        genes,
        keep,
        epsilon,
        n,
        |cells, coords| latents_of(f, data, cells, coords, draws),
        seed,
        ctl,
    )
}

/// PPC calibration scores of `genes`: `n_sets` data sets, each from one
/// mixed-predictive draw of every cell (see [`lognormal::gof::ppc_scores`]).
#[allow(clippy::too_many_arguments)]
pub fn ppc_scores(
    f: &Fitted<'_>,
    data: &CountMatrix,
    genes: &[usize],
    level: f64,
    max_bin: Option<usize>,
    n_sets: usize,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<crate::posterior::nb::gof::PpcScores> {
    f.check(data)?;
    lognormal::gof::ppc_scores(
        &f.obs(),
        data,
        genes,
        level,
        max_bin,
        n_sets,
        |cells, coords| latents_of(f, data, cells, coords, Some((n_sets, seed))),
        seed,
        ctl,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mixed predictive of a row: mean `μ + W E[z | x]`, variance
    /// `w_i² / A + d_i` with `A = 1 + Σ w²/d` (one factor).
    #[test]
    fn mixed_rows_draw_the_embedding_posterior_and_fresh_noise() {
        let (w, d, mu) = (
            [1.0, 0.5, -0.3, 0.8],
            [0.2, 0.1, 0.3, 0.2],
            [0.5, 1.0, -0.5, 0.0],
        );
        let x0 = [1.4, 1.2, -0.9, 0.9];
        let cap = Capture::None;
        let f = Fitted {
            model: LnModel::Pln,
            k: 1,
            mu: &mu,
            w: &w,
            d: &d,
            r: &[],
            latents: &x0,
            eta: &[],
            capture: &cap,
            totals: &[],
            reference: None,
            low_rank: false,
        };
        let a = 1.0 + (0..4).map(|i| w[i] * w[i] / d[i]).sum::<f64>();
        let zm = (0..4).map(|i| w[i] * (x0[i] - mu[i]) / d[i]).sum::<f64>() / a;
        let mut point = f.map_latents(&[0]);
        mixed_rows(&f, &mut point, &[0], false, 1).unwrap();
        for i in 0..4 {
            assert!((point.x[i] - (mu[i] + w[i] * zm)).abs() < 1e-12);
        }
        let n = 100_000;
        let mut lat = Latents {
            n,
            g: 4,
            x: x0.iter().flat_map(|&v| std::iter::repeat_n(v, n)).collect(),
            eta: Vec::new(),
        };
        mixed_rows(&f, &mut lat, &[0], true, 3).unwrap();
        for i in 0..4 {
            let col = &lat.x[i * n..(i + 1) * n];
            let m = col.iter().sum::<f64>() / n as f64;
            let v = col.iter().map(|y| (y - m).powi(2)).sum::<f64>() / n as f64;
            let want = w[i] * w[i] / a + d[i];
            assert!((m - point.x[i]).abs() < 0.01, "coord {i}: mean {m}");
            assert!(
                (v / want - 1.0).abs() < 0.03,
                "coord {i}: variance {v} vs {want}"
            );
        }
    }

    /// The square-root sampler's empirical covariance matches the dense `A⁻¹`.
    #[test]
    fn sampler_covariance_is_the_inverse_hessian() {
        let (g, k) = (6, 2);
        let (w, d) = crate::laplace::woodbury::test_loadings(g, k, 0.5, 0.1, 0.2);
        let mu = vec![0.5; g];
        let latents: Vec<f64> = (0..g).map(|i| 0.3 * i as f64).collect();
        let (p, idx, val) = (vec![0i32, 3], vec![0, 2, 5], vec![1.0, 4.0, 2.0]);
        let data = CountMatrix::from_csc(g, 1, &p, &idx, &val).unwrap();
        let cap = Capture::None;
        let f = Fitted {
            model: LnModel::Pln,
            k,
            mu: &mu,
            w: &w,
            d: &d,
            r: &[],
            latents: &latents,
            eta: &[],
            capture: &cap,
            totals: &[],
            reference: None,
            low_rank: false,
        };
        let n = 200_000;
        let (xs, _) = latent_draws(&f, &data, &[0], n, 7, Ctl::none()).unwrap();
        // Dense A = diag(λ) + Σ⁻¹ via the Woodbury factor, inverted column by column.
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        let lam: Vec<f64> = latents.iter().map(|x| x.exp()).collect();
        let nf = NewtonFactor::new(&sig, &lam, 0.0).unwrap();
        for i in 0..g {
            let mut e = vec![0.0; g];
            e[i] = 1.0;
            let mut col = vec![0.0; g];
            nf.solve(&sig, &w, &e, &mut col);
            for j in 0..g {
                let (mi, mj) = (latents[i], latents[j]);
                let cov: f64 = (0..n)
                    .map(|s| (xs[i * n + s] - mi) * (xs[j * n + s] - mj))
                    .sum::<f64>()
                    / n as f64;
                assert!(
                    (cov - col[j]).abs()
                        < 0.02 * (col[i] * col[j]).abs().sqrt().max(col[j].abs()) + 2e-3,
                    "({i},{j}) {cov} vs {}",
                    col[j]
                );
            }
        }
    }

    /// LNM draws have covariance `(A − Nρρᵀ)⁻¹` (checked against
    /// Sherman–Morrison solves with the Woodbury factor).
    #[test]
    fn lnm_sampler_covariance() {
        let (g1, k) = (5, 2);
        let (w, d) = crate::laplace::woodbury::test_loadings(g1, k, 0.5, 0.1, 0.2);
        let mu = vec![-1.0; g1];
        let latents: Vec<f64> = (0..g1).map(|i| -1.5 + 0.2 * i as f64).collect();
        // Gene 5 is the reference; counts sum to N = 40.
        let (p, idx, val) = (vec![0i32, 4], vec![0, 2, 4, 5], vec![5.0, 3.0, 7.0, 25.0]);
        let data = CountMatrix::from_csc(g1 + 1, 1, &p, &idx, &val).unwrap();
        let cap = Capture::None;
        let totals = [40.0, 5.0];
        let f = Fitted {
            model: LnModel::Lnm,
            k,
            mu: &mu,
            w: &w,
            d: &d,
            r: &[],
            latents: &latents,
            eta: &[],
            capture: &cap,
            totals: &totals,
            reference: Some(g1),
            low_rank: false,
        };
        let n = 200_000;
        let (ys, _) = latent_draws(&f, &data, &[0], n, 3, Ctl::none()).unwrap();
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        let mut rho = vec![0.0; g1];
        softmax_alr(&latents, &mut rho);
        let a: Vec<f64> = rho.iter().map(|r| 40.0 * r).collect();
        let nf = NewtonFactor::new(&sig, &a, 0.0).unwrap();
        let mut ar = vec![0.0; g1];
        nf.solve(&sig, &w, &rho, &mut ar);
        let t: f64 = rho.iter().zip(&ar).map(|(p, q)| p * q).sum();
        for i in 0..g1 {
            let mut e = vec![0.0; g1];
            e[i] = 1.0;
            let mut col = vec![0.0; g1];
            nf.solve(&sig, &w, &e, &mut col);
            let rc: f64 = rho.iter().zip(&col).map(|(p, q)| p * q).sum();
            for j in 0..g1 {
                let exact = col[j] + 40.0 * ar[j] * rc / (1.0 - 40.0 * t);
                let cov: f64 = (0..n)
                    .map(|s| (ys[i * n + s] - latents[i]) * (ys[j * n + s] - latents[j]))
                    .sum::<f64>()
                    / n as f64;
                assert!(
                    (cov - exact).abs() < 0.02 * exact.abs().max(0.05) + 2e-3,
                    "({i},{j}) {cov} vs {exact}"
                );
            }
        }
    }
}
