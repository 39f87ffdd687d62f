//! The mean-field guide: every unconstrained coordinate gets an independent
//! `q(x_j) = N(loc_j, exp(log_scale_j))`, parameters `[loc (n) | log_scale (n)]`.
//!
//! The parameter is `θ_j = T(x_j)`, so the guide on θ is LogNormal for Exp
//! links (the spec's family for r/mu), a logit-normal for (0,1) parameters
//! and a softplus-normal otherwise. The Beta/BetaPrime guides of the
//! original need implicit reparameterization gradients of the Gamma
//! sampler; transformed Normals are reparameterized exactly and give the
//! same fixed points up to the family's shape.
//!
//! `ELBO = ln p(u_B | x)·C/B + Σ_global [ln p(x_j) − ln q(x_j)] + C/B Σ_{c∈B} [ln p(x_c) − ln q(x_c)]`
//! with `−ln q` replaced by the analytic entropy, and `ln p − ln q` by the
//! analytic `−KL` when the prior is Gaussian in `x` (LogNormal priors on
//! Exp-linked parameters, every unconstrained prior).
//!
//! Fitted, the guide's point summary is the mode of each θ marginal (Jacobian
//! included; for simplex blocks the softmax of the location, the median of
//! the logistic-normal), and draws come from one stream in layout order
//! (simplex blocks from a stream of their own).

use super::{BlockFields, FittedGuide, Guide};
use crate::data::Batch;
use crate::dist::Link;
use crate::error::{CoreError, Result};
use crate::models::{BlockKind, Layout, Model};
use crate::posterior::{put_draw, site_for, softmax_into, Site, Source, Summary};
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::StandardNormal;

const HALF_LN_2PI_E: f64 = 1.418_938_533_204_672_7;

/// The mean-field family over `dim` coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanField {
    pub dim: usize,
}

/// Buffers of one ELBO evaluation.
pub struct Scratch {
    x: Vec<f64>,
    eps: Vec<f64>,
    gx: Vec<f64>,
    /// `exp(log_scale)` of the active coordinates, computed once per step.
    s: Vec<f64>,
}

impl Guide for MeanField {
    type Scratch = Scratch;

    fn n_params(&self) -> usize {
        2 * self.dim
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            x: vec![0.0; self.dim],
            eps: vec![0.0; self.dim],
            gx: vec![0.0; self.dim],
            s: vec![0.0; self.dim],
        }
    }

    fn initial_params(&self, x0: &[f64], ln_scale0: &[f64]) -> Vec<f64> {
        x0.iter().chain(ln_scale0).copied().collect()
    }

    fn loss_and_grad<M: Model, R: Rng>(
        &self,
        model: &M,
        params: &[f64],
        batch: &Batch,
        rng: &mut R,
        scratch: &mut Scratch,
        ws: &mut M::Workspace,
        grad: &mut [f64],
    ) -> f64 {
        loss_and_grad(model, params, batch, rng, scratch, ws, grad)
    }

    fn location(&self, params: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&params[..self.dim]);
    }

    fn spread(&self, params: &[f64], out: &mut [f64]) {
        for (o, ls) in out.iter_mut().zip(&params[self.dim..]) {
            *o = ls.exp();
        }
    }

    fn fitted(&self, params: &[f64]) -> Box<dyn FittedGuide> {
        let (loc, log_scale) = params.split_at(self.dim);
        Box::new(MeanFieldFit {
            loc: loc.to_vec(),
            scale: log_scale.iter().map(|v| v.exp()).collect(),
        })
    }
}

/// Indices of the coordinates that take part in a step: all global ones, and
/// the batch cells of cell blocks.
pub(crate) fn for_each_active(
    model: &impl Model,
    batch: &Batch,
    mut f: impl FnMut(usize, usize, usize, f64),
) {
    for (b, block) in model.layout().blocks.iter().enumerate() {
        match block.kind {
            BlockKind::Cell => {
                for &c in &batch.cells {
                    f(b, c as usize, block.offset + c as usize, batch.scale);
                }
            }
            BlockKind::Gene | BlockKind::Scalar | BlockKind::Simplex => {
                (0..block.len).for_each(|j| f(b, j, block.offset + j, 1.0))
            }
        }
    }
}

