//! Log-likelihood matrices and mixture responsibilities from parameter draws.
//!
//! Per draw s and component k, `ℓ_ck = Σ_g ln f_k(u_cg)` (by cell) or
//! `Σ_c ln f_k(u_cg)` (by gene), evaluated sparsely as in the models (closed
//! form for zeros except zinbvcp). Mixtures combine components as the
//! original does: by cell `logsumexp_k(ln w_k + ℓ_ck)`; by gene
//! `logsumexp_k(ln w_k + Σ_c ℓ_cgk)` (a per-gene quantity in which all cells
//! share one component). Outputs are draw-fastest (column-major `S × n`).

use super::draws::NbDraws;
use crate::data::CountMatrix;
use crate::error::Result;
pub use crate::math::pick_index;
use crate::math::{lgamma, lgamma_diff, ln_sigmoid};
use crate::models::nb::{bnb_ratio, nb_cell_loglik};
pub use crate::posterior::By;
use crate::progress::Ctl;
use rayon::prelude::*;

/// `ln f_k(u_c)` of one cell (draw `s`, component `k`); `zero_sum` is
/// [`zinb_zero_terms`] for zinb.
pub fn cell_component_ll(
    d: &NbDraws,
    s: usize,
    k: usize,
    data: &CountMatrix,
    c: usize,
    zero_sum: Option<(&[f64], f64)>,
) -> f64 {
    let r = d.r_of(s, k);
    if d.gene_specific_p() || d.omega.is_some() {
        let mut acc = 0.0;
        add_cell_terms_genewise(d, s, k, data, c, |_, v| acc += v);
        return acc;
    }
    nb_cell_loglik(
        data,
        c,
        r,
        r.iter().sum(),
        d.gate_of(s, k),
        d.ell(s, k, c),
        zero_sum,
    )
}

/// `ln f(u_cg)` of every gene of cell `c`, passed to `add(g, value)` gene
/// by gene (zeros first, then the swap to the nonzero terms), for models whose
/// zero terms differ by gene: gene-specific `p` or BNB.
pub fn add_cell_terms_genewise(
    d: &NbDraws,
    s: usize,
    k: usize,
    data: &CountMatrix,
    c: usize,
    add: impl FnMut(usize, f64),
) {
    cell_terms_genewise(
        data,
        c,
        d.r_of(s, k),
        d.gate_of(s, k),
        |g| d.ell_at(s, k, c, g),
        |g| d.omega_at(s, g),
        add,
    );
}

/// The terms of [`add_cell_terms_genewise`] from one cell's own parameters:
/// `r` and the gate per gene, `ell(g) = logit p̂_cg` and the BNB `omega(g)`
/// (`None` for the NB). Engines whose parameters differ by cell (the VAE's
/// decoder) call this directly.
pub fn cell_terms_genewise(
    data: &CountMatrix,
    c: usize,
    r: &[f64],
    pi: Option<&[f64]>,
    ell: impl Fn(usize) -> f64,
    omega: impl Fn(usize) -> Option<f64>,
    mut add: impl FnMut(usize, f64),
) {
    // The observation part: NB `u ln p̂ + r ln(1−p̂)` or BNB's Beta ratio.
    let obs = |g: usize, u: u32| -> f64 {
        let l = ell(g);
        match omega(g) {
            None => u as f64 * ln_sigmoid(l) + r[g] * ln_sigmoid(-l),
            Some(om) => bnb_ratio(u, r[g], om, l.exp()),
        }
    };
    let zero = |g: usize| -> f64 {
        let z = obs(g, 0);
        match pi {
            None => z,
            Some(pi) => (pi[g] + (1.0 - pi[g]) * z.exp()).ln(),
        }
    };
    for g in 0..r.len() {
        add(g, zero(g));
    }
    let (genes, counts) = data.row(c);
    for (&g, &u) in genes.iter().zip(counts) {
        let g = g as usize;
        let keep = pi.map_or(0.0, |pi| (-pi[g]).ln_1p());
        add(
            g,
            keep + lgamma_diff(u, r[g]) - lgamma(u as f64 + 1.0) + obs(g, u) - zero(g),
        );
    }
}

/// Component probabilities of one cell in draw `s`: `softmax_k(ln w_k + ℓ_ck)`.
/// `zero_terms[k]` is [`zinb_zero_terms`] of draw `s`, computed once per draw.
pub fn cell_responsibilities(
    d: &NbDraws,
    s: usize,
    data: &CountMatrix,
    c: usize,
    zero_terms: &[ZeroTerms],
) -> Vec<f64> {
    if d.n_comp == 1 {
        return vec![1.0];
    }
    if let Some(own) = d.known_comp(c) {
        return (0..d.n_comp).map(|k| f64::from(k == own)).collect();
    }
    let l: Vec<f64> = (0..d.n_comp)
        .map(|k| {
            d.ln_w(s, k)
                + cell_component_ll(
                    d,
                    s,
                    k,
                    data,
                    c,
                    zero_terms[k].as_ref().map(|(v, t)| (v.as_slice(), *t)),
                )
        })
        .collect();
    let lse = logsumexp(&l);
    l.iter().map(|v| (v - lse).exp()).collect()
}

