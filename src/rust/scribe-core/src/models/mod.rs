//! Count models. A model owns a [`Layout`] of unconstrained parameters and
//! exposes the batch log-likelihood with its gradient, plus a prior for every
//! coordinate; engines (SVI now, MCMC later) only see this seam.

pub mod nb;
mod nb_init;
mod nb_mixture;
pub mod simulate;

use crate::data::Batch;
use crate::dist::{Link, Prior};

/// What a block of parameters is indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// One value per gene.
    Gene,
    /// A single shared value.
    Scalar,
    /// One value per cell (only batch cells receive gradient).
    Cell,
}

/// A named, contiguous slice of the flat parameter vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub name: String,
    pub kind: BlockKind,
    pub offset: usize,
    pub len: usize,
    pub link: Link,
}

/// The flat parameter vector's blocks, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub blocks: Vec<Block>,
    pub total: usize,
}

impl Layout {
    pub fn push(&mut self, name: &str, kind: BlockKind, len: usize, link: Link) -> usize {
        self.blocks.push(Block {
            name: name.to_string(),
            kind,
            offset: self.total,
            len,
            link,
        });
        self.total += len;
        self.blocks.len() - 1
    }

    pub fn find(&self, name: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.name == name)
    }
}

/// The seam between models and engines.
pub trait Model: Sync {
    /// Scratch buffers, allocated once per fit.
    type Workspace: Send;

    fn layout(&self) -> &Layout;
    fn n_cells(&self) -> usize;
    fn data(&self) -> &crate::data::CountMatrix;
    fn workspace(&self) -> Self::Workspace;

    /// `scale · Σ_{c∈batch} ln p(u_c | x)`; adds its gradient w.r.t. `x` into `grad`.
    fn log_lik_grad(
        &self,
        x: &[f64],
        batch: &Batch,
        grad: &mut [f64],
        ws: &mut Self::Workspace,
    ) -> f64;

    /// The prior of coordinate `j` of block `b` (`j` is the cell for cell blocks).
    fn prior(&self, b: usize, j: usize) -> Prior;

    /// Log-density and gradient of priors that couple coordinates (a Dirichlet
    /// on mixing weights); their coordinates carry `Prior::Flat`.
    fn joint_prior_grad(&self, _x: &[f64], _grad: &mut [f64]) -> f64 {
        0.0
    }

    /// A data-driven starting point.
    fn initial_point(&self) -> Vec<f64>;

    /// Coordinates within one block are conditionally independent given the
    /// other blocks, so one finite-difference sweep per block gives the exact
    /// diagonal of the Hessian (used to initialise posterior scales).
    fn blocks_are_separable(&self) -> bool {
        true
    }
}

/// `ln p(x) = ln p(u | x) + Σ priors` over the full data with its gradient
/// (the target of MCMC and of Laplace-type initialisation).
pub fn log_joint_grad<M: Model>(
    model: &M,
    x: &[f64],
    batch: &Batch,
    grad: &mut [f64],
    ws: &mut M::Workspace,
) -> f64 {
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut lp = model.log_lik_grad(x, batch, grad, ws);
    lp += model.joint_prior_grad(x, grad);
    for (b, block) in model.layout().blocks.iter().enumerate() {
        let mut add = |j: usize, w: f64| {
            let k = block.offset + j;
            let (v, d) = model.prior(b, j).ln_density_x(x[k], block.link);
            lp += w * v;
            grad[k] += w * d;
        };
        match block.kind {
            BlockKind::Cell => {
                for &c in &batch.cells {
                    add(c as usize, batch.scale);
                }
            }
            _ => (0..block.len).for_each(|j| add(j, 1.0)),
        }
    }
    lp
}
