//! The VAE encoder: `log1p` counts → dense layers → `[loc | log-variance]`.
//!
//! The first layer reads each cell's nonzero counts directly,
//! `a = b + Σ_{g: u_g > 0} log1p(u_g) W_g`, so its cost is `O(nnz · H)` and
//! no dense cells × genes input is formed; its backward pass touches only
//! the rows of `W` of genes the batch detected.

use crate::data::CountMatrix;
use crate::nn::{Activation, Dense, Mlp, MlpTape};
use rand::Rng;
use rayon::prelude::*;

/// Cells per parallel block of the first layer's forward pass.
const ROW_BLOCK: usize = 32;
/// Genes per parallel block of its kernel's gradient.
const GENE_BLOCK: usize = 256;

/// The encoder's input, `log1p(u)` of every nonzero count of `data` in its
/// storage order (computed once per data set, not per step).
pub fn input_values(data: &CountMatrix) -> Vec<f64> {
    data.counts.iter().map(|&u| (u as f64).ln_1p()).collect()
}

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

    /// `[loc | log-variance]` of each cell in `cells` (rows × 2·latent);
    /// `input` holds [`input_values`] of `data`.
    pub fn forward(
        &self,
        p: &[f64],
        data: &CountMatrix,
        input: &[f64],
        cells: &[u32],
        tape: &mut EncoderTape,
    ) -> Vec<f64> {
        let (a, b, _) = self.offsets();
        let h1 = self.first.n_out;
        let rows = cells.len();
        let (w, bias) = p[..a].split_at(self.first.n_in * h1);
        tape.a1.clear();
        tape.a1.resize(rows * h1, 0.0);
        // Rows are independent: blocks of cells in parallel.
        tape.a1
            .par_chunks_mut(ROW_BLOCK * h1)
            .zip(cells.par_chunks(ROW_BLOCK))
            .for_each(|(block, cs)| {
                for (row, &c) in block.chunks_exact_mut(h1).zip(cs) {
                    row.copy_from_slice(bias);
                    let (lo, hi) = (data.cell_ptr[c as usize], data.cell_ptr[c as usize + 1]);
                    for (&g, &val) in data.gene_idx[lo..hi].iter().zip(&input[lo..hi]) {
                        let wg = &w[g as usize * h1..(g as usize + 1) * h1];
                        row.iter_mut().zip(wg).for_each(|(r, wv)| *r += val * wv);
                    }
                }
            });
        let h: Vec<f64> = tape.a1.iter().map(|&v| self.activation.apply(v)).collect();
        self.mlp.forward(&p[a..b], &h, rows, &mut tape.mlp);
        let mut out = vec![0.0; rows * self.head.n_out];
        self.head
            .forward(&p[b..], tape.mlp.output(), rows, &mut out);
        out
    }

    /// From `g_out = ∂f/∂[loc | lv]`: adds the parameter gradients into `gp`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        p: &[f64],
        data: &CountMatrix,
        input: &[f64],
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
        for ga in g1.chunks_exact(h1) {
            gb.iter_mut().zip(ga).for_each(|(x, y)| *x += y);
        }
        // Kernel rows by ranges of genes in parallel: each range sees every
        // cell in batch order, so each row sums in the same order on any
        // number of threads.
        gw.par_chunks_mut(GENE_BLOCK * h1)
            .enumerate()
            .for_each(|(bi, block)| {
                let (g0, g1_end) = (
                    (bi * GENE_BLOCK) as u32,
                    (bi * GENE_BLOCK + block.len() / h1) as u32,
                );
                for (r, &cc) in cells.iter().enumerate() {
                    let ga = &g1[r * h1..(r + 1) * h1];
                    let (lo, hi) = (data.cell_ptr[cc as usize], data.cell_ptr[cc as usize + 1]);
                    let genes = &data.gene_idx[lo..hi];
                    // Rows are sorted by gene: the range's nonzeros are contiguous.
                    let from = genes.partition_point(|&g| g < g0);
                    let to = genes.partition_point(|&g| g < g1_end);
                    for k in from..to {
                        let off = (genes[k] - g0) as usize * h1;
                        let val = input[lo + k];
                        block[off..off + h1]
                            .iter_mut()
                            .zip(ga)
                            .for_each(|(x, y)| *x += val * y);
                    }
                }
            });
    }
}
