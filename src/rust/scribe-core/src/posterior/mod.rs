//! Point summaries and draws of a fitted guide, mapped to named model sites.
//!
//! A guide coordinate is `x ~ N(loc, scale)`, `θ = T(x)`. Its MAP summary is
//! the mode of the density of θ (Jacobian included): closed form for Exp
//! (`exp(loc − scale²)`), found numerically for Sigmoid and Softplus. Derived
//! NB quantities (`r`, `p`, `mu`, `phi`, `p_capture`, `p_hat`) follow from the
//! sampled ones by the parameterization's identities (plug-in for the MAP,
//! per draw for samples).

pub mod denoise;
pub mod draws;
pub mod loglik;
pub mod normalize;
pub mod predictive;

use crate::dist::Link;
use crate::error::{CoreError, Result};
use crate::models::nb::{NbSpec, Parameterization};
use crate::models::BlockKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A fitted guide block: one site's variational parameters.
#[derive(Debug, Clone)]
pub struct GuideBlock {
    pub name: String,
    pub kind: BlockKind,
    pub link: Link,
    pub loc: Vec<f64>,
    pub scale: Vec<f64>,
    /// Number of mixture components along the block (1 if shared); values are
    /// component-major (`k · len + j`).
    pub n_comp: usize,
}

/// The guide blocks of a fit: `params = [loc (n) | log_scale (n)]` over `layout`.
/// Gene blocks longer than `n_genes` carry one slice per mixture component.
pub fn guide_blocks(
    layout: &crate::models::Layout,
    params: &[f64],
    n_genes: usize,
) -> Vec<GuideBlock> {
    let n = layout.total;
    layout
        .blocks
        .iter()
        .map(|b| GuideBlock {
            name: b.name.clone(),
            kind: b.kind,
            link: b.link,
            loc: params[b.offset..b.offset + b.len].to_vec(),
            scale: params[n + b.offset..n + b.offset + b.len]
                .iter()
                .map(|v| v.exp())
                .collect(),
            n_comp: n_comp_of(b, n_genes),
        })
        .collect()
}

/// Mixture components along a layout block (1 if shared).
pub fn n_comp_of(b: &crate::models::Block, n_genes: usize) -> usize {
    match b.kind {
        _ if b.name == "mixing_weights" => 1,
        BlockKind::Gene => b.len / n_genes.max(1),
        BlockKind::Scalar => b.len,
        BlockKind::Cell => 1,
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

/// Values of every sampled site: the mode (`n_draws = 1`) or draws from the guide.
fn sampled_sites(blocks: &[GuideBlock], draws: Option<(usize, u64)>) -> Vec<Site> {
    match draws {
        None => blocks
            .iter()
            .map(|b| Site {
                name: b.name.clone(),
                kind: b.kind,
                n_draws: 1,
                n_comp: b.n_comp,
                values: b
                    .loc
                    .iter()
                    .zip(&b.scale)
                    .map(|(&l, &s)| transformed_normal_mode(b.link, l, s))
                    .collect(),
            })
            .collect(),
        Some((n, seed)) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut out: Vec<Site> = blocks
                .iter()
                .map(|b| Site {
                    name: b.name.clone(),
                    kind: b.kind,
                    n_draws: n,
                    n_comp: b.n_comp,
                    values: vec![0.0; n * b.loc.len()],
                })
                .collect();
            for s in 0..n {
                for (b, site) in blocks.iter().zip(out.iter_mut()) {
                    for j in 0..b.loc.len() {
                        let e: f64 = rng.sample(StandardNormal);
                        site.values[j * n + s] = b.link.forward(b.loc[j] + b.scale[j] * e);
                    }
                }
            }
            out
        }
    }
}

/// Sampled plus derived NB sites (MAP when `draws` is `None`).
///
/// For mixtures, `r`, `mu`, `p`, `phi` carry a component axis whenever the
/// gene or scalar parameter does, and `mixing_weights = softmax([z, 0])` per
/// draw (for the MAP: the softmax of the guide's location, i.e. the median of
/// the logistic-normal guide).
pub fn nb_sites(
    spec: &NbSpec,
    blocks: &[GuideBlock],
    draws: Option<(usize, u64)>,
) -> Result<Vec<Site>> {
    let mut sites = sampled_sites(blocks, draws);
    if let Some(mix) = blocks.iter().find(|b| b.name == "mixing_weights") {
        let n = sites[0].n_draws;
        let k_n = mix.loc.len() + 1;
        let mut w = vec![0.0; n * k_n];
        let mut rng = ChaCha8Rng::seed_from_u64(draws.map_or(0, |d| d.1) ^ 0x006d_6978);
        let mut z = vec![0.0; k_n];
        for s in 0..n {
            for j in 0..k_n - 1 {
                let e: f64 = if draws.is_some() {
                    rng.sample(StandardNormal)
                } else {
                    0.0
                };
                z[j] = mix.loc[j] + mix.scale[j] * e;
            }
            z[k_n - 1] = 0.0;
            softmax_into(&z, |k, v| w[k * n + s] = v);
        }
        sites.retain(|s| s.name != "mixing_weights");
        sites.push(Site {
            name: "mixing_weights".into(),
            kind: BlockKind::Scalar,
            n_draws: n,
            n_comp: k_n,
            values: w,
        });
    }
    derive_nb_sites(spec, sites)
}

fn softmax_into(z: &[f64], mut put: impl FnMut(usize, f64)) {
    let mx = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tot: f64 = z.iter().map(|v| (v - mx).exp()).sum();
    for (k, v) in z.iter().enumerate() {
        put(k, (v - mx).exp() / tot);
    }
}

/// A block of an MCMC draws matrix (unconstrained coordinates).
#[derive(Debug, Clone, PartialEq)]
pub struct DrawBlock {
    pub name: String,
    pub kind: BlockKind,
    pub link: Link,
    pub offset: usize,
    pub len: usize,
    /// Mixture components along the block (1 if shared).
    pub n_comp: usize,
}

/// Which MCMC draws to summarise.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// Posterior means of the sampled sites (derived sites by plug-in).
    Mean,
    /// These draws (columns of the draws matrix).
    Draws(Vec<usize>),
}

