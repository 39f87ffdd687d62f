//! NUTS on targets with known answers, calibration on data simulated from
//! the NB models, and reproducibility across thread counts.

use scribe_core::dist::Link;
use scribe_core::mcmc::{self, LogDensity, MassMatrix, McmcConfig, McmcFit, Start};
use scribe_core::models::nb::simulate::{simulate_nb, NbTruth};
use scribe_core::models::nb::{NbModel, NbSpec, Parameterization, Variant};
use scribe_core::models::Model;
use scribe_core::progress::{NeverCancel, NoProgress};

fn cfg(n_samples: usize, n_warmup: usize, n_chains: usize, seed: u64) -> McmcConfig {
    McmcConfig {
        n_samples,
        n_warmup,
        n_chains,
        seed,
        ..Default::default()
    }
}

/// Draws of coordinate `k` over all chains.
fn coord(fit: &McmcFit, k: usize) -> Vec<f64> {
    fit.chains
        .iter()
        .flat_map(|c| c.draws.chunks(fit.dim).map(move |d| d[k]))
        .collect()
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
    )
}

struct Gaussian {
    mean: Vec<f64>,
    sd: Vec<f64>,
}
impl LogDensity for Gaussian {
    fn dim(&self) -> usize {
        self.mean.len()
    }
    fn logp(&mut self, x: &[f64], grad: &mut [f64]) -> f64 {
        let mut lp = 0.0;
        for k in 0..x.len() {
            let z = (x[k] - self.mean[k]) / self.sd[k];
            lp -= 0.5 * z * z;
            grad[k] = -z / self.sd[k];
        }
        lp
    }
}

#[test]
fn gaussian_100d_with_unequal_scales() {
    let d = 100;
    // Scales over three orders of magnitude.
    let sd: Vec<f64> = (0..d)
        .map(|k| 10f64.powf(-1.0 + 3.0 * k as f64 / (d - 1) as f64))
        .collect();
    let mean: Vec<f64> = (0..d).map(|k| (k as f64 * 0.37).sin() * 3.0).collect();
    let make = || Gaussian {
        mean: mean.clone(),
        sd: sd.clone(),
    };
    let fit = mcmc::sample(
        make,
        &cfg(1000, 1000, 4, 11),
        &Start::Uniform { radius: 2.0 },
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    let n_div: usize = fit
        .chains
        .iter()
        .map(|c| c.diverging.iter().filter(|&&v| v).count())
        .sum();
    assert_eq!(n_div, 0);
    let (mut worst_m, mut worst_v) = (0.0f64, 0.0f64);
    for k in 0..d {
        let (m, v) = mean_var(&coord(&fit, k));
        // 4000 draws with ESS of at least ~1000: 5 Monte-Carlo standard errors.
        worst_m = worst_m.max(((m - mean[k]) / sd[k]).abs());
        worst_v = worst_v.max((v / (sd[k] * sd[k]) - 1.0).abs());
    }
    assert!(worst_m < 0.16, "worst standardized mean error {worst_m}");
    assert!(worst_v < 0.25, "worst relative variance error {worst_v}");
    for c in &fit.chains {
        assert!(c.e_bfmi() > 0.5, "E-BFMI {}", c.e_bfmi());
    }
}

/// Neal's funnel: `v ~ N(0, 3)`, `x_k | v ~ N(0, e^{v/2})`.
struct Funnel(usize);
impl LogDensity for Funnel {
    fn dim(&self) -> usize {
        self.0 + 1
    }
    fn logp(&mut self, x: &[f64], grad: &mut [f64]) -> f64 {
        let v = x[0];
        let mut lp = -v * v / 18.0;
        grad[0] = -v / 9.0;
        let s2 = v.exp();
        for k in 1..x.len() {
            lp += -0.5 * x[k] * x[k] / s2 - 0.5 * v;
            grad[k] = -x[k] / s2;
            grad[0] += 0.5 * x[k] * x[k] / s2 - 0.5;
        }
        lp
    }
}

#[test]
fn funnel_divergences_are_reported() {
    // The neck (v < −3) is where fixed-step leapfrog fails; NUTS must flag it
    // with divergent transitions rather than silently under-sample it.
    let fit = mcmc::sample(
        || Funnel(9),
        &cfg(4000, 1000, 4, 3),
        &Start::Uniform { radius: 2.0 },
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    let n_div: usize = fit
        .chains
        .iter()
        .map(|c| c.diverging.iter().filter(|&&v| v).count())
        .sum();
    assert!(
        n_div > 0,
        "the funnel's neck should produce divergent transitions"
    );
    // Tree depth and step size are recorded per draw.
    assert!(fit
        .chains
        .iter()
        .all(|c| c.tree_depth.len() == 4000 && c.step_size.iter().all(|s| *s > 0.0)));
}

/// With r pinned by a very tight prior, nbdm's p has the conjugate posterior
/// Beta(1 + Σu, 1 + C Σ_g r_g) (pmf ∝ p^u (1 − p)^r).
#[test]
fn conjugate_nb_posterior() {
    let (g, c) = (20, 200);
    let truth = NbTruth {
        r: vec![2.0; g],
        p: 0.3,
        p_gene: None,
        omega: None,
        nu: None,
        gate: None,
        n_cells: c,
        mixture: None,
    };
    let data = simulate_nb(&truth, 5);
    let mut spec = NbSpec::new(
        Variant::Nbdm,
        Parameterization::Canonical,
        false,
        Link::Softplus,
    );
    spec.set_prior("r", 2f64.ln(), 1e-5).unwrap();
    let model = NbModel::new(spec, &data).unwrap();
    let fit = mcmc::run(
        &model,
        &cfg(1000, 500, 4, 9),
        &Start::Uniform { radius: 2.0 },
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    let b = model.layout().find("p").unwrap().offset;
    let p: Vec<f64> = coord(&fit, b)
        .iter()
        .map(|x| 1.0 / (1.0 + (-x).exp()))
        .collect();
    let (m, v) = mean_var(&p);
    let total: f64 = data.counts.iter().map(|&u| u as f64).sum();
    let (a, bb) = (1.0 + total, 1.0 + (c * g) as f64 * 2.0);
    let (em, ev) = (a / (a + bb), a * bb / ((a + bb).powi(2) * (a + bb + 1.0)));
    assert!((m - em).abs() < 0.1 * ev.sqrt() + 1e-4, "mean {m} vs {em}");
    assert!((v / ev - 1.0).abs() < 0.2, "variance {v} vs {ev}");
}

#[test]
fn same_seed_same_draws_with_1_and_2_threads() {
    let truth = NbTruth::random(Variant::Nbvcp, 30, 60, 4);
    let data = simulate_nb(&truth, 5);
    let model = NbModel::new(
        NbSpec::new(
            Variant::Nbvcp,
            Parameterization::MeanOdds,
            false,
            Link::Softplus,
        ),
        &data,
    )
    .unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            mcmc::run(
                &model,
                &cfg(100, 100, 3, 21),
                &Start::Uniform { radius: 2.0 },
                &NoProgress,
                &NeverCancel,
            )
            .unwrap()
        })
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a, b);
    // Chains differ from each other.
    assert_ne!(a.chains[0].draws, a.chains[1].draws);
}