/// zinb's per-gene zero terms and their sum (`None` for other models).
pub type ZeroTerms = Option<(Vec<f64>, f64)>;

/// zinb (no capture): per-gene zero terms `s_g = ln(π + (1−π)(1−p)^r)` and their sum.
pub fn zinb_zero_terms(d: &NbDraws, s: usize, k: usize) -> ZeroTerms {
    if d.variant.has_capture() || d.gene_specific_p() {
        return None;
    }
    let pi = d.gate_of(s, k)?;
    let r = d.r_of(s, k);
    let l1m = (-d.p_of(s, k)).ln_1p();
    let s0: Vec<f64> = (0..r.len())
        .map(|g| (pi[g] + (1.0 - pi[g]) * (r[g] * l1m).exp()).ln())
        .collect();
    let tot = s0.iter().sum();
    Some((s0, tot))
}

/// `Σ_c ln f_k(u_cg)` for every gene (draw `s`, component `k`).
fn gene_component_ll(d: &NbDraws, s: usize, k: usize, data: &CountMatrix, out: &mut [f64]) {
    let r = d.r_of(s, k);
    let pi = d.gate_of(s, k);
    let c_n = data.n_cells;
    out.iter_mut().for_each(|v| *v = 0.0);
    if d.omega.is_some() || (d.gene_specific_p() && d.variant.has_capture()) {
        for c in 0..c_n {
            add_cell_terms_genewise(d, s, k, data, c, |g, v| out[g] += v);
        }
        return;
    }
    // lnΓ(u + r) − lnΓ(r) − ln u! over each gene's count histogram.
    for g in 0..data.n_genes {
        for j in data.gene_pair_ptr[g]..data.gene_pair_ptr[g + 1] {
            let (w, x) = (data.pair_weight[j], data.pair_count[j]);
            out[g] += w * (lgamma_diff(x, r[g]) - lgamma(x as f64 + 1.0));
        }
    }
    let capture = d.variant.has_capture();
    match (pi, capture) {
        (None, false) => {
            for g in 0..data.n_genes {
                let l = d.ell_at(s, k, 0, g);
                let (lph, l1m) = (ln_sigmoid(l), ln_sigmoid(-l));
                let tot: f64 = (data.gene_pair_ptr[g]..data.gene_pair_ptr[g + 1])
                    .map(|j| data.pair_weight[j] * data.pair_count[j] as f64)
                    .sum();
                out[g] += tot * lph + r[g] * l1m * c_n as f64;
            }
        }
        (None, true) => {
            let s1: f64 = (0..c_n).map(|c| ln_sigmoid(-d.ell(s, k, c))).sum();
            for c in 0..c_n {
                let lph = ln_sigmoid(d.ell(s, k, c));
                let (genes, counts) = data.row(c);
                for (&g, &u) in genes.iter().zip(counts) {
                    out[g as usize] += u as f64 * lph;
                }
            }
            for g in 0..data.n_genes {
                out[g] += r[g] * s1;
            }
        }
        (Some(pi), false) => {
            for g in 0..data.n_genes {
                let l = d.ell_at(s, k, 0, g);
                let (lph, l1m) = (ln_sigmoid(l), ln_sigmoid(-l));
                let s0 = (pi[g] + (1.0 - pi[g]) * (r[g] * l1m).exp()).ln();
                let nnz = data.gene_nnz[g];
                let tot: f64 = (data.gene_pair_ptr[g]..data.gene_pair_ptr[g + 1])
                    .map(|j| data.pair_weight[j] * data.pair_count[j] as f64)
                    .sum();
                out[g] +=
                    tot * lph + nnz * ((-pi[g]).ln_1p() + r[g] * l1m) + (c_n as f64 - nnz) * s0;
            }
        }
        (Some(pi), true) => {
            for c in 0..c_n {
                for g in 0..data.n_genes {
                    let l1m = ln_sigmoid(-d.ell_at(s, k, c, g));
                    out[g] += (pi[g] + (1.0 - pi[g]) * (r[g] * l1m).exp()).ln();
                }
                let (genes, counts) = data.row(c);
                for (&g, &u) in genes.iter().zip(counts) {
                    let g = g as usize;
                    let l = d.ell_at(s, k, c, g);
                    let (lph, l1m) = (ln_sigmoid(l), ln_sigmoid(-l));
                    let s0 = (pi[g] + (1.0 - pi[g]) * (r[g] * l1m).exp()).ln();
                    out[g] += (-pi[g]).ln_1p() + u as f64 * lph + r[g] * l1m - s0;
                }
            }
        }
    }
}

