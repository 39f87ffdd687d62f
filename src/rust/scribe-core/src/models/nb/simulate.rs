//! Generative simulators for the NB family (used by recovery tests and users).
//!
//! Each cell draws from its own random stream derived from `(seed, cell)`, so
//! the simulated matrix does not depend on how the work is scheduled.

use super::Variant;
use crate::data::CountMatrix;
use crate::dist::draw::nb_count;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::Distribution;

/// True parameters of an NB-family data set (canonical form).
#[derive(Debug, Clone, PartialEq)]
pub struct NbTruth {
    pub r: Vec<f64>,
    pub p: f64,
    /// Gene-specific `p` (replaces `p` when present; a mixture's is in
    /// [`MixtureTruth::p_gene`]).
    pub p_gene: Option<Vec<f64>>,
    /// BNB excess dispersion per gene (`None`: NB counts), shared by a
    /// mixture's components.
    pub omega: Option<Vec<f64>>,
    /// Capture probability per cell (`None` for nbdm/zinb).
    pub nu: Option<Vec<f64>>,
    /// Zero-inflation gate per gene (`None` for nbdm/nbvcp).
    pub gate: Option<Vec<f64>>,
    pub n_cells: usize,
    /// Per-component parameters; when present they replace `r`, `p`, `gate`.
    pub mixture: Option<MixtureTruth>,
}

/// True parameters of a mixture: component `assignment[c]` generated cell c.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureTruth {
    pub r: Vec<Vec<f64>>,
    pub p: Vec<f64>,
    /// Gene-specific `p` per component (replaces `p` when present).
    pub p_gene: Option<Vec<Vec<f64>>>,
    pub gate: Option<Vec<Vec<f64>>>,
    pub weights: Vec<f64>,
    pub assignment: Vec<usize>,
}

impl NbTruth {
    /// A plausible random truth: `r ~ LogNormal(0, 1)`, `p = 0.6`, `ν ~ Beta(4, 4)`,
    /// gates `~ Beta(1, 4)` on a third of the genes and 0 elsewhere.
    pub fn random(variant: Variant, n_genes: usize, n_cells: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = (0..n_genes)
            .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal).exp())
            .collect();
        let nu = variant.has_capture().then(|| {
            let beta = rand_distr::Beta::new(4.0, 4.0).expect("valid Beta");
            (0..n_cells).map(|_| beta.sample(&mut rng)).collect()
        });
        let gate = variant.has_gate().then(|| {
            let beta = rand_distr::Beta::new(1.0, 4.0).expect("valid Beta");
            (0..n_genes)
                .map(|g| {
                    if g % 3 == 0 {
                        beta.sample(&mut rng)
                    } else {
                        0.0
                    }
                })
                .collect()
        });
        NbTruth {
            r,
            p: 0.6,
            p_gene: None,
            omega: None,
            nu,
            gate,
            n_cells,
            mixture: None,
        }
    }

    /// A random K-component truth: components share the base `r` except for a
    /// fifth of the genes ("markers"), whose `r` is multiplied by `e^{±1.5}`;
    /// `p_k` spreads over [0.5, 0.7]; weights `∝ 1, 2, …, K`.
    pub fn random_mixture(
        variant: Variant,
        n_genes: usize,
        n_cells: usize,
        k: usize,
        seed: u64,
    ) -> Self {
        let mut t = Self::random(variant, n_genes, n_cells, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let r: Vec<Vec<f64>> = (0..k)
            .map(|_| {
                t.r.iter()
                    .map(|&r| {
                        if rng.random::<f64>() < 0.2 {
                            r * if rng.random::<bool>() {
                                1.5f64.exp()
                            } else {
                                (-1.5f64).exp()
                            }
                        } else {
                            r
                        }
                    })
                    .collect()
            })
            .collect();
        let p: Vec<f64> = (0..k)
            .map(|j| {
                if k > 1 {
                    0.5 + 0.2 * j as f64 / (k - 1) as f64
                } else {
                    0.6
                }
            })
            .collect();
        let tot = (k * (k + 1) / 2) as f64;
        let weights: Vec<f64> = (1..=k).map(|j| j as f64 / tot).collect();
        let assignment: Vec<usize> = (0..n_cells)
            .map(|_| crate::math::pick_index(&weights, rng.random()))
            .collect();
        let gate = t.gate.as_ref().map(|g| vec![g.clone(); k]);
        t.mixture = Some(MixtureTruth {
            r,
            p,
            p_gene: None,
            gate,
            weights,
            assignment,
        });
        t
    }
}

/// Draws `u_cg ~ π_g δ_0 + (1−π_g) NB(r_g, p̂_cg)`, `p̂_cg = p_g ν_c / (1 − p_g(1 − ν_c))`
/// (`p_g = p` unless `p_gene` is set).
pub fn simulate_nb(truth: &NbTruth, seed: u64) -> CountMatrix {
    let g_n = truth.r.len();
    let rows: Vec<Vec<(u32, u32)>> = (0..truth.n_cells)
        .map(|c| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c as u64 + 1);
            let nu = truth.nu.as_ref().map_or(1.0, |v| v[c]);
            let (r, p, p_gene, gate) = match &truth.mixture {
                Some(m) => {
                    let k = m.assignment[c];
                    (
                        &m.r[k],
                        m.p[k],
                        m.p_gene.as_ref().map(|v| &v[k]),
                        m.gate.as_ref().map(|g| &g[k]),
                    )
                }
                None => (
                    &truth.r,
                    truth.p,
                    truth.p_gene.as_ref(),
                    truth.gate.as_ref(),
                ),
            };
            let odds_of = |p: f64| {
                let p_hat = p * nu / (1.0 - p * (1.0 - nu));
                p_hat / (1.0 - p_hat)
            };
            let shared_odds = odds_of(p);
            let mut row = Vec::new();
            for g in 0..g_n {
                let odds = p_gene.map_or(shared_odds, |pg| odds_of(pg[g]));
                if let Some(gate) = gate {
                    if rng.random::<f64>() < gate[g] {
                        continue;
                    }
                }
                let u = match &truth.omega {
                    // BNB: the count's success probability is Beta(α, κ) around p̂.
                    Some(om) => {
                        let o = crate::dist::draw::bnb_odds(&mut rng, r[g], odds, om[g]);
                        nb_count(&mut rng, r[g], o)
                    }
                    None => nb_count(&mut rng, r[g], odds),
                };
                if u > 0 {
                    row.push((g as u32, u));
                }
            }
            row
        })
        .collect();
    CountMatrix::from_cell_rows(g_n, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_means_match_truth() {
        let truth = NbTruth {
            r: vec![2.0, 0.5],
            p: 0.6,
            p_gene: None,
            omega: None,
            nu: None,
            gate: None,
            n_cells: 20_000,
            mixture: None,
        };
        let m = simulate_nb(&truth, 3);
        let dense = m.to_dense();
        for g in 0..2 {
            let mean: f64 =
                (0..m.n_cells).map(|c| dense[c * 2 + g]).sum::<f64>() / m.n_cells as f64;
            let want = truth.r[g] * 0.6 / 0.4;
            assert!(
                (mean - want).abs() < 0.05 * want,
                "gene {g}: {mean} vs {want}"
            );
        }
    }

    #[test]
    fn simulation_is_reproducible() {
        let t = NbTruth::random(Variant::Zinbvcp, 10, 30, 1);
        assert_eq!(simulate_nb(&t, 5).counts, simulate_nb(&t, 5).counts);
        assert_ne!(simulate_nb(&t, 5).counts, simulate_nb(&t, 6).counts);
    }
}
