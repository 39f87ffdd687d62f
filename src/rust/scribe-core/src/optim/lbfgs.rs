//! Limited-memory BFGS for deterministic (full-batch) objectives: the
//! two-loop recursion over the last `m` curvature pairs and a backtracking
//! Armijo line search. The caller owns the objective, so the line search is
//! a small state machine driven by [`LineSearch::trial`]: each evaluation of
//! the Laplace outer loss is a Newton sweep over every cell, and the caller
//! keeps its own bookkeeping (cancellation, masked cells) between trials.

use std::collections::VecDeque;

/// Most curvature pairs a caller may keep: each holds two copies of the
/// parameter vector, and beyond a few dozen the direction barely improves.
pub const MAX_MEMORY: usize = 100;

/// Curvature pairs `(s, y, 1/yᵀs)` of the last `m` accepted steps.
#[derive(Debug, Clone)]
pub struct Lbfgs {
    m: usize,
    pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)>,
}

/// `a · b`.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Lbfgs {
    pub fn new(m: usize) -> Self {
        Lbfgs {
            m: m.max(1),
            pairs: VecDeque::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn reset(&mut self) {
        self.pairs.clear();
    }

    /// The quasi-Newton direction `−H g` (steepest descent `−g` with no pairs).
    pub fn direction(&self, g: &[f64]) -> Vec<f64> {
        let mut q = g.to_vec();
        let mut alpha = vec![0.0; self.pairs.len()];
        for (i, (s, y, rho)) in self.pairs.iter().enumerate().rev() {
            alpha[i] = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(q, y)| *q -= alpha[i] * y);
        }
        // H₀ = γ I with γ = sᵀy / yᵀy of the newest pair (Nocedal & Wright 7.20).
        if let Some((s, y, _)) = self.pairs.back() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for (i, (s, y, rho)) in self.pairs.iter().enumerate() {
            let beta = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(q, s)| *q += (alpha[i] - beta) * s);
        }
        q.iter_mut().for_each(|v| *v = -*v);
        q
    }

    /// Stores the pair of an accepted step; a pair without positive
    /// curvature (`sᵀy ≤ ε‖s‖‖y‖`, possible away from convexity) is skipped,
    /// which keeps `H` positive definite. Returns whether it was stored.
    pub fn push(&mut self, s: Vec<f64>, y: Vec<f64>) -> bool {
        let sy = dot(&s, &y);
        if !(sy > 1e-10 * dot(&s, &s).sqrt() * dot(&y, &y).sqrt()) {
            return false;
        }
        if self.pairs.len() == self.m {
            self.pairs.pop_front();
        }
        self.pairs.push_back((s, y, 1.0 / sy));
        true
    }
}

/// What the line search asks for next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Evaluate the objective at `x + alpha · d`.
    Try(f64),
    /// The last trial satisfies the Armijo condition.
    Accept,
    /// No step of at least `min_alpha` decreases the objective enough.
    Fail,
}

/// Backtracking Armijo search along a descent direction `d` from a point
/// with loss `f0` and slope `g₀ᵀd < 0`.
#[derive(Debug, Clone)]
pub struct LineSearch {
    f0: f64,
    slope: f64,
    alpha: f64,
    min_alpha: f64,
}

/// Sufficient-decrease constant of the Armijo condition.
const ARMIJO_C1: f64 = 1e-4;

