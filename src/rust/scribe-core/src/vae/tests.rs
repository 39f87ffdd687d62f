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
        ..VaeConfig::default()
    }
}

/// Finite differences of the single-sample loss (fixed noise, β = 0.7) on
/// five of the cells of `data`.
fn check_loss_gradient(vae: &Vae, v: &[f64], data: &CountMatrix, label: &str) {
    let mut batch = Batch::full(data);
    batch.set_cells(data, &[0, 2, 3, 5, 7]);
    crate::testutil::check_gradient(
        |v, g| {
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            let mut gl = vec![0.0; g.len()];
            let l = vae.loss_and_grad(v, &batch, 0.7, &mut rng, &mut gl);
            g.iter_mut().zip(&gl).for_each(|(a, b)| *a += b);
            l
        },
        v,
        1e-5,
        label,
    );
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
    // Input transforms whose zeros are not zero, and standardization: the
    // first layer's dense rank-one terms.
    let inputs = [
        (encoder::InputTransform::Log1p, false),
        (encoder::InputTransform::Clr, true),
        (encoder::InputTransform::Log, false),
        (encoder::InputTransform::Log1pProp, true),
        (encoder::InputTransform::Sqrt, true),
    ];
    for ((variant, prior), (transform, standardize)) in cases.into_iter().zip(inputs) {
        let truth = NbTruth::random(variant, 6, 8, 3);
        let data = leak(simulate_nb(&truth, 4));
        let model = canonical(variant, data);
        let cfg = VaeConfig {
            input_transform: transform,
            standardize,
            ..small(prior.clone())
        };
        let vae = Vae::new(model, cfg).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = vae.initial_params(&mut rng);
        // Away from the start's structure: every weight matters.
        for (j, x) in v.iter_mut().enumerate() {
            *x += 0.05 * ((j * 7 % 13) as f64 - 6.0) / 6.0;
        }
        let label = format!(
            "{variant:?} prior={:?} input={transform:?} standardize={standardize}",
            prior.map(|p| p.kind)
        );
        check_loss_gradient(&vae, &v, data, &label);
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

/// A VAE of `variant` on simulated data, its parameters moved away from
/// the start so every network weight matters.
fn perturbed(variant: Variant, seed: u64) -> (Vae<'static>, Vec<f64>, &'static CountMatrix) {
    let truth = NbTruth::random(variant, 9, 14, seed);
    let data = leak(simulate_nb(&truth, seed + 1));
    let vae = Vae::new(canonical(variant, data), small(None)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = vae.initial_params(&mut rng);
    for (j, x) in v.iter_mut().enumerate() {
        *x += 0.3 * ((j * 7 % 13) as f64 - 6.0) / 6.0;
    }
    (vae, v, data)
}

/// The counts of cell `c` of `data` as a dense row over its genes.
fn dense_counts(data: &CountMatrix, c: usize) -> Vec<f64> {
    let mut row = vec![0.0; data.n_genes];
    let (gs, us) = data.row(c);
    gs.iter()
        .zip(us)
        .for_each(|(&g, &u)| row[g as usize] = u as f64);
    row
}

/// `ln f(u)` of one count straight from the (zero-inflated) NB pmf.
fn ln_pmf(u: u32, r: f64, p_hat: f64, gate: Option<f64>) -> f64 {
    let u = u as f64;
    let nb = crate::math::lgamma(u + r) - crate::math::lgamma(r) - crate::math::lgamma(u + 1.0)
        + r * (1.0 - p_hat).ln()
        + u * p_hat.ln();
    match gate {
        None => nb,
        Some(pi) if u == 0.0 => (pi + (1.0 - pi) * nb.exp()).ln(),
        Some(pi) => (1.0 - pi).ln() + nb,
    }
}

#[test]
fn log_likelihoods_match_the_pmf_of_each_cells_decoded_parameters() {
    use crate::posterior::{By, Summary};
    use crate::progress::Ctl;
    for (i, variant) in [
        Variant::Nbdm,
        Variant::Nbvcp,
        Variant::Zinb,
        Variant::Zinbvcp,
    ]
    .into_iter()
    .enumerate()
    {
        let (vae, v, data) = perturbed(variant, 10 + i as u64);
        let by_cell = vae
            .log_likelihood(&v, By::Cell, Summary::Point, Ctl::none())
            .unwrap();
        let by_gene = vae
            .log_likelihood(&v, By::Gene, Summary::Point, Ctl::none())
            .unwrap();
        // The dense reference: decode the encoder means, then the pmf cell by cell.
        let pt = vae.decoded_point(&v, Ctl::none()).unwrap();
        let (r, gate) = (&pt.r, &pt.gate);
        let g_n = data.n_genes;
        let mut gene_tot = vec![0.0; g_n];
        for c in 0..data.n_cells {
            let (p, nu) = (pt.p, pt.nu[c]);
            if variant.has_capture() {
                assert!(nu < 1.0);
            }
            let p_hat = p * nu / (1.0 - p * (1.0 - nu));
            let dense = dense_counts(data, c);
            let mut tot = 0.0;
            for g in 0..g_n {
                let l = ln_pmf(
                    dense[g] as u32,
                    r[c * g_n + g],
                    p_hat,
                    gate.as_ref().map(|x| x[c * g_n + g]),
                );
                tot += l;
                gene_tot[g] += l;
            }
            assert!(
                (by_cell[c] - tot).abs() < 1e-8 * tot.abs().max(1.0),
                "{variant:?} cell {c}: {} vs {tot}",
                by_cell[c]
            );
        }
        for g in 0..g_n {
            assert!(
                (by_gene[g] - gene_tot[g]).abs() < 1e-8 * gene_tot[g].abs().max(1.0),
                "{variant:?} gene {g}"
            );
        }
        // Draws: each cell at its own z; by cell and by gene add up to the same totals.
        let sm = Summary::Draws { n: 3, seed: 5 };
        let dc = vae.log_likelihood(&v, By::Cell, sm, Ctl::none()).unwrap();
        let dg = vae.log_likelihood(&v, By::Gene, sm, Ctl::none()).unwrap();
        for s in 0..3 {
            let a: f64 = (0..data.n_cells).map(|c| dc[s + 3 * c]).sum();
            let b: f64 = (0..g_n).map(|g| dg[s + 3 * g]).sum();
            assert!(
                (a - b).abs() < 1e-8 * a.abs(),
                "{variant:?} draw {s}: {a} vs {b}"
            );
            let pt: f64 = by_cell.iter().sum();
            assert!((a - pt).abs() > 1e-6, "a draw equals the point setting");
        }
    }
}

#[test]
fn predictive_and_denoising_do_not_depend_on_chunks_or_threads() {
    use crate::posterior::nb::denoise::Method;
    use crate::posterior::Summary;
    use crate::progress::Ctl;
    let (vae, v, data) = perturbed(Variant::Zinbvcp, 3);
    let sm = Summary::Draws { n: 4, seed: 8 };
    let all: Vec<usize> = (0..data.n_cells).collect();
    let genes = [0usize, 4, 8];
    let run = |threads: usize, cells: &[usize]| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            vae.predictive(&v, cells, &genes, false, sm, 1, 8, Ctl::none())
                .unwrap()
        })
    };
    let full = run(1, &all);
    assert_eq!(full, run(2, &all));
    // Cells 5 and 11 alone: the same values as in the full draw.
    let sub = run(1, &[5, 11]);
    let (s_n, c_n) = (4, data.n_cells);
    for (ci, &c) in [5usize, 11].iter().enumerate() {
        for j in 0..genes.len() {
            for s in 0..s_n {
                assert_eq!(sub[s + s_n * (ci + 2 * j)], full[s + s_n * (c + c_n * j)]);
            }
        }
    }
    assert!(full.iter().all(|x| *x >= 0.0 && x.fract() == 0.0));
    let den = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            vae.denoise(
                &v,
                &genes,
                Method::Sample,
                Method::Sample,
                true,
                sm,
                3,
                Ctl::none(),
            )
            .unwrap()
        })
    };
    assert_eq!(den(1), den(2));
}

