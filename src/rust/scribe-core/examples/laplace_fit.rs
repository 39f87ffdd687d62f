//! Time per outer step of a Laplace fit on data simulated from PLN or NBLN
//! (`x = μ + W z + 0.2 ε`, rank 3), and the Newton steps the cells took:
//! `cargo run --release --example laplace_fit -- [pln|nbln] G C k steps threads`
//! (defaults: pln 1000 2000 10 20 2). Prints the loss after the last step so
//! that runs before and after a change can be compared.
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Poisson, StandardNormal};
use scribe_core::data::CountMatrix;
use scribe_core::laplace::{run, LaplaceConfig, LnModel};
use scribe_core::progress::{NeverCancel, NoProgress};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = if args.first().map(String::as_str) == Some("nbln") {
        LnModel::Nbln
    } else {
        LnModel::Pln
    };
    let num = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (g, c, k, steps, threads) = (
        num(1, 1000),
        num(2, 2000),
        num(3, 10),
        num(4, 20),
        num(5, 2),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mu: Vec<f64> = (0..g).map(|_| rng.random_range(-1.0..1.5)).collect();
    let w: Vec<f64> = (0..g * 3)
        .map(|_| 0.4 * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let (mut p, mut idx, mut val) = (vec![0i32], Vec::new(), Vec::new());
    for _ in 0..c {
        let z: Vec<f64> = (0..3).map(|_| rng.sample(StandardNormal)).collect();
        for i in 0..g {
            let x = mu[i]
                + (0..3).map(|j| w[i * 3 + j] * z[j]).sum::<f64>()
                + 0.2 * rng.sample::<f64, _>(StandardNormal);
            let v: f64 = rng.sample(Poisson::new(x.exp()).unwrap());
            if v > 0.0 {
                idx.push(i as i32);
                val.push(v);
            }
        }
        p.push(idx.len() as i32);
    }
    let data = CountMatrix::from_csc(g, c, &p, &idx, &val).unwrap();
    let cfg = LaplaceConfig {
        model,
        latent_dim: k,
        n_steps: steps,
        settle: None,
        rescue_diverged_cells: false,
        ..LaplaceConfig::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let t = std::time::Instant::now();
    let fit = pool.install(|| run(&data, &cfg, &NoProgress, &NeverCancel).unwrap());
    let secs = t.elapsed().as_secs_f64();
    let nw = fit.newton;
    println!(
        "{model:?}, G = {g}, C = {c}, k = {k}, {threads} threads: {steps} outer steps + final sweep in {secs:.2} s ({:.3} s per step); Newton steps per cell and outer step {:.2}; final loss per cell {:.4}",
        secs / steps as f64,
        nw.outer_steps as f64 / nw.outer_cell_visits.max(1) as f64,
        fit.loss_history.last().unwrap() / c as f64
    );
}
