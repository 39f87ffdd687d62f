//! The NB-family likelihood bound to a data set ([`NbModel`]) and its kernels.
//!
//! Capture thins `p` to `p̂_c = p ν_c / (1 − p (1 − ν_c))`, i.e.
//! `logit p̂_c = logit p + ln ν_c`; every kernel works with `ℓ_c = logit p̂_c`
//! so `ln p̂ = −softplus(−ℓ)` and `ln(1−p̂) = −softplus(ℓ)` stay exact in the tails
//! (no clipping of `p̂` is needed in float64).
//!
//! The log-likelihood of the NB part splits as
//! `Σ_g Σ_x n_g(x)[lnΓ(x+r_g) − lnΓ(r_g)] + Σ_c [L_c ln p̂_c + R ln(1−p̂_c) − Σ_g ln u_cg!]`
//! with `R = Σ_g r_g`, so nbdm/nbvcp cost O(#pairs + C + G). Zero inflation
//! replaces each zero's `r_g ln(1−p̂_c)` by `ln(π_g + (1−π_g)(1−p̂_c)^{r_g})`:
//! constant over cells for zinb (closed form per gene), but different in every
//! (cell, gene) for zinbvcp, which therefore needs one pass over the C × G
//! zero structure per step.

use super::{Capture, NbBlocks, NbSpec, Parameterization, Variant};
use crate::data::{Batch, CountMatrix};
use crate::dist::Prior;
use crate::error::{CoreError, Result};
use crate::math::{lgamma_diff, lgamma_digamma_pair_sums, ln_sigmoid, sigmoid, softplus};
use crate::models::{Layout, Model};
use rayon::prelude::*;

/// An NB-family model bound to a data set.
pub struct NbModel<'a> {
    pub spec: NbSpec,
    pub data: &'a CountMatrix,
    pub(crate) layout: Layout,
    pub(crate) b_gene: usize,
    pub(crate) b_scalar: usize,
    pub(crate) b_cap: Option<usize>,
    pub(crate) b_gate: Option<usize>,
    pub(crate) b_mix: Option<usize>,
    pub(crate) b_bnb: Option<usize>,
    /// Blocks of the gene-level hierarchies.
    pub(crate) hier: Vec<super::HierBlocks>,
    pub(crate) capture: Capture,
    /// Per-cell TruncNormal location `ln M0 − ln max(L_c, 1)` under the capture prior.
    pub(crate) eta_loc: Vec<f64>,
    /// The prior of every block (looked up once, not per coordinate and step).
    pub(crate) block_prior: Vec<Prior>,
}

/// Scratch buffers of [`NbModel::log_lik_grad`].
pub struct NbWorkspace {
    pub(crate) theta: Vec<f64>,
    pub(crate) dtheta: Vec<f64>,
    pub(crate) r: Vec<f64>,
    pub(crate) ell: Vec<f64>,
    pub(crate) dlnnu: Vec<f64>,
    pub(crate) pi: Vec<f64>,
    pub(crate) g_r: Vec<f64>,
    pub(crate) g_gate: Vec<f64>,
    pub(crate) g_ell: Vec<f64>,
    pub(crate) gene_ll: Vec<f64>,
    /// Gene-specific `p`: logit `p_g`, `dφ_g/dx_g` (mean_odds), and the
    /// gradient with respect to logit `p_g`.
    pub(crate) lpg: Vec<f64>,
    /// `p_g/(1−p_g)`.
    pub(crate) odds_g: Vec<f64>,
    pub(crate) dphig: Vec<f64>,
    pub(crate) g_lpg: Vec<f64>,
    /// BNB: `ω_g`, `dω_g/dx_g` and the gradient with respect to `ω_g`.
    pub(crate) omega: Vec<f64>,
    pub(crate) domega: Vec<f64>,
    pub(crate) g_omega: Vec<f64>,
    /// Per cell-block partial gene gradients (zinbvcp, mixtures), reduced in block order.
    pub(crate) blk: Vec<f64>,
    pub(crate) blk_ll: Vec<f64>,
    /// One sub-batch per dataset (dataset hierarchies).
    pub(crate) sub_batches: Vec<crate::data::Batch>,
}

/// Cells per block in the zinbvcp kernel. Fixed (not derived from the thread
/// count) so that sums are grouped identically however many threads run.
pub(crate) const CELL_BLOCK: usize = 64;

