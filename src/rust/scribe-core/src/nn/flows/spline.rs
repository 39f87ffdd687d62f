//! The rational-quadratic spline of spline coupling (Durkan et al. 2019,
//! with the original's learned boundary slopes): a monotone map of
//! `[−B, B]` onto itself through `K` bins, the identity outside.
//!
//! Per coordinate the conditioner gives `3K + 1` raw values
//! `[widths (K) | heights (K) | slopes (K + 1)]`: widths and heights are
//! `2B (m + (1 − mK) softmax(raw))` (minimum bin size `m`), slopes
//! `softplus(raw) + m`. Inside bin `k` with `s = h/w`, `ξ = (x − x_k)/w`:
//! `y = y_k + h (s ξ² + d_k ξ(1−ξ)) / (s + (d_{k+1} + d_k − 2s) ξ(1−ξ))`.
//! The inverse solves that quadratic for `ξ`.
//!
//! Gradients: the map and its log-derivative are evaluated in forward-mode
//! dual numbers over the bin's seven local quantities `(x, x_k, w, y_k, h,
//! d_k, d_{k+1})`, then carried to the raw values through the cumulative
//! sums, the softmax and the softplus; the inverse's by the implicit
//! function theorem at the solution.

use super::Direction;
use std::ops::{Add, Div, Mul, Sub};

/// Half-width `B` of the spline's interval.
pub const BOUND: f64 = 3.0;
/// Minimum bin width, height and slope.
pub const MIN: f64 = 1e-3;

/// A value and its partial derivatives with respect to the seven local
/// quantities of a bin.
#[derive(Debug, Clone, Copy)]
struct Dual {
    v: f64,
    d: [f64; 7],
}

impl Dual {
    fn seed(v: f64, i: usize) -> Self {
        let mut d = [0.0; 7];
        d[i] = 1.0;
        Dual { v, d }
    }
    fn konst(v: f64) -> Self {
        Dual { v, d: [0.0; 7] }
    }
    fn ln(self) -> Self {
        let mut d = self.d;
        d.iter_mut().for_each(|x| *x /= self.v);
        Dual { v: self.v.ln(), d }
    }
    fn zip(self, o: Self, v: f64, f: impl Fn(f64, f64) -> f64) -> Self {
        let mut d = [0.0; 7];
        for i in 0..7 {
            d[i] = f(self.d[i], o.d[i]);
        }
        Dual { v, d }
    }
}

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        self.zip(o, self.v + o.v, |a, b| a + b)
    }
}
impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        self.zip(o, self.v - o.v, |a, b| a - b)
    }
}
// The product and quotient rules mix operators by design.
#[allow(clippy::suspicious_arithmetic_impl)]
impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        let (u, v) = (self.v, o.v);
        self.zip(o, u * v, |a, b| a * v + u * b)
    }
}
#[allow(clippy::suspicious_arithmetic_impl)]
impl Div for Dual {
    type Output = Dual;
    fn div(self, o: Dual) -> Dual {
        let (u, v) = (self.v, o.v);
        self.zip(o, u / v, |a, b| (a * v - u * b) / (v * v))
    }
}

/// The knots and slopes of one coordinate's spline.
struct Knots {
    xs: Vec<f64>,
    ys: Vec<f64>,
    w: Vec<f64>,
    h: Vec<f64>,
    d: Vec<f64>,
    /// `softmax` of the raw widths and heights (for the backward pass).
    uw: Vec<f64>,
    uh: Vec<f64>,
}

fn softmax(raw: &[f64]) -> Vec<f64> {
    let m = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = raw.iter().map(|v| (v - m).exp()).collect();
    let t: f64 = e.iter().sum();
    e.iter().map(|v| v / t).collect()
}

impl Knots {
    fn new(raw: &[f64], k: usize) -> Self {
        let (rw, rest) = raw.split_at(k);
        let (rh, rd) = rest.split_at(k);
        let (uw, uh) = (softmax(rw), softmax(rh));
        let size = |u: &f64| 2.0 * BOUND * (MIN + (1.0 - MIN * k as f64) * u);
        let (w, h): (Vec<f64>, Vec<f64>) =
            (uw.iter().map(size).collect(), uh.iter().map(size).collect());
        let cum = |v: &[f64]| {
            let mut c = Vec::with_capacity(v.len() + 1);
            c.push(-BOUND);
            for x in v {
                c.push(c.last().expect("start") + x);
            }
            c
        };
        Knots {
            xs: cum(&w),
            ys: cum(&h),
            w,
            h,
            d: rd[..k + 1]
                .iter()
                .map(|&r| crate::math::softplus(r) + MIN)
                .collect(),
            uw,
            uh,
        }
    }

