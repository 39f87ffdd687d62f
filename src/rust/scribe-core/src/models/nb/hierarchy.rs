//! The joint prior of gene-level hierarchies (`priors = list(probability =
//! "gaussian")` and the like, see [`super::NbSpec::add_hierarchy`]): the
//! target block's unconstrained coordinates are `x_j ~ N(loc, s_j)`, with
//! `loc` one scalar or one value per gene (shared by mixture components).
//!
//! - gaussian: `s_j = softplus(s)` for all `j` (the priors of `loc` and `s`
//!   are per coordinate);
//! - horseshoe (regularised): `s_j = τ c λ_j / sqrt(c² + τ²λ_j²)`,
//!   `τ ~ HalfCauchy(tau0)`, `λ_j ~ HalfCauchy(1)`,
//!   `c² ~ InvGamma(slab_df/2, slab_df·slab_scale²/2)` (defaults 1, 4, 2);
//! - NEG: `s_j = sqrt(ψ_j)`, `ψ_j ~ Gamma(u, rate ζ)`, `ζ ~ Gamma(a, rate tau)`
//!   (defaults 1, 1, 1).
//!
//! The scales of the sparse families are sampled on the log scale (their
//! densities below include the Jacobian `θ` of `θ = e^x`). The original
//! samples those families non-centred (`x_j = loc + s_j z_j`); here the
//! target itself is sampled (centred), which is the same prior and keeps
//! every parameter where the likelihood and the downstream analyses read it.

use super::{NbModel, Shrinkage};
use crate::math::{ln_normal, sigmoid, softplus};
use std::f64::consts::PI;

/// `ln HalfCauchy(θ; s)` and its derivative in `x = ln θ` (Jacobian included).
fn ln_half_cauchy_x(theta: f64, s: f64) -> (f64, f64) {
    let q = theta / s;
    (
        (2.0 / PI).ln() - s.ln() - (q * q).ln_1p() + theta.ln(),
        1.0 - 2.0 * q * q / (1.0 + q * q),
    )
}

/// `ln Gamma(θ; a, rate b)` and its derivatives in `x = ln θ` (Jacobian
/// included) and in `b`.
fn ln_gamma_x(theta: f64, a: f64, b: f64) -> (f64, f64, f64) {
    (
        a * b.ln() - crate::math::lgamma(a) + a * theta.ln() - b * theta,
        a - b * theta,
        a / b - theta,
    )
}

