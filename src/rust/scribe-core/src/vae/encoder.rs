//! The VAE encoder: transformed counts → dense layers → `[loc | log-variance]`.
//!
//! The input of cell `c` is `h_cg = (τ_cg + β_c)·σ_g − κ_g`: `τ` the input
//! transform of each nonzero count relative to its value at zero (zero for
//! zero counts), `β_c` the transform's value at a zero count (0 for every
//! transform but `log` and `clr`), and `σ = 1/s`, `κ = m/s` the optional
//! standardization by the training cells' per-gene mean `m` and standard
//! deviation `s`. So the first layer is
//! `a = b + Σ_{g: u_g > 0} τ_cg σ_g W_g + β_c Σ_g σ_g W_g − Σ_g κ_g W_g`:
//! its cost is `O(nnz · H)` plus two dense `O(G · H)` sums per step, no
//! dense cells × genes input is formed, and its backward pass touches only
//! the rows of `W` of genes the batch detected (plus rank-one terms).

use crate::data::CountMatrix;
use crate::error::{CoreError, Result};
use crate::math::simd::{axpy, has_fma, Fma, Fused, Plain};
use crate::nn::{Activation, Dense, Mlp, MlpTape};
use rand::Rng;
use rayon::prelude::*;

/// Cells per parallel block of the first layer's forward pass.
const ROW_BLOCK: usize = 32;
/// Genes per parallel block of its kernel's gradient.
const GENE_BLOCK: usize = 256;
/// The standard deviations' floor (the original's, for constant genes).
const STD_FLOOR: f64 = 1e-3;

/// The element-wise input transform of the counts (the original's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputTransform {
    /// `ln(1 + u)`.
    Log1p,
    /// `ln(u + 1e-8)`.
    Log,
    Sqrt,
    Identity,
    /// `ln(1 + u / max(L, 1))` with `L` the cell's total.
    Log1pProp,
    /// `ln(u + ½) − mean_g ln(u_g + ½)`.
    Clr,
    /// `ln(1 + 10⁴ u / max(L, 1))`.
    Log1pNorm,
}

impl InputTransform {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "log1p" => Self::Log1p,
            "log" => Self::Log,
            "sqrt" => Self::Sqrt,
            "identity" => Self::Identity,
            "log1p_prop" => Self::Log1pProp,
            "clr" => Self::Clr,
            "log1p_norm" => Self::Log1pNorm,
            other => {
                return Err(CoreError::arg(
                    "vae_input_transform",
                    format!("'{other}' is not one of log1p, log, sqrt, identity, log1p_prop, clr, log1p_norm"),
                ))
            }
        })
    }

    /// `(τ of every nonzero in storage order, β per cell)`.
    fn sparse_parts(self, data: &CountMatrix) -> (Vec<f64>, Vec<f64>) {
        let mut tau = Vec::with_capacity(data.counts.len());
        let mut beta = vec![0.0; data.n_cells];
        let g = data.n_genes as f64;
        for c in 0..data.n_cells {
            let (lo, hi) = (data.cell_ptr[c], data.cell_ptr[c + 1]);
            let total = (data.lib_size[c]).max(1.0);
            let us = &data.counts[lo..hi];
            match self {
                Self::Log1p => tau.extend(us.iter().map(|&u| (u as f64).ln_1p())),
                Self::Sqrt => tau.extend(us.iter().map(|&u| (u as f64).sqrt())),
                Self::Identity => tau.extend(us.iter().map(|&u| u as f64)),
                Self::Log1pProp => tau.extend(us.iter().map(|&u| (u as f64 / total).ln_1p())),
                Self::Log1pNorm => tau.extend(us.iter().map(|&u| (1e4 * u as f64 / total).ln_1p())),
                Self::Log => {
                    let z = 1e-8f64.ln();
                    beta[c] = z;
                    tau.extend(us.iter().map(|&u| (u as f64 + 1e-8).ln() - z));
                }
                Self::Clr => {
                    let z = 0.5f64.ln();
                    let lg: Vec<f64> = us.iter().map(|&u| (u as f64 + 0.5).ln()).collect();
                    let mean = (lg.iter().sum::<f64>() + (g - us.len() as f64) * z) / g;
                    beta[c] = z - mean;
                    tau.extend(lg.iter().map(|v| v - z));
                }
            }
        }
        (tau, beta)
    }
}

