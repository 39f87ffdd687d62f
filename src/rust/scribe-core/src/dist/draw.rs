//! Random draws that never panic on the values a fit can produce: a
//! degenerate parameter gives its limit (a zero rate draws 0), a rate beyond
//! the sampler's range a normal approximation (its relative spread there is
//! below 1e-6), and counts are capped at the largest `u32`. With ordinary
//! parameters they consume the random stream exactly as `rand_distr` does.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, Gamma, Poisson, StandardNormal};

/// Rates above this are drawn as `N(λ, λ)` (rand_distr's Poisson stops near 1.8e19).
const POISSON_NORMAL_ABOVE: f64 = 1e12;
/// The largest count a draw returns.
pub const MAX_COUNT: f64 = u32::MAX as f64;

/// A Poisson count with rate `lambda`: 0 for a rate that is not positive
/// (or NaN), at most [`MAX_COUNT`].
pub fn poisson<R: Rng + ?Sized>(rng: &mut R, lambda: f64) -> f64 {
    if !(lambda > 0.0) {
        return 0.0;
    }
    if !(lambda < POISSON_NORMAL_ABOVE) {
        if !lambda.is_finite() {
            return MAX_COUNT;
        }
        let z: f64 = rng.sample(StandardNormal);
        return (lambda + lambda.sqrt() * z).round().clamp(0.0, MAX_COUNT);
    }
    match Poisson::new(lambda) {
        Ok(p) => p.sample(rng).min(MAX_COUNT),
        Err(_) => 0.0,
    }
}

/// A Gamma(shape, scale) draw: 0 when either parameter is not positive (the
/// point mass the family tends to), infinite for an infinite scale.
pub fn gamma<R: Rng + ?Sized>(rng: &mut R, shape: f64, scale: f64) -> f64 {
    if !(shape > 0.0 && scale > 0.0) {
        return 0.0;
    }
    if !scale.is_finite() || !shape.is_finite() {
        return f64::INFINITY;
    }
    match Gamma::new(shape, scale) {
        Ok(g) => g.sample(rng),
        Err(_) => 0.0,
    }
}

/// One `NB(r, p)` count as a Gamma–Poisson mixture, with the odds
/// `p/(1 − p)` as the Gamma scale: 0 when `p = 0` (odds 0), [`MAX_COUNT`]
/// as `p → 1` (infinite odds).
pub fn nb_count<R: Rng + ?Sized>(rng: &mut R, r: f64, odds: f64) -> u32 {
    let lambda = gamma(rng, r, odds);
    poisson(rng, lambda) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::ChaCha8Rng;
    use rand::SeedableRng;

    #[test]
    fn degenerate_and_huge_parameters_give_their_limits() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(poisson(&mut rng, 0.0), 0.0);
        assert_eq!(poisson(&mut rng, -1.0), 0.0);
        assert_eq!(poisson(&mut rng, f64::NAN), 0.0);
        assert_eq!(poisson(&mut rng, f64::INFINITY), MAX_COUNT);
        // e^50, beyond rand_distr's Poisson: capped at the largest count.
        assert_eq!(poisson(&mut rng, 50f64.exp()), MAX_COUNT);
        let big = poisson(&mut rng, 2e12);
        assert!(big == MAX_COUNT || (big - 2e12).abs() < 1e8);
        let x = poisson(&mut rng, 3e9);
        assert!((x - 3e9).abs() < 6e5, "{x}");
        assert_eq!(gamma(&mut rng, 2.0, 0.0), 0.0);
        assert_eq!(gamma(&mut rng, 0.0, 1.0), 0.0);
        assert_eq!(nb_count(&mut rng, 3.0, 0.0), 0);
        assert_eq!(nb_count(&mut rng, 3.0, f64::INFINITY), u32::MAX);
    }

    #[test]
    fn ordinary_draws_match_rand_distr_and_the_nb_moments() {
        let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(7), ChaCha8Rng::seed_from_u64(7));
        for lam in [0.3, 4.0, 250.0] {
            let want: f64 = Poisson::new(lam).unwrap().sample(&mut b);
            assert_eq!(poisson(&mut a, lam), want);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (r, odds) = (2.5, 1.5);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| nb_count(&mut rng, r, odds) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // NB with odds o: mean r·o, variance r·o(1 + o).
        assert!((mean - r * odds).abs() < 0.03, "{mean}");
        assert!((var - r * odds * (1.0 + odds)).abs() < 0.2, "{var}");
    }
}