impl NbModel<'_> {
    /// `Σ_hierarchies [Σ_j ln N(x_j | loc, s_j) + ln p(scales)]`; adds its gradient.
    pub(crate) fn hierarchy_prior_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let lay = &self.layout;
        let g_n = self.data.n_genes;
        let mut lp = 0.0;
        for h in &self.hier {
            let tb = &lay.blocks[h.target];
            let lb = &lay.blocks[h.loc];
            let is = lay.blocks[h.scale].offset;
            let local = h.local.map(|b| lay.blocks[b].offset);
            let slab = h.slab.map(|b| lay.blocks[b].offset);
            // Global quantities and their accumulated gradients.
            let xs = x[is];
            let (tau, c2) = (xs.exp(), slab.map_or(0.0, |i| x[i].exp()));
            let c = c2.sqrt();
            let (mut d_global, mut d_c) = (0.0, 0.0);
            for j in 0..tb.len {
                let il = lb.offset + if lb.len == 1 { 0 } else { j % g_n };
                let v = x[tb.offset + j];
                // s_j and ds_j/d(its own inputs).
                let (s, ds_local, ds_global, ds_c) = match h.family {
                    Shrinkage::Gaussian => (softplus(xs).max(1e-300), 0.0, 1.0, 0.0),
                    Shrinkage::Horseshoe => {
                        let lam = x[local.expect("horseshoe local scales") + j].exp();
                        let a = tau * lam;
                        let dd = c2 + a * a;
                        let d15 = dd * dd.sqrt();
                        let s = (c * a / dd.sqrt()).max(1e-300);
                        let ds_da = c * c2 / d15;
                        (s, ds_da * tau * lam, ds_da * lam * tau, a * a * a / d15)
                    }
                    Shrinkage::Neg => {
                        let psi = x[local.expect("NEG local variances") + j].exp();
                        let s = psi.sqrt().max(1e-300);
                        (s, 0.5 * s, 0.0, 0.0)
                    }
                };
                let z = (v - x[il]) / s;
                lp += ln_normal(v, x[il], s);
                grad[tb.offset + j] -= z / s;
                grad[il] += z / s;
                let d_s = (z * z - 1.0) / s;
                // ds_local is already per unit of the local coordinate x_λ / x_ψ.
                if let Some(off) = local {
                    grad[off + j] += d_s * ds_local;
                }
                d_global += d_s * ds_global;
                d_c += d_s * ds_c;
            }
            match h.family {
                Shrinkage::Gaussian => grad[is] += d_global * sigmoid(xs),
                Shrinkage::Horseshoe => {
                    let off = local.expect("horseshoe local scales");
                    for j in 0..tb.len {
                        let (v, d) = ln_half_cauchy_x(x[off + j].exp(), 1.0);
                        lp += v;
                        grad[off + j] += d;
                    }
                    let (v, d) = ln_half_cauchy_x(tau, h.hyper.tau0);
                    lp += v;
                    // d_global is per unit of τ·(∂A/∂τ)/λ... accumulated as ∂/∂x_τ already.
                    grad[is] += d + d_global;
                    // c² ~ InvGamma(a, b): ln = a ln b − lnΓ(a) − (a+1) ln c² − b/c², + ln c².
                    let ic = slab.expect("horseshoe slab");
                    let (a, b) = h.hyper.slab();
                    lp += a * f64::ln(b) - crate::math::lgamma(a) - a * c2.ln() - b / c2;
                    // ∂s/∂c · ∂c/∂x_c with c = e^{x_c / 2}: ∂c/∂x_c = c / 2.
                    grad[ic] += -a + b / c2 + d_c * 0.5 * c;
                }
                Shrinkage::Neg => {
                    let off = local.expect("NEG local variances");
                    let zeta = tau; // the rate ζ = e^{x_ζ}
                    let mut d_zeta = 0.0;
                    for j in 0..tb.len {
                        let (v, dx, db) = ln_gamma_x(x[off + j].exp(), h.hyper.u, zeta);
                        lp += v;
                        grad[off + j] += dx;
                        d_zeta += db;
                    }
                    let (v, dx, _) = ln_gamma_x(zeta, h.hyper.a, h.hyper.tau);
                    lp += v;
                    grad[is] += dx + d_zeta * zeta;
                }
            }
        }
        lp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Link;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::{NbSpec, Parameterization, Variant};
    use crate::models::Model;

    /// The hierarchy's value at a point as a function of one hyper-parameter.
    fn prior_at(family: Shrinkage, name: &str, value: Option<f64>) -> f64 {
        let data = simulate_nb(&NbTruth::random(Variant::Nbdm, 6, 10, 1), 2);
        let mut spec = NbSpec::new(
            Variant::Nbdm,
            Parameterization::Canonical,
            true,
            Link::Softplus,
        );
        spec.add_hierarchy("p", family).unwrap();
        if let Some(v) = value {
            spec.set_hierarchy_hyper("p", name, v).unwrap();
        }
        let model = NbModel::new(spec, &data).unwrap();
        let x: Vec<f64> = (0..model.layout().total)
            .map(|i| 0.1 * (i % 5) as f64 - 0.2)
            .collect();
        let mut g = vec![0.0; x.len()];
        model.joint_prior_grad(&x, &mut g)
    }

    #[test]
    fn hyper_parameters_reach_the_prior() {
        for (family, name, default, other) in [
            (Shrinkage::Horseshoe, "tau0", 1.0, 0.2),
            (Shrinkage::Horseshoe, "slab_df", 4.0, 9.0),
            (Shrinkage::Horseshoe, "slab_scale", 2.0, 0.5),
            (Shrinkage::Neg, "u", 1.0, 3.0),
            (Shrinkage::Neg, "a", 1.0, 0.5),
            (Shrinkage::Neg, "tau", 1.0, 4.0),
        ] {
            let base = prior_at(family, name, None);
            assert_eq!(prior_at(family, name, Some(default)), base, "{name}");
            assert!(
                (prior_at(family, name, Some(other)) - base).abs() > 1e-6,
                "{name}"
            );
        }
    }
}
