//! Layer normalisation over each row, with a learned scale and shift.

/// Flax's default epsilon.
const EPS: f64 = 1e-6;

/// Normalises each row of width `n`: `y = γ ⊙ (x − mean)/sqrt(var + ε) + β`;
/// parameters `[γ (n) | β (n)]`, starting at `γ = 1`, `β = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerNorm {
    pub n: usize,
}

impl LayerNorm {
    pub fn n_params(&self) -> usize {
        2 * self.n
    }

    pub fn init(&self, p: &mut [f64]) {
        let (g, b) = p.split_at_mut(self.n);
        g.iter_mut().for_each(|v| *v = 1.0);
        b.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Writes `y`, and the normalised rows `xhat` and each row's inverse
    /// standard deviation `inv_sd` that the backward pass needs.
    pub fn forward(
        &self,
        p: &[f64],
        x: &[f64],
        rows: usize,
        y: &mut [f64],
        xhat: &mut [f64],
        inv_sd: &mut [f64],
    ) {
        let n = self.n;
        let (g, b) = p.split_at(n);
        for r in 0..rows {
            let xr = &x[r * n..(r + 1) * n];
            let mean = xr.iter().sum::<f64>() / n as f64;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            let is = 1.0 / (var + EPS).sqrt();
            inv_sd[r] = is;
            for j in 0..n {
                let h = (xr[j] - mean) * is;
                xhat[r * n + j] = h;
                y[r * n + j] = g[j] * h + b[j];
            }
        }
    }

    /// From `gy`: adds the parameter gradients into `gp` and writes `∂f/∂x`
    /// into `gx`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        p: &[f64],
        xhat: &[f64],
        inv_sd: &[f64],
        gy: &[f64],
        rows: usize,
        gp: &mut [f64],
        gx: &mut [f64],
    ) {
        let n = self.n;
        let (gg, gb) = gp[..2 * n].split_at_mut(n);
        let g = &p[..n];
        for r in 0..rows {
            let (h, dy) = (&xhat[r * n..(r + 1) * n], &gy[r * n..(r + 1) * n]);
            let (mut m1, mut m2) = (0.0, 0.0);
            for j in 0..n {
                gg[j] += dy[j] * h[j];
                gb[j] += dy[j];
                let dh = dy[j] * g[j];
                m1 += dh;
                m2 += dh * h[j];
            }
            let (m1, m2) = (m1 / n as f64, m2 / n as f64);
            for j in 0..n {
                gx[r * n + j] = inv_sd[r] * (dy[j] * g[j] - m1 - h[j] * m2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_support::{dot, normals};
    use crate::testutil::check_gradient;

    #[test]
    fn gradients_match_finite_differences() {
        let (ln, rows) = (LayerNorm { n: 6 }, 3);
        let p = normals(12, 4);
        let x = normals(18, 5);
        let c = normals(18, 6);
        let (mut y, mut h, mut s) = (vec![0.0; 18], vec![0.0; 18], vec![0.0; 3]);
        let mut gx = vec![0.0; 18];
        check_gradient(
            |p, g| {
                ln.forward(p, &x, rows, &mut y, &mut h, &mut s);
                ln.backward(p, &h, &s, &c, rows, g, &mut gx);
                dot(&c, &y)
            },
            &p,
            1e-6,
            "layer norm parameters",
        );
        check_gradient(
            |x, g| {
                ln.forward(&p, x, rows, &mut y, &mut h, &mut s);
                let mut gp = vec![0.0; 12];
                ln.backward(&p, &h, &s, &c, rows, &mut gp, &mut gx);
                g.iter_mut().zip(&gx).for_each(|(a, b)| *a += b);
                dot(&c, &y)
            },
            &x,
            1e-6,
            "layer norm input",
        );
    }
}
