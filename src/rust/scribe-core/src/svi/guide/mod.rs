//! Variational families ("guides") over a model's unconstrained vector.
//!
//! A [`Guide`] owns a flat parameter vector: it draws `x` by
//! reparameterization, evaluates the single-sample ELBO with its gradient
//! back to its parameters (calling the model for `ln p(u | x)` and the
//! priors), and turns fitted parameters into a [`FittedGuide`]: a posterior
//! [`Source`] that results store as named fields per layout block and that
//! can be subset by genes and cells. The SVI loop never knows which family
//! it runs; a new family is a new file here plus one arm in [`import`].

pub mod low_rank;
pub mod mean_field;

pub use low_rank::{LowRank, LowRankFit};
pub use mean_field::{MeanField, MeanFieldFit};

use crate::data::Batch;
use crate::error::{CoreError, Result};
use crate::models::{Layout, Model};
use crate::posterior::Source;
use rand::Rng;

/// A variational family over a model's unconstrained coordinates.
pub trait Guide: Sync {
    /// Scratch space of one ELBO evaluation, allocated once per fit.
    type Scratch: Send;

    /// Length of the variational parameter vector.
    fn n_params(&self) -> usize;

    fn scratch(&self) -> Self::Scratch;

    /// Starting parameters around the model's data-driven point `x0`, with
    /// per-coordinate log scales `ln_scale0` (a Laplace approximation, see
    /// [`super::initial_log_scales`]).
    fn initial_params(&self, x0: &[f64], ln_scale0: &[f64]) -> Vec<f64>;

    /// A single-sample estimate of `−ELBO` at `params` for the cells of
    /// `batch`; writes its gradient with respect to `params` into `grad`
    /// (overwriting). Noise is drawn from `rng` in a fixed order, so results
    /// never depend on the number of threads.
    #[allow(clippy::too_many_arguments)]
    fn loss_and_grad<M: Model, R: Rng>(
        &self,
        model: &M,
        params: &[f64],
        batch: &Batch,
        rng: &mut R,
        scratch: &mut Self::Scratch,
        ws: &mut M::Workspace,
        grad: &mut [f64],
    ) -> f64;

    /// The fitted guide at `params`.
    fn fitted(&self, params: &[f64]) -> Box<dyn FittedGuide>;

    /// Each coordinate's location under the guide at `params` (what the
    /// stopping rule watches).
    fn location(&self, params: &[f64], out: &mut [f64]);

    /// Each coordinate's posterior standard deviation under the guide (the
    /// scale the stopping rule measures movement against).
    fn spread(&self, params: &[f64], out: &mut [f64]);
}

/// The stored parameters of one layout block: named numeric fields (for
/// the mean-field guide `loc` and `scale`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockFields {
    pub block: String,
    pub fields: Vec<(String, Vec<f64>)>,
}

impl BlockFields {
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A fitted guide: a posterior source that results can store and subset.
pub trait FittedGuide: Source + Send {
    /// The family's name (`"mean_field"`), stored with the fit.
    fn family(&self) -> &'static str;
    /// Its parameters as named fields per block of `layout`.
    fn fields(&self, layout: &Layout) -> Vec<BlockFields>;
    /// The guide restricted to the coordinates `keep` of its layout (see
    /// [`Layout::select`]).
    fn select(&self, keep: &[usize]) -> Box<dyn FittedGuide>;
}

/// The guide families results can hold.
pub const FAMILIES: [&str; 2] = ["mean_field", "low_rank"];

/// Rebuilds a fitted guide of `family` from the fields it stored.
pub fn import(
    family: &str,
    layout: &Layout,
    fields: &[BlockFields],
) -> Result<Box<dyn FittedGuide>> {
    match family {
        "mean_field" => Ok(Box::new(mean_field::MeanFieldFit::from_fields(
            layout, fields,
        )?)),
        "low_rank" => Ok(Box::new(low_rank::LowRankFit::from_fields(layout, fields)?)),
        other => Err(CoreError::arg(
            "fit",
            format!(
                "its guide family '{other}' is not one of {}",
                FAMILIES.join(", ")
            ),
        )),
    }
}

/// Checks a guide's ELBO gradient against finite differences with the noise
/// held fixed (the single-sample loss is then a deterministic function of
/// the guide's parameters `v`).
#[cfg(test)]
pub(crate) fn check_guide_gradient<G: Guide, M: Model>(
    guide: &G,
    model: &M,
    batch: &Batch,
    v: &[f64],
    label: &str,
) {
    use rand::SeedableRng;
    let mut buf = guide.scratch();
    let mut ws = model.workspace();
    crate::testutil::check_gradient(
        |v, g| {
            let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(11);
            let mut gl = vec![0.0; g.len()];
            let l = guide.loss_and_grad(model, v, batch, &mut rng, &mut buf, &mut ws, &mut gl);
            for (a, b) in g.iter_mut().zip(&gl) {
                *a += b;
            }
            l
        },
        v,
        1e-5,
        label,
    );
}