/// A dense pass over a batch in fixed-size cell blocks, evaluated in
/// parallel: block `bi` covers batch positions `bi·CELL_BLOCK..`, and
/// `body(bi, buf, cell)` gets its zeroed `width` partial sums (in `blk`) and
/// its zeroed `cell_width` outputs per cell (in `cell`), and returns its
/// log-likelihood. Returns the blocks' total, summed in block order.
pub(crate) fn cell_blocks<F>(
    n_cells: usize,
    (width, cell_width): (usize, usize),
    blk: &mut [f64],
    blk_ll: &mut [f64],
    cell: &mut [f64],
    body: F,
) -> f64
where
    F: Fn(usize, &mut [f64], &mut [f64]) -> f64 + Sync + Send,
{
    let n_blocks = n_cells.div_ceil(CELL_BLOCK);
    let blk = &mut blk[..n_blocks * width];
    let blk_ll = &mut blk_ll[..n_blocks];
    let cell = &mut cell[..n_cells * cell_width];
    blk.par_chunks_mut(width.max(1))
        .zip(blk_ll.par_iter_mut())
        .zip(cell.par_chunks_mut(CELL_BLOCK * cell_width.max(1)))
        .enumerate()
        .for_each(|(bi, ((buf, bll), out))| {
            buf.iter_mut().for_each(|v| *v = 0.0);
            out.iter_mut().for_each(|v| *v = 0.0);
            *bll = body(bi, buf, out);
        });
    blk_ll.iter().sum()
}

/// Adds the partial sums of [`cell_blocks`] into `outs` in block order (so
/// results do not depend on the thread count): each block's buffer is the
/// concatenation of segments as long as `outs`' slices.
pub(crate) fn add_blocks(blk: &[f64], n_cells: usize, width: usize, outs: &mut [&mut [f64]]) {
    let n_blocks = n_cells.div_ceil(CELL_BLOCK);
    for buf in blk[..n_blocks * width].chunks(width) {
        let mut at = 0;
        for out in outs.iter_mut() {
            for (o, &v) in out.iter_mut().zip(&buf[at..]) {
                *o += v;
            }
            at += out.len();
        }
    }
}

impl<'a> NbModel<'a> {
    pub fn new(spec: NbSpec, data: &'a CountMatrix) -> Result<Self> {
        if spec.capture_prior.is_some() && !spec.variant.has_capture() {
            return Err(CoreError::arg(
                "priors",
                "capture_efficiency requires nbvcp or zinbvcp",
            ));
        }
        if let Some(ds) = &spec.datasets {
            if ds.cell.len() != data.n_cells {
                return Err(CoreError::arg(
                    "dataset_key",
                    format!("has {} values for {} cells", ds.cell.len(), data.n_cells),
                ));
            }
        }
        let (layout, blocks) = spec.build_layout(data.n_genes, data.n_cells);
        let NbBlocks {
            gene: b_gene,
            scalar: b_scalar,
            cap: b_cap,
            gate: b_gate,
            mix: b_mix,
            bnb: b_bnb,
            hier,
            capture,
        } = blocks;
        let eta_loc = match spec.capture_prior {
            Some(cp) => data
                .lib_size
                .iter()
                .map(|&l| cp.ln_m0 - l.max(1.0).ln())
                .collect(),
            None => Vec::new(),
        };
        let block_prior = layout
            .blocks
            .iter()
            .map(|b| {
                // Simplex blocks have a joint prior, eta capture a per-cell one.
                if b.kind == crate::models::BlockKind::Simplex || b.name == "eta_capture" {
                    Prior::Flat
                } else {
                    spec.prior_of(&b.name)
                }
            })
            .collect();
        Ok(NbModel {
            spec,
            data,
            layout,
            b_gene,
            b_scalar,
            b_cap,
            b_gate,
            b_mix,
            b_bnb,
            hier,
            capture,
            eta_loc,
            block_prior,
        })
    }

    /// `(ln ν, d ln ν / dx)` of a capture coordinate.
    #[inline]
    pub(crate) fn capture_eval(&self, x: f64) -> (f64, f64) {
        match self.capture {
            Capture::None => (0.0, 0.0),
            Capture::Nu => (ln_sigmoid(x), sigmoid(-x)),
            Capture::Phi(link) => {
                let e = link.eval(x);
                (-softplus(e.ln_theta), -sigmoid(e.ln_theta) * e.d_ln_theta)
            }
            Capture::Eta => (-softplus(x), -sigmoid(x)),
        }
    }

    /// Per-gene `Σ_x w(x)[lnΓ(x+r)−lnΓ(r)]` into `gene_ll` and its r-derivative into `g_r`.
    pub(crate) fn pair_terms(
        &self,
        batch: &Batch,
        r: &[f64],
        gene_ll: &mut [f64],
        g_r: &mut [f64],
    ) {
        let d = self.data;
        gene_ll
            .par_iter_mut()
            .zip(g_r.par_iter_mut())
            .enumerate()
            .with_min_len(256)
            .for_each(|(g, (ll, gr))| {
                let pairs = d.gene_pair_ptr[g]..d.gene_pair_ptr[g + 1];
                (*ll, *gr) = lgamma_digamma_pair_sums(
                    &d.pair_count[pairs.clone()],
                    &batch.pair_weight[pairs],
                    r[g],
                );
            });
    }

