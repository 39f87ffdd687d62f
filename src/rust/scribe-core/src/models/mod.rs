//! Count models, one folder per family: [`nb`] (nbdm, nbvcp, zinb, zinbvcp,
//! mixtures) and [`lognormal`] (the observation kernels of PLN, NBLN, LNM and
//! LNMVCP, and their specification). A model owns a [`Layout`] of
//! unconstrained parameters and exposes the batch log-likelihood with its
//! gradient, plus a prior for every coordinate: the seam every engine uses.

pub mod lognormal;
pub mod nb;

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
    /// `K − 1` free logits of a point on the K-simplex, `w = softmax([x, 0])`
    /// (mixing weights); its prior is a joint one ([`Model::joint_prior_grad`]).
    Simplex,
}

impl BlockKind {
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::Gene => "gene",
            BlockKind::Scalar => "scalar",
            BlockKind::Cell => "cell",
            BlockKind::Simplex => "simplex",
        }
    }

    pub fn parse(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "gene" => BlockKind::Gene,
            "scalar" => BlockKind::Scalar,
            "cell" => BlockKind::Cell,
            "simplex" => BlockKind::Simplex,
            other => {
                return Err(crate::CoreError::arg(
                    "layout",
                    format!("unknown block kind '{other}'"),
                ))
            }
        })
    }
}

/// A named, contiguous slice of the flat parameter vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub name: String,
    pub kind: BlockKind,
    pub offset: usize,
    pub len: usize,
    pub link: Link,
    /// Mixture components along the block (1 if shared): a gene block of a
    /// component-specific parameter holds `n_comp` slices of `len / n_comp`,
    /// component-major; a simplex block describes `len + 1` components.
    pub n_comp: usize,
}

impl Block {
    /// Coordinates of the block, in the flat vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The flat parameter vector's blocks, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub blocks: Vec<Block>,
    pub total: usize,
}

impl Layout {
    /// Appends a block of `n_comp` components (see [`Block::n_comp`]); returns its index.
    pub fn push(
        &mut self,
        name: &str,
        kind: BlockKind,
        len: usize,
        link: Link,
        n_comp: usize,
    ) -> usize {
        self.blocks.push(Block {
            name: name.to_string(),
            kind,
            offset: self.total,
            len,
            link,
            n_comp,
        });
        self.total += len;
        self.blocks.len() - 1
    }

    pub fn find(&self, name: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// The layout restricted to some genes and cells (0-based, in the given
    /// order; `None` keeps all), and the flat coordinates it keeps: every
    /// component of each kept gene, the kept cells, all shared coordinates.
    /// Subsetting a fit keeps exactly these coordinates of its posterior.
    pub fn select(
        &self,
        n_genes: usize,
        genes: Option<&[usize]>,
        cells: Option<&[usize]>,
    ) -> crate::Result<(Layout, Vec<usize>)> {
        let mut out = Layout::default();
        let mut keep = Vec::with_capacity(self.total);
        for b in &self.blocks {
            let before = keep.len();
            match (b.kind, genes, cells) {
                (BlockKind::Gene, Some(gs), _) => {
                    let per = b.len / b.n_comp.max(1);
                    if per != n_genes {
                        return Err(crate::CoreError::arg(
                            "layout",
                            format!("block '{}' does not have {n_genes} genes", b.name),
                        ));
                    }
                    for k in 0..b.n_comp {
                        for &g in gs {
                            if g >= per {
                                return Err(crate::CoreError::arg("i", "gene index out of range"));
                            }
                            keep.push(b.offset + k * per + g);
                        }
                    }
                }
                (BlockKind::Cell, _, Some(cs)) => {
                    for &c in cs {
                        if c >= b.len {
                            return Err(crate::CoreError::arg("j", "cell index out of range"));
                        }
                        keep.push(b.offset + c);
                    }
                }
                _ => keep.extend(b.range()),
            }
            out.push(&b.name, b.kind, keep.len() - before, b.link, b.n_comp);
        }
        Ok((out, keep))
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

    /// Blocks that the model's structure identifies only jointly with other
    /// blocks (the likelihood is flat along a ridge through them, and only
    /// the prior pulls): a fit moves along the ridge too slowly for a
    /// stopping rule to wait for, so the settled rule does not wait for
    /// these blocks (it still reports their drift).
    fn ridge_blocks(&self) -> Vec<usize> {
        Vec::new()
    }

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
            BlockKind::Gene | BlockKind::Scalar | BlockKind::Simplex => {
                (0..block.len).for_each(|j| add(j, 1.0))
            }
        }
    }
    lp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-component gene block, a scalar, a cell block and a simplex.
    fn layout() -> Layout {
        let mut l = Layout::default();
        l.push("r", BlockKind::Gene, 2 * 4, Link::Exp, 2);
        l.push("p", BlockKind::Scalar, 1, Link::Sigmoid, 1);
        l.push("p_capture", BlockKind::Cell, 3, Link::Sigmoid, 1);
        l.push("mixing_weights", BlockKind::Simplex, 1, Link::Identity, 2);
        l
    }

    #[test]
    fn select_keeps_every_component_of_the_kept_genes() {
        let l = layout();
        let (sub, keep) = l.select(4, Some(&[3, 1]), Some(&[2])).unwrap();
        // r: genes 3, 1 of component 0 (offsets 3, 1) then of component 1 (7, 5);
        // p; cell 2 of the capture block (offset 9 + 2); the simplex logit.
        assert_eq!(keep, vec![3, 1, 7, 5, 8, 11, 12]);
        assert_eq!(sub.total, keep.len());
        let lens: Vec<usize> = sub.blocks.iter().map(|b| b.len).collect();
        assert_eq!(lens, vec![4, 1, 1, 1]);
        assert_eq!(sub.blocks[0].n_comp, 2);
        assert_eq!(sub.blocks[2].offset, 5);
        // Keeping everything is the identity.
        let (same, all) = l.select(4, None, None).unwrap();
        assert_eq!(same, l);
        assert_eq!(all, (0..l.total).collect::<Vec<_>>());
        assert!(l.select(4, Some(&[4]), None).is_err());
        assert!(l.select(4, None, Some(&[3])).is_err());
    }

    #[test]
    fn block_kinds_round_trip_their_names() {
        for k in [
            BlockKind::Gene,
            BlockKind::Scalar,
            BlockKind::Cell,
            BlockKind::Simplex,
        ] {
            assert_eq!(BlockKind::parse(k.name()).unwrap(), k);
        }
        assert!(BlockKind::parse("genes").is_err());
    }
}
