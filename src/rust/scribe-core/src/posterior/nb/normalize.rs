//! Compositional normalization. With `p` shared across the genes of a cell,
//! the NB factorises into a total and a Dirichlet-multinomial composition
//! whose concentration is `r`, so normalized expression is `ρ ~ Dirichlet(r)`
//! (capture cancels). MAP: `μ_k / Σ_g μ_kg` (= `r_k / Σ r_k`).
//!
//! With a gene-specific `p` the factorisation breaks and the Gamma route
//! takes over: each gene's rate is `λ_g = γ_g p_g/(1−p_g)` with
//! `γ_g ~ Gamma(r_g, 1)`, and `ρ = λ / Σλ` (which is `Dirichlet(r)` again
//! when `p` is shared). The expected composition is then `μ / Σμ`. BNB
//! fits take the same route: their extra dispersion is per count, around
//! the same mean, and leaves the population composition as it is.

use super::draws::NbDraws;
use crate::error::Result;
use crate::models::nb::bnb_shape;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;
use rand_distr::{Beta, Distribution, Gamma};
use rayon::prelude::*;

/// Expected composition per draw and component: layout `g + G·(k + K·s)`.
pub fn mean_composition(d: &NbDraws) -> Vec<f64> {
    let mut out = d.r.clone();
    if let Some(pg) = &d.p_gene {
        for (o, &p) in out.iter_mut().zip(pg) {
            *o *= p / (1.0 - p);
        }
    }
    for chunk in out.chunks_mut(d.n_genes.max(1)) {
        let tot: f64 = chunk.iter().sum();
        chunk.iter_mut().for_each(|v| *v /= tot);
    }
    out
}

/// `n_dir` draws `ρ ~ Dirichlet(r_k^(s))` per draw and component (Gamma
/// normalisation; draw-and-component streams from `seed`): layout
/// `g + G·(t + T·k)` with `t = s·n_dir + i`.
pub fn dirichlet_samples(d: &NbDraws, n_dir: usize, seed: u64) -> Result<Vec<f64>> {
    let (g_n, k_n, s_n) = (d.n_genes, d.n_comp, d.n_draws);
    crate::limits::check_values(
        "n_samples_dirichlet",
        g_n as f64 * s_n as f64 * n_dir as f64 * k_n as f64,
    )?;
    let t_n = s_n * n_dir;
    let mut out = vec![0.0; g_n * t_n * k_n];
    out.par_chunks_mut(g_n.max(1))
        .enumerate()
        .for_each(|(idx, row)| {
            let (t, k) = (idx % t_n, idx / t_n);
            let s = t / n_dir;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(idx as u64 + 1);
            let r = d.r_of(s, k);
            for g in 0..g_n {
                row[g] = Gamma::new(r[g].max(1e-300), 1.0).map_or(0.0, |gm| gm.sample(&mut rng));
                if d.gene_specific_p() {
                    let p = d.p_at(s, k, g);
                    row[g] *= p / (1.0 - p);
                }
            }
            let tot: f64 = row.iter().sum::<f64>().max(1e-300);
            row.iter_mut().for_each(|v| *v /= tot);
        });
    Ok(out)
}

