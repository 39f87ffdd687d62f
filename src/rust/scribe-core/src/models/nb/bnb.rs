//! Beta-negative-binomial observations (`overdispersion = "bnb"`).
//!
//! `P(u) = Γ(r+u)/(Γ(r) u!) · B(α+u, κ+r)/B(α, κ)`: the NB's `p̂^u (1−p̂)^r`
//! averaged over `p̂ ~ Beta(α, κ)`, with `κ_g = 2 + (r_g+1)/ω_g` and
//! `α = (κ_g − 1)·o`, `o = p̂/(1−p̂)` (so the mean stays `r o`). The
//! `Γ(r+u)/Γ(r)` part is the NB's and comes from the count histograms; this
//! file adds the Beta ratio
//! `lnΓ(α+u) − lnΓ(α) + lnΓ(κ+r) − lnΓ(κ) − lnΓ(α+κ+r+u) + lnΓ(α+κ)`.
//!
//! Cost: without capture every cell of a gene shares `α`, so a gene needs
//! one ratio per distinct count plus one for its zeros, O(#pairs + G)
//! log-gammas. With capture `α` differs per cell, so zeros need one dense
//! pass over the batch's cells × genes with two log-gammas and two digammas
//! each, several times the NB's dense pass.

use super::kernels::{add_blocks, cell_blocks, CELL_BLOCK};
use super::{NbModel, NbWorkspace};
use crate::data::Batch;
use crate::math::{digamma_diff, digamma_shift, lgamma_diff, lgamma_digamma_shift};

/// Per-gene constants of the Beta ratio.
#[derive(Clone, Copy)]
pub(crate) struct GeneBnb {
    pub(crate) r: f64,
    pub(crate) kappa: f64,
    ln_kappa: f64,
    /// `lnΓ(κ+r) − lnΓ(κ)` and `ψ(κ+r) − ψ(κ)`.
    lg_kr: f64,
    dg_kr: f64,
}

impl GeneBnb {
    pub(crate) fn new(r: f64, omega: f64) -> Self {
        let kappa = 2.0 + (r + 1.0) / omega;
        let ln_kappa = kappa.ln();
        let (lg_kr, dg_kr) = lgamma_digamma_shift(kappa, ln_kappa, r);
        GeneBnb {
            r,
            kappa,
            ln_kappa,
            lg_kr,
            dg_kr,
        }
    }

    /// The Beta ratio of count `u` at odds `o = p̂/(1−p̂)`: its value, and
    /// its derivatives with respect to `ℓ = ln o`, to `κ` (through `α` too)
    /// and to `r` directly (not through `κ`). With `a₁ = α + κ`:
    /// value `lnΓ(α+u) − lnΓ(α) + [lnΓ(κ+r) − lnΓ(κ)] − [lnΓ(a₁+r+u) − lnΓ(a₁)]`;
    /// every difference is a shift (`ψ(a₁) − ψ(κ)` too), so two `ln(1+·)`
    /// per zero serve them all.
    #[inline]
    pub(crate) fn ratio(&self, u: u32, o: f64) -> (f64, f64, f64, f64) {
        let (r, kappa) = (self.r, self.kappa);
        let alpha = (kappa - 1.0) * o;
        let a1 = alpha + kappa;
        let (mut val, mut d_alpha) = (0.0, 0.0);
        if u > 0 {
            val += lgamma_diff(u, alpha);
            d_alpha += digamma_diff(u, alpha);
        }
        // ψ(a₁) − ψ(κ) and ln a₁ = ln κ + ln(1 + α/κ).
        let (dg_a1k, l_ak) = digamma_shift(kappa, alpha);
        let (lg_top, dg_top) = lgamma_digamma_shift(a1, self.ln_kappa + l_ak, r + u as f64);
        val += self.lg_kr - lg_top;
        d_alpha -= dg_top;
        let d_kappa = self.dg_kr - dg_top + d_alpha * o;
        (val, d_alpha * alpha, d_kappa, self.dg_kr - dg_a1k - dg_top)
    }
}

