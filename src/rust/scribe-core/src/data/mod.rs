//! Sparse UMI counts and the sufficient statistics the likelihoods use.
//!
//! Counts arrive cell-major (the CSC layout of a genes × cells `dgCMatrix`:
//! one column per cell). Because NB models share `p̂_c` across the genes of a
//! cell and `r_g` across cells, `Σ_c lnΓ(u_cg + r_g) − lnΓ(r_g)` only depends
//! on each gene's *histogram* of nonzero counts. We store that histogram as
//! "pairs" (gene, count, multiplicity); a full-batch NB step then costs
//! O(#pairs + C + G) instead of O(C·G). Mini-batches re-weight the same pairs.

use crate::error::{CoreError, Result};
use crate::math::lgamma;
use rand::{Rng, RngExt};

/// Immutable count matrix with per-cell rows and per-gene count histograms.
#[derive(Debug, Clone)]
pub struct CountMatrix {
    pub n_genes: usize,
    pub n_cells: usize,
    /// Row pointer per cell into `gene_idx` / `counts` (length C + 1); each
    /// cell's entries are sorted by gene.
    pub cell_ptr: Vec<usize>,
    pub gene_idx: Vec<u32>,
    pub counts: Vec<u32>,
    /// Library size `L_c = Σ_g u_cg`.
    pub lib_size: Vec<f64>,
    /// `Σ_g lnΓ(u_cg + 1)` per cell (the likelihood's constant).
    pub ln_fact: Vec<f64>,
    /// Pair table, grouped by gene (`gene_pair_ptr`, length G + 1) and sorted by count.
    pub gene_pair_ptr: Vec<usize>,
    pub pair_count: Vec<u32>,
    /// Number of cells with this (gene, count): the full-data multiplicity.
    pub pair_weight: Vec<f64>,
    /// Pair id of every nonzero, in cell-major order (to build mini-batch histograms).
    pub nz_pair: Vec<u32>,
    /// Number of cells in which each gene is detected.
    pub gene_nnz: Vec<f64>,
}

impl CountMatrix {
    /// Builds the matrix from the slots of a genes × cells CSC matrix
    /// (`p` = column pointers over cells, `i` = gene indices, `x` = counts).
    pub fn from_csc(
        n_genes: usize,
        n_cells: usize,
        p: &[i32],
        i: &[i32],
        x: &[f64],
    ) -> Result<Self> {
        if p.len() != n_cells + 1 {
            return Err(CoreError::InvalidCounts(format!(
                "column pointer has length {} but there are {} cells",
                p.len(),
                n_cells
            )));
        }
        if i.len() != x.len() || p[n_cells] as usize != x.len() || p[0] != 0 {
            return Err(CoreError::InvalidCounts(
                "inconsistent sparse slots (i, p, x)".into(),
            ));
        }
        let mut cell_ptr = Vec::with_capacity(n_cells + 1);
        let mut gene_idx = Vec::with_capacity(x.len());
        let mut counts = Vec::with_capacity(x.len());
        let mut lib_size = vec![0.0; n_cells];
        let mut ln_fact = vec![0.0; n_cells];
        cell_ptr.push(0usize);
        for c in 0..n_cells {
            let (lo, hi) = (p[c], p[c + 1]);
            if hi < lo {
                return Err(CoreError::InvalidCounts(
                    "column pointers are not monotone".into(),
                ));
            }
            for k in lo as usize..hi as usize {
                let v = x[k];
                let g = i[k];
                if g < 0 || g as usize >= n_genes {
                    return Err(CoreError::InvalidCounts(format!(
                        "gene index {g} out of range"
                    )));
                }
                if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 {
                    return Err(CoreError::InvalidCounts(format!(
                        "counts must be finite non-negative integers; found {v} (gene {}, cell {})",
                        g + 1,
                        c + 1
                    )));
                }
                if v == 0.0 {
                    continue; // explicit zeros carry no information
                }
                gene_idx.push(g as u32);
                counts.push(v as u32);
                lib_size[c] += v;
                ln_fact[c] += lgamma(v + 1.0);
            }
            sort_by_gene(&mut gene_idx, &mut counts, cell_ptr[c]);
            cell_ptr.push(gene_idx.len());
        }
        Ok(Self::with_pairs(
            n_genes, n_cells, cell_ptr, gene_idx, counts, lib_size, ln_fact,
        ))
    }

    /// Builds from cell-major triplets already known to be valid (simulators).
    pub fn from_cell_rows(n_genes: usize, rows: &[Vec<(u32, u32)>]) -> Self {
        let n_cells = rows.len();
        let mut cell_ptr = vec![0usize];
        let mut gene_idx = Vec::new();
        let mut counts = Vec::new();
        let mut lib_size = vec![0.0; n_cells];
        let mut ln_fact = vec![0.0; n_cells];
        for (c, row) in rows.iter().enumerate() {
            for &(g, u) in row {
                if u == 0 {
                    continue;
                }
                gene_idx.push(g);
                counts.push(u);
                lib_size[c] += u as f64;
                ln_fact[c] += lgamma(u as f64 + 1.0);
            }
            sort_by_gene(&mut gene_idx, &mut counts, cell_ptr[c]);
            cell_ptr.push(gene_idx.len());
        }
        Self::with_pairs(
            n_genes, n_cells, cell_ptr, gene_idx, counts, lib_size, ln_fact,
        )
    }