impl LineSearch {
    /// Starts at `alpha`; gives up below `alpha · 2⁻²⁰`.
    pub fn new(f0: f64, slope: f64, alpha: f64) -> Self {
        LineSearch {
            f0,
            slope,
            alpha,
            min_alpha: alpha * 2f64.powi(-20),
        }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The verdict on a trial at the current `alpha` with loss `f` (a
    /// non-finite loss halves the step like a too-large one). A failed
    /// trial's next step is the minimiser of the quadratic through `f0`,
    /// the slope and `f`, kept within `[0.1, 0.5]` of the last.
    pub fn trial(&mut self, f: f64) -> Next {
        if f.is_finite() && f <= self.f0 + ARMIJO_C1 * self.alpha * self.slope {
            return Next::Accept;
        }
        let a = self.alpha;
        let shrink = if f.is_finite() {
            let curv = f - self.f0 - self.slope * a;
            if curv > 0.0 {
                (-self.slope * a / (2.0 * curv)).clamp(0.1, 0.5)
            } else {
                0.5
            }
        } else {
            0.1
        };
        self.alpha = a * shrink;
        if self.alpha < self.min_alpha {
            Next::Fail
        } else {
            Next::Try(self.alpha)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loss and its gradient.
    type Objective<'a> = &'a dyn Fn(&[f64]) -> (f64, Vec<f64>);

    /// Minimises `f` from `x` by L-BFGS with the line search; returns the
    /// iterations used to bring ‖g‖∞ under `tol`.
    fn minimise(f: Objective<'_>, x: &mut [f64], m: usize, tol: f64, max_iter: usize) -> usize {
        let mut opt = Lbfgs::new(m);
        let (mut fx, mut g) = f(x);
        for it in 0..max_iter {
            if g.iter().fold(0.0f64, |a, v| a.max(v.abs())) < tol {
                return it;
            }
            let d = opt.direction(&g);
            let slope = dot(&g, &d);
            assert!(slope < 0.0, "not a descent direction");
            let mut ls = LineSearch::new(fx, slope, 1.0);
            let mut a = 1.0;
            let (fx1, g1) = loop {
                let xt: Vec<f64> = x.iter().zip(&d).map(|(x, d)| x + a * d).collect();
                let (ft, gt) = f(&xt);
                match ls.trial(ft) {
                    Next::Accept => break (ft, gt),
                    Next::Try(b) => a = b,
                    Next::Fail => panic!("line search failed"),
                }
            };
            let s: Vec<f64> = d.iter().map(|d| a * d).collect();
            let y: Vec<f64> = g1.iter().zip(&g).map(|(a, b)| a - b).collect();
            x.iter_mut().zip(&s).for_each(|(x, s)| *x += s);
            opt.push(s, y);
            fx = fx1;
            g = g1;
        }
        max_iter
    }

    #[test]
    fn no_pairs_is_steepest_descent() {
        let opt = Lbfgs::new(5);
        assert_eq!(opt.direction(&[1.0, -2.0]), vec![-1.0, 2.0]);
    }

    #[test]
    fn one_pair_satisfies_the_secant_condition() {
        // With H₀ = γI and one pair, the BFGS update maps y to s exactly.
        let mut opt = Lbfgs::new(3);
        let (s, y) = (vec![0.5, -1.0, 2.0], vec![1.0, -0.5, 3.0]);
        assert!(opt.push(s.clone(), y.clone()));
        let hy = opt.direction(&y);
        for (a, b) in hy.iter().zip(&s) {
            assert!((a + b).abs() < 1e-12, "{hy:?} vs −{s:?}");
        }
        // Negative curvature is not stored.
        assert!(!opt.push(vec![1.0, 0.0, 0.0], vec![-1.0, 0.0, 0.0]));
    }

    #[test]
    fn converges_on_an_ill_conditioned_quadratic_and_rosenbrock() {
        // Quadratic with eigenvalues 1 … 1000: L-BFGS needs far fewer
        // iterations than the condition number.
        let n = 50;
        let q = |x: &[f64]| {
            let mut f = 0.0;
            let g: Vec<f64> = (0..n)
                .map(|i| {
                    let h = 1.0 + 999.0 * i as f64 / (n - 1) as f64;
                    f += 0.5 * h * (x[i] - 1.0).powi(2);
                    h * (x[i] - 1.0)
                })
                .collect();
            (f, g)
        };
        let mut x = vec![0.0; n];
        let it = minimise(&q, &mut x, 10, 1e-8, 500);
        assert!(it < 200, "{it} iterations");
        assert!(x.iter().all(|v| (v - 1.0).abs() < 1e-8));
        let rosen = |x: &[f64]| {
            let (a, b) = (x[0], x[1]);
            (
                (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2),
                vec![
                    -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                    200.0 * (b - a * a),
                ],
            )
        };
        let mut x = vec![-1.2, 1.0];
        let it = minimise(&rosen, &mut x, 5, 1e-8, 200);
        assert!(it < 100, "{it} iterations");
        assert!((x[0] - 1.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn line_search_backtracks_and_gives_up() {
        // f(α) = (α − 0.1)²: from f0 = 0.01 with slope −0.2, α = 1 fails and
        // the quadratic model jumps straight to the minimiser's region.
        let mut ls = LineSearch::new(0.01, -0.2, 1.0);
        let f = |a: f64| (a - 0.1) * (a - 0.1);
        let mut a = 1.0;
        let mut n = 0;
        while let Next::Try(b) = ls.trial(f(a)) {
            a = b;
            n += 1;
        }
        assert!(n >= 1 && a <= 0.2, "{n} backtracks to {a}");
        assert!(f(a) < 0.01);
        // A loss that never decreases ends in Fail, and NaN counts as too large.
        let mut ls = LineSearch::new(0.0, -1.0, 1.0);
        let mut last = Next::Try(1.0);
        for _ in 0..100 {
            last = ls.trial(f64::NAN);
            if last == Next::Fail {
                break;
            }
        }
        assert_eq!(last, Next::Fail);
    }
}
