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

/// Means below this are drawn by inverting the CDF.
const INVERT_BELOW: f64 = 8.0;

/// One `NB(r, p)` count (odds `p/(1 − p)`), with the distribution of
/// [`nb_count`] but cheaper for the small means of most genes: below a mean
/// of 8 by inverting the CDF with one uniform (the pmf recursion
/// `f(k+1) = f(k) p (r + k)/(k + 1)` takes about mean + 1 steps), above it
/// as the Gamma–Poisson mixture. Used where many counts are drawn
/// (predictive checks); the simulator keeps [`nb_count`] so that simulated
/// data sets do not change.
pub fn nb_count_fast<R: Rng + ?Sized>(rng: &mut R, r: f64, odds: f64) -> u32 {
    let mean = r * odds;
    if !(mean < INVERT_BELOW && r > 0.0 && odds > 0.0) {
        return nb_count(rng, r, odds);
    }
    let p = odds / (1.0 + odds);
    let mut pmf = (-r * odds.ln_1p()).exp();
    let mut cdf = pmf;
    let u: f64 = rng.random();
    let mut k = 0u32;
    // The cap only matters when rounding leaves u above every partial sum
    // (u within ~1e-16 of 1): the count is then far in the tail anyway.
    while u > cdf && k < 1_000_000 {
        pmf *= p * (r + k as f64) / (k as f64 + 1.0);
        k += 1;
        cdf += pmf;
        if pmf == 0.0 {
            break;
        }
    }
    k
}

/// The success odds of one beta-negative-binomial count: `p ~ Beta(α, κ)`,
/// `κ = 2 + (r + 1)/ω`, `α = (κ − 1)·odds` (so the count's mean is
/// `r·odds`, the NB's), returned as `p/(1 − p)`. `ω ≤ 0` or a Beta that
/// cannot be drawn gives `odds` itself (the NB).
pub fn bnb_odds<R: Rng + ?Sized>(rng: &mut R, r: f64, odds: f64, omega: f64) -> f64 {
    let kappa = 2.0 + (r + 1.0) / omega.max(1e-6);
    let alpha = (kappa - 1.0) * odds;
    match rand_distr::Beta::new(alpha, kappa) {
        Ok(b) if alpha > 0.0 && alpha.is_finite() => {
            let p = b.sample(rng).clamp(1e-300, 1.0 - 1e-16);
            p / (1.0 - p)
        }
        _ => odds,
    }
}

/// One beta-negative-binomial count: `NB(r, p)` at the odds of [`bnb_odds`].
pub fn bnb_count<R: Rng + ?Sized>(rng: &mut R, r: f64, odds: f64, omega: f64) -> u32 {
    let o = bnb_odds(rng, r, odds, omega);
    nb_count_fast(rng, r, o)
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

    #[test]
    fn inversion_draws_have_the_nb_distribution() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 200_000;
        for (r, odds) in [(2.5, 1.5), (0.05, 40.0), (300.0, 0.01), (0.7, 0.2)] {
            let xs: Vec<u32> = (0..n).map(|_| nb_count_fast(&mut rng, r, odds)).collect();
            // Frequencies of 0..4 against the pmf, within 5 binomial sds.
            let p = odds / (1.0 + odds);
            let mut pmf = (1.0 - p).powf(r);
            for k in 0..5u32 {
                let freq = xs.iter().filter(|&&x| x == k).count() as f64 / n as f64;
                let sd = (pmf * (1.0 - pmf) / n as f64).sqrt();
                assert!(
                    (freq - pmf).abs() < 5.0 * sd + 1e-9,
                    "r {r}, odds {odds}, k {k}: {freq} vs {pmf}"
                );
                pmf *= p * (r + k as f64) / (k as f64 + 1.0);
            }
            let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
            let se = (r * odds * (1.0 + odds) / n as f64).sqrt();
            assert!(
                (mean - r * odds).abs() < 5.0 * se,
                "r {r}, odds {odds}: mean {mean}"
            );
        }
        assert_eq!(nb_count_fast(&mut rng, 3.0, 0.0), 0);
        assert_eq!(nb_count_fast(&mut rng, 3.0, f64::INFINITY), u32::MAX);
    }
}

#[cfg(test)]
mod bnb_tests {
    use super::*;
    use rand::rngs::ChaCha8Rng;
    use rand::SeedableRng;

    #[test]
    fn bnb_counts_keep_the_nb_mean_and_inflate_its_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (r, odds, omega) = (2.0, 1.5, 0.8);
        let n = 400_000;
        let x: Vec<f64> = (0..n)
            .map(|_| bnb_count(&mut rng, r, odds, omega) as f64)
            .collect();
        let m = x.iter().sum::<f64>() / n as f64;
        let v = x.iter().map(|y| (y - m) * (y - m)).sum::<f64>() / n as f64;
        let (nb_mean, nb_var) = (r * odds, r * odds * (1.0 + odds));
        assert!(
            (m - nb_mean).abs() < 0.02 * nb_mean,
            "mean {m} vs {nb_mean}"
        );
        // Var/NB var = (κ − 1 + r(1 + o)... ) > 1; exactly, for p ~ Beta(α, κ):
        let kappa = 2.0 + (r + 1.0) / omega;
        let alpha = (kappa - 1.0) * odds;
        // E[o'] and E[o'^2] of o' = p/(1−p) under Beta(α, κ) (beta-prime moments).
        let e1 = alpha / (kappa - 1.0);
        let e2 = alpha * (alpha + 1.0) / ((kappa - 1.0) * (kappa - 2.0));
        let want = r * e1 + r * e2 + r * r * (e2 - e1 * e1);
        assert!(
            (v - want).abs() < 0.03 * want,
            "var {v} vs {want} (NB {nb_var})"
        );
        assert!(v > 1.3 * nb_var);
    }
}