/// Sampled plus derived NB sites from MCMC draws: `x` holds one draw of all
/// `dim` unconstrained coordinates per column.
pub fn nb_sites_from_draws(
    spec: &NbSpec,
    blocks: &[DrawBlock],
    x: &[f64],
    dim: usize,
    pick: &Pick,
) -> Result<Vec<Site>> {
    let n_total = x.len() / dim.max(1);
    let cols: Vec<usize> = match pick {
        Pick::Mean => (0..n_total).collect(),
        Pick::Draws(c) => c.clone(),
    };
    if cols.is_empty() || cols.iter().any(|&c| c >= n_total) {
        return Err(CoreError::arg("n_samples", "no such posterior draws"));
    }
    let n = cols.len();
    let mut sites = Vec::with_capacity(blocks.len());
    for b in blocks {
        if b.name == "mixing_weights" {
            let k_n = b.len + 1;
            let mut w = vec![0.0; n * k_n];
            let mut z = vec![0.0; k_n];
            for (s, &c) in cols.iter().enumerate() {
                z[..b.len].copy_from_slice(&x[c * dim + b.offset..c * dim + b.offset + b.len]);
                z[b.len] = 0.0;
                softmax_into(&z, |k, v| w[k * n + s] = v);
            }
            sites.push(Site {
                name: b.name.clone(),
                kind: b.kind,
                n_draws: n,
                n_comp: k_n,
                values: w,
            });
            continue;
        }
        let mut values = vec![0.0; n * b.len];
        for (s, &c) in cols.iter().enumerate() {
            for j in 0..b.len {
                values[j * n + s] = b.link.forward(x[c * dim + b.offset + j]);
            }
        }
        sites.push(Site {
            name: b.name.clone(),
            kind: b.kind,
            n_draws: n,
            n_comp: b.n_comp,
            values,
        });
    }
    if *pick == Pick::Mean {
        for site in &mut sites {
            let m = site.values.len() / n;
            site.values = (0..m)
                .map(|j| site.values[j * n..(j + 1) * n].iter().sum::<f64>() / n as f64)
                .collect();
            site.n_draws = 1;
        }
    }
    derive_nb_sites(spec, sites)
}

