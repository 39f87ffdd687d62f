//! Laplace fits of PLN and NBLN on data simulated from the models: recovery
//! of μ, of the span of W, of the rank under shrinkage, of capture and of
//! dispersions; reproducibility; the cascade's frozen values.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Gamma, Poisson, StandardNormal};
use scribe_core::data::CountMatrix;
use scribe_core::laplace::w_prior::LoadingsPrior;
use scribe_core::laplace::{run, Capture, Cascade, LaplaceConfig, LaplaceFit, LnModel};
use scribe_core::optim::OptimizerConfig;
use scribe_core::progress::{NeverCancel, NoProgress};

/// Truth and counts of a log-normal model: `x = μ + W z + 0.2 ε`,
/// `u ~ Poisson(e^{x − η})` or, with `r`, `NB(mean e^{x − η}, r)`.
struct Sim {
    data: CountMatrix,
    mu: Vec<f64>,
    w: Vec<f64>,
}

fn simulate(
    g: usize,
    k: usize,
    w_sd: f64,
    mu_range: (f64, f64),
    eta: &[f64],
    r: Option<&[f64]>,
    seed: u64,
) -> Sim {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mu: Vec<f64> = (0..g)
        .map(|_| rng.random_range(mu_range.0..mu_range.1))
        .collect();
    let w: Vec<f64> = (0..g * k)
        .map(|_| w_sd * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
    for &e in eta {
        let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        for i in 0..g {
            let x = mu[i]
                + (0..k).map(|j| w[i * k + j] * z[j]).sum::<f64>()
                + 0.2 * rng.sample::<f64, _>(StandardNormal);
            let mut lam = (x - e).exp();
            if let Some(r) = r {
                lam = rng.sample(Gamma::new(r[i], lam / r[i]).unwrap());
            }
            let v = rng.sample(Poisson::new(lam.max(1e-12)).unwrap()) as u32;
            if v > 0 {
                idx.push(i as i32);
                val.push(v as f64);
            }
        }
        p.push(idx.len() as i32);
    }
    let data = CountMatrix::from_csc(g, eta.len(), &p, &idx, &val).unwrap();
    Sim { data, mu, w }
}

fn adam(step_size: f64) -> OptimizerConfig {
    OptimizerConfig::Adam {
        step_size,
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        clip: None,
    }
}

fn fit(data: &CountMatrix, cfg: &LaplaceConfig) -> LaplaceFit {
    let f = run(data, cfg, &NoProgress, &NeverCancel).unwrap();
    assert!(f.aborted.is_none(), "{:?}", f.aborted);
    f
}

/// The fit on a pool of `threads` threads.
fn fit_on(threads: usize, data: &CountMatrix, cfg: &LaplaceConfig) -> LaplaceFit {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| fit(data, cfg))
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// Pearson correlation of ranks.
fn rank_corr(a: &[f64], b: &[f64]) -> f64 {
    let rank = |v: &[f64]| {
        let mut o: Vec<usize> = (0..v.len()).collect();
        o.sort_by(|&x, &y| v[x].partial_cmp(&v[y]).unwrap());
        let mut r = vec![0.0; v.len()];
        for (i, &j) in o.iter().enumerate() {
            r[j] = i as f64;
        }
        r
    };
    let (ra, rb) = (rank(a), rank(b));
    let m = (a.len() as f64 - 1.0) / 2.0;
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - m) * (y - m)).sum();
    cov / ra.iter().map(|x| (x - m).powi(2)).sum::<f64>()
}

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
    let sim = simulate(g, k, 0.5, (0.5, 2.5), &vec![0.0; n], None, 3);
    let cfg = LaplaceConfig {
        latent_dim: k,
        n_steps: 400,
        optimizer: adam(0.02),
        ..Default::default()
    };
    let f = fit(&sim.data, &cfg);
    let h = &f.loss_history;
    assert!(h[h.len() - 1] < h[0], "loss {} -> {}", h[0], h[h.len() - 1]);
    assert!(
        max_abs_diff(&f.mu, &sim.mu) < 0.25,
        "mu error {}",
        max_abs_diff(&f.mu, &sim.mu)
    );
    // Σ cos² of the principal angles between true and fitted spans (≤ k).
    let (a, b) = (basis(&sim.w, g, k), basis(&f.w, g, k));
    let tr: f64 = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| {
            a[i].iter()
                .zip(&b[j])
                .map(|(x, y)| x * y)
                .sum::<f64>()
                .powi(2)
        })
        .sum();
    assert!(tr > k as f64 * 0.95, "sum of cos² of principal angles {tr}");
    assert!(f.grad_norms.iter().all(|v| *v < 1e-3));
}

