//! A block of PLN/NBLN cells at once. [`newton`] takes the damped Newton
//! steps of [`super::cell::newton`] for every cell of the block in lockstep
//! (a cell leaves once its gradient sup-norm is at most the tolerance), and
//! [`elbo_grad`] sums [`super::cell::elbo_grad`] over the block.
//!
//! Why: per cell, the Newton matrix needs `Σ_g s_g w_g w_gᵀ` (G k²/2
//! multiply-adds) and every solve `Wᵀ v` and `W t` (G k). One cell at a time
//! these are small products that stream the loadings from memory for each
//! cell; for a block they are one matrix product each, e.g. all cells'
//! Newton matrices as `S (cells × G) · vech table (G × k(k+1)/2)`, which
//! faer's GEMM runs near the machine's peak. Only the k × k factorisations
//! remain per cell. The products run sequentially inside the rayon task that
//! owns the block, so sums group the same way on any number of threads.
//! Results equal the per-cell functions up to rounding (tested to 1e-8).

use super::cell::{EtaMode, OuterGrad, ETA_MIN};
use super::woodbury::{
    chol_inverse, chol_logdet, chol_solve, cholesky, n_vech, unpack_vech, vech_doubled, SigmaFactor,
};
use crate::math::gemm::{gemm, view};
use crate::models::lognormal::obs::Obs;

/// Grows `v` to at least `n` entries and returns the first `n`.
fn buf(v: &mut Vec<f64>, n: usize) -> &mut [f64] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Work buffers of one block, kept by a task across the blocks it does so
/// that no gene-length vector is allocated per cell or per Newton step.
#[derive(Default)]
pub(crate) struct Scratch {
    e: Vec<f64>,
    b: Vec<f64>,
    a: Vec<f64>,
    g: Vec<f64>,
    m: Vec<f64>,
    coef: Vec<f64>,
    ag: Vec<f64>,
    aa: Vec<f64>,
    ym: Vec<f64>,
    q: Vec<f64>,
    t: Vec<f64>,
    sv: Vec<f64>,
    ls: Vec<f64>,
    kinv: Vec<f64>,
    mg: Vec<f64>,
    /// Dense counts of the block's cells (filled by the caller).
    pub(crate) u: Vec<f64>,
}

/// `out = Σ⁻¹ v` for `rows` row vectors: `v/d − V K⁻¹ Vᵀ v` with `V = D⁻¹W`.
fn sigma_solve(sig: &SigmaFactor, v: &[f64], rows: usize, out: &mut [f64], t: &mut Vec<f64>) {
    let (g, k) = (sig.g, sig.k);
    let t = buf(t, rows * k);
    gemm(t, view(v, rows, g), view(&sig.wd, g, k), false, 1.0);
    for tr in t.chunks_exact_mut(k) {
        chol_solve(&sig.lk, k, tr);
    }
    gemm(
        out,
        view(t, rows, k),
        view(&sig.wd, g, k).transpose(),
        false,
        -1.0,
    );
    for (orow, vrow) in out[..rows * g].chunks_exact_mut(g).zip(v.chunks_exact(g)) {
        for ((o, &x), &s) in orow.iter_mut().zip(vrow).zip(&sig.inv_d) {
            *o += x * s;
        }
    }
}