#[test]
fn cancel_stops_chains() {
    struct Soon(std::sync::atomic::AtomicUsize);
    impl scribe_core::progress::ChainProgress for Soon {
        fn chain(&self, _: &scribe_core::progress::ChainStatus) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    struct After<'a>(&'a Soon);
    impl scribe_core::progress::Cancel for After<'_> {
        fn cancelled(&self) -> bool {
            self.0 .0.load(std::sync::atomic::Ordering::Relaxed) > 50
        }
    }
    let soon = Soon(Default::default());
    let res = mcmc::sample(
        || Funnel(3),
        &cfg(1000, 1000, 2, 1),
        &Start::Uniform { radius: 2.0 },
        &soon,
        &After(&soon),
    );
    assert!(matches!(
        res.unwrap_err(),
        scribe_core::CoreError::Cancelled(_)
    ));
}

#[test]
fn low_rank_mass_matrix_samples_a_correlated_gaussian() {
    // x = A z with strongly correlated coordinates; the low-rank adaptation
    // must still give the right marginal variances.
    struct Corr;
    impl LogDensity for Corr {
        fn dim(&self) -> usize {
            2
        }
        fn logp(&mut self, x: &[f64], grad: &mut [f64]) -> f64 {
            // Precision of [[1, .95], [.95, 1]].
            let det = 1.0 - 0.95f64 * 0.95;
            let (a, b) = (1.0 / det, -0.95 / det);
            grad[0] = -(a * x[0] + b * x[1]);
            grad[1] = -(b * x[0] + a * x[1]);
            -0.5 * (a * x[0] * x[0] + 2.0 * b * x[0] * x[1] + a * x[1] * x[1])
        }
    }
    let mut c = cfg(2000, 1000, 2, 5);
    c.mass_matrix = MassMatrix::LowRank;
    let fit = mcmc::sample(
        || Corr,
        &c,
        &Start::Uniform { radius: 2.0 },
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    for k in 0..2 {
        let (m, v) = mean_var(&coord(&fit, k));
        assert!(
            m.abs() < 0.15 && (v - 1.0).abs() < 0.2,
            "coordinate {k}: mean {m}, var {v}"
        );
    }
}

/// Posterior 90% intervals of nbvcp's parameters cover the truth at about
/// the nominal rate when the truth is drawn from the prior.
#[test]
fn nbvcp_interval_coverage() {
    use rand::{RngExt, SeedableRng};
    let (g, c) = (100, 100);
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(77);
    let truth = NbTruth {
        r: (0..g)
            .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal).exp())
            .collect(),
        p: rng.random_range(0.2..0.8),
        p_gene: None,
        omega: None,
        nu: Some((0..c).map(|_| rng.random_range(0.05..0.95)).collect()),
        gate: None,
        n_cells: c,
        mixture: None,
    };
    let data = simulate_nb(&truth, 78);
    let model = NbModel::new(
        NbSpec::new(
            Variant::Nbvcp,
            Parameterization::Canonical,
            false,
            Link::Softplus,
        ),
        &data,
    )
    .unwrap();
    let fit = mcmc::run(
        &model,
        &cfg(1000, 1000, 4, 79),
        &Start::Uniform { radius: 2.0 },
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    let lay = model.layout();
    let mut covered = 0;
    let mut total = 0;
    let mut check = |k: usize, truth_x: f64| {
        let mut v = coord(&fit, k);
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (lo, hi) = (
            v[(0.05 * v.len() as f64) as usize],
            v[(0.95 * v.len() as f64) as usize],
        );
        total += 1;
        if lo <= truth_x && truth_x <= hi {
            covered += 1;
        }
    };
    let b = lay.find("r").unwrap();
    for j in 0..g {
        check(b.offset + j, b.link.inverse(truth.r[j]));
    }
    let b = lay.find("p").unwrap();
    check(b.offset, b.link.inverse(truth.p));
    let b = lay.find("p_capture").unwrap();
    for j in 0..c {
        check(b.offset + j, b.link.inverse(truth.nu.as_ref().unwrap()[j]));
    }
    let rate = covered as f64 / total as f64;
    // 201 parameters: the binomial standard error at 90% is about 2%.
    assert!(
        (0.85..=0.95).contains(&rate),
        "coverage {rate} over {total} parameters"
    );
}

