//! Downstream analyses on parameter draws: exact formulas on hand-computed
//! cases, dense references, invariances.
#![allow(clippy::needless_range_loop)]

use scribe_core::data::CountMatrix;
use scribe_core::math::lgamma;
use scribe_core::models::nb::simulate::{simulate_nb, NbTruth};
use scribe_core::models::nb::Variant;
use scribe_core::posterior::nb::denoise::{denoise, Method};
use scribe_core::posterior::nb::draws::NbDraws;
use scribe_core::posterior::nb::loglik::{log_likelihood, responsibilities, By};
use scribe_core::posterior::nb::normalize::{dirichlet_samples, mean_composition};
use scribe_core::posterior::nb::predictive::predictive;
use scribe_core::progress::Ctl;

fn one_cell(counts: &[u32]) -> CountMatrix {
    let row: Vec<(u32, u32)> = counts
        .iter()
        .enumerate()
        .map(|(g, &u)| (g as u32, u))
        .collect();
    CountMatrix::from_cell_rows(counts.len(), &[row])
}

fn draws(
    variant: Variant,
    r: Vec<f64>,
    p: f64,
    nu: Option<f64>,
    gate: Option<Vec<f64>>,
) -> NbDraws {
    let g = r.len();
    NbDraws {
        variant,
        n_draws: 1,
        n_comp: 1,
        n_genes: g,
        n_cells: if nu.is_some() { 1 } else { 0 },
        r,
        p: vec![p],
        p_gene: None,
        omega: None,
        nu: nu.map(|v| vec![v]),
        gate,
        weights: vec![1.0],
        cell_comp: None,
    }
}

#[test]
fn denoising_a_captured_count_follows_the_nb_posterior() {
    // r = 2, p = 0.5, ν = 0.5: pp = 0.25, q = 0.75; u = 3.
    let d = draws(Variant::Nbvcp, vec![2.0], 0.5, Some(0.5), None);
    let data = one_cell(&[3]);
    let (mean, var) = denoise(
        &d,
        &data,
        &[0],
        Method::Mean,
        Method::Mean,
        true,
        1,
        Ctl::none(),
    )
    .unwrap();
    assert!((mean[0] - 3.5 / 0.75).abs() < 1e-12);
    assert!((var.unwrap()[0] - 5.0 * 0.25 / 0.5625).abs() < 1e-12);
    let (mode, _) = denoise(
        &d,
        &data,
        &[0],
        Method::Mode,
        Method::Mode,
        false,
        1,
        Ctl::none(),
    )
    .unwrap();
    assert_eq!(mode[0], 3.0 + (4.0f64 * 0.25 / 0.75).floor());
    // Without capture a nonzero count is its own denoised value.
    let d0 = draws(Variant::Nbdm, vec![2.0], 0.5, None, None);
    let (m0, v0) = denoise(
        &d0,
        &data,
        &[0],
        Method::Sample,
        Method::Sample,
        true,
        1,
        Ctl::none(),
    )
    .unwrap();
    assert_eq!((m0[0], v0.unwrap()[0]), (3.0, 0.0));
}

#[test]
fn denoising_a_zinb_zero_mixes_gate_and_nb_pathways() {
    // zinb, r = 2, p = 0.5, gate 0.3, no capture: π0 = 0.25, w = 0.3/(0.3 + 0.7·0.25).
    let d = draws(
        Variant::Zinb,
        vec![2.0, 2.0],
        0.5,
        None,
        Some(vec![0.3, 0.3]),
    );
    let data = one_cell(&[0, 4]);
    let w = 0.3 / (0.3 + 0.7 * 0.25);
    let (mean, var) = denoise(
        &d,
        &data,
        &[0, 1],
        Method::Mean,
        Method::Mean,
        true,
        1,
        Ctl::none(),
    )
    .unwrap();
    assert!((mean[0] - w * 2.0).abs() < 1e-12, "{}", mean[0]);
    // Var = w·Vg + (1−w)·0 + w(1−w)(Mg − 0)², Vg = r p/(1−p)² = 4.
    assert!((var.as_ref().unwrap()[0] - (w * 4.0 + w * (1.0 - w) * 4.0)).abs() < 1e-12);
    assert_eq!(mean[1], 4.0);
    // Mode: w > 0.5 → the gate pathway's mode ⌊(r−1)p/(1−p)⌋ = 1.
    let (mode, _) = denoise(
        &d,
        &data,
        &[0],
        Method::Mode,
        Method::Mode,
        false,
        1,
        Ctl::none(),
    )
    .unwrap();
    assert_eq!(mode[0], 1.0);
}

