//! Analyses of negative-binomial-family fits: log-likelihood matrices and
//! mixture responsibilities ([`loglik`]), denoising ([`denoise`]),
//! compositional normalization ([`normalize`]) and posterior predictive
//! counts ([`predictive`]). All of them read [`draws::NbDraws`], the
//! canonical parameters `(r, p, ν, gate, w)` of one or more posterior
//! settings, built from any [`Source`] by [`sites`].

pub mod denoise;
pub mod draws;
pub mod gof;
pub mod loglik;
pub mod normalize;
pub mod predictive;

use super::{Site, Source, Summary};
use crate::error::Result;
use crate::models::nb::NbSpec;
use crate::models::Layout;
use crate::progress::Ctl;

/// Sampled plus derived NB sites of a fitted posterior: a point summary or
/// draws (see [`crate::models::nb::sites::derive`]).
pub fn sites(
    spec: &NbSpec,
    layout: &Layout,
    source: &dyn Source,
    summary: Summary,
    ctl: Ctl<'_>,
) -> Result<Vec<Site>> {
    let sampled = source.sampled_sites(layout, summary, ctl)?;
    crate::models::nb::sites::derive(spec, sampled)
}
