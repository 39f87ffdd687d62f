//! The VAE engine: amortized inference with a latent embedding per cell.
//!
//! An encoder maps each cell's counts to `q(z_c | u_c) = N(loc, exp(½ lv))`
//! (the head's second half is a log-variance, as in the original); a
//! decoder maps `z_c` to the cell's gene parameters (`r`, and the gate of
//! zero-inflated models); `p` and per-cell capture stay global coordinates
//! with mean-field guides and the NB model's priors. The prior of `z` is
//! `N(0, I)` or a learned flow (`log p(z) = log N(F(z)) + log|det ∂F/∂z|`,
//! the original's decoupled prior), whose KL is estimated by Monte Carlo.
//!
//! Loss per step on a batch `B` of `N` cells (scale `N/B` inside the plate):
//! `−Σ_c (N/B) ln p(u_c | r_c, p̂_c, π_c) + β(t) · [Σ_c (N/B) KL_c + KL_globals]`,
//! with `β` rising linearly from 0 to 1 over `kl_warmup` steps and scaling
//! every latent term, as in the original.
//!
//! Cost: the encoder's first layer reads the sparse counts directly
//! (`O(nnz · H)`, never a dense cells × genes input); the decoder and the
//! likelihood run per block of cells, so no dense cells × genes parameter
//! array exists beyond one block.
//!
//! Parameterizations: canonical (the decoder outputs `r`; global `p`),
//! mean_prob (it outputs `μ`, `r = μ(1−p)/p`) and mean_odds (it outputs
//! `μ`; global `phi`, `r = μ·phi`, `p = 1/(1+phi)`, capture as
//! `phi_capture`).
//!
//! Scope of this version: nbdm, nbvcp, zinb, zinbvcp without mixtures,
//! hierarchies, BNB or datasets (each is an argument error naming what is
//! not available); PLN, NBLN and LNM in [`lognormal`] (a linear decoder). Both
//! share the latent side ([`latent`]) and the training loop
//! ([`fit::Objective`]).

pub mod analysis;
pub mod encoder;
pub mod fit;
pub mod gof;
mod latent;
pub mod lognormal;

pub use fit::{fit, VaeFit};

use crate::data::{Batch, CountMatrix};
use crate::dist::Link;
use crate::error::{CoreError, Result};
use crate::math::{digamma_diff, lgamma_diff};
use crate::models::nb::{NbModel, Parameterization};
use crate::models::{BlockKind, Model};
use crate::nn::flows::{ChainTape, Direction, FlowChain, FlowConfig};
use crate::nn::{Activation, Dense, Mlp, MlpTape};
use crate::svi::guide::mean_field::{mf_term, KlCache};
use encoder::{Encoder, EncoderInput, InputTransform, Standardization};
use rand::Rng;
use rand::RngExt;
use rand_distr::StandardNormal;
use rayon::prelude::*;

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// The architecture and objective of a VAE.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    pub latent_dim: usize,
    pub encoder_hidden: Vec<usize>,
    /// Decoder widths in the original's order; applied reversed
    /// (`[64, 128]`: z → 128 → 64 → heads).
    pub decoder_hidden: Vec<usize>,
    pub activation: Activation,
    /// `None`: `N(0, I)`; else a flow prior (its density direction must be
    /// one pass: coupling flows or MAF).
    pub prior: Option<FlowConfig>,
    /// Steps over which `β` rises from 0 to 1 (0: no annealing).
    pub kl_warmup: usize,
    /// Cells per decoder block.
    pub block: usize,
    /// The encoder's input transform of the counts.
    pub input_transform: InputTransform,
    /// Whether the encoder's input is standardized per gene (by the
    /// training cells' mean and standard deviation of the transform).
    pub standardize: bool,
    /// Bounds of the encoder's log-variance head before it is used (the
    /// log-normal models' `[−7, 2]`, as in the original); `None`: unclipped.
    pub log_var_clip: Option<(f64, f64)>,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            latent_dim: 10,
            encoder_hidden: vec![128, 64],
            decoder_hidden: vec![64, 128],
            activation: Activation::Relu,
            prior: None,
            kl_warmup: 2000,
            block: 64,
            input_transform: InputTransform::Log1p,
            standardize: false,
            log_var_clip: None,
        }
    }
}

