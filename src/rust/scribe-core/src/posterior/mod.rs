//! Posterior summaries and analyses, whatever engine made the fit.
//!
//! A fit reaches this module as a [`Source`]: anything that yields the values
//! `θ = link(x)` of the blocks of a model's [`Layout`], as a point summary or
//! as draws. SVI guides are sources (`svi::guide`), so are MCMC draws of the
//! unconstrained vector ([`XDraws`]). The model family then derives its named
//! quantities (`models::nb::sites`) and runs its analyses: [`nb`] for the
//! negative-binomial family, [`lognormal`] for latent-variable fits.

pub mod lognormal;
pub mod nb;

use crate::error::{CoreError, Result};
use crate::models::{Block, BlockKind, Layout};
use crate::progress::Ctl;

/// What a log-likelihood is summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Cell,
    Gene,
}

impl By {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cell" => Ok(By::Cell),
            "gene" => Ok(By::Gene),
            other => Err(crate::CoreError::arg(
                "by",
                format!("must be \"cell\" or \"gene\", not \"{other}\""),
            )),
        }
    }
}

/// A named site with `n_draws × len` values, draw index fastest (column-major in R).
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    pub kind: BlockKind,
    pub n_draws: usize,
    /// Mixture components (1 if none); value `(s, k, j)` sits at `(k·len + j)·n_draws + s`.
    pub n_comp: usize,
    pub values: Vec<f64>,
}

impl Site {
    /// Values per component and draw.
    pub fn len(&self) -> usize {
        self.values.len() / (self.n_draws.max(1) * self.n_comp.max(1))
    }
    #[inline]
    pub fn at(&self, s: usize, k: usize, j: usize) -> f64 {
        let k = if self.n_comp == 1 { 0 } else { k };
        self.values[(k * self.len() + j) * self.n_draws + s]
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Which values of a posterior to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// One point per coordinate: the source's point estimate (the mode of
    /// each guide marginal; the posterior mean of θ for draws).
    Point,
    /// `n` draws (`seed` drives sources that sample).
    Draws { n: usize, seed: u64 },
}

/// A fitted posterior over a model's unconstrained vector.
pub trait Source: Sync {
    /// The values `θ = link(x)` of every block of `layout` (simplex blocks
    /// as their `K` weights), with `n_draws = 1` for [`Summary::Point`].
    /// Stops (with `CoreError::Cancelled`) when `ctl` is cancelled.
    fn sampled_sites(&self, layout: &Layout, summary: Summary, ctl: Ctl<'_>) -> Result<Vec<Site>>;

    /// Per-coordinate posterior scales of `x`, where the source knows them
    /// (warm starts precondition MCMC with them).
    fn scales(&self) -> Option<Vec<f64>> {
        None
    }
}

/// Checks that `n` draws of every coordinate of `layout` (and as many again
/// for the derived quantities) fit in memory, before any is drawn.
pub(crate) fn check_draws(layout: &Layout, n: usize) -> Result<()> {
    crate::limits::check_values("n_samples", 2.0 * n as f64 * (layout.total as f64 + 1.0))
}

/// `softmax([z])` written through `put(k, w_k)`.
pub(crate) fn softmax_into(z: &[f64], mut put: impl FnMut(usize, f64)) {
    let mx = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tot: f64 = z.iter().map(|v| (v - mx).exp()).sum();
    for (k, v) in z.iter().enumerate() {
        put(k, (v - mx).exp() / tot);
    }
}

/// An empty site for `block` holding `n` draws of its values.
pub(crate) fn site_for(block: &Block, n: usize) -> Site {
    let len = if block.kind == BlockKind::Simplex {
        block.len + 1
    } else {
        block.len
    };
    Site {
        name: block.name.clone(),
        kind: block.kind,
        n_draws: n,
        n_comp: block.n_comp,
        values: vec![0.0; n * len],
    }
}

/// Writes draw `s` of `x` (one value per coordinate of `block`'s layout) into
/// `site`: `link(x)` per coordinate, `softmax([x, 0])` for a simplex.
pub(crate) fn put_draw(block: &Block, x: &[f64], s: usize, site: &mut Site) {
    let n = site.n_draws;
    let xb = &x[block.range()];
    if block.kind == BlockKind::Simplex {
        let mut z = xb.to_vec();
        z.push(0.0);
        softmax_into(&z, |k, v| site.values[k * n + s] = v);
        return;
    }
    for (j, &v) in xb.iter().enumerate() {
        site.values[j * n + s] = block.link.forward(v);
    }
}

/// Draws of the unconstrained vector (MCMC chains one after another):
/// `x[d·dim + j]`. The point summary is the posterior mean of each `θ`
/// (derived quantities then follow by plug-in); draws are evenly spaced
/// over all kept draws, recycled when more are asked for than exist.
#[derive(Debug, Clone, PartialEq)]
pub struct XDraws {
    pub dim: usize,
    pub x: Vec<f64>,
}

impl XDraws {
    pub fn n_draws(&self) -> usize {
        self.x.len() / self.dim.max(1)
    }