#[test]
fn denoised_counts_undo_capture_only() {
    use crate::posterior::nb::denoise::Method;
    use crate::posterior::Summary;
    use crate::progress::Ctl;
    let genes: Vec<usize> = (0..9).collect();
    // Without capture nothing is missing: denoised means are the counts.
    let (vae, v, data) = perturbed(Variant::Nbdm, 4);
    let (m, var) = vae
        .denoise(
            &v,
            &genes,
            Method::Mean,
            Method::Mean,
            true,
            Summary::Point,
            1,
            Ctl::none(),
        )
        .unwrap();
    for c in 0..data.n_cells {
        let dense = dense_counts(data, c);
        for g in 0..9 {
            assert!((m[g + 9 * c] - dense[g]).abs() < 1e-12);
            assert!(var.as_ref().unwrap()[g + 9 * c].abs() < 1e-12);
        }
    }
    // With capture every denoised mean exceeds its count, by (u + r pp)/q − u.
    let (vae, v, data) = perturbed(Variant::Nbvcp, 5);
    let (m, _) = vae
        .denoise(
            &v,
            &genes,
            Method::Mean,
            Method::Mean,
            false,
            Summary::Point,
            1,
            Ctl::none(),
        )
        .unwrap();
    let pt = vae.decoded_point(&v, Ctl::none()).unwrap();
    let r = &pt.r;
    for c in 0..data.n_cells {
        let (p, nu) = (pt.p, pt.nu[c]);
        let pp = p * (1.0 - nu);
        let dense = dense_counts(data, c);
        for g in 0..9 {
            let want = (dense[g] + r[c * 9 + g] * pp) / (1.0 - pp);
            assert!((m[g + 9 * c] - want).abs() < 1e-10 * want.max(1.0));
            assert!(m[g + 9 * c] > dense[g]);
        }
    }
}