/// Returns the loss `−ELBO` and writes `∂loss/∂v` into `grad`, where
/// `v = [loc (n) | log_scale (n)]`.
fn loss_and_grad<M: Model, R: Rng>(
    model: &M,
    v: &[f64],
    batch: &Batch,
    rng: &mut R,
    buf: &mut Scratch,
    ws: &mut M::Workspace,
    grad: &mut [f64],
) -> f64 {
    let n = model.layout().total;
    let (loc, log_scale) = v.split_at(n);
    grad.iter_mut().for_each(|g| *g = 0.0);
    // Draw the noise in a fixed sequential order so results never depend on threads.
    {
        let (x, eps, sc) = (&mut buf.x, &mut buf.eps, &mut buf.s);
        for_each_active(model, batch, |_, _, k, _| {
            let e: f64 = rng.sample(StandardNormal);
            eps[k] = e;
            sc[k] = log_scale[k].exp();
            x[k] = loc[k] + sc[k] * e;
        });
    }
    buf.gx.iter_mut().for_each(|g| *g = 0.0);
    let ll = model.log_lik_grad(&buf.x, batch, &mut buf.gx, ws);
    let mut elbo = ll + model.joint_prior_grad(&buf.x, &mut buf.gx);
    let (g_loc, g_ls) = grad.split_at_mut(n);
    let (x, eps, gx, sc) = (&buf.x, &buf.eps, &buf.gx, &buf.s);
    let blocks = &model.layout().blocks;
    let mut cache = KlCache::default();
    for_each_active(model, batch, |b, j, k, w| {
        let (de, gl, gs) = mf_term(
            model.prior(b, j),
            blocks[b].link,
            (loc[k], log_scale[k], sc[k], eps[k], x[k], gx[k], w),
            &mut cache,
        );
        elbo += de;
        g_loc[k] = gl;
        g_ls[k] = gs;
    });
    -elbo
}

/// The last prior scale of [`mf_term`] and its logarithm (prior scales
/// repeat across a block: one logarithm per block, not per coordinate).
pub(crate) struct KlCache {
    s0: f64,
    ln_s0: f64,
}

impl Default for KlCache {
    fn default() -> Self {
        KlCache {
            s0: f64::NAN,
            ln_s0: f64::NAN,
        }
    }
}

/// One mean-field coordinate's share of the ELBO, weighted by `w` (the batch
/// scale of cell coordinates), and the loss gradient with respect to its
/// `loc` and `log_scale`: `(Δelbo, ∂loss/∂loc, ∂loss/∂log_scale)`, from the
/// draw `x = loc + s·eps` and `gx = ∂(ln p(u|x) + joint priors)/∂x`. The
/// analytic KL where the prior is Gaussian in `x`, else the prior at the
/// draw plus the analytic entropy.
pub(crate) fn mf_term(
    prior: crate::dist::Prior,
    link: Link,
    (loc, log_scale, s, eps, x, gx, w): (f64, f64, f64, f64, f64, f64, f64),
    cache: &mut KlCache,
) -> (f64, f64, f64) {
    match prior.normal_in_x(link) {
        Some((m0, s0)) => {
            let d = loc - m0;
            if s0 != cache.s0 {
                (cache.s0, cache.ln_s0) = (s0, s0.ln());
            }
            // ln(s0/s) = ln s0 − log_scale: one logarithm fewer per coordinate.
            let kl = cache.ln_s0 - log_scale + (s * s + d * d) / (2.0 * s0 * s0) - 0.5;
            (
                -w * kl,
                -(gx - w * d / (s0 * s0)),
                -(gx * s * eps - w * (s * s / (s0 * s0) - 1.0)),
            )
        }
        None => {
            let (lp, dlp) = prior.ln_density_x(x, link);
            let gt = gx + w * dlp;
            (
                w * (lp + log_scale + HALF_LN_2PI_E),
                -gt,
                -(gt * s * eps + w),
            )
        }
    }
}

