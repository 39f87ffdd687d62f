//! Low-rank guides (`guide_rank = k`, optionally `joint_params`): groups of
//! unconstrained coordinates are jointly Gaussian,
//! `x ~ N(loc, W Wᵀ + diag(s²))` with an `m × k` factor `W` for a group of
//! `m` coordinates; every other coordinate stays mean-field. Parameters
//! `[loc (n) | log_scale (n) | W of every group]`, `W` row-major per
//! coordinate.
//!
//! - `guide_rank` alone: one group per row of the gene parameter's block
//!   (`r`, or `mu`; a mixture's components and a dataset hierarchy's
//!   datasets are independent groups, the original's batch dimensions).
//!   Given the other parameters the NB likelihood is a sum over genes, so
//!   this group's correlations come from what couples genes within a cell:
//!   a mixture's responsibilities.
//! - `joint_params`: one group over every coordinate of the listed blocks
//!   (e.g. `mu` and `phi`), so the guide can express how all genes' means
//!   move with `p` (the dominant posterior correlation of a shared-`p`
//!   model). The original conditions gene blocks on scalars through
//!   per-gene regressions; one joint low-rank Gaussian that includes the
//!   scalar coordinates expresses the same dependence (its factor gives the
//!   scalar's covariance with every gene).
//!
//! Draws are `x = loc + s ⊙ ε + W z`, `ε ~ N(0, I_n)`, `z ~ N(0, I_k)`. The
//! ELBO takes the group's prior at the draw and its entropy in closed form,
//! `H = Σ_g ln s_g + ½ ln det(I_k + Wᵀ diag(s⁻²) W) + G·½ ln(2πe)` (matrix
//! determinant lemma), with
//! `∂H/∂W = diag(s⁻²) W A⁻¹` and `∂H/∂ln s_g = 1 − w_gᵀ A⁻¹ w_g / s_g²`,
//! `A = I_k + Wᵀ diag(s⁻²) W`.
//!
//! Unlike the original (`D = softplus(raw) + 1e-4` as a variance) the
//! diagonal is parameterised by its log standard deviation, as the
//! mean-field scales are, and `W` starts from small fixed pseudo-random
//! values rather than a constant 0.01 (equal columns would start
//! symmetric). Fitted, the point summary is the mode of each coordinate's
//! marginal `N(loc_g, s_g² + |w_g|²)` through its link.

use super::mean_field::{for_each_active, gaussian_sites, mf_term, KlCache};
use super::{guide_groups, BlockFields, FittedGuide, Guide};
use crate::data::Batch;
use crate::error::{CoreError, Result};
use crate::laplace::woodbury::{chol_inverse, chol_logdet, cholesky};
use crate::models::{Layout, Model};
use crate::posterior::{Site, Source, Summary};
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::StandardNormal;

const HALF_LN_2PI_E: f64 = 1.418_938_533_204_672_7;
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The low-rank family over `dim` coordinates: `groups[i]` lists the
/// coordinates of group `i` (global blocks only), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowRank {
    pub dim: usize,
    pub rank: usize,
    pub groups: Vec<Vec<usize>>,
}

impl LowRank {
    /// A rank-`rank` guide: with `joint` empty, one group per row of the
    /// block `gene`; else one group over every coordinate of the blocks in
    /// `joint`.
    pub fn new(layout: &Layout, gene: &str, joint: &[String], rank: usize) -> Result<Self> {
        if rank == 0 {
            return Err(CoreError::arg(
                "guide_rank",
                "must be a positive whole number",
            ));
        }
        let groups = guide_groups(layout, gene, joint, "guide_rank")?;
        let smallest = groups.iter().map(Vec::len).min().unwrap_or(0);
        if rank > smallest {
            return Err(CoreError::arg(
                "guide_rank",
                format!("must be at most {smallest} (the size of its group), not {rank}"),
            ));
        }
        let n: usize = groups.iter().map(Vec::len).sum();
        crate::limits::check_values("guide_rank", (n * rank) as f64)?;
        Ok(LowRank {
            dim: layout.total,
            rank,
            groups,
        })
    }

