//! The named quantities of a fitted NB-family model: the sampled sites of a
//! posterior plus those derived from them by the parameterization's
//! identities, `μ = r p/(1−p)`, `φ = (1−p)/p`, and for capture models
//! `ν` and the identified per-cell `p̂_c = p ν_c / (1 − p(1 − ν_c))`.

use super::{NbSpec, Parameterization};
use crate::error::{CoreError, Result};
use crate::models::BlockKind;
use crate::posterior::Site;

/// Adds the derived NB sites (`r`, `mu`, `p`, `phi`, capture `p_capture`
/// and `p_hat`) to the sampled ones (as returned by a posterior source), per
/// draw. For mixtures, `r`, `mu`, `p`, `phi` carry a component axis whenever
/// the gene or scalar parameter does.
pub fn derive(spec: &NbSpec, mut sites: Vec<Site>) -> Result<Vec<Site>> {
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
    // Gene-specific p: the "scalar" site has one value per gene.
    let p_len = if scalar.kind == BlockKind::Gene {
        g_len
    } else {
        1
    };
    // p per (draw, component, gene of a gene-specific p)
    let p_at = |s: usize, k: usize, j: usize| -> f64 {
        let v = scalar.at(s, k, if p_len == 1 { 0 } else { j });
        if spec.param == Parameterization::MeanOdds {
            1.0 / (1.0 + v)
        } else {
            v
        }
    };
    let mut p = vec![0.0; n * k_s * p_len];
    for k in 0..k_s {
        for j in 0..p_len {
            for s in 0..n {
                p[(k * p_len + j) * n + s] = p_at(s, k, j);
            }
        }
    }
    let mut r = vec![0.0; n * g_len * k_rp];
    let mut mu = vec![0.0; n * g_len * k_rp];
    for k in 0..k_rp {
        for j in 0..g_len {
            for s in 0..n {
                let idx = (k * g_len + j) * n + s;
                let ps = p_at(s, k, j);
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
    let p_kind = scalar.kind;
    sites.retain(|s| !matches!(s.name.as_str(), "r" | "mu" | "p" | "phi"));
    sites.push(derived("r", BlockKind::Gene, k_rp, r));
    sites.push(derived("mu", BlockKind::Gene, k_rp, mu));
    sites.push(derived("p", p_kind, k_s, p.clone()));
    sites.push(derived(
        "phi",
        p_kind,
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
        if cap.name == "phi_capture" || cap.name == "eta_capture" {
            sites.push(derived("p_capture", BlockKind::Cell, 1, nu.clone()));
        }
        // With a gene-specific p, p̂ differs by gene and cell; it is not a site.
        let per_dataset = spec.datasets.as_ref().filter(|_| p_len == 1 && k_s > 1);
        if let Some(ds) = per_dataset {
            // Per-dataset p: each cell's p̂ uses its own dataset's p.
            let mut p_hat = vec![0.0; n * c_len];
            for c in 0..c_len {
                for s in 0..n {
                    let (ps, v) = (p_at(s, ds.cell[c] as usize, 0), nu[c * n + s]);
                    p_hat[c * n + s] = ps * v / (1.0 - ps * (1.0 - v));
                }
            }
            sites.push(derived("p_hat", BlockKind::Cell, 1, p_hat));
        } else if p_len == 1 {
            let mut p_hat = vec![0.0; n * c_len * k_s];
            for k in 0..k_s {
                for c in 0..c_len {
                    for s in 0..n {
                        let (ps, v) = (p_at(s, k, 0), nu[c * n + s]);
                        p_hat[(k * c_len + c) * n + s] = ps * v / (1.0 - ps * (1.0 - v));
                    }
                }
            }
            sites.push(derived("p_hat", BlockKind::Cell, k_s, p_hat));
        }
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_sites_follow_parameterization_identities() {
        let spec = NbSpec::new(
            crate::models::nb::Variant::Nbvcp,
            Parameterization::MeanOdds,
            true,
            crate::dist::Link::Softplus,
        );
        // mu (2 genes), phi, phi_capture (3 cells) under a mean-field guide.
        let layout = spec.layout(2, 3);
        let fit = crate::svi::guide::mean_field::MeanFieldFit {
            loc: vec![1.0, 2.0, 0.3, 0.0, 1.0, 2.0],
            scale: vec![0.1, 0.2, 0.05, 0.1, 0.1, 0.1],
        };
        let sites = crate::posterior::nb::sites(
            &spec,
            &layout,
            &fit,
            crate::posterior::Summary::Draws { n: 50, seed: 3 },
            crate::progress::Ctl::none(),
        )
        .unwrap();
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
