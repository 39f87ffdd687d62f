//! Goodness of fit of NB-family VAE fits, per gene: the randomized quantile
//! residuals and PPC calibration scores of [`crate::posterior::nb::gof`],
//! with each cell read through its own decoded `r` (and gate) and its
//! capture.
//!
//! Residuals use the predictive CDF of each cell, averaged over the
//! settings (the point setting, or draws of the globals and of each cell's
//! `z`). Each PPC data set is one posterior setting with one count drawn per
//! (cell, gene); its counts are binned per gene as they are drawn, so no
//! predictive count matrix is held. Sums over settings run in setting order,
//! so thread counts do not change the results.

use super::analysis::{check_genes, settings};
use super::Vae;
use crate::dist::draw::nb_count_fast;
use crate::error::{CoreError, Result};
use crate::models::Model;
use crate::posterior::nb::gof::{
    histogram_scores, nb_cdf_pair, observed_nonzero, randomized_residual, PpcScores, Residuals,
};
use crate::posterior::Summary;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use std::sync::Mutex;

/// Genes whose residuals are formed at once (for all cells).
const GENE_BLOCK: usize = 512;
/// Keeps the PPC's count streams apart from the predictive verb's.
const PPC_SALT: u64 = 0x9c0f_7a11_3e55_u64;

