//! Per-cell posteriors of a Laplace fit: Gaussian around each cell's MAP
//! with the inverse of the negative Hessian as covariance, sampled exactly
//! through its square root (no G × G matrix):
//! `x̃ = x̂ + m^{−1/2} ⊙ ε₁ + (1/m) ⊙ V L_S^{−T} ε₂` has covariance `A⁻¹`
//! (`A = M − V K⁻¹ Vᵀ`, `S = K − Vᵀ M⁻¹ V = L_S L_Sᵀ`). With a free capture
//! latent, `η̃ = η̂ + δ`, `δ ~ N(0, 1/s)` (Schur complement) and `x̃` shifts
//! by `A⁻¹ a δ`. Every cell's random stream derives from the seed and the
//! cell's index, so subsets and chunks give the same draws.

use super::cell::{self, EtaMode, NegBin, Obs, Poisson};
use super::woodbury::{NewtonFactor, SigmaFactor};
use super::{Capture, EtaSpec, LnModel};
use crate::data::CountMatrix;
use crate::error::{CoreError, Result};
use crate::math::lgamma;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Gamma, Poisson as PoissonDist, StandardNormal};
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
}

fn cell_rng(seed: u64, c: usize) -> ChaCha8Rng {
    let mut z = seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

impl Fitted<'_> {
    fn check(&self, data: &CountMatrix) -> Result<()> {
        if self.model == LnModel::Lnm {
            return Err(CoreError::arg(
                "fit",
                "per-cell posteriors of LNM fits are not available yet",
            ));
        }
        let g = self.mu.len();
        if data.n_genes != g || self.latents.len() != g * data.n_cells {
            return Err(CoreError::arg(
                "x",
                "does not match the genes and cells of the fit",
            ));
        }
        Ok(())
    }
    fn with_obs<T>(&self, f: impl FnOnce(&dyn Obs) -> T) -> T {
        match self.model {
            // LNM fits are rejected by `check`.
            LnModel::Pln | LnModel::Lnm => f(&Poisson),
            LnModel::Nbln => f(&NegBin { r: self.r }),
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
    let nf = NewtonFactor::new(sig, f.w, &a, 0.0)?;
    // A⁻¹ a and s for a free η.
    let (aa, s) = match mode {
        EtaMode::Free { sigma, .. } => cell::schur(&nf, sig, f.w, &a, sigma, 0.0),
        _ => (Vec::new(), f64::NAN),
    };
    let mut xs = Vec::with_capacity(n * g);
    let mut es = Vec::with_capacity(n);
    let mut e2 = vec![0.0; k];
    for _ in 0..n {
        for v in e2.iter_mut() {
            *v = rng.sample(StandardNormal);
        }
        // L_S^{−T} ε₂ by back substitution.
        let ls = &nf.ls;
        for i in (0..k).rev() {
            let mut t = e2[i];
            for p in i + 1..k {
                t -= ls[p * k + i] * e2[p];
            }
            e2[i] = t / ls[i * k + i];
        }
        let delta = if aa.is_empty() {
            0.0
        } else {
            rng.sample::<f64, _>(StandardNormal) / s.sqrt()
        };
        for gi in 0..g {
            let m = nf.m[gi];
            let vz: f64 = (0..k).map(|j| f.w[gi * k + j] * e2[j]).sum::<f64>() / f.d[gi];
            let e1: f64 = rng.sample(StandardNormal);
            let shift = if aa.is_empty() { 0.0 } else { aa[gi] * delta };
            xs.push(xh[gi] + e1 / m.sqrt() + vz / m + shift);
        }
        es.push(if aa.is_empty() {
            eh
        } else {
            (eh + delta).max(cell::ETA_MIN)
        });
    }
    Some((xs, es))
}

/// Latent draws of `cells`: values `(s, cell, gene)` at `(cell·G + gene)·n + s`
/// (draw fastest), and η draws at `cell·n + s` (empty without capture).
pub fn latent_draws(
    f: &Fitted<'_>,
    data: &CountMatrix,
    cells: &[usize],
    n: usize,
    seed: u64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    f.check(data)?;
    let (spec, _) = EtaSpec::new(f.capture, data)?;
    let sig = SigmaFactor::new(f.w, f.d, f.k)
        .ok_or_else(|| CoreError::arg("fit", "the covariance is not positive definite"))?;
    let g = f.mu.len();
    let per: Vec<Option<(Vec<f64>, Vec<f64>)>> = cells
        .par_iter()
        .map(|&c| {
            let mut u = vec![0.0; g];
            cell::dense_counts(data, c, &mut u);
            let mut rng = cell_rng(seed, c);
            f.with_obs(|obs| sample_cell(obs, f, &sig, &u, c, spec.mode[c], n, &mut rng))
        })
        .collect();
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
/// MAP latents (`n_latent = None`: `n` count draws from the MAP) or with
/// each draw's own latent draw (Laplace uncertainty).
pub fn predictive(
    f: &Fitted<'_>,
    data: &CountMatrix,
    cells: &[usize],
    genes: &[usize],
    n: usize,
    use_map: bool,
    seed: u64,
) -> Result<Vec<f64>> {
    f.check(data)?;
    let g = f.mu.len();
    let (xs, es) = if use_map {
        (Vec::new(), Vec::new())
    } else {
        latent_draws(f, data, cells, n, seed)?
    };
    let ng = genes.len();
    let out: Vec<Vec<f64>> = cells
        .par_iter()
        .enumerate()
        .map(|(ci, &c)| {
            let mut rng = cell_rng(seed ^ 0x7070_7063, c);
            let mut v = vec![0.0; ng * n];
            for s in 0..n {
                let eta = if f.eta.is_empty() {
                    0.0
                } else if use_map {
                    f.eta[c]
                } else {
                    es[ci * n + s]
                };
                for (j, &gi) in genes.iter().enumerate() {
                    let x = if use_map {
                        f.latents[c * g + gi]
                    } else {
                        xs[(ci * g + gi) * n + s]
                    };
                    let m = (x - eta).clamp(-50.0, 50.0).exp();
                    let lam = match f.model {
                        LnModel::Pln | LnModel::Lnm => m,
                        LnModel::Nbln => {
                            let r = f.r[gi].max(1e-6);
                            rng.sample(Gamma::new(r, m / r).expect("valid gamma"))
                        }
                    };
                    v[j * n + s] = if lam > 0.0 {
                        rng.sample(PoissonDist::new(lam).expect("valid rate"))
                    } else {
                        0.0
                    };
                }
            }
            v
        })
        .collect();
    Ok(out.concat())
}

/// Per-cell log-likelihood `Σ_g ln p(u_cg | x, η)` (full pmf, `ln u!`
/// included): at the MAP (one value per cell) or for `n` latent draws
/// (`(s, cell)` at `cell·n + s`).
pub fn cell_loglik(
    f: &Fitted<'_>,
    data: &CountMatrix,
    cells: &[usize],
    n: Option<(usize, u64)>,
) -> Result<Vec<f64>> {
    f.check(data)?;
    let g = f.mu.len();
    let (spec, _) = EtaSpec::new(f.capture, data)?;
    let (xs, es, nn) = match n {
        None => (Vec::new(), Vec::new(), 1),
        Some((n, seed)) => {
            let (x, e) = latent_draws(f, data, cells, n, seed)?;
            (x, e, n)
        }
    };
    let out: Vec<Vec<f64>> = cells
        .par_iter()
        .enumerate()
        .map(|(ci, &c)| {
            let mut u = vec![0.0; g];
            cell::dense_counts(data, c, &mut u);
            let lnfact: f64 = u.iter().map(|&v| lgamma(v + 1.0)).sum();
            let poisson_const = if f.model == LnModel::Pln { lnfact } else { 0.0 };
            f.with_obs(|obs| {
                (0..nn)
                    .map(|s| {
                        let eta = match (spec.mode[c], es.is_empty()) {
                            (EtaMode::None, _) => 0.0,
                            (_, true) => f.eta[c],
                            (_, false) => es[ci * nn + s],
                        };
                        let total: f64 = (0..g)
                            .map(|gi| {
                                let x = if xs.is_empty() {
                                    f.latents[c * g + gi]
                                } else {
                                    xs[(ci * g + gi) * nn + s]
                                };
                                obs.value(gi, u[gi], x - eta)
                            })
                            .sum();
                        total - poisson_const
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    Ok(out.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let n = 200_000;
        let (xs, _) = latent_draws(&f, &data, &[0], n, 7).unwrap();
        // Dense A = diag(λ) + Σ⁻¹ via the Woodbury factor, inverted column by column.
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        let lam: Vec<f64> = latents.iter().map(|x| x.exp()).collect();
        let nf = NewtonFactor::new(&sig, &w, &lam, 0.0).unwrap();
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
}
