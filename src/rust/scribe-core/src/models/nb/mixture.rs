//! NB-family mixtures: each cell's gene vector comes from one of K components,
//! `ln p(u_c) = logsumexp_k [ln w_k + Σ_g ln f_k(u_cg)]`, with `w = softmax([z, 0])`
//! and a symmetric Dirichlet prior on `w`.
//!
//! Per cell and component, the NB part needs only the cell's nonzeros
//! (`Σ_nz lnΓ(u+r_kg) − lnΓ(r_kg)`) plus `L_c ln p̂_kc + R_k ln(1−p̂_kc)`, so
//! nbdm/nbvcp mixtures cost O(nnz·K). zinb mixtures keep that cost with the
//! per-component zero sum `S_k = Σ_g s_kg` (zero term constant over cells);
//! zinbvcp mixtures need the dense C × G × K pass.

use super::init::BaseInit;
use super::kernels::{add_blocks, cell_blocks, CELL_BLOCK};
use super::{nb_cell_loglik, Mixture, NbModel, NbWorkspace, Parameterization, Variant};
use crate::data::Batch;
use crate::math::{digamma_diff, lgamma, lgamma_diff, ln_sigmoid, sigmoid};
use rayon::prelude::*;

/// Per-component quantities of one evaluation.
struct Comp {
    k: usize,
    g: usize,
    lp: Vec<f64>,
    ln_w: Vec<f64>,
    w: Vec<f64>,
    big_r: Vec<f64>,
    /// zinb: per (k, g) zero term and its partials; `zero_sum[k] = Σ_g s_kg`.
    s0: Vec<f64>,
    w0: Vec<f64>,
    ds_dx: Vec<f64>,
    zero_sum: Vec<f64>,
    zero_dlp: Vec<f64>,
}