/// A VAE over an NB-family model: the networks, the flow prior and the
/// global coordinates.
pub struct Vae<'m> {
    pub model: &'m NbModel<'m>,
    pub cfg: VaeConfig,
    pub encoder: Encoder,
    pub dec_mlp: Mlp,
    /// `[r (G) | gate (G)]` per row (gate with zero inflation).
    pub dec_head: Dense,
    pub prior: Option<FlowChain>,
    /// The encoder's input on the training data.
    input: EncoderInput,
    /// The training data's input statistics (with `standardize`).
    pub standardization: Option<Standardization>,
    gated: bool,
    /// Layout index of `p` (`phi` in mean_odds) and the capture block
    /// (offset, cells; `p_capture` or mean_odds' `phi_capture`).
    p_coord: usize,
    capture: Option<(usize, usize)>,
}

/// What one block of cells contributes to a step.
struct BlockOut {
    elbo: f64,
    g_dec: Vec<f64>,
    gz: Vec<f64>,
    g_phat: Vec<f64>,
    /// `∂elbo/∂s` of the factor `s` in `r = s·μ` (mean_prob, mean_odds).
    g_r_scale: f64,
}

/// The shared success probability and the factor that turns the decoder's
/// output into `r`, from the scalar coordinate (`p`, or mean_odds' `phi`).
struct ScalarParams {
    p: f64,
    /// `∂p/∂x`.
    dp: f64,
    /// `r = r_scale · (decoder output)`: 1 (canonical, the output is `r`),
    /// `(1−p)/p` (mean_prob) or `phi` (mean_odds; the output is `μ`).
    r_scale: f64,
    /// `∂r_scale/∂x`.
    d_r_scale: f64,
}

/// `β` of step `t` (0-based).
pub fn kl_weight(t: usize, warmup: usize) -> f64 {
    if warmup == 0 {
        1.0
    } else {
        (t as f64 / warmup as f64).min(1.0)
    }
}

impl<'m> Vae<'m> {
    pub fn new(model: &'m NbModel<'m>, cfg: VaeConfig) -> Result<Self> {
        let spec = &model.spec;
        if spec.mixture.is_some() {
            return Err(CoreError::arg(
                "n_components",
                "mixtures cannot be fitted with the VAE (as in the original)",
            ));
        }
        let lay = model.layout();
        let allowed = ["r", "mu", "p", "phi", "gate", "p_capture", "phi_capture"];
        if let Some(b) = lay
            .blocks
            .iter()
            .find(|b| !allowed.contains(&b.name.as_str()))
        {
            return Err(CoreError::arg(
                "model",
                format!(
                    "its parameter '{}' is not available with the VAE yet (hierarchies, BNB, datasets and capture priors)",
                    b.name
                ),
            ));
        }
        let parts = latent::LatentParts::new(&cfg, model.data())?;
        let g = model.data().n_genes;
        let gated = lay.blocks.iter().any(|b| b.name == "gate");
        let dec_mlp = Mlp {
            n_in: cfg.latent_dim,
            hidden: cfg.decoder_hidden.iter().rev().copied().collect(),
            activation: cfg.activation,
            layer_norm: false,
            residual: false,
        };
        let dec_head = Dense::new(dec_mlp.n_out(), if gated { 2 * g } else { g });
        let find = |name: &str| lay.blocks.iter().find(|b| b.name == name);
        let p_coord = find(spec.param.scalar_param())
            .expect("NB models sample p or phi")
            .offset;
        let capture = find(spec.param.capture_param()).map(|b| (b.offset, b.len));
        let vae = Vae {
            model,
            cfg,
            encoder: parts.encoder,
            dec_mlp,
            dec_head,
            prior: parts.prior,
            input: parts.input,
            standardization: parts.standardization,
            gated,
            p_coord,
            capture,
        };
        crate::limits::check_values("vae_encoder_hidden_dims", vae.n_params() as f64)?;
        Ok(vae)
    }

    fn n_global(&self) -> usize {
        self.model.layout().total
    }

    fn link_at(&self, offset: usize) -> Link {
        let lay = self.model.layout();
        lay.blocks
            .iter()
            .find(|b| b.offset == offset)
            .map_or(Link::Identity, |b| b.link)
    }