    fn n_factor(&self) -> usize {
        self.groups.iter().map(Vec::len).sum::<usize>() * self.rank
    }
}

/// For every coordinate: `(group, factor row)` of a group member, `None` otherwise.
fn members(dim: usize, groups: &[Vec<usize>]) -> Vec<Option<(usize, usize)>> {
    let mut out = vec![None; dim];
    let mut row = 0;
    for (gi, g) in groups.iter().enumerate() {
        for &j in g {
            out[j] = Some((gi, row));
            row += 1;
        }
    }
    out
}

/// Buffers of one ELBO evaluation.
pub struct Scratch {
    x: Vec<f64>,
    eps: Vec<f64>,
    gx: Vec<f64>,
    s: Vec<f64>,
    z: Vec<f64>,
    member: Vec<Option<(usize, usize)>>,
}

/// `(½ ln det A, A⁻¹)` of `A = I_k + Wᵀ diag(s⁻²) W` for one group.
fn group_a(w: &[f64], s: &[f64], k: usize) -> (f64, Vec<f64>) {
    let mut a = vec![0.0; k * k];
    for (wg, &sg) in w.chunks(k).zip(s) {
        let inv = 1.0 / (sg * sg);
        for i in 0..k {
            let wi = wg[i] * inv;
            for j in 0..=i {
                a[i * k + j] += wi * wg[j];
            }
        }
    }
    for i in 0..k {
        a[i * k + i] += 1.0;
        for j in 0..i {
            a[j * k + i] = a[i * k + j];
        }
    }
    // A ≥ I is positive definite whatever W and s are.
    assert!(cholesky(&mut a, k), "I + WᵀD⁻¹W is positive definite");
    (0.5 * chol_logdet(&a, k), chol_inverse(&a, k))
}

impl Guide for LowRank {
    type Scratch = Scratch;

