//! Calling genes with a controlled posterior expected false-discovery
//! proportion (PEFP). A gene's lfsr is the posterior probability that its
//! called sign is wrong, so the expected fraction of false calls among the
//! genes called is the mean lfsr of those genes.

/// PEFP of calling the genes with `lfsr < threshold` (strict); 0 when none is
/// called. Missing values (NaN) are never called.
pub fn pefp(lfsr: &[f64], threshold: f64) -> f64 {
    let called: Vec<f64> = lfsr.iter().copied().filter(|&l| l < threshold).collect();
    if called.is_empty() {
        0.0
    } else {
        called.iter().sum::<f64>() / called.len() as f64
    }
}

/// The lfsr threshold `t` such that calling `lfsr < t` keeps the PEFP at
/// most `target` with as many calls as possible. Sorting the lfsr, the PEFP
/// of the `k` smallest is their running mean; with `k*` the largest `k` at
/// which it is `≤ target`, the threshold is the next value (so a strict `<`
/// calls exactly those `k*` genes, ties apart), just above the maximum when
/// every gene qualifies, and 0 when none does.
pub fn find_threshold(lfsr: &[f64], target: f64) -> f64 {
    let mut v: Vec<f64> = lfsr.iter().copied().filter(|l| !l.is_nan()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut sum = 0.0;
    let mut k_star = 0;
    for (i, &l) in v.iter().enumerate() {
        sum += l;
        if sum / (i + 1) as f64 <= target {
            k_star = i + 1;
        }
    }
    if k_star == 0 {
        0.0
    } else if k_star == v.len() {
        let top = v[v.len() - 1];
        top + (top.abs() * 1e-6).max(1e-10)
    } else {
        v[k_star]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_keeps_the_running_mean_under_target() {
        let lfsr = [0.5, 0.01, 0.02, 0.2, 0.03, 0.08];
        // Sorted: 0.01 0.02 0.03 0.08 0.2 0.5; running means 0.01 0.015 0.02 0.035 0.068 0.14.
        let t = find_threshold(&lfsr, 0.05);
        assert_eq!(t, 0.2);
        let called = lfsr.iter().filter(|&&l| l < t).count();
        assert_eq!(called, 4);
        assert!((pefp(&lfsr, t) - 0.035).abs() < 1e-12);
        // Every gene qualifies: just above the largest.
        let t_all = find_threshold(&lfsr, 0.2);
        assert!(t_all > 0.5 && lfsr.iter().all(|&l| l < t_all));
        // None qualifies.
        assert_eq!(find_threshold(&[0.3, 0.4], 0.05), 0.0);
        assert_eq!(pefp(&[0.3, 0.4], 0.0), 0.0);
        // The largest qualifying k, not the first violation: 0.01, 0.09, 0.02 → means 0.01, 0.015, 0.04.
        assert_eq!(find_threshold(&[0.09, 0.01, 0.02, 0.5], 0.04), 0.5);
        assert!((find_threshold(&[f64::NAN, 0.01], 0.05) - (0.01 + 1e-8)).abs() < 1e-15);
    }
}
