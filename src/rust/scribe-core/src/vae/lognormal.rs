//! The VAE of the log-normal models PLN, NBLN and LNM.
//!
//! The decoder is linear, as in the original: a cell's mean latents are
//! `ℓ̄_c = b + W z_c`, so `b` (the decoder's bias) and `W` (its kernel) are
//! the mean and the loadings of the model's `Σ = W Wᵀ + diag(d)`. The
//! latents are log-rates (PLN, NBLN; one per gene) or LNM's additive
//! log-ratios against a reference gene (one per other gene). The diagonal
//! enters as unscored noise: `ℓ_c = ℓ̄_c + √d ⊙ ε_c`, `ε_c ~ N(0, I)` drawn
//! afresh each step (a reparameterized Monte Carlo perturbation, not a
//! latent of the guide). Counts are `Poisson(e^ℓ)` (PLN), `NB(mean e^ℓ,
//! r_g)` (NBLN), with the kernels of [`crate::models::lognormal::obs`], or
//! (LNM) `Multinomial(N_c, softmax([ℓ, 0]))` with the total `N_c ~ NB(mean
//! μ_T, shape r_T)` ([`crate::models::lognormal::lnm`]).
//!
//! Globals with mean-field guides: `d ~ LogNormal(−4.6, 1)` (median 0.01);
//! NBLN's `r_g ~ LogNormal(ln median r̂, 1)` with `r̂_g` the
//! method-of-moments dispersion; LNM's `μ_T ~ LogNormal(ln mean N, 1)` and
//! `r_T ~ LogNormal(ln r̂_T, 1)` with `r̂_T` the totals' moment estimate.
//!
//! Capture (LNMVCP, and PLN or NBLN with a capture prior): each cell has a
//! capture latent `η_c ≥ 0` (capture probability `ν_c = e^{−η_c}`) with
//! the prior `TruncN(ln M0 − ln L_c, σ, low = 0)` (or a per-cell prior) and
//! a mean-field guide of its own (softplus link; not amortized, as the
//! original's). PLN and NBLN observe `ℓ_c − η_c`; LNM's total is `NB(mean
//! μ_T ν_c, r_T)` (with `p̂ = pν/(1 − p(1 − ν))` the NB's mean is exactly
//! `ν` times the uncaptured one), its composition is unchanged. Without an
//! anchor a flat prior on `ν_c` leaves `μ_T` (and PLN's mean level)
//! unidentified, so capture here needs a capture prior, as the Laplace
//! engine's LNMVCP does.
//!
//! Start: the decoder at the PCA start of the Laplace engine (`b = mean
//! log(u + 1)`, `W = V_k S_k / √N`, or the same of the log-ratios), `r` at
//! `r̂`, the totals at their moment estimates.
//!
//! Cost per step: the encoder reads the sparse counts (`O(nnz · H)`); the
//! decoder and the likelihood are dense over genes per cell (every gene has
//! a rate), run per block of cells, so no cells × genes array exists beyond
//! one block.
//!
//! Analyses put the globals at their guide medians and give each cell the
//! Gaussian its encoder and decoder imply,
//! `ℓ_c ~ N(b + W m_c, W diag(e^{lv_c}) Wᵀ + diag(d))`: draws take `z` from
//! the encoder's Gaussian and add the diagonal noise; the point estimate is
//! `b + W m_c`.

use super::encoder::{Encoder, EncoderInput, EncoderTape, Standardization};
use super::fit::Objective;
use super::{latent, VaeConfig};
use crate::data::{Batch, CountMatrix};
use crate::dist::{Link, Prior};
use crate::error::{CoreError, Result};
use crate::math::{digamma_diff_scaled, lgamma_diff_scaled};
use crate::models::lognormal::lnm::{softmax_alr, totals, CLIP};
use crate::models::lognormal::obs::NegBin;
use crate::models::lognormal::{lnm_reference, mom_dispersion, Capture, LnModel, ETA_MIN};
use crate::models::{BlockKind, Layout};
use crate::nn::flows::FlowChain;
use crate::nn::Dense;
use crate::posterior::lognormal::{self as lnpost, cell_rng, Latents, LnObs};
use crate::posterior::By;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::RngExt;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// Prior of the diagonal `d`: `LogNormal(−4.6, 1)`, median ≈ 0.01.
pub const D_PRIOR_LOC: f64 = -4.6;
/// Bounds of the encoder's log-variance head.
pub const LOG_VAR_CLIP: (f64, f64) = (-7.0, 2.0);
/// Floor of `d` before its square root.
const D_FLOOR: f64 = 1e-8;
/// Latent values held at once by an analysis (cells × genes × draws per chunk).
const CHUNK_VALUES: usize = 4_000_000;

