//! Mixtures whose components read every gene through its own `p`
//! (`priors = list(probability = ...)`: one `p_kg` per component and gene
//! when `p` is component-specific, else one `p_g` shared by the components)
//! or through the beta-negative-binomial (`overdispersion = "bnb"`, with
//! `ω_g` shared by the components: the spread a gene has beyond what its
//! cell's component explains).
//!
//! `ln p(u_c) = logsumexp_k [ln w_k + Σ_g ln f(u_cg | r_kg, p̂_kcg, π_kg, ω_g)]`,
//! and the gradient weights each component's by its responsibility `γ_ck`.
//! Each cell's sum is its genes' zero terms, then the swap to the count's
//! term where the count is positive. Without capture a component's zero
//! terms are the same in every cell, so they are summed once per step and a
//! cell costs O(nnz·K); with capture `p̂_kcg` differs in every (cell, gene)
//! and a cell costs one dense pass over its genes per component, O(G·K),
//! as the non-mixture kernels of `gene_p` and `bnb` do for K = 1.

use super::bnb::GeneBnb;
use super::gene_p::GeneParams;
use super::kernels::{add_blocks, cell_blocks, CELL_BLOCK};
use super::{NbModel, NbWorkspace};
use crate::data::Batch;
use crate::math::{digamma_diff, lgamma_diff, ln_sigmoid, sigmoid, softplus};

/// `ln f(u)` of one count without `−ln u!`, and its partial derivatives
/// with respect to `r`, `ℓ = logit p̂`, the gate's logit and the BNB's `κ`.
#[derive(Debug, Clone, Copy, Default)]
struct Term {
    v: f64,
    dr: f64,
    dl: f64,
    dgate: f64,
    dkappa: f64,
}

impl std::ops::Sub for Term {
    type Output = Term;
    fn sub(self, o: Term) -> Term {
        Term {
            v: self.v - o.v,
            dr: self.dr - o.dr,
            dl: self.dl - o.dl,
            dgate: self.dgate - o.dgate,
            dkappa: self.dkappa - o.dkappa,
        }
    }
}

/// The term of count `u` for one (component, gene) at `ℓ = logit p̂` with
/// odds `t = e^ℓ` (passed in: per cell they are a product of per-gene and
/// per-cell factors, so no `exp` is needed): the NB's
/// `lnΓ(u+r) − lnΓ(r) + u ln p̂ + r ln(1−p̂)`, or the BNB's with the Beta
/// ratio in place of `p̂^u (1−p̂)^r`; under a gate `π`, a zero becomes
/// `ln(π + (1−π) f(0))` and a positive count gains `ln(1−π)`.
#[inline]
fn term(u: u32, r: f64, l: f64, t: f64, pi: Option<f64>, bnb: Option<&GeneBnb>) -> Term {
    let mut t = match bnb {
        None => {
            let uf = u as f64;
            // ln(1−p̂) = −ln(1+t), p̂ = t/(1+t); beyond f64's odds, by ℓ.
            let (l1m, ph) = if t.is_finite() {
                (-t.ln_1p(), t / (1.0 + t))
            } else {
                (ln_sigmoid(-l), sigmoid(l))
            };
            Term {
                v: lgamma_diff(u, r) + uf * (l + l1m) + r * l1m,
                dr: digamma_diff(u, r) + l1m,
                dl: uf * (1.0 - ph) - r * ph,
                dgate: 0.0,
                dkappa: 0.0,
            }
        }
        Some(b) => {
            let (v, dl, dk, dr) = b.ratio(u, t.min(1e300));
            Term {
                v: lgamma_diff(u, r) + v,
                dr: digamma_diff(u, r) + dr,
                dl,
                dgate: 0.0,
                dkappa: dk,
            }
        }
    };
    if let Some(pi) = pi {
        if u == 0 {
            let ez = t.v.exp();
            let es = pi + (1.0 - pi) * ez;
            let w0 = (1.0 - pi) * ez / es;
            t = Term {
                v: es.ln(),
                dr: w0 * t.dr,
                dl: w0 * t.dl,
                dgate: pi * (1.0 - pi) * (1.0 - ez) / es,
                dkappa: w0 * t.dkappa,
            };
        } else {
            t.v += (-pi).ln_1p();
            t.dgate = -pi;
        }
    }
    t
}

