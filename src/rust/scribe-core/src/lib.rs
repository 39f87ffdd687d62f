//! scribe-core: the numerical core of the scribeR package.
//!
//! Pure Rust, no R types: count data and its sufficient statistics (`data`),
//! special functions (`math`), links and priors (`dist`), count models
//! (`models`), stochastic variational inference (`svi`) and posterior
//! summaries and sampling (`posterior`), differential expression (`de`) and
//! model comparison (`compare`). Engines report progress and poll for
//! cancellation through the traits in `progress`.

// Index loops mirror the math (x_{k·G+g}); `!(x > 0.0)` deliberately rejects NaN too.
#![allow(clippy::needless_range_loop, clippy::neg_cmp_op_on_partial_ord)]

pub mod compare;
pub mod data;
pub mod de;
pub mod dist;
pub mod error;
pub mod laplace;
pub mod limits;
pub mod math;
pub mod mcmc;
pub mod models;
pub mod nn;
pub mod optim;
pub mod posterior;
pub mod progress;
pub mod svi;
#[doc(hidden)]
pub mod testutil;
pub mod vae;

pub use error::{CoreError, ErrorKind, Partial, Result};