/// A VAE over PLN, NBLN or LNM.
pub struct LnVae<'d> {
    pub model: LnModel,
    data: &'d CountMatrix,
    /// Latents per cell: the genes, or LNM's genes but the reference.
    pub width: usize,
    /// LNM's reference gene.
    pub reference: Option<usize>,
    pub cfg: VaeConfig,
    pub encoder: Encoder,
    /// `z → ℓ̄ = b + W z`: kernel `k × width` (row-major, `W` transposed), bias `b`.
    pub dec_head: Dense,
    pub prior: Option<FlowChain>,
    input: EncoderInput,
    pub standardization: Option<Standardization>,
    /// The globals: `d` (width), then `r` (G, NBLN) or `μ_T`, `r_T` (LNM).
    layout: Layout,
    /// Prior of each block of `layout`.
    priors: Vec<Prior>,
    /// The method-of-moments `r̂` (NBLN; empty otherwise).
    r_mom: Vec<f64>,
    /// LNM: `(ln μ̂_T, ln r̂_T)`, the totals' moment estimates (with
    /// capture, `μ̂_T` is the mean total at full capture).
    ln_totals: (f64, f64),
    /// Offset of the capture block (`η`, one per cell) in `layout`.
    capture: Option<usize>,
    /// Each cell's `η` prior `(loc, scale)` (empty without capture).
    eta_prior: Vec<(f64, f64)>,
}

/// What one block of cells contributes to a step.
struct BlockOut {
    elbo: f64,
    g_head: Vec<f64>,
    gz: Vec<f64>,
    /// `Σ_c ∂elbo/∂ℓ_cg · ε_cg` per gene (to `√d_g`).
    g_sd: Vec<f64>,
    /// `∂elbo/∂r_g` (NBLN).
    g_r: Vec<f64>,
    /// `∂elbo/∂(μ_T, r_T)` (LNM).
    g_totals: (f64, f64),
    /// `∂elbo/∂η_c` per block cell (empty without capture).
    g_eta: Vec<f64>,
}