#[test]
fn same_seed_same_fit_with_1_and_2_threads() {
    let sim = simulate(15, 2, 0.3, (0.5, 1.0), &vec![0.0; 90], None, 5);
    let cfg = LaplaceConfig {
        latent_dim: 2,
        n_steps: 30,
        batch_size: Some(40),
        ..Default::default()
    };
    assert_eq!(fit_on(1, &sim.data, &cfg), fit_on(2, &sim.data, &cfg));
}

#[test]
fn pln_with_capture_tracks_per_cell_capture() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let eta: Vec<f64> = (0..300).map(|_| rng.random_range(0.05..1.5)).collect();
    let sim = simulate(30, 2, 0.4, (1.0, 3.0), &eta, None, 9);
    // ln M0: the expected library size at full capture.
    let m0: f64 = sim.mu.iter().map(|m| (m + 0.1).exp()).sum();
    let cfg = LaplaceConfig {
        latent_dim: 2,
        n_steps: 200,
        capture: Capture::Anchor {
            ln_m0: m0.ln(),
            sigma: 0.5,
        },
        optimizer: adam(0.02),
        ..Default::default()
    };
    let f = fit(&sim.data, &cfg);
    assert_eq!(f.eta.len(), 300);
    assert!(f.grad_norms.iter().all(|v| *v < 1e-3));
    assert!(
        rank_corr(&f.eta, &eta) > 0.8,
        "rank correlation {}",
        rank_corr(&f.eta, &eta)
    );
}

#[test]
fn horseshoe_prior_recovers_the_rank() {
    let sim = simulate(40, 3, 0.6, (1.0, 2.5), &vec![0.0; 400], None, 11);
    let cfg = LaplaceConfig {
        latent_dim: 10,
        n_steps: 1500,
        loadings_prior: LoadingsPrior::HorseshoeColumnwise {
            tau_scale: 1.0,
            lambda_min: 1e-3,
            tau_min: 1e-3,
            init_scale: 1.0,
        },
        optimizer: adam(0.02),
        ..Default::default()
    };
    let f = fit(&sim.data, &cfg);
    assert_eq!(f.w_prior.effective_rank, 3, "{:?}", f.w_prior);
}

#[test]
fn nbln_recovers_dispersion_and_mean() {
    let (g, n) = (30, 500);
    let r: Vec<f64> = (0..g).map(|i| 0.5 + 0.25 * i as f64).collect();
    let sim = simulate(g, 2, 0.4, (1.0, 3.0), &vec![0.0; n], Some(&r), 21);
    let cfg = LaplaceConfig {
        model: LnModel::Nbln,
        latent_dim: 2,
        n_steps: 600,
        optimizer: adam(0.02),
        ..Default::default()
    };
    let f = fit(&sim.data, &cfg);
    check_nbln_recovery(&f, &sim, &r);
    assert!(f.grad_norms.iter().all(|v| *v < 1e-3));
}

/// μ within 0.3, and log r in the right order and on the right scale.
fn check_nbln_recovery(f: &LaplaceFit, sim: &Sim, r: &[f64]) {
    assert_eq!(f.r.len(), r.len());
    assert!(
        max_abs_diff(&f.mu, &sim.mu) < 0.3,
        "mu error {}",
        max_abs_diff(&f.mu, &sim.mu)
    );
    let (lr, lt): (Vec<f64>, Vec<f64>) = (
        f.r.iter().map(|v| v.ln()).collect(),
        r.iter().map(|v| v.ln()).collect(),
    );
    assert!(
        rank_corr(&lr, &lt) > 0.8,
        "rank corr(log r) {}",
        rank_corr(&lr, &lt)
    );
    let mean_gap = (lr.iter().sum::<f64>() - lt.iter().sum::<f64>()) / r.len() as f64;
    assert!(mean_gap.abs() < 0.4, "mean log r gap {mean_gap}");
}