    /// `p` and the decoder's scale to `r` from the scalar coordinate's value `xv`.
    fn scalar_of(&self, xv: f64) -> ScalarParams {
        let (t, dt) = self.link_at(self.p_coord).forward_deriv(xv);
        match self.model.spec.param {
            Parameterization::Canonical => ScalarParams {
                p: t,
                dp: dt,
                r_scale: 1.0,
                d_r_scale: 0.0,
            },
            Parameterization::MeanProb => ScalarParams {
                p: t,
                dp: dt,
                r_scale: (1.0 - t) / t,
                d_r_scale: -dt / (t * t),
            },
            // t = phi: p = 1/(1 + phi), r = phi·μ.
            Parameterization::MeanOdds => ScalarParams {
                p: 1.0 / (1.0 + t),
                dp: -dt / ((1.0 + t) * (1.0 + t)),
                r_scale: t,
                d_r_scale: dt,
            },
        }
    }

    /// `(ν, ∂ν/∂x)` from a capture coordinate's value (`p_capture`, or
    /// mean_odds' `phi_capture` with `ν = 1/(1 + phi)`).
    fn capture_of(&self, xv: f64) -> (f64, f64) {
        let Some((off, _)) = self.capture else {
            return (1.0, 0.0);
        };
        let (t, dt) = self.link_at(off).forward_deriv(xv);
        match self.model.spec.param {
            Parameterization::MeanOdds => (1.0 / (1.0 + t), -dt / ((1.0 + t) * (1.0 + t))),
            _ => (t, dt),
        }
    }

    /// Offsets of `[loc | log_scale | encoder | decoder mlp | decoder head | prior]`.
    fn offsets(&self) -> [usize; 6] {
        let n = self.n_global();
        let a = 2 * n;
        let b = a + self.encoder.n_params();
        let c = b + self.dec_mlp.n_params();
        let d = c + self.dec_head.n_params();
        let e = d + self.prior.as_ref().map_or(0, FlowChain::n_params);
        [n, a, b, c, d, e]
    }

    pub fn n_params(&self) -> usize {
        self.offsets()[5]
    }

    /// Starting parameters: globals at the NB model's data-driven start
    /// (log-scale −2), networks at Flax defaults, the decoder's `r` head
    /// bias at the start's `softplus⁻¹(r_g)` (so every cell starts at the
    /// fitted mean-field `r`), flows at the identity.
    pub fn initial_params<R: Rng>(&self, rng: &mut R) -> Vec<f64> {
        let x0 = self.model.initial_point();
        let [n, a, b, c, d, e] = self.offsets();
        let mut p = vec![0.0; e];
        p[..n].copy_from_slice(&x0);
        p[n..a].iter_mut().for_each(|v| *v = -2.0);
        self.encoder.init(rng, &mut p[a..b]);
        self.dec_mlp.init(rng, &mut p[b..c]);
        self.dec_head.init(rng, &mut p[c..d]);
        // Small decoder kernel so the start's r dominates.
        let nw = self.dec_head.n_in * self.dec_head.n_out;
        p[c..c + nw].iter_mut().for_each(|v| *v *= 0.1);
        let lay = self.model.layout();
        let g = self.model.data().n_genes;
        let bias = &mut p[c + nw..d];
        let gene_param = self.model.spec.param.gene_param();
        if let Some(rb) = lay.blocks.iter().find(|b| b.name == gene_param) {
            for j in 0..g {
                let r = rb.link.forward(x0[rb.offset + j]);
                bias[j] = crate::math::softplus_inv(r.max(1e-6));
            }
        }
        if let Some(gb) = lay.blocks.iter().find(|b| b.name == "gate") {
            for j in 0..g {
                let pi = gb.link.forward(x0[gb.offset + j]).clamp(1e-6, 1.0 - 1e-6);
                bias[g + j] = (pi / (1.0 - pi)).ln();
            }
        }
        if let Some(ch) = &self.prior {
            ch.init(rng, &mut p[d..e]);
        }
        p
    }