/// A standard normal keyed by `(seed, cell, coord, draw)` (Box–Muller on two
/// SplitMix64 hashes).
fn keyed_normal(seed: u64, cell: usize, coord: usize, s: usize) -> f64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let key = mix(seed ^ mix(((cell as u64) << 32) ^ coord as u64) ^ mix(s as u64 ^ 0x6e6f_6973));
    let (a, b) = (mix(key), mix(key ^ 0x5851_F42D_4C95_7F2D));
    let u1 = ((a >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    let u2 = (b >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `(ln mean N, ln r̂_T)`: the cells' totals' mean and moment dispersion.
fn totals_moments(data: &CountMatrix) -> (f64, f64) {
    let n = data.n_cells as f64;
    let m = data.lib_size.iter().sum::<f64>() / n;
    let v = data.lib_size.iter().map(|t| (t - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let r = (m * m / (v - m).max(1e-3)).clamp(1e-3, 1e6);
    (m.max(1.0).ln(), r.ln())
}

/// Each cell's `η` prior `(loc, scale)` from a capture setting (empty for
/// `Capture::None`).
fn eta_priors(capture: &Capture, data: &CountMatrix) -> Result<Vec<(f64, f64)>> {
    let bad = |m: &str| Err(CoreError::arg("priors", m.to_string()));
    match capture {
        Capture::None => Ok(Vec::new()),
        Capture::Anchor { ln_m0, sigma } => {
            if !(*sigma > 0.0) || !ln_m0.is_finite() {
                return bad("capture_efficiency must be c(log(M0), sigma) with sigma > 0");
            }
            Ok(data
                .lib_size
                .iter()
                .map(|&l| (ln_m0 - l.max(1.0).ln(), *sigma))
                .collect())
        }
        Capture::PerCell { loc, scale } => {
            if loc.len() != data.n_cells
                || scale.len() != data.n_cells
                || loc.iter().any(|a| !a.is_finite())
                || scale.iter().any(|s| !(*s > 0.0))
            {
                return bad("the per-cell capture prior does not match the cells");
            }
            Ok(loc.iter().copied().zip(scale.iter().copied()).collect())
        }
        Capture::Frozen(_) => bad("frozen capture values are not available for the VAE"),
    }
}

/// `softplus⁻¹(y) = ln(e^y − 1)`, stable for large `y`.
fn softplus_inv(y: f64) -> f64 {
    if y > 30.0 {
        y
    } else {
        y.exp_m1().ln()
    }
}

fn softplus(x: f64) -> (f64, f64) {
    let v = if x > 30.0 { x } else { x.exp().ln_1p() };
    let d = 1.0 / (1.0 + (-x).exp());
    (v, d)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        1.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

impl<'d> LnVae<'d> {
    /// The VAE of `model` on `data` with `capture` (`None`, an anchor or
    /// per-cell priors; frozen values are the Laplace cascade's only); its
    /// encoder's log-variance is clipped to `[−7, 2]` whatever `cfg` says
    /// (as in the original).
    pub fn new(
        model: LnModel,
        data: &'d CountMatrix,
        mut cfg: VaeConfig,
        capture: &Capture,
    ) -> Result<Self> {
        cfg.log_var_clip = Some(LOG_VAR_CLIP);
        let parts = super::latent::LatentParts::new(&cfg, data)?;
        let (g, n) = (data.n_genes, data.n_cells);
        let reference = (model == LnModel::Lnm).then(|| lnm_reference(data));
        let width = if reference.is_some() { g - 1 } else { g };
        if cfg.latent_dim + 1 > width.min(n) {
            return Err(CoreError::arg(
                "latent_dim",
                format!(
                    "must be below the number of latent coordinates per cell and of cells (its start is a PCA), here at most {}",
                    width.min(n).saturating_sub(1)
                ),
            ));
        }
        let dec_head = Dense::new(cfg.latent_dim, width);
        let mut layout = Layout::default();
        let mut priors = Vec::new();
        layout.push("d", BlockKind::Gene, width, Link::Exp, 1);
        priors.push(Prior::LogNormal {
            loc: D_PRIOR_LOC,
            scale: 1.0,
        });
        let mut r_mom = Vec::new();
        if model == LnModel::Nbln {
            r_mom = mom_dispersion(data);
            layout.push("r", BlockKind::Gene, g, Link::Exp, 1);
            priors.push(Prior::LogNormal {
                loc: median(&r_mom).ln(),
                scale: 1.0,
            });
        }
        let eta_prior = eta_priors(capture, data)?;
        let mut ln_totals = totals_moments(data);
        if !eta_prior.is_empty() {
            // The totals' mean at full capture: the cells' totals scaled up
            // by their prior capture.
            let m = data
                .lib_size
                .iter()
                .zip(&eta_prior)
                .map(|(l, (a, _))| l * a.max(ETA_MIN).exp())
                .sum::<f64>()
                / n as f64;
            ln_totals.0 = m.max(1.0).ln();
        }
        if reference.is_some() {
            for (name, loc) in [("mu_T", ln_totals.0), ("r_T", ln_totals.1)] {
                layout.push(name, BlockKind::Scalar, 1, Link::Exp, 1);
                priors.push(Prior::LogNormal { loc, scale: 1.0 });
            }
        }
        let capture = (!eta_prior.is_empty()).then(|| {
            priors.push(Prior::Flat); // per cell, from `eta_prior`
            let off = layout.total;
            layout.push("eta_capture", BlockKind::Cell, n, Link::Softplus, 1);
            off
        });
        let vae = LnVae {
            model,
            data,
            width,
            reference,
            cfg,
            encoder: parts.encoder,
            dec_head,
            prior: parts.prior,
            input: parts.input,
            standardization: parts.standardization,
            layout,
            priors,
            r_mom,
            ln_totals,
            capture,
            eta_prior,
        };
        crate::limits::check_values("vae_encoder_hidden_dims", vae.n_params() as f64)?;
        Ok(vae)
    }

    /// The globals' layout (`d`, then `r` for NBLN).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn n_global(&self) -> usize {
        self.layout.total
    }

    /// Offsets of `[loc | log_scale | encoder | decoder mlp (none) | decoder head | prior]`,
    /// the same pieces as the NB VAE's.
    fn offsets(&self) -> [usize; 6] {
        let n = self.n_global();
        let a = 2 * n;
        let b = a + self.encoder.n_params();
        let c = b;
        let d = c + self.dec_head.n_params();
        let e = d + self.prior.as_ref().map_or(0, FlowChain::n_params);
        [n, a, b, c, d, e]
    }

    pub fn n_params(&self) -> usize {
        self.offsets()[5]
    }

    /// The parameter vector in named pieces (what results store).
    pub fn split<'v>(&self, v: &'v [f64]) -> Vec<(&'static str, &'v [f64])> {
        super::split_pieces(self.offsets(), v)
    }

    /// The parameter vector from named pieces, each checked against this architecture.
    pub fn join(&self, pieces: &[(&str, &[f64])]) -> Result<Vec<f64>> {
        super::join_pieces(self.offsets(), pieces)
    }

    /// Starting parameters: `d` at its prior median and `r` at `r̂`
    /// (log-scale −2), the encoder at Flax defaults, the decoder at the PCA
    /// start, a flow prior at the identity.
    pub fn start(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let [n, a, b, c, d, e] = self.offsets();
        let (k, wd) = (self.cfg.latent_dim, self.width);
        let mut p = vec![0.0; e];
        p[..wd].iter_mut().for_each(|v| *v = D_PRIOR_LOC);
        for (j, r) in self.r_mom.iter().enumerate() {
            p[wd + j] = r.ln();
        }
        if self.reference.is_some() {
            (p[wd], p[wd + 1]) = self.ln_totals;
        }
        if let Some(off) = self.capture {
            for (i, (a, _)) in self.eta_prior.iter().enumerate() {
                p[off + i] = softplus_inv(a.max(ETA_MIN));
            }
        }
        p[n..a].iter_mut().for_each(|v| *v = -2.0);
        self.encoder.init(rng, &mut p[a..b]);
        let (mu, w) = match self.reference {
            None => crate::laplace::init::pln_pca(self.data, k, 0),
            Some(rf) => crate::laplace::init::lnm_pca(self.data, rf, k, 0),
        };
        let head = &mut p[c..d];
        for j in 0..wd {
            for t in 0..k {
                head[t * wd + j] = w[j * k + t];
            }
        }
        head[k * wd..].copy_from_slice(&mu);
        if let Some(ch) = &self.prior {
            ch.init(rng, &mut p[d..e]);
        }
        p
    }

    /// `√d` (floored) and `∂√d/∂x` per latent coordinate, and `r` per gene
    /// (NBLN) or `[μ_T, r_T]` (LNM), from the globals' values `x`.
    fn globals_of(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let wd = self.width;
        let mut sd = vec![0.0; wd];
        let mut dsd = vec![0.0; wd];
        for j in 0..wd {
            let d = x[j].exp();
            if d > D_FLOOR {
                sd[j] = d.sqrt();
                dsd[j] = 0.5 * sd[j];
            } else {
                sd[j] = D_FLOOR.sqrt();
            }
        }
        let r = match self.model {
            LnModel::Pln => Vec::new(),
            LnModel::Nbln => x[wd..wd + self.data.n_genes]
                .iter()
                .map(|v| v.exp())
                .collect(),
            LnModel::Lnm => vec![x[wd].exp(), x[wd + 1].exp()],
        };
        (sd, dsd, r)
    }

    /// Single-sample loss (`−ELBO`) on `batch` at KL weight `beta`, with its
    /// gradient written into `grad`. Noise order: the globals in layout
    /// order, then `z` cell by cell, then one seed from which every cell's
    /// diagonal noise derives (so blocks and threads do not change it).
    pub fn loss_and_grad(
        &self,
        v: &[f64],
        batch: &Batch,
        beta: f64,
        rng: &mut ChaCha8Rng,
        grad: &mut [f64],
    ) -> f64 {
        let data = self.data;
        let [n, a, b, c, d, _] = self.offsets();
        let (k, wd) = (self.cfg.latent_dim, self.width);
        let (loc, log_scale) = (&v[..n], &v[n..a]);
        grad.iter_mut().for_each(|x| *x = 0.0);
        let w = batch.scale;
        // The shared globals' coordinates, then the batch cells' capture.
        let shared = self.capture.unwrap_or(n);
        let mut active: Vec<usize> = (0..shared).collect();
        if let Some(off) = self.capture {
            active.extend(batch.cells.iter().map(|&c| off + c as usize));
        }
        let (mut eps, mut x) = (vec![0.0; n], vec![0.0; n]);
        for &j in &active {
            eps[j] = rng.sample(StandardNormal);
            x[j] = loc[j] + log_scale[j].exp() * eps[j];
        }
        // Each batch cell's η and ∂η/∂x (empty without capture).
        let eta: Vec<(f64, f64)> = match self.capture {
            Some(off) => batch
                .cells
                .iter()
                .map(|&c| softplus(x[off + c as usize]))
                .collect(),
            None => Vec::new(),
        };
        let side = latent::LatentSide {
            encoder: &self.encoder,
            enc_params: &v[a..b],
            data,
            input: &self.input,
            prior: self.prior.as_ref(),
            prior_params: &v[d..],
            log_var_clip: self.cfg.log_var_clip,
        };
        let mut lat = side.forward(&batch.cells, k, beta * w, rng, &mut grad[d..]);
        let noise_seed: u64 = rng.random();
        let (sd, dsd, r) = self.globals_of(&x);
        let rows = batch.cells.len();
        let starts: Vec<usize> = (0..rows).step_by(self.cfg.block).collect();
        let blocks: Vec<BlockOut> = starts
            .par_iter()
            .map(|&start| {
                let end = (start + self.cfg.block).min(rows);
                self.decode_block(
                    &v[c..d],
                    &batch.cells[start..end],
                    &lat.z[start * k..end * k],
                    (&sd, &r, eta.get(start..end).unwrap_or(&[])),
                    noise_seed,
                    w,
                )
            })
            .collect();
        let mut elbo = lat.elbo;
        let mut gx = vec![0.0; n];
        for (&start, bo) in starts.iter().zip(blocks) {
            elbo += bo.elbo;
            grad[c..d]
                .iter_mut()
                .zip(&bo.g_head)
                .for_each(|(a, x)| *a += x);
            lat.gz[start * k..start * k + bo.gz.len()]
                .iter_mut()
                .zip(&bo.gz)
                .for_each(|(a, x)| *a += x);
            for j in 0..wd {
                gx[j] += bo.g_sd[j] * dsd[j];
            }
            for (j, gr) in bo.g_r.iter().enumerate() {
                gx[wd + j] += gr * r[j];
            }
            if self.reference.is_some() {
                gx[wd] += bo.g_totals.0 * r[0];
                gx[wd + 1] += bo.g_totals.1 * r[1];
            }
            if let Some(off) = self.capture {
                for (i, ge) in bo.g_eta.iter().enumerate() {
                    let cell = batch.cells[start + i] as usize;
                    gx[off + cell] += ge * eta[start + i].1;
                }
            }
        }
        if self.model == LnModel::Nbln {
            // NBLN's terms in the counts and r alone, `lnΓ(u + r) − lnΓ(r) −
            // u ln r`, over each gene's count histogram in the batch.
            let mut counts_part = 0.0;
            for (j, &rj) in r.iter().enumerate() {
                let rf = rj.max(1e-6);
                for p in data.gene_pair_ptr[j]..data.gene_pair_ptr[j + 1] {
                    let m = batch.pair_weight[p];
                    if m == 0.0 {
                        continue;
                    }
                    let n = data.pair_count[p];
                    counts_part += m * lgamma_diff_scaled(n, rf);
                    gx[wd + j] += w * m * digamma_diff_scaled(n, rf) * rj;
                }
            }
            elbo += w * counts_part;
        }
        lat.backward(&side, &batch.cells, &mut grad[a..b]);
        // Globals' guide: prior and entropy weighted by β, the likelihood's
        // gradient through the draw unweighted.
        // Capture coordinates stand for their cells, so they are weighted
        // like the cells' likelihood.
        let coords = active.iter().map(|&i| match self.capture {
            Some(off) if i >= off => {
                let (loc, scale) = self.eta_prior[i - off];
                (
                    i,
                    Prior::TruncNormal0 { loc, scale },
                    Link::Softplus,
                    beta * w,
                )
            }
            _ => {
                let bi = self
                    .layout
                    .blocks
                    .iter()
                    .position(|b| b.range().contains(&i));
                let bi = bi.expect("a shared coordinate lies in a block");
                (i, self.priors[bi], self.layout.blocks[bi].link, beta)
            }
        });
        elbo += super::global_guide_terms(coords, [loc, log_scale, &eps, &x, &gx], grad);
        grad[a..].iter_mut().for_each(|x| *x = -*x);
        -elbo
    }

    /// The decoder and likelihood of one block of cells (`z`: their
    /// latents; `eta`: their capture and its derivative, empty without).
    fn decode_block(
        &self,
        head: &[f64],
        cells: &[u32],
        z: &[f64],
        (sd, r, eta): (&[f64], &[f64], &[(f64, f64)]),
        noise_seed: u64,
        w: f64,
    ) -> BlockOut {
        let data = self.data;
        let (k, g, wd) = (self.cfg.latent_dim, data.n_genes, self.width);
        let br = cells.len();
        let mut o = vec![0.0; br * wd];
        self.dec_head.forward(head, z, br, &mut o);
        let mut g_o = vec![0.0; br * wd];
        let nbln = self.model == LnModel::Nbln;
        let nb = nbln.then(|| NegBin::new(r));
        let mut out = BlockOut {
            elbo: 0.0,
            g_head: vec![0.0; head.len()],
            gz: vec![0.0; br * k],
            g_sd: vec![0.0; wd],
            g_r: vec![0.0; if nbln { g } else { 0 }],
            g_totals: (0.0, 0.0),
            g_eta: vec![0.0; eta.len()],
        };
        let (mut u, mut y, mut eps, mut rho) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (rr, &cc) in cells.iter().enumerate() {
            let cell = cc as usize;
            let mut rng = cell_rng(noise_seed, cell);
            let eta_c = eta.get(rr).map_or(0.0, |e| e.0);
            if let Some(rf) = self.reference {
                // Multinomial over the composition, NB over the total (the
                // N! of both cancel): Σ_g u_g ln ρ_g − Σ ln u_g! + ln NB(N).
                u.resize(g, 0.0);
                data.dense_row(cell, &mut u);
                let n_tot = data.lib_size[cell];
                let orow = &o[rr * wd..(rr + 1) * wd];
                eps.clear();
                eps.extend((0..wd).map(|_| rng.sample::<f64, _>(StandardNormal)));
                y.clear();
                y.extend((0..wd).map(|j| orow[j] + sd[j] * eps[j]));
                rho.resize(wd, 0.0);
                let (lse, _) = softmax_alr(&y, &mut rho);
                let mut ll = -n_tot * lse - data.ln_fact[cell];
                let grow = &mut g_o[rr * wd..(rr + 1) * wd];
                for j in 0..wd {
                    let uj = u[if j < rf { j } else { j + 1 }];
                    ll += uj * y[j].clamp(-CLIP, CLIP);
                    // A clipped logit moves nothing.
                    let dl = if y[j].abs() < CLIP {
                        uj - n_tot * rho[j]
                    } else {
                        0.0
                    };
                    grow[j] = w * dl;
                    out.g_sd[j] += w * dl * eps[j];
                }
                // With capture the total's mean is μ_T ν_c, ν_c = e^{−η_c}.
                let nu = (-eta_c).exp();
                let (lt, dmu, dr) = totals(n_tot, r[0] * nu, r[1]);
                out.g_totals.0 += w * dmu * nu;
                out.g_totals.1 += w * dr;
                if let Some(ge) = out.g_eta.get_mut(rr) {
                    *ge = -w * dmu * r[0] * nu;
                }
                out.elbo += w * (ll + lt);
                continue;
            }
            let (genes, counts) = data.row(cell);
            let mut next = 0;
            let orow = &o[rr * wd..(rr + 1) * wd];
            let grow = &mut g_o[rr * wd..(rr + 1) * wd];
            let mut ll = 0.0;
            let mut sum_dl = 0.0;
            for j in 0..g {
                let u = if next < genes.len() && genes[next] as usize == j {
                    next += 1;
                    counts[next - 1] as f64
                } else {
                    0.0
                };
                let e: f64 = rng.sample(StandardNormal);
                let ell = orow[j] + sd[j] * e - eta_c;
                let dl = match &nb {
                    None => {
                        // Poisson with the log-rate clipped to ±30, as the original.
                        let l = ell.clamp(-30.0, 30.0);
                        let lam = l.exp();
                        ll += u * l - lam;
                        u - lam
                    }
                    Some(nb) => {
                        // The count-only terms are summed per gene histogram
                        // in `loss_and_grad`.
                        let (value, dl, dr) = nb.rate_terms(j, u, ell);
                        ll += value;
                        out.g_r[j] += w * dr;
                        dl
                    }
                };
                grow[j] = w * dl;
                out.g_sd[j] += w * dl * e;
                sum_dl += dl;
            }
            if let Some(ge) = out.g_eta.get_mut(rr) {
                *ge = -w * sum_dl;
            }
            out.elbo += w * (ll - data.ln_fact[cell]);
        }
        self.dec_head
            .backward(head, z, &g_o, br, &mut out.g_head, Some(&mut out.gz));
        out
    }

    /// The globals at their guide medians: `(d, r)` with `r` NBLN's
    /// dispersions, LNM's `[μ_T, r_T]`, or empty (PLN).
    fn global_medians(&self, v: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let wd = self.width;
        let d = v[..wd].iter().map(|x| x.exp()).collect();
        let end = self.capture.unwrap_or(self.n_global());
        let r = v[wd..end].iter().map(|x| x.exp()).collect();
        (d, r)
    }

    /// Encoder outputs `[loc | lv]` (`rows × 2k`) of `cells`, each cell on
    /// its own (a product's rounding depends on its number of rows, and a
    /// cell's embedding must not depend on the cells encoded with it).
    fn encode(&self, v: &[f64], cells: &[usize]) -> Vec<f64> {
        let [_, a, b, ..] = self.offsets();
        let k = self.cfg.latent_dim;
        let (lo, hi) = LOG_VAR_CLIP;
        cells
            .par_iter()
            .flat_map_iter(|&c| {
                let mut tape = EncoderTape::default();
                let mut out =
                    self.encoder
                        .forward(&v[a..b], self.data, &self.input, &[c as u32], &mut tape);
                out[k..].iter_mut().for_each(|x| *x = x.clamp(lo, hi));
                out
            })
            .collect()
    }

    /// Latent values of `cells` at the coordinates `coords` (`None`: all):
    /// with `n = 0` one per cell, `b + W m_c`; else `n` draws per cell,
    /// `b + W (m_c + e^{lv/2} ε₁) + √d ε₂`. `ε₁` comes from the cell's
    /// stream of `seed`, `ε₂` from a hash of (seed, cell, coordinate, draw),
    /// so a value does not depend on which other cells or coordinates are
    /// drawn with it.
    pub fn latents(
        &self,
        v: &[f64],
        cells: &[usize],
        coords: Option<&[usize]>,
        n: usize,
        seed: u64,
    ) -> Latents {
        let [_, _, _, c, d, _] = self.offsets();
        let (k, wd) = (self.cfg.latent_dim, self.width);
        let all: Vec<usize>;
        let coords = match coords {
            Some(cs) => cs,
            None => {
                all = (0..wd).collect();
                &all
            }
        };
        let g = coords.len();
        let out = self.encode(v, cells);
        let draws = n.max(1);
        let (dvals, _) = self.global_medians(v);
        let head = &v[c..d];
        let (kernel, bias) = head.split_at(k * wd);
        let mut x = vec![0.0; cells.len() * g * draws];
        if x.is_empty() {
            return Latents {
                n: draws,
                g,
                x,
                eta: Vec::new(),
            };
        }
        x.par_chunks_mut(g * draws)
            .zip(cells.par_iter().enumerate())
            .for_each(|(xc, (ci, &cell))| {
                let (m, lv) = (
                    &out[ci * 2 * k..ci * 2 * k + k],
                    &out[ci * 2 * k + k..(ci + 1) * 2 * k],
                );
                let mut rng = cell_rng(seed ^ 0x6c6e_7661, cell);
                let mut z = m.to_vec();
                for s in 0..draws {
                    if n > 0 {
                        for q in 0..k {
                            let e: f64 = rng.sample(StandardNormal);
                            z[q] = m[q] + (0.5 * lv[q]).exp() * e;
                        }
                    }
                    // Draw-minor, as `Latents` keeps them: `(cell·g + coord)·n + s`,
                    // summed in a fixed order (not a GEMM, whose blocking
                    // depends on the number of rows).
                    for (jj, &j) in coords.iter().enumerate() {
                        let mut y = bias[j];
                        for (t, &zt) in z.iter().enumerate() {
                            y += zt * kernel[t * wd + j];
                        }
                        if n > 0 {
                            y += dvals[j].max(D_FLOOR).sqrt() * keyed_normal(seed, cell, j, s);
                        }
                        xc[jj * draws + s] = y;
                    }
                }
            });
        Latents {
            n: draws,
            g,
            x,
            eta: self.capture_values(v, cells, n, seed),
        }
    }

    /// Each of `cells`' `η`: with `n = 0` its guide median, else `n` draws
    /// from its guide (`cell·n + s`, keyed by (seed, cell, draw)). Empty
    /// without capture.
    pub fn capture_values(&self, v: &[f64], cells: &[usize], n: usize, seed: u64) -> Vec<f64> {
        let Some(off) = self.capture else {
            return Vec::new();
        };
        let ng = self.n_global();
        let draws = n.max(1);
        let mut out = Vec::with_capacity(cells.len() * draws);
        for &cell in cells {
            let (m, ls) = (v[off + cell], v[ng + off + cell]);
            for s in 0..draws {
                let x = if n == 0 {
                    m
                } else {
                    // A coordinate index past the latents, so η's noise is
                    // not any latent's.
                    m + ls.exp() * keyed_normal(seed, cell, self.width, s)
                };
                out.push(softplus(x).0);
            }
        }
        out
    }

    fn obs<'a>(&self, r: &'a [f64]) -> LnObs<'a> {
        let lnm = self.reference.is_some();
        LnObs {
            model: self.model,
            r: if lnm { &[] } else { r },
            totals: if lnm { r } else { &[] },
            reference: self.reference,
        }
    }

    /// Cells per analysis chunk with `n` latent values per (cell, gene).
    fn chunk(&self, n: usize) -> usize {
        (CHUNK_VALUES / (self.data.n_genes * n.max(1)).max(1)).max(1)
    }

    /// Log-likelihoods (full pmf) at the point estimate (`n = 0`: one value
    /// per cell or gene) or for `n` latent draws (`(s, cell)` at `cell·n + s`,
    /// `(s, gene)` at `gene·n + s`).
    pub fn log_likelihood(
        &self,
        v: &[f64],
        by: By,
        n: usize,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<Vec<f64>> {
        let (_, r) = self.global_medians(v);
        let obs = self.obs(&r);
        let all: Vec<usize> = (0..self.data.n_cells).collect();
        let nn = n.max(1);
        let mut out = match by {
            By::Cell => Vec::with_capacity(all.len() * nn),
            By::Gene => vec![0.0; self.data.n_genes * nn],
        };
        for cells in all.chunks(self.chunk(n)) {
            let lat = self.latents(v, cells, None, n, seed);
            let part = lnpost::loglik(&obs, self.data, &lat, cells, by, ctl)?;
            match by {
                By::Cell => out.extend(part),
                By::Gene => out.iter_mut().zip(&part).for_each(|(o, p)| *o += p),
            }
        }
        Ok(out)
    }

    /// `n` predictive count draws of `genes` for each of `cells`: values
    /// `(s, cell, gene)` at `(cell·|genes| + gene)·n + s`; with `point`,
    /// every draw reads the point log-rates `b + W m_c`.
    #[allow(clippy::too_many_arguments)]
    pub fn predictive(
        &self,
        v: &[f64],
        cells: &[usize],
        genes: &[usize],
        n: usize,
        point: bool,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<Vec<f64>> {
        crate::limits::check_values("n_samples", (cells.len() * genes.len()) as f64 * n as f64)?;
        let (_, r) = self.global_medians(v);
        let obs = self.obs(&r);
        let nl = if point { 0 } else { n };
        let mut out = Vec::with_capacity(cells.len() * genes.len() * n);
        // PLN and NBLN: genes are independent given the latents, so only
        // the asked-for genes are decoded; LNM's composition needs them all.
        let (coords, sub): (Option<&[usize]>, Vec<usize>) = match self.reference {
            None => (Some(genes), (0..genes.len()).collect()),
            Some(_) => (None, genes.to_vec()),
        };
        let sub_r: Vec<f64> = match (self.model, coords) {
            (LnModel::Nbln, Some(gs)) => gs.iter().map(|&j| r[j]).collect(),
            _ => r.clone(),
        };
        let obs = if self.model == LnModel::Nbln {
            LnObs { r: &sub_r, ..obs }
        } else {
            obs
        };
        for chunk in cells.chunks(self.chunk(n.min(64))) {
            let lat = self.latents(v, chunk, coords, nl, seed);
            out.extend(lnpost::predictive(&obs, &lat, chunk, &sub, n, seed, ctl)?);
        }
        Ok(out)
    }

    /// `n` draws (`n = 0`: the point estimate) of the latent coordinates
    /// `coords` (genes; LNM: the log-ratios, indexed without the reference)
    /// for each of `cells`: `(s, cell, coord)` at `(cell·|coords| + coord)·n + s`.
    pub fn latent_draws(
        &self,
        v: &[f64],
        cells: &[usize],
        genes: &[usize],
        n: usize,
        seed: u64,
    ) -> Result<Vec<f64>> {
        let nn = n.max(1);
        crate::limits::check_values("n_samples", (cells.len() * genes.len()) as f64 * nn as f64)?;
        let mut out = Vec::with_capacity(cells.len() * genes.len() * nn);
        for chunk in cells.chunks(self.chunk(n)) {
            out.extend(self.latents(v, chunk, Some(genes), n, seed).x);
        }
        Ok(out)
    }

    /// Randomized quantile residuals of `genes` in every cell, at the point
    /// latents (`n = 0`) or averaged over `n` draws (see
    /// [`lnpost::gof::quantile_residuals`]).
    #[allow(clippy::too_many_arguments)]
    pub fn quantile_residuals(
        &self,
        v: &[f64],
        genes: &[usize],
        keep: bool,
        epsilon: f64,
        n: usize,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<crate::posterior::nb::gof::Residuals> {
        let (_, r) = self.global_medians(v);
        lnpost::gof::quantile_residuals(
            &self.obs(&r),
            self.data,
            genes,
            keep,
            epsilon,
            n.max(1),
            |cells, coords| Ok(self.latents(v, cells, coords, n, seed)),
            seed,
            ctl,
        )
    }

    /// PPC calibration scores of `genes`: `n_sets` data sets, each from one
    /// latent draw of every cell (see [`lnpost::gof::ppc_scores`]).
    #[allow(clippy::too_many_arguments)]
    pub fn ppc_scores(
        &self,
        v: &[f64],
        genes: &[usize],
        level: f64,
        max_bin: Option<usize>,
        n_sets: usize,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<crate::posterior::nb::gof::PpcScores> {
        let (_, r) = self.global_medians(v);
        lnpost::gof::ppc_scores(
            &self.obs(&r),
            self.data,
            genes,
            level,
            max_bin,
            n_sets,
            |cells, coords| Ok(self.latents(v, cells, coords, n_sets, seed)),
            seed,
            ctl,
        )
    }

    /// Per-cell compositions of `genes` (all genes, LNM's reference
    /// included) in `cells`: at the point latents (`n = 0`) or for `n`
    /// draws; values `(s, cell, gene)` at `(cell·|genes| + gene)·n + s`.
    pub fn fractions(
        &self,
        v: &[f64],
        cells: &[usize],
        genes: &[usize],
        n: usize,
        seed: u64,
    ) -> Result<Vec<f64>> {
        let nn = n.max(1);
        crate::limits::check_values("n_samples", (cells.len() * genes.len()) as f64 * nn as f64)?;
        let (_, r) = self.global_medians(v);
        let obs = self.obs(&r);
        let mut out = Vec::with_capacity(cells.len() * genes.len() * nn);
        for chunk in cells.chunks(self.chunk(n)) {
            let lat = self.latents(v, chunk, None, n, seed);
            out.extend(lnpost::fractions(&obs, &lat, genes));
        }
        Ok(out)
    }

    /// The population parameters at their point estimates: `b` (width),
    /// `W` (`width × k`, row-major), `d` (width) and `r` (G, NBLN) or
    /// `[μ_T, r_T]` (LNM).
    pub fn population(&self, v: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let [n, _, _, c, d, _] = self.offsets();
        let (b, w, dv) = population_from_pieces(self.cfg.latent_dim, &v[c..d], &v[..n])
            .expect("the pieces of this VAE's own parameters fit");
        let (_, r) = self.global_medians(v);
        (b, w, dv, r)
    }
}

/// The population `(b, W, d)` of a log-normal VAE from two of its
/// parameter pieces, with no counts: the decoder head (`k × width` kernel,
/// row-major, then the bias) and the globals' guide locations (`d`'s come
/// first; its median is `e^loc`). `W` comes back `width × k`, row-major.
pub fn population_from_pieces(
    k: usize,
    head: &[f64],
    global_loc: &[f64],
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let wd = head.len() / (k + 1);
    if k == 0 || wd == 0 || wd * (k + 1) != head.len() || global_loc.len() < wd {
        return Err(CoreError::arg(
            "fit",
            "its decoder does not match its latent dimension",
        ));
    }
    let mut w = vec![0.0; wd * k];
    for j in 0..wd {
        for t in 0..k {
            w[j * k + t] = head[t * wd + j];
        }
    }
    let d = global_loc[..wd].iter().map(|x| x.exp()).collect();
    Ok((head[k * wd..].to_vec(), w, d))
}

impl Objective for LnVae<'_> {
    fn data(&self) -> &CountMatrix {
        self.data
    }
    fn kl_warmup(&self) -> usize {
        self.cfg.kl_warmup
    }
    fn initial_params(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        self.start(rng)
    }
    fn loss_and_grad(
        &self,
        v: &[f64],
        batch: &Batch,
        beta: f64,
        rng: &mut ChaCha8Rng,
        grad: &mut [f64],
    ) -> f64 {
        LnVae::loss_and_grad(self, v, batch, beta, rng, grad)
    }
}

#[cfg(test)]
#[path = "lognormal_tests.rs"]
mod tests;