/// Per-gene mean and standard deviation (floored) of the transformed
/// training counts: what standardization divides by.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardization {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardization {
    /// The statistics of `kind`-transformed `data` over all its cells
    /// (population standard deviation, floored at 1e-3).
    pub fn of(data: &CountMatrix, kind: InputTransform) -> Self {
        let (tau, beta) = kind.sparse_parts(data);
        let n = data.n_cells.max(1) as f64;
        // h_cg = τ_cg + β_c: the β terms reach every gene, τ only the nonzeros.
        let (b1, b2) = beta.iter().fold((0.0, 0.0), |(a, b), x| (a + x, b + x * x));
        let mut s1 = vec![b1; data.n_genes];
        let mut s2 = vec![b2; data.n_genes];
        for c in 0..data.n_cells {
            let (lo, hi) = (data.cell_ptr[c], data.cell_ptr[c + 1]);
            for (&g, &t) in data.gene_idx[lo..hi].iter().zip(&tau[lo..hi]) {
                s1[g as usize] += t;
                s2[g as usize] += t * t + 2.0 * t * beta[c];
            }
        }
        let mean: Vec<f64> = s1.iter().map(|v| v / n).collect();
        let std = s2
            .iter()
            .zip(&mean)
            .map(|(v, m)| (v / n - m * m).max(0.0).sqrt().max(STD_FLOOR))
            .collect();
        Standardization { mean, std }
    }

    /// Checks that the statistics cover `n_genes` genes.
    pub fn check(&self, n_genes: usize) -> Result<()> {
        if self.mean.len() != n_genes
            || self.std.len() != n_genes
            || self.std.iter().any(|s| !(*s > 0.0))
        {
            return Err(CoreError::arg(
                "fit",
                "its input standardization does not match its genes",
            ));
        }
        Ok(())
    }
}

/// The encoder's input on one data set (computed once, not per step).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderInput {
    /// `τ_cg σ_g` of every nonzero count, in storage order.
    values: Vec<f64>,
    /// `β_c` per cell (`None`: all zero).
    zero: Option<Vec<f64>>,
    /// `σ_g = 1/(s_g + 1e-8)` (`None`: ones).
    scale: Option<Vec<f64>>,
    /// `κ_g = m_g σ_g` (`None`: zeros).
    shift: Option<Vec<f64>>,
}

impl EncoderInput {
    pub fn new(
        data: &CountMatrix,
        kind: InputTransform,
        standardize: Option<&Standardization>,
    ) -> Self {
        let (mut values, beta) = kind.sparse_parts(data);
        let zero = beta.iter().any(|&b| b != 0.0).then_some(beta);
        let (scale, shift) = match standardize {
            None => (None, None),
            Some(st) => {
                let sc: Vec<f64> = st.std.iter().map(|s| 1.0 / (s + 1e-8)).collect();
                for (v, &g) in values.iter_mut().zip(&data.gene_idx) {
                    *v *= sc[g as usize];
                }
                let sh = st.mean.iter().zip(&sc).map(|(m, s)| m * s).collect();
                (Some(sc), Some(sh))
            }
        };
        EncoderInput {
            values,
            zero,
            scale,
            shift,
        }
    }