    /// Single-sample loss (`−ELBO`) on `batch` at KL weight `beta`, with its
    /// gradient written into `grad`. Noise order: the global coordinates in
    /// layout order, then `z` cell by cell.
    pub fn loss_and_grad<R: Rng>(
        &self,
        v: &[f64],
        batch: &Batch,
        beta: f64,
        rng: &mut R,
        grad: &mut [f64],
    ) -> f64 {
        let model = self.model;
        let data = model.data();
        let lay = model.layout();
        let [n, a, b, _, d, _] = self.offsets();
        let k = self.cfg.latent_dim;
        let (loc, log_scale) = (&v[..n], &v[n..a]);
        grad.iter_mut().for_each(|x| *x = 0.0);
        let w = batch.scale;
        // Globals: p and the batch cells' capture.
        let mut gx = vec![0.0; n];
        let mut eps = vec![0.0; n];
        let mut x = vec![0.0; n];
        let mut active: Vec<(usize, usize, usize, f64)> = Vec::new(); // (block, j, coord, weight)
        for (bi, blk) in lay.blocks.iter().enumerate() {
            match blk.kind {
                BlockKind::Scalar => active.push((bi, 0, blk.offset, 1.0)),
                BlockKind::Cell => active.extend(
                    batch
                        .cells
                        .iter()
                        .map(|&cc| (bi, cc as usize, blk.offset + cc as usize, w)),
                ),
                _ => {}
            }
        }
        for &(_, _, j, _) in &active {
            eps[j] = rng.sample(StandardNormal);
            x[j] = loc[j] + log_scale[j].exp() * eps[j];
        }
        let sc = self.scalar_of(x[self.p_coord]);
        let p = sc.p;
        // Encoder on the batch's counts; then z and its KL, weighted β·w.
        let rows = batch.cells.len();
        let side = latent::LatentSide {
            encoder: &self.encoder,
            enc_params: &v[a..b],
            data,
            input: &self.input,
            prior: self.prior.as_ref(),
            prior_params: &v[d..],
            log_var_clip: None,
        };
        let mut lat = side.forward(&batch.cells, k, beta * w, rng, &mut grad[d..]);
        let mut elbo = lat.elbo;
        // Decoder and likelihood per block of cells, blocks in parallel;
        // their sums are added in block order, so any thread count gives
        // the same result.
        let mut g_phat = vec![0.0; rows];
        let mut g_r_scale = 0.0;
        let nu_of = |cell: usize| {
            self.capture
                .map_or(1.0, |(off, _)| self.capture_of(x[off + cell]).0)
        };
        let starts: Vec<usize> = (0..rows).step_by(self.cfg.block).collect();
        let blocks: Vec<BlockOut> = starts
            .par_iter()
            .map(|&start| {
                let end = (start + self.cfg.block).min(rows);
                self.decode_block(
                    v,
                    &batch.cells[start..end],
                    &lat.z[start * k..end * k],
                    (p, sc.r_scale),
                    &nu_of,
                    w,
                )
            })
            .collect();
        for (&start, bo) in starts.iter().zip(blocks) {
            elbo += bo.elbo;
            grad[b..d]
                .iter_mut()
                .zip(&bo.g_dec)
                .for_each(|(a, x)| *a += x);
            lat.gz[start * k..start * k + bo.gz.len()]
                .iter_mut()
                .zip(&bo.gz)
                .for_each(|(a, x)| *a += x);
            g_phat[start..start + bo.g_phat.len()].copy_from_slice(&bo.g_phat);
            g_r_scale += bo.g_r_scale;
        }
        lat.backward(&side, &batch.cells, &mut grad[a..b]);
        // p̂ = p ν / (1 − p(1 − ν)) to p and the capture coordinates; the
        // decoder's mean to r (mean_prob, mean_odds) to p or phi.
        gx[self.p_coord] += g_r_scale * sc.d_r_scale;
        for (r, &cc) in batch.cells.iter().enumerate() {
            let cell = cc as usize;
            let (nu, dnu) = self
                .capture
                .map_or((1.0, 0.0), |(off, _)| self.capture_of(x[off + cell]));
            let den = 1.0 - p * (1.0 - nu);
            gx[self.p_coord] += g_phat[r] * nu / (den * den) * sc.dp;
            if let Some((off, _)) = self.capture {
                gx[off + cell] += g_phat[r] * p * (1.0 - p) / (den * den) * dnu;
            }
        }
        // Globals' guide: the prior and entropy weighted by β, the
        // likelihood's gradient through the draw unweighted.
        elbo += global_guide_terms(
            active
                .iter()
                .map(|&(bi, j, i, wi)| (i, model.prior(bi, j), lay.blocks[bi].link, beta * wi)),
            [loc, log_scale, &eps, &x, &gx],
            grad,
        );
        // Encoder, decoder and prior gradients were accumulated as ∂elbo.
        grad[a..].iter_mut().for_each(|x| *x = -*x);
        -elbo
    }

