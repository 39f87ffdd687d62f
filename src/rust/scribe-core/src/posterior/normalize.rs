//! Compositional normalization. With `p` shared across the genes of a cell,
//! the NB factorises into a total and a Dirichlet-multinomial composition
//! whose concentration is `r`, so normalized expression is `ρ ~ Dirichlet(r)`
//! (capture cancels). MAP: `μ_k / Σ_g μ_kg` (= `r_k / Σ r_k`).

use super::draws::NbDraws;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use rayon::prelude::*;

/// Expected composition per draw and component: layout `g + G·(k + K·s)`.
pub fn mean_composition(d: &NbDraws) -> Vec<f64> {
    let mut out = d.r.clone();
    for chunk in out.chunks_mut(d.n_genes.max(1)) {
        let tot: f64 = chunk.iter().sum();
        chunk.iter_mut().for_each(|v| *v /= tot);
    }
    out
}

/// `n_dir` draws `ρ ~ Dirichlet(r_k^(s))` per draw and component (Gamma
/// normalisation; draw-and-component streams from `seed`): layout
/// `g + G·(t + T·k)` with `t = s·n_dir + i`.
pub fn dirichlet_samples(d: &NbDraws, n_dir: usize, seed: u64) -> Vec<f64> {
    let (g_n, k_n, s_n) = (d.n_genes, d.n_comp, d.n_draws);
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
            }
            let tot: f64 = row.iter().sum::<f64>().max(1e-300);
            row.iter_mut().for_each(|v| *v /= tot);
        });
    out
}