    /// nbdm / nbvcp: pairs + O(B) cell terms.
    fn kernel_nb(&self, batch: &Batch, ws: &mut NbWorkspace) -> f64 {
        let d = self.data;
        self.pair_terms(batch, &ws.r, &mut ws.gene_ll, &mut ws.g_r);
        let mut ll: f64 = ws.gene_ll.iter().sum();
        let big_r: f64 = ws.r.iter().sum();
        let mut s1 = 0.0;
        for (k, &c) in batch.cells.iter().enumerate() {
            let c = c as usize;
            let l = ws.ell[k];
            let lib = d.lib_size[c];
            let l1m = ln_sigmoid(-l);
            ll += lib * ln_sigmoid(l) + big_r * l1m - d.ln_fact[c];
            s1 += l1m;
            ws.g_ell[k] = lib * sigmoid(-l) - big_r * sigmoid(l);
        }
        ws.g_r.iter_mut().for_each(|g| *g += s1);
        ll
    }

    /// zinb: every cell shares `p̂ = p`, so zeros of gene g contribute `n0_g · s_g` in closed form.
    /// Returns `(ll, d ll / d logit p)`; writes nothing to `g_ell`.
    fn kernel_zinb(&self, batch: &Batch, lp: f64, ws: &mut NbWorkspace) -> (f64, f64) {
        let d = self.data;
        self.pair_terms(batch, &ws.r, &mut ws.gene_ll, &mut ws.g_r);
        let n_b = batch.len() as f64;
        let lph = ln_sigmoid(lp);
        let l1m = ln_sigmoid(-lp);
        let p = sigmoid(lp);
        let mut ll = 0.0;
        let mut g_lp = 0.0;
        for g in 0..d.n_genes {
            let (r, pi) = (ws.r[g], ws.pi[g]);
            let nnz = batch.gene_nnz[g];
            let n0 = n_b - nnz;
            let z = r * l1m;
            let ez = z.exp();
            let es = pi + (1.0 - pi) * ez;
            let s = es.ln();
            let w0 = (1.0 - pi) * ez / es;
            let ln1mpi = (-pi).ln_1p();
            ll += ws.gene_ll[g] + nnz * (ln1mpi + z) + n0 * s;
            ws.g_r[g] += nnz * l1m + n0 * w0 * l1m;
            ws.g_gate[g] = -nnz * pi + n0 * pi * (1.0 - pi) * (1.0 - ez) / es;
            g_lp -= (nnz + n0 * w0) * r * p;
        }
        let mut lib_b = 0.0;
        for &c in &batch.cells {
            lib_b += d.lib_size[c as usize];
            ll -= d.ln_fact[c as usize];
        }
        ll += lib_b * lph;
        g_lp += lib_b * sigmoid(-lp);
        (ll, g_lp)
    }

    /// zinbvcp: a dense pass over genes for every batch cell (the zero terms differ per cell).
    fn kernel_zinbvcp(&self, batch: &Batch, ws: &mut NbWorkspace) -> f64 {
        let d = self.data;
        let g_n = d.n_genes;
        self.pair_terms(batch, &ws.r, &mut ws.gene_ll, &mut ws.g_r);
        let nb = batch.len();
        let (r, pi, ell) = (&ws.r, &ws.pi, &ws.ell);
        let mut ll: f64 = ws.gene_ll.iter().sum();
        ll += cell_blocks(
            nb,
            (2 * g_n, 1),
            &mut ws.blk,
            &mut ws.blk_ll,
            &mut ws.g_ell,
            |bi, buf, gell| {
                let (gr, gg) = buf.split_at_mut(g_n);
                let mut acc = 0.0;
                for (kk, ge) in gell.iter_mut().enumerate() {
                    let k = bi * CELL_BLOCK + kk;
                    let c = batch.cells[k] as usize;
                    let l = ell[k];
                    let (lph, l1m, ph) = (ln_sigmoid(l), ln_sigmoid(-l), sigmoid(l));
                    let mut gc = 0.0;
                    // Zero term for every gene ...
                    for g in 0..g_n {
                        let z = r[g] * l1m;
                        let ez = z.exp();
                        let es = pi[g] + (1.0 - pi[g]) * ez;
                        let w0 = (1.0 - pi[g]) * ez / es;
                        acc += es.ln();
                        gr[g] += w0 * l1m;
                        gg[g] += pi[g] * (1.0 - pi[g]) * (1.0 - ez) / es;
                        gc -= w0 * r[g] * ph;
                    }
                    // ... then swap it for the nonzero term where the count is positive.
                    let (genes, counts) = d.row(c);
                    for (&g, &u) in genes.iter().zip(counts) {
                        let g = g as usize;
                        let u = u as f64;
                        let z = r[g] * l1m;
                        let ez = z.exp();
                        let es = pi[g] + (1.0 - pi[g]) * ez;
                        let w0 = (1.0 - pi[g]) * ez / es;
                        acc += (-pi[g]).ln_1p() + u * lph + z - es.ln();
                        gr[g] += l1m - w0 * l1m;
                        gg[g] += -pi[g] - pi[g] * (1.0 - pi[g]) * (1.0 - ez) / es;
                        gc += u * sigmoid(-l) - r[g] * ph + w0 * r[g] * ph;
                    }
                    acc -= d.ln_fact[c];
                    *ge = gc;
                }
                acc
            },
        );
        ws.g_gate.iter_mut().for_each(|v| *v = 0.0);
        add_blocks(
            &ws.blk,
            nb,
            2 * g_n,
            &mut [&mut ws.g_r[..g_n], &mut ws.g_gate[..g_n]],
        );
        ll
    }

