//! Time of one PLN Newton factorisation + solve at G genes, k factors:
//! `cargo run --release --example laplace_step -- 2000 16`.
use scribe_core::laplace::woodbury::{NewtonFactor, SigmaFactor};
fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    let (g, k) = (
        a.first().copied().unwrap_or(2000),
        a.get(1).copied().unwrap_or(16),
    );
    let w: Vec<f64> = (0..g * k)
        .map(|i| ((i as f64) * 0.731).sin() * 0.3)
        .collect();
    let d: Vec<f64> = (0..g)
        .map(|i| 0.1 + 0.2 * ((i as f64) * 1.3).cos().abs())
        .collect();
    let lam: Vec<f64> = (0..g)
        .map(|i| (((i as f64) * 0.37).sin() * 3.0).exp())
        .collect();
    let sig = SigmaFactor::new(&w, &d, k).unwrap();
    let mut out = vec![0.0; g];
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let nf = NewtonFactor::new(&sig, &lam, 1e-2).unwrap();
        nf.solve(&sig, &w, &lam, &mut out);
    }
    println!(
        "G = {g}, k = {k}: {:.1} us per factorisation + solve",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