    fn n_params(&self) -> usize {
        2 * self.dim + self.n_factor()
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            x: vec![0.0; self.dim],
            eps: vec![0.0; self.dim],
            gx: vec![0.0; self.dim],
            s: vec![0.0; self.dim],
            z: vec![0.0; self.groups.len() * self.rank],
            member: members(self.dim, &self.groups),
        }
    }

    fn initial_params(&self, x0: &[f64], ln_scale0: &[f64]) -> Vec<f64> {
        // Small fixed pseudo-random factor: distinct columns, a negligible
        // addition (1e-4 per gene) to the starting variances.
        let mut rng = ChaCha8Rng::seed_from_u64(0x6c6f_7772);
        let w = (0..self.n_factor()).map(|_| 0.01 * rng.sample::<f64, _>(StandardNormal));
        x0.iter().chain(ln_scale0).copied().chain(w).collect()
    }

    fn loss_and_grad<M: Model, R: Rng>(
        &self,
        model: &M,
        v: &[f64],
        batch: &Batch,
        rng: &mut R,
        buf: &mut Scratch,
        ws: &mut M::Workspace,
        grad: &mut [f64],
    ) -> f64 {
        let n = self.dim;
        let (loc, rest) = v.split_at(n);
        let (log_scale, fac) = rest.split_at(n);
        let k = self.rank;
        grad.iter_mut().for_each(|g| *g = 0.0);
        // Noise in a fixed order: ε over the active coordinates, then z per group.
        {
            let (x, eps, sc) = (&mut buf.x, &mut buf.eps, &mut buf.s);
            for_each_active(model, batch, |_, _, j, _| {
                let e: f64 = rng.sample(StandardNormal);
                eps[j] = e;
                sc[j] = log_scale[j].exp();
                x[j] = loc[j] + sc[j] * e;
            });
        }
        for z in buf.z.iter_mut() {
            *z = rng.sample(StandardNormal);
        }
        add_factor(&self.groups, fac, k, &buf.z, &mut buf.x);
        buf.gx.iter_mut().for_each(|g| *g = 0.0);
        let ll = model.log_lik_grad(&buf.x, batch, &mut buf.gx, ws);
        let mut elbo = ll + model.joint_prior_grad(&buf.x, &mut buf.gx);
        let (g_loc, rest) = grad.split_at_mut(n);
        let (g_ls, g_fac) = rest.split_at_mut(n);
        let (x, eps, gx, sc, z, member) = (&buf.x, &buf.eps, &buf.gx, &buf.s, &buf.z, &buf.member);
        let blocks = &model.layout().blocks;
        let mut cache = KlCache::default();
        for_each_active(model, batch, |b, j, i, w| {
            let link = blocks[b].link;
            let prior = model.prior(b, j);
            let Some((gi, row)) = member[i] else {
                let (de, gl, gs) = mf_term(
                    prior,
                    link,
                    (loc[i], log_scale[i], sc[i], eps[i], x[i], gx[i], w),
                    &mut cache,
                );
                elbo += de;
                g_loc[i] = gl;
                g_ls[i] = gs;
                return;
            };
            // A group member: the expected log prior in closed form where the
            // prior is Gaussian in x (its marginal variance s² + |w|²), else
            // the prior at the draw; the group's entropy follows below.
            let zg = &z[gi * k..(gi + 1) * k];
            let wr = &fac[row * k..(row + 1) * k];
            let gf = &mut g_fac[row * k..(row + 1) * k];
            match prior.normal_in_x(link) {
                Some((m0, s0)) => {
                    let (d, v0) = (loc[i] - m0, s0 * s0);
                    let ww: f64 = wr.iter().map(|a| a * a).sum();
                    let var = sc[i] * sc[i] + ww;
                    elbo += w * (-s0.ln() - 0.5 * LN_2PI - 0.5 * (d * d + var) / v0);
                    g_loc[i] = -(gx[i] - w * d / v0);
                    g_ls[i] = -(gx[i] * sc[i] * eps[i] - w * sc[i] * sc[i] / v0);
                    for ((gfk, zk), wk) in gf.iter_mut().zip(zg).zip(wr) {
                        *gfk = -(gx[i] * zk - w * wk / v0);
                    }
                }
                None => {
                    let (lp, dlp) = prior.ln_density_x(x[i], link);
                    elbo += w * lp;
                    let gt = gx[i] + w * dlp;
                    g_loc[i] = -gt;
                    g_ls[i] = -gt * sc[i] * eps[i];
                    for (gfk, zk) in gf.iter_mut().zip(zg) {
                        *gfk = -gt * zk;
                    }
                }
            }
        });
        let mut row0 = 0;
        let mut t = vec![0.0; k];
        for g in &self.groups {
            let m = g.len();
            let w = &fac[row0 * k..(row0 + m) * k];
            let s: Vec<f64> = g.iter().map(|&i| sc[i]).collect();
            let (half_logdet, a_inv) = group_a(w, &s, k);
            elbo += half_logdet + m as f64 * HALF_LN_2PI_E;
            for (r, (&i, wg)) in g.iter().zip(w.chunks(k)).enumerate() {
                elbo += log_scale[i];
                // t = A⁻¹ w_r: ∂H/∂w_r = t / s², ∂H/∂ln s_r = 1 − w_r·t / s².
                for (a, tv) in t.iter_mut().enumerate() {
                    *tv = (0..k).map(|b| a_inv[a * k + b] * wg[b]).sum();
                }
                let inv = 1.0 / (s[r] * s[r]);
                let q: f64 = wg.iter().zip(&t).map(|(a, b)| a * b).sum();
                g_ls[i] -= 1.0 - q * inv;
                let jj = row0 + r;
                for (gf, tv) in g_fac[jj * k..(jj + 1) * k].iter_mut().zip(&t) {
                    *gf -= tv * inv;
                }
            }
            row0 += m;
        }
        -elbo
    }

    fn location(&self, params: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&params[..self.dim]);
    }

    fn spread(&self, params: &[f64], out: &mut [f64]) {
        let fit = self.fit_of(params);
        out.copy_from_slice(&fit.marginal_scale());
    }

    fn fitted(&self, params: &[f64]) -> Box<dyn FittedGuide> {
        Box::new(self.fit_of(params))
    }
}

