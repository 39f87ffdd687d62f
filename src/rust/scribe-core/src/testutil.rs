//! The finite-difference gradient checker shared by every model's tests.

/// Compares the analytic gradient of `f` at `x` with central differences.
/// `f(x, grad)` must return the value and *add* its gradient into `grad`.
pub fn check_gradient<F: FnMut(&[f64], &mut [f64]) -> f64>(
    mut f: F,
    x: &[f64],
    rel_tol: f64,
    label: &str,
) {
    let n = x.len();
    let mut g = vec![0.0; n];
    let f0 = f(x, &mut g);
    assert!(f0.is_finite(), "{label}: value is not finite");
    let mut scratch = vec![0.0; n];
    let mut xp = x.to_vec();
    for i in 0..n {
        let h = 1e-5 * x[i].abs().max(1.0);
        xp[i] = x[i] + h;
        let fp = f(&xp, &mut scratch);
        xp[i] = x[i] - h;
        let fm = f(&xp, &mut scratch);
        xp[i] = x[i];
        let fd = (fp - fm) / (2.0 * h);
        let tol = rel_tol * fd.abs().max(1.0) + 1e-9 * f0.abs();
        assert!(
            (g[i] - fd).abs() <= tol,
            "{label}: coordinate {i}: analytic {} vs finite difference {}",
            g[i],
            fd
        );
    }
}