/// Adds `w` times a term's partials (`r`, `ℓ`, gate, `κ`) at `j`.
#[inline]
fn accumulate(g: [&mut [f64]; 4], j: usize, w: f64, t: &Term) {
    g[0][j] += w * t.dr;
    g[1][j] += w * t.dl;
    g[2][j] += w * t.dgate;
    g[3][j] += w * t.dkappa;
}

/// `e^ℓ` (infinite beyond f64's range: [`term`] then works from `ℓ`).
#[inline]
fn odds(l: f64) -> f64 {
    l.exp()
}

/// The index of the `p` coordinate of component `k`, gene `g` in the
/// scalar block: `k·stride_k + g·stride_g` (component-specific `p`: one row
/// per component; gene-specific: one column per gene).
#[derive(Debug, Clone, Copy)]
struct PIndex {
    stride_k: usize,
    stride_g: usize,
}

impl PIndex {
    #[inline]
    fn at(self, k: usize, g: usize) -> usize {
        k * self.stride_k + g * self.stride_g
    }
}

/// Per-step quantities of one evaluation.
struct Step {
    /// `p_kg/(1−p_kg)` per (component, gene).
    odds: Vec<f64>,
    ln_w: Vec<f64>,
    /// BNB constants per (component, gene).
    bnb: Vec<GeneBnb>,
    /// Without capture: each (component, gene)'s zero term and each
    /// component's sum of them.
    zero: Vec<Term>,
    zero_sum: Vec<f64>,
}