impl NbModel<'_> {
    /// Fills per-component `r` (K·G), `pi` (K·G), `ell` (K·B), `dtheta` and
    /// returns the per-component scalars.
    fn mixture_derived(
        &self,
        x: &[f64],
        batch: &Batch,
        ws: &mut NbWorkspace,
    ) -> (Comp, Vec<f64>, Vec<f64>) {
        let m = self.spec.mixture.expect("mixture");
        let (k_n, g_n) = (m.k, self.data.n_genes);
        let lay = &self.layout;
        let sb = &lay.blocks[self.b_scalar];
        let gb = &lay.blocks[self.b_gene];
        let (mut lp, mut phi, mut dphi) =
            (vec![0.0; k_n], vec![f64::NAN; k_n], vec![f64::NAN; k_n]);
        for k in 0..k_n {
            let xs = x[sb.offset + if m.scalar { k } else { 0 }];
            match self.spec.param {
                Parameterization::MeanOdds => {
                    let e = sb.link.eval(xs);
                    lp[k] = -e.ln_theta;
                    phi[k] = e.theta;
                    dphi[k] = sb.link.deriv(xs);
                }
                _ => lp[k] = xs,
            }
        }
        for j in 0..gb.len {
            ws.theta[j] = gb.link.forward(x[gb.offset + j]);
            ws.dtheta[j] = gb.link.deriv(x[gb.offset + j]);
        }
        let mut big_r = vec![0.0; k_n];
        for k in 0..k_n {
            let mult = match self.spec.param {
                Parameterization::Canonical => 1.0,
                Parameterization::MeanProb => (-lp[k]).exp(),
                Parameterization::MeanOdds => phi[k],
            };
            let kg = if m.gene { k } else { 0 };
            for g in 0..g_n {
                let r = ws.theta[kg * g_n + g] * mult;
                ws.r[k * g_n + g] = r;
                big_r[k] += r;
            }
        }
        let nb = batch.len();
        let cap_off = self.b_cap.map(|b| lay.blocks[b].offset);
        for (i, &c) in batch.cells.iter().enumerate() {
            let (lnnu, d) = match cap_off {
                Some(off) => self.capture_eval(x[off + c as usize]),
                None => (0.0, 0.0),
            };
            ws.dlnnu[i] = d;
            for k in 0..k_n {
                ws.ell[k * nb + i] = lp[k] + lnnu;
            }
        }
        if let Some(b) = self.b_gate {
            let off = lay.blocks[b].offset;
            for k in 0..k_n {
                let kp = if m.gate { k } else { 0 };
                for g in 0..g_n {
                    ws.pi[k * g_n + g] = sigmoid(x[off + kp * g_n + g]);
                }
            }
        }
        let ln_w = self.ln_mixing_weights(x);
        let w: Vec<f64> = ln_w.iter().map(|v| v.exp()).collect();
        let mut comp = Comp {
            k: k_n,
            g: g_n,
            lp,
            ln_w,
            w,
            big_r,
            s0: Vec::new(),
            w0: Vec::new(),
            ds_dx: Vec::new(),
            zero_sum: vec![0.0; k_n],
            zero_dlp: vec![0.0; k_n],
        };
        if self.spec.variant == Variant::Zinb {
            comp.s0 = vec![0.0; k_n * g_n];
            comp.w0 = vec![0.0; k_n * g_n];
            comp.ds_dx = vec![0.0; k_n * g_n];
            for k in 0..k_n {
                let (l1m, p) = (ln_sigmoid(-comp.lp[k]), sigmoid(comp.lp[k]));
                for g in 0..g_n {
                    let j = k * g_n + g;
                    let (r, pi) = (ws.r[j], ws.pi[j]);
                    let ez = (r * l1m).exp();
                    let es = pi + (1.0 - pi) * ez;
                    comp.s0[j] = es.ln();
                    comp.w0[j] = (1.0 - pi) * ez / es;
                    comp.ds_dx[j] = pi * (1.0 - pi) * (1.0 - ez) / es;
                    comp.zero_sum[k] += comp.s0[j];
                    comp.zero_dlp[k] -= comp.w0[j] * r * p;
                }
            }
        }
        (comp, phi, dphi)
    }

    pub(crate) fn mixture_log_lik_grad(
        &self,
        x: &[f64],
        batch: &Batch,
        grad: &mut [f64],
        ws: &mut NbWorkspace,
    ) -> f64 {
        let m = self.spec.mixture.expect("mixture");
        let (comp, phi, dphi) = self.mixture_derived(x, batch, ws);
        let (k_n, g_n, nb) = (comp.k, comp.g, batch.len());
        let d = self.data;
        // Per block: gr (K·G), gg (K·G), then per component: A_k (Σγ ln(1−p̂)),
        // Γ_k (Σγ) and Σ_c γ_ck (for the mixing weights).
        let stride = 2 * k_n * g_n + 3 * k_n;
        // Per-cell gradients come out cell-major (i·K + k) and are scattered
        // into g_ell's component-major layout (k·B + i) afterwards.
        let mut cell_g = vec![0.0; k_n * nb];
        let (r, pi, ell) = (&ws.r, &ws.pi, &ws.ell);
        let ll = batch.scale
            * cell_blocks(
                nb,
                (stride, k_n),
                &mut ws.blk,
                &mut ws.blk_ll,
                &mut cell_g,
                |bi, buf, cg| {
                    let (gr, rest) = buf.split_at_mut(k_n * g_n);
                    let (gg, scal) = rest.split_at_mut(k_n * g_n);
                    let mut llk = vec![0.0; k_n];
                    let mut acc = 0.0;
                    for (ii, cgi) in cg.chunks_mut(k_n).enumerate() {
                        let i = bi * CELL_BLOCK + ii;
                        let c = batch.cells[i] as usize;
                        self.cell_component_ll(c, i, nb, &comp, (r, pi, ell), &mut llk);
                        let mx = (0..k_n)
                            .map(|k| comp.ln_w[k] + llk[k])
                            .fold(f64::NEG_INFINITY, f64::max);
                        let se: f64 = (0..k_n).map(|k| (comp.ln_w[k] + llk[k] - mx).exp()).sum();
                        acc += mx + se.ln();
                        let (genes, counts) = d.row(c);
                        let lib = d.lib_size[c];
                        for k in 0..k_n {
                            let gam = (comp.ln_w[k] + llk[k] - mx).exp() / se;
                            scal[2 * k_n + k] += gam;
                            if gam < 1e-300 {
                                continue;
                            }
                            let l = ell[k * nb + i];
                            let (l1m, ph, pm) = (ln_sigmoid(-l), sigmoid(l), sigmoid(-l));
                            let rk = &r[k * g_n..(k + 1) * g_n];
                            let gk = &mut gr[k * g_n..(k + 1) * g_n];
                            let ggk = &mut gg[k * g_n..(k + 1) * g_n];
                            let mut g_l = gam * lib * pm;
                            match self.spec.variant {
                                Variant::Nbdm | Variant::Nbvcp => {
                                    scal[k] += gam * l1m;
                                    g_l -= gam * comp.big_r[k] * ph;
                                    for (&g, &u) in genes.iter().zip(counts) {
                                        gk[g as usize] += gam * digamma_diff(u, rk[g as usize]);
                                    }
                                }
                                Variant::Zinb => {
                                    scal[k_n + k] += gam;
                                    for (&g, &u) in genes.iter().zip(counts) {
                                        let g = g as usize;
                                        let j = k * g_n + g;
                                        gk[g] +=
                                            gam * (digamma_diff(u, rk[g]) + l1m - comp.w0[j] * l1m);
                                        ggk[g] += gam * (-pi[j] - comp.ds_dx[j]);
                                        g_l -= gam * rk[g] * ph * (1.0 - comp.w0[j]);
                                    }
                                }
                                Variant::Zinbvcp => {
                                    let pik = &pi[k * g_n..(k + 1) * g_n];
                                    for g in 0..g_n {
                                        let ez = (rk[g] * l1m).exp();
                                        let es = pik[g] + (1.0 - pik[g]) * ez;
                                        let w0 = (1.0 - pik[g]) * ez / es;
                                        gk[g] += gam * w0 * l1m;
                                        ggk[g] += gam * pik[g] * (1.0 - pik[g]) * (1.0 - ez) / es;
                                        g_l -= gam * w0 * rk[g] * ph;
                                    }
                                    for (&g, &u) in genes.iter().zip(counts) {
                                        let g = g as usize;
                                        let ez = (rk[g] * l1m).exp();
                                        let es = pik[g] + (1.0 - pik[g]) * ez;
                                        let w0 = (1.0 - pik[g]) * ez / es;
                                        gk[g] += gam * (digamma_diff(u, rk[g]) + l1m - w0 * l1m);
                                        ggk[g] += gam
                                            * (-pik[g] - pik[g] * (1.0 - pik[g]) * (1.0 - ez) / es);
                                        g_l += gam * (-rk[g] * ph + w0 * rk[g] * ph);
                                    }
                                }
                            }
                            cgi[k] = g_l;
                        }
                    }
                    acc
                },
            );
        let s = batch.scale;
        // Reduce blocks in order.
        ws.g_r[..k_n * g_n].iter_mut().for_each(|v| *v = 0.0);
        ws.g_gate[..k_n * g_n].iter_mut().for_each(|v| *v = 0.0);
        let mut a_k = vec![0.0; k_n];
        let mut gam_k = vec![0.0; k_n];
        let mut resp_k = vec![0.0; k_n];
        add_blocks(
            &ws.blk,
            nb,
            stride,
            &mut [
                &mut ws.g_r[..k_n * g_n],
                &mut ws.g_gate[..k_n * g_n],
                &mut a_k,
                &mut gam_k,
                &mut resp_k,
            ],
        );
        let g_ell = &mut ws.g_ell[..k_n * nb];
        for i in 0..nb {
            for k in 0..k_n {
                g_ell[k * nb + i] = cell_g[i * k_n + k];
            }
        }
        // Terms shared by all genes of a component.
        let mut g_lp = vec![0.0; k_n];
        for k in 0..k_n {
            for g in 0..g_n {
                let j = k * g_n + g;
                match self.spec.variant {
                    Variant::Nbdm | Variant::Nbvcp => ws.g_r[j] += a_k[k],
                    Variant::Zinb => {
                        ws.g_r[j] += gam_k[k] * comp.w0[j] * ln_sigmoid(-comp.lp[k]);
                        ws.g_gate[j] += gam_k[k] * comp.ds_dx[j];
                    }
                    Variant::Zinbvcp => {}
                }
            }
            if self.spec.variant == Variant::Zinb {
                g_lp[k] += gam_k[k] * comp.zero_dlp[k];
            }
            g_lp[k] += (0..nb).map(|i| g_ell[k * nb + i]).sum::<f64>();
            g_lp[k] *= s;
        }
        // Chain rule into x.
        let lay = &self.layout;
        if let Some(b) = self.b_cap {
            let off = lay.blocks[b].offset;
            for (i, &c) in batch.cells.iter().enumerate() {
                let ge: f64 = (0..k_n).map(|k| g_ell[k * nb + i]).sum();
                grad[off + c as usize] += s * ge * ws.dlnnu[i];
            }
        }
        let gb = &lay.blocks[self.b_gene];
        let sb = lay.blocks[self.b_scalar].offset;
        let mut g_scalar = vec![0.0; k_n];
        for k in 0..k_n {
            let kg = if m.gene { k } else { 0 };
            let mut glp = g_lp[k];
            match self.spec.param {
                Parameterization::Canonical => {
                    for g in 0..g_n {
                        grad[gb.offset + kg * g_n + g] +=
                            s * ws.g_r[k * g_n + g] * ws.dtheta[kg * g_n + g];
                    }
                    g_scalar[k] = glp;
                }
                Parameterization::MeanProb => {
                    let mult = (-comp.lp[k]).exp();
                    for g in 0..g_n {
                        let gr = s * ws.g_r[k * g_n + g];
                        grad[gb.offset + kg * g_n + g] += gr * mult * ws.dtheta[kg * g_n + g];
                        glp -= gr * ws.r[k * g_n + g];
                    }
                    g_scalar[k] = glp;
                }
                Parameterization::MeanOdds => {
                    let mut g_phi = -glp / phi[k];
                    for g in 0..g_n {
                        let gr = s * ws.g_r[k * g_n + g];
                        grad[gb.offset + kg * g_n + g] += gr * phi[k] * ws.dtheta[kg * g_n + g];
                        g_phi += gr * ws.theta[kg * g_n + g];
                    }
                    g_scalar[k] = g_phi * dphi[k];
                }
            }
        }
        for k in 0..k_n {
            grad[sb + if m.scalar { k } else { 0 }] += g_scalar[k];
        }
        if let Some(b) = self.b_gate {
            let off = lay.blocks[b].offset;
            for k in 0..k_n {
                let kp = if m.gate { k } else { 0 };
                for g in 0..g_n {
                    grad[off + kp * g_n + g] += s * ws.g_gate[k * g_n + g];
                }
            }
        }
        if let Some(b) = self.b_mix {
            let off = lay.blocks[b].offset;
            let n_tot: f64 = resp_k.iter().sum();
            for j in 0..k_n - 1 {
                grad[off + j] += s * (resp_k[j] - n_tot * comp.w[j]);
            }
        }
        ll
    }

    /// `ln w = ln softmax([z, 0])` of the mixing weights at `x`.
    pub(crate) fn ln_mixing_weights(&self, x: &[f64]) -> Vec<f64> {
        let k_n = self.spec.n_components();
        let mut ln_w = vec![0.0; k_n];
        if let Some(b) = self.b_mix {
            let off = self.layout.blocks[b].offset;
            let mx = (0..k_n - 1).map(|j| x[off + j]).fold(0.0f64, f64::max);
            let lse = mx
                + ((0..k_n - 1).map(|j| (x[off + j] - mx).exp()).sum::<f64>() + (-mx).exp()).ln();
            for j in 0..k_n {
                ln_w[j] = if j < k_n - 1 { x[off + j] } else { 0.0 } - lse;
            }
        }
        ln_w
    }

    /// `ln f_k(u_c)` for every component of one cell (batch index `i`), given
    /// the per-component `(r, π, logit p̂)` buffers.
    fn cell_component_ll(
        &self,
        c: usize,
        i: usize,
        nb: usize,
        comp: &Comp,
        (r, pi, ell): (&[f64], &[f64], &[f64]),
        out: &mut [f64],
    ) {
        let g_n = comp.g;
        let gated = self.spec.variant.has_gate();
        for (k, o) in out.iter_mut().enumerate().take(comp.k) {
            let rows = k * g_n..(k + 1) * g_n;
            let zinb_zero = (self.spec.variant == Variant::Zinb)
                .then(|| (&comp.s0[rows.clone()], comp.zero_sum[k]));
            *o = nb_cell_loglik(
                self.data,
                c,
                &r[rows.clone()],
                comp.big_r[k],
                gated.then(|| &pi[rows.clone()]),
                ell[k * nb + i],
                zinb_zero,
            );
        }
    }

    /// Dirichlet(α·1) on `w = softmax([z, 0])` in the K − 1 free coordinates:
    /// the softmax Jacobian is `Π_k w_k`, so `ln p(z) = Σ_k α ln w_k − ln B(α·1)`.
    pub(crate) fn dirichlet_prior_grad(&self, z: &[f64], m: Mixture, grad: &mut [f64]) -> f64 {
        let k_n = m.k;
        let a = m.concentration;
        let mx = z.iter().copied().fold(0.0f64, f64::max);
        let lse = mx + (z.iter().map(|v| (v - mx).exp()).sum::<f64>() + (-mx).exp()).ln();
        let mut lp = lgamma(k_n as f64 * a) - k_n as f64 * lgamma(a);
        for j in 0..k_n {
            let lw = if j < k_n - 1 { z[j] } else { 0.0 } - lse;
            lp += a * lw;
            if j < k_n - 1 {
                grad[j] += a - k_n as f64 * a * lw.exp();
            }
        }
        lp
    }

    /// Starting point of a mixture: split cells by their score on the first
    /// principal component of log-normalised expression into K quantile groups,
    /// then refine by a few rounds of hard EM (per-group conditional NB MLE of
    /// `r`, then reassignment of each cell to its most likely component).
    pub(crate) fn mixture_initial_point(&self, base: &BaseInit) -> Vec<f64> {
        let m = self.spec.mixture.expect("mixture");
        let d = self.data;
        let (k_n, c_n) = (m.k, d.n_cells);
        let scores = first_pc_scores(d);
        let mut order: Vec<usize> = (0..c_n).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        let mut assign = vec![0usize; c_n];
        for (rank, &c) in order.iter().enumerate() {
            assign[c] = (rank * k_n / c_n).min(k_n - 1);
        }
        let mut r_k: Vec<Vec<f64>> = vec![base.r.clone(); k_n];
        let l1m: Vec<f64> = base.ell.iter().map(|&l| ln_sigmoid(-l)).collect();
        let lph: Vec<f64> = base.ell.iter().map(|&l| ln_sigmoid(l)).collect();
        let mut batch = Batch::full(d);
        for _round in 0..6 {
            if m.gene {
                for (k, rk) in r_k.iter_mut().enumerate() {
                    let cells: Vec<u32> = (0..c_n)
                        .filter(|&c| assign[c] == k)
                        .map(|c| c as u32)
                        .collect();
                    if cells.len() < 2 {
                        continue;
                    }
                    batch.set_cells(d, &cells);
                    let s1: f64 = cells.iter().map(|&c| l1m[c as usize]).sum();
                    self.solve_r(&batch.pair_weight, s1, rk);
                }
            }
            let big_r: Vec<f64> = r_k.iter().map(|r| r.iter().sum()).collect();
            let new: Vec<usize> = (0..c_n)
                .into_par_iter()
                .map(|c| {
                    let (genes, counts) = d.row(c);
                    let mut best = (0, f64::NEG_INFINITY);
                    for (k, rk) in r_k.iter().enumerate() {
                        let mut ll = d.lib_size[c] * lph[c] + big_r[k] * l1m[c];
                        for (&g, &u) in genes.iter().zip(counts) {
                            ll += lgamma_diff(u, rk[g as usize]);
                        }
                        if ll > best.1 {
                            best = (k, ll);
                        }
                    }
                    best.0
                })
                .collect();
            if new == assign || !m.gene {
                break;
            }
            assign = new;
        }
        let mut w = vec![0.0; k_n];
        for &a in &assign {
            w[a] += 1.0;
        }
        w.iter_mut()
            .for_each(|v| *v = (*v + 1.0) / (c_n as f64 + k_n as f64));
        // Without component-specific genes, break symmetry through the scalar.
        let lp: Vec<f64> = (0..k_n)
            .map(|k| {
                if m.gene {
                    base.lp
                } else {
                    base.lp + 0.2 * (k as f64 - (k_n as f64 - 1.0) / 2.0)
                }
            })
            .collect();
        self.materialize(base, &r_k, &lp, &w)
    }
}