impl LowRank {
    fn fit_of(&self, params: &[f64]) -> LowRankFit {
        let (loc, rest) = params.split_at(self.dim);
        let (log_scale, fac) = rest.split_at(self.dim);
        LowRankFit {
            loc: loc.to_vec(),
            scale: log_scale.iter().map(|v| v.exp()).collect(),
            rank: self.rank,
            groups: self.groups.clone(),
            factor: fac.to_vec(),
        }
    }
}

/// A fitted low-rank guide: `loc` and diagonal `scale` of every coordinate
/// in layout order, and the factor `W` of the group coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRankFit {
    pub loc: Vec<f64>,
    pub scale: Vec<f64>,
    pub rank: usize,
    pub groups: Vec<Vec<usize>>,
    pub factor: Vec<f64>,
}

impl LowRankFit {
    /// The standard deviation of each coordinate's marginal.
    pub fn marginal_scale(&self) -> Vec<f64> {
        let k = self.rank;
        let mut out = self.scale.clone();
        let rows = self.groups.iter().flatten();
        for (&i, wg) in rows.zip(self.factor.chunks(k)) {
            out[i] = (out[i] * out[i] + wg.iter().map(|w| w * w).sum::<f64>()).sqrt();
        }
        out
    }

    /// From the stored fields: `loc` and `scale` of every block, and for
    /// blocks in a group `group` (each coordinate's group number) and
    /// `factor` (its rows of `W`, row-major).
    pub fn from_fields(layout: &Layout, fields: &[BlockFields]) -> Result<Self> {
        let mf = super::MeanFieldFit::from_fields(layout, fields)?;
        let bad = |what: &str| CoreError::arg("fit", format!("its low-rank guide {what}"));
        let mut rank = 0;
        let mut by_group: Vec<(usize, usize, &[f64])> = Vec::new(); // (group, coordinate, W row)
        for blk in &layout.blocks {
            let Some(f) = fields.iter().find(|f| f.block == blk.name) else {
                continue;
            };
            let (Some(grp), Some(w)) = (f.get("group"), f.get("factor")) else {
                continue;
            };
            if grp.len() != blk.len || blk.len == 0 || w.len() % blk.len != 0 || w.is_empty() {
                return Err(bad(&format!(
                    "has a factor of the wrong length for '{}'",
                    blk.name
                )));
            }
            let k = w.len() / blk.len;
            if rank != 0 && k != rank {
                return Err(bad("has factors of different ranks"));
            }
            rank = k;
            for (j, (&gid, row)) in grp.iter().zip(w.chunks(k)).enumerate() {
                if !(gid >= 0.0 && gid == gid.round() && gid < 1e6) {
                    return Err(bad("has an invalid group number"));
                }
                by_group.push((gid as usize, blk.offset + j, row));
            }
        }
        if rank == 0 {
            return Err(bad("has no `factor`"));
        }
        by_group.sort_by_key(|&(g, j, _)| (g, j));
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut factor = Vec::with_capacity(by_group.len() * rank);
        let mut last = usize::MAX;
        for (g, j, row) in by_group {
            if g != last {
                groups.push(Vec::new());
                last = g;
            }
            groups.last_mut().expect("pushed").push(j);
            factor.extend_from_slice(row);
        }
        Ok(LowRankFit {
            loc: mf.loc,
            scale: mf.scale,
            rank,
            groups,
            factor,
        })
    }
}

/// `x += W z` for every group (`z`: `rank` values per group).
fn add_factor(groups: &[Vec<usize>], fac: &[f64], k: usize, z: &[f64], x: &mut [f64]) {
    let mut row = 0;
    for (gi, g) in groups.iter().enumerate() {
        let zg = &z[gi * k..(gi + 1) * k];
        for &i in g {
            let wg = &fac[row * k..(row + 1) * k];
            x[i] += wg.iter().zip(zg).map(|(a, b)| a * b).sum::<f64>();
            row += 1;
        }
    }
}