    fn bin(knots: &[f64], v: f64) -> usize {
        let k = knots.len() - 1;
        knots[1..k].iter().take_while(|&&t| v >= t).count()
    }

    /// `(y, ln dy/dx)` at `x` in bin `b`, with partials over the bin's
    /// local quantities (index 0: x).
    fn eval(&self, b: usize, x: f64) -> (Dual, Dual) {
        let xv = Dual::seed(x, 0);
        let xk = Dual::seed(self.xs[b], 1);
        let w = Dual::seed(self.w[b], 2);
        let yk = Dual::seed(self.ys[b], 3);
        let h = Dual::seed(self.h[b], 4);
        let dk = Dual::seed(self.d[b], 5);
        let dk1 = Dual::seed(self.d[b + 1], 6);
        let one = Dual::konst(1.0);
        let two = Dual::konst(2.0);
        let s = h / w;
        let xi = (xv - xk) / w;
        let t = xi * (one - xi);
        let den = s + (dk1 + dk - two * s) * t;
        let y = yk + h * (s * xi * xi + dk * t) / den;
        let om = one - xi;
        let ld = (s * s * (dk1 * xi * xi + two * s * t + dk * om * om)).ln() - two * den.ln();
        (y, ld)
    }

    /// Carries gradients of the local quantities `g` (indices 1..7) of bin
    /// `b` to the raw values, added into `g_raw`.
    fn to_raw(&self, b: usize, g: &[f64; 7], g_raw: &mut [f64]) {
        let k = self.w.len();
        let scale = 2.0 * BOUND * (1.0 - MIN * k as f64);
        // x_b = −B + Σ_{i<b} w_i, y_b likewise; then the bin's own w, h.
        let mut gw = vec![0.0; k];
        let mut gh = vec![0.0; k];
        for i in 0..b {
            gw[i] += g[1];
            gh[i] += g[3];
        }
        gw[b] += g[2];
        gh[b] += g[4];
        for (u, gs, off) in [(&self.uw, &gw, 0), (&self.uh, &gh, k)] {
            let dot: f64 = u.iter().zip(gs.iter()).map(|(a, b)| a * b).sum();
            for j in 0..k {
                g_raw[off + j] += scale * u[j] * (gs[j] - dot);
            }
        }
        // d = softplus(raw) + m: ∂/∂raw = sigmoid(raw) = 1 − e^{−(d − m)}.
        for (i, gi) in [(b, g[5]), (b + 1, g[6])] {
            g_raw[2 * k + i] += gi * (1.0 - (-(self.d[i] - MIN)).exp());
        }
    }
}

/// The rational-quadratic spline map of one coordinate with `bins` bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spline {
    pub bins: usize,
}

impl Spline {
    /// Raw values per coordinate.
    pub fn width(&self) -> usize {
        3 * self.bins + 1
    }

    /// The head bias of the identity map: uniform bins, unit slopes.
    pub fn identity_bias(&self, out: &mut [f64]) {
        let k = self.bins;
        out[..2 * k].iter_mut().for_each(|v| *v = 0.0);
        let unit = crate::math::softplus_inv(1.0 - MIN);
        out[2 * k..3 * k + 1].iter_mut().for_each(|v| *v = unit);
    }

    /// `(output, log |det|)` of one value.
    pub fn apply(&self, dir: Direction, v: f64, raw: &[f64]) -> (f64, f64) {
        if !(-BOUND..BOUND).contains(&v) {
            return (v, 0.0);
        }
        let kn = Knots::new(raw, self.bins);
        match dir {
            Direction::Density => {
                let b = Knots::bin(&kn.xs, v);
                let (y, ld) = kn.eval(b, v);
                (y.v, ld.v)
            }
            Direction::Generative => {
                let x = kn.inverse(v);
                let b = Knots::bin(&kn.xs, x);
                (x, -kn.eval(b, x).1.v)
            }
        }
    }