/// `(α, κ)` of the Beta on a count's success probability: `κ = 2 + (r + 1)/ω`
/// (`ω` at least 1e-6), `α = (κ − 1)·odds` with the mean odds `odds = p̂/(1−p̂)`.
pub fn bnb_shape(r: f64, omega: f64, odds: f64) -> (f64, f64) {
    let kappa = 2.0 + (r + 1.0) / omega.max(1e-6);
    ((kappa - 1.0) * odds, kappa)
}

/// Variance of a BNB count (`r`, mean odds `o`, excess dispersion `ω`):
/// with `o' = π/(1−π)`, `π ~ Beta(α, κ)`, `Var = r E o' + r E o'² + r² Var o'`
/// (finite: `κ > 2`).
pub fn bnb_variance(r: f64, odds: f64, omega: f64) -> f64 {
    let (alpha, kappa) = bnb_shape(r, omega, odds);
    let e1 = odds;
    let e2 = alpha * (alpha + 1.0) / ((kappa - 1.0) * (kappa - 2.0));
    r * e1 + r * e2 + r * r * (e2 - e1 * e1)
}

/// The value of the Beta ratio only (downstream log-likelihoods).
pub fn bnb_ratio(u: u32, r: f64, omega: f64, odds: f64) -> f64 {
    GeneBnb::new(r, omega.max(1e-6)).ratio(u, odds).0
}