/// Factorises each row's Newton matrix `A = diag(a) + Σ⁻¹ + δI` (see
/// [`super::woodbury::NewtonFactor`]): `m = a + 1/d + δ` into `m`, the
/// Cholesky factor of `S = K − Vᵀ diag(1/m) V` into `ls`. Returns per row
/// `log det A` (0 unless `want_logdet`: Newton needs only the factor), or
/// `None` where `S` is not positive definite.
fn newton_factors(
    sig: &SigmaFactor,
    a: &[f64],
    rows: usize,
    damping: f64,
    want_logdet: bool,
    s: &mut Scratch,
) -> Vec<Option<f64>> {
    let (g, k) = (sig.g, sig.k);
    let nv = n_vech(k);
    let m = buf(&mut s.m, rows * g);
    let coef = buf(&mut s.coef, rows * g);
    for ((mr, cr), ar) in m
        .chunks_exact_mut(g)
        .zip(coef.chunks_exact_mut(g))
        .zip(a.chunks_exact(g))
    {
        for (((mv, cv), &av), &id) in mr.iter_mut().zip(cr.iter_mut()).zip(ar).zip(&sig.inv_d) {
            *mv = av + id + damping;
            *cv = id * id / *mv;
        }
    }
    let sv = buf(&mut s.sv, rows * nv);
    gemm(sv, view(coef, rows, g), view(&sig.vech, g, nv), false, 1.0);

    let ls = buf(&mut s.ls, rows * k * k);
    let out = ls
        .chunks_exact_mut(k * k)
        .zip(sv.chunks_exact(nv))
        .zip(m.chunks_exact(g))
        .map(|((l, v), mr)| {
            unpack_vech(v, Some(&sig.kmat), -1.0, k, l);
            cholesky(l, k).then(|| {
                if want_logdet {
                    crate::math::sum_ln(mr) + chol_logdet(l, k) - sig.logdet_k
                } else {
                    0.0
                }
            })
        })
        .collect();
    out
}

/// `out_r = A⁻¹ y_r` for every row with the factors of [`newton_factors`]:
/// `y/m + (1/m) ⊙ V S⁻¹ Vᵀ (y/m)`.
fn newton_solve(sig: &SigmaFactor, y: &[f64], rows: usize, out: &mut [f64], s: &mut Scratch) {
    let (g, k) = (sig.g, sig.k);
    let m = &s.m[..rows * g];
    let ym = buf(&mut s.ym, rows * g);
    for ((o, &yv), &mv) in ym.iter_mut().zip(&y[..rows * g]).zip(m) {
        *o = yv / mv;
    }
    let t = buf(&mut s.t, rows * k);
    gemm(t, view(ym, rows, g), view(&sig.wd, g, k), false, 1.0);
    for (tr, l) in t.chunks_exact_mut(k).zip(s.ls.chunks_exact(k * k)) {
        chol_solve(l, k, tr);
    }
    gemm(
        out,
        view(t, rows, k),
        view(&sig.wd, g, k).transpose(),
        false,
        1.0,
    );
    for ((o, &yv), &mv) in out[..rows * g].iter_mut().zip(&*ym).zip(m) {
        *o = yv + *o / mv;
    }
}