#[test]
fn normalization_of_a_two_gene_toy() {
    let d = draws(Variant::Nbdm, vec![1.0, 3.0], 0.4, None, None);
    assert_eq!(mean_composition(&d), vec![0.25, 0.75]);
    let s = dirichlet_samples(&d, 20_000, 3).unwrap();
    let m0: f64 = s.chunks(2).map(|x| x[0]).sum::<f64>() / 20_000.0;
    assert!((m0 - 0.25).abs() < 0.01, "{m0}");
    assert!(s.chunks(2).all(|x| (x[0] + x[1] - 1.0).abs() < 1e-12));
}

fn dense_ll(d: &NbDraws, data: &CountMatrix, c: usize, g: usize, k: usize) -> f64 {
    let dense = data.to_dense();
    let u = dense[c * data.n_genes + g];
    let r = d.r_of(0, k)[g];
    let p = d.p_at(0, k, g);
    let nu = d.nu_of(0, c);
    let ph = p * nu / (1.0 - p * (1.0 - nu));
    let lnb = lgamma(u + r) - lgamma(r) - lgamma(u + 1.0)
        + match d.omega_at(0, g) {
            None => u * ph.ln() + r * (1.0 - ph).ln(),
            Some(om) => scribe_core::models::nb::bnb_ratio(u as u32, r, om, ph / (1.0 - ph)),
        };
    match d.gate_of(0, k) {
        None => lnb,
        Some(pi) if u == 0.0 => (pi[g] + (1.0 - pi[g]) * lnb.exp()).ln(),
        Some(pi) => (1.0 - pi[g]).ln() + lnb,
    }
}

fn toy_draws(variant: Variant, k: usize, data: &CountMatrix) -> NbDraws {
    let g = data.n_genes;
    let c = data.n_cells;
    NbDraws {
        variant,
        n_draws: 1,
        n_comp: k,
        n_genes: g,
        n_cells: c,
        r: (0..k * g).map(|j| 0.3 + (j % 7) as f64 * 0.4).collect(),
        p: (0..k).map(|j| 0.4 + 0.1 * j as f64).collect(),
        p_gene: None,
        omega: None,
        nu: variant
            .has_capture()
            .then(|| (0..c).map(|j| 0.2 + 0.05 * (j % 9) as f64).collect()),
        gate: variant
            .has_gate()
            .then(|| (0..k * g).map(|j| 0.05 * (j % 5) as f64).collect()),
        weights: (1..=k)
            .map(|j| j as f64 / (k * (k + 1) / 2) as f64)
            .collect(),
        cell_comp: None,
    }
}

#[test]
fn log_likelihoods_match_the_dense_pmf() {
    for variant in Variant::ALL {
        // k = 0: one component with a gene-specific p; 3: BNB; 4: both.
        for k in [1usize, 2, 0, 3, 4] {
            let data = simulate_nb(&NbTruth::random(variant, 9, 11, 2), 3);
            let n_comp = if k == 2 { 2 } else { 1 };
            let mut d = toy_draws(variant, n_comp, &data);
            if k == 0 || k == 4 {
                d.p_gene = Some((0..9).map(|g| 0.2 + 0.07 * g as f64).collect());
                d.p = vec![f64::NAN];
            }
            if k >= 3 {
                d.omega = Some((0..9).map(|g| 0.05 + 0.3 * g as f64).collect());
            }
            let k = n_comp;
            let by_cell = log_likelihood(&d, &data, By::Cell, false, Ctl::none()).unwrap();
            let by_gene = log_likelihood(&d, &data, By::Gene, false, Ctl::none()).unwrap();
            for c in 0..data.n_cells {
                let terms: Vec<f64> = (0..k)
                    .map(|kk| {
                        d.ln_w(0, kk)
                            + (0..data.n_genes)
                                .map(|g| dense_ll(&d, &data, c, g, kk))
                                .sum::<f64>()
                    })
                    .collect();
                let want = scribe_core::posterior::nb::loglik::logsumexp(&terms);
                assert!(
                    (by_cell[c] - want).abs() < 1e-9 * want.abs(),
                    "{variant:?} K={k} cell {c}"
                );
            }
            for g in 0..data.n_genes {
                let terms: Vec<f64> = (0..k)
                    .map(|kk| {
                        d.ln_w(0, kk)
                            + (0..data.n_cells)
                                .map(|c| dense_ll(&d, &data, c, g, kk))
                                .sum::<f64>()
                    })
                    .collect();
                let want = scribe_core::posterior::nb::loglik::logsumexp(&terms);
                assert!(
                    (by_gene[g] - want).abs() < 1e-9 * want.abs(),
                    "{variant:?} K={k} gene {g}"
                );
            }
            if k > 1 {
                let resp = responsibilities(&d, &data, Ctl::none()).unwrap();
                for c in 0..data.n_cells {
                    let s: f64 = (0..k).map(|kk| resp[c + data.n_cells * kk]).sum();
                    assert!((s - 1.0).abs() < 1e-12);
                }
            }
        }
    }
}