impl NbModel<'_> {
    /// Folds per-gene sums (`Σ ∂/∂r` direct, `Σ ∂/∂κ`) into `g_r` and `g_omega`.
    fn bnb_finish(&self, ws: &mut NbWorkspace, g: usize, d_r: f64, d_kappa: f64) {
        let (r, omega) = (ws.r[g], ws.omega[g]);
        ws.g_r[g] += d_r + d_kappa / omega;
        ws.g_omega[g] = -d_kappa * (r + 1.0) / (omega * omega);
    }

    /// nbdm / zinb: every cell of a gene shares `α`, so each distinct count
    /// is evaluated once (weighted by its number of batch cells).
    pub(crate) fn bnb_shared_cells(&self, batch: &Batch, ws: &mut NbWorkspace) -> f64 {
        let d = self.data;
        let n_b = batch.len() as f64;
        let mut ll = 0.0;
        for g in 0..d.n_genes {
            let gb = GeneBnb::new(ws.r[g], ws.omega[g]);
            let o = ws.lpg[g].clamp(-700.0, 700.0).exp();
            let (mut d_l, mut d_k, mut d_r) = (0.0, 0.0, 0.0);
            let mut nnz = 0.0;
            for j in d.gene_pair_ptr[g]..d.gene_pair_ptr[g + 1] {
                let w = batch.pair_weight[j];
                if w == 0.0 {
                    continue;
                }
                let (v, dl, dk, dr) = gb.ratio(d.pair_count[j], o);
                ll += w * v;
                d_l += w * dl;
                d_k += w * dk;
                d_r += w * dr;
                nnz += w;
            }
            let n0 = n_b - nnz;
            let (z, zl, zk, zr) = gb.ratio(0, o);
            match self.b_gate {
                None => {
                    ll += n0 * z;
                    d_l += n0 * zl;
                    d_k += n0 * zk;
                    d_r += n0 * zr;
                }
                Some(_) => {
                    let pi = ws.pi[g];
                    let ez = z.exp();
                    let es = pi + (1.0 - pi) * ez;
                    let w0 = (1.0 - pi) * ez / es;
                    ll += nnz * (-pi).ln_1p() + n0 * es.ln();
                    d_l += n0 * w0 * zl;
                    d_k += n0 * w0 * zk;
                    d_r += n0 * w0 * zr;
                    ws.g_gate[g] = -nnz * pi + n0 * pi * (1.0 - pi) * (1.0 - ez) / es;
                }
            }
            ws.g_lpg[g] = d_l;
            self.bnb_finish(ws, g, d_r, d_k);
        }
        ll
    }

    /// nbvcp / zinbvcp: the zero ratio of every (cell, gene), then the swap to
    /// the count's ratio where it is positive; fixed cell blocks reduced in
    /// order (thread-count invariant).
    pub(crate) fn bnb_dense(&self, batch: &Batch, ws: &mut NbWorkspace) -> f64 {
        let d = self.data;
        let g_n = d.n_genes;
        let gated = self.b_gate.is_some();
        let genes: Vec<GeneBnb> = (0..g_n)
            .map(|g| GeneBnb::new(ws.r[g], ws.omega[g]))
            .collect();
        for (o, &l) in ws.odds_g.iter_mut().zip(&ws.lpg) {
            *o = l.clamp(-700.0, 700.0).exp();
        }
        let (pi, lnnu, odds_g) = (&ws.pi, &ws.ell, &ws.odds_g);
        let nb = batch.len();
        let ll = cell_blocks(
            nb,
            (4 * g_n, 1),
            &mut ws.blk,
            &mut ws.blk_ll,
            &mut ws.g_ell,
            |bi, buf, gell| {
                let (gr, rest) = buf.split_at_mut(g_n);
                let (gk, rest) = rest.split_at_mut(g_n);
                let (gg, gl) = rest.split_at_mut(g_n);
                let mut acc = 0.0;
                // The (log-)likelihood of a zero under the gate, and the
                // weight its ratio's derivatives carry.
                let zero = |g: usize, z: f64| -> (f64, f64, f64) {
                    if gated {
                        let ez = z.exp();
                        let es = pi[g] + (1.0 - pi[g]) * ez;
                        (
                            es.ln(),
                            (1.0 - pi[g]) * ez / es,
                            pi[g] * (1.0 - pi[g]) * (1.0 - ez) / es,
                        )
                    } else {
                        (z, 1.0, 0.0)
                    }
                };
                for (kk, ge) in gell.iter_mut().enumerate() {
                    let k = bi * CELL_BLOCK + kk;
                    let c = batch.cells[k] as usize;
                    let nu = lnnu[k].exp();
                    let mut gc = 0.0;
                    for g in 0..g_n {
                        let (z, zl, zk, zr) = genes[g].ratio(0, odds_g[g] * nu);
                        let (v, w0, dgate) = zero(g, z);
                        acc += v;
                        gr[g] += w0 * zr;
                        gk[g] += w0 * zk;
                        gg[g] += dgate;
                        gl[g] += w0 * zl;
                        gc += w0 * zl;
                    }
                    let (idx, counts) = d.row(c);
                    for (&g, &u) in idx.iter().zip(counts) {
                        let g = g as usize;
                        let o = odds_g[g] * nu;
                        let (z, zl, zk, zr) = genes[g].ratio(0, o);
                        let (v0, w0, dgate0) = zero(g, z);
                        let (v, dl, dk, dr) = genes[g].ratio(u, o);
                        let ln_keep = if gated { (-pi[g]).ln_1p() } else { 0.0 };
                        acc += ln_keep + v - v0;
                        gr[g] += dr - w0 * zr;
                        gk[g] += dk - w0 * zk;
                        if gated {
                            gg[g] += -pi[g] - dgate0;
                        }
                        gl[g] += dl - w0 * zl;
                        gc += dl - w0 * zl;
                    }
                    *ge = gc;
                }
                acc
            },
        );
        ws.g_gate[..g_n].iter_mut().for_each(|v| *v = 0.0);
        let (mut d_r, mut d_k) = (vec![0.0; g_n], vec![0.0; g_n]);
        add_blocks(
            &ws.blk,
            nb,
            4 * g_n,
            &mut [
                &mut d_r,
                &mut d_k,
                &mut ws.g_gate[..g_n],
                &mut ws.g_lpg[..g_n],
            ],
        );
        for g in 0..g_n {
            self.bnb_finish(ws, g, d_r[g], d_k[g]);
        }
        ll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::lgamma;

    /// The BNB pmf by numerical integration of the NB over p̂ ~ Beta(α, κ).
    fn pmf_by_quadrature(u: u32, r: f64, omega: f64, odds: f64) -> f64 {
        let kappa = 2.0 + (r + 1.0) / omega;
        let alpha = (kappa - 1.0) * odds;
        let lb = lgamma(alpha) + lgamma(kappa) - lgamma(alpha + kappa);
        let n = 200_000;
        let mut acc = 0.0;
        for i in 0..n {
            let p = (i as f64 + 0.5) / n as f64;
            let beta = ((alpha - 1.0) * p.ln() + (kappa - 1.0) * (1.0 - p).ln() - lb).exp();
            let nb = (lgamma(u as f64 + r) - lgamma(r) - lgamma(u as f64 + 1.0)
                + u as f64 * p.ln()
                + r * (1.0 - p).ln())
            .exp();
            acc += beta * nb / n as f64;
        }
        acc
    }

    #[test]
    fn the_beta_ratio_is_the_nb_averaged_over_a_beta_probability() {
        for &(u, r, omega, odds) in &[(0, 2.0, 0.5, 1.5), (3, 0.7, 0.2, 0.8), (7, 4.0, 1.3, 2.0)] {
            let want = pmf_by_quadrature(u, r, omega, odds);
            let got = (lgamma(u as f64 + r) - lgamma(r) - lgamma(u as f64 + 1.0)
                + bnb_ratio(u, r, omega, odds))
            .exp();
            assert!((got - want).abs() < 1e-4 * want, "u {u}: {got} vs {want}");
        }
    }

    #[test]
    fn the_beta_ratio_derivatives_match_finite_differences() {
        let h = 1e-6;
        for &(u, r, omega, o) in &[(0, 2.0, 0.5, 1.5), (3, 0.7, 0.2, 0.8), (12, 4.0, 0.05, 2.0)] {
            let f = |r: f64, kappa: f64, ell: f64| {
                let ln_kappa = kappa.ln();
                let (lg_kr, dg_kr) = lgamma_digamma_shift(kappa, ln_kappa, r);
                let g = GeneBnb {
                    r,
                    kappa,
                    ln_kappa,
                    lg_kr,
                    dg_kr,
                };
                g.ratio(u, ell.exp()).0
            };
            let g = GeneBnb::new(r, omega);
            let (_, d_l, d_k, d_r) = g.ratio(u, o);
            let (k, l) = (g.kappa, o.ln());
            let fd_l = (f(r, k, l + h) - f(r, k, l - h)) / (2.0 * h);
            let fd_k = (f(r, k + h, l) - f(r, k - h, l)) / (2.0 * h);
            let fd_r = (f(r + h, k, l) - f(r - h, k, l)) / (2.0 * h);
            for (a, b, what) in [(d_l, fd_l, "ell"), (d_k, fd_k, "kappa"), (d_r, fd_r, "r")] {
                assert!(
                    (a - b).abs() < 1e-6 * b.abs().max(1.0),
                    "u {u} {what}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn moment_start_separates_heavy_from_light_genes() {
        use crate::dist::Link;
        use crate::models::nb::simulate::{simulate_nb, NbTruth};
        use crate::models::nb::{NbSpec, Parameterization, Shrinkage, Variant};
        for variant in [Variant::Nbdm, Variant::Nbvcp] {
            let mut truth = NbTruth::random(variant, 60, 1500, 8);
            truth.r.iter_mut().for_each(|r| *r = 1.0 + 2.0 * *r);
            let om: Vec<f64> = (0..60).map(|g| [0.05, 1.5][g % 2]).collect();
            truth.omega = Some(om.clone());
            let data = simulate_nb(&truth, 9);
            let mut spec = NbSpec::new(variant, Parameterization::Canonical, true, Link::Softplus);
            spec.set_bnb(Shrinkage::Gaussian).unwrap();
            let model = NbModel::new(spec, &data).unwrap();
            let start = model.bnb_start(&model.base_init());
            let median = |heavy: bool| {
                let mut v: Vec<f64> = (0..60)
                    .filter(|g| (om[*g] > 1.0) == heavy)
                    .map(|g| start[g])
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (h, l) = (median(true), median(false));
            assert!(
                h > 0.5 && l < 0.3 && h > 4.0 * l,
                "{variant:?}: heavy {h}, light {l}"
            );
        }
    }
}