/// Log-likelihood per draw and cell (or gene). With `split`, one value per
/// component including `ln w_k` (layout `s + S·(i + n·k)`); otherwise the
/// mixture log-sum-exp (layout `s + S·i`).
pub fn log_likelihood(
    d: &NbDraws,
    data: &CountMatrix,
    by: By,
    split: bool,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    let (s_n, k_n) = (d.n_draws, d.n_comp);
    let n_out = match by {
        By::Cell => data.n_cells,
        By::Gene => data.n_genes,
    };
    crate::limits::check_values("n_samples", 2.0 * (s_n * k_n) as f64 * n_out as f64)?;
    let work = ctl.work(s_n * k_n);
    let n = match by {
        By::Cell => data.n_cells,
        By::Gene => data.n_genes,
    };
    let mut comp = vec![0.0; s_n * k_n * n]; // (s, k, i) → (s·K + k)·n + i
    comp.par_chunks_mut(n).enumerate().for_each(|(sk, out)| {
        if work.stopped() {
            return;
        }
        let (s, k) = (sk / k_n, sk % k_n);
        // Datasets: each cell is read against its own dataset only.
        if let Some(own) = &d.cell_comp {
            let mine = |c: usize| own[c] as usize == k;
            match by {
                By::Cell => out.iter_mut().enumerate().for_each(|(c, o)| {
                    *o = if mine(c) {
                        cell_component_ll(d, s, k, data, c, None)
                    } else {
                        f64::NEG_INFINITY
                    }
                }),
                By::Gene => {
                    out.iter_mut().for_each(|v| *v = 0.0);
                    for c in (0..data.n_cells).filter(|&c| mine(c)) {
                        add_cell_terms_genewise(d, s, k, data, c, |g, v| out[g] += v);
                    }
                }
            }
            work.tick();
            return;
        }
        match by {
            By::Cell => {
                let zs = zinb_zero_terms(d, s, k);
                let zr = zs.as_ref().map(|(v, t)| (v.as_slice(), *t));
                out.iter_mut()
                    .enumerate()
                    .for_each(|(c, o)| *o = cell_component_ll(d, s, k, data, c, zr));
            }
            By::Gene => gene_component_ll(d, s, k, data, out),
        }
        work.tick();
    });
    work.finish(())?;
    // Known components (datasets) carry no mixing weight: by cell only the
    // cell's own dataset is finite, by gene the datasets' parts add up.
    let known = d.cell_comp.is_some();
    if split {
        let mut res = vec![0.0; s_n * n * k_n];
        for s in 0..s_n {
            for k in 0..k_n {
                let lw = if k_n > 1 && !known { d.ln_w(s, k) } else { 0.0 };
                for i in 0..n {
                    res[s + s_n * (i + n * k)] = comp[(s * k_n + k) * n + i] + lw;
                }
            }
        }
        return Ok(res);
    }
    let mut res = vec![0.0; s_n * n];
    for s in 0..s_n {
        for i in 0..n {
            res[s + s_n * i] = if k_n == 1 {
                comp[s * n + i]
            } else if known {
                match by {
                    By::Cell => logsumexp(
                        &(0..k_n)
                            .map(|k| comp[(s * k_n + k) * n + i])
                            .collect::<Vec<_>>(),
                    ),
                    By::Gene => (0..k_n).map(|k| comp[(s * k_n + k) * n + i]).sum(),
                }
            } else {
                let v: Vec<f64> = (0..k_n)
                    .map(|k| d.ln_w(s, k) + comp[(s * k_n + k) * n + i])
                    .collect();
                logsumexp(&v)
            };
        }
    }
    Ok(res)
}

/// Posterior component probabilities `P(k | u_c, θ_s) = softmax_k(ln w_k + ℓ_ck)`,
/// layout `s + S·(c + C·k)`.
pub fn responsibilities(d: &NbDraws, data: &CountMatrix, ctl: Ctl<'_>) -> Result<Vec<f64>> {
    let split = log_likelihood(d, data, By::Cell, true, ctl)?;
    let (s_n, c_n, k_n) = (d.n_draws, data.n_cells, d.n_comp);
    let mut out = vec![0.0; s_n * c_n * k_n];
    for s in 0..s_n {
        for c in 0..c_n {
            let v: Vec<f64> = (0..k_n).map(|k| split[s + s_n * (c + c_n * k)]).collect();
            let lse = logsumexp(&v);
            for k in 0..k_n {
                out[s + s_n * (c + c_n * k)] = (v[k] - lse).exp();
            }
        }
    }
    Ok(out)
}

pub fn logsumexp(v: &[f64]) -> f64 {
    let mx = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !mx.is_finite() {
        return mx;
    }
    mx + v.iter().map(|x| (x - mx).exp()).sum::<f64>().ln()
}
