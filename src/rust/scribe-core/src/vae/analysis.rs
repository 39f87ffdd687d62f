//! Downstream analyses of a fitted VAE: log-likelihoods, posterior
//! predictive counts, denoising and the decoded parameters, each cell read
//! through its own decoded `r` (and gate).
//!
//! A posterior *setting* is either one draw of the global guide (`p`,
//! capture) together with one draw of every cell's `z ~ q(z | u_c)`, or the
//! point setting: the globals at their guide modes (as for SVI fits) and
//! every cell at its encoder mean. Cells are decoded per block, blocks in
//! parallel, so no cells × genes parameter array exists beyond one block;
//! each (setting, cell) draws its `z` and its counts from streams of its
//! own, so subsets of cells and thread counts give the same numbers.
//!
//! The per-count formulas are the NB family's
//! (`posterior::nb::{loglik, denoise}`), called with one cell's parameters.

use super::Vae;
use crate::data::CountMatrix;
use crate::dist::draw::nb_count_fast;
use crate::error::{CoreError, Result};
use crate::models::nb::nb_cell_loglik;
use crate::models::Model;
use crate::nn::{Dense, MlpTape};
use crate::posterior::nb::denoise::{count_posterior, Method};
use crate::posterior::nb::loglik::cell_terms_genewise;
use crate::posterior::{By, Site, Source, Summary};
use crate::progress::Ctl;
use crate::svi::guide::mean_field::MeanFieldFit;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// Keeps the streams of `z` apart from those of the counts drawn from the
/// same seed.
const Z_SALT: u64 = 0x5eed_0f2a_17e7_u64;

/// The decoded parameters of one block of cells in one setting.
pub struct Decoded<'a> {
    /// The setting (draw) index.
    pub s: usize,
    /// The block's cells (indices into the fitted data).
    pub cells: &'a [usize],
    pub p: f64,
    /// Capture probability of each block cell (1 without capture).
    pub nu: Vec<f64>,
    /// `r` per block cell and gene (block × G, row-major).
    pub r: Vec<f64>,
    /// The zero-inflation gate, laid out as `r` (zero-inflated models).
    pub gate: Option<Vec<f64>>,
    n_genes: usize,
}

impl Decoded<'_> {
    pub fn r_row(&self, i: usize) -> &[f64] {
        &self.r[i * self.n_genes..(i + 1) * self.n_genes]
    }
    pub fn gate_row(&self, i: usize) -> Option<&[f64]> {
        let g = self.n_genes;
        self.gate.as_ref().map(|v| &v[i * g..(i + 1) * g])
    }
    /// `logit p̂_c = logit p + ln ν_c` of block cell `i`.
    pub fn ell(&self, i: usize) -> f64 {
        (self.p / (1.0 - self.p)).ln() + self.nu[i].ln()
    }
}

/// A decoder head restricted to some genes (see [`Vae::head_for`]).
pub(crate) struct HeadCut {
    dense: Dense,
    params: Vec<f64>,
    /// Genes kept.
    width: usize,
}

/// The decoder's `r` from its raw head output: softplus, floored as in
/// training.
#[inline]
fn r_of_raw(raw: f64) -> f64 {
    crate::math::softplus(raw).max(1e-10)
}

