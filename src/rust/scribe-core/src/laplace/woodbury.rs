//! Nested Woodbury algebra for `Σ = W Wᵀ + diag(d)` (W: G × k, row-major)
//! and the per-cell Newton matrix `A = diag(a) + Σ⁻¹ + δ I`. Nothing of size
//! G × G is ever formed: a factorisation costs O(G k² + k³), a solve O(G k + k²).

/// In-place Cholesky of a k × k SPD matrix (row-major, lower triangle used).
/// Returns `false` if a pivot is not positive.
pub fn cholesky(a: &mut [f64], k: usize) -> bool {
    for j in 0..k {
        let mut s = a[j * k + j];
        for p in 0..j {
            s -= a[j * k + p] * a[j * k + p];
        }
        if !(s > 0.0) {
            return false;
        }
        let l = s.sqrt();
        a[j * k + j] = l;
        for i in j + 1..k {
            let mut t = a[i * k + j];
            for p in 0..j {
                t -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = t / l;
        }
        for i in 0..j {
            a[i * k + j] = 0.0;
        }
    }
    true
}

/// Solves `L Lᵀ z = b` in place given the Cholesky factor `L`.
pub fn chol_solve(l: &[f64], k: usize, b: &mut [f64]) {
    for i in 0..k {
        let mut s = b[i];
        for p in 0..i {
            s -= l[i * k + p] * b[p];
        }
        b[i] = s / l[i * k + i];
    }
    solve_lt(l, k, b);
}

/// Solves `Lᵀ x = b` in place: with `b ~ N(0, I)`, `x ~ N(0, (L Lᵀ)⁻¹)`.
pub fn solve_lt(l: &[f64], k: usize, b: &mut [f64]) {
    for i in (0..k).rev() {
        let mut t = b[i];
        for p in i + 1..k {
            t -= l[p * k + i] * b[p];
        }
        b[i] = t / l[i * k + i];
    }
}

pub(crate) fn chol_logdet(l: &[f64], k: usize) -> f64 {
    (0..k).map(|i| 2.0 * l[i * k + i].ln()).sum()
}

/// Number of entries of a k × k matrix's upper triangle.
pub(crate) fn n_vech(k: usize) -> usize {
    k * (k + 1) / 2
}

/// Per gene, the upper triangle of `w_g w_gᵀ` (row-major, `G × k(k+1)/2`):
/// formed once per set of loadings, it turns every `Wᵀ diag(s) W` of the
/// Newton steps into one contiguous multiply-add of length k(k+1)/2 per gene.
pub fn outer_vech(w: &[f64], k: usize) -> Vec<f64> {
    let g_n = w.len() / k.max(1);
    let nv = n_vech(k);
    let mut out = vec![0.0; g_n * nv];
    for (g, o) in out.chunks_exact_mut(nv.max(1)).enumerate().take(g_n) {
        let row = &w[g * k..(g + 1) * k];
        let mut p = 0;
        for i in 0..k {
            for j in i..k {
                o[p] = row[i] * row[j];
                p += 1;
            }
        }
    }
    out
}

/// `Wᵀ diag(s) W` from [`outer_vech`]'s table: `Σ_g s_g vech(w_g w_gᵀ)`,
/// unpacked into the full symmetric k × k `out`.
fn wt_diag_w_vech(vech: &[f64], s: &[f64], k: usize, out: &mut [f64]) {
    let nv = n_vech(k);
    let mut acc = vec![0.0; nv];
    for (&sg, v) in s.iter().zip(vech.chunks_exact(nv)) {
        for (a, &x) in acc.iter_mut().zip(v) {
            *a += sg * x;
        }
    }
    unpack_vech(&acc, None, 1.0, k, out);
}

/// Unpacks an upper-triangle `vech` (the order of [`outer_vech`]) into the
/// full symmetric k × k `out`, as `out = base + sign · vech`.
pub(crate) fn unpack_vech(
    vech: &[f64],
    base: Option<&[f64]>,
    sign: f64,
    k: usize,
    out: &mut [f64],
) {
    let mut p = 0;
    for i in 0..k {
        for j in i..k {
            let b = base.map_or(0.0, |m| m[i * k + j]);
            out[i * k + j] = b + sign * vech[p];
            out[j * k + i] = out[i * k + j];
            p += 1;
        }
    }
}

/// The upper triangle of a symmetric k × k `m` with off-diagonal entries
/// doubled, so that `w_gᵀ M w_g` is its dot product with `w_g`'s [`outer_vech`] row.
pub(crate) fn vech_doubled(m: &[f64], k: usize, out: &mut [f64]) {
    let mut p = 0;
    for i in 0..k {
        for j in i..k {
            out[p] = if i == j {
                m[i * k + j]
            } else {
                2.0 * m[i * k + j]
            };
            p += 1;
        }
    }
}

/// The inverse of `L Lᵀ` (k × k, symmetric) from its Cholesky factor: k
/// solves once, so that per-gene quadratic forms are plain products instead
/// of triangular solves (with their divisions) per gene.
pub(crate) fn chol_inverse(l: &[f64], k: usize) -> Vec<f64> {
    let mut inv = vec![0.0; k * k];
    let mut e = vec![0.0; k];
    for c in 0..k {
        e.iter_mut().for_each(|v| *v = 0.0);
        e[c] = 1.0;
        chol_solve(l, k, &mut e);
        for (r, v) in e.iter().enumerate() {
            inv[r * k + c] = *v;
        }
    }
    inv
}

/// `out = M v` for a symmetric k × k `M`, as a sum of its rows (vectorises).
fn sym_matvec(m: &[f64], v: &[f64], k: usize, out: &mut [f64]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for (i, &vi) in v.iter().enumerate() {
        for (o, &mij) in out.iter_mut().zip(&m[i * k..(i + 1) * k]) {
            *o += vi * mij;
        }
    }
}

/// `Wᵀ v` (k).
fn wt_v(w: &[f64], v: &[f64], k: usize, out: &mut [f64]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for (g, &vg) in v.iter().enumerate() {
        for j in 0..k {
            out[j] += w[g * k + j] * vg;
        }
    }
}

/// The factorised prior covariance `Σ = W Wᵀ + diag(d)`.
#[derive(Debug, Clone)]
pub struct SigmaFactor {
    pub g: usize,
    pub k: usize,
    pub inv_d: Vec<f64>,
    /// `K = I + Wᵀ D⁻¹ W` and its Cholesky factor.
    pub kmat: Vec<f64>,
    pub lk: Vec<f64>,
    pub logdet_k: f64,
    pub logdet_sigma: f64,
    /// [`outer_vech`] of W.
    pub vech: Vec<f64>,
    /// `V = D⁻¹ W` (row-major G × k), the factor of every batched solve.
    pub wd: Vec<f64>,
}

impl SigmaFactor {
    pub fn new(w: &[f64], d: &[f64], k: usize) -> Option<Self> {
        let g = d.len();
        let inv_d: Vec<f64> = d.iter().map(|v| 1.0 / v).collect();
        let vech = outer_vech(w, k);
        let mut lk = vec![0.0; k * k];
        wt_diag_w_vech(&vech, &inv_d, k, &mut lk);
        for i in 0..k {
            lk[i * k + i] += 1.0;
        }
        let kmat = lk.clone();
        if !cholesky(&mut lk, k) {
            return None;
        }
        let logdet_k = chol_logdet(&lk, k);
        let logdet_sigma = d.iter().map(|v| v.ln()).sum::<f64>() + logdet_k;
        let wd = w
            .chunks_exact(k.max(1))
            .zip(&inv_d)
            .flat_map(|(row, &s)| row.iter().map(move |v| v * s))
            .collect();
        Some(SigmaFactor {
            g,
            k,
            inv_d,
            kmat,
            lk,
            logdet_k,
            logdet_sigma,
            vech,
            wd,
        })
    }

    /// `Σ⁻¹ v = v/d − (1/d) ⊙ W K⁻¹ Wᵀ (v/d)`.
    pub fn solve(&self, w: &[f64], v: &[f64], out: &mut [f64]) {
        let k = self.k;
        for g in 0..self.g {
            out[g] = v[g] * self.inv_d[g];
        }
        let mut t = vec![0.0; k];
        wt_v(w, out, k, &mut t);
        chol_solve(&self.lk, k, &mut t);
        for g in 0..self.g {
            let wt: f64 = (0..k).map(|j| w[g * k + j] * t[j]).sum();
            out[g] -= self.inv_d[g] * wt;
        }
    }
}

/// The factorised Newton matrix `A = diag(a) + Σ⁻¹ + δ I = M − V K⁻¹ Vᵀ`,
/// `M = diag(a + 1/d + δ)`, `V = D⁻¹ W`, through `S = K − Vᵀ M⁻¹ V`.
#[derive(Debug, Clone)]
pub struct NewtonFactor {
    pub m: Vec<f64>,
    /// Cholesky factor of `S`.
    pub ls: Vec<f64>,
    pub logdet_a: f64,
}

impl NewtonFactor {
    pub fn new(sig: &SigmaFactor, a: &[f64], damping: f64) -> Option<Self> {
        let k = sig.k;
        let m: Vec<f64> = (0..sig.g).map(|g| a[g] + sig.inv_d[g] + damping).collect();
        // S = K − Wᵀ diag(1/(d² m)) W.
        let s_diag: Vec<f64> = (0..sig.g)
            .map(|g| sig.inv_d[g] * sig.inv_d[g] / m[g])
            .collect();
        let mut s = vec![0.0; k * k];
        wt_diag_w_vech(&sig.vech, &s_diag, k, &mut s);
        for (v, kv) in s.iter_mut().zip(&sig.kmat) {
            *v = kv - *v;
        }
        if !cholesky(&mut s, k) {
            return None;
        }
        let logdet_a = m.iter().map(|v| v.ln()).sum::<f64>() + chol_logdet(&s, k) - sig.logdet_k;
        Some(NewtonFactor { m, ls: s, logdet_a })
    }

    /// `A⁻¹ y = y/m + (1/m) ⊙ V S⁻¹ Vᵀ (y/m)`.
    pub fn solve(&self, sig: &SigmaFactor, w: &[f64], y: &[f64], out: &mut [f64]) {
        let k = sig.k;
        let g_n = sig.g;
        // Vᵀ (y/m) = Wᵀ (y / (d m)).
        let ym: Vec<f64> = (0..g_n).map(|g| y[g] / self.m[g]).collect();
        let scaled: Vec<f64> = (0..g_n).map(|g| ym[g] * sig.inv_d[g]).collect();
        let mut t = vec![0.0; k];
        wt_v(w, &scaled, k, &mut t);
        chol_solve(&self.ls, k, &mut t);
        for g in 0..g_n {
            let wt: f64 = (0..k).map(|j| w[g * k + j] * t[j]).sum();
            out[g] = ym[g] + sig.inv_d[g] * wt / self.m[g];
        }
    }
}

impl NewtonFactor {
    /// `diag(A⁻¹)`: `1/m_g + (v_gᵀ S⁻¹ v_g)/m_g²` with `v_g = w_g/d_g`.
    pub fn diag_inv(&self, sig: &SigmaFactor, w: &[f64]) -> Vec<f64> {
        let k = sig.k;
        let s_inv = chol_inverse(&self.ls, k);
        let mut t = vec![0.0; k];
        (0..sig.g)
            .map(|g| {
                // q = v_gᵀ S⁻¹ v_g with v_g = w_g / d_g.
                let row = &w[g * k..(g + 1) * k];
                sym_matvec(&s_inv, row, k, &mut t);
                let q: f64 = row.iter().zip(&t).map(|(a, b)| a * b).sum::<f64>()
                    * sig.inv_d[g]
                    * sig.inv_d[g];
                1.0 / self.m[g] + q / (self.m[g] * self.m[g])
            })
            .collect()
    }
}

impl NewtonFactor {
    /// One draw of `N(0, A⁻¹)` into `out`, by the exact square root
    /// `m^{−1/2} ⊙ ε₁ + (1/m) ⊙ V L_S^{−T} ε₂` (`V = D⁻¹W`; `e2` is scratch of length k).
    pub fn sample<R: rand::RngExt>(
        &self,
        sig: &SigmaFactor,
        w: &[f64],
        rng: &mut R,
        e2: &mut [f64],
        out: &mut [f64],
    ) {
        let k = sig.k;
        for v in e2.iter_mut() {
            *v = rng.sample(rand_distr::StandardNormal);
        }
        solve_lt(&self.ls, k, e2);
        for (g, o) in out.iter_mut().enumerate() {
            let m = self.m[g];
            let vz: f64 = (0..k).map(|j| w[g * k + j] * e2[j]).sum::<f64>() * sig.inv_d[g];
            let e1: f64 = rng.sample(rand_distr::StandardNormal);
            *o = e1 / m.sqrt() + vz / m;
        }
    }
}

/// `B W` and `diag(B)` for `B = (Σ + diag(1/a))⁻¹`: the covariance part of the
/// Laplace ELBO's gradient. With `D' = d + 1/a` and `K' = I + Wᵀ D'⁻¹ W`,
/// `B W = D'⁻¹ W K'⁻¹` and `B_gg = 1/D'_g − w_gᵀ K'⁻¹ w_g / D'_g²`.
/// `vech`: W's [`outer_vech`] table when at hand (else it is formed here).
pub fn inv_sigma_plus_diag(
    w: &[f64],
    vech: Option<&[f64]>,
    d: &[f64],
    a: &[f64],
    k: usize,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let g_n = d.len();
    let inv_dp: Vec<f64> = (0..g_n).map(|g| 1.0 / (d[g] + 1.0 / a[g])).collect();
    let mut kp = vec![0.0; k * k];
    match vech {
        Some(v) => wt_diag_w_vech(v, &inv_dp, k, &mut kp),
        None => wt_diag_w_vech(&outer_vech(w, k), &inv_dp, k, &mut kp),
    }
    for i in 0..k {
        kp[i * k + i] += 1.0;
    }
    if !cholesky(&mut kp, k) {
        return None;
    }
    let kp_inv = chol_inverse(&kp, k);
    let mut bw = vec![0.0; g_n * k];
    let mut diag = vec![0.0; g_n];
    let mut t = vec![0.0; k];
    for g in 0..g_n {
        let row = &w[g * k..(g + 1) * k];
        sym_matvec(&kp_inv, row, k, &mut t); // K'⁻¹ w_g
        let q: f64 = row.iter().zip(&t).map(|(a, b)| a * b).sum();
        for (b, &tj) in bw[g * k..(g + 1) * k].iter_mut().zip(&t) {
            *b = inv_dp[g] * tj;
        }
        diag[g] = inv_dp[g] - inv_dp[g] * inv_dp[g] * q;
    }
    Some((bw, diag))
}

/// Deterministic loadings `W` (row-major `g × k`, entries of size `w_amp`)
/// and positive `d` for tests.
#[cfg(test)]
pub(crate) fn test_loadings(
    g: usize,
    k: usize,
    w_amp: f64,
    d_min: f64,
    d_amp: f64,
) -> (Vec<f64>, Vec<f64>) {
    let w = (0..g * k)
        .map(|i| ((i as f64) * 0.731).sin() * w_amp)
        .collect();
    let d = (0..g)
        .map(|i| d_min + d_amp * ((i as f64) * 1.3).cos().abs())
        .collect();
    (w, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense reference: Gaussian elimination with partial pivoting.
    fn dense_solve(a: &[f64], b: &[f64], n: usize) -> (Vec<f64>, f64) {
        let mut m = a.to_vec();
        let mut x = b.to_vec();
        let mut logdet = 0.0;
        for c in 0..n {
            let p = (c..n)
                .max_by(|&i, &j| m[i * n + c].abs().partial_cmp(&m[j * n + c].abs()).unwrap())
                .unwrap();
            if p != c {
                for j in 0..n {
                    m.swap(c * n + j, p * n + j);
                }
                x.swap(c, p);
            }
            let piv = m[c * n + c];
            logdet += piv.abs().ln();
            for i in c + 1..n {
                let f = m[i * n + c] / piv;
                for j in c..n {
                    m[i * n + j] -= f * m[c * n + j];
                }
                x[i] -= f * x[c];
            }
        }
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|j| m[i * n + j] * x[j]).sum();
            x[i] = (x[i] - s) / m[i * n + i];
        }
        (x, logdet)
    }

    fn dense_inv(a: &[f64], n: usize) -> Vec<f64> {
        let mut inv = vec![0.0; n * n];
        for c in 0..n {
            let mut e = vec![0.0; n];
            e[c] = 1.0;
            let (x, _) = dense_solve(a, &e, n);
            for r in 0..n {
                inv[r * n + c] = x[r];
            }
        }
        inv
    }

    fn problem(g: usize, k: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (w, d) = test_loadings(g, k, 0.8, 0.05, 0.3);
        let a: Vec<f64> = (0..g)
            .map(|i| (((i as f64) * 0.37).sin() * 3.0).exp())
            .collect();
        let y: Vec<f64> = (0..g).map(|i| ((i as f64) * 2.1).cos()).collect();
        (w, d, a, y)
    }

    fn sigma_dense(w: &[f64], d: &[f64], k: usize) -> Vec<f64> {
        let g = d.len();
        let mut s = vec![0.0; g * g];
        for i in 0..g {
            for j in 0..g {
                s[i * g + j] = (0..k).map(|p| w[i * k + p] * w[j * k + p]).sum::<f64>()
                    + if i == j { d[i] } else { 0.0 };
            }
        }
        s
    }

    #[test]
    fn woodbury_matches_dense_solves_and_logdets() {
        for (g, k) in [(7, 1), (12, 3), (25, 5)] {
            let (w, d, a, y) = problem(g, k);
            let sd = sigma_dense(&w, &d, k);
            let sig = SigmaFactor::new(&w, &d, k).unwrap();
            let (x_ref, ld_ref) = dense_solve(&sd, &y, g);
            let mut x = vec![0.0; g];
            sig.solve(&w, &y, &mut x);
            for i in 0..g {
                assert!((x[i] - x_ref[i]).abs() < 1e-8 * (1.0 + x_ref[i].abs()));
            }
            assert!((sig.logdet_sigma - ld_ref).abs() < 1e-8 * (1.0 + ld_ref.abs()));
            // A = diag(a) + Σ⁻¹ + δI, dense.
            let delta = 1e-3;
            let sinv = dense_inv(&sd, g);
            let mut ad = sinv.clone();
            for i in 0..g {
                ad[i * g + i] += a[i] + delta;
            }
            let nf = NewtonFactor::new(&sig, &a, delta).unwrap();
            let (z_ref, lda_ref) = dense_solve(&ad, &y, g);
            let mut z = vec![0.0; g];
            nf.solve(&sig, &w, &y, &mut z);
            for i in 0..g {
                assert!(
                    (z[i] - z_ref[i]).abs() < 1e-8 * (1.0 + z_ref[i].abs()),
                    "{g} {k}"
                );
            }
            assert!((nf.logdet_a - lda_ref).abs() < 1e-8 * (1.0 + lda_ref.abs()));
            let ainv = dense_inv(&ad, g);
            for (i, v) in nf.diag_inv(&sig, &w).iter().enumerate() {
                assert!((v - ainv[i * g + i]).abs() < 1e-8 * (1.0 + v.abs()));
            }
            // B = (Σ + diag(1/a))⁻¹.
            let mut spa = sd.clone();
            for i in 0..g {
                spa[i * g + i] += 1.0 / a[i];
            }
            let b = dense_inv(&spa, g);
            let (bw, bd) = inv_sigma_plus_diag(&w, None, &d, &a, k).unwrap();
            let (bw2, bd2) = inv_sigma_plus_diag(&w, Some(&sig.vech), &d, &a, k).unwrap();
            for i in 0..g {
                assert!((bd[i] - bd2[i]).abs() < 1e-12 * (1.0 + bd[i].abs()));
            }
            for (p, q) in bw.iter().zip(&bw2) {
                assert!((p - q).abs() < 1e-12 * (1.0 + p.abs()));
            }
            for i in 0..g {
                assert!((bd[i] - b[i * g + i]).abs() < 1e-8);
                for p in 0..k {
                    let r: f64 = (0..g).map(|j| b[i * g + j] * w[j * k + p]).sum();
                    assert!((bw[i * k + p] - r).abs() < 1e-8);
                }
            }
        }
    }
}
