//! Warm starts: an SVI fit's point estimate, in any parameterization, mapped
//! onto the unconstrained coordinates of the model MCMC will sample.
//!
//! Everything goes through the canonical quantities (`r`, `p`, `ν`, gate,
//! mixing weights), which every NB parameterization shares:
//! `μ = r p/(1−p)`, `φ = (1−p)/p`, `φ_capture = (1−ν)/ν`, `η = −ln ν`.
//! Values are clamped 1e-6 away from the boundaries of their support, as in
//! the original, so the inverse links stay finite.

use crate::error::{CoreError, Result};
use crate::models::nb::NbModel;
use crate::models::{BlockKind, Layout, Model};
use crate::posterior::Site;
use crate::svi::initial_log_scales;

const EPS: f64 = 1e-6;

fn clamp01(v: f64) -> f64 {
    v.clamp(EPS, 1.0 - EPS)
}

fn site<'a>(sites: &'a [Site], name: &str) -> Result<&'a Site> {
    sites
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| CoreError::arg("svi_init", format!("the SVI fit has no '{name}' estimate")))
}

/// The starting point (unconstrained) and per-coordinate scales for `model`
/// from an SVI fit's point `sites` (as returned by `posterior::nb::sites`).
/// Scales come from the SVI posterior (`svi_scales` over its `svi_layout`)
/// where it has the same block with the same link and length (same
/// parameterization); otherwise from the diagonal of the log-posterior
/// Hessian at the starting point. Blocks the SVI fit has no estimate for
/// (capture or gate when the SVI model lacks them) start at the model's own
/// data-driven starting point.
pub fn svi_start(
    model: &NbModel<'_>,
    sites: &[Site],
    svi_layout: &Layout,
    svi_scales: Option<&[f64]>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let n_genes = model.data().n_genes;
    let n_cells = model.data().n_cells;
    let mut x = model.initial_point();
    let has = |n: &str| sites.iter().any(|s| s.name == n);
    for block in &model.layout().blocks {
        let source = match block.name.as_str() {
            "p" | "phi" => "p",
            "p_capture" | "phi_capture" | "eta_capture" if !has("p_capture") => "p_hat",
            "p_capture" | "phi_capture" | "eta_capture" => "p_capture",
            other => other,
        };
        if !has(source) {
            continue;
        }
        let k_target = match block.kind {
            BlockKind::Gene => block.n_comp,
            _ => 1,
        };
        let comp_check = |s: &Site, k_target: usize| -> Result<()> {
            if s.n_comp > 1 && k_target > 1 && s.n_comp != k_target {
                return Err(CoreError::arg(
                    "svi_init",
                    format!(
                        "the SVI fit has {} mixture components, the MCMC model {}",
                        s.n_comp, k_target
                    ),
                ));
            }
            Ok(())
        };
        // Component-wise value of a site (its first draw), averaged over
        // components when the source has them and the target does not.
        let value = |s: &Site, k: usize, j: usize, k_target: usize| -> f64 {
            if s.n_comp > 1 && k_target == 1 {
                (0..s.n_comp).map(|c| s.at(0, c, j)).sum::<f64>() / s.n_comp as f64
            } else {
                s.at(0, k, j)
            }
        };
        let name = block.name.as_str();
        let mut set = |vals: Vec<f64>| {
            for (i, v) in vals.into_iter().enumerate() {
                x[block.offset + i] = block.link.inverse(v);
            }
        };
        match name {
            "r" | "mu" | "gate" => {
                let s = site(sites, name)?;
                comp_check(s, k_target)?;
                if s.len() != n_genes {
                    return Err(CoreError::arg("svi_init", "was fitted to different genes"));
                }
                let mut v = Vec::with_capacity(block.len);
                for k in 0..k_target {
                    for j in 0..n_genes {
                        let t = value(s, k, j, k_target);
                        v.push(if name == "gate" {
                            clamp01(t)
                        } else {
                            t.max(EPS)
                        });
                    }
                }
                set(v);
            }
            "p" | "phi" if block.kind == BlockKind::Gene => {
                // Gene-specific p, from a gene-specific or a shared SVI p.
                let s = site(sites, "p")?;
                let per_gene = s.kind == BlockKind::Gene;
                if per_gene && s.len() != n_genes {
                    return Err(CoreError::arg("svi_init", "was fitted to different genes"));
                }
                // One row per dataset when p is dataset- and gene-specific.
                let rows = block.n_comp.max(1);
                comp_check(s, rows)?;
                let v = (0..rows * n_genes)
                    .map(|i| {
                        let g = i % n_genes;
                        let p = clamp01(value(s, i / n_genes, if per_gene { g } else { 0 }, rows));
                        if name == "p" {
                            p
                        } else {
                            ((1.0 - p) / p).max(EPS)
                        }
                    })
                    .collect();
                set(v);
            }
            "p" | "phi" => {
                let s = site(sites, "p")?;
                if s.kind == BlockKind::Gene {
                    return Err(CoreError::arg(
                        "svi_init",
                        "has a gene-specific p; give the MCMC fit the same `priors$probability`",
                    ));
                }
                comp_check(s, block.len)?;
                let v = (0..block.len)
                    .map(|k| {
                        let p = clamp01(value(s, k, 0, block.len));
                        if name == "p" {
                            p
                        } else {
                            ((1.0 - p) / p).max(EPS)
                        }
                    })
                    .collect();
                set(v);
            }
            "p_capture" | "phi_capture" | "eta_capture" => {
                let s = site(sites, source)?;
                if s.len() != n_cells {
                    return Err(CoreError::arg("svi_init", "was fitted to different cells"));
                }
                let v = (0..n_cells)
                    .map(|c| {
                        let nu = clamp01(s.at(0, 0, c));
                        match name {
                            "p_capture" => nu,
                            "phi_capture" => ((1.0 - nu) / nu).max(EPS),
                            _ => (-nu.ln()).max(EPS),
                        }
                    })
                    .collect();
                set(v);
            }
            "mixing_weights" => {
                let s = site(sites, "mixing_weights")?;
                let k = block.len + 1;
                if s.n_comp != k {
                    return Err(CoreError::arg(
                        "svi_init",
                        format!(
                            "the SVI fit has {} mixture components, the MCMC model {k}",
                            s.n_comp
                        ),
                    ));
                }
                let last = s.at(0, k - 1, 0).max(EPS);
                for j in 0..k - 1 {
                    x[block.offset + j] = (s.at(0, j, 0).max(EPS) / last).ln();
                }
            }
            // Hyper-parameters of hierarchies: the same site, copied when it
            // has the same size.
            other => {
                let s = site(sites, other)?;
                if s.len() * s.n_comp.max(1) != block.len {
                    return Err(CoreError::arg(
                        "svi_init",
                        format!(
                            "cannot initialise the MCMC parameter '{other}' (its size differs)"
                        ),
                    ));
                }
                set((0..block.len).map(|i| s.values[i * s.n_draws]).collect());
            }
        }
    }
    // Hessian-diagonal scales everywhere, replaced by the guide's where it
    // describes the very same coordinates.
    let mut scale: Vec<f64> = initial_log_scales(model, &x)
        .iter()
        .map(|v| v.exp())
        .collect();
    if let Some(svi_scales) = svi_scales {
        for block in &model.layout().blocks {
            if let Some(g) = svi_layout.find(&block.name) {
                if g.link == block.link && g.len == block.len {
                    scale[block.range()].copy_from_slice(&svi_scales[g.range()]);
                }
            }
        }
    }
    Ok((x, scale))
}