    /// The decoder and likelihood of one block of cells (`z`: their
    /// latents): the block's share of the ELBO and its gradients with
    /// respect to the decoder's parameters, `z` and each cell's `p̂`.
    fn decode_block(
        &self,
        v: &[f64],
        cells: &[u32],
        z: &[f64],
        (p, r_scale): (f64, f64),
        nu_of: &(dyn Fn(usize) -> f64 + Sync),
        w: f64,
    ) -> BlockOut {
        let data = self.model.data();
        let [_, _, b, c, d, _] = self.offsets();
        let (k, g_n, m) = (self.cfg.latent_dim, data.n_genes, self.dec_head.n_out);
        let br = cells.len();
        let mut tape = MlpTape::default();
        self.dec_mlp.forward(&v[b..c], z, br, &mut tape);
        let mut o = vec![0.0; br * m];
        self.dec_head.forward(&v[c..d], tape.output(), br, &mut o);
        let mut g_o = vec![0.0; br * m];
        let mut out = BlockOut {
            elbo: 0.0,
            g_dec: vec![0.0; d - b],
            gz: vec![0.0; br * k],
            g_phat: vec![0.0; br],
            g_r_scale: 0.0,
        };
        let mut g_scale = 0.0;
        for (rr, &cc) in cells.iter().enumerate() {
            let cell = cc as usize;
            let nu = nu_of(cell);
            let ph = p * nu / (1.0 - p * (1.0 - nu));
            let (l1p, lp) = ((1.0 - ph).ln(), ph.ln());
            let (genes, counts) = data.row(cell);
            let mut next = 0;
            let orow = &o[rr * m..(rr + 1) * m];
            let grow = &mut g_o[rr * m..(rr + 1) * m];
            let mut ll = -data.ln_fact[cell];
            let mut gph = 0.0;
            for j in 0..g_n {
                let cnt = if next < genes.len() && genes[next] as usize == j {
                    next += 1;
                    counts[next - 1]
                } else {
                    0
                };
                // softplus and its derivative (the sigmoid) from one exp.
                let raw = orow[j];
                let e = (-raw.abs()).exp();
                // ln(1 + e) rather than ln_1p: the same to 1e-16 absolutely, and
                // glibc's log is several times faster than its log1p.
                let mu = (raw.max(0.0) + (1.0 + e).ln()).max(1e-10);
                let rv = mu * r_scale;
                let drv = if raw >= 0.0 {
                    1.0 / (1.0 + e)
                } else {
                    e / (1.0 + e)
                };
                let (mut l, mut dl_dr, mut dl_dph);
                if cnt == 0 {
                    l = rv * l1p;
                    dl_dr = l1p;
                    dl_dph = -rv / (1.0 - ph);
                } else {
                    let cf = cnt as f64;
                    l = lgamma_diff(cnt, rv) + rv * l1p + cf * lp;
                    dl_dr = digamma_diff(cnt, rv) + l1p;
                    dl_dph = -rv / (1.0 - ph) + cf / ph;
                }
                if self.gated {
                    let pi = 1.0 / (1.0 + (-orow[g_n + j]).exp());
                    let dpi = pi * (1.0 - pi);
                    if cnt == 0 {
                        let q0 = l.exp();
                        let tot = pi + (1.0 - pi) * q0;
                        let s = (1.0 - pi) * q0 / tot;
                        grow[g_n + j] = w * (1.0 - q0) / tot * dpi;
                        dl_dr *= s;
                        dl_dph *= s;
                        l = tot.ln();
                    } else {
                        l += (1.0 - pi).ln();
                        grow[g_n + j] = -w * dpi / (1.0 - pi);
                    }
                }
                ll += l;
                grow[j] = w * dl_dr * r_scale * drv;
                g_scale += dl_dr * mu;
                gph += dl_dph;
            }
            out.elbo += w * ll;
            out.g_phat[rr] = w * gph;
        }
        out.g_r_scale = w * g_scale;
        // Back through the decoder: ELBO gradients in, z gradients out.
        let mut gh = vec![0.0; br * self.dec_head.n_in];
        let (g_mlp, g_head) = out.g_dec.split_at_mut(c - b);
        self.dec_head
            .backward(&v[c..d], tape.output(), &g_o, br, g_head, Some(&mut gh));
        self.dec_mlp
            .backward(&v[b..c], &tape, &mut gh, g_mlp, Some(&mut out.gz));
        out
    }

