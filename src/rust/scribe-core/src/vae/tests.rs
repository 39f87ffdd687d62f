use super::*;
use crate::models::nb::simulate::{simulate_nb, NbTruth};
use crate::models::nb::{NbSpec, Variant};
use crate::nn::flows::FlowKind;
use crate::progress::{NeverCancel, NoProgress};
use crate::svi::SviConfig;
use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

/// The canonical NB model of `variant` on `data`.
fn canonical(variant: Variant, data: &'static CountMatrix) -> &'static NbModel<'static> {
    let spec = NbSpec::new(variant, Parameterization::Canonical, false, Link::Softplus);
    leak(NbModel::new(spec, data).unwrap())
}

fn small(prior: Option<FlowConfig>) -> VaeConfig {
    VaeConfig {
        latent_dim: 2,
        encoder_hidden: vec![5, 4],
        decoder_hidden: vec![3, 4],
        activation: Activation::Tanh,
        prior,
        kl_warmup: 10,
        block: 2,
    }
}

#[test]
fn loss_gradient_matches_finite_differences() {
    let flow = |kind| FlowConfig {
        kind,
        num_layers: 2,
        hidden: vec![3],
        activation: Activation::Tanh,
        ..FlowConfig::default()
    };
    let cases = [
        (Variant::Nbdm, None),
        (Variant::Nbvcp, None),
        (Variant::Zinb, None),
        (Variant::Zinbvcp, Some(flow(FlowKind::AffineCoupling))),
        (Variant::Nbdm, Some(flow(FlowKind::Maf))),
    ];
    for (variant, prior) in cases {
        let truth = NbTruth::random(variant, 6, 8, 3);
        let data = leak(simulate_nb(&truth, 4));
        let model = canonical(variant, data);
        let vae = Vae::new(model, small(prior.clone())).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = vae.initial_params(&mut rng);
        // Away from the start's structure: every weight matters.
        for (j, x) in v.iter_mut().enumerate() {
            *x += 0.05 * ((j * 7 % 13) as f64 - 6.0) / 6.0;
        }
        let mut batch = Batch::full(data);
        batch.set_cells(data, &[0, 2, 3, 5, 7]);
        let label = format!("{variant:?} prior={:?}", prior.map(|p| p.kind));
        crate::testutil::check_gradient(
            |v, g| {
                let mut rng = ChaCha8Rng::seed_from_u64(9);
                let mut gl = vec![0.0; g.len()];
                let l = vae.loss_and_grad(v, &batch, 0.7, &mut rng, &mut gl);
                g.iter_mut().zip(&gl).for_each(|(a, b)| *a += b);
                l
            },
            &v,
            1e-5,
            &label,
        );
    }
}

#[test]
fn embeddings_separate_the_clusters_of_a_mixture() {
    // Three clusters that differ in a fifth of the genes; a 10-NN vote in
    // the embedding recovers held-out cells' clusters.
    let truth = NbTruth::random_mixture(Variant::Nbdm, 60, 450, 3, 7);
    let data = leak(simulate_nb(&truth, 8));
    let model = canonical(Variant::Nbdm, data);
    let cfg = VaeConfig {
        latent_dim: 3,
        encoder_hidden: vec![32, 16],
        decoder_hidden: vec![16, 32],
        kl_warmup: 500,
        ..VaeConfig::default()
    };
    let vae = Vae::new(model, cfg).unwrap();
    let run = SviConfig {
        n_steps: 2500,
        batch_size: Some(128),
        optimizer: crate::optim::OptimizerConfig::Adam {
            step_size: 3e-3,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        },
        settle: None,
        seed: 2,
        ..Default::default()
    };
    let fit = fit(&vae, &run, &NoProgress, &NeverCancel).unwrap();
    let emb = vae.embeddings(&fit.params, data);
    let k = 3;
    let label = &truth.mixture.as_ref().unwrap().assignment;
    let (train, test): (Vec<usize>, Vec<usize>) = (0..data.n_cells).partition(|c| c % 3 != 0);
    let dist = |a: usize, b: usize| -> f64 {
        (0..k)
            .map(|q| (emb[a * k + q] - emb[b * k + q]).powi(2))
            .sum()
    };
    let mut correct = 0;
    for &c in &test {
        let mut near: Vec<(f64, usize)> = train.iter().map(|&t| (dist(c, t), label[t])).collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut votes = [0usize; 3];
        for &(_, l) in &near[..10] {
            votes[l] += 1;
        }
        let best = (0..3).max_by_key(|&l| votes[l]).unwrap();
        correct += usize::from(best == label[c]);
    }
    let acc = correct as f64 / test.len() as f64;
    let tail = &fit.loss_history[fit.loss_history.len() - 200..];
    eprintln!(
        "10-NN accuracy {acc:.3}; final loss {:.1}",
        tail.iter().sum::<f64>() / 200.0
    );
    assert!(acc >= 0.9, "10-NN accuracy {acc}");
}

#[test]
fn unsupported_models_and_priors_are_argument_errors() {
    let truth = NbTruth::random(Variant::Nbdm, 5, 6, 1);
    let data = leak(simulate_nb(&truth, 2));
    let mut spec = NbSpec::new(
        Variant::Nbdm,
        Parameterization::Canonical,
        false,
        Link::Softplus,
    );
    spec.set_mixture(2, &["r"], 1.0).unwrap();
    let model = leak(NbModel::new(spec, data).unwrap());
    let e = Vae::new(model, small(None)).err().unwrap();
    assert!(e.to_string().contains("n_components"), "{e}");
    let model = canonical(Variant::Nbdm, data);
    let iaf = FlowConfig {
        kind: FlowKind::Iaf,
        ..FlowConfig::default()
    };
    let e = Vae::new(model, small(Some(iaf))).err().unwrap();
    assert!(e.to_string().contains("vae_flow_type"), "{e}");
}

#[test]
fn prior_draws_follow_the_flow() {
    let fc = FlowConfig {
        kind: FlowKind::Maf,
        num_layers: 2,
        hidden: vec![4],
        ..FlowConfig::default()
    };
    let cfg = VaeConfig {
        latent_dim: 3,
        prior: Some(fc.clone()),
        ..VaeConfig::default()
    };
    let ch = FlowChain::new(3, &fc).unwrap();
    let p: Vec<f64> = (0..ch.n_params())
        .map(|j| 0.2 * ((j * 5 % 7) as f64 - 3.0) / 3.0)
        .collect();
    let x = prior_draws(&cfg, &p, 50, 4).unwrap();
    // Back through the density direction: the standard-normal draws.
    let mut tape = ChainTape::default();
    ch.apply(&p, Direction::Density, &x, 50, &mut tape);
    let plain = prior_draws(
        &VaeConfig {
            prior: None,
            ..cfg.clone()
        },
        &[],
        50,
        4,
    )
    .unwrap();
    for (a, b) in tape.output().iter().zip(&plain) {
        assert!((a - b).abs() < 1e-10);
    }
    assert!(x.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-3));
    assert!(prior_draws(&cfg, &p[1..], 5, 1).is_err());
}