#[test]
fn cascade_freeze_keeps_frozen_values_bit_identical() {
    let (g, n) = (20, 200);
    let eta: Vec<f64> = (0..n).map(|c| 0.1 + 1.2 * (c as f64 / n as f64)).collect();
    let sim = simulate(g, 2, 0.4, (1.0, 3.0), &eta, Some(&vec![3.0; g]), 22);
    let r_frozen: Vec<f64> = (0..g).map(|i| 1.0 + 0.1 * i as f64).collect();
    let cfg = LaplaceConfig {
        model: LnModel::Nbln,
        latent_dim: 2,
        n_steps: 60,
        batch_size: Some(64),
        capture: Capture::Frozen(eta.clone()),
        cascade: Cascade {
            r_frozen: Some(r_frozen.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let f = fit(&sim.data, &cfg);
    assert_eq!(f.eta, eta);
    // r round-trips through softplus⁻¹ once; it is never updated.
    let again: Vec<f64> = r_frozen
        .iter()
        .map(|&v| scribe_core::math::softplus(scribe_core::math::softplus_inv(v)))
        .collect();
    assert_eq!(f.r, again);
    assert!(max_abs_diff(&f.r, &r_frozen) < 1e-12);
    // Per-cell empirical capture priors run too.
    let cfg = LaplaceConfig {
        capture: Capture::PerCell {
            loc: eta.clone(),
            scale: vec![0.2; n],
        },
        cascade: Cascade::default(),
        ..cfg
    };
    assert!(fit(&sim.data, &cfg).eta.iter().all(|&e| e >= 1e-3));
}

#[test]
fn lnm_recovers_log_ratio_mean_loadings_and_totals() {
    let (g1, n, k) = (25, 500, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mu: Vec<f64> = (0..g1).map(|_| rng.random_range(-3.0..-1.0)).collect();
    let w: Vec<f64> = (0..g1 * k)
        .map(|_| 0.5 * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
    let mut totals = 0.0;
    for _ in 0..n {
        let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        // Log-ratios against the last gene, the most abundant one (logit 0).
        let mut logits: Vec<f64> = (0..g1)
            .map(|i| {
                mu[i]
                    + (0..k).map(|j| w[i * k + j] * z[j]).sum::<f64>()
                    + 0.1 * rng.sample::<f64, _>(StandardNormal)
            })
            .collect();
        logits.push(0.0);
        let tot: f64 = logits.iter().map(|v| v.exp()).sum();
        for (i, l) in logits.iter().enumerate() {
            let v = rng.sample(Poisson::new(3000.0 * l.exp() / tot).unwrap()) as u32;
            totals += v as f64;
            if v > 0 {
                idx.push(i as i32);
                val.push(v as f64);
            }
        }
        p.push(idx.len() as i32);
    }
    let data = CountMatrix::from_csc(g1 + 1, n, &p, &idx, &val).unwrap();
    let cfg = LaplaceConfig {
        model: LnModel::Lnm,
        latent_dim: k,
        n_steps: 400,
        optimizer: adam(0.02),
        ..Default::default()
    };
    // d_mode = "low_rank": Newton over z; its MAP log-ratios recover μ too.
    let low = fit(
        &data,
        &LaplaceConfig {
            lnm_low_rank: true,
            ..cfg.clone()
        },
    );
    assert!(
        max_abs_diff(&low.mu, &mu) < 0.3,
        "low-rank mu error {}",
        max_abs_diff(&low.mu, &mu)
    );
    assert_eq!(low.latents.len(), n * g1);
    assert!(low.grad_norms.iter().all(|v| *v < 1e-3));
    let f = fit(&data, &cfg);
    assert_eq!(f.reference, Some(g1));
    assert!(
        max_abs_diff(&f.mu, &mu) < 0.2,
        "mu error {}",
        max_abs_diff(&f.mu, &mu)
    );
    let (a, b) = (basis(&w, g1, k), basis(&f.w, g1, k));
    let tr: f64 = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| {
            a[i].iter()
                .zip(&b[j])
                .map(|(x, y)| x * y)
                .sum::<f64>()
                .powi(2)
        })
        .sum();
    assert!(tr > k as f64 * 0.9, "sum of cos² of principal angles {tr}");
    let mean_total = totals / n as f64;
    assert!(
        (f.totals[0] / mean_total - 1.0).abs() < 0.05,
        "mu_T {} vs {mean_total}",
        f.totals[0]
    );
    assert!(f.grad_norms.iter().all(|v| *v < 1e-3));
}

#[test]
fn lnmvcp_tracks_capture_through_the_totals() {
    let (g1, n) = (10, 300);
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let eta_true: Vec<f64> = (0..n).map(|_| rng.random_range(0.1..1.5)).collect();
    let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
    for &e in &eta_true {
        let mut logits: Vec<f64> = (0..g1)
            .map(|i| -1.0 - 0.1 * i as f64 + 0.3 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        logits.push(0.0);
        let tot: f64 = logits.iter().map(|v| v.exp()).sum();
        // Totals: NB(mean M0 e^{−η}, shape 20) with M0 = 5000.
        let mean = 5000.0 * (-e).exp();
        let lam: f64 = rng.sample(Gamma::new(20.0, mean / 20.0).unwrap());
        for (i, l) in logits.iter().enumerate() {
            let v = rng.sample(Poisson::new(lam * l.exp() / tot).unwrap()) as u32;
            if v > 0 {
                idx.push(i as i32);
                val.push(v as f64);
            }
        }
        p.push(idx.len() as i32);
    }
    let data = CountMatrix::from_csc(g1 + 1, n, &p, &idx, &val).unwrap();
    let cfg = LaplaceConfig {
        model: LnModel::Lnm,
        latent_dim: 2,
        n_steps: 300,
        capture: Capture::Anchor {
            ln_m0: 5000f64.ln(),
            sigma: 0.3,
        },
        optimizer: adam(0.02),
        ..Default::default()
    };
    let f = fit(&data, &cfg);
    assert_eq!(f.eta.len(), n);
    assert!(
        rank_corr(&f.eta, &eta_true) > 0.8,
        "rank corr {}",
        rank_corr(&f.eta, &eta_true)
    );
    assert!(f.grad_norms.iter().all(|v| *v < 1e-3));
}

#[test]
fn early_stopping_stops_and_restores_the_smoothed_best() {
    let sim = simulate(15, 2, 0.3, (0.5, 1.5), &vec![0.0; 100], None, 51);
    let es = scribe_core::optim::early_stop::EarlyStopping {
        enabled: true,
        patience: 30,
        // No later window can improve by this much: stop after `patience`.
        min_delta: 1e12,
        min_delta_pct: None,
        check_every: 10,
        warmup: 20,
        smoothing_window: 10,
        restore_best: true,
    };
    let cfg = LaplaceConfig {
        latent_dim: 2,
        n_steps: 500,
        early_stopping: Some(es),
        ..Default::default()
    };
    let f = fit(&sim.data, &cfg);
    assert!(f.early_stopped);
    assert!(
        f.loss_history.len() < 100,
        "ran {} steps",
        f.loss_history.len()
    );
    assert_eq!(f.restored_step, Some(21));
}

/// Ctrl-C inside an outer step: the sweep polls per chunk of cells, so a
/// request that arrives after the step began stops the fit in that step
/// (before, the flag was read once per outer step), for the outer steps, the
/// final sweep and the rescue pass alike.
#[test]
fn cancel_is_polled_inside_a_sweep() {
    use scribe_core::progress::Cancel;
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Cancelled from the `after`-th poll on.
    struct After {
        polls: AtomicUsize,
        after: usize,
    }
    impl Cancel for After {
        fn cancelled(&self) -> bool {
            self.polls.fetch_add(1, Ordering::SeqCst) >= self.after
        }
    }
    let sim = simulate(30, 2, 0.3, (0.0, 1.5), &vec![0.0; 200], None, 5);
    let cfg = LaplaceConfig {
        latent_dim: 2,
        n_steps: 3,
        settle: None,
        mu_warm_rounds: 0,
        ..LaplaceConfig::default()
    };
    // 200 cells are 7 chunks of 32: poll 1 is the outer loop's at step 1,
    // polls 2..8 the chunks of its sweep.
    for after in [1, 4, 3 * 8 + 1 + 3] {
        let cancel = After {
            polls: AtomicUsize::new(0),
            after,
        };
        let err = run(&sim.data, &cfg, &NoProgress, &cancel).unwrap_err();
        assert_eq!(err.kind(), scribe_core::error::ErrorKind::Interrupt);
        let polls = cancel.polls.load(Ordering::SeqCst);
        // Stopped within the sweep it was in: at most one more chunk
        // per thread started after the flag.
        assert!(polls <= after + 8 + 1, "after {after}: {polls} polls");
        let done = err.partial().unwrap().loss_history.len();
        assert_eq!(done, (after - 1) / 8, "after {after}");
    }
}

/// The μ warm start: on sparse genes (true μ in [−2.5, −0.5], where the
/// log(u + 1) start sits well above), rounds of (Newton sweep, μ ← mean of
/// the MAPs) leave μ closer to the truth (a third less error here: with the
/// start's small prior variance the MAPs of sparse genes move little, so
/// each round closes only part of the gap) and the first loss lower than
/// the plain start after the same single outer step; and a Ctrl-C during
/// those rounds stops the fit before its first step.
#[test]
fn mu_starts_at_the_mean_of_the_maps() {
    let sim = simulate(40, 2, 0.3, (-2.5, -0.5), &vec![0.0; 300], None, 11);
    let fit = |rounds: usize| {
        let cfg = LaplaceConfig {
            latent_dim: 2,
            n_steps: 1,
            settle: None,
            mu_warm_rounds: rounds,
            rescue_diverged_cells: false,
            ..LaplaceConfig::default()
        };
        run(&sim.data, &cfg, &NoProgress, &NeverCancel).unwrap()
    };
    let (plain, warm) = (fit(0), fit(10));
    let err = |f: &LaplaceFit| {
        f.mu.iter()
            .zip(&sim.mu)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / sim.mu.len() as f64
    };
    assert!(warm.newton.warm_steps > 0 && plain.newton.warm_steps == 0);
    assert!(
        err(&warm) < 0.75 * err(&plain),
        "mean |mu error|: warm {} plain {}",
        err(&warm),
        err(&plain)
    );
    assert!(warm.loss_history[0] < plain.loss_history[0]);

    use scribe_core::progress::Cancel;
    struct Always;
    impl Cancel for Always {
        fn cancelled(&self) -> bool {
            true
        }
    }
    let cfg = LaplaceConfig {
        latent_dim: 2,
        n_steps: 3,
        ..LaplaceConfig::default()
    };
    let e = run(&sim.data, &cfg, &NoProgress, &Always).unwrap_err();
    assert_eq!(e.kind(), scribe_core::error::ErrorKind::Interrupt);
    assert_eq!(e.partial().unwrap().loss_history.len(), 0);
}

/// L-BFGS on the outer loss, with the settled rule off so steps compare.
fn lbfgs(cfg: LaplaceConfig) -> LaplaceConfig {
    LaplaceConfig {
        lbfgs_memory: Some(10),
        settle: None,
        ..cfg
    }
}

#[test]
fn lbfgs_recovers_pln_in_fewer_steps_than_adam() {
    let (g, n, k) = (40, 600, 3);
    let sim = simulate(g, k, 0.5, (0.5, 2.5), &vec![0.0; n], None, 3);
    let base = LaplaceConfig {
        latent_dim: k,
        n_steps: 60,
        settle: None,
        ..Default::default()
    };
    let q = fit(&sim.data, &lbfgs(base.clone()));
    // Adam at a step size 20× its default takes 400 steps to come close;
    // L-BFGS stops on its own (48 steps when this test was written).
    assert!(q.stop == scribe_core::optim::StopReason::LineSearch);
    let a = fit(
        &sim.data,
        &LaplaceConfig {
            optimizer: adam(0.02),
            n_steps: 400,
            ..base
        },
    );
    let lq = *q.loss_history.last().unwrap();
    let la = a.loss_history[..60]
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let la400 = a.loss_history[399];
    // The rest points differ (loss at re-solved MAPs vs the fixed-MAP
    // gradient), by 0.014 in μ when this test was written.
    assert!(
        max_abs_diff(&q.mu, &a.mu) < 0.05,
        "{}",
        max_abs_diff(&q.mu, &a.mu)
    );
    assert!(lq < la, "L-BFGS loss {lq} vs Adam {la} in 60 steps");
    assert!(
        lq < la400 + 1e-4 * la400.abs(),
        "L-BFGS loss {lq} vs Adam {la400} after 400 steps"
    );
    assert!(
        q.loss_history.windows(2).all(|w| w[1] <= w[0]),
        "the line search only accepts decreases"
    );
    assert!(max_abs_diff(&q.mu, &sim.mu) < 0.25);
    let (b0, b1) = (basis(&sim.w, g, k), basis(&q.w, g, k));
    let tr: f64 = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| {
            b0[i]
                .iter()
                .zip(&b1[j])
                .map(|(x, y)| x * y)
                .sum::<f64>()
                .powi(2)
        })
        .sum();
    assert!(tr > k as f64 * 0.95, "sum of cos² of principal angles {tr}");
    // Every step visits all cells, and rejected trials count too.
    assert!(q.newton.outer_cell_visits >= q.loss_history.len() * n);
}

#[test]
fn lbfgs_recovers_nbln_dispersions() {
    let (g, n) = (30, 500);
    let r: Vec<f64> = (0..g).map(|i| 0.5 + 0.25 * i as f64).collect();
    let sim = simulate(g, 2, 0.4, (1.0, 3.0), &vec![0.0; n], Some(&r), 21);
    let f = fit(
        &sim.data,
        &lbfgs(LaplaceConfig {
            model: LnModel::Nbln,
            latent_dim: 2,
            n_steps: 150,
            ..Default::default()
        }),
    );
    check_nbln_recovery(&f, &sim, &r);
}

#[test]
fn lbfgs_horseshoe_finds_the_rank_without_tuning() {
    let sim = simulate(40, 3, 0.6, (1.0, 2.5), &vec![0.0; 400], None, 11);
    let f = fit(
        &sim.data,
        &lbfgs(LaplaceConfig {
            latent_dim: 8,
            n_steps: 300,
            loadings_prior: LoadingsPrior::HorseshoeColumnwise {
                tau_scale: 1.0,
                lambda_min: 1e-3,
                tau_min: 1e-3,
                init_scale: 1.0,
            },
            ..Default::default()
        }),
    );
    assert_eq!(f.w_prior.effective_rank, 3, "{:?}", f.w_prior);
}

#[test]
fn lbfgs_same_fit_with_1_and_2_threads_and_needs_the_full_batch() {
    let sim = simulate(15, 2, 0.3, (0.5, 1.0), &vec![0.0; 90], None, 5);
    let cfg = lbfgs(LaplaceConfig {
        latent_dim: 2,
        n_steps: 20,
        ..Default::default()
    });
    assert_eq!(fit_on(1, &sim.data, &cfg), fit_on(2, &sim.data, &cfg));
    let err = run(
        &sim.data,
        &LaplaceConfig {
            batch_size: Some(40),
            ..cfg.clone()
        },
        &NoProgress,
        &NeverCancel,
    )
    .unwrap_err();
    assert!(err.to_string().contains("full batch"), "{err}");
    for m in [0, 101] {
        let err = run(
            &sim.data,
            &LaplaceConfig {
                lbfgs_memory: Some(m),
                ..cfg.clone()
            },
            &NoProgress,
            &NeverCancel,
        )
        .unwrap_err();
        assert!(err.to_string().contains("between 1 and 100"), "{err}");
    }
}