    /// Encoder means (`cells × latent_dim`) of the cells of `data`.
    pub fn embeddings(&self, v: &[f64], data: &CountMatrix) -> Vec<f64> {
        let [_, a, b, ..] = self.offsets();
        let k = self.cfg.latent_dim;
        let cells: Vec<u32> = (0..data.n_cells as u32).collect();
        let mut tape = encoder::EncoderTape::default();
        let input = EncoderInput::new(
            data,
            self.cfg.input_transform,
            self.standardization.as_ref(),
        );
        let out = self
            .encoder
            .forward(&v[a..b], data, &input, &cells, &mut tape);
        out.chunks_exact(2 * k)
            .flat_map(|row| row[..k].to_vec())
            .collect()
    }

    /// The parameter vector `v` in named pieces (what results store).
    pub fn split<'v>(&self, v: &'v [f64]) -> Vec<(&'static str, &'v [f64])> {
        split_pieces(self.offsets(), v)
    }
}

/// The names of a VAE's parameter pieces, in order (see [`split_pieces`]).
const PIECES: [&str; 6] = [
    "global_loc",
    "global_log_scale",
    "encoder",
    "decoder",
    "decoder_head",
    "prior_flow",
];

/// A VAE's parameter vector in named pieces, from the ends of
/// `[loc | log_scale | encoder | decoder mlp | decoder head | prior]`.
fn split_pieces(ends: [usize; 6], v: &[f64]) -> Vec<(&'static str, &[f64])> {
    let mut start = 0;
    PIECES
        .iter()
        .zip(ends)
        .map(|(&name, end)| {
            let piece = (name, &v[start..end]);
            start = end;
            piece
        })
        .collect()
}

/// The parameter vector from named pieces, each checked against the ends
/// of an architecture (see [`split_pieces`]).
fn join_pieces(ends: [usize; 6], pieces: &[(&str, &[f64])]) -> Result<Vec<f64>> {
    let mut v = Vec::with_capacity(ends[5]);
    let mut start = 0;
    for (&name, end) in PIECES.iter().zip(ends) {
        let len = end - start;
        match pieces.iter().find(|(n, _)| *n == name).map(|(_, x)| *x) {
            Some(x) if x.len() == len => v.extend_from_slice(x),
            _ => {
                return Err(CoreError::arg(
                    "fit",
                    format!(
                        "its VAE parameters '{name}' do not match its architecture ({len} values)"
                    ),
                ))
            }
        }
        start = end;
    }
    Ok(v)
}

/// The globals' mean-field guide terms of one step: for each coordinate
/// `(i, prior, link, weight)` drawn as `x = loc + e^{log_scale} ε`, the
/// prior and entropy (weighted) and the likelihood's gradient `gx` through
/// the draw (unweighted), as loss gradients into `grad[..n]` (loc) and
/// `grad[n..2n]` (log-scale). Returns their ELBO share.
fn global_guide_terms(
    coords: impl Iterator<Item = (usize, crate::dist::Prior, Link, f64)>,
    [loc, log_scale, eps, x, gx]: [&[f64]; 5],
    grad: &mut [f64],
) -> f64 {
    let n = loc.len();
    let mut cache = KlCache::default();
    let (g_loc, rest) = grad.split_at_mut(n);
    let g_ls = &mut rest[..n];
    let mut elbo = 0.0;
    for (i, prior, link, wi) in coords {
        let s = log_scale[i].exp();
        let (de, gl, gs) = mf_term(
            prior,
            link,
            (loc[i], log_scale[i], s, eps[i], x[i], 0.0, wi),
            &mut cache,
        );
        elbo += de;
        g_loc[i] = gl - gx[i];
        g_ls[i] = gs - gx[i] * s * eps[i];
    }
    elbo
}