/// Per-cell expression fractions. Given its counts `u_c`, a cell's
/// composition has the conjugate posterior `ρ_c ~ Dirichlet(r + u_c)` (the
/// Dirichlet-multinomial factorisation; capture cancels, the gate is
/// ignored). With a gene-specific `p`, each gene's latent rate has the
/// posterior `Gamma(r_g + u_cg, rate β_g + ν_c)`, `β_g = (1−p_g)/p_g`, and
/// the fractions normalise those rates: draws are exact, the mean is the
/// ratio of expected rates. BNB fits take the same route through their
/// latent success probability: given `u`, the captured-scale `p̂'` has the
/// conjugate posterior `Beta(α + u, κ + r)`, the count's odds are
/// `o' = p̂'/(1−p̂')`, and the rate `λ = γ o'/ν` with
/// `γ ~ Gamma(r + u, rate 1 + o')`, so `E[λ | u] = (r+u) E[p̂' | u]/ν`. `sample = false` returns the posterior mean
/// `(r_g + u_cg) / (Σr + L_c)`; `true` one Dirichlet draw per cell and
/// parameter draw. Mixtures weight (mean) or pick (draw) components by the
/// cell's responsibilities. Layout `j + J·(c + C·s)` for the genes `genes`.
pub fn cell_fractions(
    d: &NbDraws,
    data: &crate::data::CountMatrix,
    genes: &[usize],
    sample: bool,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    use super::loglik::{cell_responsibilities, pick_index, zinb_zero_terms, ZeroTerms};
    use rand::RngExt;
    let (s_n, c_n, j_n, k_n, g_n) = (d.n_draws, data.n_cells, genes.len(), d.n_comp, d.n_genes);
    crate::limits::check_values("n_samples", (j_n * c_n) as f64 * s_n as f64)?;
    let mut out = vec![0.0; j_n * c_n * s_n];
    let work = ctl.work(s_n * c_n);
    // zinb zero terms depend on the draw and component only: once per draw.
    let zero_terms: Vec<Vec<ZeroTerms>> = (0..s_n)
        .map(|s| (0..k_n).map(|k| zinb_zero_terms(d, s, k)).collect())
        .collect();
    out.par_chunks_mut(j_n.max(1))
        .enumerate()
        .for_each(|(idx, row)| {
            if work.stopped() {
                return;
            }
            work.tick();
            let (s, c) = (idx / c_n, idx % c_n);
            let gam = cell_responsibilities(d, s, data, c, &zero_terms[s]);
            let mut u = vec![0.0; g_n];
            let (gi, ci) = data.row(c);
            for (&g, &x) in gi.iter().zip(ci) {
                u[g as usize] = x as f64;
            }
            let lib = data.lib_size[c];
            // Gamma route (gene-specific p): per-gene posterior rates of each component.
            let rate = |k: usize, g: usize| {
                let p = d.p_at(s, k, g);
                (1.0 - p) / p + d.nu_of(s, c)
            };
            // BNB: the conjugate Beta of the latent p̂', then γ given it.
            let bnb_rate = |rng: &mut ChaCha8Rng, k: usize, g: usize, r: f64| -> f64 {
                let om = d.omega_at(s, g).expect("a BNB fit");
                let p = d.p_at(s, k, g);
                let nu = d.nu_of(s, c);
                let (alpha, kappa) = bnb_shape(r, om, p / (1.0 - p) * nu);
                let (a, b) = (alpha + u[g], kappa + r);
                if !sample {
                    return (r + u[g]) * a / (a + b) / nu;
                }
                let ph = Beta::new(a, b)
                    .map_or(a / (a + b), |bt| bt.sample(rng))
                    .min(1.0 - 1e-15);
                let o = ph / (1.0 - ph);
                let gam = Gamma::new(r + u[g], 1.0).map_or(r + u[g], |gm| gm.sample(rng));
                gam / (1.0 + o) * o / nu
            };
            if d.gene_specific_p() || d.omega.is_some() {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(((s as u64 + 1) << 32) | c as u64);
                let ks: Vec<(usize, f64)> = if sample {
                    vec![(pick_index(&gam, rng.random()), 1.0)]
                } else {
                    gam.iter().copied().enumerate().collect()
                };
                for (k, wk) in ks {
                    let r = d.r_of(s, k);
                    let lam: Vec<f64> = (0..g_n)
                        .map(|g| {
                            if d.omega.is_some() {
                                return bnb_rate(&mut rng, k, g, r[g]);
                            }
                            let shape = r[g] + u[g];
                            let e = if sample {
                                Gamma::new(shape, 1.0).map_or(0.0, |gm| gm.sample(&mut rng))
                            } else {
                                shape
                            };
                            e / rate(k, g)
                        })
                        .collect();
                    let tot: f64 = lam.iter().sum::<f64>().max(1e-300);
                    for (j, &g) in genes.iter().enumerate() {
                        row[j] += wk * lam[g] / tot;
                    }
                }
                return;
            }
            if !sample {
                for k in 0..k_n {
                    let r = d.r_of(s, k);
                    let tot = r.iter().sum::<f64>() + lib;
                    for (j, &g) in genes.iter().enumerate() {
                        row[j] += gam[k] * (r[g] + u[g]) / tot;
                    }
                }
                return;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(((s as u64 + 1) << 32) | c as u64);
            let k = pick_index(&gam, rng.random());
            let r = d.r_of(s, k);
            let draws: Vec<f64> = (0..g_n)
                .map(|g| Gamma::new(r[g] + u[g], 1.0).map_or(0.0, |gm| gm.sample(&mut rng)))
                .collect();
            let tot: f64 = draws.iter().sum::<f64>().max(1e-300);
            for (j, &g) in genes.iter().enumerate() {
                row[j] = draws[g] / tot;
            }
        });
    work.finish(out)
}
