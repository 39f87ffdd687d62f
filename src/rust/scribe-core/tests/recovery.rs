//! Engine-level recovery: SVI on data simulated from each NB model recovers
//! the parameters that the data identify.

use scribe_core::dist::Link;
use scribe_core::models::nb::simulate::{simulate_nb, NbTruth};
use scribe_core::models::nb::{NbModel, NbSpec, Parameterization, Variant};
use scribe_core::models::Model;
use scribe_core::optim::OptimizerConfig;
use scribe_core::posterior::{nb::sites, Summary};
use scribe_core::progress::{Ctl, NeverCancel, NoProgress};
use scribe_core::svi::guide::{Guide, MeanField};
use scribe_core::svi::{initial_params, run, SviConfig};

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// SVI of the mean-field guide from its starting point with Adam (step size 0.01).
fn run_adam(model: &NbModel, steps: usize, batch: Option<usize>) -> scribe_core::svi::SviFit {
    let guide = MeanField {
        dim: model.layout().total,
    };
    let init = initial_params(model, &guide);
    let cfg = SviConfig {
        n_steps: steps,
        batch_size: batch,
        optimizer: OptimizerConfig::Adam {
            step_size: 0.01,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        },
        ..Default::default()
    };
    run(model, &guide, init, &cfg, &NoProgress, &NeverCancel).unwrap()
}

fn fit(
    variant: Variant,
    param: Parameterization,
    steps: usize,
    batch: Option<usize>,
) -> (NbTruth, Vec<scribe_core::posterior::Site>, Vec<f64>) {
    let truth = NbTruth::random(variant, 200, 800, 1);
    let data = simulate_nb(&truth, 2);
    let model = NbModel::new(NbSpec::new(variant, param, false, Link::Softplus), &data).unwrap();
    let (res, s) = fit_point(&model, steps, batch);
    (truth, s, res.loss_history)
}

/// Runs [`run_adam`] and returns the fit with its point-summary sites.
fn fit_point(
    model: &NbModel,
    steps: usize,
    batch: Option<usize>,
) -> (scribe_core::svi::SviFit, Vec<scribe_core::posterior::Site>) {
    let res = run_adam(model, steps, batch);
    let fitted = MeanField {
        dim: model.layout().total,
    }
    .fitted(&res.params);
    let s = sites(
        &model.spec,
        model.layout(),
        fitted.as_ref(),
        Summary::Point,
        Ctl::none(),
    )
    .unwrap();
    (res, s)
}

fn site<'a>(s: &'a [scribe_core::posterior::Site], n: &str) -> &'a [f64] {
    &s.iter().find(|x| x.name == n).unwrap().values
}

#[test]
fn nbdm_recovers_r_and_p() {
    let (truth, sites, _) = fit(Variant::Nbdm, Parameterization::Canonical, 1500, None);
    let lr: Vec<f64> = site(&sites, "r").iter().map(|v| v.ln()).collect();
    let lt: Vec<f64> = truth.r.iter().map(|v| v.ln()).collect();
    assert!(corr(&lr, &lt) > 0.95, "corr {}", corr(&lr, &lt));
    let p = site(&sites, "p")[0];
    assert!((p - truth.p).abs() < 0.1 * truth.p, "p {p}");
}

#[test]
fn nbvcp_recovers_effective_probability() {
    let (truth, sites, _) = fit(Variant::Nbvcp, Parameterization::MeanOdds, 1500, Some(256));
    let nu = truth.nu.as_ref().unwrap();
    let want: Vec<f64> = nu
        .iter()
        .map(|&v| truth.p * v / (1.0 - truth.p * (1.0 - v)))
        .collect();
    let got = site(&sites, "p_hat");
    assert!(corr(got, &want) > 0.9, "corr {}", corr(got, &want));
}

