//! How many SVI steps a fit needs: smoothed loss (window 100) within 0.1 % of
//! its final value, on data simulated from a model.
//! `cargo run --release --example convergence -- nbvcp 2000 1000 0.001 5000`

use scribe_core::dist::Link;
use scribe_core::models::nb::simulate::{simulate_nb, NbTruth};
use scribe_core::models::nb::{NbModel, NbSpec, Parameterization, Variant};
use scribe_core::models::Model;
use scribe_core::optim::OptimizerConfig;
use scribe_core::progress::{NeverCancel, NoProgress};
use scribe_core::svi::guide::MeanField;
use scribe_core::svi::{initial_params, run, SviConfig};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let variant = Variant::parse(a.get(1).map_or("nbvcp", |s| s.as_str())).unwrap();
    let n_cells: usize = a.get(2).map_or(2000, |s| s.parse().unwrap());
    let n_genes: usize = a.get(3).map_or(1000, |s| s.parse().unwrap());
    let lr: f64 = a.get(4).map_or(1e-3, |s| s.parse().unwrap());
    let steps: usize = a.get(5).map_or(5000, |s| s.parse().unwrap());
    let param = Parameterization::parse(a.get(6).map_or("canonical", |s| s.as_str())).unwrap();
    let truth = NbTruth::random(variant, n_genes, n_cells, 1);
    let data = simulate_nb(&truth, 2);
    let model = NbModel::new(NbSpec::new(variant, param, false, Link::Softplus), &data).unwrap();
    let guide = MeanField {
        dim: model.layout().total,
    };
    let init = initial_params(&model, &guide);
    let cfg = SviConfig {
        n_steps: steps,
        optimizer: OptimizerConfig::Adam {
            step_size: lr,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            clip: None,
        },
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let fit = run(&model, &guide, init, &cfg, &NoProgress, &NeverCancel).unwrap();
    let el = t0.elapsed().as_secs_f64();
    let l = &fit.loss_history;
    let w = 100;
    let sm: Vec<f64> = (w..=l.len())
        .map(|e| l[e - w..e].iter().sum::<f64>() / w as f64)
        .collect();
    let fin = *sm.last().unwrap();
    let conv = sm
        .iter()
        .rposition(|v| (v - fin).abs() > 1e-3 * fin.abs())
        .map_or(w, |i| i + w + 1);
    println!(
        "{} {}x{} lr={lr} steps={steps}: first loss {:.6e}, final {:.6e}, within 0.1% from step {conv}; {:.3} ms/step",
        variant.name(), n_cells, n_genes, l[0], fin, el * 1e3 / steps as f64
    );
    for s in [1, 100, 200, 500, 1000, 2000, 3000, 5000, 10000] {
        if s <= sm.len() {
            println!(
                "  smoothed loss ending at step {:>5}: {:.6e}",
                s + w - 1,
                sm[s - 1]
            );
        }
    }
    let _ = model.layout();
}