impl Vae<'_> {
    /// The parameter vector from its named pieces (the inverse of
    /// [`Vae::split`]), each checked against this architecture.
    pub fn join(&self, pieces: &[(&str, &[f64])]) -> Result<Vec<f64>> {
        super::join_pieces(self.offsets(), pieces)
    }

    /// The factor from the decoder's output to `r` at success probability
    /// `p`: 1 when the output is `r` (canonical), `(1−p)/p` when it is the
    /// mean (mean_prob, mean_odds).
    fn r_scale_at(&self, p: f64) -> f64 {
        match self.model.spec.param {
            crate::models::nb::Parameterization::Canonical => 1.0,
            _ => (1.0 - p) / p,
        }
    }

    /// The decoder head cut down to the outputs of `genes` (their `r`
    /// outputs, then their gate outputs): analyses of a few genes decode
    /// only those.
    fn head_for(&self, v: &[f64], genes: &[usize]) -> HeadCut {
        let [_, _, _, c, d, _] = self.offsets();
        let (h, g, m) = (
            self.dec_head.n_in,
            self.model.data().n_genes,
            self.dec_head.n_out,
        );
        let cols: Vec<usize> = if self.gated {
            genes
                .iter()
                .copied()
                .chain(genes.iter().map(|&j| g + j))
                .collect()
        } else {
            genes.to_vec()
        };
        let hp = &v[c..d];
        let mut params = Vec::with_capacity((h + 1) * cols.len());
        for i in 0..h {
            params.extend(cols.iter().map(|&o| hp[i * m + o]));
        }
        params.extend(cols.iter().map(|&o| hp[h * m + o]));
        HeadCut {
            dense: Dense::new(h, cols.len()),
            params,
            width: genes.len(),
        }
    }

    /// `r` (and the gate) of `rows` cells at latents `z` (`rows × latent`),
    /// for every gene or only those of `head` ([`Self::head_for`]);
    /// `r_scale` turns the decoder's output into `r` ([`Self::r_scale_at`]).
    pub(crate) fn decode(
        &self,
        v: &[f64],
        z: &[f64],
        rows: usize,
        r_scale: f64,
        head: Option<&HeadCut>,
    ) -> (Vec<f64>, Option<Vec<f64>>) {
        let [_, _, b, c, d, _] = self.offsets();
        let mut tape = MlpTape::default();
        self.dec_mlp.forward(&v[b..c], z, rows, &mut tape);
        let (dense, hp, g) = match head {
            Some(hc) => (hc.dense, hc.params.as_slice(), hc.width),
            None => (self.dec_head, &v[c..d], self.model.data().n_genes),
        };
        let m = dense.n_out;
        let mut o = vec![0.0; rows * m];
        dense.forward(hp, tape.output(), rows, &mut o);
        let mut r = vec![0.0; rows * g];
        let mut gate = self.gated.then(|| vec![0.0; rows * g]);
        for i in 0..rows {
            let row = &o[i * m..(i + 1) * m];
            for j in 0..g {
                r[i * g + j] = r_of_raw(row[j]) * r_scale;
            }
            if let Some(gt) = gate.as_mut() {
                for j in 0..g {
                    gt[i * g + j] = 1.0 / (1.0 + (-row[g + j]).exp());
                }
            }
        }
        (r, gate)
    }

    /// Runs `f` on every block of `cells` decoded in every setting of
    /// `summary` (the point setting `copies` times): results per setting,
    /// then per block, in order. With `genes`, only those genes are decoded
    /// ([`Decoded::r`] then has one column per entry of `genes`).
    #[allow(clippy::too_many_arguments)]
    pub fn for_decoded_blocks<T: Send>(
        &self,
        v: &[f64],
        cells: &[usize],
        genes: Option<&[usize]>,
        summary: Summary,
        copies: usize,
        ctl: Ctl<'_>,
        f: impl Fn(&Decoded) -> T + Sync,
    ) -> Result<Vec<Vec<T>>> {
        let data = self.model.data();
        if let Some(gs) = genes {
            check_genes(gs, data.n_genes)?;
        }
        let head = genes.map(|gs| self.head_for(v, gs));
        let width = genes.map_or(data.n_genes, <[usize]>::len);
        let lay = self.model.layout();
        let [n, a, b, ..] = self.offsets();
        let k = self.cfg.latent_dim;
        if v.len() != self.n_params() {
            return Err(CoreError::arg("fit", "its parameters do not match its VAE"));
        }
        if let Some(&c) = cells.iter().find(|&&c| c >= data.n_cells) {
            return Err(CoreError::arg(
                "cells",
                format!("cell {} is not a cell of the fit", c + 1),
            ));
        }
        let globals = MeanFieldFit {
            loc: v[..n].to_vec(),
            scale: v[n..a].iter().map(|x| x.exp()).collect(),
        };
        // Canonical sites (`p`, `p_capture`) whatever the parameterization.
        let sites = crate::models::nb::sites::derive(
            &self.model.spec,
            globals.sampled_sites(lay, summary, Ctl::none())?,
        )?;
        let site = |name: &str| sites.iter().find(|s| s.name == name);
        let p_site: &Site =
            site("p").ok_or_else(|| CoreError::arg("fit", "its global guide has no p"))?;
        let cap_site = site("p_capture");
        let (n_set, z_seed) = match summary {
            Summary::Point => (copies.max(1), None),
            Summary::Draws { n, seed } => (n, Some(seed ^ Z_SALT)),
        };
        // Encoder outputs of the cells, once.
        let cells32: Vec<u32> = cells.iter().map(|&c| c as u32).collect();
        let mut tape = super::encoder::EncoderTape::default();
        let enc = self
            .encoder
            .forward(&v[a..b], data, &self.input, &cells32, &mut tape);
        let starts: Vec<usize> = (0..cells.len()).step_by(self.cfg.block).collect();
        let work = ctl.work(n_set);
        let mut out = Vec::with_capacity(n_set);
        for s in 0..n_set {
            if work.stopped() {
                break;
            }
            let si = if z_seed.is_some() { s } else { 0 };
            let per: Vec<T> = starts
                .par_iter()
                .map(|&st| {
                    let end = (st + self.cfg.block).min(cells.len());
                    let blk = &cells[st..end];
                    let mut z = vec![0.0; blk.len() * k];
                    for (i, &c) in blk.iter().enumerate() {
                        let row = &enc[(st + i) * 2 * k..(st + i + 1) * 2 * k];
                        let zi = &mut z[i * k..(i + 1) * k];
                        match z_seed {
                            None => zi.copy_from_slice(&row[..k]),
                            Some(zs) => {
                                let mut rng = ChaCha8Rng::seed_from_u64(zs);
                                rng.set_stream(((s as u64 + 1) << 32) | c as u64);
                                for q in 0..k {
                                    let e: f64 = rng.sample(StandardNormal);
                                    zi[q] = row[q] + (0.5 * row[k + q]).exp() * e;
                                }
                            }
                        }
                    }
                    let p = p_site.at(si, 0, 0);
                    let (r, gate) =
                        self.decode(v, &z, blk.len(), self.r_scale_at(p), head.as_ref());
                    let nu = blk
                        .iter()
                        .map(|&c| cap_site.map_or(1.0, |cs| cs.at(si, 0, c)))
                        .collect();
                    f(&Decoded {
                        s,
                        cells: blk,
                        p,
                        nu,
                        r,
                        gate,
                        n_genes: width,
                    })
                })
                .collect();
            out.push(per);
            work.tick();
        }
        work.finish(out)
    }

    /// Log-likelihood of every cell (or gene) of the fitted data per
    /// setting: layout `s + S·i`.
    pub fn log_likelihood(
        &self,
        v: &[f64],
        by: By,
        summary: Summary,
        ctl: Ctl<'_>,
    ) -> Result<Vec<f64>> {
        let data = self.model.data();
        let n_out = match by {
            By::Cell => data.n_cells,
            By::Gene => data.n_genes,
        };
        let n_set = settings(summary, 1);
        crate::limits::check_values("n_samples", (n_set * n_out) as f64)?;
        let cells: Vec<usize> = (0..data.n_cells).collect();
        let blocks = self.for_decoded_blocks(v, &cells, None, summary, 1, ctl, |dc| match by {
            By::Cell => (0..dc.cells.len())
                .map(|i| {
                    let r = dc.r_row(i);
                    nb_cell_loglik(
                        data,
                        dc.cells[i],
                        r,
                        r.iter().sum(),
                        dc.gate_row(i),
                        dc.ell(i),
                        None,
                    )
                })
                .collect::<Vec<f64>>(),
            By::Gene => {
                let mut acc = vec![0.0; data.n_genes];
                for (i, &c) in dc.cells.iter().enumerate() {
                    let ell = dc.ell(i);
                    cell_terms_genewise(
                        data,
                        c,
                        dc.r_row(i),
                        dc.gate_row(i),
                        |_| ell,
                        |_| None,
                        |g, x| acc[g] += x,
                    );
                }
                acc
            }
        })?;
        let mut res = vec![0.0; n_set * n_out];
        for (s, per) in blocks.into_iter().enumerate() {
            match by {
                By::Cell => per
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .for_each(|(c, x)| res[s + n_set * c] = x),
                By::Gene => {
                    for part in per {
                        part.iter()
                            .enumerate()
                            .for_each(|(g, x)| res[s + n_set * g] += x);
                    }
                }
            }
        }
        Ok(res)
    }

    /// Posterior predictive counts of `genes` in `cells`: layout
    /// `s + S·(c + C·j)` (draws × cells × genes, column-major). The point
    /// setting repeated `copies` times draws observation noise only.
    #[allow(clippy::too_many_arguments)]
    pub fn predictive(
        &self,
        v: &[f64],
        cells: &[usize],
        genes: &[usize],
        biological: bool,
        summary: Summary,
        copies: usize,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<Vec<f64>> {
        let (s_n, c_n, j_n) = (settings(summary, copies), cells.len(), genes.len());
        crate::limits::check_values("n_samples", 2.0 * (s_n * c_n * j_n) as f64)?;
        check_genes(genes, self.model.data().n_genes)?;
        let blocks =
            self.for_decoded_blocks(v, cells, Some(genes), summary, copies, ctl, |dc| {
                let mut out = vec![0.0; dc.cells.len() * j_n];
                for (i, &c) in dc.cells.iter().enumerate() {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(((dc.s as u64 + 1) << 32) | c as u64);
                    let nu = if biological { 1.0 } else { dc.nu[i] };
                    let p_hat = dc.p * nu / (1.0 - dc.p * (1.0 - nu));
                    let odds = p_hat / (1.0 - p_hat);
                    let (r, gate) = (dc.r_row(i), if biological { None } else { dc.gate_row(i) });
                    // Decoded for `genes` only: column j is gene genes[j].
                    for j in 0..j_n {
                        if let Some(pi) = gate {
                            if rng.random::<f64>() < pi[j] {
                                continue;
                            }
                        }
                        out[i * j_n + j] = nb_count_fast(&mut rng, r[j], odds) as f64;
                    }
                }
                out
            })?;
        let mut res = vec![0.0; s_n * c_n * j_n];
        for (s, per) in blocks.into_iter().enumerate() {
            for (ci, row) in per
                .iter()
                .flat_map(|b| b.chunks_exact(j_n.max(1)))
                .enumerate()
            {
                for (j, x) in row.iter().enumerate() {
                    res[s + s_n * (ci + c_n * j)] = *x;
                }
            }
        }
        Ok(res)
    }

    /// Denoised counts of `genes` in every cell per setting: layout
    /// `j + J·(c + C·s)`, as [`crate::posterior::nb::denoise::denoise`]
    /// (whose formulas it applies to each cell's decoded parameters).
    #[allow(clippy::too_many_arguments)]
    pub fn denoise(
        &self,
        v: &[f64],
        genes: &[usize],
        method: Method,
        zi_method: Method,
        want_variance: bool,
        summary: Summary,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        let data: &CountMatrix = self.model.data();
        let (s_n, c_n, j_n) = (settings(summary, 1), data.n_cells, genes.len());
        let bufs = if want_variance { 2.0 } else { 1.0 };
        crate::limits::check_values("n_samples", bufs * (s_n * c_n * j_n) as f64)?;
        check_genes(genes, data.n_genes)?;
        let mut pos = vec![usize::MAX; data.n_genes];
        for (j, &g) in genes.iter().enumerate() {
            pos[g] = j;
        }
        let cells: Vec<usize> = (0..c_n).collect();
        let blocks = self.for_decoded_blocks(v, &cells, Some(genes), summary, 1, ctl, |dc| {
            let mut vals = vec![0.0; dc.cells.len() * j_n];
            let mut vars = vec![0.0; if want_variance { vals.len() } else { 0 }];
            let mut u_row = vec![0.0; j_n];
            for (i, &c) in dc.cells.iter().enumerate() {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(((dc.s as u64 + 1) << 32) | c as u64);
                u_row.iter_mut().for_each(|x| *x = 0.0);
                let (gi, ci) = data.row(c);
                for (&g, &u) in gi.iter().zip(ci) {
                    if pos[g as usize] != usize::MAX {
                        u_row[pos[g as usize]] = u as f64;
                    }
                }
                // Decoded for `genes` only: column j is gene genes[j].
                let (r, gate) = (dc.r_row(i), dc.gate_row(i));
                for j in 0..j_n {
                    let u = u_row[j];
                    let m = if u == 0.0 && gate.is_some() {
                        zi_method
                    } else {
                        method
                    };
                    let pick = (m != Method::Mean).then_some(m);
                    let (mean, var, value) = count_posterior(
                        u,
                        r[j],
                        dc.p,
                        dc.nu[i],
                        gate.map(|pi| pi[j]),
                        None,
                        pick,
                        &mut rng,
                    );
                    vals[i * j_n + j] = value.unwrap_or(mean);
                    if want_variance {
                        vars[i * j_n + j] = var.max(0.0);
                    }
                }
            }
            (vals, vars)
        })?;
        let mut vals = Vec::with_capacity(s_n * c_n * j_n);
        let mut vars = Vec::with_capacity(if want_variance { vals.capacity() } else { 0 });
        for per in blocks {
            for (a, b) in per {
                vals.extend(a);
                vars.extend(b);
            }
        }
        Ok((vals, want_variance.then_some(vars)))
    }

    /// Draws of the parameters of `cells` and `genes`: `p` per setting,
    /// capture `ν` at `s + S·c`, and `r` (and the gate) at `s + S·(c + C·j)`.
    pub fn parameter_draws(
        &self,
        v: &[f64],
        cells: &[usize],
        genes: &[usize],
        summary: Summary,
        ctl: Ctl<'_>,
    ) -> Result<ParameterDraws> {
        let (s_n, c_n, j_n) = (settings(summary, 1), cells.len(), genes.len());
        let copies = if self.gated { 2.0 } else { 1.0 };
        crate::limits::check_values(
            "n_samples",
            copies * (s_n * c_n * j_n) as f64 + (s_n * c_n) as f64,
        )?;
        check_genes(genes, self.model.data().n_genes)?;
        // Decoded for `genes` only: block cell i's values are r[i·J + j].
        let blocks = self.for_decoded_blocks(v, cells, Some(genes), summary, 1, ctl, |dc| {
            (dc.p, dc.nu.clone(), dc.r.clone(), dc.gate.clone())
        })?;
        let mut out = ParameterDraws {
            p: vec![0.0; s_n],
            nu: vec![0.0; s_n * c_n],
            r: vec![0.0; s_n * c_n * j_n],
            gate: self.gated.then(|| vec![0.0; s_n * c_n * j_n]),
        };
        for (s, per) in blocks.into_iter().enumerate() {
            let mut ci = 0;
            for (p, nu, r, gate) in per {
                out.p[s] = p;
                for (i, x) in nu.iter().enumerate() {
                    out.nu[s + s_n * (ci + i)] = *x;
                }
                for i in 0..nu.len() {
                    for j in 0..j_n {
                        let at = s + s_n * (ci + i + c_n * j);
                        out.r[at] = r[i * j_n + j];
                        if let (Some(g), Some(gb)) = (out.gate.as_mut(), &gate) {
                            g[at] = gb[i * j_n + j];
                        }
                    }
                }
                ci += nu.len();
            }
        }
        Ok(out)
    }

    /// Per-cell expression fractions of `genes`: with `p` shared by a
    /// cell's genes the NB factorises into the total and a
    /// Dirichlet-multinomial composition, so given the counts the fractions
    /// are `Dirichlet(r_c + u_c)` (capture cancels; the gate is ignored, as
    /// for the other engines). `sample = false`: the mean
    /// `(r_cg + u_cg) / (Σ_g r_cg + L_c)`; `true`: one draw per setting.
    /// Layout `j + J·(c + C·s)`.
    pub fn cell_fractions(
        &self,
        v: &[f64],
        genes: &[usize],
        sample: bool,
        summary: Summary,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<Vec<f64>> {
        let data = self.model.data();
        let (s_n, c_n, j_n, g_n) = (
            settings(summary, 1),
            data.n_cells,
            genes.len(),
            data.n_genes,
        );
        crate::limits::check_values("n_samples", (s_n * c_n * j_n) as f64)?;
        check_genes(genes, g_n)?;
        let cells: Vec<usize> = (0..c_n).collect();
        let blocks = self.for_decoded_blocks(v, &cells, None, summary, 1, ctl, |dc| {
            let mut out = vec![0.0; dc.cells.len() * j_n];
            let mut u = vec![0.0; g_n];
            for (i, &c) in dc.cells.iter().enumerate() {
                u.iter_mut().for_each(|x| *x = 0.0);
                let (gi, ci) = data.row(c);
                for (&g, &x) in gi.iter().zip(ci) {
                    u[g as usize] = x as f64;
                }
                let r = dc.r_row(i);
                let row = &mut out[i * j_n..(i + 1) * j_n];
                if !sample {
                    let tot = r.iter().sum::<f64>() + data.lib_size[c];
                    for (j, &g) in genes.iter().enumerate() {
                        row[j] = (r[g] + u[g]) / tot;
                    }
                    continue;
                }
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(((dc.s as u64 + 1) << 32) | c as u64);
                let draws: Vec<f64> = (0..g_n)
                    .map(|g| crate::dist::draw::gamma(&mut rng, r[g] + u[g], 1.0))
                    .collect();
                let tot = draws.iter().sum::<f64>().max(1e-300);
                for (j, &g) in genes.iter().enumerate() {
                    row[j] = draws[g] / tot;
                }
            }
            out
        })?;
        Ok(blocks.into_iter().flatten().flatten().collect())
    }

    /// The point setting of every fitted cell: `p`, each cell's capture,
    /// and `r` (and the gate) decoded at each cell's encoder mean.
    pub fn decoded_point(&self, v: &[f64], ctl: Ctl<'_>) -> Result<DecodedPoint> {
        let cells: Vec<usize> = (0..self.model.data().n_cells).collect();
        let blocks = self.for_decoded_blocks(v, &cells, None, Summary::Point, 1, ctl, |dc| {
            (dc.p, dc.nu.clone(), dc.r.clone(), dc.gate.clone())
        })?;
        let mut out = DecodedPoint {
            p: f64::NAN,
            nu: Vec::new(),
            r: Vec::new(),
            gate: self.gated.then(Vec::new),
        };
        for (p, nu, r, gb) in blocks.into_iter().flatten() {
            out.p = p;
            out.nu.extend(nu);
            out.r.extend(r);
            if let (Some(g), Some(gb)) = (out.gate.as_mut(), gb) {
                g.extend(gb);
            }
        }
        Ok(out)
    }
}

/// Parameter draws of some cells and genes of a VAE fit (see
/// [`Vae::parameter_draws`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterDraws {
    pub p: Vec<f64>,
    pub nu: Vec<f64>,
    pub r: Vec<f64>,
    pub gate: Option<Vec<f64>>,
}

/// The point setting of a VAE fit's cells.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPoint {
    pub p: f64,
    /// Capture probability per cell (all 1 without capture).
    pub nu: Vec<f64>,
    /// `r` per cell and gene (cells × genes row-major: genes × cells in R).
    pub r: Vec<f64>,
    /// The gate, laid out as `r` (zero-inflated models).
    pub gate: Option<Vec<f64>>,
}

pub(super) fn settings(summary: Summary, copies: usize) -> usize {
    match summary {
        Summary::Point => copies.max(1),
        Summary::Draws { n, .. } => n,
    }
}

pub(super) fn check_genes(genes: &[usize], n_genes: usize) -> Result<()> {
    if let Some(&g) = genes.iter().find(|&&g| g >= n_genes) {
        return Err(CoreError::arg(
            "genes",
            format!("gene {} is not a gene of the fit", g + 1),
        ));
    }
    Ok(())
}