    fn with_pairs(
        n_genes: usize,
        n_cells: usize,
        cell_ptr: Vec<usize>,
        gene_idx: Vec<u32>,
        counts: Vec<u32>,
        lib_size: Vec<f64>,
        ln_fact: Vec<f64>,
    ) -> Self {
        let nnz = counts.len();
        // Counting sort of nonzeros by gene, then by count within each gene.
        let mut gene_start = vec![0usize; n_genes + 1];
        for &g in &gene_idx {
            gene_start[g as usize + 1] += 1;
        }
        for g in 0..n_genes {
            gene_start[g + 1] += gene_start[g];
        }
        let mut fill = gene_start.clone();
        let mut by_gene = vec![0u32; nnz]; // nonzero positions grouped by gene
        for (k, &g) in gene_idx.iter().enumerate() {
            by_gene[fill[g as usize]] = k as u32;
            fill[g as usize] += 1;
        }
        let mut gene_pair_ptr = Vec::with_capacity(n_genes + 1);
        let mut pair_count = Vec::new();
        let mut pair_weight = Vec::new();
        let mut nz_pair = vec![0u32; nnz];
        let mut gene_nnz = vec![0.0; n_genes];
        gene_pair_ptr.push(0);
        for g in 0..n_genes {
            let seg = &mut by_gene[gene_start[g]..gene_start[g + 1]];
            seg.sort_unstable_by_key(|&k| counts[k as usize]);
            gene_nnz[g] = seg.len() as f64;
            let mut last = 0u32;
            for &k in seg.iter() {
                let u = counts[k as usize];
                if u != last {
                    pair_count.push(u);
                    pair_weight.push(0.0);
                    last = u;
                }
                let id = pair_count.len() - 1;
                pair_weight[id] += 1.0;
                nz_pair[k as usize] = id as u32;
            }
            gene_pair_ptr.push(pair_count.len());
        }
        CountMatrix {
            n_genes,
            n_cells,
            cell_ptr,
            gene_idx,
            counts,
            lib_size,
            ln_fact,
            gene_pair_ptr,
            pair_count,
            pair_weight,
            nz_pair,
            gene_nnz,
        }
    }

    pub fn nnz(&self) -> usize {
        self.counts.len()
    }

    pub fn n_pairs(&self) -> usize {
        self.pair_count.len()
    }

    /// Nonzeros of cell `c` as (gene indices, counts).
    #[inline]
    pub fn row(&self, c: usize) -> (&[u32], &[u32]) {
        let (lo, hi) = (self.cell_ptr[c], self.cell_ptr[c + 1]);
        (&self.gene_idx[lo..hi], &self.counts[lo..hi])
    }

    /// Cell `c`'s counts as a dense gene vector, into a reused buffer.
    pub fn dense_row(&self, c: usize, u: &mut [f64]) {
        u.iter_mut().for_each(|v| *v = 0.0);
        let (genes, counts) = self.row(c);
        for (&g, &x) in genes.iter().zip(counts) {
            u[g as usize] = x as f64;
        }
    }

    /// Dense genes × cells copy, column-major (tests and small references only).
    pub fn to_dense(&self) -> Vec<f64> {
        let mut d = vec![0.0; self.n_genes * self.n_cells];
        for c in 0..self.n_cells {
            let (g, u) = self.row(c);
            for k in 0..g.len() {
                d[c * self.n_genes + g[k] as usize] = u[k] as f64;
            }
        }
        d
    }
}

/// Sorts the entries from `start` on (one cell's) by gene, when they are not
/// already (a valid dgCMatrix's are).
fn sort_by_gene(gene_idx: &mut [u32], counts: &mut [u32], start: usize) {
    let (g, u) = (&mut gene_idx[start..], &mut counts[start..]);
    if g.windows(2).all(|w| w[0] < w[1]) {
        return;
    }
    let mut pairs: Vec<(u32, u32)> = g.iter().copied().zip(u.iter().copied()).collect();
    pairs.sort_unstable();
    for (k, (gi, ui)) in pairs.into_iter().enumerate() {
        g[k] = gi;
        u[k] = ui;
    }
}

/// The cells of one step and the histogram weights they induce.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Cell indices, sorted ascending.
    pub cells: Vec<u32>,
    /// Multiplicity of each pair among the batch cells.
    pub pair_weight: Vec<f64>,
    /// Cells of the batch in which each gene is detected.
    pub gene_nnz: Vec<f64>,
    /// Likelihood scale `C / B` that makes the batch an unbiased full-data estimate.
    pub scale: f64,
    pub is_full: bool,
}