    /// Derived NB quantities at `x` for a set of cells, cell-major: `r`,
    /// logit p̂ and the gate per (cell, gene). With datasets each cell reads
    /// its own dataset's rows.
    pub fn derived(&self, x: &[f64], cells: &[u32]) -> (Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
        let mut ws = self.workspace();
        let mut b = Batch::full(self.data);
        let g_n = self.data.n_genes;
        let (mut r, mut ell, mut gate) = (Vec::new(), Vec::new(), Vec::new());
        for &c in cells {
            b.cells = vec![c];
            if self.genewise() {
                let d = self
                    .spec
                    .datasets
                    .as_ref()
                    .map_or(0, |ds| ds.cell[c as usize] as usize);
                self.fill_gene_p(x, &b, self.rows(d), &mut ws);
                ell.extend((0..g_n).map(|g| ws.ell[0] + ws.lpg[g]));
            } else {
                self.fill_derived(x, &b, &mut ws);
                ell.extend((0..g_n).map(|_| ws.ell[0]));
            }
            r.extend_from_slice(&ws.r[..g_n]);
            gate.extend_from_slice(&ws.pi[..g_n]);
        }
        (r, ell, self.b_gate.map(|_| gate))
    }

    /// Fills `theta`, `dtheta`, `r`, `ell`, `dlnnu`, `pi`; returns `logit p` (and phi for mean_odds).
    fn fill_derived(&self, x: &[f64], batch: &Batch, ws: &mut NbWorkspace) -> (f64, f64, f64) {
        let lay = &self.layout;
        let gb = &lay.blocks[self.b_gene];
        let xs = x[lay.blocks[self.b_scalar].offset];
        let (lp, phi, dphi) = match self.spec.param {
            Parameterization::Canonical | Parameterization::MeanProb => (xs, f64::NAN, f64::NAN),
            Parameterization::MeanOdds => {
                let link = lay.blocks[self.b_scalar].link;
                let e = link.eval(xs);
                (-e.ln_theta, e.theta, link.deriv(xs))
            }
        };
        let mult = match self.spec.param {
            Parameterization::Canonical => 1.0,
            Parameterization::MeanProb => (-lp).exp(),
            Parameterization::MeanOdds => phi,
        };
        let link = gb.link;
        for g in 0..gb.len {
            let xg = x[gb.offset + g];
            let (t, dt) = link.forward_deriv(xg);
            ws.theta[g] = t;
            ws.dtheta[g] = dt;
            ws.r[g] = t * mult;
        }
        let cap_off = self.b_cap.map(|b| lay.blocks[b].offset);
        for (k, &c) in batch.cells.iter().enumerate() {
            match cap_off {
                Some(off) => {
                    let (lnnu, d) = self.capture_eval(x[off + c as usize]);
                    ws.ell[k] = lp + lnnu;
                    ws.dlnnu[k] = d;
                }
                None => {
                    ws.ell[k] = lp;
                    ws.dlnnu[k] = 0.0;
                }
            }
        }
        if let Some(b) = self.b_gate {
            let off = lay.blocks[b].offset;
            for g in 0..self.data.n_genes {
                ws.pi[g] = sigmoid(x[off + g]);
            }
        }
        (lp, phi, dphi)
    }
}