/// At most `n_iter` damped Newton steps for each cell of the block (rows of
/// `x`, `u`: cells × G; warm-started in place), a cell stopping once its
/// gradient sup-norm is at most `tol`. Per cell, as [`super::cell::newton`]:
/// that sup-norm and the steps taken. `s.u` holds the block's counts.
#[allow(clippy::too_many_arguments)]
pub(crate) fn newton<O: Obs + ?Sized>(
    obs: &O,
    x: &mut [f64],
    eta: &mut [f64],
    modes: &[EtaMode],
    mu: &[f64],
    sig: &SigmaFactor,
    n_iter: usize,
    tol: f64,
    damping: f64,
    max_step: f64,
    s: &mut Scratch,
) -> Vec<(f64, usize)> {
    let n = eta.len();
    let g = sig.g;
    let mut res = vec![(f64::NAN, n_iter); n];
    let mut act: Vec<usize> = (0..n).collect();
    let free = modes.iter().any(|m| matches!(m, EtaMode::Free { .. }));
    for it in 0..n_iter {
        if act.is_empty() {
            break;
        }
        let na = act.len();
        let e = buf(&mut s.e, na * g);
        for (er, &c) in e.chunks_exact_mut(g).zip(&act) {
            for ((ev, &xv), &m) in er.iter_mut().zip(&x[c * g..(c + 1) * g]).zip(mu) {
                *ev = xv - m;
            }
        }
        let b = buf(&mut s.b, na * g);
        sigma_solve(sig, e, na, b, &mut s.t);
        let a = buf(&mut s.a, na * g);
        let gr = buf(&mut s.g, na * g);
        // (row, cell, η gradient) of the cells that take a step.
        let mut keep: Vec<(usize, usize, f64)> = Vec::with_capacity(na);
        for (r, &c) in act.iter().enumerate() {
            let off = if modes[c] == EtaMode::None {
                0.0
            } else {
                eta[c]
            };
            let (xr, ur) = (&x[c * g..(c + 1) * g], &s.u[c * g..(c + 1) * g]);
            let (ar, grr) = (&mut a[r * g..(r + 1) * g], &mut gr[r * g..(r + 1) * g]);
            let (mut norm, mut sd): (f64, f64) = (0.0, 0.0);
            for i in 0..g {
                let (dv, cv) = obs.terms(i, ur[i], xr[i] - off);
                ar[i] = cv;
                grr[i] = dv - b[r * g + i];
                norm = norm.max(grr[i].abs());
                sd += dv;
            }
            let mut g_eta = 0.0;
            if let EtaMode::Free { anchor, sigma } = modes[c] {
                g_eta = -sd - (eta[c] - anchor) / (sigma * sigma);
                let at_bound = eta[c] <= ETA_MIN * (1.0 + 1e-9) && g_eta < 0.0;
                norm = norm.max(if at_bound { 0.0 } else { g_eta.abs() });
            }
            if norm <= tol {
                res[c] = (norm, it);
            } else {
                res[c].0 = norm;
                keep.push((r, c, g_eta));
            }
        }
        for (j, &(r, _, _)) in keep.iter().enumerate() {
            if j != r {
                a.copy_within(r * g..(r + 1) * g, j * g);
                gr.copy_within(r * g..(r + 1) * g, j * g);
            }
        }
        let nk = keep.len();
        if nk == 0 {
            break;
        }
        let a = std::mem::take(&mut s.a);
        let gr = std::mem::take(&mut s.g);
        let mut ag = std::mem::take(&mut s.ag);
        let mut aa = std::mem::take(&mut s.aa);
        let logdets = newton_factors(sig, &a[..nk * g], nk, damping, false, s);
        newton_solve(sig, &gr, nk, buf(&mut ag, nk * g), s);
        if free {
            newton_solve(sig, &a, nk, buf(&mut aa, nk * g), s);
        }
        let mut next = Vec::with_capacity(nk);
        for (j, &(_, c, g_eta)) in keep.iter().enumerate() {
            if logdets[j].is_none() {
                res[c] = (f64::NAN, it + 1);
                continue;
            }
            let agr = &ag[j * g..(j + 1) * g];
            let mut d_eta = 0.0;
            let mut aar: &[f64] = &[];
            if let EtaMode::Free { sigma, .. } = modes[c] {
                let ar = &a[j * g..(j + 1) * g];
                aar = &aa[j * g..(j + 1) * g];
                let sa: f64 = ar.iter().sum();
                let aaa: f64 = ar.iter().zip(aar).map(|(p, q)| p * q).sum();
                let sch = (sa + 1.0 / (sigma * sigma) - aaa + damping).max(1e-30);
                let aag: f64 = ar.iter().zip(agr).map(|(p, q)| p * q).sum();
                d_eta = (g_eta + aag) / sch;
                if eta[c] <= ETA_MIN * (1.0 + 1e-9) && eta[c] + d_eta < ETA_MIN {
                    d_eta = 0.0;
                }
            }
            let dir = |i: usize| agr[i] + if aar.is_empty() { 0.0 } else { aar[i] * d_eta };
            let big = (0..g).fold(d_eta.abs().max(1e-12), |m, i| m.max(dir(i).abs()));
            let kappa = (max_step / big).min(1.0);
            let xr = &mut x[c * g..(c + 1) * g];
            for (i, xv) in xr.iter_mut().enumerate() {
                *xv += kappa * dir(i);
            }
            if d_eta != 0.0 {
                eta[c] = (eta[c] + kappa * d_eta).max(ETA_MIN);
            }
            next.push(c);
        }
        (s.a, s.g, s.ag, s.aa) = (a, gr, ag, aa);
        act = next;
    }
    res
}

