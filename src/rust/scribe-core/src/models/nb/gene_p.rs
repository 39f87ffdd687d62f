//! Gene-specific `p` (`priors = list(probability = "gaussian")`): every gene
//! has its own success probability `p_g` (or odds `φ_g` under mean_odds), so
//! the variance-to-mean ratio varies by gene, with a hierarchical prior
//! `x_g ~ N(loc, softplus(s))` on the unconstrained coordinate `x_g` of
//! `p_g` that lets the data decide how much genes differ.
//!
//! With capture, `logit p̂_cg = logit p_g + ln ν_c` differs in every (cell,
//! gene), so the zero terms `r_g ln(1 − p̂_cg)` no longer sum to one term per
//! cell: capture models need one dense pass over the batch's cells × genes
//! per step (as zinbvcp does anyway). Without capture every cell shares
//! `p̂_g = p_g` and the likelihood stays a per-gene sum over count
//! histograms plus the gene's batch total: O(#pairs + G).

use super::kernels::{add_blocks, cell_blocks, CELL_BLOCK};
use super::{DatasetP, NbModel, NbWorkspace, Parameterization};
use crate::data::Batch;
use crate::math::{ln_sigmoid, sigmoid, softplus};

/// `(softplus(l), sigmoid(l))` from one `exp` (the dense pass evaluates
/// both for every cell and gene): `ln(1−p̂) = −softplus(ℓ)`,
/// `ln p̂ = ℓ − softplus(ℓ)`.
#[inline]
fn softplus_sigmoid(l: f64) -> (f64, f64) {
    let e = (-l.abs()).exp();
    let sp = l.max(0.0) + e.ln_1p();
    let sg = if l >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (sp, sg)
}

/// Where one dataset's parameters start: the offset of its row in the gene
/// block and the index of its `p` in the scalar block (plus whether that
/// holds one value per gene). Without datasets there is one row 0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows {
    gene: usize,
    scalar: usize,
    scalar_per_gene: bool,
    gate: usize,
}

/// One gene's parameters as the likelihood reads them: `ℓ = logit p`, `r`,
/// and what the chain rule back to the sampled coordinates needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GeneParams {
    pub(crate) lp: f64,
    pub(crate) r: f64,
    pub(crate) theta: f64,
    pub(crate) dtheta: f64,
    /// mean_odds: `dφ/dx` of the scalar coordinate.
    pub(crate) dphi: f64,
}