impl NbModel<'_> {
    /// Width of one cell block's partial sums: `∂/∂r`, `∂/∂ℓ`, `∂/∂gate`,
    /// `∂/∂κ` per (component, gene), then the responsibilities per component.
    pub(crate) fn mixture_genewise_stride(k: usize, g: usize) -> usize {
        4 * k * g + k
    }

    /// Where the `p` coordinate of each (component, gene) sits in the scalar
    /// block; asked once per evaluation (the spec's checks walk its
    /// hierarchies), not per coordinate.
    fn p_index(&self) -> PIndex {
        let m = self.spec.mixture.expect("mixture");
        let gene = self.spec.gene_specific_p();
        let per_k = if gene { self.data.n_genes } else { 1 };
        PIndex {
            stride_k: if m.scalar { per_k } else { 0 },
            stride_g: usize::from(gene),
        }
    }

    /// Fills, per (component, gene) `j = k·G + g`: `r`, `lpg` (logit `p`),
    /// `dphig` (mean_odds: `dφ/dx`), `pi`; per gene `omega`/`domega`; per
    /// batch cell `ell = ln ν_c` and `dlnnu`; `theta`/`dtheta` over the gene block.
    fn mixture_genewise_fill(&self, x: &[f64], batch: &Batch, ws: &mut NbWorkspace) -> Step {
        let m = self.spec.mixture.expect("mixture");
        let (k_n, g_n) = (m.k, self.data.n_genes);
        let lay = &self.layout;
        let gb = &lay.blocks[self.b_gene];
        let sb = &lay.blocks[self.b_scalar];
        for j in 0..gb.len {
            (ws.theta[j], ws.dtheta[j]) = gb.link.forward_deriv(x[gb.offset + j]);
        }
        let pidx = self.p_index();
        for k in 0..k_n {
            let kg = if m.gene { k } else { 0 };
            for g in 0..g_n {
                let j = k * g_n + g;
                let xs = x[sb.offset + pidx.at(k, g)];
                let q = self.gene_params(xs, ws.theta[kg * g_n + g], ws.dtheta[kg * g_n + g]);
                (ws.lpg[j], ws.r[j], ws.dphig[j]) = (q.lp, q.r, q.dphi);
            }
        }
        if let Some(b) = self.b_bnb {
            let off = lay.blocks[b].offset;
            for g in 0..g_n {
                let sp = softplus(x[off + g]);
                ws.omega[g] = sp.max(1e-6);
                ws.domega[g] = if sp > 1e-6 { sigmoid(x[off + g]) } else { 0.0 };
            }
        }
        if let Some(b) = self.b_gate {
            let off = lay.blocks[b].offset;
            for k in 0..k_n {
                let kp = if m.gate { k } else { 0 };
                for g in 0..g_n {
                    ws.pi[k * g_n + g] = sigmoid(x[off + kp * g_n + g]);
                }
            }
        }
        let cap_off = self.b_cap.map(|b| lay.blocks[b].offset);
        for (i, &c) in batch.cells.iter().enumerate() {
            (ws.ell[i], ws.dlnnu[i]) = match cap_off {
                Some(off) => self.capture_eval(x[off + c as usize]),
                None => (0.0, 0.0),
            };
        }
        let bnb: Vec<GeneBnb> = if self.spec.bnb {
            (0..k_n * g_n)
                .map(|j| GeneBnb::new(ws.r[j], ws.omega[j % g_n]))
                .collect()
        } else {
            Vec::new()
        };
        let (mut zero, mut zero_sum) = (Vec::new(), vec![0.0; k_n]);
        if self.b_cap.is_none() {
            let gated = self.b_gate.is_some();
            zero = (0..k_n * g_n)
                .map(|j| {
                    let l = ws.lpg[j];
                    term(0, ws.r[j], l, odds(l), gated.then(|| ws.pi[j]), bnb.get(j))
                })
                .collect();
            for (k, zs) in zero_sum.iter_mut().enumerate() {
                *zs = zero[k * g_n..(k + 1) * g_n].iter().map(|t| t.v).sum();
            }
        }
        Step {
            odds: ws.lpg[..k_n * g_n].iter().map(|&l| odds(l)).collect(),
            ln_w: self.ln_mixing_weights(x),
            bnb,
            zero,
            zero_sum,
        }
    }

    /// `scale · ln p(u_batch | x)` of a mixture with gene-specific `p` or
    /// BNB; adds the gradient.
    pub(crate) fn mixture_genewise_log_lik_grad(
        &self,
        x: &[f64],
        batch: &Batch,
        grad: &mut [f64],
        ws: &mut NbWorkspace,
    ) -> f64 {
        let m = self.spec.mixture.expect("mixture");
        let step = self.mixture_genewise_fill(x, batch, ws);
        let (k_n, g_n, nb) = (m.k, self.data.n_genes, batch.len());
        let kg_n = k_n * g_n;
        let d = self.data;
        let capture = self.b_cap.is_some();
        let gated = self.b_gate.is_some();
        let stride = Self::mixture_genewise_stride(k_n, g_n);
        let (r, lpg, pi, lnnu) = (&ws.r, &ws.lpg, &ws.pi, &ws.ell);
        let params = |j: usize| (r[j], lpg[j], gated.then(|| pi[j]), step.bnb.get(j));
        let ok_at = |j: usize| step.odds[j];
        // With capture, an NB without a gate has a lean zero pass (odds
        // beyond f64's range go the general way).
        let plain = capture && !gated && !self.spec.bnb && step.odds.iter().all(|o| o.is_finite());
        let ll = cell_blocks(
            nb,
            (stride, 1),
            &mut ws.blk,
            &mut ws.blk_ll,
            &mut ws.g_ell,
            |bi, buf, gell| {
                let (gr, rest) = buf.split_at_mut(kg_n);
                let (gl, rest) = rest.split_at_mut(kg_n);
                let (gg, rest) = rest.split_at_mut(kg_n);
                let (gk, resp) = rest.split_at_mut(kg_n);
                let mut llk = vec![0.0; k_n];
                let mut gam = vec![0.0; k_n];
                // With capture: every (component, gene)'s term of the cell;
                // without: the swaps at the cell's nonzeros, component-major.
                let mut terms = vec![Term::default(); if capture && !plain { kg_n } else { 0 }];
                let (mut zdr, mut zdl) = if plain {
                    (vec![0.0; kg_n], vec![0.0; kg_n])
                } else {
                    (Vec::new(), Vec::new())
                };
                let mut swaps: Vec<Term> = Vec::new();
                let mut acc = 0.0;
                for (ii, ge) in gell.iter_mut().enumerate() {
                    let i = bi * CELL_BLOCK + ii;
                    let c = batch.cells[i] as usize;
                    let (genes, counts) = d.row(c);
                    if plain {
                        // The NB without a gate: a zero's term is −r ln(1+t),
                        // its partials −ln(1+t) and −r t/(1+t); one `ln` each.
                        let (ln_nu, nu) = (lnnu[i], lnnu[i].exp());
                        for (k, lk) in llk.iter_mut().enumerate() {
                            let rows = k * g_n..(k + 1) * g_n;
                            let (dr, dl) = (&mut zdr[rows.clone()], &mut zdl[rows.clone()]);
                            let (rk, ok) = (&r[rows.clone()], &step.odds[rows]);
                            let mut s = 0.0;
                            for g in 0..g_n {
                                let t = ok[g] * nu;
                                let lt = t.ln_1p();
                                s -= rk[g] * lt;
                                dr[g] = -lt;
                                dl[g] = -rk[g] * t / (1.0 + t);
                            }
                            for (&g, &u) in genes.iter().zip(counts) {
                                let (j, g) = (k * g_n + g as usize, g as usize);
                                let t = term(u, r[j], lpg[j] + ln_nu, ok_at(j) * nu, None, None);
                                s += t.v + rk[g] * (-dr[g]);
                                dr[g] = t.dr;
                                dl[g] = t.dl;
                            }
                            *lk = s;
                        }
                    } else if capture {
                        // p̂'s odds factorise: p's odds times ν_c.
                        let (ln_nu, nu) = (lnnu[i], lnnu[i].exp());
                        for (k, lk) in llk.iter_mut().enumerate() {
                            let mut s = 0.0;
                            for g in 0..g_n {
                                let j = k * g_n + g;
                                let (rj, lj, pj, bj) = params(j);
                                let t = term(0, rj, lj + ln_nu, step.odds[j] * nu, pj, bj);
                                s += t.v;
                                terms[j] = t;
                            }
                            for (&g, &u) in genes.iter().zip(counts) {
                                let j = k * g_n + g as usize;
                                let (rj, lj, pj, bj) = params(j);
                                let t = term(u, rj, lj + ln_nu, step.odds[j] * nu, pj, bj);
                                s += t.v - terms[j].v;
                                terms[j] = t;
                            }
                            *lk = s;
                        }
                    } else {
                        swaps.clear();
                        for (k, lk) in llk.iter_mut().enumerate() {
                            let mut s = step.zero_sum[k];
                            for (&g, &u) in genes.iter().zip(counts) {
                                let j = k * g_n + g as usize;
                                let (rj, lj, pj, bj) = params(j);
                                let t = term(u, rj, lj, step.odds[j], pj, bj) - step.zero[j];
                                s += t.v;
                                swaps.push(t);
                            }
                            *lk = s;
                        }
                    }
                    let mx = (0..k_n)
                        .map(|k| step.ln_w[k] + llk[k])
                        .fold(f64::NEG_INFINITY, f64::max);
                    let se: f64 = (0..k_n).map(|k| (step.ln_w[k] + llk[k] - mx).exp()).sum();
                    acc += mx + se.ln() - d.ln_fact[c];
                    for k in 0..k_n {
                        gam[k] = (step.ln_w[k] + llk[k] - mx).exp() / se;
                        resp[k] += gam[k];
                    }
                    let mut gc = 0.0;
                    for (k, &w) in gam.iter().enumerate() {
                        if w < 1e-300 {
                            continue;
                        }
                        if plain {
                            let rows = k * g_n..(k + 1) * g_n;
                            let (dr, dl) = (&zdr[rows.clone()], &zdl[rows.clone()]);
                            let (grk, glk) = (&mut gr[rows.clone()], &mut gl[rows]);
                            for g in 0..g_n {
                                grk[g] += w * dr[g];
                                glk[g] += w * dl[g];
                                gc += w * dl[g];
                            }
                        } else if capture {
                            for (g, t) in terms[k * g_n..(k + 1) * g_n].iter().enumerate() {
                                accumulate(
                                    [&mut *gr, &mut *gl, &mut *gg, &mut *gk],
                                    k * g_n + g,
                                    w,
                                    t,
                                );
                                gc += w * t.dl;
                            }
                        } else {
                            let sw = &swaps[k * genes.len()..(k + 1) * genes.len()];
                            for (&g, t) in genes.iter().zip(sw) {
                                accumulate(
                                    [&mut *gr, &mut *gl, &mut *gg, &mut *gk],
                                    k * g_n + g as usize,
                                    w,
                                    t,
                                );
                            }
                        }
                    }
                    *ge = gc;
                }
                acc
            },
        );
        let mut g_kappa = vec![0.0; kg_n];
        let mut resp = vec![0.0; k_n];
        for v in [&mut ws.g_r, &mut ws.g_lpg, &mut ws.g_gate] {
            v[..kg_n].fill(0.0);
        }
        add_blocks(
            &ws.blk,
            nb,
            stride,
            &mut [
                &mut ws.g_r[..kg_n],
                &mut ws.g_lpg[..kg_n],
                &mut ws.g_gate[..kg_n],
                &mut g_kappa,
                &mut resp,
            ],
        );
        // Without capture the zero terms count once per responsibility.
        if !capture {
            for (j, z) in step.zero.iter().enumerate() {
                let w = resp[j / g_n];
                ws.g_r[j] += w * z.dr;
                ws.g_lpg[j] += w * z.dl;
                ws.g_gate[j] += w * z.dgate;
                g_kappa[j] += w * z.dkappa;
            }
        }
        let s = batch.scale;
        let lay = &self.layout;
        if let Some(b) = self.b_cap {
            let off = lay.blocks[b].offset;
            for (i, &c) in batch.cells.iter().enumerate() {
                grad[off + c as usize] += s * ws.g_ell[i] * ws.dlnnu[i];
            }
        }
        // BNB: κ_kg = 2 + (r_kg + 1)/ω_g.
        if let Some(b) = self.b_bnb {
            let off = lay.blocks[b].offset;
            for g in 0..g_n {
                let om = ws.omega[g];
                let mut g_om = 0.0;
                for k in 0..k_n {
                    let j = k * g_n + g;
                    ws.g_r[j] += g_kappa[j] / om;
                    g_om -= g_kappa[j] * (ws.r[j] + 1.0) / (om * om);
                }
                grad[off + g] += s * g_om * ws.domega[g];
            }
        }
        let gb = lay.blocks[self.b_gene].offset;
        let sb = lay.blocks[self.b_scalar].offset;
        let pidx = self.p_index();
        for k in 0..k_n {
            let kg = if m.gene { k } else { 0 };
            for g in 0..g_n {
                let j = k * g_n + g;
                let (gr, gl) = (s * ws.g_r[j], s * ws.g_lpg[j]);
                let (ig, ip) = (gb + kg * g_n + g, sb + pidx.at(k, g));
                let q = GeneParams {
                    lp: ws.lpg[j],
                    r: ws.r[j],
                    theta: ws.theta[kg * g_n + g],
                    dtheta: ws.dtheta[kg * g_n + g],
                    dphi: ws.dphig[j],
                };
                let (d_gene, d_scalar) = self.gene_params_grad(&q, gr, gl);
                grad[ig] += d_gene;
                grad[ip] += d_scalar;
            }
        }
        if let Some(b) = self.b_gate {
            let off = lay.blocks[b].offset;
            for k in 0..k_n {
                let kp = if m.gate { k } else { 0 };
                for g in 0..g_n {
                    grad[off + kp * g_n + g] += s * ws.g_gate[k * g_n + g];
                }
            }
        }
        if let Some(b) = self.b_mix {
            let off = lay.blocks[b].offset;
            let n_tot: f64 = resp.iter().sum();
            for j in 0..k_n - 1 {
                grad[off + j] += s * (resp[j] - n_tot * step.ln_w[j].exp());
            }
        }
        s * ll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CountMatrix;
    use crate::dist::Link;
    use crate::math::lgamma;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::{NbSpec, Parameterization, Shrinkage, Variant};
    use crate::models::{log_joint_grad, Model};
    use crate::testutil::check_gradient;
    use rand::{RngExt, SeedableRng};

    /// Mixtures with a gene-specific `p` (per component or shared), BNB, and
    /// both, for every variant and parameterization.
    fn specs() -> Vec<NbSpec> {
        let mut out = Vec::new();
        for variant in Variant::ALL {
            for param in Parameterization::ALL {
                let (gp, sp) = (param.gene_param(), param.scalar_param());
                let new = |sites: &[&str]| {
                    let mut s = NbSpec::new(variant, param, true, Link::Softplus);
                    s.set_mixture(3, sites, 1.5).unwrap();
                    s
                };
                let mut all = vec![gp, sp];
                if variant.has_gate() {
                    all.push("gate");
                }
                let mut a = new(&all);
                a.add_hierarchy(sp, Shrinkage::Gaussian).unwrap();
                out.push(a);
                let mut b = new(&[gp]);
                b.add_hierarchy(sp, Shrinkage::Horseshoe).unwrap();
                out.push(b);
                let mut c = new(&[gp, sp]);
                c.set_bnb(Shrinkage::Horseshoe).unwrap();
                out.push(c);
                let mut e = new(&all);
                e.set_bnb(Shrinkage::Gaussian).unwrap();
                e.add_hierarchy(sp, Shrinkage::Neg).unwrap();
                e.add_hierarchy(gp, Shrinkage::Gaussian).unwrap();
                out.push(e);
            }
        }
        out
    }

    fn data(variant: Variant, seed: u64) -> CountMatrix {
        let mut t = NbTruth::random_mixture(variant, 13, 70, 3, seed);
        t.omega = Some((0..13).map(|g| 0.05 + 0.1 * g as f64).collect());
        simulate_nb(&t, seed + 1)
    }

    fn jittered(model: &NbModel, seed: u64) -> Vec<f64> {
        let mut x = model.initial_point();
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
        x.iter_mut().for_each(|v| *v += rng.random_range(-0.4..0.4));
        x
    }

    /// `ln f(u)` straight from the pmf (log-gammas, no shortcuts).
    fn ln_pmf(u: f64, r: f64, l: f64, pi: Option<f64>, omega: Option<f64>) -> f64 {
        let ln_nb = lgamma(u + r) - lgamma(r) - lgamma(u + 1.0);
        let obs = match omega {
            None => u * ln_sigmoid(l) + r * ln_sigmoid(-l),
            Some(om) => {
                let kappa = 2.0 + (r + 1.0) / om;
                let alpha = (kappa - 1.0) * l.exp();
                let ln_beta = |a: f64, b: f64| lgamma(a) + lgamma(b) - lgamma(a + b);
                ln_beta(alpha + u, kappa + r) - ln_beta(alpha, kappa)
            }
        };
        let v = ln_nb + obs;
        match pi {
            None => v,
            Some(pi) if u == 0.0 => (pi + (1.0 - pi) * v.exp()).ln(),
            Some(pi) => (1.0 - pi).ln() + v,
        }
    }

    #[test]
    fn likelihood_matches_the_dense_pmf_mixture() {
        for (t, spec) in specs().into_iter().enumerate() {
            let d = data(spec.variant, 40 + t as u64);
            let model = NbModel::new(spec.clone(), &d).unwrap();
            let x = jittered(&model, t as u64);
            let mut b = Batch::full(&d);
            b.set_cells(&d, &[0, 3, 4, 9, 13, 40, 69]);
            let mut ws = model.workspace();
            let mut g = vec![0.0; x.len()];
            let ll = model.log_lik_grad(&x, &b, &mut g, &mut ws);
            let step = model.mixture_genewise_fill(&x, &b, &mut ws);
            let dense = d.to_dense();
            let g_n = d.n_genes;
            let mut want = 0.0;
            for (i, &c) in b.cells.iter().enumerate() {
                let terms: Vec<f64> = (0..3)
                    .map(|k| {
                        let mut s = step.ln_w[k];
                        for gg in 0..g_n {
                            let j = k * g_n + gg;
                            s += ln_pmf(
                                dense[c as usize * g_n + gg],
                                ws.r[j],
                                ws.lpg[j] + ws.ell[i],
                                spec.variant.has_gate().then(|| ws.pi[j]),
                                spec.bnb.then(|| ws.omega[gg]),
                            );
                        }
                        s
                    })
                    .collect();
                let mx = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                want += mx + terms.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            }
            want *= b.scale;
            assert!(
                (ll - want).abs() < 1e-9 * want.abs(),
                "{spec:?}: {ll} vs {want}"
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (t, spec) in specs().into_iter().enumerate() {
            let d = data(spec.variant, 70 + t as u64);
            let model = NbModel::new(spec.clone(), &d).unwrap();
            let x = jittered(&model, 100 + t as u64);
            let mut b = Batch::full(&d);
            b.set_cells(&d, &[1, 2, 5, 8, 11, 12, 50]);
            let mut ws = model.workspace();
            // A first evaluation leaves the workspace as a fit's steps do.
            log_joint_grad(&model, &x, &b, &mut vec![0.0; x.len()], &mut ws);
            check_gradient(
                |x, g| log_joint_grad(&model, x, &b, g, &mut ws),
                &x,
                1e-5,
                &format!("{spec:?}"),
            );
        }
    }

    /// With `p` shared by the genes and no BNB, this kernel is the plain
    /// mixture kernel's model: values and gradients agree.
    #[test]
    fn without_gene_p_or_bnb_it_is_the_plain_mixture_kernel() {
        for variant in Variant::ALL {
            for param in Parameterization::ALL {
                let mut spec = NbSpec::new(variant, param, true, Link::Softplus);
                spec.set_mixture(3, &[param.gene_param(), param.scalar_param()], 1.5)
                    .unwrap();
                let d = data(variant, 7);
                let model = NbModel::new(spec.clone(), &d).unwrap();
                let x = jittered(&model, 9);
                let b = Batch::full(&d);
                let mut ws = model.workspace();
                // The plain kernel's workspace is too small for this one.
                ws.blk = vec![
                    0.0;
                    d.n_cells.div_ceil(CELL_BLOCK)
                        * NbModel::mixture_genewise_stride(3, d.n_genes)
                ];
                ws.lpg = vec![0.0; 3 * d.n_genes];
                ws.dphig = vec![0.0; 3 * d.n_genes];
                ws.g_lpg = vec![0.0; 3 * d.n_genes];
                let (mut g1, mut g2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
                let a = model.mixture_log_lik_grad(&x, &b, &mut g1, &mut ws);
                let c = model.mixture_genewise_log_lik_grad(&x, &b, &mut g2, &mut ws);
                assert!((a - c).abs() < 1e-9 * a.abs(), "{spec:?}: {a} vs {c}");
                for (i, (u, v)) in g1.iter().zip(&g2).enumerate() {
                    assert!(
                        (u - v).abs() < 1e-7 * (1.0 + u.abs()),
                        "{spec:?} coordinate {i}: {u} vs {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_component_specific_gene_p_has_one_row_per_component() {
        let mut s = NbSpec::new(
            Variant::Nbvcp,
            Parameterization::Canonical,
            true,
            Link::Softplus,
        );
        s.set_mixture(3, &["r", "p"], 1.0).unwrap();
        let mut shared = s.clone();
        shared.mixture.as_mut().unwrap().scalar = false;
        for (spec, rows) in [(s, 3), (shared, 1)] {
            let mut spec = spec;
            spec.add_hierarchy("p", Shrinkage::Gaussian).unwrap();
            let lay = spec.layout(13, 70);
            let p = lay.blocks.iter().find(|b| b.name == "p").unwrap();
            assert_eq!((p.len, p.n_comp), (rows * 13, rows));
        }
    }
}
