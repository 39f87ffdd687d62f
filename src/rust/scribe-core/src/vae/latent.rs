//! The latent side every VAE shares, whatever its decoder: the encoder's
//! Gaussian `q(z_c | u_c) = N(loc, exp(½ lv))`, the reparameterized draw of
//! `z`, and the KL to the prior (`N(0, I)` in closed form, a flow prior by
//! a single-sample Monte Carlo estimate), with their gradients.

use super::encoder::{Encoder, EncoderInput, EncoderTape, Standardization};
use super::{VaeConfig, HALF_LN_2PI};
use crate::data::CountMatrix;
use crate::error::{CoreError, Result};
use crate::nn::flows::{ChainTape, Direction, FlowChain};
use rand::Rng;
use rand::RngExt;
use rand_distr::StandardNormal;

/// What every VAE builds from its configuration, whatever its decoder: the
/// encoder, the latent prior, and the encoder's input on the training data
/// (with its statistics when standardized).
pub(super) struct LatentParts {
    pub encoder: Encoder,
    pub prior: Option<FlowChain>,
    pub input: EncoderInput,
    pub standardization: Option<Standardization>,
}

impl LatentParts {
    /// Checks `cfg`'s sizes and builds the parts for `data`.
    pub fn new(cfg: &VaeConfig, data: &CountMatrix) -> Result<Self> {
        if cfg.latent_dim == 0 || cfg.encoder_hidden.is_empty() || cfg.block == 0 {
            return Err(CoreError::arg(
                "vae_latent_dim",
                "the latent dimension and the encoder's widths must be positive",
            ));
        }
        let encoder = Encoder::new(
            data.n_genes,
            &cfg.encoder_hidden,
            cfg.latent_dim,
            cfg.activation,
        );
        let prior = match &cfg.prior {
            None => None,
            Some(fc) => {
                let ch = FlowChain::new(cfg.latent_dim, fc)?;
                if !ch.differentiable(Direction::Density) {
                    return Err(CoreError::arg(
                        "vae_flow_type",
                        "'iaf' evaluates densities one coordinate at a time; use a coupling flow or 'maf' as the prior",
                    ));
                }
                Some(ch)
            }
        };
        let standardization = cfg
            .standardize
            .then(|| Standardization::of(data, cfg.input_transform));
        let input = EncoderInput::new(data, cfg.input_transform, standardization.as_ref());
        Ok(LatentParts {
            encoder,
            prior,
            input,
            standardization,
        })
    }
}

/// One batch's pass through the encoder and the latent prior. The decoder
/// adds its `∂elbo/∂z` into `gz`; [`LatentPass::backward`] then carries
/// everything back to the encoder's parameters.
pub(super) struct LatentPass {
    k: usize,
    /// Which log-variances were clipped (empty: none can be).
    lv_clipped: Vec<bool>,
    /// Encoder outputs `[loc | lv]`, `rows × 2k`.
    out: Vec<f64>,
    /// The standard normal draws behind `z`.
    ez: Vec<f64>,
    /// `z = loc + exp(½ lv) ε`, `rows × k`.
    pub z: Vec<f64>,
    tape: EncoderTape,
    /// `∂elbo/∂(loc, lv)` of the KL term.
    g_enc_out: Vec<f64>,
    /// `∂elbo/∂z`: the flow prior's, then the decoder's.
    pub gz: Vec<f64>,
    /// The KL term's share of the ELBO (weighted).
    pub elbo: f64,
}

/// What the latent side reads: the encoder and its input, the prior.
pub(super) struct LatentSide<'a> {
    pub encoder: &'a Encoder,
    pub enc_params: &'a [f64],
    pub data: &'a CountMatrix,
    pub input: &'a EncoderInput,
    pub prior: Option<&'a FlowChain>,
    pub prior_params: &'a [f64],
    /// Bounds of the log-variance head (see `VaeConfig::log_var_clip`).
    pub log_var_clip: Option<(f64, f64)>,
}

