//! Count matrices: the slots of a genes × cells `dgCMatrix`, as
//! `list(n_genes, n_cells, p, i, x)`, into the core's [`CountMatrix`].

use super::Args;
use crate::errors::{internal, GResult};
use extendr_api::prelude::*;
use scribe_core::data::CountMatrix;

pub fn counts(robj: &Robj) -> GResult<CountMatrix> {
    let a = Args::new(robj, "counts")?;
    let p = a
        .need("p")?
        .as_integer_slice()
        .ok_or_else(|| internal("counts@p must be integer"))?;
    let i = a
        .need("i")?
        .as_integer_slice()
        .ok_or_else(|| internal("counts@i must be integer"))?;
    let x = a
        .need("x")?
        .as_real_slice()
        .ok_or_else(|| internal("counts@x must be double"))?;
    Ok(CountMatrix::from_csc(
        a.count("n_genes")?,
        a.count("n_cells")?,
        p,
        i,
        x,
    )?)
}