#[test]
fn parameter_draws_and_fractions_read_each_cells_decoded_parameters() {
    use crate::posterior::Summary;
    use crate::progress::Ctl;
    let (vae, v, data) = perturbed(Variant::Zinbvcp, 7);
    let g_n = data.n_genes;
    let pt = vae.decoded_point(&v, Ctl::none()).unwrap();
    // The point setting of cells 3 and 0, genes 2 and 5.
    let (cells, genes) = ([3usize, 0], [2usize, 5]);
    let d = vae
        .parameter_draws(&v, &cells, &genes, Summary::Point, Ctl::none())
        .unwrap();
    assert_eq!(d.p, vec![pt.p]);
    for (ci, &c) in cells.iter().enumerate() {
        assert_eq!(d.nu[ci], pt.nu[c]);
        for (j, &g) in genes.iter().enumerate() {
            assert_eq!(d.r[ci + 2 * j], pt.r[c * g_n + g]);
            assert_eq!(
                d.gate.as_ref().unwrap()[ci + 2 * j],
                pt.gate.as_ref().unwrap()[c * g_n + g]
            );
        }
    }
    // Draws vary by setting; the same seed gives the same draws.
    let sm = Summary::Draws { n: 3, seed: 2 };
    let a = vae
        .parameter_draws(&v, &cells, &genes, sm, Ctl::none())
        .unwrap();
    assert_eq!(
        a,
        vae.parameter_draws(&v, &cells, &genes, sm, Ctl::none())
            .unwrap()
    );
    assert!(a.r[0] != a.r[1] && a.p[0] != a.p[1]);
    // Fractions: the Dirichlet mean (r + u)/(Σr + L); every draw sums to one.
    let all: Vec<usize> = (0..g_n).collect();
    let mean = vae
        .cell_fractions(&v, &all, false, Summary::Point, 1, Ctl::none())
        .unwrap();
    for c in 0..data.n_cells {
        let r = &pt.r[c * g_n..(c + 1) * g_n];
        let tot = r.iter().sum::<f64>() + data.lib_size[c];
        let u = dense_counts(data, c);
        for g in 0..g_n {
            assert!((mean[g + g_n * c] - (r[g] + u[g]) / tot).abs() < 1e-14);
        }
    }
    let draws = vae
        .cell_fractions(&v, &all, true, sm, 4, Ctl::none())
        .unwrap();
    for row in draws.chunks_exact(g_n) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(row.iter().all(|x| *x >= 0.0));
    }
}

