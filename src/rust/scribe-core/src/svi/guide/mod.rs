//! Variational families ("guides") over a model's unconstrained vector.
//!
//! A [`Guide`] owns a flat parameter vector: it draws `x` by
//! reparameterization, evaluates the single-sample ELBO with its gradient
//! back to its parameters (calling the model for `ln p(u | x)` and the
//! priors), and turns fitted parameters into a [`FittedGuide`]: a posterior
//! [`Source`] that results store as named fields per layout block and that
//! can be subset by genes and cells. The SVI loop never knows which family
//! it runs; a new family is a new file here plus one arm in [`import`].

pub mod amortized;
pub mod flow;
pub mod low_rank;
pub mod mean_field;

pub use amortized::{AmortizedCapture, AmortizedFit, CaptureInput};
pub use flow::{Flow, FlowFit};
pub use low_rank::{LowRank, LowRankFit};
pub use mean_field::{MeanField, MeanFieldFit};

use crate::data::Batch;
use crate::error::{CoreError, Result};
use crate::models::{BlockKind, Layout, Model};
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
pub const FAMILIES: [&str; 4] = ["mean_field", "low_rank", "flow", "amortized_capture"];

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
        "flow" => Ok(Box::new(flow::FlowFit::from_fields(layout, fields)?)),
        "amortized_capture" => Ok(Box::new(amortized::AmortizedFit::from_fields(
            layout, fields,
        )?)),
        other => Err(CoreError::arg(
            "fit",
            format!(
                "its guide family '{other}' is not one of {}",
                FAMILIES.join(", ")
            ),
        )),
    }
}

/// The coordinate groups a structured guide (low-rank, flow) covers: with
/// `joint` empty, one group per row of the block `gene` (a mixture's
/// components and a dataset hierarchy's datasets are independent groups);
/// else one group over every coordinate of the blocks in `joint` (gene-level
/// or scalar). `arg` names the guide's argument in errors.
pub(crate) fn guide_groups(
    layout: &Layout,
    gene: &str,
    joint: &[String],
    arg: &str,
) -> Result<Vec<Vec<usize>>> {
    let find = |name: &str| {
        layout
            .blocks
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| {
                CoreError::arg(
                    if joint.is_empty() {
                        arg
                    } else {
                        "joint_params"
                    },
                    format!("the model has no parameter '{name}'"),
                )
            })
    };
    Ok(if joint.is_empty() {
        let blk = find(gene)?;
        let rows = blk.n_comp.max(1);
        let per = blk.len / rows;
        (0..rows)
            .map(|k| (blk.offset + k * per..blk.offset + (k + 1) * per).collect())
            .collect()
    } else {
        let mut coords = Vec::new();
        for name in joint {
            let blk = find(name)?;
            if !matches!(blk.kind, BlockKind::Gene | BlockKind::Scalar) {
                return Err(CoreError::arg(
                    "joint_params",
                    format!("'{name}' is not a gene-level or scalar parameter"),
                ));
            }
            coords.extend(blk.range());
        }
        coords.sort_unstable();
        coords.dedup();
        vec![coords]
    })
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

/// A small NB model for guide tests and the `joint_params` it calls for:
/// `"plain"` (nbdm), `"joint"` (nbvcp mean-odds, `mu` and `phi` joint),
/// `"mixture"` (two-component zinb) or a two-dataset nbvcp hierarchy.
#[cfg(test)]
pub(crate) fn test_model(
    case: &str,
    data: &crate::data::CountMatrix,
) -> (crate::models::nb::NbModel<'static>, Vec<String>) {
    let data: &'static crate::data::CountMatrix = Box::leak(Box::new(data.clone()));
    use crate::dist::Link;
    use crate::models::nb::{DatasetP, NbModel, NbSpec, Parameterization, Shrinkage, Variant};
    let (spec, joint) = match case {
        "plain" => (
            NbSpec::new(
                Variant::Nbdm,
                Parameterization::Canonical,
                false,
                Link::Softplus,
            ),
            vec![],
        ),
        "joint" => (
            NbSpec::new(
                Variant::Nbvcp,
                Parameterization::MeanOdds,
                true,
                Link::Softplus,
            ),
            vec!["mu".to_string(), "phi".to_string()],
        ),
        "mixture" => {
            let mut s = NbSpec::new(
                Variant::Zinb,
                Parameterization::MeanProb,
                false,
                Link::Softplus,
            );
            s.set_mixture(2, &["mu", "p"], 2.0).unwrap();
            (s, vec![])
        }
        _ => {
            let mut s = NbSpec::new(
                Variant::Nbvcp,
                Parameterization::Canonical,
                true,
                Link::Softplus,
            );
            let cells = (0..data.n_cells).map(|c| (c % 2) as u32).collect();
            s.set_datasets(cells, 2).unwrap();
            s.add_dataset_hierarchy("r", Shrinkage::Gaussian, DatasetP::Shared)
                .unwrap();
            (s, vec![])
        }
    };
    (NbModel::new(spec, data).unwrap(), joint)
}