/// Encoder means and log-variances (`cells × latent` each, row-major) of
/// the cells of `data` (the fit's genes, in order) from a fitted encoder's
/// parameters and, with `standardize`, the training data's input
/// statistics: embeddings of the fit's cells or of cells it never saw.
pub fn encode_cells(
    cfg: &VaeConfig,
    encoder_params: &[f64],
    standardization: Option<&Standardization>,
    data: &CountMatrix,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let enc = Encoder::new(
        data.n_genes,
        &cfg.encoder_hidden,
        cfg.latent_dim,
        cfg.activation,
    );
    if enc.n_params() != encoder_params.len() {
        return Err(CoreError::arg(
            "x",
            format!(
                "has {} genes, which does not match the fit's encoder",
                data.n_genes
            ),
        ));
    }
    let st = match (cfg.standardize, standardization) {
        (false, _) => None,
        (true, Some(st)) => {
            st.check(data.n_genes)?;
            Some(st)
        }
        (true, None) => {
            return Err(CoreError::arg(
                "fit",
                "it standardizes its input but holds no input statistics",
            ))
        }
    };
    let k = cfg.latent_dim;
    let cells: Vec<u32> = (0..data.n_cells as u32).collect();
    let mut tape = encoder::EncoderTape::default();
    let input = EncoderInput::new(data, cfg.input_transform, st);
    let out = enc.forward(encoder_params, data, &input, &cells, &mut tape);
    let (mut loc, mut lv) = (Vec::new(), Vec::new());
    for row in out.chunks_exact(2 * k) {
        loc.extend_from_slice(&row[..k]);
        match cfg.log_var_clip {
            None => lv.extend_from_slice(&row[k..]),
            Some((lo, hi)) => lv.extend(row[k..].iter().map(|x| x.clamp(lo, hi))),
        }
    }
    Ok((loc, lv))
}

/// `n` draws of `z` from a fitted VAE's prior (`n × latent`, row-major):
/// `N(0, I)`, or the flow's generative direction applied to such draws
/// (`prior_params` its parameters).
pub fn prior_draws(cfg: &VaeConfig, prior_params: &[f64], n: usize, seed: u64) -> Result<Vec<f64>> {
    let k = cfg.latent_dim;
    crate::limits::check_values("n_samples", (n * k) as f64)?;
    let mut rng = <rand::rngs::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let z: Vec<f64> = (0..n * k).map(|_| rng.sample(StandardNormal)).collect();
    let Some(fc) = &cfg.prior else {
        return Ok(z);
    };
    let ch = FlowChain::new(k, fc)?;
    if ch.n_params() != prior_params.len() {
        return Err(CoreError::arg(
            "fit",
            "its prior flow does not match its architecture",
        ));
    }
    let mut tape = ChainTape::default();
    ch.apply(prior_params, Direction::Generative, &z, n, &mut tape);
    Ok(tape.output().to_vec())
}

/// `n` draws per cell of `z = loc + exp(½ lv) ε` from `cells × latent`
/// encoder outputs stored column-major (R matrices); the result is the
/// column-major array `n × cells × latent`. One stream from `seed`, drawn
/// draw by draw, cell by cell.
pub fn conditioned_draws(
    loc: &[f64],
    lv: &[f64],
    cells: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    if loc.len() != lv.len() || cells == 0 || !loc.len().is_multiple_of(cells) {
        return Err(CoreError::arg("x", "encoder outputs of mismatched sizes"));
    }
    crate::limits::check_values("n_samples", (n * loc.len()) as f64)?;
    let k = loc.len() / cells;
    let mut rng = <rand::rngs::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let mut out = vec![0.0; n * loc.len()];
    for s in 0..n {
        for c in 0..cells {
            for q in 0..k {
                let i = c + cells * q;
                let e: f64 = rng.sample(StandardNormal);
                out[s + n * i] = loc[i] + (0.5 * lv[i]).exp() * e;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