impl Model for NbModel<'_> {
    type Workspace = NbWorkspace;

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn n_cells(&self) -> usize {
        self.data.n_cells
    }

    fn data(&self) -> &CountMatrix {
        self.data
    }

    fn workspace(&self) -> NbWorkspace {
        let (g, c) = (self.data.n_genes, self.data.n_cells);
        let k = self.spec.n_components();
        let genewise = self.genewise();
        let per_block = self.spec.variant == Variant::Zinbvcp
            || k > 1
            || (genewise && self.spec.variant.has_capture());
        let n_blocks = c.div_ceil(CELL_BLOCK);
        // Mixtures keep logit p (and its gradient) per component and gene.
        let gp = if genewise { k * g } else { 0 };
        let gb = if self.spec.bnb { g } else { 0 };
        let stride = if (genewise) && k > 1 {
            Self::mixture_genewise_stride(k, g)
        } else {
            (2 * k * g + 4 * k).max(4 * gp)
        };
        NbWorkspace {
            theta: vec![0.0; k * g],
            dtheta: vec![0.0; k * g],
            r: vec![0.0; k * g],
            ell: vec![0.0; k * c],
            dlnnu: vec![0.0; c],
            pi: vec![0.0; k * g],
            g_r: vec![0.0; k * g],
            g_gate: vec![0.0; k * g],
            g_ell: vec![0.0; k * c],
            gene_ll: vec![0.0; g],
            lpg: vec![0.0; gp],
            odds_g: vec![0.0; gp],
            dphig: vec![0.0; gp],
            g_lpg: vec![0.0; gp],
            omega: vec![0.0; gb],
            domega: vec![0.0; gb],
            g_omega: vec![0.0; gb],
            blk: if per_block {
                vec![0.0; n_blocks * stride]
            } else {
                Vec::new()
            },
            blk_ll: vec![0.0; n_blocks],
            sub_batches: Vec::new(),
        }
    }

    fn log_lik_grad(
        &self,
        x: &[f64],
        batch: &Batch,
        grad: &mut [f64],
        ws: &mut NbWorkspace,
    ) -> f64 {
        if self.spec.mixture.is_some() {
            if self.genewise() {
                return self.mixture_genewise_log_lik_grad(x, batch, grad, ws);
            }
            return self.mixture_log_lik_grad(x, batch, grad, ws);
        }
        if self.genewise() {
            return self.gene_p_log_lik_grad(x, batch, grad, ws);
        }
        let (lp, phi, dphi) = self.fill_derived(x, batch, ws);
        let nb = batch.len();
        ws.g_ell[..nb].iter_mut().for_each(|v| *v = 0.0);
        let (mut ll, mut g_lp) = match self.spec.variant {
            Variant::Nbdm | Variant::Nbvcp => (self.kernel_nb(batch, ws), 0.0),
            Variant::Zinb => self.kernel_zinb(batch, lp, ws),
            Variant::Zinbvcp => (self.kernel_zinbvcp(batch, ws), 0.0),
        };
        let s = batch.scale;
        ll *= s;
        g_lp *= s;
        let lay = &self.layout;
        // Cells: ℓ_c = logit p + ln ν_c.
        let cap_off = self.b_cap.map(|b| lay.blocks[b].offset);
        for (k, &c) in batch.cells.iter().enumerate() {
            let ge = ws.g_ell[k] * s;
            g_lp += ge;
            if let Some(off) = cap_off {
                grad[off + c as usize] += ge * ws.dlnnu[k];
            }
        }
        // Genes and the scalar, through the parameterization.
        let gb = &lay.blocks[self.b_gene];
        let sb = lay.blocks[self.b_scalar].offset;
        match self.spec.param {
            Parameterization::Canonical => {
                for g in 0..gb.len {
                    grad[gb.offset + g] += s * ws.g_r[g] * ws.dtheta[g];
                }
                grad[sb] += g_lp;
            }
            Parameterization::MeanProb => {
                let mult = (-lp).exp();
                for g in 0..gb.len {
                    let gr = s * ws.g_r[g];
                    grad[gb.offset + g] += gr * mult * ws.dtheta[g];
                    g_lp -= gr * ws.r[g];
                }
                grad[sb] += g_lp;
            }
            Parameterization::MeanOdds => {
                let mut g_phi = -g_lp / phi;
                for g in 0..gb.len {
                    let gr = s * ws.g_r[g];
                    grad[gb.offset + g] += gr * phi * ws.dtheta[g];
                    g_phi += gr * ws.theta[g];
                }
                grad[sb] += g_phi * dphi;
            }
        }
        if let Some(b) = self.b_gate {
            let off = lay.blocks[b].offset;
            for g in 0..self.data.n_genes {
                grad[off + g] += s * ws.g_gate[g];
            }
        }
        ll
    }

    fn prior(&self, b: usize, j: usize) -> Prior {
        if Some(b) == self.b_mix {
            return Prior::Flat;
        }
        if Some(b) == self.b_cap && self.capture == Capture::Eta {
            let cp = self.spec.capture_prior.expect("eta capture has a prior");
            return Prior::TruncNormal0 {
                loc: self.eta_loc[j],
                scale: cp.sigma,
            };
        }
        self.block_prior[b]
    }

    /// Capture models without a capture prior: the data determine each
    /// cell's `p̂ = p ν_c / (1 − p (1 − ν_c))`, not `p` (or `φ`) and `ν_c`
    /// apart (with a gene-specific p: every `logit p_g` may shift against
    /// every `ln ν_c`).
    fn ridge_blocks(&self) -> Vec<usize> {
        match (self.b_cap, self.capture) {
            // With a gene-specific p the ridge also moves the hierarchy's location.
            (Some(b_cap), Capture::Nu | Capture::Phi(_)) => {
                match self.hier.iter().find(|h| h.target == self.b_scalar) {
                    Some(h) => vec![self.b_scalar, h.loc, b_cap],
                    None => vec![self.b_scalar, b_cap],
                }
            }
            _ => Vec::new(),
        }
    }

    fn joint_prior_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let hier = self.hierarchy_prior_grad(x, grad);
        hier + match (self.b_mix, self.spec.mixture) {
            (Some(b), Some(m)) => self.dirichlet_prior_grad(
                &x[self.layout.blocks[b].offset..][..m.k - 1],
                m,
                &mut grad[self.layout.blocks[b].offset..][..m.k - 1],
            ),
            _ => 0.0,
        }
    }

    fn initial_point(&self) -> Vec<f64> {
        let mut base = self.base_init();
        self.split_on_ridge(&mut base);
        if self.spec.mixture.is_some() {
            return self.mixture_initial_point(&base);
        }
        if let Some(ds) = self.spec.datasets.as_ref().filter(|d| d.mean) {
            let r_d = self.dataset_start(&base, ds);
            return self.materialize(&base, &r_d, &[base.lp], &[]);
        }
        self.materialize(&base, std::slice::from_ref(&base.r), &[base.lp], &[])
    }
}

