//! Laplace PLN: recovery of μ and of the span of W on data simulated from a
//! PLN with a known rank-3 covariance.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Poisson, StandardNormal};
use scribe_core::data::CountMatrix;
use scribe_core::laplace::{run_pln, LaplaceConfig};
use scribe_core::progress::{NeverCancel, NoProgress};
use scribe_core::svi::optim::OptimizerConfig;

/// Columns of an orthonormal basis of the span of a row-major `g × k` matrix.
fn basis(w: &[f64], g: usize, k: usize) -> Vec<Vec<f64>> {
    let mut cols: Vec<Vec<f64>> = (0..k)
        .map(|j| (0..g).map(|i| w[i * k + j]).collect())
        .collect();
    for j in 0..k {
        for p in 0..j {
            let dot: f64 = cols[j].iter().zip(&cols[p]).map(|(a, b)| a * b).sum();
            let cp = cols[p].clone();
            cols[j].iter_mut().zip(&cp).for_each(|(a, b)| *a -= dot * b);
        }
        let n = cols[j].iter().map(|v| v * v).sum::<f64>().sqrt();
        cols[j].iter_mut().for_each(|v| *v /= n);
    }
    cols
}

#[test]
fn pln_recovers_mean_and_loading_span() {
    let (g, n, k) = (40, 600, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mu: Vec<f64> = (0..g).map(|_| rng.random_range(0.5..2.5)).collect();
    let w: Vec<f64> = (0..g * k)
        .map(|_| 0.5 * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let mut dense = vec![0u32; g * n];
    for c in 0..n {
        let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        for i in 0..g {
            let x = mu[i]
                + (0..k).map(|j| w[i * k + j] * z[j]).sum::<f64>()
                + 0.2 * rng.sample::<f64, _>(StandardNormal);
            dense[i + c * g] = rng.sample(Poisson::new(x.exp()).unwrap()) as u32;
        }
    }
    let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
    for c in 0..n {
        for i in 0..g {
            if dense[i + c * g] > 0 {
                idx.push(i as i32);
                val.push(dense[i + c * g] as f64);
            }
        }
        p.push(idx.len() as i32);
    }
    let data = CountMatrix::from_csc(g, n, &p, &idx, &val).unwrap();
    let cfg = LaplaceConfig {
        latent_dim: k,
        n_steps: 400,
        optimizer: OptimizerConfig::Adam {
            step_size: 0.02,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        },
        ..Default::default()
    };
    let fit = run_pln(&data, &cfg, &NoProgress, &NeverCancel).unwrap();
    assert!(fit.aborted.is_none(), "{:?}", fit.aborted);
    let h = &fit.loss_history;
    assert!(h[h.len() - 1] < h[0], "loss {} -> {}", h[0], h[h.len() - 1]);
    let err = (0..g)
        .map(|i| (fit.mu[i] - mu[i]).abs())
        .fold(0.0f64, f64::max);
    assert!(err < 0.25, "max |mu error| {err}");
    // Principal angles: the singular values of Q_trueᵀ Q_fit are their cosines.
    let (a, b) = (basis(&w, g, k), basis(&fit.w, g, k));
    let mut m = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            m[i * k + j] = a[i].iter().zip(&b[j]).map(|(x, y)| x * y).sum();
        }
    }
    // Smallest cosine² = smallest eigenvalue of MᵀM ≥ cos²(largest angle).
    let mtm: Vec<f64> = (0..k * k)
        .map(|ij| {
            let (i, j) = (ij / k, ij % k);
            (0..k).map(|p| m[p * k + i] * m[p * k + j]).sum()
        })
        .collect();
    // For 3×3 use the characteristic bound via the trace and determinant check.
    let tr: f64 = (0..k).map(|i| mtm[i * k + i]).sum();
    assert!(tr > k as f64 * 0.95, "sum of cos² of principal angles {tr}");
    assert!(
        fit.grad_norms.iter().all(|v| *v < 1e-3),
        "max grad norm {:?}",
        fit.grad_norms.iter().cloned().fold(0.0f64, f64::max)
    );
}