#[test]
fn nbdm_mixture_recovers_components_and_weights() {
    let k = 3;
    let truth = NbTruth::random_mixture(Variant::Nbdm, 150, 1200, k, 4);
    let data = simulate_nb(&truth, 5);
    let mut spec = NbSpec::new(
        Variant::Nbdm,
        Parameterization::Canonical,
        false,
        Link::Softplus,
    );
    spec.set_mixture(k, &["r", "p"], 1.0).unwrap();
    let model = NbModel::new(spec, &data).unwrap();
    let (_, sites) = fit_point(&model, 2000, None);
    let g_n = 150;
    let r = site(&sites, "r");
    let w = site(&sites, "mixing_weights");
    let mt = truth.mixture.as_ref().unwrap();
    // Best matching of fitted to true components by correlation of log r.
    let perms = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let score = |perm: &[usize; 3]| -> f64 {
        (0..k)
            .map(|j| {
                let fit: Vec<f64> = r[perm[j] * g_n..(perm[j] + 1) * g_n]
                    .iter()
                    .map(|v| v.ln())
                    .collect();
                let tru: Vec<f64> = mt.r[j].iter().map(|v| v.ln()).collect();
                corr(&fit, &tru)
            })
            .sum::<f64>()
    };
    let best = perms
        .iter()
        .max_by(|a, b| score(a).total_cmp(&score(b)))
        .unwrap();
    for j in 0..k {
        let fit: Vec<f64> = r[best[j] * g_n..(best[j] + 1) * g_n]
            .iter()
            .map(|v| v.ln())
            .collect();
        let tru: Vec<f64> = mt.r[j].iter().map(|v| v.ln()).collect();
        assert!(
            corr(&fit, &tru) > 0.95,
            "component {j}: corr {}",
            corr(&fit, &tru)
        );
        assert!(
            (w[best[j]] - mt.weights[j]).abs() < 0.05,
            "weight {j}: {} vs {}",
            w[best[j]],
            mt.weights[j]
        );
    }
}

#[test]
fn the_starting_guide_is_already_near_the_optimum() {
    // Guards the initialisation (conditional NB MLE, zero-inflation EM,
    // Hessian scales): the first steps' loss is within 0.1 % (NB) or 0.5 %
    // (zero-inflated; an NB-only start is ~3 % off) of the converged loss.
    for (variant, param, tol) in [
        (Variant::Nbdm, Parameterization::Canonical, 1e-3),
        (Variant::Nbvcp, Parameterization::MeanOdds, 1e-3),
        (Variant::Nbvcp, Parameterization::MeanProb, 1e-3),
        (Variant::Zinb, Parameterization::Canonical, 5e-3),
        (Variant::Zinbvcp, Parameterization::MeanOdds, 5e-3),
    ] {
        // Up to 800 steps (the default stopping rule may end the fit sooner).
        let (_, _, losses) = fit(variant, param, 800, None);
        let tail: f64 = losses[losses.len() - 100..].iter().sum::<f64>() / 100.0;
        let head: f64 = losses[..10].iter().sum::<f64>() / 10.0;
        assert!(
            (head - tail).abs() < tol * tail.abs(),
            "{variant:?} {param:?}: first {head} vs final {tail}"
        );
    }
}