/// Cell scores on the first principal component of `ln(1 + 10⁴ u / L)`,
/// by power iteration on the centred sparse matrix (never densified).
fn first_pc_scores(d: &crate::data::CountMatrix) -> Vec<f64> {
    let (g_n, c_n) = (d.n_genes, d.n_cells);
    let val: Vec<f64> = (0..c_n)
        .flat_map(|c| {
            let (_, counts) = d.row(c);
            let l = d.lib_size[c].max(1.0);
            counts
                .iter()
                .map(move |&u| (1e4 * u as f64 / l).ln_1p())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut mean = vec![0.0; g_n];
    for (k, &g) in d.gene_idx.iter().enumerate() {
        mean[g as usize] += val[k] / c_n as f64;
    }
    let mut v: Vec<f64> = (0..g_n)
        .map(|g| 1.0 + 0.01 * ((g * 7919) % 101) as f64)
        .collect();
    let mut y = vec![0.0; c_n];
    for _ in 0..30 {
        let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= nv);
        let mv: f64 = mean.iter().zip(&v).map(|(a, b)| a * b).sum();
        for c in 0..c_n {
            let (lo, hi) = (d.cell_ptr[c], d.cell_ptr[c + 1]);
            y[c] = (lo..hi)
                .map(|k| val[k] * v[d.gene_idx[k] as usize])
                .sum::<f64>()
                - mv;
        }
        let sy: f64 = y.iter().sum();
        let mut nvv = vec![0.0; g_n];
        for c in 0..c_n {
            for k in d.cell_ptr[c]..d.cell_ptr[c + 1] {
                nvv[d.gene_idx[k] as usize] += y[c] * val[k];
            }
        }
        for g in 0..g_n {
            nvv[g] -= mean[g] * sy;
        }
        v = nvv;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CountMatrix;
    use crate::dist::Link;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::NbSpec;
    use crate::models::{log_joint_grad, Model};
    use crate::testutil::check_gradient;
    use rand::{RngExt, SeedableRng};

    fn specs() -> Vec<NbSpec> {
        let mut out = Vec::new();
        for variant in Variant::ALL {
            for param in Parameterization::ALL {
                let gp = param.gene_param();
                let sp = param.scalar_param();
                let mut sets: Vec<Vec<&str>> = vec![vec![gp], vec![sp], vec![gp, sp]];
                if variant.has_gate() {
                    sets.push(vec![gp, sp, "gate"]);
                    sets.push(vec!["gate"]);
                }
                for set in sets {
                    let mut s = NbSpec::new(
                        variant,
                        param,
                        param == Parameterization::MeanOdds,
                        Link::Softplus,
                    );
                    s.set_mixture(3, &set, 1.5).unwrap();
                    // Hierarchies across components (mean) and on the gate.
                    if set.contains(&gp) && set.len() == 1 {
                        let mut h = s.clone();
                        h.add_hierarchy(gp, super::super::Shrinkage::Gaussian)
                            .unwrap();
                        if variant.has_gate() {
                            let fam = if param == Parameterization::MeanOdds {
                                super::super::Shrinkage::Neg
                            } else {
                                super::super::Shrinkage::Horseshoe
                            };
                            h.add_hierarchy("gate", fam).unwrap();
                        }
                        out.push(h);
                    }
                    out.push(s);
                }
            }
        }
        out
    }

    fn data(variant: Variant, seed: u64) -> CountMatrix {
        simulate_nb(&NbTruth::random(variant, 17, 14, seed), seed + 1)
    }

    fn jittered(model: &NbModel, seed: u64) -> Vec<f64> {
        let mut x = model.initial_point();
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
        x.iter_mut().for_each(|v| *v += rng.random_range(-0.4..0.4));
        x
    }

    #[test]
    fn mixture_likelihood_matches_dense_logsumexp() {
        for (t, spec) in specs().into_iter().enumerate() {
            let d = data(spec.variant, 30 + t as u64);
            let model = NbModel::new(spec.clone(), &d).unwrap();
            let x = jittered(&model, t as u64);
            let mut b = Batch::full(&d);
            b.set_cells(&d, &[0, 3, 4, 9, 13]);
            let mut ws = model.workspace();
            let mut g = vec![0.0; x.len()];
            let ll = model.log_lik_grad(&x, &b, &mut g, &mut ws);
            let (comp, _, _) = model.mixture_derived(&x, &b, &mut ws);
            let dense = d.to_dense();
            let nb = b.len();
            let mut want = 0.0;
            for (i, &c) in b.cells.iter().enumerate() {
                let mut terms = Vec::new();
                for k in 0..comp.k {
                    let ph = sigmoid(ws.ell[k * nb + i]);
                    let mut s = comp.ln_w[k];
                    for gg in 0..d.n_genes {
                        let u = dense[c as usize * d.n_genes + gg];
                        let r = ws.r[k * d.n_genes + gg];
                        let lnb = lgamma(u + r) - lgamma(r) - lgamma(u + 1.0)
                            + u * ph.ln()
                            + r * (1.0 - ph).ln();
                        s += if spec.variant.has_gate() {
                            let pi = ws.pi[k * d.n_genes + gg];
                            if u == 0.0 {
                                (pi + (1.0 - pi) * lnb.exp()).ln()
                            } else {
                                (1.0 - pi).ln() + lnb
                            }
                        } else {
                            lnb
                        };
                    }
                    terms.push(s);
                }
                let mx = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                want += mx + terms.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            }
            want *= b.scale;
            assert!(
                (ll - want).abs() < 1e-8 * want.abs(),
                "{spec:?}: {ll} vs {want}"
            );
        }
    }

    #[test]
    fn mixture_gradients_match_finite_differences() {
        for (t, spec) in specs().into_iter().enumerate() {
            let d = data(spec.variant, 60 + t as u64);
            let model = NbModel::new(spec.clone(), &d).unwrap();
            let x = jittered(&model, 100 + t as u64);
            let mut b = Batch::full(&d);
            b.set_cells(&d, &[1, 2, 5, 8, 11, 12]);
            let mut ws = model.workspace();
            // A first evaluation leaves the workspace as a fit's steps do.
            log_joint_grad(&model, &x, &b, &mut vec![0.0; x.len()], &mut ws);
            check_gradient(
                |x, g| log_joint_grad(&model, x, &b, g, &mut ws),
                &x,
                1e-5,
                &format!("{spec:?}"),
            );
        }
    }

    #[test]
    fn dirichlet_prior_is_normalised_in_alr_coordinates() {
        // K = 2: ∫ ln-density over z must integrate to one.
        let d = data(Variant::Nbdm, 1);
        let mut spec = NbSpec::new(Variant::Nbdm, Parameterization::Canonical, false, Link::Exp);
        spec.set_mixture(2, &["r"], 2.5).unwrap();
        let model = NbModel::new(spec, &d).unwrap();
        let m = model.spec.mixture.unwrap();
        let (lo, hi, n) = (-40.0, 40.0, 200_000);
        let h = (hi - lo) / n as f64;
        let mut s = 0.0;
        let mut g = [0.0];
        for k in 0..=n {
            let z = lo + k as f64 * h;
            s += model.dirichlet_prior_grad(&[z], m, &mut g).exp()
                * if k == 0 || k == n { 0.5 } else { 1.0 };
        }
        assert!((s * h - 1.0).abs() < 1e-6, "{}", s * h);
    }
}