/// Simulation-based calibration of nbdm: over datasets drawn from the prior,
/// the rank of the true p among (thinned) posterior draws is uniform.
#[test]
fn nbdm_sbc_rank_of_p_is_uniform() {
    use rand::{RngExt, SeedableRng};
    let n_sets = 60;
    let n_bins = 5;
    let mut counts = vec![0usize; n_bins];
    for set in 0..n_sets {
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1000 + set as u64);
        let (g, c) = (5, 30);
        let p: f64 = rng.random_range(0.0..1.0);
        let p = p.clamp(0.02, 0.98);
        let truth = NbTruth {
            r: (0..g)
                .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal).exp())
                .collect(),
            p,
            p_gene: None,
            omega: None,
            nu: None,
            gate: None,
            n_cells: c,
            mixture: None,
        };
        let data = simulate_nb(&truth, 2000 + set as u64);
        let model = NbModel::new(
            NbSpec::new(
                Variant::Nbdm,
                Parameterization::Canonical,
                false,
                Link::Softplus,
            ),
            &data,
        )
        .unwrap();
        let fit = mcmc::run(
            &model,
            &cfg(400, 300, 1, set as u64),
            &Start::Uniform { radius: 2.0 },
            &NoProgress,
            &NeverCancel,
        )
        .unwrap();
        let b = model.layout().find("p").unwrap();
        let x_true = b.link.inverse(p);
        // Thin by 8 against autocorrelation: 50 draws, ranks 0..=50.
        let v = coord(&fit, b.offset);
        let thin: Vec<f64> = v.iter().step_by(8).copied().collect();
        let rank = thin.iter().filter(|&&x| x < x_true).count();
        counts[(rank * n_bins / (thin.len() + 1)).min(n_bins - 1)] += 1;
    }
    let e = n_sets as f64 / n_bins as f64;
    let chi2: f64 = counts.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
    // χ²(4) upper 0.1% point is 18.47: lenient, so only real miscalibration fails.
    assert!(chi2 < 18.47, "rank histogram {counts:?}, chi2 = {chi2}");
}