/// Adds the derived NB sites (`r`, `mu`, `p`, `phi`, capture `p_capture`
/// and `p_hat`) to the sampled ones, per draw.
fn derive_nb_sites(spec: &NbSpec, mut sites: Vec<Site>) -> Result<Vec<Site>> {
    let get = |name: &str, sites: &[Site]| -> Result<Site> {
        sites
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| CoreError::arg("params", format!("the fit has no '{name}' parameters")))
    };
    let n = sites[0].n_draws;
    let gene = get(spec.param.gene_param(), &sites)?;
    let scalar = get(spec.param.scalar_param(), &sites)?;
    let g_len = gene.len();
    let k_rp = gene.n_comp.max(scalar.n_comp);
    let k_s = scalar.n_comp;
    // p per (draw, component)
    let p_at = |s: usize, k: usize| -> f64 {
        let v = scalar.at(s, k, 0);
        if spec.param == Parameterization::MeanOdds {
            1.0 / (1.0 + v)
        } else {
            v
        }
    };
    let mut p = vec![0.0; n * k_s];
    for k in 0..k_s {
        for s in 0..n {
            p[k * n + s] = p_at(s, k);
        }
    }
    let mut r = vec![0.0; n * g_len * k_rp];
    let mut mu = vec![0.0; n * g_len * k_rp];
    for k in 0..k_rp {
        for j in 0..g_len {
            for s in 0..n {
                let idx = (k * g_len + j) * n + s;
                let ps = p_at(s, k);
                let t = gene.at(s, k, j);
                let odds = ps / (1.0 - ps);
                if spec.param == Parameterization::Canonical {
                    r[idx] = t;
                    mu[idx] = t * odds;
                } else {
                    mu[idx] = t;
                    r[idx] = t / odds;
                }
            }
        }
    }
    let derived = |name: &str, kind, n_comp, values| Site {
        name: name.to_string(),
        kind,
        n_draws: n,
        n_comp,
        values,
    };
    sites.retain(|s| !matches!(s.name.as_str(), "r" | "mu" | "p" | "phi"));
    sites.push(derived("r", BlockKind::Gene, k_rp, r));
    sites.push(derived("mu", BlockKind::Gene, k_rp, mu));
    sites.push(derived("p", BlockKind::Scalar, k_s, p.clone()));
    sites.push(derived(
        "phi",
        BlockKind::Scalar,
        k_s,
        p.iter().map(|p| (1.0 - p) / p).collect(),
    ));
    // Capture: ν, and the identified per-cell success probability p̂_c (per p component).
    let cap = sites.iter().find(|s| s.kind == BlockKind::Cell).cloned();
    if let Some(cap) = cap {
        let nu: Vec<f64> = match cap.name.as_str() {
            "p_capture" => cap.values.clone(),
            "phi_capture" => cap.values.iter().map(|f| 1.0 / (1.0 + f)).collect(),
            "eta_capture" => cap.values.iter().map(|e| (-e).exp()).collect(),
            other => {
                return Err(CoreError::arg(
                    "params",
                    format!("unknown capture site '{other}'"),
                ))
            }
        };
        let c_len = cap.len();
        let mut p_hat = vec![0.0; n * c_len * k_s];
        for k in 0..k_s {
            for c in 0..c_len {
                for s in 0..n {
                    let (ps, v) = (p_at(s, k), nu[c * n + s]);
                    p_hat[(k * c_len + c) * n + s] = ps * v / (1.0 - ps * (1.0 - v));
                }
            }
        }
        if cap.name == "phi_capture" || cap.name == "eta_capture" {
            sites.push(derived("p_capture", BlockKind::Cell, 1, nu));
        }
        sites.push(derived("p_hat", BlockKind::Cell, k_s, p_hat));
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn derived_sites_follow_parameterization_identities() {
        let spec = NbSpec::new(
            crate::models::nb::Variant::Nbvcp,
            Parameterization::MeanOdds,
            true,
            Link::Softplus,
        );
        let blocks = vec![
            GuideBlock {
                name: "mu".into(),
                kind: BlockKind::Gene,
                link: Link::Softplus,
                loc: vec![1.0, 2.0],
                scale: vec![0.1, 0.2],
                n_comp: 1,
            },
            GuideBlock {
                name: "phi".into(),
                kind: BlockKind::Scalar,
                link: Link::Softplus,
                loc: vec![0.3],
                scale: vec![0.05],
                n_comp: 1,
            },
            GuideBlock {
                name: "phi_capture".into(),
                kind: BlockKind::Cell,
                link: Link::Softplus,
                loc: vec![0.0, 1.0, 2.0],
                scale: vec![0.1; 3],
                n_comp: 1,
            },
        ];
        let sites = nb_sites(&spec, &blocks, Some((50, 3))).unwrap();
        let by = |n: &str| sites.iter().find(|s| s.name == n).unwrap().clone();
        let (r, mu, p, phi, nu, ph) = (
            by("r"),
            by("mu"),
            by("p"),
            by("phi"),
            by("p_capture"),
            by("p_hat"),
        );
        for s in 0..50 {
            for g in 0..2 {
                let k = g * 50 + s;
                assert!((r.values[k] - mu.values[k] * phi.values[s]).abs() < 1e-12);
                assert!(
                    (mu.values[k] - r.values[k] * p.values[s] / (1.0 - p.values[s])).abs() < 1e-9
                );
            }
            for c in 0..3 {
                let k = c * 50 + s;
                // logit p̂ = logit p + ln ν
                let lhs = (ph.values[k] / (1.0 - ph.values[k])).ln();
                let rhs = (p.values[s] / (1.0 - p.values[s])).ln() + nu.values[k].ln();
                assert!((lhs - rhs).abs() < 1e-9);
            }
        }
    }
}