impl Vae<'_> {
    /// Randomized quantile residuals of `genes` in every cell of the fitted
    /// data under each cell's predictive CDF, averaged over the settings of
    /// `summary`; the uniforms come from `(seed, gene block, cell)` streams.
    #[allow(clippy::too_many_arguments)]
    pub fn quantile_residuals(
        &self,
        v: &[f64],
        genes: &[usize],
        keep: bool,
        epsilon: f64,
        summary: Summary,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<Residuals> {
        if !(epsilon > 0.0 && epsilon < 0.5) {
            return Err(CoreError::arg("epsilon", "must be in (0, 0.5)"));
        }
        let data = self.model.data();
        check_genes(genes, data.n_genes)?;
        let (c_n, j_n) = (data.n_cells, genes.len());
        let block = GENE_BLOCK.min(j_n.max(1));
        crate::limits::check_values(
            "genes",
            (3 * c_n * block) as f64 + if keep { (c_n * j_n) as f64 } else { 0.0 },
        )?;
        let n_set = settings(summary, 1) as f64;
        let cells: Vec<usize> = (0..c_n).collect();
        let mut out = Residuals::new(j_n, c_n, keep);
        let mut q = vec![0.0; c_n * block];
        for (b, start) in (0..j_n).step_by(block).enumerate() {
            let len = block.min(j_n - start);
            let gb = &genes[start..start + len];
            // (F(u − 1), F(u)) per (cell, gene), summed over settings.
            let acc = Mutex::new(vec![(0.0, 0.0); c_n * len]);
            self.for_decoded_blocks(v, &cells, Some(gb), summary, 1, ctl, |dc| {
                let mut part = vec![(0.0, 0.0); dc.cells.len() * len];
                let mut u = vec![0u32; len];
                for (i, &c) in dc.cells.iter().enumerate() {
                    dense_counts(data, c, gb, &mut u);
                    let p_hat = dc.p * dc.nu[i] / (1.0 - dc.p * (1.0 - dc.nu[i]));
                    let (r, gate) = (dc.r_row(i), dc.gate_row(i));
                    for j in 0..len {
                        let pi = gate.map_or(0.0, |g| g[j]);
                        part[i * len + j] = nb_cdf_pair(u[j], r[j], p_hat, pi);
                    }
                }
                let mut a = acc.lock().expect("no panics while held");
                for (i, &c) in dc.cells.iter().enumerate() {
                    for j in 0..len {
                        let (x, y) = part[i * len + j];
                        a[c * len + j].0 += x;
                        a[c * len + j].1 += y;
                    }
                }
            })?;
            let acc = acc.into_inner().expect("no panics while held");
            q[..c_n * len]
                .par_chunks_mut(len)
                .enumerate()
                .for_each(|(c, row)| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(((b as u64) << 32) | c as u64);
                    for (j, qv) in row.iter_mut().enumerate() {
                        let (lo, hi) = acc[c * len + j];
                        *qv = randomized_residual(lo / n_set, hi / n_set, rng.random(), epsilon);
                    }
                });
            out.record(&q[..c_n * len], c_n, start, len);
        }
        Ok(out)
    }

    /// PPC calibration scores of `genes`: `n_sets` predictive data sets,
    /// each from one posterior setting (draws of `summary`'s seed), binned
    /// per gene; counts come from `(seed, set, cell)` streams.
    #[allow(clippy::too_many_arguments)]
    pub fn ppc_scores(
        &self,
        v: &[f64],
        genes: &[usize],
        level: f64,
        max_bin: Option<usize>,
        summary: Summary,
        seed: u64,
        ctl: Ctl<'_>,
    ) -> Result<PpcScores> {
        if !(level > 0.0 && level < 1.0) {
            return Err(CoreError::arg("credible_level", "must be in (0, 100)"));
        }
        let data = self.model.data();
        check_genes(genes, data.n_genes)?;
        let (c_n, j_n, s_n) = (data.n_cells, genes.len(), settings(summary, 1));
        let cells: Vec<usize> = (0..c_n).collect();
        // hists[j][s][x]: cells whose count of gene j in set s is x.
        let hists = Mutex::new(vec![vec![Vec::<u32>::new(); s_n]; j_n]);
        self.for_decoded_blocks(v, &cells, Some(genes), summary, 1, ctl, |dc| {
            let mut local = vec![Vec::<u32>::new(); j_n];
            for (i, &c) in dc.cells.iter().enumerate() {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ PPC_SALT);
                rng.set_stream(((dc.s as u64 + 1) << 32) | c as u64);
                let p_hat = dc.p * dc.nu[i] / (1.0 - dc.p * (1.0 - dc.nu[i]));
                let odds = p_hat / (1.0 - p_hat);
                let (r, gate) = (dc.r_row(i), dc.gate_row(i));
                for (j, h) in local.iter_mut().enumerate() {
                    let gated = gate.is_some_and(|pi| rng.random::<f64>() < pi[j]);
                    let x = if gated {
                        0
                    } else {
                        nb_count_fast(&mut rng, r[j], odds) as usize
                    };
                    if x >= h.len() {
                        h.resize(x + 1, 0);
                    }
                    h[x] += 1;
                }
            }
            // Integer counts: the order blocks merge in does not matter.
            let mut all = hists.lock().expect("no panics while held");
            for (j, h) in local.into_iter().enumerate() {
                let dst = &mut all[j][dc.s];
                if h.len() > dst.len() {
                    dst.resize(h.len(), 0);
                }
                dst.iter_mut().zip(&h).for_each(|(a, b)| *a += b);
            }
        })?;
        let hists = hists.into_inner().expect("no panics while held");
        let observed = observed_nonzero(data, genes);
        let tail = (1.0 - level) / 2.0;
        let (calibration_failure, l1_distance) = hists
            .par_iter()
            .zip(&observed)
            .map(|(h, obs)| histogram_scores(h, obs, c_n, tail, max_bin))
            .unzip();
        Ok(PpcScores {
            calibration_failure,
            l1_distance,
        })
    }
}

/// The counts of `genes` in cell `c` (zeros included).
fn dense_counts(data: &crate::data::CountMatrix, c: usize, genes: &[usize], u: &mut [u32]) {
    u.iter_mut().for_each(|x| *x = 0);
    let (gi, ci) = data.row(c);
    for (j, &g) in genes.iter().enumerate() {
        if let Ok(p) = gi.binary_search(&(g as u32)) {
            u[j] = ci[p];
        }
    }
}