impl LatentSide<'_> {
    /// Encodes `cells`, draws their `z` (row by row from `rng`) and scores
    /// the KL to the prior weighted by `bw` (`β` times the batch scale);
    /// a flow prior's parameter gradient is added into `g_prior`.
    pub fn forward<R: Rng>(
        &self,
        cells: &[u32],
        k: usize,
        bw: f64,
        rng: &mut R,
        g_prior: &mut [f64],
    ) -> LatentPass {
        let rows = cells.len();
        let mut tape = EncoderTape::default();
        let mut out =
            self.encoder
                .forward(self.enc_params, self.data, self.input, cells, &mut tape);
        // A clipped log-variance passes no gradient back.
        let mut lv_clipped = Vec::new();
        if let Some((lo, hi)) = self.log_var_clip {
            lv_clipped = vec![false; rows * k];
            for r in 0..rows {
                for q in 0..k {
                    let x = &mut out[r * 2 * k + k + q];
                    if *x < lo || *x > hi {
                        *x = x.clamp(lo, hi);
                        lv_clipped[r * k + q] = true;
                    }
                }
            }
        }
        let mut z = vec![0.0; rows * k];
        let mut ez = vec![0.0; rows * k];
        for r in 0..rows {
            for q in 0..k {
                let e: f64 = rng.sample(StandardNormal);
                ez[r * k + q] = e;
                z[r * k + q] = out[r * 2 * k + q] + (0.5 * out[r * 2 * k + k + q]).exp() * e;
            }
        }
        let mut elbo = 0.0;
        let mut gz = vec![0.0; rows * k];
        let mut g_enc_out = vec![0.0; rows * 2 * k];
        match self.prior {
            None => {
                for r in 0..rows {
                    for q in 0..k {
                        let (m, lv) = (out[r * 2 * k + q], out[r * 2 * k + k + q]);
                        elbo -= bw * 0.5 * (lv.exp() + m * m - 1.0 - lv);
                        g_enc_out[r * 2 * k + q] -= bw * m;
                        g_enc_out[r * 2 * k + k + q] -= bw * 0.5 * (lv.exp() - 1.0);
                    }
                }
            }
            Some(ch) => {
                // KL ≈ ln q(z) − ln p(z): ln q = Σ (−½ε² − ½lv − ½ln2π).
                for r in 0..rows {
                    for q in 0..k {
                        let (e, lv) = (ez[r * k + q], out[r * 2 * k + k + q]);
                        elbo -= bw * (-0.5 * e * e - 0.5 * lv - HALF_LN_2PI);
                        g_enc_out[r * 2 * k + k + q] += bw * 0.5;
                    }
                }
                let pp = self.prior_params;
                let mut ctape = ChainTape::default();
                ch.apply(pp, Direction::Density, &z, rows, &mut ctape);
                let y = ctape.output();
                let mut lp = 0.0;
                for &yv in y {
                    lp += -0.5 * yv * yv - HALF_LN_2PI;
                }
                lp += ctape.logdet().iter().sum::<f64>();
                elbo += bw * lp;
                let g_out: Vec<f64> = y.iter().map(|yv| -bw * yv).collect();
                let g_ld = vec![bw; rows];
                let mut g_in = vec![0.0; rows * k];
                ch.backward(pp, &ctape, &g_out, &g_ld, &mut g_in, g_prior);
                gz.iter_mut().zip(&g_in).for_each(|(a, b)| *a += b);
            }
        }
        LatentPass {
            k,
            lv_clipped,
            out,
            ez,
            z,
            tape,
            g_enc_out,
            gz,
            elbo,
        }
    }
}

impl LatentPass {
    /// Through `z = loc + exp(½ lv) ε` and the encoder: adds `∂elbo/∂θ_enc`
    /// into `g_enc`.
    pub fn backward(mut self, side: &LatentSide<'_>, cells: &[u32], g_enc: &mut [f64]) {
        let k = self.k;
        for r in 0..cells.len() {
            for q in 0..k {
                let lv = self.out[r * 2 * k + k + q];
                let gzv = self.gz[r * k + q];
                self.g_enc_out[r * 2 * k + q] += gzv;
                self.g_enc_out[r * 2 * k + k + q] +=
                    gzv * 0.5 * (0.5 * lv).exp() * self.ez[r * k + q];
            }
        }
        for (i, &c) in self.lv_clipped.iter().enumerate() {
            if c {
                self.g_enc_out[(i / k) * 2 * k + k + i % k] = 0.0;
            }
        }
        side.encoder.backward(
            side.enc_params,
            side.data,
            side.input,
            cells,
            &self.tape,
            &self.g_enc_out,
            g_enc,
        );
    }
}
