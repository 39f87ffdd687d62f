//! Bayesian denoising: the posterior of a cell's pre-capture count `m = u + d`.
//!
//! With `pp = p(1 − ν_c)` and `q = 1 − pp`, the uncaptured count is
//! `d | u ~ NB(r + u, pp)`: mean `(u + r·pp)/q`, variance `(r + u)·pp/q²`, mode
//! `u + ⌊max(r + u − 1, 0)·pp/q⌋`. A zero of a zero-inflated model is a gate
//! zero with probability `w = π/(π + (1−π)((1−p)/q)^r)`, whose value follows
//! the un-thinned prior `NB(r, p)`. For mixtures each cell uses its own
//! component responsibilities `P(k | u_c, θ)` (the original uses the global
//! mixing weights, which ignores what the cell's counts say about its type).

use super::draws::NbDraws;
use super::loglik::{cell_responsibilities, pick_index, zinb_zero_terms, ZeroTerms};
use crate::data::CountMatrix;
use crate::dist::draw::nb_count;
use crate::error::Result;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

/// A denoising estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Mean,
    Mode,
    Sample,
}

impl Method {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Method::Mean),
            "mode" => Ok(Method::Mode),
            "sample" => Ok(Method::Sample),
            other => Err(crate::CoreError::arg(
                "method",
                format!("must be \"mean\", \"mode\" or \"sample\", not \"{other}\""),
            )),
        }
    }
}

/// Mean and variance of one (cell, gene, component) posterior.
struct Post {
    mean: f64,
    var: f64,
}

fn nb_post(u: f64, r: f64, pp: f64) -> Post {
    let q = 1.0 - pp;
    Post {
        mean: (u + r * pp) / q,
        var: (r + u) * pp / (q * q),
    }
}

fn nb_mode(u: f64, r: f64, pp: f64) -> f64 {
    u + ((r + u - 1.0).max(0.0) * pp / (1.0 - pp)).floor()
}

/// Denoised values for the genes `genes` of every cell and draw: layout
/// `j + J·(c + C·s)` (genes × cells per draw). `zi_method` applies to zeros
/// of zero-inflated models. Variances (if asked) use the same layout.
#[allow(clippy::too_many_arguments)]
pub fn denoise(
    d: &NbDraws,
    data: &CountMatrix,
    genes: &[usize],
    method: Method,
    zi_method: Method,
    want_variance: bool,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
    d.require_nb("denoising")?;
    let (s_n, c_n, j_n, k_n) = (d.n_draws, data.n_cells, genes.len(), d.n_comp);
    let copies = if want_variance { 2.0 } else { 1.0 };
    crate::limits::check_values("n_samples", copies * (j_n * c_n) as f64 * s_n as f64)?;
    let work = ctl.work(s_n);
    let mut vals = vec![0.0; j_n * c_n * s_n];
    let mut vars = if want_variance {
        vec![0.0; j_n * c_n * s_n]
    } else {
        Vec::new()
    };
    let mut pos = vec![usize::MAX; data.n_genes];
    for (j, &g) in genes.iter().enumerate() {
        pos[g] = j;
    }
    for s in 0..s_n {
        if work.stopped() {
            break;
        }
        let zero_terms: Vec<ZeroTerms> = (0..k_n).map(|k| zinb_zero_terms(d, s, k)).collect();
        let rows: Vec<(Vec<f64>, Vec<f64>)> = (0..c_n)
            .into_par_iter()
            .map(|c| {
                let mut out = vec![0.0; j_n];
                let mut vout = vec![0.0; if want_variance { j_n } else { 0 }];
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                // Stream 0 belongs to the guide draws; (draw, cell) streams start above it.
                rng.set_stream(((s as u64 + 1) << 32) | c as u64);
                // Responsibilities of this cell.
                let gam = cell_responsibilities(d, s, data, c, &zero_terms);
                // Component used by mode (most responsible) and by sampling (drawn).
                let k_mode = gam
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |x| x.0);
                let k_draw = pick_index(&gam, rng.random());
                let mut u_row = vec![0.0; j_n];
                let (gi, ci) = data.row(c);
                for (&g, &u) in gi.iter().zip(ci) {
                    if pos[g as usize] != usize::MAX {
                        u_row[pos[g as usize]] = u as f64;
                    }
                }
                let nu = d.nu_of(s, c);
                for (j, &g) in genes.iter().enumerate() {
                    let u = u_row[j];
                    let zi_zero = u == 0.0 && d.gate.is_some();
                    let m = if zi_zero { zi_method } else { method };
                    let (mut m_tot, mut second, mut value) = (0.0, 0.0, 0.0);
                    for k in 0..k_n {
                        let r = d.r_of(s, k)[g];
                        let p = d.p_at(s, k, g);
                        let pp = p * (1.0 - nu);
                        let q = 1.0 - pp;
                        let nb = nb_post(u, r, pp);
                        let (mean, var) = match d.gate_of(s, k) {
                            Some(pi) if zi_zero => {
                                // Gate zero (value from the un-thinned prior NB(r, p)) vs NB zero.
                                let w = pi[g] / (pi[g] + (1.0 - pi[g]) * ((1.0 - p) / q).powf(r));
                                let (mg, vg) = (r * p / (1.0 - p), r * p / ((1.0 - p) * (1.0 - p)));
                                let picked = k == if m == Method::Sample { k_draw } else { k_mode };
                                if picked && m != Method::Mean {
                                    value = match m {
                                        Method::Mode if w > 0.5 => {
                                            ((r - 1.0).max(0.0) * p / (1.0 - p)).floor()
                                        }
                                        Method::Mode => nb_mode(0.0, r, pp),
                                        _ if rng.random::<f64>() < w => {
                                            nb_count(&mut rng, r, p / (1.0 - p)) as f64
                                        }
                                        _ => nb_count(&mut rng, r, pp / q) as f64,
                                    };
                                }
                                (
                                    w * mg + (1.0 - w) * nb.mean,
                                    w * vg
                                        + (1.0 - w) * nb.var
                                        + w * (1.0 - w) * (mg - nb.mean).powi(2),
                                )
                            }
                            _ => {
                                let picked = k == if m == Method::Sample { k_draw } else { k_mode };
                                if picked && m != Method::Mean {
                                    value = match m {
                                        Method::Mode => nb_mode(u, r, pp),
                                        _ if pp > 0.0 => {
                                            u + nb_count(&mut rng, r + u, pp / q) as f64
                                        }
                                        _ => u,
                                    };
                                }
                                (nb.mean, nb.var)
                            }
                        };
                        m_tot += gam[k] * mean;
                        second += gam[k] * (var + mean * mean);
                    }
                    out[j] = if m == Method::Mean { m_tot } else { value };
                    if want_variance {
                        vout[j] = (second - m_tot * m_tot).max(0.0);
                    }
                }
                (out, vout)
            })
            .collect();
        for (c, (row, vrow)) in rows.into_iter().enumerate() {
            let at = (s * c_n + c) * j_n;
            vals[at..at + j_n].copy_from_slice(&row);
            if want_variance {
                vars[at..at + j_n].copy_from_slice(&vrow);
            }
        }
        work.tick();
    }
    work.finish((vals, if want_variance { Some(vars) } else { None }))
}