/// Gene-specific p: each gene's own variance-to-mean ratio is recovered
/// (logit p_g up to the shift that capture leaves unidentified), for genes
/// expressed well enough to show it.
#[test]
fn gene_specific_p_recovers_each_genes_probability() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    for variant in [Variant::Nbdm, Variant::Nbvcp] {
        let mut truth = NbTruth::random(variant, 200, 800, 11);
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(12);
        let n = Normal::new(0.3, 0.8).unwrap();
        let lp: Vec<f64> = (0..200).map(|_| n.sample(&mut rng)).collect();
        truth.p_gene = Some(lp.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect());
        let data = simulate_nb(&truth, 13);
        let mut spec = NbSpec::new(variant, Parameterization::Canonical, true, Link::Softplus);
        spec.add_hierarchy("p", scribe_core::models::nb::Shrinkage::Gaussian)
            .unwrap();
        let model = NbModel::new(spec, &data).unwrap();
        let (_, s) = fit_point(&model, 2000, None);
        let p = site(&s, "p");
        assert_eq!(p.len(), 200);
        let nu_bar = truth
            .nu
            .as_ref()
            .map_or(1.0, |v| v.iter().sum::<f64>() / 800.0);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for g in 0..200 {
            let pg = truth.p_gene.as_ref().unwrap()[g];
            if truth.r[g] * pg / (1.0 - pg) * nu_bar >= 1.0 {
                got.push((p[g] / (1.0 - p[g])).ln());
                want.push(lp[g]);
            }
        }
        assert!(got.len() >= 40, "{} well-expressed genes", got.len());
        let c = corr(&got, &want);
        assert!(
            c >= 0.9,
            "{variant:?}: corr of logit p_g {c} over {} genes",
            got.len()
        );
        // The hierarchy learns how much genes differ (truth: sd 0.8).
        let scale = site(&s, "logit_p_scale")[0];
        assert!(
            scale > 0.4 && scale < 1.3,
            "{variant:?}: hierarchy scale {scale} (truth 0.8)"
        );
    }
}

/// BNB: each gene's excess dispersion ω_g, for genes with enough counts to
/// show it, and the NB mean kept.
#[test]
fn bnb_recovers_excess_dispersion() {
    let mut truth = NbTruth::random(Variant::Nbdm, 120, 1500, 21);
    truth.r.iter_mut().for_each(|r| *r = 1.0 + 2.0 * *r);
    let om: Vec<f64> = (0..120).map(|g| [0.05, 0.4, 1.5][g % 3]).collect();
    truth.omega = Some(om.clone());
    let data = simulate_nb(&truth, 22);
    let mut spec = NbSpec::new(
        Variant::Nbdm,
        Parameterization::Canonical,
        true,
        Link::Softplus,
    );
    spec.set_bnb(scribe_core::models::nb::Shrinkage::Gaussian)
        .unwrap();
    let model = NbModel::new(spec, &data).unwrap();
    let (_, s) = fit_point(&model, 3000, None);
    let got: Vec<f64> = site(&s, "bnb_concentration")
        .iter()
        .map(|v| v.ln())
        .collect();
    let want: Vec<f64> = om.iter().map(|v| v.ln()).collect();
    let c = corr(&got, &want);
    assert!(c > 0.8, "corr of ln omega {c}");
    // Mean per group, in the right order.
    let mean_of = |k: usize| {
        let v: Vec<f64> = (0..120).filter(|g| g % 3 == k).map(|g| got[g]).collect();
        (v.iter().sum::<f64>() / v.len() as f64).exp()
    };
    let (a, b, c3) = (mean_of(0), mean_of(1), mean_of(2));
    assert!(a < b && b < c3, "group means {a} {b} {c3}");
    let mu = site(&s, "mu");
    let want_mu: Vec<f64> = truth.r.iter().map(|r| r * 0.6 / 0.4).collect();
    assert!(corr(mu, &want_mu) > 0.95);
}