impl NbModel<'_> {
    /// A gene's `ℓ = logit p` and `r` from its scalar coordinate `xs` and its
    /// gene parameter `θ = T(x_gene)` (with `dθ/dx = dtheta`), by the
    /// parameterization: `r = θ` (canonical), `r = μ e^{−ℓ}` (mean_prob),
    /// `r = μ φ` with `ℓ = −ln φ` (mean_odds).
    pub(crate) fn gene_params(&self, xs: f64, theta: f64, dtheta: f64) -> GeneParams {
        let sb = &self.layout.blocks[self.b_scalar];
        let (lp, mult, dphi) = match self.spec.param {
            Parameterization::Canonical => (xs, 1.0, f64::NAN),
            Parameterization::MeanProb => (xs, (-xs).exp(), f64::NAN),
            Parameterization::MeanOdds => {
                let e = sb.link.eval(xs);
                (-e.ln_theta, e.theta, sb.link.deriv(xs))
            }
        };
        GeneParams {
            lp,
            r: theta * mult,
            theta,
            dtheta,
            dphi,
        }
    }

    /// The chain rule of [`Self::gene_params`]: from `∂/∂r` (`gr`) and
    /// `∂/∂ℓ` (`gl`) to the gene and scalar coordinates.
    pub(crate) fn gene_params_grad(&self, q: &GeneParams, gr: f64, gl: f64) -> (f64, f64) {
        match self.spec.param {
            Parameterization::Canonical => (gr * q.dtheta, gl),
            Parameterization::MeanProb => (gr * (-q.lp).exp() * q.dtheta, gl - gr * q.r),
            Parameterization::MeanOdds => {
                let phi = (-q.lp).exp();
                (gr * phi * q.dtheta, (-gl / phi + gr * q.theta) * q.dphi)
            }
        }
    }

    /// Whether the likelihood goes gene by gene (gene-specific `p`, BNB, or
    /// datasets).
    pub(crate) fn genewise(&self) -> bool {
        self.spec.gene_specific_p() || self.spec.bnb || self.spec.datasets.is_some()
    }

    /// The rows of dataset `d` (0 without datasets).
    pub(crate) fn rows(&self, d: usize) -> Rows {
        let g_n = self.data.n_genes;
        let gene_p = self.spec.gene_specific_p();
        match &self.spec.datasets {
            None => Rows {
                gene: 0,
                scalar: 0,
                scalar_per_gene: gene_p,
                gate: 0,
            },
            Some(ds) => Rows {
                gene: ds.gene_row(d, g_n),
                scalar: match ds.p {
                    DatasetP::Shared => 0,
                    DatasetP::Scalar => d,
                    DatasetP::GeneSpecific => d * g_n,
                },
                scalar_per_gene: gene_p,
                gate: if ds.gate { d * g_n } else { 0 },
            },
        }
    }

    /// Fills `theta`, `dtheta`, `r`, `lpg` (logit `p_g`, the same for every
    /// gene when `p` is shared), `dphig` (mean_odds: `dφ_g/dx_g`), `pi`,
    /// `omega` (BNB), and per batch cell `ell = ln ν_c` with `dlnnu`, for
    /// the parameter rows `rows`.
    pub(crate) fn fill_gene_p(&self, x: &[f64], batch: &Batch, rows: Rows, ws: &mut NbWorkspace) {
        let lay = &self.layout;
        let g_n = self.data.n_genes;
        let gb = lay.blocks[self.b_gene].offset + rows.gene;
        let sb = &lay.blocks[self.b_scalar];
        if let Some(b) = self.b_bnb {
            let off = lay.blocks[b].offset;
            for g in 0..g_n {
                let v = x[off + g];
                ws.omega[g] = softplus(v).max(1e-6);
                ws.domega[g] = if softplus(v) > 1e-6 { sigmoid(v) } else { 0.0 };
            }
        }
        let gene_link = lay.blocks[self.b_gene].link;
        for g in 0..g_n {
            let xs = x[sb.offset + rows.scalar + if rows.scalar_per_gene { g } else { 0 }];
            let (t, dt) = gene_link.forward_deriv(x[gb + g]);
            let q = self.gene_params(xs, t, dt);
            (ws.theta[g], ws.dtheta[g], ws.dphig[g]) = (t, dt, q.dphi);
            (ws.lpg[g], ws.r[g]) = (q.lp, q.r);
        }
        let cap_off = self.b_cap.map(|b| lay.blocks[b].offset);
        for (k, &c) in batch.cells.iter().enumerate() {
            (ws.ell[k], ws.dlnnu[k]) = match cap_off {
                Some(off) => self.capture_eval(x[off + c as usize]),
                None => (0.0, 0.0),
            };
        }
        if let Some(b) = self.b_gate {
            let off = lay.blocks[b].offset + rows.gate;
            for g in 0..g_n {
                ws.pi[g] = sigmoid(x[off + g]);
            }
        }
    }

    /// `scale · ln p(u_batch | x)` with gene-specific `p`, BNB or datasets;
    /// adds the gradient. With datasets, the batch splits into one
    /// sub-batch per dataset, each read against its own rows (the per-gene
    /// sufficient statistics are then per dataset and gene).
    pub(crate) fn gene_p_log_lik_grad(
        &self,
        x: &[f64],
        batch: &Batch,
        grad: &mut [f64],
        ws: &mut NbWorkspace,
    ) -> f64 {
        let Some(ds) = &self.spec.datasets else {
            return self.genewise_rows(x, batch, self.rows(0), grad, ws);
        };
        let mut subs = std::mem::take(&mut ws.sub_batches);
        // A full batch splits the same way every step; keep its split.
        let cached = batch.is_full && subs.len() == ds.n && subs.iter().all(|b| b.is_full);
        if !cached {
            if subs.len() != ds.n {
                subs = (0..ds.n).map(|_| Batch::full(self.data)).collect();
            }
            let mut split: Vec<Vec<u32>> = vec![Vec::new(); ds.n];
            for &c in &batch.cells {
                split[ds.cell[c as usize] as usize].push(c);
            }
            for (sub, cells) in subs.iter_mut().zip(&split) {
                sub.set_cells(self.data, cells);
                // `is_full` marks "the split of a full batch" here.
                sub.is_full = batch.is_full;
            }
        }
        let mut ll = 0.0;
        for (d, sub) in subs.iter_mut().enumerate() {
            if sub.is_empty() {
                continue;
            }
            sub.scale = batch.scale;
            ll += self.genewise_rows(x, sub, self.rows(d), grad, ws);
        }
        ws.sub_batches = subs;
        ll
    }

    /// [`Self::gene_p_log_lik_grad`] for the cells of `batch`, all read
    /// against the parameter rows `rows`.
    fn genewise_rows(
        &self,
        x: &[f64],
        batch: &Batch,
        rows: Rows,
        grad: &mut [f64],
        ws: &mut NbWorkspace,
    ) -> f64 {
        self.fill_gene_p(x, batch, rows, ws);
        let g_n = self.data.n_genes;
        self.pair_terms(batch, &ws.r, &mut ws.gene_ll, &mut ws.g_r);
        ws.g_gate[..g_n].iter_mut().for_each(|v| *v = 0.0);
        ws.g_lpg[..g_n].iter_mut().for_each(|v| *v = 0.0);
        let mut ll: f64 = ws.gene_ll.iter().sum();
        ll -= batch
            .cells
            .iter()
            .map(|&c| self.data.ln_fact[c as usize])
            .sum::<f64>();
        ll += match (self.spec.bnb, self.b_cap.is_some()) {
            (false, true) => self.gene_p_dense(batch, ws),
            (false, false) => self.gene_p_shared_cells(batch, ws),
            (true, true) => self.bnb_dense(batch, ws),
            (true, false) => self.bnb_shared_cells(batch, ws),
        };
        let s = batch.scale;
        let lay = &self.layout;
        if let Some(b) = self.b_cap {
            let off = lay.blocks[b].offset;
            for (k, &c) in batch.cells.iter().enumerate() {
                grad[off + c as usize] += s * ws.g_ell[k] * ws.dlnnu[k];
            }
        }
        let gb = lay.blocks[self.b_gene].offset + rows.gene;
        let sb = lay.blocks[self.b_scalar].offset + rows.scalar;
        // A shared p collects every gene's share in its one coordinate.
        for g in 0..g_n {
            let (gr, gl) = (s * ws.g_r[g], s * ws.g_lpg[g]);
            let ip = sb + if rows.scalar_per_gene { g } else { 0 };
            let q = GeneParams {
                lp: ws.lpg[g],
                r: ws.r[g],
                theta: ws.theta[g],
                dtheta: ws.dtheta[g],
                dphi: ws.dphig[g],
            };
            let (d_gene, d_scalar) = self.gene_params_grad(&q, gr, gl);
            grad[gb + g] += d_gene;
            grad[ip] += d_scalar;
        }
        if let Some(b) = self.b_bnb {
            let off = lay.blocks[b].offset;
            for g in 0..g_n {
                grad[off + g] += s * ws.g_omega[g] * ws.domega[g];
            }
        }
        if let Some(b) = self.b_gate {
            let off = lay.blocks[b].offset + rows.gate;
            for g in 0..g_n {
                grad[off + g] += s * ws.g_gate[g];
            }
        }
        ll * s
    }

    /// nbdm / zinb: cells share `p̂_g = p_g`, so each gene needs only its batch
    /// total, its detected-cell count and the closed-form zero term.
    fn gene_p_shared_cells(&self, batch: &Batch, ws: &mut NbWorkspace) -> f64 {
        let d = self.data;
        let n_b = batch.len() as f64;
        let mut ll = 0.0;
        for g in 0..d.n_genes {
            let pairs = d.gene_pair_ptr[g]..d.gene_pair_ptr[g + 1];
            let total: f64 = d.pair_count[pairs.clone()]
                .iter()
                .zip(&batch.pair_weight[pairs])
                .map(|(&x, &w)| x as f64 * w)
                .sum();
            let (l, r) = (ws.lpg[g], ws.r[g]);
            let (l1m, ph, qh) = (ln_sigmoid(-l), sigmoid(l), sigmoid(-l));
            let z = r * l1m;
            ll += total * ln_sigmoid(l);
            let mut g_l = total * qh;
            match self.b_gate {
                None => {
                    ll += n_b * z;
                    ws.g_r[g] += n_b * l1m;
                    g_l -= n_b * r * ph;
                }
                Some(_) => {
                    let pi = ws.pi[g];
                    let nnz = batch.gene_nnz[g];
                    let n0 = n_b - nnz;
                    let ez = z.exp();
                    let es = pi + (1.0 - pi) * ez;
                    let w0 = (1.0 - pi) * ez / es;
                    ll += nnz * ((-pi).ln_1p() + z) + n0 * es.ln();
                    ws.g_r[g] += (nnz + n0 * w0) * l1m;
                    ws.g_gate[g] = -nnz * pi + n0 * pi * (1.0 - pi) * (1.0 - ez) / es;
                    g_l -= (nnz + n0 * w0) * r * ph;
                }
            }
            ws.g_lpg[g] = g_l;
        }
        ll
    }

    /// nbvcp / zinbvcp: the zero term of every (cell, gene), then the swap to
    /// the nonzero term where the count is positive. Cell blocks of fixed size
    /// reduce in block order, so results do not depend on the thread count.
    fn gene_p_dense(&self, batch: &Batch, ws: &mut NbWorkspace) -> f64 {
        let d = self.data;
        let g_n = d.n_genes;
        let gated = self.b_gate.is_some();
        // p̂_cg/(1−p̂_cg) = (p_g/(1−p_g))·ν_c: the odds factorise, so one
        // product per (cell, gene) replaces an `exp` (bounded so that the
        // odds stay finite; logits beyond ±700 are not reachable by a fit).
        for (o, &l) in ws.odds_g.iter_mut().zip(&ws.lpg) {
            *o = l.clamp(-700.0, 700.0).exp();
        }
        let (r, pi, lpg, lnnu, odds_g) = (&ws.r, &ws.pi, &ws.lpg, &ws.ell, &ws.odds_g);
        let nb = batch.len();
        let ll = cell_blocks(
            nb,
            (3 * g_n, 1),
            &mut ws.blk,
            &mut ws.blk_ll,
            &mut ws.g_ell,
            |bi, buf, gell| {
                let (gr, rest) = buf.split_at_mut(g_n);
                let (gg, gl) = rest.split_at_mut(g_n);
                let mut acc = 0.0;
                let n_in = gell.len();
                let mut nu = [0.0; CELL_BLOCK];
                for (kk, v) in nu[..n_in].iter_mut().enumerate() {
                    *v = lnnu[bi * CELL_BLOCK + kk].exp();
                }
                let nu = &nu[..n_in];
                if !gated {
                    // Zero terms gene by gene: Σ_c ln(1 + t_cg) is the log of a
                    // product over 8 cells at a time (one `ln` per 8 cells).
                    for g in 0..g_n {
                        let (a, rg) = (odds_g[g], r[g]);
                        let (mut s_ln, mut s_sg) = (0.0, 0.0);
                        for (nus, gcs) in nu.chunks(8).zip(gell.chunks_mut(8)) {
                            if a <= 1e30 {
                                let mut prod = 1.0;
                                for (&v, gc) in nus.iter().zip(gcs.iter_mut()) {
                                    let t = a * v;
                                    let q = 1.0 + t;
                                    prod *= q;
                                    let sg = t / q;
                                    s_sg += sg;
                                    *gc -= rg * sg;
                                }
                                s_ln += prod.ln();
                            } else {
                                for (&v, gc) in nus.iter().zip(gcs.iter_mut()) {
                                    let t = a * v;
                                    let sg = t / (1.0 + t);
                                    s_ln += t.ln_1p();
                                    s_sg += sg;
                                    *gc -= rg * sg;
                                }
                            }
                        }
                        acc -= rg * s_ln;
                        gr[g] -= s_ln;
                        gl[g] -= rg * s_sg;
                    }
                }
                for (kk, ge) in gell.iter_mut().enumerate() {
                    let k = bi * CELL_BLOCK + kk;
                    let c = batch.cells[k] as usize;
                    let ln_nu = lnnu[k];
                    let mut gc = 0.0;
                    if gated {
                        for g in 0..g_n {
                            let t = odds_g[g] * nu[kk];
                            let (l1m, sg) = (-t.ln_1p(), t / (1.0 + t));
                            let z = r[g] * l1m;
                            let ez = z.exp();
                            let es = pi[g] + (1.0 - pi[g]) * ez;
                            let w0 = (1.0 - pi[g]) * ez / es;
                            acc += es.ln();
                            gr[g] += w0 * l1m;
                            gg[g] += pi[g] * (1.0 - pi[g]) * (1.0 - ez) / es;
                            let dl = -w0 * r[g] * sg;
                            gl[g] += dl;
                            gc += dl;
                        }
                    }
                    let (genes, counts) = d.row(c);
                    for (&g, &u) in genes.iter().zip(counts) {
                        let g = g as usize;
                        let u = u as f64;
                        let l = lpg[g] + ln_nu;
                        let t = odds_g[g] * nu[kk];
                        let (sp, sg) = if t.is_finite() {
                            (t.ln_1p(), t / (1.0 + t))
                        } else {
                            softplus_sigmoid(l)
                        };
                        let mut dl = u * (1.0 - sg);
                        acc += u * (l - sp);
                        if gated {
                            let l1m = -sp;
                            let z = r[g] * l1m;
                            let ez = z.exp();
                            let es = pi[g] + (1.0 - pi[g]) * ez;
                            let w0 = (1.0 - pi[g]) * ez / es;
                            acc += (-pi[g]).ln_1p() + z - es.ln();
                            gr[g] += l1m - w0 * l1m;
                            gg[g] += -pi[g] - pi[g] * (1.0 - pi[g]) * (1.0 - ez) / es;
                            dl += (w0 - 1.0) * r[g] * sg;
                        }
                        gl[g] += dl;
                        gc += dl;
                    }
                    *ge += gc;
                }
                acc
            },
        );
        add_blocks(
            &ws.blk,
            nb,
            3 * g_n,
            &mut [
                &mut ws.g_r[..g_n],
                &mut ws.g_gate[..g_n],
                &mut ws.g_lpg[..g_n],
            ],
        );
        ll
    }
}

#[cfg(test)]
mod tests {
    use super::softplus_sigmoid;
    use crate::math::{sigmoid, softplus};

    #[test]
    fn one_exp_softplus_and_sigmoid_agree_with_the_separate_functions() {
        for l in [
            -800.0, -40.0, -3.0, -1e-9, 0.0, 1e-9, 0.7, 25.0, 40.0, 800.0,
        ] {
            let (sp, sg) = softplus_sigmoid(l);
            assert!(
                (sp - softplus(l)).abs() <= 1e-15 * softplus(l).max(1e-300),
                "{l}"
            );
            assert!(
                (sg - sigmoid(l)).abs() <= 1e-15 * sigmoid(l).max(1e-300),
                "{l}"
            );
        }
    }
}