/// Sums [`super::cell::elbo_grad`] over the block's cells at their MAPs
/// (rows of `x`; counts in `s.u`) into `out`, and writes each cell's ELBO
/// into `elbo`. A cell whose ELBO or one of whose gradient factors is not
/// finite gets a NaN ELBO and adds nothing to `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn elbo_grad<O: Obs + ?Sized>(
    obs: &O,
    x: &[f64],
    eta: &[f64],
    modes: &[EtaMode],
    mu: &[f64],
    w: &[f64],
    d: &[f64],
    sig: &SigmaFactor,
    s: &mut Scratch,
    out: OuterGrad<'_>,
    elbo: &mut [f64],
) {
    let n = eta.len();
    let (g, k) = (sig.g, sig.k);
    let nv = n_vech(k);
    let ln2pi = (2.0 * std::f64::consts::PI).ln();
    let offs: Vec<f64> = (0..n)
        .map(|c| {
            if modes[c] == EtaMode::None {
                0.0
            } else {
                eta[c]
            }
        })
        .collect();
    let e = buf(&mut s.e, n * g);
    for (er, xr) in e.chunks_exact_mut(g).zip(x.chunks_exact(g)) {
        for ((ev, &xv), &mv) in er.iter_mut().zip(xr).zip(mu) {
            *ev = xv - mv;
        }
    }
    let mut b = std::mem::take(&mut s.b);
    sigma_solve(sig, &s.e[..n * g], n, buf(&mut b, n * g), &mut s.t);
    let a = buf(&mut s.a, n * g);
    for c in 0..n {
        let (xr, ur) = (&x[c * g..(c + 1) * g], &s.u[c * g..(c + 1) * g]);
        let mut total = 0.0;
        for i in 0..g {
            let (v, cv) = obs.value_curvature(i, ur[i], xr[i] - offs[c]);
            a[c * g + i] = cv;
            total += v;
        }
        let quad: f64 = s.e[c * g..(c + 1) * g]
            .iter()
            .zip(&b[c * g..(c + 1) * g])
            .map(|(p, q)| p * q)
            .sum();
        elbo[c] = total - 0.5 * quad - 0.5 * sig.logdet_sigma - 0.5 * g as f64 * ln2pi;
    }
    let a = std::mem::take(&mut s.a);
    let logdets = newton_factors(sig, &a[..n * g], n, 0.0, true, s);
    for (el, ld) in elbo.iter_mut().zip(&logdets) {
        *el -= 0.5 * ld.unwrap_or(f64::NAN);
    }
    // B = (Σ + diag(1/a))⁻¹ through K' = I + Wᵀ diag(1/(d + 1/a)) W per cell.
    let mut idp = std::mem::take(&mut s.coef);
    let mut ok = vec![true; n];
    {
        let idp = buf(&mut idp, n * g);
        for (ir, ar) in idp.chunks_exact_mut(g).zip(a.chunks_exact(g)) {
            for ((iv, &av), &dv) in ir.iter_mut().zip(ar).zip(d) {
                *iv = 1.0 / (dv + 1.0 / av);
            }
        }
    }
    let sv = buf(&mut s.sv, n * nv);
    gemm(sv, view(&idp, n, g), view(&sig.vech, g, nv), false, 1.0);
    // Per cell: K'⁻¹ as its upper triangle (for the W gradient) and with
    // doubled off-diagonals (for the quadratic forms of diag B).
    let mut kinv_buf = std::mem::take(&mut s.kinv);
    let kinv = buf(&mut kinv_buf, n * nv);
    let mut kv2 = vec![0.0; n * nv];
    let mut kp = vec![0.0; k * k];
    let ident: Vec<f64> = (0..k * k)
        .map(|p| if p % (k + 1) == 0 { 1.0 } else { 0.0 })
        .collect();
    for c in 0..n {
        unpack_vech(&sv[c * nv..(c + 1) * nv], Some(&ident), 1.0, k, &mut kp);
        if !cholesky(&mut kp, k) {
            ok[c] = false;
            continue;
        }
        let inv = chol_inverse(&kp, k);
        vech_doubled(&inv, k, &mut kv2[c * nv..(c + 1) * nv]);
        let mut p = c * nv;
        for i in 0..k {
            for j in i..k {
                kinv[p] = inv[i * k + j];
                p += 1;
            }
        }
    }
    // diag(B) = idp − idp² w_gᵀ K'⁻¹ w_g.
    let q = buf(&mut s.q, n * g);
    gemm(
        q,
        view(&kv2, n, nv),
        view(&sig.vech, g, nv).transpose(),
        false,
        1.0,
    );
    let bdiag: Vec<f64> = q
        .iter()
        .zip(&idp[..n * g])
        .map(|(&qv, &iv)| iv - iv * iv * qv)
        .collect();
    // Free η: its prior, the Schur term and q = Σ⁻¹ A⁻¹ a.
    let free = modes.iter().any(|m| matches!(m, EtaMode::Free { .. }));
    let mut aa = std::mem::take(&mut s.aa);
    let mut qf = Vec::new();
    let mut schur = vec![f64::NAN; n];
    if free {
        newton_solve(sig, &a, n, buf(&mut aa, n * g), s);
        qf = vec![0.0; n * g];
        sigma_solve(sig, &aa[..n * g], n, &mut qf, &mut s.t);
        // Only cells with a free η have these terms.
        for (c, m) in modes.iter().enumerate() {
            if !matches!(m, EtaMode::Free { .. }) {
                qf[c * g..(c + 1) * g].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        for c in 0..n {
            if let EtaMode::Free { anchor, sigma } = modes[c] {
                let ar = &a[c * g..(c + 1) * g];
                let aar = &aa[c * g..(c + 1) * g];
                let sa: f64 = ar.iter().sum();
                let aaa: f64 = ar.iter().zip(aar).map(|(p, q)| p * q).sum();
                schur[c] = (sa + 1.0 / (sigma * sigma) - aaa).max(1e-30);
                let z = (eta[c] - anchor) / sigma;
                elbo[c] += -0.5 * z * z
                    - sigma.ln()
                    - 0.5 * ln2pi
                    - crate::math::ln_normal_sf(-anchor / sigma)
                    - 0.5 * schur[c].ln();
            }
        }
    }
    // NBLN: ∂/∂r_g through the observation terms and through a.
    let mut rterm = Vec::new();
    if !out.r.is_empty() {
        let mut sinv2 = vec![0.0; n * nv];
        for c in 0..n {
            if logdets[c].is_some() {
                let inv = chol_inverse(&s.ls[c * k * k..(c + 1) * k * k], k);
                vech_doubled(&inv, k, &mut sinv2[c * nv..(c + 1) * nv]);
            }
        }
        let q3 = buf(&mut s.q, n * g);
        gemm(
            q3,
            view(&sinv2, n, nv),
            view(&sig.vech, g, nv).transpose(),
            false,
            1.0,
        );
        rterm = vec![0.0; n * g];
        for c in 0..n {
            let (xr, ur) = (&x[c * g..(c + 1) * g], &s.u[c * g..(c + 1) * g]);
            for i in 0..g {
                let p = c * g + i;
                let mv = s.m[p];
                let id = sig.inv_d[i];
                let mut dlogdet = 1.0 / mv + id * id * q3[p] / (mv * mv);
                if free {
                    dlogdet += (1.0 - aa[p]).powi(2) / schur[c];
                }
                let (dv, da) = obs.d_r(i, ur[i], xr[i] - offs[c]);
                rterm[p] = dv - 0.5 * dlogdet * da;
            }
        }
    }
    // Leave out cells with a non-finite ELBO or gradient factor: their rows
    // of every factor summed below are zeroed.
    let finite = |v: &[f64], c: usize, len: usize| {
        v.is_empty() || v[c * len..(c + 1) * len].iter().all(|x| x.is_finite())
    };
    for c in 0..n {
        let keep = ok[c]
            && elbo[c].is_finite()
            && finite(&b, c, g)
            && finite(&bdiag, c, g)
            && finite(kinv, c, nv)
            && finite(&qf, c, g)
            && finite(&rterm, c, g)
            && (!matches!(modes[c], EtaMode::Free { .. }) || schur[c].is_finite());
        if !keep {
            elbo[c] = f64::NAN;
            b[c * g..(c + 1) * g].iter_mut().for_each(|v| *v = 0.0);
            idp[c * g..(c + 1) * g].iter_mut().for_each(|v| *v = 0.0);
            kinv[c * nv..(c + 1) * nv].iter_mut().for_each(|v| *v = 0.0);
            if !qf.is_empty() {
                qf[c * g..(c + 1) * g].iter_mut().for_each(|v| *v = 0.0);
            }
        }
    }
    let kept: Vec<usize> = (0..n).filter(|&c| elbo[c].is_finite()).collect();
    // μ: Σ_c b_c.   d: ½ Σ_c (b² − diag B + q²/s).   r: Σ_c rterm.
    for &c in &kept {
        let br = &b[c * g..(c + 1) * g];
        let qs = if qf.is_empty() || !matches!(modes[c], EtaMode::Free { .. }) {
            None
        } else {
            Some((&qf[c * g..(c + 1) * g], schur[c]))
        };
        for i in 0..g {
            out.mu[i] += br[i];
            let qq = qs.map_or(0.0, |(qr, sc)| qr[i] * qr[i] / sc);
            out.d[i] += 0.5 * (br[i] * br[i] - bdiag[c * g + i] + qq);
        }
        if !rterm.is_empty() {
            for (o, v) in out.r.iter_mut().zip(&rterm[c * g..(c + 1) * g]) {
                *o += v;
            }
        }
    }
    // W: Σ_c b_c (b_cᵀ W) − Σ_c diag(idp_c) W K'_c⁻¹ + Σ_c (q_c/s_c)(q_cᵀ W).
    let mut btw = vec![0.0; n * k];
    gemm(&mut btw, view(&b, n, g), view(w, g, k), false, 1.0);
    gemm(
        out.w,
        view(&b, n, g).transpose(),
        view(&btw, n, k),
        true,
        1.0,
    );
    // Σ_c idp_cg K'_c⁻¹ per gene, as one product (G × n)·(n × k(k+1)/2),
    // then times w_g gene by gene.
    let mg = buf(&mut s.mg, g * nv);
    gemm(
        mg,
        view(&idp, n, g).transpose(),
        view(kinv, n, nv),
        false,
        1.0,
    );
    for ((ow, wr), mr) in out
        .w
        .chunks_exact_mut(k)
        .zip(w.chunks_exact(k))
        .zip(mg.chunks_exact(nv))
    {
        let mut p = 0;
        for i in 0..k {
            ow[i] -= mr[p] * wr[i];
            p += 1;
            for j in i + 1..k {
                ow[i] -= mr[p] * wr[j];
                ow[j] -= mr[p] * wr[i];
                p += 1;
            }
        }
    }
    if !qf.is_empty() {
        let mut qtw = vec![0.0; n * k];
        gemm(&mut qtw, view(&qf, n, g), view(w, g, k), false, 1.0);
        for c in 0..n {
            let sc = if matches!(modes[c], EtaMode::Free { .. }) {
                schur[c]
            } else {
                1.0
            };
            qtw[c * k..(c + 1) * k].iter_mut().for_each(|v| *v /= sc);
        }
        gemm(
            out.w,
            view(&qf, n, g).transpose(),
            view(&qtw, n, k),
            true,
            1.0,
        );
    }
    s.b = b;
    s.a = a;
    s.coef = idp;
    s.aa = aa;
    s.kinv = kinv_buf;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::laplace::cell;
    use crate::models::lognormal::obs::{NegBin, Poisson};

    const MODES: [EtaMode; 3] = [
        EtaMode::None,
        EtaMode::Free {
            anchor: 0.7,
            sigma: 0.5,
        },
        EtaMode::Fixed,
    ];

    fn close(p: f64, q: f64, tol: f64) -> bool {
        (p - q).abs() <= tol * (1.0 + p.abs().max(q.abs())) || (p.is_nan() && q.is_nan())
    }

    /// A block of `n` cells with different counts; x warm-started near
    /// log(u + 1) (away from the MAP, so that Newton moves).
    fn block(n: usize, g: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mu: Vec<f64> = (0..g).map(|i| ((i as f64) * 0.5).sin()).collect();
        let u: Vec<f64> = (0..n * g)
            .map(|i| ((i * 7 + i / g * 3) % (5 + i / g)) as f64)
            .collect();
        let x: Vec<f64> = u.iter().map(|v| 0.3 * (v + 1.0).ln()).collect();
        (mu, u, x)
    }

    /// The block's Newton steps and ELBO gradient equal the per-cell
    /// functions' for Poisson and NB, every capture mode, with cells that
    /// stop early (tolerance) and cells that use all steps.
    #[test]
    fn block_matches_the_per_cell_functions() {
        let (n, g, k) = (7, 40, 3);
        let (w, d) = crate::laplace::woodbury::test_loadings(g, k, 0.5, 0.1, 0.2);
        let sig = SigmaFactor::new(&w, &d, k).unwrap();
        let r: Vec<f64> = (0..g).map(|i| 0.5 + 0.3 * i as f64).collect();
        let nb = NegBin::new(&r);
        for (obs, has_r) in [(&Poisson as &dyn Obs, false), (&nb as &dyn Obs, true)] {
            for mode in MODES {
                for (n_iter, tol) in [(3, 0.0), (8, 1e-3), (40, 1e-10)] {
                    let (mu, u, x0) = block(n, g);
                    let eta0: Vec<f64> = (0..n).map(|c| 0.3 + 0.2 * c as f64).collect();
                    let modes = vec![mode; n];
                    // Per cell.
                    let (mut xr, mut er) = (x0.clone(), eta0.clone());
                    let mut res_ref = Vec::new();
                    for c in 0..n {
                        res_ref.push(cell::newton(
                            obs,
                            &u[c * g..(c + 1) * g],
                            &mut xr[c * g..(c + 1) * g],
                            &mut er[c],
                            mode,
                            &mu,
                            &w,
                            &sig,
                            n_iter,
                            tol,
                            1e-2,
                            5.0,
                        ));
                    }
                    // Block.
                    let (mut xb, mut eb) = (x0.clone(), eta0.clone());
                    let mut s = Scratch {
                        u: u.clone(),
                        ..Scratch::default()
                    };
                    let res = newton(
                        obs, &mut xb, &mut eb, &modes, &mu, &sig, n_iter, tol, 1e-2, 5.0, &mut s,
                    );
                    let what = format!("{mode:?} r={has_r} n_iter={n_iter}");
                    for c in 0..n {
                        assert_eq!(res[c].1, res_ref[c].1, "{what} steps of cell {c}");
                        assert!(close(res[c].0, res_ref[c].0, 1e-8), "{what} norm");
                        assert!(close(eb[c], er[c], 1e-8), "{what} eta");
                    }
                    for (p, q) in xb.iter().zip(&xr) {
                        assert!(close(*p, *q, 1e-8), "{what} x {p} {q}");
                    }
                    // ELBO and its gradient at the per-cell end point.
                    let np = g * (k + 2) + if has_r { g } else { 0 };
                    let mut gref = vec![0.0; np];
                    let mut eref = Vec::new();
                    for c in 0..n {
                        let mut tmp = vec![0.0; np];
                        let out = OuterGrad::split(&mut tmp, g, k);
                        eref.push(cell::elbo_grad(
                            obs,
                            &u[c * g..(c + 1) * g],
                            &xr[c * g..(c + 1) * g],
                            er[c],
                            mode,
                            &mu,
                            &w,
                            &d,
                            &sig,
                            k,
                            out,
                        ));
                        for (a, b) in gref.iter_mut().zip(&tmp) {
                            *a += b;
                        }
                    }
                    let mut gb = vec![0.0; np];
                    let mut eb_elbo = vec![0.0; n];
                    {
                        let out = OuterGrad::split(&mut gb, g, k);
                        elbo_grad(
                            obs,
                            &xr,
                            &er,
                            &modes,
                            &mu,
                            &w,
                            &d,
                            &sig,
                            &mut s,
                            out,
                            &mut eb_elbo,
                        );
                    }
                    for c in 0..n {
                        assert!(close(eb_elbo[c], eref[c], 1e-9), "{what} elbo {c}");
                    }
                    for (i, (p, q)) in gb.iter().zip(&gref).enumerate() {
                        assert!(close(*p, *q, 1e-8), "{what} gradient {i}: {p} vs {q}");
                    }
                }
            }
        }
    }
}