/// Dataset hierarchy on the mean: per-dataset gene parameters follow the
/// simulated batch effects, and a dataset with few cells is pulled toward
/// the gene-level location (shrinkage) more than its raw means are.
#[test]
fn dataset_means_recover_batch_effects_with_shrinkage() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    use scribe_core::models::nb::simulate::MixtureTruth;
    use scribe_core::models::nb::{DatasetP, Shrinkage};
    let (g_n, sizes) = (150, [600usize, 600, 12]);
    let c_n: usize = sizes.iter().sum();
    let mut truth = NbTruth::random(Variant::Nbdm, g_n, c_n, 31);
    truth.r.iter_mut().for_each(|r| *r = 0.5 + 3.0 * *r);
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(32);
    let eff = Normal::new(0.0, 0.4).unwrap();
    let delta: Vec<f64> = (0..g_n).map(|_| eff.sample(&mut rng)).collect();
    // Dataset 1 shifts every gene by exp(δ_g); datasets 0 and 2 share the base.
    let r_of = |d: usize| -> Vec<f64> {
        (0..g_n)
            .map(|g| truth.r[g] * if d == 1 { delta[g].exp() } else { 1.0 })
            .collect()
    };
    let assignment: Vec<usize> = (0..3).flat_map(|d| vec![d; sizes[d]]).collect();
    let mut sim = truth.clone();
    sim.mixture = Some(MixtureTruth {
        r: (0..3).map(r_of).collect(),
        p: vec![truth.p; 3],
        p_gene: None,
        gate: None,
        weights: vec![1.0 / 3.0; 3],
        assignment: assignment.clone(),
    });
    let data = simulate_nb(&sim, 33);
    let mut spec = NbSpec::new(
        Variant::Nbdm,
        Parameterization::Canonical,
        false,
        Link::Softplus,
    );
    spec.set_datasets(assignment.iter().map(|&d| d as u32).collect(), 3)
        .unwrap();
    spec.add_dataset_hierarchy("r", Shrinkage::Gaussian, DatasetP::Shared)
        .unwrap();
    let model = NbModel::new(spec, &data).unwrap();
    let (_, s) = fit_point(&model, 2500, None);
    let r = site(&s, "r");
    assert_eq!(r.len(), 3 * g_n);
    let loc = site(&s, "log_r_dataset_loc");
    let mean_p = truth.p / (1.0 - truth.p);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let (mut shrunk, mut raw) = (0.0, 0.0);
    let dense = data.to_dense();
    let mean_in = |d: usize, g: usize| -> f64 {
        let cells = (0..c_n).filter(|&c| assignment[c] == d);
        let n = sizes[d] as f64;
        (cells.map(|c| dense[c * g_n + g]).sum::<f64>() + 0.5) / n
    };
    for g in 0..g_n {
        if truth.r[g] * mean_p < 1.0 {
            continue;
        }
        got.push((r[g_n + g] / r[g]).ln());
        want.push(delta[g]);
        // Dataset 2 (12 cells) has no effect: its fitted deviation from the
        // gene-level location against its raw log-mean deviation from dataset 0.
        shrunk += (r[2 * g_n + g].ln() - loc[g]).abs();
        raw += (mean_in(2, g) / mean_in(0, g)).ln().abs();
    }
    assert!(got.len() >= 40, "{} well-expressed genes", got.len());
    let c = corr(&got, &want);
    assert!(
        c >= 0.9,
        "corr of log batch effects {c} over {} genes",
        got.len()
    );
    assert!(
        shrunk < 0.7 * raw,
        "small dataset not shrunk: {shrunk} vs raw {raw}"
    );
    let scale = site(&s, "log_r_dataset_scale")[0];
    assert!(
        scale > 0.1 && scale < 0.6,
        "dataset scale {scale} (truth about 0.27)"
    );
}

/// Fitted components matched to the true ones by their weights (the truth's
/// weights of `random_mixture` differ: ∝ 1, 2, …).
fn matched_components(w_fit: &[f64], w_true: &[f64]) -> Vec<usize> {
    let order = |w: &[f64]| {
        let mut o: Vec<usize> = (0..w.len()).collect();
        o.sort_by(|&a, &b| w[a].total_cmp(&w[b]));
        o
    };
    let (of, ot) = (order(w_fit), order(w_true));
    let mut map = vec![0; w_true.len()];
    for (a, b) in of.iter().zip(&ot) {
        map[*b] = *a;
    }
    map
}

/// An unconstrained canonical nbdm mixture of two components over `r` and `p`.
fn nbdm_mixture_of_two() -> NbSpec {
    let mut spec = NbSpec::new(
        Variant::Nbdm,
        Parameterization::Canonical,
        true,
        Link::Softplus,
    );
    spec.set_mixture(2, &["r", "p"], 1.0).unwrap();
    spec
}