/// A fitted mean-field guide: `loc` and `scale` of every coordinate, in
/// layout order.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanFieldFit {
    pub loc: Vec<f64>,
    pub scale: Vec<f64>,
}

impl MeanFieldFit {
    /// From the stored `loc` and `scale` of every block of `layout`.
    pub fn from_fields(layout: &Layout, fields: &[BlockFields]) -> Result<Self> {
        let mut fit = MeanFieldFit {
            loc: Vec::with_capacity(layout.total),
            scale: Vec::with_capacity(layout.total),
        };
        for b in &layout.blocks {
            let f = fields.iter().find(|f| f.block == b.name);
            let (loc, scale) = match f.map(|f| (f.get("loc"), f.get("scale"))) {
                Some((Some(l), Some(s))) if l.len() == b.len && s.len() == b.len => (l, s),
                _ => {
                    return Err(CoreError::arg(
                        "fit",
                        format!(
                            "its mean-field guide has no `loc` and `scale` of length {} for '{}'",
                            b.len, b.name
                        ),
                    ))
                }
            };
            if scale.iter().any(|s| !(*s > 0.0)) {
                return Err(CoreError::arg(
                    "fit",
                    format!("its guide scales of '{}' are not positive", b.name),
                ));
            }
            fit.loc.extend_from_slice(loc);
            fit.scale.extend_from_slice(scale);
        }
        Ok(fit)
    }
}

impl Source for MeanFieldFit {
    fn sampled_sites(&self, layout: &Layout, summary: Summary, ctl: Ctl<'_>) -> Result<Vec<Site>> {
        gaussian_sites(layout, summary, ctl, &self.loc, &self.scale, |rng, x| {
            for (j, xj) in x.iter_mut().enumerate() {
                let e: f64 = rng.sample(StandardNormal);
                *xj = self.loc[j] + self.scale[j] * e;
            }
        })
    }

    fn scales(&self) -> Option<Vec<f64>> {
        Some(self.scale.clone())
    }
}

/// The sites of a Gaussian guide over `x`: for [`Summary::Point`] the mode
/// of each coordinate's marginal `N(loc_j, scale_j)` through its link (for
/// simplex blocks the softmax of the location), for draws `draw(rng, x)`
/// filling one draw of every coordinate from one stream in layout order
/// (simplex blocks then draw from a stream of their own with the marginal
/// scales, so that their draws do not depend on the other blocks).
pub(crate) fn gaussian_sites(
    layout: &Layout,
    summary: Summary,
    ctl: Ctl<'_>,
    loc: &[f64],
    scale: &[f64],
    mut draw: impl FnMut(&mut ChaCha8Rng, &mut [f64]),
) -> Result<Vec<Site>> {
    if layout.total != loc.len() {
        return Err(CoreError::arg("fit", "its guide does not match its layout"));
    }
    let n = match summary {
        Summary::Point => 1,
        Summary::Draws { n, .. } => n,
    };
    crate::posterior::check_draws(layout, n)?;
    let mut sites: Vec<Site> = layout.blocks.iter().map(|b| site_for(b, n)).collect();
    match summary {
        Summary::Point => {
            for (b, site) in layout.blocks.iter().zip(sites.iter_mut()) {
                if b.kind == BlockKind::Simplex {
                    put_draw(b, loc, 0, site);
                    continue;
                }
                for j in b.range() {
                    site.values[j - b.offset] = transformed_normal_mode(b.link, loc[j], scale[j]);
                }
            }
        }
        Summary::Draws { n, seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut x = vec![0.0; layout.total];
            let work = ctl.work(n);
            for s in 0..n {
                if work.stopped() {
                    return Err(crate::CoreError::cancelled());
                }
                work.tick();
                draw(&mut rng, &mut x);
                for (b, site) in layout.blocks.iter().zip(sites.iter_mut()) {
                    if b.kind != BlockKind::Simplex {
                        put_draw(b, &x, s, site);
                    }
                }
            }
            // Simplex blocks (mixing weights) draw from a stream of their own.
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006d_6978);
            for (b, site) in layout.blocks.iter().zip(sites.iter_mut()) {
                if b.kind != BlockKind::Simplex {
                    continue;
                }
                let mut z = vec![0.0; b.len + 1];
                for s in 0..n {
                    for j in 0..b.len {
                        let e: f64 = rng.sample(StandardNormal);
                        z[j] = loc[b.offset + j] + scale[b.offset + j] * e;
                    }
                    z[b.len] = 0.0;
                    softmax_into(&z, |k, v| site.values[k * n + s] = v);
                }
            }
        }
    }
    Ok(sites)
}