impl Source for LowRankFit {
    fn sampled_sites(&self, layout: &Layout, summary: Summary, ctl: Ctl<'_>) -> Result<Vec<Site>> {
        let k = self.rank;
        let marginal = self.marginal_scale();
        let mut z = vec![0.0; self.groups.len() * k];
        gaussian_sites(layout, summary, ctl, &self.loc, &marginal, |rng, x| {
            for (j, xj) in x.iter_mut().enumerate() {
                let e: f64 = rng.sample(StandardNormal);
                *xj = self.loc[j] + self.scale[j] * e;
            }
            for v in z.iter_mut() {
                *v = rng.sample(StandardNormal);
            }
            add_factor(&self.groups, &self.factor, k, &z, x);
        })
    }

    fn scales(&self) -> Option<Vec<f64>> {
        Some(self.marginal_scale())
    }
}

impl FittedGuide for LowRankFit {
    fn family(&self) -> &'static str {
        "low_rank"
    }

    fn fields(&self, layout: &Layout) -> Vec<BlockFields> {
        let k = self.rank;
        let member = members(self.loc.len(), &self.groups);
        layout
            .blocks
            .iter()
            .map(|blk| {
                let mut fields = vec![
                    ("loc".into(), self.loc[blk.range()].to_vec()),
                    ("scale".into(), self.scale[blk.range()].to_vec()),
                ];
                if blk.range().all(|j| member[j].is_some()) && blk.len > 0 {
                    let (grp, w): (Vec<f64>, Vec<&[f64]>) = blk
                        .range()
                        .map(|j| {
                            let (g, row) = member[j].expect("member");
                            (g as f64, &self.factor[row * k..(row + 1) * k])
                        })
                        .unzip();
                    fields.push(("group".into(), grp));
                    fields.push(("factor".into(), w.concat()));
                }
                BlockFields {
                    block: blk.name.clone(),
                    fields,
                }
            })
            .collect()
    }

    fn select(&self, keep: &[usize]) -> Box<dyn FittedGuide> {
        // The marginal of a subset of a Gaussian keeps its rows of W.
        let k = self.rank;
        let mut new_index = vec![usize::MAX; self.loc.len()];
        for (n, &j) in keep.iter().enumerate() {
            new_index[j] = n;
        }
        let mut groups = Vec::new();
        let mut factor = Vec::new();
        let mut row = 0;
        for g in &self.groups {
            let mut ng = Vec::new();
            for &j in g {
                if new_index[j] != usize::MAX {
                    ng.push(new_index[j]);
                    factor.extend_from_slice(&self.factor[row * k..(row + 1) * k]);
                }
                row += 1;
            }
            if !ng.is_empty() {
                groups.push(ng);
            }
        }
        Box::new(LowRankFit {
            loc: keep.iter().map(|&j| self.loc[j]).collect(),
            scale: keep.iter().map(|&j| self.scale[j]).collect(),
            rank: k,
            groups,
            factor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Link;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::{NbSpec, Parameterization, Variant};
    use crate::models::BlockKind;

    #[test]
    fn reparameterized_gradient_matches_finite_differences() {
        for case in ["plain", "joint", "mixture", "datasets"] {
            let truth = NbTruth::random(Variant::Nbvcp, 9, 12, 4);
            let data = simulate_nb(&truth, 5);
            let (model, joint) = super::super::test_model(case, &data);
            let gene = model.spec.param.gene_param();
            let guide = LowRank::new(model.layout(), gene, &joint, 2).unwrap();
            let x0 = model.initial_point();
            let n = x0.len();
            let mut v = guide.initial_params(&x0, &vec![-1.0; n]);
            // A factor well away from zero, so its entropy terms matter.
            for (j, w) in v[2 * n..].iter_mut().enumerate() {
                *w = 0.3 * ((j % 5) as f64 - 2.0) / 2.0 + 0.05;
            }
            let mut batch = Batch::full(&data);
            batch.set_cells(&data, &[1, 4, 6, 9]);
            crate::svi::guide::check_guide_gradient(&guide, &model, &batch, &v, case);
        }
    }

    /// Dense `ln det(W Wᵀ + diag(s²))` by Cholesky of the m × m matrix.
    fn dense_logdet(w: &[f64], s: &[f64], k: usize) -> f64 {
        let m = s.len();
        let mut a = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                a[i * m + j] = (0..k).map(|c| w[i * k + c] * w[j * k + c]).sum::<f64>();
            }
            a[i * m + i] += s[i] * s[i];
        }
        assert!(cholesky(&mut a, m));
        chol_logdet(&a, m)
    }

    #[test]
    fn entropy_and_draws_follow_the_low_rank_covariance() {
        let (m, k) = (6, 2);
        let w: Vec<f64> = (0..m * k)
            .map(|j| ((j * 7 % 5) as f64 - 2.0) * 0.4)
            .collect();
        let s: Vec<f64> = (0..m).map(|j| 0.2 + 0.1 * j as f64).collect();
        let (half, _) = group_a(&w, &s, k);
        let want = dense_logdet(&w, &s, k);
        let got = 2.0 * half + s.iter().map(|v| 2.0 * v.ln()).sum::<f64>();
        assert!((got - want).abs() < 1e-10, "{got} vs {want}");
        // Draws of a fitted guide: the sample covariance matches W Wᵀ + diag(s²).
        let mut layout = Layout::default();
        layout.push("r", BlockKind::Gene, m, Link::Identity, 1);
        let fit = LowRankFit {
            loc: vec![0.0; m],
            scale: s.clone(),
            rank: k,
            groups: vec![(0..m).collect()],
            factor: w.clone(),
        };
        let n = 40000;
        let sites = fit
            .sampled_sites(&layout, Summary::Draws { n, seed: 3 }, Ctl::none())
            .unwrap();
        let v = &sites[0].values; // (j, draw)
        for i in 0..m {
            for j in 0..=i {
                let c: f64 = (0..n).map(|d| v[i * n + d] * v[j * n + d]).sum::<f64>() / n as f64;
                let mut want: f64 = (0..k).map(|c| w[i * k + c] * w[j * k + c]).sum();
                if i == j {
                    want += s[i] * s[i];
                }
                assert!((c - want).abs() < 0.03, "cov[{i},{j}] {c} vs {want}");
            }
        }
    }

    #[test]
    fn fields_round_trip_and_subsets_keep_their_rows() {
        let truth = NbTruth::random(Variant::Nbvcp, 5, 4, 1);
        let data = simulate_nb(&truth, 2);
        for case in ["joint", "mixture"] {
            let (model, joint) = super::super::test_model(case, &data);
            let lay = model.layout();
            let guide = LowRank::new(lay, model.spec.param.gene_param(), &joint, 2).unwrap();
            let x0 = model.initial_point();
            let v = guide.initial_params(&x0, &vec![-1.0; x0.len()]);
            let fit = guide.fitted(&v);
            let back = super::super::import("low_rank", lay, &fit.fields(lay)).unwrap();
            let draws = |f: &dyn FittedGuide, l: &Layout| {
                f.sampled_sites(l, Summary::Draws { n: 3, seed: 9 }, Ctl::none())
                    .unwrap()
            };
            assert_eq!(
                draws(back.as_ref(), lay),
                draws(fit.as_ref(), lay),
                "{case}"
            );
            // Genes 0 and 3: the subset's draws are those genes' marginals,
            // so its factor rows are the kept genes' rows.
            let (sub_lay, keep) = lay.select(5, Some(&[0, 3]), None).unwrap();
            let sub = fit.select(&keep);
            let sub_fit =
                super::super::import("low_rank", &sub_lay, &sub.fields(&sub_lay)).unwrap();
            assert_eq!(
                sub_fit.scales().unwrap(),
                keep.iter()
                    .map(|&j| fit.scales().unwrap()[j])
                    .collect::<Vec<_>>()
            );
        }
        assert!(LowRank::new(
            &NbSpec::new(Variant::Nbdm, Parameterization::Canonical, false, Link::Exp).layout(5, 4),
            "r",
            &[],
            6
        )
        .is_err());
    }
}