impl Batch {
    /// All cells (scale 1).
    pub fn full(data: &CountMatrix) -> Self {
        Batch {
            cells: (0..data.n_cells as u32).collect(),
            pair_weight: data.pair_weight.clone(),
            gene_nnz: data.gene_nnz.clone(),
            scale: 1.0,
            is_full: true,
        }
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Re-weights pairs for the given cells (buffers reused; O(nnz of the batch + #pairs)).
    pub fn set_cells(&mut self, data: &CountMatrix, cells: &[u32]) {
        self.cells.clear();
        self.cells.extend_from_slice(cells);
        self.cells.sort_unstable();
        self.pair_weight.iter_mut().for_each(|w| *w = 0.0);
        self.gene_nnz.iter_mut().for_each(|w| *w = 0.0);
        for &c in &self.cells {
            let (lo, hi) = (data.cell_ptr[c as usize], data.cell_ptr[c as usize + 1]);
            for k in lo..hi {
                self.pair_weight[data.nz_pair[k] as usize] += 1.0;
                self.gene_nnz[data.gene_idx[k] as usize] += 1.0;
            }
        }
        self.scale = data.n_cells as f64 / self.cells.len() as f64;
        self.is_full = self.cells.len() == data.n_cells;
    }
}

/// Checks a mini-batch size against the number of cells (`None`: full batch).
pub fn check_batch_size(batch_size: Option<usize>, n_cells: usize) -> crate::Result<()> {
    match batch_size {
        Some(b) if b == 0 || b > n_cells => Err(crate::CoreError::arg(
            "batch_size",
            format!("({b}) must be between 1 and the number of cells ({n_cells})"),
        )),
        _ => Ok(()),
    }
}

/// Draws batches of distinct cells uniformly without replacement (a partial
/// Fisher–Yates shuffle of a persistent permutation; no epochs, as in the original).
#[derive(Debug, Clone)]
pub struct BatchSampler {
    perm: Vec<u32>,
    size: usize,
}

impl BatchSampler {
    pub fn new(n_cells: usize, size: usize) -> Self {
        BatchSampler {
            perm: (0..n_cells as u32).collect(),
            size: size.min(n_cells),
        }
    }

    pub fn draw<R: Rng>(&mut self, rng: &mut R) -> &[u32] {
        let n = self.perm.len();
        for i in 0..self.size {
            let j = rng.random_range(i..n);
            self.perm.swap(i, j);
        }
        &self.perm[..self.size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cell_rows_are_sorted_by_gene() {
        let m = CountMatrix::from_cell_rows(4, &[vec![(3, 1), (0, 2), (2, 5)], vec![(1, 1)]]);
        assert_eq!(m.row(0), (&[0u32, 2, 3][..], &[2u32, 5, 1][..]));
        let csc = CountMatrix::from_csc(4, 1, &[0, 2], &[2, 1], &[4.0, 7.0]).unwrap();
        assert_eq!(csc.row(0), (&[1u32, 2][..], &[7u32, 4][..]));
    }

    fn toy() -> CountMatrix {
        // 3 genes x 4 cells, genes x cells CSC
        // cell0: g0=1, g2=3 ; cell1: g0=1 ; cell2: (empty) ; cell3: g1=2, g2=3
        let p = [0, 2, 3, 3, 5];
        let i = [0, 2, 0, 1, 2];
        let x = [1.0, 3.0, 1.0, 2.0, 3.0];
        CountMatrix::from_csc(3, 4, &p, &i, &x).unwrap()
    }

    #[test]
    fn pairs_are_gene_histograms() {
        let m = toy();
        assert_eq!(m.gene_pair_ptr, vec![0, 1, 2, 3]);
        assert_eq!(m.pair_count, vec![1, 2, 3]);
        assert_eq!(m.pair_weight, vec![2.0, 1.0, 2.0]);
        assert_eq!(m.lib_size, vec![4.0, 1.0, 0.0, 5.0]);
        assert_eq!(m.gene_nnz, vec![2.0, 1.0, 2.0]);
    }

    #[test]
    fn rejects_bad_counts() {
        let p = [0, 1];
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY] {
            let err = CountMatrix::from_csc(1, 1, &p, &[0], &[bad]).unwrap_err();
            assert!(matches!(err, CoreError::InvalidCounts(_)), "{bad}");
        }
        assert!(CountMatrix::from_csc(1, 1, &p, &[3], &[1.0]).is_err());
    }

    #[test]
    fn batch_weights_match_subset() {
        let m = toy();
        let mut b = Batch::full(&m);
        b.set_cells(&m, &[3, 0]);
        assert_eq!(b.cells, vec![0, 3]);
        assert_eq!(b.pair_weight, vec![1.0, 1.0, 2.0]);
        assert_eq!(b.scale, 2.0);
    }

    #[test]
    fn sampler_draws_distinct_cells() {
        let mut s = BatchSampler::new(50, 20);
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..10 {
            let mut d = s.draw(&mut rng).to_vec();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 20);
        }
    }
}