/// `Σ_g ln f(u_cg)` of one cell under one setting of NB parameters: `r`
/// (per gene, summing to `big_r`), gate `pi` (zero-inflated models),
/// `ell = logit p̂_c`. Zeros cost nothing for the NB, `zinb_zero = (s_g, Σ_g s_g)`
/// gives zinb's per-gene zero terms in closed form, and without it a gated
/// model sums its zero terms densely (zinbvcp). Shared by the mixture kernel
/// and the downstream analyses.
#[allow(clippy::too_many_arguments)]
pub fn nb_cell_loglik(
    data: &CountMatrix,
    c: usize,
    r: &[f64],
    big_r: f64,
    pi: Option<&[f64]>,
    ell: f64,
    zinb_zero: Option<(&[f64], f64)>,
) -> f64 {
    let (lph, l1m) = (ln_sigmoid(ell), ln_sigmoid(-ell));
    let (genes, counts) = data.row(c);
    let mut acc = data.lib_size[c] * lph - data.ln_fact[c];
    let Some(pi) = pi else {
        acc += big_r * l1m;
        for (&g, &u) in genes.iter().zip(counts) {
            acc += lgamma_diff(u, r[g as usize]);
        }
        return acc;
    };
    let zero_term = |g: usize| (pi[g] + (1.0 - pi[g]) * (r[g] * l1m).exp()).ln();
    match zinb_zero {
        Some((_, total)) => acc += total,
        None => acc += (0..r.len()).map(zero_term).sum::<f64>(),
    }
    for (&g, &u) in genes.iter().zip(counts) {
        let g = g as usize;
        let s0 = zinb_zero.map_or_else(|| zero_term(g), |(s, _)| s[g]);
        acc += (-pi[g]).ln_1p() + lgamma_diff(u, r[g]) + r[g] * l1m - s0;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Link;
    use crate::math::lgamma;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::testutil::check_gradient;

    /// Naive dense O(C·G) log-likelihood straight from the pmf.
    fn dense_ll(model: &NbModel, x: &[f64], cells: &[u32]) -> f64 {
        let d = model.data;
        let dense = d.to_dense();
        let (r, ell, gate) = model.derived(x, cells);
        let mut ll = 0.0;
        let omega: Option<Vec<f64>> = model.b_bnb.map(|b| {
            let off = model.layout.blocks[b].offset;
            (0..d.n_genes)
                .map(|g| crate::math::softplus(x[off + g]).max(1e-6))
                .collect()
        });
        for (k, &c) in cells.iter().enumerate() {
            for g in 0..d.n_genes {
                let ph = sigmoid(ell[k * d.n_genes + g]);
                let u = dense[c as usize * d.n_genes + g];
                let rg = r[k * d.n_genes + g];
                let lnb = lgamma(u + rg) - lgamma(rg) - lgamma(u + 1.0)
                    + match &omega {
                        None => u * ph.ln() + rg * (1.0 - ph).ln(),
                        Some(om) => {
                            super::super::bnb::bnb_ratio(u as u32, rg, om[g], ph / (1.0 - ph))
                        }
                    };
                ll += match &gate {
                    None => lnb,
                    Some(pi) => {
                        let pi = pi[k * d.n_genes + g];
                        if u == 0.0 {
                            (pi + (1.0 - pi) * lnb.exp()).ln()
                        } else {
                            (1.0 - pi).ln() + lnb
                        }
                    }
                };
            }
        }
        ll
    }

    fn toy_data(variant: Variant, seed: u64) -> CountMatrix {
        let truth = NbTruth::random(variant, 37, 23, seed);
        simulate_nb(&truth, seed + 1)
    }

    fn all_specs() -> Vec<NbSpec> {
        let mut v = Vec::new();
        for variant in Variant::ALL {
            for param in Parameterization::ALL {
                for (unc, link) in [
                    (false, Link::Exp),
                    (true, Link::Softplus),
                    (true, Link::Exp),
                ] {
                    v.push(NbSpec::new(variant, param, unc, link));
                }
                if variant.has_capture() {
                    let mut s = NbSpec::new(variant, param, false, Link::Exp);
                    s.set_prior("eta_capture", (2000f64).ln(), 0.5).unwrap();
                    v.push(s);
                }
                // Gene-specific p, with and without a capture prior.
                let mut s = NbSpec::new(variant, param, true, Link::Softplus);
                s.add_hierarchy(param.scalar_param(), super::super::Shrinkage::Gaussian)
                    .unwrap();
                v.push(s.clone());
                if variant.has_capture() {
                    s.set_prior("eta_capture", (2000f64).ln(), 0.5).unwrap();
                    v.push(s);
                }
                // BNB, with shared and with gene-specific p, under each family.
                use super::super::Shrinkage::{Gaussian, Horseshoe, Neg};
                let (fa, fb) = match variant {
                    Variant::Nbdm | Variant::Zinbvcp => (Gaussian, Horseshoe),
                    _ => (Neg, Gaussian),
                };
                let mut s = NbSpec::new(variant, param, true, Link::Softplus);
                s.set_bnb(fa).unwrap();
                v.push(s.clone());
                s.add_hierarchy(param.scalar_param(), fb).unwrap();
                v.push(s);
                let mut s = NbSpec::new(variant, param, true, Link::Softplus);
                s.add_hierarchy(param.scalar_param(), Horseshoe).unwrap();
                v.push(s.clone());
                // Non-default hyper-parameters reach the prior.
                s.set_hierarchy_hyper(param.scalar_param(), "tau0", 0.3)
                    .unwrap();
                s.set_hierarchy_hyper(param.scalar_param(), "slab_df", 6.0)
                    .unwrap();
                assert!(s
                    .set_hierarchy_hyper(param.scalar_param(), "u", 1.0)
                    .is_err());
                v.push(s.clone());
                let mut s = NbSpec::new(variant, param, true, Link::Softplus);
                s.add_hierarchy(param.scalar_param(), Neg).unwrap();
                v.push(s.clone());
                s.set_hierarchy_hyper(param.scalar_param(), "u", 2.0)
                    .unwrap();
                s.set_hierarchy_hyper(param.scalar_param(), "tau", 0.5)
                    .unwrap();
                assert!(s
                    .set_hierarchy_hyper(param.scalar_param(), "tau", -1.0)
                    .is_err());
                v.push(s.clone());
                // Datasets: per-dataset means, with shared, per-dataset and
                // per-dataset-and-gene p (and a gene-level p hierarchy).
                use super::super::DatasetP;
                let cells: Vec<u32> = (0..23).map(|c| (c * 7 % 3) as u32).collect();
                for (mode, fam) in [
                    (DatasetP::Shared, Gaussian),
                    (DatasetP::Scalar, Neg),
                    (DatasetP::GeneSpecific, Horseshoe),
                ] {
                    let mut s = NbSpec::new(variant, param, false, Link::Exp);
                    s.set_datasets(cells.clone(), 3).unwrap();
                    s.add_dataset_hierarchy(param.gene_param(), fam, DatasetP::Shared)
                        .unwrap();
                    match mode {
                        DatasetP::Shared => {
                            s.add_hierarchy(param.scalar_param(), Gaussian).unwrap()
                        }
                        m => s
                            .add_dataset_hierarchy(param.scalar_param(), Gaussian, m)
                            .unwrap(),
                    }
                    assert!(s.unconstrained);
                    v.push(s);
                }
                // Dataset gates (zero-inflated models), with dataset means.
                if variant.has_gate() {
                    let mut s = NbSpec::new(variant, param, true, Link::Softplus);
                    s.set_datasets(cells.clone(), 3).unwrap();
                    s.add_dataset_hierarchy("gate", Gaussian, DatasetP::Shared)
                        .unwrap();
                    s.add_dataset_hierarchy(param.gene_param(), Gaussian, DatasetP::Shared)
                        .unwrap();
                    assert!(s.add_hierarchy("gate", Gaussian).is_err());
                    v.push(s);
                }
                // Datasets with BNB (ω shared by the datasets).
                let mut s = NbSpec::new(variant, param, true, Link::Softplus);
                s.set_bnb(Horseshoe).unwrap();
                s.set_datasets(cells.clone(), 3).unwrap();
                s.add_dataset_hierarchy(param.gene_param(), Gaussian, DatasetP::Shared)
                    .unwrap();
                v.push(s);
                // Dataset p only (mean shared).
                let mut s = NbSpec::new(variant, param, true, Link::Softplus);
                s.set_datasets(cells.clone(), 3).unwrap();
                s.add_dataset_hierarchy(param.scalar_param(), Gaussian, DatasetP::Scalar)
                    .unwrap();
                v.push(s);
                // A gate hierarchy, alone and with gene-specific p.
                if variant.has_gate() {
                    let mut s = NbSpec::new(variant, param, false, Link::Exp);
                    s.add_hierarchy("gate", super::super::Shrinkage::Gaussian)
                        .unwrap();
                    assert!(s.unconstrained);
                    v.push(s.clone());
                    s.add_hierarchy(param.scalar_param(), super::super::Shrinkage::Gaussian)
                        .unwrap();
                    v.push(s);
                }
            }
        }
        v
    }

    fn jitter(x: &mut [f64], seed: u64) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
        for v in x.iter_mut() {
            *v += rng.random_range(-0.3..0.3);
        }
    }

    #[test]
    fn sufficient_statistics_match_dense_reference() {
        for (i, spec) in all_specs().into_iter().enumerate() {
            let data = toy_data(spec.variant, 10 + i as u64);
            let model = NbModel::new(spec.clone(), &data).unwrap();
            let mut x = model.initial_point();
            jitter(&mut x, i as u64);
            let mut ws = model.workspace();
            let mut grad = vec![0.0; x.len()];
            // full batch
            let full = Batch::full(&data);
            let ll = model.log_lik_grad(&x, &full, &mut grad, &mut ws);
            let want = dense_ll(&model, &x, &full.cells);
            assert!(
                (ll - want).abs() < 1e-8 * want.abs().max(1.0),
                "{spec:?}: {ll} vs {want}"
            );
            // a mini-batch, scaled by C/B
            let mut b = Batch::full(&data);
            b.set_cells(&data, &[3, 7, 1, 19, 22]);
            grad.iter_mut().for_each(|g| *g = 0.0);
            let llb = model.log_lik_grad(&x, &b, &mut grad, &mut ws);
            let wantb = dense_ll(&model, &x, &b.cells) * b.scale;
            assert!(
                (llb - wantb).abs() < 1e-8 * wantb.abs().max(1.0),
                "{spec:?} batch: {llb} vs {wantb}"
            );
        }
    }

    #[test]
    fn likelihood_gradients_match_finite_differences() {
        for (i, spec) in all_specs().into_iter().enumerate() {
            let data = toy_data(spec.variant, 100 + i as u64);
            let model = NbModel::new(spec.clone(), &data).unwrap();
            let mut x = model.initial_point();
            jitter(&mut x, 7 + i as u64);
            let mut b = Batch::full(&data);
            b.set_cells(&data, &[0, 2, 5, 8, 13, 21]);
            let mut ws = model.workspace();
            check_gradient(
                |x, g| model.log_lik_grad(x, &b, g, &mut ws),
                &x,
                1e-6,
                &format!("{spec:?}"),
            );
            // The same workspace again: what one evaluation leaves behind must
            // not leak into the next one's gradient (as in a fit's steps).
            check_gradient(
                |x, g| crate::models::log_joint_grad(&model, x, &b, g, &mut ws),
                &x,
                1e-6,
                &format!("log joint {spec:?}"),
            );
        }
    }
}