#[test]
fn same_seed_same_fit_with_1_and_2_threads() {
    let (g, n) = (15, 90);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
    for _ in 0..n {
        for i in 0..g {
            let v: u32 = rng.sample(Poisson::new(2.0).unwrap()) as u32;
            if v > 0 {
                idx.push(i as i32);
                val.push(v as f64);
            }
        }
        p.push(idx.len() as i32);
    }
    let data = CountMatrix::from_csc(g, n, &p, &idx, &val).unwrap();
    let cfg = LaplaceConfig {
        latent_dim: 2,
        n_steps: 30,
        batch_size: Some(40),
        ..Default::default()
    };
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| run_pln(&data, &cfg, &NoProgress, &NeverCancel).unwrap())
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn pln_with_capture_tracks_per_cell_capture() {
    let (g, n, k) = (30, 300, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mu: Vec<f64> = (0..g).map(|_| rng.random_range(1.0..3.0)).collect();
    let w: Vec<f64> = (0..g * k)
        .map(|_| 0.4 * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let eta_true: Vec<f64> = (0..n).map(|_| rng.random_range(0.05..1.5)).collect();
    let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
    for &eta in &eta_true {
        let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        for i in 0..g {
            let x = mu[i]
                + (0..k).map(|j| w[i * k + j] * z[j]).sum::<f64>()
                + 0.2 * rng.sample::<f64, _>(StandardNormal);
            let v = rng.sample(Poisson::new((x - eta).exp()).unwrap()) as u32;
            if v > 0 {
                idx.push(i as i32);
                val.push(v as f64);
            }
        }
        p.push(idx.len() as i32);
    }
    let data = CountMatrix::from_csc(g, n, &p, &idx, &val).unwrap();
    // ln M0: the expected library size at full capture.
    let m0: f64 = mu.iter().map(|m| (m + 0.1).exp()).sum();
    let cfg = LaplaceConfig {
        latent_dim: k,
        n_steps: 200,
        capture: Some((m0.ln(), 0.5)),
        optimizer: OptimizerConfig::Adam {
            step_size: 0.02,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        },
        ..Default::default()
    };
    let fit = run_pln(&data, &cfg, &NoProgress, &NeverCancel).unwrap();
    assert!(fit.aborted.is_none(), "{:?}", fit.aborted);
    assert_eq!(fit.eta.len(), n);
    assert!(fit.grad_norms.iter().all(|v| *v < 1e-3));
    // η̂ orders cells like the true capture (Spearman-like: Pearson on ranks).
    let rank = |v: &[f64]| {
        let mut o: Vec<usize> = (0..v.len()).collect();
        o.sort_by(|&a, &b| v[a].partial_cmp(&v[b]).unwrap());
        let mut r = vec![0.0; v.len()];
        for (i, &j) in o.iter().enumerate() {
            r[j] = i as f64;
        }
        r
    };
    let (a, b) = (rank(&fit.eta), rank(&eta_true));
    let m = (n as f64 - 1.0) / 2.0;
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - m) * (y - m)).sum();
    let var: f64 = a.iter().map(|x| (x - m).powi(2)).sum();
    assert!(cov / var > 0.8, "rank correlation {}", cov / var);
}

#[test]
fn horseshoe_prior_recovers_the_rank() {
    let (g, n, k_true) = (40, 400, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mu: Vec<f64> = (0..g).map(|_| rng.random_range(1.0..2.5)).collect();
    let w: Vec<f64> = (0..g * k_true)
        .map(|_| 0.6 * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
    for _ in 0..n {
        let z: Vec<f64> = (0..k_true).map(|_| rng.sample(StandardNormal)).collect();
        for i in 0..g {
            let x = mu[i]
                + (0..k_true).map(|j| w[i * k_true + j] * z[j]).sum::<f64>()
                + 0.2 * rng.sample::<f64, _>(StandardNormal);
            let v = rng.sample(Poisson::new(x.exp()).unwrap()) as u32;
            if v > 0 {
                idx.push(i as i32);
                val.push(v as f64);
            }
        }
        p.push(idx.len() as i32);
    }
    let data = CountMatrix::from_csc(g, n, &p, &idx, &val).unwrap();
    let cfg = LaplaceConfig {
        latent_dim: 10,
        n_steps: 1500,
        loadings_prior: scribe_core::laplace::w_prior::LoadingsPrior::HorseshoeColumnwise {
            tau_scale: 1.0,
            lambda_min: 1e-3,
            tau_min: 1e-3,
            init_scale: 1.0,
        },
        optimizer: OptimizerConfig::Adam {
            step_size: 0.02,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        },
        ..Default::default()
    };
    let fit = run_pln(&data, &cfg, &NoProgress, &NeverCancel).unwrap();
    assert_eq!(fit.w_prior.effective_rank, 3, "{:?}", fit.w_prior);
}
