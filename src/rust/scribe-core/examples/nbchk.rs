use rand::SeedableRng;
use scribe_core::dist::draw::{nb_count, nb_count_fast};
fn main() {
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
    for &(r, odds) in &[
        (0.1, 0.5),
        (0.5, 2.0),
        (1.0, 5.0),
        (3.0, 0.3),
        (0.02, 100.0),
        (10.0, 0.7),
        (0.3, 20.0),
    ] {
        let n = 400_000;
        let a: Vec<u32> = (0..n).map(|_| nb_count(&mut rng, r, odds)).collect();
        let b: Vec<u32> = (0..n).map(|_| nb_count_fast(&mut rng, r, odds)).collect();
        let st = |v: &[u32]| {
            let m = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
            let z = v.iter().filter(|&&x| x == 0).count() as f64 / n as f64;
            let o = v.iter().filter(|&&x| x == 1).count() as f64 / n as f64;
            (m, z, o)
        };
        println!(
            "r {r} odds {odds}: gp {:?} inv {:?} mean {}",
            st(&a),
            st(&b),
            r * odds
        );
    }
    let t = std::time::Instant::now();
    let mut s = 0u64;
    for _ in 0..10_000_000 {
        s += nb_count(&mut rng, 0.5, 0.4) as u64;
    }
    println!("gp {:?} {s}", t.elapsed());
    let t = std::time::Instant::now();
    let mut s = 0u64;
    for _ in 0..10_000_000 {
        s += nb_count_fast(&mut rng, 0.5, 0.4) as u64;
    }
    println!("inv {:?} {s}", t.elapsed());
}
