//! One ELBO-gradient evaluation (the cost of an SVI step) on simulated data
//! shaped like pbmc3k after filtering genes seen in ≥ 3 cells: 2700 cells ×
//! 13 700 genes, ~2.3 M nonzeros. `cargo bench --manifest-path bench/rust/Cargo.toml`.

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;
use scribe_core::data::Batch;
use scribe_core::dist::Link;
use scribe_core::models::nb::simulate::{simulate_nb, NbTruth};
use scribe_core::models::nb::{NbModel, NbSpec, Parameterization, Shrinkage, Variant};
use scribe_core::models::Model;
use scribe_core::svi::guide::{Guide, MeanField};
use scribe_core::svi::initial_params;

fn pbmc_like(variant: Variant) -> scribe_core::data::CountMatrix {
    let mut t = NbTruth::random(variant, 13_700, 2700, 7);
    // Most genes are lowly expressed: scale r so about 6 % of entries are nonzero.
    t.r.iter_mut().for_each(|r| *r *= 0.06);
    simulate_nb(&t, 8)
}

fn bench(c: &mut Criterion) {
    for variant in [Variant::Nbvcp, Variant::Zinbvcp] {
        let data = pbmc_like(variant);
        let model = NbModel::new(
            NbSpec::new(variant, Parameterization::Canonical, false, Link::Exp),
            &data,
        )
        .unwrap();
        let guide = MeanField {
            dim: model.layout().total,
        };
        let v = initial_params(&model, &guide);
        let mut buf = guide.scratch();
        let mut ws = model.workspace();
        let mut grad = vec![0.0; v.len()];
        let full = Batch::full(&data);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let name = format!(
            "{}_elbo_grad_pbmc3k_like_full_batch (nnz {}, pairs {})",
            variant.name(),
            data.nnz(),
            data.n_pairs()
        );
        c.bench_function(&name, |b| {
            b.iter(|| {
                guide.loss_and_grad(&model, &v, &full, &mut rng, &mut buf, &mut ws, &mut grad)
            })
        });
        let mut batch = Batch::full(&data);
        let cells: Vec<u32> = (0..512u32).map(|k| k * 5).collect();
        batch.set_cells(&data, &cells);
        let name = format!("{}_elbo_grad_pbmc3k_like_batch512", variant.name());
        c.bench_function(&name, |b| {
            b.iter(|| {
                batch.set_cells(&data, &cells);
                guide.loss_and_grad(&model, &v, &batch, &mut rng, &mut buf, &mut ws, &mut grad)
            })
        });
        let _ = model.layout();
    }
}

/// A 4-component nbvcp mixture with a gene-specific `p` per component, and
/// with BNB besides: 2000 genes (the size of a highly-variable-gene
/// selection) × 2700 cells, one batch of 512 (each cell costs a dense pass
/// over genes × components).
fn bench_mixture_genewise(c: &mut Criterion) {
    let mut t = NbTruth::random_mixture(Variant::Nbvcp, 2000, 2700, 4, 7);
    if let Some(m) = t.mixture.as_mut() {
        m.r.iter_mut()
            .for_each(|rk| rk.iter_mut().for_each(|r| *r *= 0.3));
    }
    let data = simulate_nb(&t, 8);
    for bnb in [false, true] {
        let mut spec = NbSpec::new(
            Variant::Nbvcp,
            Parameterization::Canonical,
            true,
            Link::Softplus,
        );
        spec.set_mixture(4, &["r", "p"], 1.0).unwrap();
        if bnb {
            spec.set_bnb(Shrinkage::Horseshoe).unwrap();
        }
        spec.add_hierarchy("p", Shrinkage::Gaussian).unwrap();
        let model = NbModel::new(spec, &data).unwrap();
        let guide = MeanField {
            dim: model.layout().total,
        };
        let v = initial_params(&model, &guide);
        let mut buf = guide.scratch();
        let mut ws = model.workspace();
        let mut grad = vec![0.0; v.len()];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut batch = Batch::full(&data);
        let cells: Vec<u32> = (0..512u32).map(|k| k * 5).collect();
        batch.set_cells(&data, &cells);
        let name = format!(
            "nbvcp_mixture4_gene_p{}_2000genes_batch512",
            if bnb { "_bnb" } else { "" }
        );
        c.bench_function(&name, |b| {
            b.iter(|| {
                guide.loss_and_grad(&model, &v, &batch, &mut rng, &mut buf, &mut ws, &mut grad)
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench, bench_mixture_genewise
}
criterion_main!(benches);