#[test]
fn predictive_draws_do_not_depend_on_cell_chunking() {
    let data = simulate_nb(&NbTruth::random(Variant::Zinbvcp, 6, 10, 1), 2);
    let d = toy_draws(Variant::Zinbvcp, 2, &data);
    let all: Vec<usize> = (0..10).collect();
    let full = predictive(&d, &all, &[1, 4], false, 9, Ctl::none()).unwrap();
    let part = predictive(&d, &all[4..7], &[1, 4], false, 9, Ctl::none()).unwrap();
    for (ci, c) in (4..7).enumerate() {
        for j in 0..2 {
            assert_eq!(part[ci + 3 * j], full[c + 10 * j]);
        }
    }
}

#[test]
fn predictive_means_match_the_model() {
    // nbvcp, one gene: E u = r p̂/(1 − p̂).
    let c_n = 4000;
    let truth = NbTruth {
        r: vec![2.0],
        p: 0.6,
        p_gene: None,
        omega: None,
        nu: Some(vec![0.5; c_n]),
        gate: None,
        n_cells: c_n,
        mixture: None,
    };
    let data = simulate_nb(&truth, 1);
    let d = NbDraws {
        variant: Variant::Nbvcp,
        n_draws: 1,
        n_comp: 1,
        n_genes: 1,
        n_cells: c_n,
        r: vec![2.0],
        p: vec![0.6],
        p_gene: None,
        omega: None,
        nu: Some(vec![0.5; c_n]),
        gate: None,
        weights: vec![1.0],
        cell_comp: None,
    };
    let cells: Vec<usize> = (0..c_n).collect();
    let y = predictive(&d, &cells, &[0], false, 4, Ctl::none()).unwrap();
    let mean = y.iter().sum::<f64>() / c_n as f64;
    let ph = 0.3 / (1.0 - 0.6 * 0.5);
    let want = 2.0 * ph / (1.0 - ph);
    assert!((mean - want).abs() < 0.05 * want, "{mean} vs {want}");
    let _ = data;
}

#[test]
fn gene_specific_p_reduces_to_shared_p_when_all_genes_agree() {
    use scribe_core::posterior::nb::normalize::cell_fractions;
    for variant in Variant::ALL {
        let data = simulate_nb(&NbTruth::random(variant, 7, 12, 4), 5);
        let shared = toy_draws(variant, 1, &data);
        let mut gene = shared.clone();
        gene.p_gene = Some(vec![shared.p[0]; 7]);
        gene.p = vec![f64::NAN];
        let close = |a: &[f64], b: &[f64], what: &str| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() < 1e-9 * y.abs().max(1.0),
                    "{variant:?} {what}: {x} vs {y}"
                );
            }
        };
        for by in [By::Cell, By::Gene] {
            close(
                &log_likelihood(&gene, &data, by, false, Ctl::none()).unwrap(),
                &log_likelihood(&shared, &data, by, false, Ctl::none()).unwrap(),
                "log-likelihood",
            );
        }
        close(
            &mean_composition(&gene),
            &mean_composition(&shared),
            "composition",
        );
        let genes: Vec<usize> = (0..7).collect();
        for m in [Method::Mean, Method::Mode, Method::Sample] {
            let a = denoise(&gene, &data, &genes, m, m, true, 3, Ctl::none()).unwrap();
            let b = denoise(&shared, &data, &genes, m, m, true, 3, Ctl::none()).unwrap();
            close(&a.0, &b.0, "denoised");
        }
        let cells: Vec<usize> = (0..12).collect();
        assert_eq!(
            predictive(&gene, &cells, &genes, false, 2, Ctl::none()).unwrap(),
            predictive(&shared, &cells, &genes, false, 2, Ctl::none()).unwrap()
        );
        // Cell fractions: the Gamma route's mean is the ratio of expected
        // rates, which for a shared p and no capture is Dirichlet's mean.
        if !variant.has_capture() {
            close(
                &cell_fractions(&gene, &data, &genes, false, 1, Ctl::none()).unwrap(),
                &cell_fractions(&shared, &data, &genes, false, 1, Ctl::none()).unwrap(),
                "cell fractions",
            );
        }
    }
}