#[test]
fn mean_parameterizations_have_exact_gradients_and_decode_r() {
    use crate::posterior::{By, Source, Summary};
    use crate::progress::Ctl;
    let cases = [
        (Variant::Nbvcp, Parameterization::MeanProb),
        (Variant::Zinbvcp, Parameterization::MeanOdds),
        (Variant::Nbdm, Parameterization::MeanOdds),
    ];
    for (variant, param) in cases {
        let truth = NbTruth::random(variant, 6, 8, 3);
        let data = leak(simulate_nb(&truth, 4));
        let spec = NbSpec::new(variant, param, false, Link::Softplus);
        let model = leak(NbModel::new(spec, data).unwrap());
        let vae = Vae::new(model, small(None)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = vae.initial_params(&mut rng);
        for (j, x) in v.iter_mut().enumerate() {
            *x += 0.05 * ((j * 7 % 13) as f64 - 6.0) / 6.0;
        }
        check_loss_gradient(&vae, &v, data, &format!("{variant:?} {param:?}"));
        // Decoded r is the decoder's mean times (1 − p)/p; the log-likelihood
        // is the pmf's at that r.
        let pt = vae.decoded_point(&v, Ctl::none()).unwrap();
        let ll = vae
            .log_likelihood(&v, By::Cell, Summary::Point, Ctl::none())
            .unwrap();
        let g_n = data.n_genes;
        for c in 0..data.n_cells {
            let nu = pt.nu[c];
            let p_hat = pt.p * nu / (1.0 - pt.p * (1.0 - nu));
            let dense = dense_counts(data, c);
            let tot: f64 = (0..g_n)
                .map(|g| {
                    let gate = pt.gate.as_ref().map(|x| x[c * g_n + g]);
                    ln_pmf(dense[g] as u32, pt.r[c * g_n + g], p_hat, gate)
                })
                .sum();
            assert!((ll[c] - tot).abs() < 1e-8 * tot.abs());
        }
        // At the start every cell's r is near the mean-field start's r.
        let v0 = vae.initial_params(&mut ChaCha8Rng::seed_from_u64(1));
        let pt0 = vae.decoded_point(&v0, Ctl::none()).unwrap();
        let r0: Vec<f64> = {
            let x0 = model.initial_point();
            let sites = crate::models::nb::sites::derive(
                &model.spec,
                crate::svi::guide::mean_field::MeanFieldFit {
                    loc: x0.clone(),
                    scale: vec![1e-6; x0.len()],
                }
                .sampled_sites(model.layout(), Summary::Point, Ctl::none())
                .unwrap(),
            )
            .unwrap();
            let r = sites.iter().find(|s| s.name == "r").unwrap();
            (0..g_n).map(|g| r.at(0, 0, g)).collect()
        };
        for g in 0..g_n {
            let rel = (pt0.r[g] / r0[g] - 1.0).abs();
            assert!(
                rel < 0.3,
                "{variant:?} {param:?} gene {g}: {} vs {}",
                pt0.r[g],
                r0[g]
            );
        }
    }
}

/// The original's architecture conventions (spec behaviours 1 and 2): the
/// decoder's widths apply in reverse order, and the encoder's second head
/// is a log-variance (`σ = exp(½·out)`), which the conditioned draws use.
#[test]
fn decoder_widths_reverse_and_the_encoder_head_is_a_log_variance() {
    let truth = NbTruth::random(Variant::Nbdm, 7, 30, 2);
    let data = leak(simulate_nb(&truth, 3));
    let cfg = VaeConfig {
        decoder_hidden: vec![3, 5],
        ..small(None)
    };
    let vae = Vae::new(canonical(Variant::Nbdm, data), cfg.clone()).unwrap();
    assert_eq!(vae.dec_mlp.hidden, vec![5, 3]);
    assert_eq!(vae.dec_mlp.n_in, cfg.latent_dim);
    assert_eq!(vae.dec_head.n_in, 3);
    assert_eq!(vae.dec_head.n_out, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut v = vae.initial_params(&mut rng);
    let [_, a, b, ..] = vae.offsets();
    // Log-variance biases far from 0, where exp(½·lv) and exp(lv) differ.
    v[b - 2] = -1.5;
    v[b - 1] = 1.0;
    let (loc, lv) = encode_cells(&cfg, &v[a..b], None, data).unwrap();
    assert!(lv.iter().all(|x| x.abs() > 0.5), "{lv:?}");
    // Column-major as R passes them.
    let (cells, k) = (data.n_cells, cfg.latent_dim);
    let col = |x: &[f64]| -> Vec<f64> {
        (0..k)
            .flat_map(|q| (0..cells).map(move |c| x[c * k + q]))
            .collect()
    };
    let (lc, lvc) = (col(&loc), col(&lv));
    let n = 20_000;
    let draws = conditioned_draws(&lc, &lvc, cells, n, 7).unwrap();
    for i in [0, 5, cells * k - 1] {
        let xs = &draws[n * i..n * (i + 1)];
        let m = xs.iter().sum::<f64>() / n as f64;
        let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64).sqrt();
        let want = (0.5 * lvc[i]).exp();
        assert!(
            (sd / want - 1.0).abs() < 0.03,
            "sd {sd} vs exp(lv/2) {want}"
        );
        assert!((m - lc[i]).abs() < 0.05 * want);
    }
}

/// Spec behaviour 6: the KL weight β scales every latent term, the global
/// parameters' prior included. At β = 0 the loss does not see `p`'s prior;
/// at β = 1 it does; in between it is affine in β.
#[test]
fn kl_weight_scales_the_global_priors_too() {
    let truth = NbTruth::random(Variant::Nbvcp, 6, 8, 3);
    let data = leak(simulate_nb(&truth, 4));
    let spec = |a: f64| {
        let mut s = NbSpec::new(
            Variant::Nbvcp,
            Parameterization::Canonical,
            false,
            Link::Softplus,
        );
        s.set_prior("p", a, 2.0).unwrap();
        leak(NbModel::new(s, data).unwrap())
    };
    let (m1, m2) = (spec(2.0), spec(7.0));
    let (v1, v2) = (
        Vae::new(m1, small(None)).unwrap(),
        Vae::new(m2, small(None)).unwrap(),
    );
    let v = v1.initial_params(&mut ChaCha8Rng::seed_from_u64(1));
    let batch = Batch::full(data);
    let loss = |vae: &Vae, beta: f64| {
        let mut g = vec![0.0; v.len()];
        vae.loss_and_grad(&v, &batch, beta, &mut ChaCha8Rng::seed_from_u64(9), &mut g)
    };
    assert!((loss(&v1, 0.0) - loss(&v2, 0.0)).abs() < 1e-9);
    assert!((loss(&v1, 1.0) - loss(&v2, 1.0)).abs() > 1e-3);
    let mid = 0.5 * (loss(&v1, 0.0) + loss(&v1, 1.0));
    assert!((loss(&v1, 0.5) - mid).abs() < 1e-8 * mid.abs());
}

#[test]
fn residuals_lie_in_each_cells_cdf_step_and_do_not_depend_on_threads() {
    use crate::posterior::Summary;
    use crate::progress::Ctl;
    let (vae, v, data) = perturbed(Variant::Zinbvcp, 3);
    let genes: Vec<usize> = (0..data.n_genes).collect();
    let run = |threads: usize, sm: Summary| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            vae.quantile_residuals(&v, &genes, true, 1e-12, sm, 5, Ctl::none())
                .unwrap()
        })
    };
    let res = run(1, Summary::Point);
    assert_eq!(res, run(2, Summary::Point));
    let sm = Summary::Draws { n: 3, seed: 4 };
    assert_eq!(run(1, sm), run(2, sm));
    // Φ(q) lies between the predictive CDF just below the count and at it,
    // both summed straight from the pmf of the cell's decoded parameters.
    let pt = vae.decoded_point(&v, Ctl::none()).unwrap();
    let q = res.values.as_ref().unwrap();
    let (g_n, c_n) = (data.n_genes, data.n_cells);
    for c in 0..c_n {
        let u = dense_counts(data, c);
        let p_hat = pt.p * pt.nu[c] / (1.0 - pt.p * (1.0 - pt.nu[c]));
        for g in 0..g_n {
            let (r, pi) = (pt.r[c * g_n + g], pt.gate.as_ref().unwrap()[c * g_n + g]);
            let pmf = |x: u32| ln_pmf(x, r, p_hat, Some(pi)).exp();
            let lo: f64 = (0..u[g] as u32).map(pmf).sum();
            let hi = lo + pmf(u[g] as u32);
            let f = crate::de::stats::normal_cdf(q[c + c_n * g]);
            assert!(
                f >= lo - 1e-9 && f <= hi + 1e-9,
                "cell {c} gene {g}: Φ(q) = {f} outside [{lo}, {hi}]"
            );
        }
    }
    // The gene scores summarize the residuals.
    for g in 0..g_n {
        let col = &q[g * c_n..(g + 1) * c_n];
        let m = col.iter().sum::<f64>() / c_n as f64;
        assert!((res.mean[g] - m).abs() < 1e-12);
    }
}

