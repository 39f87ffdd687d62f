//! The joint prior of gene-level hierarchies (`priors = list(probability =
//! "gaussian")` and the like, see [`super::NbSpec::add_hierarchy`]): the
//! target block's unconstrained coordinates are `x_j ~ N(loc, softplus(s))`,
//! with `loc` one scalar or one value per gene (shared by mixture
//! components); the priors of `loc` and `s` themselves are per coordinate.

use super::NbModel;
use crate::math::{ln_normal, sigmoid, softplus};

impl NbModel<'_> {
    /// `Σ_hierarchies Σ_j ln N(x_j | loc, softplus(s))`; adds its gradient.
    pub(crate) fn hierarchy_prior_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let lay = &self.layout;
        let g_n = self.data.n_genes;
        let mut lp = 0.0;
        for h in &self.hier {
            let tb = &lay.blocks[h.target];
            let lb = &lay.blocks[h.loc];
            let is = lay.blocks[h.scale].offset;
            let xs = x[is];
            let sigma = softplus(xs).max(1e-300);
            let mut d_sigma = 0.0;
            for j in 0..tb.len {
                let il = lb.offset + if lb.len == 1 { 0 } else { j % g_n };
                let v = x[tb.offset + j];
                let z = (v - x[il]) / sigma;
                lp += ln_normal(v, x[il], sigma);
                grad[tb.offset + j] -= z / sigma;
                grad[il] += z / sigma;
                d_sigma += (z * z - 1.0) / sigma;
            }
            grad[is] += d_sigma * sigmoid(xs);
        }
        lp
    }
}
