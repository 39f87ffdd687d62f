//! A dense (fully connected) layer `y = x W + b`.

use crate::math::gemm::{gemm, view};
use rand::Rng;

/// `n_in → n_out`; parameters `[W (n_in × n_out, row-major) | b (n_out)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dense {
    pub n_in: usize,
    pub n_out: usize,
}

impl Dense {
    pub fn new(n_in: usize, n_out: usize) -> Self {
        Dense { n_in, n_out }
    }

    pub fn n_params(&self) -> usize {
        (self.n_in + 1) * self.n_out
    }

    /// LeCun-normal kernel, zero bias (Flax's defaults).
    pub fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        let sd = 1.0 / (self.n_in.max(1) as f64).sqrt();
        let (w, b) = p.split_at_mut(self.n_in * self.n_out);
        w.iter_mut()
            .for_each(|v| *v = sd * super::truncated_normal(rng));
        b.iter_mut().for_each(|v| *v = 0.0);
    }

    /// `y = x W + b` for `rows` rows of `x`.
    pub fn forward(&self, p: &[f64], x: &[f64], rows: usize, y: &mut [f64]) {
        let (w, rest) = p.split_at(self.n_in * self.n_out);
        let b = &rest[..self.n_out];
        let y = &mut y[..rows * self.n_out];
        for row in y.chunks_exact_mut(self.n_out.max(1)) {
            row.copy_from_slice(b);
        }
        if self.n_in > 0 {
            gemm(
                y,
                view(x, rows, self.n_in),
                view(w, self.n_in, self.n_out),
                true,
                1.0,
            );
        }
    }

    /// From `gy = ∂f/∂y`: adds `∂f/∂W = xᵀ gy` and `∂f/∂b = Σ_rows gy` into
    /// `gp`, and writes `∂f/∂x = gy Wᵀ` into `gx` when given.
    pub fn backward(
        &self,
        p: &[f64],
        x: &[f64],
        gy: &[f64],
        rows: usize,
        gp: &mut [f64],
        gx: Option<&mut [f64]>,
    ) {
        let nw = self.n_in * self.n_out;
        let (gw, gb) = gp[..self.n_params()].split_at_mut(nw);
        for row in gy[..rows * self.n_out].chunks_exact(self.n_out.max(1)) {
            gb.iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
        if self.n_in == 0 {
            return;
        }
        gemm(
            gw,
            view(x, rows, self.n_in).transpose(),
            view(gy, rows, self.n_out),
            true,
            1.0,
        );
        if let Some(gx) = gx {
            gemm(
                gx,
                view(gy, rows, self.n_out),
                view(&p[..nw], self.n_in, self.n_out).transpose(),
                false,
                1.0,
            );
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
        let (d, rows) = (Dense::new(5, 3), 4);
        let p = normals(d.n_params(), 1);
        let x = normals(rows * 5, 2);
        let c = normals(rows * 3, 3);
        let mut y = vec![0.0; rows * 3];
        check_gradient(
            |p, g| {
                d.forward(p, &x, rows, &mut y);
                d.backward(p, &x, &c, rows, g, None);
                dot(&c, &y)
            },
            &p,
            1e-6,
            "dense parameters",
        );
        check_gradient(
            |x, g| {
                d.forward(&p, x, rows, &mut y);
                let mut gp = vec![0.0; d.n_params()];
                let mut gx = vec![0.0; x.len()];
                d.backward(&p, x, &c, rows, &mut gp, Some(&mut gx));
                g.iter_mut().zip(&gx).for_each(|(a, b)| *a += b);
                dot(&c, &y)
            },
            &x,
            1e-6,
            "dense input",
        );
    }
}