#[test]
fn a_fitted_vae_passes_its_predictive_checks_and_a_wrong_p_does_not() {
    use crate::posterior::Summary;
    use crate::progress::Ctl;
    // Clusters a single NB per gene could not fit; the embedding can.
    let truth = NbTruth::random_mixture(Variant::Nbdm, 20, 400, 3, 5);
    let data = leak(simulate_nb(&truth, 6));
    let vae = Vae::new(
        canonical(Variant::Nbdm, data),
        VaeConfig {
            latent_dim: 2,
            encoder_hidden: vec![16],
            decoder_hidden: vec![16],
            kl_warmup: 200,
            ..VaeConfig::default()
        },
    )
    .unwrap();
    let run = SviConfig {
        n_steps: 1500,
        batch_size: Some(128),
        optimizer: crate::optim::OptimizerConfig::Adam {
            step_size: 5e-3,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        },
        settle: None,
        seed: 1,
        ..Default::default()
    };
    let v = fit(&vae, &run, &NoProgress, &NeverCancel).unwrap().params;
    let genes: Vec<usize> = (0..20).collect();
    let scores = |v: &[f64]| {
        let res = vae
            .quantile_residuals(v, &genes, false, 1e-6, Summary::Point, 1, Ctl::none())
            .unwrap();
        let ppc = vae
            .ppc_scores(
                v,
                &genes,
                0.95,
                None,
                Summary::Draws { n: 100, seed: 2 },
                3,
                Ctl::none(),
            )
            .unwrap();
        let med = |x: &[f64]| {
            let mut s = x.to_vec();
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        };
        (
            med(&res.variance),
            med(&res.ks_distance),
            med(&ppc.calibration_failure),
        )
    };
    let (var, ks, fail) = scores(&v);
    eprintln!("fitted: residual variance {var:.3}, KS {ks:.3}, calibration failure {fail:.3}");
    assert!(var > 0.8 && var < 1.2, "median residual variance {var}");
    assert!(ks < 0.1, "median KS distance {ks}");
    assert!(fail <= 0.25, "median calibration failure {fail}");
    // p's guide moved far from the fit: the checks see it.
    let mut w = v.clone();
    let p_coord = vae.model.layout().find("p").unwrap().offset;
    w[p_coord] += 1.5;
    let (var_w, ks_w, fail_w) = scores(&w);
    eprintln!(
        "wrong p: residual variance {var_w:.3}, KS {ks_w:.3}, calibration failure {fail_w:.3}"
    );
    assert!(
        ks_w > 2.0 * ks && fail_w > fail,
        "{ks_w} vs {ks}, {fail_w} vs {fail}"
    );
}
