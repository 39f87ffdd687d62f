//! Generative simulators for the NB family (used by recovery tests and users).
//!
//! Each cell draws from its own random stream derived from `(seed, cell)`, so
//! the simulated matrix does not depend on how the work is scheduled.

use super::nb::Variant;
use crate::data::CountMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Poisson};

/// True parameters of an NB-family data set (canonical form).
#[derive(Debug, Clone, PartialEq)]
pub struct NbTruth {
    pub r: Vec<f64>,
    pub p: f64,
    /// Capture probability per cell (`None` for nbdm/zinb).
    pub nu: Option<Vec<f64>>,
    /// Zero-inflation gate per gene (`None` for nbdm/nbvcp).
    pub gate: Option<Vec<f64>>,
    pub n_cells: usize,
}

impl NbTruth {
    /// A plausible random truth: `r ~ LogNormal(0, 1)`, `p = 0.6`, `ν ~ Beta(4, 4)`,
    /// gates `~ Beta(1, 4)` on a third of the genes and 0 elsewhere.
    pub fn random(variant: Variant, n_genes: usize, n_cells: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = (0..n_genes).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal).exp()).collect();
        let nu = variant.has_capture().then(|| {
            let beta = rand_distr::Beta::new(4.0, 4.0).expect("valid Beta");
            (0..n_cells).map(|_| beta.sample(&mut rng)).collect()
        });
        let gate = variant.has_gate().then(|| {
            let beta = rand_distr::Beta::new(1.0, 4.0).expect("valid Beta");
            (0..n_genes).map(|g| if g % 3 == 0 { beta.sample(&mut rng) } else { 0.0 }).collect()
        });
        NbTruth { r, p: 0.6, nu, gate, n_cells }
    }
}

/// Draws `u_cg ~ π_g δ_0 + (1−π_g) NB(r_g, p̂_c)`, `p̂_c = p ν_c / (1 − p(1 − ν_c))`.
pub fn simulate_nb(truth: &NbTruth, seed: u64) -> CountMatrix {
    let g_n = truth.r.len();
    let rows: Vec<Vec<(u32, u32)>> = (0..truth.n_cells)
        .map(|c| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c as u64 + 1);
            let nu = truth.nu.as_ref().map_or(1.0, |v| v[c]);
            let p = truth.p;
            let p_hat = p * nu / (1.0 - p * (1.0 - nu));
            let odds = p_hat / (1.0 - p_hat);
            let mut row = Vec::new();
            for g in 0..g_n {
                if let Some(gate) = &truth.gate {
                    if rng.random::<f64>() < gate[g] {
                        continue;
                    }
                }
                let u = nb_draw(&mut rng, truth.r[g], odds);
                if u > 0 {
                    row.push((g as u32, u));
                }
            }
            row
        })
        .collect();
    CountMatrix::from_cell_rows(g_n, &rows)
}

/// One NB draw as a Gamma–Poisson mixture: `λ ~ Gamma(r, odds)`, `u ~ Poisson(λ)`.
pub fn nb_draw<R: Rng>(rng: &mut R, r: f64, odds: f64) -> u32 {
    let lambda = Gamma::new(r, odds).expect("positive shape and scale").sample(rng);
    if lambda <= 0.0 || !lambda.is_finite() {
        return 0;
    }
    let u: f64 = Poisson::new(lambda).expect("positive rate").sample(rng);
    u.min(u32::MAX as f64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_means_match_truth() {
        let truth = NbTruth { r: vec![2.0, 0.5], p: 0.6, nu: None, gate: None, n_cells: 20_000 };
        let m = simulate_nb(&truth, 3);
        let dense = m.to_dense();
        for g in 0..2 {
            let mean: f64 = (0..m.n_cells).map(|c| dense[c * 2 + g]).sum::<f64>() / m.n_cells as f64;
            let want = truth.r[g] * 0.6 / 0.4;
            assert!((mean - want).abs() < 0.05 * want, "gene {g}: {mean} vs {want}");
        }
    }

    #[test]
    fn simulation_is_reproducible() {
        let t = NbTruth::random(Variant::Zinbvcp, 10, 30, 1);
        assert_eq!(simulate_nb(&t, 5).counts, simulate_nb(&t, 5).counts);
        assert_ne!(simulate_nb(&t, 5).counts, simulate_nb(&t, 6).counts);
    }
}