    /// The same draws restricted to the coordinates `keep`.
    pub fn select(&self, keep: &[usize]) -> XDraws {
        let x = self
            .x
            .chunks(self.dim.max(1))
            .flat_map(|d| keep.iter().map(move |&j| d[j]))
            .collect();
        XDraws { dim: keep.len(), x }
    }
}

impl Source for XDraws {
    fn sampled_sites(&self, layout: &Layout, summary: Summary, ctl: Ctl<'_>) -> Result<Vec<Site>> {
        if layout.total != self.dim {
            return Err(CoreError::arg(
                "fit",
                format!(
                    "its draws have {} coordinates, its layout {}",
                    self.dim, layout.total
                ),
            ));
        }
        let total = self.n_draws();
        check_draws(
            layout,
            match summary {
                Summary::Point => total,
                Summary::Draws { n, .. } => n,
            },
        )?;
        let cols: Vec<usize> = match summary {
            Summary::Point => (0..total).collect(),
            Summary::Draws { n, .. } => (0..n)
                .map(|i| if n <= total { i * total / n } else { i % total })
                .collect(),
        };
        if cols.is_empty() || total == 0 {
            return Err(CoreError::arg("n_samples", "no such posterior draws"));
        }
        let n = cols.len();
        let mut sites: Vec<Site> = layout.blocks.iter().map(|b| site_for(b, n)).collect();
        let work = ctl.work(n);
        for (s, &c) in cols.iter().enumerate() {
            if work.stopped() {
                break;
            }
            work.tick();
            let x = &self.x[c * self.dim..(c + 1) * self.dim];
            for (b, site) in layout.blocks.iter().zip(sites.iter_mut()) {
                put_draw(b, x, s, site);
            }
        }
        if summary == Summary::Point {
            for site in &mut sites {
                let m = site.values.len() / n;
                site.values = (0..m)
                    .map(|j| site.values[j * n..(j + 1) * n].iter().sum::<f64>() / n as f64)
                    .collect();
                site.n_draws = 1;
            }
        }
        work.finish(sites)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Link;

    fn layout() -> Layout {
        let mut l = Layout::default();
        l.push("r", BlockKind::Gene, 2, Link::Exp, 1);
        l.push("mixing_weights", BlockKind::Simplex, 1, Link::Identity, 2);
        l
    }

    #[test]
    fn draws_point_summary_is_the_posterior_mean_of_theta() {
        // Three draws of (ln r1, ln r2, mixing logit).
        let d = XDraws {
            dim: 3,
            x: vec![0.0, 1.0, 0.0, 1.0, 2.0, 2.0, 2.0, 0.0, -1.0],
        };
        let l = layout();
        let pt = d.sampled_sites(&l, Summary::Point, Ctl::none()).unwrap();
        let r1 = (1.0 + 1f64.exp() + 2f64.exp()) / 3.0;
        assert!((pt[0].values[0] - r1).abs() < 1e-12);
        let w: Vec<f64> = [0.0f64, 2.0, -1.0]
            .iter()
            .map(|z| z.exp() / (z.exp() + 1.0))
            .collect();
        assert!((pt[1].values[0] - w.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        assert!((pt[1].values[0] + pt[1].values[1] - 1.0).abs() < 1e-12);
        // Draws: evenly spaced, recycled beyond the three kept.
        let dr = d
            .sampled_sites(&l, Summary::Draws { n: 5, seed: 0 }, Ctl::none())
            .unwrap();
        let r2: Vec<f64> = (0..5).map(|s| dr[0].at(s, 0, 1).ln()).collect();
        let want = [1.0, 2.0, 0.0, 1.0, 2.0];
        assert!(r2.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12));
        // Subsetting to gene 2 keeps its draws.
        let sub = d.select(&[1, 2]);
        assert_eq!(sub.x, vec![1.0, 0.0, 2.0, 2.0, 0.0, -1.0]);
    }
}