#[test]
fn gene_specific_p_predictive_means_follow_each_gene() {
    let c_n = 4000;
    let d = NbDraws {
        variant: Variant::Nbvcp,
        n_draws: 1,
        n_comp: 1,
        n_genes: 2,
        n_cells: c_n,
        r: vec![2.0, 2.0],
        p: vec![f64::NAN],
        p_gene: Some(vec![0.3, 0.8]),
        omega: None,
        nu: Some(vec![0.5; c_n]),
        gate: None,
        weights: vec![1.0],
        cell_comp: None,
    };
    let cells: Vec<usize> = (0..c_n).collect();
    let y = predictive(&d, &cells, &[0, 1], false, 4, Ctl::none()).unwrap();
    for (j, p) in [0.3f64, 0.8].into_iter().enumerate() {
        let mean = y[j * c_n..(j + 1) * c_n].iter().sum::<f64>() / c_n as f64;
        let ph = p * 0.5 / (1.0 - p * 0.5);
        let want = 2.0 * ph / (1.0 - ph);
        assert!(
            (mean - want).abs() < 0.06 * want,
            "gene {j}: {mean} vs {want}"
        );
    }
    // The composition follows the means r p/(1−p), not r.
    let m = mean_composition(&d);
    let (a, b) = (2.0 * 0.3 / 0.7, 2.0 * 0.8 / 0.2);
    assert!((m[0] - a / (a + b)).abs() < 1e-12);
}

/// BNB per-cell fractions: as `ω → 0` they become the NB's (Gamma route);
/// draws sum to one per cell, average near the closed-form mean, and spread
/// more than the NB's, in a mixture with capture too.
#[test]
fn bnb_cell_fractions_reduce_to_the_nb_and_spread_more() {
    use scribe_core::posterior::nb::normalize::cell_fractions;
    for (variant, k) in [(Variant::Nbdm, 1), (Variant::Nbvcp, 2)] {
        let data = simulate_nb(&NbTruth::random(variant, 6, 5, 8), 9);
        let mut nb = toy_draws(variant, k, &data);
        nb.p_gene = Some((0..k * 6).map(|j| 0.3 + 0.08 * (j % 6) as f64).collect());
        nb.p = vec![f64::NAN; k];
        let genes: Vec<usize> = (0..6).collect();
        let with_omega = |om: f64| {
            let mut d = nb.clone();
            d.omega = Some(vec![om; 6]);
            d
        };
        // ω is floored at 1e-6, so the limit holds to about that.
        let want = cell_fractions(&nb, &data, &genes, false, 1, Ctl::none()).unwrap();
        let got = cell_fractions(&with_omega(1e-9), &data, &genes, false, 1, Ctl::none()).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4 * b, "{variant:?}: {a} vs {b}");
        }
        // Many draws of one parameter setting.
        let s_n = 4000;
        let repeat = |d: &NbDraws| {
            let mut rep = d.clone();
            rep.n_draws = s_n;
            rep.r = d.r.repeat(s_n);
            rep.p = d.p.repeat(s_n);
            rep.p_gene = d.p_gene.as_ref().map(|v| v.repeat(s_n));
            rep.omega = d.omega.as_ref().map(|v| v.repeat(s_n));
            rep.nu = d.nu.as_ref().map(|v| v.repeat(s_n));
            rep.weights = d.weights.repeat(s_n);
            rep
        };
        let per = 6 * data.n_cells;
        let moments = |d: &NbDraws| -> (Vec<f64>, f64) {
            let draws = cell_fractions(&repeat(d), &data, &genes, true, 3, Ctl::none()).unwrap();
            let avg: Vec<f64> = (0..per)
                .map(|i| (0..s_n).map(|s| draws[s * per + i]).sum::<f64>() / s_n as f64)
                .collect();
            let var: f64 = (0..per)
                .map(|i| {
                    (0..s_n)
                        .map(|s| (draws[s * per + i] - avg[i]).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / (s_n * per) as f64;
            for c in 0..data.n_cells {
                for s in 0..3 {
                    let t: f64 = draws[s * per + c * 6..s * per + (c + 1) * 6].iter().sum();
                    assert!((t - 1.0).abs() < 1e-9);
                }
            }
            (avg, var)
        };
        let heavy = with_omega(5.0);
        let mean = cell_fractions(&heavy, &data, &genes, false, 1, Ctl::none()).unwrap();
        let (avg, var_heavy) = moments(&heavy);
        let (_, var_nb) = moments(&nb);
        assert!(
            var_heavy > 1.1 * var_nb,
            "{variant:?}: {var_heavy} vs {var_nb}"
        );
        if k == 1 {
            // A ratio of expected rates against the expected ratio: close.
            for (a, b) in avg.iter().zip(&mean) {
                assert!((a - b).abs() < 0.05, "{variant:?}: {a} vs {b}");
            }
        }
    }
}