impl FittedGuide for MeanFieldFit {
    fn family(&self) -> &'static str {
        "mean_field"
    }

    fn fields(&self, layout: &Layout) -> Vec<BlockFields> {
        layout
            .blocks
            .iter()
            .map(|b| BlockFields {
                block: b.name.clone(),
                fields: vec![
                    ("loc".into(), self.loc[b.range()].to_vec()),
                    ("scale".into(), self.scale[b.range()].to_vec()),
                ],
            })
            .collect()
    }

    fn select(&self, keep: &[usize]) -> Box<dyn FittedGuide> {
        Box::new(MeanFieldFit {
            loc: keep.iter().map(|&j| self.loc[j]).collect(),
            scale: keep.iter().map(|&j| self.scale[j]).collect(),
        })
    }
}

/// Mode of the density of `θ = T(x)`, `x ~ N(loc, scale)`.
pub fn transformed_normal_mode(link: Link, loc: f64, scale: f64) -> f64 {
    match link {
        Link::Exp => (loc - scale * scale).exp(),
        _ => {
            // Maximise ln N(x; loc, scale) − ln T'(x) over x: a grid over ±6 sd
            // (the density can be bimodal for wide logit-normals), then golden section.
            let f = |x: f64| {
                let z = (x - loc) / scale;
                -0.5 * z * z - link.eval(x).ln_jac
            };
            let (lo, hi) = (loc - 6.0 * scale - 1.0, loc + 6.0 * scale + 1.0);
            let n = 240;
            let h = (hi - lo) / n as f64;
            let mut best = (lo, f(lo));
            for k in 1..=n {
                let x = lo + k as f64 * h;
                let v = f(x);
                if v > best.1 {
                    best = (x, v);
                }
            }
            let (mut a, mut b) = (best.0 - h, best.0 + h);
            let g = 0.618_033_988_749_895;
            for _ in 0..80 {
                let c = b - g * (b - a);
                let d = a + g * (b - a);
                if f(c) > f(d) {
                    b = d;
                } else {
                    a = c;
                }
            }
            link.forward(0.5 * (a + b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CountMatrix;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::{NbModel, NbSpec, Parameterization, Variant};

    #[test]
    fn reparameterized_gradient_matches_finite_differences() {
        // With the noise held fixed, the single-sample loss is a deterministic
        // function of (loc, log_scale); its gradient must match differences.
        // Cases: plain, unconstrained, mixture (joint Dirichlet prior), capture prior.
        let cases = [
            (Parameterization::Canonical, false, "plain"),
            (Parameterization::MeanOdds, true, "plain"),
            (Parameterization::MeanProb, false, "plain"),
            (Parameterization::Canonical, false, "mixture"),
            (Parameterization::MeanOdds, false, "capture_prior"),
        ];
        for variant in Variant::ALL {
            for (param, unc, case) in cases {
                let truth = NbTruth::random(variant, 15, 12, 4);
                let data: CountMatrix = simulate_nb(&truth, 5);
                let mut spec = NbSpec::new(variant, param, unc, Link::Softplus);
                match case {
                    "mixture" => spec
                        .set_mixture(3, &[param.gene_param(), param.scalar_param()], 2.0)
                        .unwrap(),
                    "capture_prior" if variant.has_capture() => {
                        spec.set_prior("eta_capture", 2000f64.ln(), 0.5).unwrap()
                    }
                    "capture_prior" => continue,
                    _ => {}
                }
                let model = NbModel::new(spec, &data).unwrap();
                let x0 = model.initial_point();
                let n = x0.len();
                let mut v = x0.clone();
                v.extend((0..n).map(|j| -1.0 - 0.05 * (j % 7) as f64));
                let mut batch = Batch::full(&data);
                batch.set_cells(&data, &[1, 4, 6, 9]);
                let guide = MeanField { dim: n };
                crate::svi::guide::check_guide_gradient(
                    &guide,
                    &model,
                    &batch,
                    &v,
                    &format!("{variant:?} {param:?} unconstrained={unc} {case}"),
                );
            }
        }
    }

    #[test]
    fn modes_are_density_maxima() {
        for (link, loc, scale) in [
            (Link::Sigmoid, 0.3, 0.2),
            (Link::Sigmoid, -2.0, 1.5),
            (Link::Softplus, 0.5, 0.4),
            (Link::Exp, 1.0, 0.5),
        ] {
            let m = transformed_normal_mode(link, loc, scale);
            let dens = |t: f64| {
                let x = link.inverse(t);
                let z = (x - loc) / scale;
                -0.5 * z * z - link.eval(x).ln_jac
            };
            for d in [-1e-3, 1e-3] {
                assert!(
                    dens(m) >= dens(m * (1.0 + d)) - 1e-12,
                    "{link:?} {loc} {scale}"
                );
            }
        }
        // Logit-normal with small scale: mode ≈ sigmoid(loc).
        let m = transformed_normal_mode(Link::Sigmoid, 0.4, 1e-3);
        assert!((m - crate::math::sigmoid(0.4)).abs() < 1e-5);
    }

    #[test]
    fn fields_round_trip_and_subsets_keep_their_coordinates() {
        let mut layout = Layout::default();
        layout.push("r", BlockKind::Gene, 3, Link::Exp, 1);
        layout.push("p", BlockKind::Scalar, 1, Link::Sigmoid, 1);
        layout.push("mixing_weights", BlockKind::Simplex, 2, Link::Identity, 3);
        let fit = MeanFieldFit {
            loc: vec![0.1, 0.2, 0.3, -0.5, 1.0, -1.0],
            scale: vec![0.5, 0.4, 0.3, 0.2, 0.1, 0.6],
        };
        let fields = fit.fields(&layout);
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[0].get("loc"), Some(&[0.1, 0.2, 0.3][..]));
        let back = super::super::import("mean_field", &layout, &fields).unwrap();
        let pt = |f: &dyn FittedGuide| f.sampled_sites(&layout, Summary::Point, Ctl::none());
        assert_eq!(pt(back.as_ref()).unwrap(), pt(&fit).unwrap());
        // The point of a simplex block is softmax([loc, 0]).
        let w = &pt(&fit).unwrap()[2];
        let z = [1f64.exp(), (-1f64).exp(), 1.0];
        let tot: f64 = z.iter().sum();
        assert!(w
            .values
            .iter()
            .zip(z)
            .all(|(a, b)| (a - b / tot).abs() < 1e-12));
        // Dropping gene 1 drops its loc and scale only.
        let (sub_layout, keep) = layout.select(3, Some(&[0, 2]), None).unwrap();
        let sub = fit.select(&keep);
        let f0 = &sub.fields(&sub_layout)[0];
        assert_eq!(f0.get("scale"), Some(&[0.5, 0.3][..]));
        // Malformed fields are an input error, not a panic.
        let mut bad = fields.clone();
        bad[1].fields.retain(|(n, _)| n != "scale");
        assert!(super::super::import("mean_field", &layout, &bad).is_err());
        assert!(super::super::import("flow", &layout, &fields).is_err());
    }
}
