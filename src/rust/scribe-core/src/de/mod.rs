//! Differential expression between two posteriors (two fits, two components
//! of one fit, or two fitted log-normal populations), on the compositional
//! scale: `Δ = CLR(ρ_A) − CLR(ρ_B)`, so a gene up in B has negative `Δ`.
//!
//! - [`biological`]: log fold changes of means, log variance ratios and
//!   Jeffreys divergences of absolute expression, per draw.
//! - [`compositions`]: draws of `Δ` (gene-major, `Δ[g·N + t]`) from
//!   NB-family parameter draws (Dirichlet compositions) or from log-normal
//!   populations (imaginary cells `softmax(μ + Wz + √d ε)`).
//! - [`stats`]: per-gene summaries (mean, sd, `P(Δ > 0)`, lfsr, and per
//!   practical-significance threshold `τ` the probabilities of an effect)
//!   from draws (empirical) or from a Gaussian (parametric), and gene-set
//!   balances.
//! - [`shrinkage`]: an adaptive-shrinkage (scale-mixture-of-normals) prior
//!   fitted by EM to the empirical means and sds.
//! - [`error_control`]: the posterior expected false-discovery proportion
//!   (PEFP) of a set of calls, and the lfsr threshold that keeps it at a
//!   target.

pub mod biological;
pub mod compositions;
pub mod error_control;
pub mod shrinkage;
pub mod stats;

/// Floor of compositions before their logarithm (so `ln ρ ≥ ln 1e-30`).
pub const LN_FLOOR: f64 = -69.077_552_789_821_37;
