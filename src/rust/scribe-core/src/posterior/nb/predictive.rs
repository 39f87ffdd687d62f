//! Posterior predictive sampling, sparse-aware in its output: only the
//! requested genes are drawn, cell by cell, from `(seed, draw, cell)` streams
//! so that any chunking over cells gives the same numbers.
//!
//! Full predictive: component `k ~ Categorical(w)` per cell (generative),
//! gate zeros with probability `π_kg`, else `NB(r_kg, p̂_kc)`. Biological:
//! `NB(r_kg, p_k)` without capture or gate.

use super::draws::NbDraws;
use super::loglik::pick_index;
use crate::dist::draw::{bnb_count, nb_count_fast};
use crate::error::Result;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

/// Counts for cells `cells` and genes `genes`: layout `s + S·(c + C·j)`
/// (draws × cells × genes, column-major).
pub fn predictive(
    d: &NbDraws,
    cells: &[usize],
    genes: &[usize],
    biological: bool,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    let (s_n, c_n, j_n, k_n) = (d.n_draws, cells.len(), genes.len(), d.n_comp);
    crate::limits::check_values("n_samples", 2.0 * (c_n * j_n) as f64 * s_n as f64)?;
    let work = ctl.work(s_n * c_n);
    let mut per_cell = vec![0.0; s_n * c_n * j_n]; // (s, c) rows of J genes
    per_cell
        .par_chunks_mut(j_n.max(1))
        .enumerate()
        .for_each(|(idx, row)| {
            if work.stopped() {
                return;
            }
            let (s, ci) = (idx / c_n, idx % c_n);
            let c = cells[ci];
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // Stream 0 belongs to the guide draws; (draw, cell) streams start above it.
            rng.set_stream(((s as u64 + 1) << 32) | c as u64);
            let k = match d.known_comp(c) {
                Some(k) => k,
                None if k_n == 1 => 0,
                None => pick_index(&d.weights[s * k_n..(s + 1) * k_n], rng.random()),
            };
            let nu = if biological { 1.0 } else { d.nu_of(s, c) };
            let odds_of = |p: f64| {
                let p_hat = p * nu / (1.0 - p * (1.0 - nu));
                p_hat / (1.0 - p_hat)
            };
            let shared = (!d.gene_specific_p()).then(|| odds_of(d.p_of(s, k)));
            let r = d.r_of(s, k);
            let gate = if biological { None } else { d.gate_of(s, k) };
            for (j, &g) in genes.iter().enumerate() {
                if let Some(pi) = gate {
                    if rng.random::<f64>() < pi[g] {
                        row[j] = 0.0;
                        continue;
                    }
                }
                let odds = shared.unwrap_or_else(|| odds_of(d.p_at(s, k, g)));
                let x = match d.omega_at(s, g) {
                    Some(om) => bnb_count(&mut rng, r[g], odds, om),
                    None => nb_count_fast(&mut rng, r[g], odds),
                };
                row[j] = x as f64;
            }
            work.tick();
        });
    work.finish(())?;
    // Gene-major output, one gene per task (a serial strided copy dominated
    // large checks).
    let mut out = vec![0.0; s_n * c_n * j_n];
    out.par_chunks_mut((s_n * c_n).max(1))
        .enumerate()
        .for_each(|(j, col)| {
            for c in 0..c_n {
                for s in 0..s_n {
                    col[s + s_n * c] = per_cell[(s * c_n + c) * j_n + j];
                }
            }
        });
    Ok(out)
}
