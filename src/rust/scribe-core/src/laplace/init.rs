//! Starting point of the log-normal models: `μ = mean log(u + 1)`, loadings
//! from a PCA of the centred `log(u + 1)` (`W = V_k S_k / √N`), latents
//! `log(u + 1)`. The PCA is a randomized subspace iteration that only
//! multiplies by the sparse counts, so the count matrix is never densified.

use crate::data::CountMatrix;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

pub struct PlnStart {
    pub mu: Vec<f64>,
    /// Row-major `G × k`.
    pub w: Vec<f64>,
    /// Cell-major `C × G`.
    pub latents: Vec<f64>,
}

/// Orthonormalises the `l` columns of a row-major `n × l` matrix (modified Gram–Schmidt).
fn orthonormalize(a: &mut [f64], n: usize, l: usize) {
    for j in 0..l {
        for p in 0..j {
            let dot: f64 = (0..n).map(|i| a[i * l + j] * a[i * l + p]).sum();
            for i in 0..n {
                a[i * l + j] -= dot * a[i * l + p];
            }
        }
        let norm = (0..n).map(|i| a[i * l + j].powi(2)).sum::<f64>().sqrt();
        let norm = if norm > 1e-300 { norm } else { 1.0 };
        for i in 0..n {
            a[i * l + j] /= norm;
        }
    }
}