    /// `Σ_g x_g W_g` for a per-gene vector `x` (`W`: genes × H, row-major).
    fn weighted_rows(x: &[f64], w: &[f64], h: usize) -> Vec<f64> {
        let mut out = vec![0.0; h];
        for (xg, wg) in x.iter().zip(w.chunks_exact(h)) {
            out.iter_mut().zip(wg).for_each(|(o, v)| *o += xg * v);
        }
        out
    }
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
    /// `input` is the [`EncoderInput`] of `data`.
    pub fn forward(
        &self,
        p: &[f64],
        data: &CountMatrix,
        input: &EncoderInput,
        cells: &[u32],
        tape: &mut EncoderTape,
    ) -> Vec<f64> {
        let (a, b, _) = self.offsets();
        let h1 = self.first.n_out;
        let rows = cells.len();
        let (w, bias) = p[..a].split_at(self.first.n_in * h1);
        tape.a1.clear();
        tape.a1.resize(rows * h1, 0.0);
        // The dense parts: β_c Σ σ_g W_g per cell and the constant −Σ κ_g W_g.
        let ones;
        let scale = match &input.scale {
            Some(s) => s.as_slice(),
            None => {
                ones = vec![1.0; self.first.n_in];
                ones.as_slice()
            }
        };
        let w_beta = input
            .zero
            .as_ref()
            .map(|_| EncoderInput::weighted_rows(scale, w, h1));
        let mut base = bias.to_vec();
        if let Some(k) = &input.shift {
            let wk = EncoderInput::weighted_rows(k, w, h1);
            base.iter_mut().zip(&wk).for_each(|(b, x)| *b -= x);
        }
        let vals = &input.values;
        // Rows are independent: blocks of cells in parallel.
        tape.a1
            .par_chunks_mut(ROW_BLOCK * h1)
            .zip(cells.par_chunks(ROW_BLOCK))
            .for_each(|(block, cs)| {
                for (row, &c) in block.chunks_exact_mut(h1).zip(cs) {
                    row.copy_from_slice(&base);
                    if let (Some(beta), Some(wb)) = (&input.zero, &w_beta) {
                        let bc = beta[c as usize];
                        row.iter_mut().zip(wb).for_each(|(r, x)| *r += bc * x);
                    }
                }
                sparse_rows(block, cs, data, vals, w, h1);
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
        input: &EncoderInput,
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
        // Σ_c ∂a_c (the bias gradient) and Σ_c β_c ∂a_c: the dense parts' rank-one terms.
        let mut g_sum = vec![0.0; h1];
        let mut g_beta = input.zero.as_ref().map(|_| vec![0.0; h1]);
        for (r, ga) in g1.chunks_exact(h1).enumerate() {
            g_sum.iter_mut().zip(ga).for_each(|(x, y)| *x += y);
            if let (Some(gbv), Some(beta)) = (g_beta.as_mut(), &input.zero) {
                let bc = beta[cells[r] as usize];
                gbv.iter_mut().zip(ga).for_each(|(x, y)| *x += bc * y);
            }
        }
        gb.iter_mut().zip(&g_sum).for_each(|(x, y)| *x += y);
        let vals = &input.values;
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
                sparse_kernel_grad(block, (g0, g1_end), cells, &g1, data, vals, h1);
                // The dense parts, gene by gene after the batch's nonzeros.
                for (i, row) in block.chunks_exact_mut(h1).enumerate() {
                    let g = g0 as usize + i;
                    if let Some(gbv) = &g_beta {
                        let sg = input.scale.as_ref().map_or(1.0, |s| s[g]);
                        row.iter_mut().zip(gbv).for_each(|(x, y)| *x += sg * y);
                    }
                    if let Some(k) = &input.shift {
                        row.iter_mut().zip(&g_sum).for_each(|(x, y)| *x -= k[g] * y);
                    }
                }
            });
    }
}