/// A mixture whose components each have their own gene-specific `p`:
/// every component's `logit p_kg` is recovered for genes expressed well
/// enough to show it, and so are the weights.
#[test]
fn mixture_with_gene_specific_p_recovers_each_components_probabilities() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let (g_n, c_n) = (100, 1000);
    let mut truth = NbTruth::random_mixture(Variant::Nbdm, g_n, c_n, 2, 31);
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(32);
    let n = Normal::new(0.3, 0.8).unwrap();
    let lp: Vec<Vec<f64>> = (0..2)
        .map(|_| (0..g_n).map(|_| n.sample(&mut rng)).collect())
        .collect();
    let m = truth.mixture.as_mut().unwrap();
    m.p_gene = Some(
        lp.iter()
            .map(|v| v.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect())
            .collect(),
    );
    let data = simulate_nb(&truth, 33);
    let mut spec = nbdm_mixture_of_two();
    spec.add_hierarchy("p", scribe_core::models::nb::Shrinkage::Gaussian)
        .unwrap();
    let model = NbModel::new(spec, &data).unwrap();
    let (_, s) = fit_point(&model, 2000, None);
    let (p, w) = (site(&s, "p"), site(&s, "mixing_weights"));
    assert_eq!(p.len(), 2 * g_n);
    let m = truth.mixture.as_ref().unwrap();
    let map = matched_components(w, &m.weights);
    for k in 0..2 {
        let kf = map[k];
        assert!(
            (w[kf] - m.weights[k]).abs() < 0.05,
            "weight {} vs {}",
            w[kf],
            m.weights[k]
        );
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for g in 0..g_n {
            let pg = m.p_gene.as_ref().unwrap()[k][g];
            if m.r[k][g] * pg / (1.0 - pg) >= 1.0 {
                let pf = p[kf * g_n + g];
                got.push((pf / (1.0 - pf)).ln());
                want.push(lp[k][g]);
            }
        }
        assert!(got.len() >= 30, "{} well-expressed genes", got.len());
        let c = corr(&got, &want);
        assert!(c >= 0.9, "component {k}: corr of logit p_kg {c}");
    }
}

/// BNB in a mixture: `ω_g`, shared by the components, is recovered from
/// cells of two cell types whose means differ on marker genes.
#[test]
fn mixture_with_bnb_recovers_excess_dispersion() {
    let (g_n, c_n) = (90, 1000);
    let mut truth = NbTruth::random_mixture(Variant::Nbdm, g_n, c_n, 2, 41);
    let m = truth.mixture.as_mut().unwrap();
    m.r.iter_mut()
        .for_each(|rk| rk.iter_mut().for_each(|r| *r = 1.0 + 2.0 * *r));
    let om: Vec<f64> = (0..g_n).map(|g| [0.05, 0.4, 1.5][g % 3]).collect();
    truth.omega = Some(om.clone());
    let data = simulate_nb(&truth, 42);
    let mut spec = nbdm_mixture_of_two();
    spec.set_bnb(scribe_core::models::nb::Shrinkage::Gaussian)
        .unwrap();
    let model = NbModel::new(spec, &data).unwrap();
    let (_, s) = fit_point(&model, 2000, None);
    let got: Vec<f64> = site(&s, "bnb_concentration")
        .iter()
        .map(|v| v.ln())
        .collect();
    assert_eq!(got.len(), g_n);
    let want: Vec<f64> = om.iter().map(|v| v.ln()).collect();
    let c = corr(&got, &want);
    assert!(c > 0.8, "corr of ln omega {c}");
    let w = site(&s, "mixing_weights");
    let m = truth.mixture.as_ref().unwrap();
    let map = matched_components(w, &m.weights);
    for k in 0..2 {
        assert!((w[map[k]] - m.weights[k]).abs() < 0.05, "weights {w:?}");
    }
}