    /// From `g_out`, `g_ld`: `∂f/∂input`, with the raw values' gradients
    /// added into `g_raw`. `v_in`, `v_out` are the value's input and output.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        dir: Direction,
        v_in: f64,
        v_out: f64,
        raw: &[f64],
        g_out: f64,
        g_ld: f64,
        g_raw: &mut [f64],
    ) -> f64 {
        if !(-BOUND..BOUND).contains(&v_in) {
            return g_out;
        }
        let kn = Knots::new(raw, self.bins);
        let mut g = [0.0; 7];
        match dir {
            Direction::Density => {
                let b = Knots::bin(&kn.xs, v_in);
                let (y, ld) = kn.eval(b, v_in);
                for i in 0..7 {
                    g[i] = g_out * y.d[i] + g_ld * ld.d[i];
                }
                kn.to_raw(b, &g, g_raw);
                g[0]
            }
            Direction::Generative => {
                // x = f⁻¹(y): dx/dy = 1/f', dx/dθ = −(∂f/∂θ)/f'; log-det −ℓ(x).
                let x = v_out;
                let b = Knots::bin(&kn.xs, x);
                let (y, ld) = kn.eval(b, x);
                let fx = y.d[0];
                let gx = g_out - g_ld * ld.d[0];
                for i in 1..7 {
                    g[i] = -gx * y.d[i] / fx - g_ld * ld.d[i];
                }
                kn.to_raw(b, &g, g_raw);
                gx / fx
            }
        }
    }
}

impl Knots {
    fn inverse(&self, y: f64) -> f64 {
        let b = Knots::bin(&self.ys, y);
        let (w, h, dk, dk1) = (self.w[b], self.h[b], self.d[b], self.d[b + 1]);
        let s = h / w;
        let delta = y - self.ys[b];
        let c2 = dk1 + dk - 2.0 * s;
        let a = h * (s - dk) + delta * c2;
        let bq = h * dk - delta * c2;
        let c = -s * delta;
        let disc = (bq * bq - 4.0 * a * c).max(0.0);
        let xi = (2.0 * c / (-bq - disc.sqrt())).clamp(0.0, 1.0);
        self.xs[b] + xi * w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_support::normals;

    #[test]
    fn inverse_and_gradients_of_one_coordinate() {
        let sp = Spline { bins: 5 };
        let raw: Vec<f64> = normals(sp.width(), 3).iter().map(|v| 0.7 * v).collect();
        for &x in &[-2.9, -1.3, -0.2, 0.05, 0.9, 2.7, 3.5, -4.0] {
            let (y, ld) = sp.apply(Direction::Density, x, &raw);
            let (back, ld2) = sp.apply(Direction::Generative, y, &raw);
            assert!((back - x).abs() < 1e-10, "{x}: {back}");
            assert!((ld + ld2).abs() < 1e-10);
            // The log-det is the log-derivative.
            let h = 1e-6;
            let fd = (sp.apply(Direction::Density, x + h, &raw).0
                - sp.apply(Direction::Density, x - h, &raw).0)
                / (2.0 * h);
            assert!((fd.ln() - ld).abs() < 1e-6, "{x}: {} vs {ld}", fd.ln());
            for (dir, v) in [(Direction::Density, x), (Direction::Generative, y)] {
                let f = |v: f64, raw: &[f64]| {
                    let (o, l) = sp.apply(dir, v, raw);
                    0.7 * o - 1.3 * l
                };
                let (out, _) = sp.apply(dir, v, &raw);
                let mut g_raw = vec![0.0; raw.len()];
                let g_in = sp.backward(dir, v, out, &raw, 0.7, -1.3, &mut g_raw);
                let fd = (f(v + h, &raw) - f(v - h, &raw)) / (2.0 * h);
                assert!(
                    (fd - g_in).abs() < 1e-6,
                    "{dir:?} {x}: input {g_in} vs {fd}"
                );
                for j in 0..raw.len() {
                    let (mut rp, mut rm) = (raw.clone(), raw.clone());
                    rp[j] += h;
                    rm[j] -= h;
                    let fd = (f(v, &rp) - f(v, &rm)) / (2.0 * h);
                    assert!(
                        (fd - g_raw[j]).abs() < 1e-6,
                        "{dir:?} {x}: raw {j}: {} vs {fd}",
                        g_raw[j]
                    );
                }
            }
        }
        // The identity bias is the identity map.
        let mut id = vec![0.0; sp.width()];
        sp.identity_bias(&mut id);
        let (y, ld) = sp.apply(Direction::Density, 1.234, &id);
        assert!((y - 1.234).abs() < 1e-12 && ld.abs() < 1e-12);
    }
}