/// Eigenvectors (columns, row-major `l × l`) and eigenvalues of a symmetric
/// matrix by cyclic Jacobi rotations, sorted by decreasing eigenvalue.
fn symmetric_eigen(a: &[f64], l: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0; l * l];
    for i in 0..l {
        v[i * l + i] = 1.0;
    }
    for _ in 0..100 {
        let off: f64 = (0..l)
            .flat_map(|i| (0..l).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * l + j].powi(2))
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..l {
            for q in p + 1..l {
                let apq = m[p * l + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q * l + q] - m[p * l + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..l {
                    let (mrp, mrq) = (m[r * l + p], m[r * l + q]);
                    m[r * l + p] = c * mrp - s * mrq;
                    m[r * l + q] = s * mrp + c * mrq;
                }
                for r in 0..l {
                    let (mpr, mqr) = (m[p * l + r], m[q * l + r]);
                    m[p * l + r] = c * mpr - s * mqr;
                    m[q * l + r] = s * mpr + c * mqr;
                }
                for r in 0..l {
                    let (vrp, vrq) = (v[r * l + p], v[r * l + q]);
                    v[r * l + p] = c * vrp - s * vrq;
                    v[r * l + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..l).collect();
    order.sort_by(|&i, &j| {
        m[j * l + j]
            .partial_cmp(&m[i * l + i])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let vals = order.iter().map(|&i| m[i * l + i]).collect();
    let mut vecs = vec![0.0; l * l];
    for (new, &old) in order.iter().enumerate() {
        for r in 0..l {
            vecs[r * l + new] = v[r * l + old];
        }
    }
    (vecs, vals)
}

/// Column means and top-`k` loadings (`V_k S_k / √n`) of the centred
/// `n × m` matrix `X[c, j] = log(1 + u[c, g_j]) − offset[c]` over the genes
/// `cols` (`col_of[g]` is gene g's column, `None` if left out). Only
/// products with the sparse counts are formed.
fn centred_pca(
    data: &CountMatrix,
    col_of: &[Option<usize>],
    m: usize,
    offset: &[f64],
    k: usize,
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let n = data.n_cells;
    let y: Vec<f64> = data.counts.iter().map(|&u| (u as f64).ln_1p()).collect();
    let mean_off = offset.iter().sum::<f64>() / n as f64;
    let mut mu = vec![0.0; m];
    for (p, &gi) in data.gene_idx.iter().enumerate() {
        if let Some(j) = col_of[gi as usize] {
            mu[j] += y[p];
        }
    }
    mu.iter_mut().for_each(|v| *v = *v / n as f64 - mean_off);
    let l = (k + 10).min(m).min(n);
    // Xc Ω (n × l) and Xcᵀ Z (m × l) with Xc = Y − o 1ᵀ − 1 μᵀ, Y sparse.
    let x_times = |om: &[f64]| -> Vec<f64> {
        let (mut shift, mut ones) = (vec![0.0; l], vec![0.0; l]);
        for j in 0..m {
            for t in 0..l {
                shift[t] += mu[j] * om[j * l + t];
                ones[t] += om[j * l + t];
            }
        }
        let mut out = vec![0.0; n * l];
        for c in 0..n {
            for t in 0..l {
                out[c * l + t] = -shift[t] - offset[c] * ones[t];
            }
            for p in data.cell_ptr[c]..data.cell_ptr[c + 1] {
                if let Some(j) = col_of[data.gene_idx[p] as usize] {
                    for t in 0..l {
                        out[c * l + t] += y[p] * om[j * l + t];
                    }
                }
            }
        }
        out
    };
    let xt_times = |z: &[f64]| -> Vec<f64> {
        let (mut colsum, mut offsum) = (vec![0.0; l], vec![0.0; l]);
        let mut out = vec![0.0; m * l];
        for c in 0..n {
            for t in 0..l {
                colsum[t] += z[c * l + t];
                offsum[t] += offset[c] * z[c * l + t];
            }
            for p in data.cell_ptr[c]..data.cell_ptr[c + 1] {
                if let Some(j) = col_of[data.gene_idx[p] as usize] {
                    for t in 0..l {
                        out[j * l + t] += y[p] * z[c * l + t];
                    }
                }
            }
        }
        for j in 0..m {
            for t in 0..l {
                out[j * l + t] -= mu[j] * colsum[t] + offsum[t];
            }
        }
        out
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0050_4341);
    let omega: Vec<f64> = (0..m * l).map(|_| rng.sample(StandardNormal)).collect();
    let mut q = x_times(&omega);
    orthonormalize(&mut q, n, l);
    for _ in 0..4 {
        let mut z = xt_times(&q);
        orthonormalize(&mut z, m, l);
        q = x_times(&z);
        orthonormalize(&mut q, n, l);
    }
    // Bᵀ = Xcᵀ Q (m × l); B Bᵀ = U S² Uᵀ; W = Bᵀ U_k / √n.
    let bt = xt_times(&q);
    let mut bbt = vec![0.0; l * l];
    for j in 0..m {
        for a in 0..l {
            for b in 0..l {
                bbt[a * l + b] += bt[j * l + a] * bt[j * l + b];
            }
        }
    }
    let (u, _) = symmetric_eigen(&bbt, l);
    let sn = (n as f64).sqrt();
    let mut w = vec![0.0; m * k];
    for j in 0..m {
        for t in 0..k {
            w[j * k + t] = (0..l).map(|p| bt[j * l + p] * u[p * l + t]).sum::<f64>() / sn;
        }
    }
    (mu, w)
}

/// PLN/NBLN: `μ = mean log(u + 1)` and `W` from the PCA of its centred values.
pub fn pln_pca(data: &CountMatrix, k: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let (g, n) = (data.n_genes, data.n_cells);
    let col_of: Vec<Option<usize>> = (0..g).map(Some).collect();
    centred_pca(data, &col_of, g, &vec![0.0; n], k, seed)
}

pub fn pln_start(data: &CountMatrix, k: usize, seed: u64) -> PlnStart {
    let (g, n) = (data.n_genes, data.n_cells);
    let (mu, w) = pln_pca(data, k, seed);
    let mut latents = vec![0.0; n * g];
    for c in 0..n {
        for p in data.cell_ptr[c]..data.cell_ptr[c + 1] {
            latents[c * g + data.gene_idx[p] as usize] = (data.counts[p] as f64).ln_1p();
        }
    }
    PlnStart { mu, w, latents }
}

/// LNM: additive log-ratios against gene `reference`,
/// `ALR_g = log(u_g + 1) − log(u_ref + 1)` (i.e. of `p = (u + 1)/(N + G)`);
/// `μ` their mean, `W` their PCA; latents start at `μ`.
pub fn lnm_start(data: &CountMatrix, reference: usize, k: usize, seed: u64) -> PlnStart {
    let (mu, w) = lnm_pca(data, reference, k, seed);
    let latents = (0..data.n_cells).flat_map(|_| mu.iter().copied()).collect();
    PlnStart { mu, w, latents }
}

/// LNM: the mean and the PCA loadings of the log-ratios (see [`lnm_start`]).
pub fn lnm_pca(data: &CountMatrix, reference: usize, k: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let (g, n) = (data.n_genes, data.n_cells);
    let col_of: Vec<Option<usize>> = (0..g)
        .map(|gi| match gi.cmp(&reference) {
            std::cmp::Ordering::Less => Some(gi),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(gi - 1),
        })
        .collect();
    let mut offset = vec![0.0; n];
    for (c, o) in offset.iter_mut().enumerate() {
        for p in data.cell_ptr[c]..data.cell_ptr[c + 1] {
            if data.gene_idx[p] as usize == reference {
                *o = (data.counts[p] as f64).ln_1p();
            }
        }
    }
    centred_pca(data, &col_of, g - 1, &offset, k, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_eigen_reconstructs_the_matrix() {
        let l = 5;
        let a: Vec<f64> = (0..l * l)
            .map(|i| {
                let (r, c) = (i / l, i % l);
                ((r + c) as f64 * 0.7).cos() + if r == c { 3.0 } else { 0.0 }
            })
            .collect();
        let (v, e) = symmetric_eigen(&a, l);
        for r in 0..l {
            for c in 0..l {
                let rec: f64 = (0..l).map(|p| v[r * l + p] * e[p] * v[c * l + p]).sum();
                assert!((rec - a[r * l + c]).abs() < 1e-9);
            }
        }
        assert!(e.windows(2).all(|w| w[0] >= w[1]));
    }
}
