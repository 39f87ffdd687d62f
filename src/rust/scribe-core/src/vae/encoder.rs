//! The VAE encoder: `log1p` counts → dense layers → `[loc | log-variance]`.
//!
//! The first layer reads each cell's nonzero counts directly,
//! `a = b + Σ_{g: u_g > 0} log1p(u_g) W_g`, so its cost is `O(nnz · H)` and
//! no dense cells × genes input is formed; its backward pass touches only
//! the rows of `W` of genes the batch detected.

use crate::data::CountMatrix;
use crate::nn::{Activation, Dense, Mlp, MlpTape};
use rand::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Encoder {
    pub first: Dense,
    pub mlp: Mlp,
    pub head: Dense,
    pub activation: Activation,
}

/// What a forward pass leaves for the backward pass.
#[derive(Debug, Default, Clone)]
pub struct EncoderTape {
    /// First layer's pre-activation (rows × H1).
    a1: Vec<f64>,
    mlp: MlpTape,
}

impl Encoder {
    /// `n_genes` inputs, hidden widths `hidden` (non-empty), `2·latent` outputs.
    pub fn new(n_genes: usize, hidden: &[usize], latent: usize, activation: Activation) -> Self {
        let first = Dense::new(n_genes, hidden[0]);
        let mlp = Mlp {
            n_in: hidden[0],
            hidden: hidden[1..].to_vec(),
            activation,
            layer_norm: false,
            residual: false,
        };
        let head = Dense::new(mlp.n_out(), 2 * latent);
        Encoder {
            first,
            mlp,
            head,
            activation,
        }
    }

    pub fn n_params(&self) -> usize {
        self.first.n_params() + self.mlp.n_params() + self.head.n_params()
    }

    fn offsets(&self) -> (usize, usize, usize) {
        let a = self.first.n_params();
        let b = a + self.mlp.n_params();
        (a, b, b + self.head.n_params())
    }

    pub fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        let (a, b, c) = self.offsets();
        self.first.init(rng, &mut p[..a]);
        self.mlp.init(rng, &mut p[a..b]);
        self.head.init(rng, &mut p[b..c]);
    }

    /// `[loc | log-variance]` of each cell in `cells` (rows × 2·latent).
    pub fn forward(
        &self,
        p: &[f64],
        data: &CountMatrix,
        cells: &[u32],
        tape: &mut EncoderTape,
    ) -> Vec<f64> {
        let (a, b, _) = self.offsets();
        let h1 = self.first.n_out;
        let rows = cells.len();
        let (w, bias) = p[..a].split_at(self.first.n_in * h1);
        tape.a1.clear();
        for &c in cells {
            let start = tape.a1.len();
            tape.a1.extend_from_slice(bias);
            let (genes, counts) = data.row(c as usize);
            let row = &mut tape.a1[start..];
            for (&g, &u) in genes.iter().zip(counts) {
                let val = (u as f64).ln_1p();
                let wg = &w[g as usize * h1..(g as usize + 1) * h1];
                row.iter_mut().zip(wg).for_each(|(r, wv)| *r += val * wv);
            }
        }
        let h: Vec<f64> = tape.a1.iter().map(|&v| self.activation.apply(v)).collect();
        self.mlp.forward(&p[a..b], &h, rows, &mut tape.mlp);
        let mut out = vec![0.0; rows * self.head.n_out];
        self.head
            .forward(&p[b..], tape.mlp.output(), rows, &mut out);
        out
    }

    /// From `g_out = ∂f/∂[loc | lv]`: adds the parameter gradients into `gp`.
    pub fn backward(
        &self,
        p: &[f64],
        data: &CountMatrix,
        cells: &[u32],
        tape: &EncoderTape,
        g_out: &[f64],
        gp: &mut [f64],
    ) {
        let (a, b, c) = self.offsets();
        let rows = cells.len();
        let h1 = self.first.n_out;
        let mut gh = vec![0.0; rows * self.head.n_in];
        self.head.backward(
            &p[b..c],
            tape.mlp.output(),
            g_out,
            rows,
            &mut gp[b..c],
            Some(&mut gh),
        );
        let mut g1 = vec![0.0; rows * h1];
        self.mlp
            .backward(&p[a..b], &tape.mlp, &mut gh, &mut gp[a..b], Some(&mut g1));
        for (g, &pre) in g1.iter_mut().zip(&tape.a1) {
            *g *= self.activation.derivative(pre);
        }
        let (gw, gb) = gp[..a].split_at_mut(self.first.n_in * h1);
        for (r, &cc) in cells.iter().enumerate() {
            let ga = &g1[r * h1..(r + 1) * h1];
            gb.iter_mut().zip(ga).for_each(|(x, y)| *x += y);
            let (genes, counts) = data.row(cc as usize);
            for (&g, &u) in genes.iter().zip(counts) {
                let val = (u as f64).ln_1p();
                let gwr = &mut gw[g as usize * h1..(g as usize + 1) * h1];
                gwr.iter_mut().zip(ga).for_each(|(x, y)| *x += val * y);
            }
        }
    }
}