/// Adds `Σ_{g: u_cg > 0} x_cg W_g` to each row of `block` (one per cell of
/// `cs`): the first layer's sparse product, on FMA vector code where the
/// CPU has it.
fn sparse_rows(
    block: &mut [f64],
    cs: &[u32],
    data: &CountMatrix,
    vals: &[f64],
    w: &[f64],
    h1: usize,
) {
    #[inline(always)]
    fn body<M: Fma>(
        m: M,
        block: &mut [f64],
        cs: &[u32],
        data: &CountMatrix,
        vals: &[f64],
        w: &[f64],
        h1: usize,
    ) {
        for (row, &c) in block.chunks_exact_mut(h1).zip(cs) {
            let (lo, hi) = (data.cell_ptr[c as usize], data.cell_ptr[c as usize + 1]);
            for (&g, &val) in data.gene_idx[lo..hi].iter().zip(&vals[lo..hi]) {
                axpy(m, val, &w[g as usize * h1..(g as usize + 1) * h1], row);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fused(
        block: &mut [f64],
        cs: &[u32],
        data: &CountMatrix,
        vals: &[f64],
        w: &[f64],
        h1: usize,
    ) {
        body(Fused, block, cs, data, vals, w, h1)
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { fused(block, cs, data, vals, w, h1) };
    }
    body(Plain, block, cs, data, vals, w, h1)
}

/// Adds the sparse part of the first layer's kernel gradient for genes
/// `g0..g1` (`block`: their rows of `∂W`): `Σ_c x_cg ∂a_c` over the batch's
/// cells in batch order.
fn sparse_kernel_grad(
    block: &mut [f64],
    genes: (u32, u32),
    cells: &[u32],
    ga: &[f64],
    data: &CountMatrix,
    vals: &[f64],
    h1: usize,
) {
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body<M: Fma>(
        m: M,
        block: &mut [f64],
        (g0, g1): (u32, u32),
        cells: &[u32],
        ga: &[f64],
        data: &CountMatrix,
        vals: &[f64],
        h1: usize,
    ) {
        for (r, &cc) in cells.iter().enumerate() {
            let gr = &ga[r * h1..(r + 1) * h1];
            let (lo, hi) = (data.cell_ptr[cc as usize], data.cell_ptr[cc as usize + 1]);
            let gs = &data.gene_idx[lo..hi];
            // Rows are sorted by gene: the range's nonzeros are contiguous.
            let from = gs.partition_point(|&g| g < g0);
            let to = gs.partition_point(|&g| g < g1);
            for k in from..to {
                let off = (gs[k] - g0) as usize * h1;
                axpy(m, vals[lo + k], gr, &mut block[off..off + h1]);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fused(
        block: &mut [f64],
        genes: (u32, u32),
        cells: &[u32],
        ga: &[f64],
        data: &CountMatrix,
        vals: &[f64],
        h1: usize,
    ) {
        body(Fused, block, genes, cells, ga, data, vals, h1)
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { fused(block, genes, cells, ga, data, vals, h1) };
    }
    body(Plain, block, genes, cells, ga, data, vals, h1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::Variant;
    use rand::SeedableRng;

    /// The transform of every count of cell `c`, densely, from its definition.
    fn dense_transform(kind: InputTransform, data: &CountMatrix, c: usize) -> Vec<f64> {
        let mut u = vec![0.0; data.n_genes];
        let (lo, hi) = (data.cell_ptr[c], data.cell_ptr[c + 1]);
        for (&g, &x) in data.gene_idx[lo..hi].iter().zip(&data.counts[lo..hi]) {
            u[g as usize] = x as f64;
        }
        let tot = u.iter().sum::<f64>().max(1.0);
        match kind {
            InputTransform::Log1p => u.iter().map(|x| x.ln_1p()).collect(),
            InputTransform::Log => u.iter().map(|x| (x + 1e-8).ln()).collect(),
            InputTransform::Sqrt => u.iter().map(|x| x.sqrt()).collect(),
            InputTransform::Identity => u,
            InputTransform::Log1pProp => u.iter().map(|x| (x / tot).ln_1p()).collect(),
            InputTransform::Log1pNorm => u.iter().map(|x| (1e4 * x / tot).ln_1p()).collect(),
            InputTransform::Clr => {
                let l: Vec<f64> = u.iter().map(|x| (x + 0.5).ln()).collect();
                let m = l.iter().sum::<f64>() / l.len() as f64;
                l.iter().map(|v| v - m).collect()
            }
        }
    }

    #[test]
    fn sparse_first_layer_matches_the_dense_transform_and_standardization() {
        let truth = NbTruth::random(Variant::Nbvcp, 12, 9, 3);
        let data = simulate_nb(&truth, 4);
        let enc = Encoder::new(12, &[5], 2, Activation::Tanh);
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
        let mut p = vec![0.0; enc.n_params()];
        enc.init(&mut rng, &mut p);
        let (w, b) = p[..enc.first.n_params()].split_at(12 * 5);
        let cells: Vec<u32> = (0..9).collect();
        let kinds = [
            InputTransform::Log1p,
            InputTransform::Log,
            InputTransform::Sqrt,
            InputTransform::Identity,
            InputTransform::Log1pProp,
            InputTransform::Clr,
            InputTransform::Log1pNorm,
        ];
        for kind in kinds {
            let dense: Vec<Vec<f64>> = (0..9).map(|c| dense_transform(kind, &data, c)).collect();
            // Population mean and standard deviation per gene, floored.
            let mean: Vec<f64> = (0..12)
                .map(|g| dense.iter().map(|h| h[g]).sum::<f64>() / 9.0)
                .collect();
            let std: Vec<f64> = (0..12)
                .map(|g| {
                    let v = dense.iter().map(|h| (h[g] - mean[g]).powi(2)).sum::<f64>() / 9.0;
                    v.sqrt().max(STD_FLOOR)
                })
                .collect();
            let st = Standardization::of(&data, kind);
            for g in 0..12 {
                assert!((st.mean[g] - mean[g]).abs() < 1e-9, "{kind:?} mean {g}");
                assert!((st.std[g] - std[g]).abs() < 1e-7, "{kind:?} std {g}");
            }
            for standardize in [false, true] {
                let input = EncoderInput::new(&data, kind, standardize.then_some(&st));
                let mut tape = EncoderTape::default();
                enc.forward(&p, &data, &input, &cells, &mut tape);
                for c in 0..9 {
                    for j in 0..5 {
                        let mut a = b[j];
                        for g in 0..12 {
                            let h = if standardize {
                                (dense[c][g] - mean[g]) / (std[g] + 1e-8)
                            } else {
                                dense[c][g]
                            };
                            a += h * w[g * 5 + j];
                        }
                        let got = tape.a1[c * 5 + j];
                        assert!(
                            (got - a).abs() < 1e-9 * a.abs().max(1.0),
                            "{kind:?} {standardize} {c} {j}: {got} vs {a}"
                        );
                    }
                }
            }
        }
        assert!(InputTransform::parse("log2").is_err());
    }
}
