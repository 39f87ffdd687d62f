//! Guide families against NUTS: a low-rank guide over `r` and `p` recovers
//! the posterior correlations that a mean-field guide cannot express, and a
//! flow guide the curved dependence that no Gaussian can. The flow's metric:
//! the mean absolute difference of each coordinate's 5/25/50/75/95 %
//! quantiles from NUTS's, in units of NUTS's standard deviation (IQR/1.349).

use scribe_core::dist::Link;
use scribe_core::mcmc::{self, McmcConfig, Start};
use scribe_core::models::nb::simulate::{simulate_nb, NbTruth};
use scribe_core::models::nb::{NbModel, NbSpec, Parameterization, Variant};
use scribe_core::models::Model;
use scribe_core::optim::OptimizerConfig;
use scribe_core::progress::{NeverCancel, NoProgress};
use scribe_core::svi::guide::{Guide, LowRank, MeanField};
use scribe_core::svi::{initial_params, run, SviConfig};

fn corr(c: &[f64], m: usize, i: usize, j: usize) -> f64 {
    c[i * m + j] / (c[i * m + i] * c[j * m + j]).sqrt()
}

/// SVI by Adam from the guide's starting point: `steps` at step size 0.005,
/// then as many at 0.0005 (single-sample gradients leave the factor noisy at
/// the larger step). Returns the parameters and the mean loss of the last 2000 steps.
fn svi<G: Guide>(model: &NbModel, guide: &G, steps: usize) -> (Vec<f64>, f64) {
    let cfg = |step_size: f64, seed: u64| SviConfig {
        n_steps: steps,
        optimizer: OptimizerConfig::Adam {
            step_size,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        },
        early_stopping: None,
        settle: None,
        seed,
        ..Default::default()
    };
    let first = run(
        model,
        guide,
        initial_params(model, guide),
        &cfg(0.005, 1),
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    let fit = run(
        model,
        guide,
        first.params,
        &cfg(0.0005, 2),
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    let tail = &fit.loss_history[steps - 2000..];
    (fit.params, tail.iter().sum::<f64>() / tail.len() as f64)
}

#[test]
fn joint_low_rank_matches_nuts_correlations_and_beats_mean_field() {
    let truth = NbTruth::random(Variant::Nbdm, 6, 60, 3);
    let data = simulate_nb(&truth, 4);
    let spec = NbSpec::new(Variant::Nbdm, Parameterization::Canonical, false, Link::Exp);
    let model = NbModel::new(spec, &data).unwrap();
    let lay = model.layout().clone();
    let (r0, p0) = (lay.blocks[0].offset, lay.blocks[1].offset);
    let coords = [r0, r0 + 1, r0 + 2, p0];
    // NUTS: the reference covariance of (x_r1, x_r2, x_r3, x_p).
    let cfg = McmcConfig {
        n_samples: 2000,
        n_warmup: 1000,
        n_chains: 4,
        seed: 5,
        ..Default::default()
    };
    let fit = mcmc::run(
        &model,
        &cfg,
        &Start::Uniform { radius: 1.0 },
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    let draws: Vec<&[f64]> = fit
        .chains
        .iter()
        .flat_map(|c| c.draws.chunks(fit.dim))
        .collect();
    let m = coords.len();
    let mean: Vec<f64> = coords
        .iter()
        .map(|&k| draws.iter().map(|d| d[k]).sum::<f64>() / draws.len() as f64)
        .collect();
    let mut nuts = vec![0.0; m * m];
    for d in &draws {
        for i in 0..m {
            for j in 0..m {
                nuts[i * m + j] +=
                    (d[coords[i]] - mean[i]) * (d[coords[j]] - mean[j]) / draws.len() as f64;
            }
        }
    }
    assert!(
        corr(&nuts, m, 0, 3) < -0.5,
        "the test needs a strong correlation: {}",
        corr(&nuts, m, 0, 3)
    );
    // Joint low-rank guide over r and p.
    let guide = LowRank::new(&lay, "r", &["r".to_string(), "p".to_string()], 2).unwrap();
    let (v, loss_lr) = svi(&model, &guide, 8000);
    let n = lay.total;
    let k = guide.rank;
    let g = &guide.groups[0];
    let row = |c: usize| g.iter().position(|&j| j == c).unwrap();
    let mut q = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            let (a, b) = (row(coords[i]), row(coords[j]));
            q[i * m + j] = (0..k)
                .map(|c| v[2 * n + a * k + c] * v[2 * n + b * k + c])
                .sum::<f64>();
            if i == j {
                q[i * m + j] += (2.0 * v[n + coords[i]]).exp();
            }
        }
    }
    for (i, j) in [(0, 3), (1, 3), (0, 1), (1, 2)] {
        let (a, b) = (corr(&q, m, i, j), corr(&nuts, m, i, j));
        assert!(
            (a - b).abs() < 0.1,
            "corr[{i},{j}]: low-rank {a:.3} vs NUTS {b:.3}"
        );
    }
    // Its converged loss (−ELBO) is no worse than mean-field's.
    let (_, loss_mf) = svi(&model, &MeanField { dim: n }, 8000);
    assert!(
        loss_lr <= loss_mf + 0.05,
        "low-rank {loss_lr} vs mean-field {loss_mf}"
    );
    eprintln!("losses: low-rank {loss_lr:.3}, mean-field {loss_mf:.3}");
}

/// Each coordinate's 5, 25, 50, 75 and 95 % quantiles of `draws`.
fn quantiles(draws: &[Vec<f64>], coords: &[usize]) -> Vec<[f64; 5]> {
    coords
        .iter()
        .map(|&k| {
            let mut v: Vec<f64> = draws.iter().map(|d| d[k]).collect();
            v.sort_by(f64::total_cmp);
            let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
            [q(0.05), q(0.25), q(0.5), q(0.75), q(0.95)]
        })
        .collect()
}

/// Draws of x from a fitted guide.
fn guide_draws<G: Guide>(
    guide: &G,
    params: &[f64],
    layout: &scribe_core::models::Layout,
    n: usize,
) -> Vec<Vec<f64>> {
    use scribe_core::posterior::Summary;
    use scribe_core::progress::Ctl;
    let fitted = guide.fitted(params);
    let sites = fitted
        .sampled_sites(layout, Summary::Draws { n, seed: 8 }, Ctl::none())
        .unwrap();
    // Back to x through each block's link (r: softplus, p: logit).
    (0..n)
        .map(|s| {
            let mut x = vec![0.0; layout.total];
            for (b, site) in layout.blocks.iter().zip(&sites) {
                for j in 0..b.len {
                    x[b.offset + j] = b.link.inverse(site.values[j * n + s]);
                }
            }
            x
        })
        .collect()
}

#[test]
fn flow_guide_follows_a_curved_posterior_better_than_mean_field() {
    use scribe_core::nn::flows::FlowConfig;
    use scribe_core::svi::guide::Flow;
    // Two near-Poisson genes (large r) and few cells: under the softplus
    // link the posterior of (x_r, logit p) bends along r·p/(1 − p) = mean.
    let truth = NbTruth {
        r: vec![20.0, 8.0],
        p: 0.2,
        ..NbTruth::random(Variant::Nbdm, 2, 80, 1)
    };
    let data = simulate_nb(&truth, 6);
    let spec = NbSpec::new(
        Variant::Nbdm,
        Parameterization::Canonical,
        false,
        Link::Softplus,
    );
    let model = NbModel::new(spec, &data).unwrap();
    let lay = model.layout().clone();
    let cfg = McmcConfig {
        n_samples: 4000,
        n_warmup: 1000,
        n_chains: 4,
        seed: 5,
        ..Default::default()
    };
    let fit = mcmc::run(
        &model,
        &cfg,
        &Start::Uniform { radius: 1.0 },
        &NoProgress,
        &NeverCancel,
    )
    .unwrap();
    let nuts: Vec<Vec<f64>> = fit
        .chains
        .iter()
        .flat_map(|c| c.draws.chunks(fit.dim).map(<[f64]>::to_vec))
        .collect();
    let coords: Vec<usize> = (0..lay.total).collect();
    let q_nuts = quantiles(&nuts, &coords);
    let sd: Vec<f64> = q_nuts.iter().map(|q| (q[3] - q[1]) / 1.349).collect();
    let err = |draws: &[Vec<f64>]| {
        let q = quantiles(draws, &coords);
        let mut e = 0.0;
        for (i, (a, b)) in q.iter().zip(&q_nuts).enumerate() {
            for k in 0..5 {
                e += (a[k] - b[k]).abs() / sd[i];
            }
        }
        e / (5 * coords.len()) as f64
    };
    let flow = Flow::new(
        &lay,
        "r",
        &["r".to_string(), "p".to_string()],
        &FlowConfig::default(),
    )
    .unwrap();
    let (vf, loss_f) = svi(&model, &flow, 8000);
    let mf = MeanField { dim: lay.total };
    let (vm, loss_m) = svi(&model, &mf, 8000);
    let (e_flow, e_mf) = (
        err(&guide_draws(&flow, &vf, &lay, 8000)),
        err(&guide_draws(&mf, &vm, &lay, 8000)),
    );
    eprintln!("quantile error (NUTS sd units): flow {e_flow:.3}, mean-field {e_mf:.3}; losses flow {loss_f:.3}, mean-field {loss_m:.3}");
    let spline_cfg = FlowConfig {
        kind: scribe_core::nn::flows::FlowKind::SplineCoupling,
        ..FlowConfig::default()
    };
    let spline = Flow::new(&lay, "r", &["r".to_string(), "p".to_string()], &spline_cfg).unwrap();
    let (vs, loss_s) = svi(&model, &spline, 8000);
    let e_spline = err(&guide_draws(&spline, &vs, &lay, 8000));
    eprintln!("spline flow: quantile error {e_spline:.3}, loss {loss_s:.3}");
    let iaf_cfg = FlowConfig {
        kind: scribe_core::nn::flows::FlowKind::Iaf,
        ..FlowConfig::default()
    };
    let iaf = Flow::new(&lay, "r", &["r".to_string(), "p".to_string()], &iaf_cfg).unwrap();
    let (vi, loss_i) = svi(&model, &iaf, 8000);
    let e_iaf = err(&guide_draws(&iaf, &vi, &lay, 8000));
    eprintln!("iaf: quantile error {e_iaf:.3}, loss {loss_i:.3}");
    // Measured: affine flow 0.07, IAF 0.05, spline flow 0.42, mean-field
    // 0.74; losses 330.3, 330.3, 331.0 and 332.1. A spline moves mass only
    // inside [−3, 3] (the identity outside), so it shifts a coordinate with
    // the others less freely than the affine maps: the original recommends
    // affine coupling for guides.
    for (name, e) in [("affine", e_flow), ("iaf", e_iaf)] {
        assert!(
            e < 0.5 * e_mf && e < 0.2,
            "{name} flow {e} vs mean-field {e_mf}"
        );
    }
    assert!(
        e_spline < e_mf,
        "spline flow {e_spline} vs mean-field {e_mf}"
    );
    for (name, l) in [("affine", loss_f), ("spline", loss_s), ("iaf", loss_i)] {
        assert!(l <= loss_m + 0.05, "{name} flow {l} vs mean-field {loss_m}");
    }
}
