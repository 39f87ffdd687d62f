//! Starting points of NB-family models: a method-of-moments estimate refined
//! by alternating conditional NB maximum likelihood, written into the
//! model's unconstrained layout. A good start is why fits converge in a few
//! hundred steps: r_g | p̂ solves `Σ_x n_g(x)[ψ(x+r)−ψ(r)] + Σ_c ln(1−p̂_c) = 0`
//! (monotone in r, Newton on ln r) and `logit p̂_c | r = ln(L_c / Σ_g r_g)`.

use super::{Capture, NbModel, Parameterization};
use crate::dist::Prior;
use crate::math::{digamma_diff, lgamma_diff, ln_sigmoid, logit, softplus_inv, trigamma_diff};
use crate::models::Model;
use rayon::prelude::*;

impl NbModel<'_> {
    /// Conditional NB maximum likelihood of every `r_g` given the cells' `p̂`:
    /// the root of `Σ_x w_g(x)[ψ(x+r)−ψ(r)] + s1 = 0` with `s1 = Σ_c ln(1−p̂_c)`
    /// (decreasing in r, so Newton on ln r converges to the unique root).
    pub(crate) fn solve_r(&self, pair_weight: &[f64], s1: f64, r: &mut [f64]) {
        self.solve_r_each(pair_weight, |_| s1, r)
    }

    /// [`Self::solve_r`] with a gene-specific `s1_g` (zero-inflated starts).
    pub(crate) fn solve_r_each(
        &self,
        pair_weight: &[f64],
        s1_of: impl Fn(usize) -> f64 + Sync,
        r: &mut [f64],
    ) {
        let d = self.data;
        r.par_iter_mut()
            .enumerate()
            .with_min_len(256)
            .for_each(|(g, rg)| {
                let pairs = d.gene_pair_ptr[g]..d.gene_pair_ptr[g + 1];
                if pairs.clone().all(|k| pair_weight[k] == 0.0) {
                    *rg = 1e-2;
                    return;
                }
                let mut u = rg.max(1e-4).ln();
                for _ in 0..50 {
                    let rv = u.exp();
                    let (mut f, mut df) = (s1_of(g), 0.0);
                    for k in pairs.clone() {
                        let (w, x) = (pair_weight[k], d.pair_count[k]);
                        if w != 0.0 {
                            f += w * digamma_diff(x, rv);
                            df += w * trigamma_diff(x, rv);
                        }
                    }
                    let step = (f / (df * rv)).clamp(-2.0, 2.0);
                    u = (u - step).clamp((1e-4f64).ln(), (1e4f64).ln());
                    if step.abs() < 1e-8 {
                        break;
                    }
                }
                *rg = u.exp();
            });
    }

    /// EM for zero-inflated starts. E: each zero of gene g is a gate zero with
    /// probability `w_g = π/(π + (1−π)(1−p̄)^r)` (at the cells' mean p̂);
    /// M: `π_g` = expected gate zeros / C, `r_g` solves the NB equation over
    /// the cells that are not gate zeros, `logit p̂_c = ln(L_c / Σ_g (1−π_g) r_g)`.
    fn zero_inflation_em(&self, r: &mut [f64], ell: &mut [f64], rounds: usize) -> Vec<f64> {
        let d = self.data;
        let (g_n, c_n) = (d.n_genes, d.n_cells as f64);
        let mut pi = vec![0.1; g_n];
        for _ in 0..rounds {
            let l1m: Vec<f64> = ell.iter().map(|&l| ln_sigmoid(-l)).collect();
            let mean_l1m = l1m.iter().sum::<f64>() / c_n;
            let s1: f64 = l1m.iter().sum();
            let mut z = vec![0.0; g_n];
            for g in 0..g_n {
                let n0 = c_n - d.gene_nnz[g];
                let nb0 = (r[g] * mean_l1m).exp();
                let w = pi[g] / (pi[g] + (1.0 - pi[g]) * nb0);
                z[g] = n0 * w;
                pi[g] = (z[g] / c_n).clamp(1e-3, 0.95);
            }
            // Σ over non-gate cells of ln(1 − p̂_c) ≈ s1 · (1 − Z_g / C).
            self.solve_r_each(&d.pair_weight, |g| s1 * (1.0 - z[g] / c_n), r);
            let eff: f64 = r.iter().zip(&pi).map(|(r, p)| r * (1.0 - p)).sum();
            if self.spec.variant.has_capture() {
                for (c, l) in ell.iter_mut().enumerate() {
                    *l = (d.lib_size[c].max(0.5) / eff).ln();
                }
            } else {
                let total: f64 = d.lib_size.iter().sum();
                let lp = (total / (c_n * eff)).ln();
                ell.iter_mut().for_each(|l| *l = lp);
            }
        }
        pi
    }

    /// The NB log-likelihood (without `ln u!`) at `r` and `logit p̂_c = ell_c`,
    /// from the per-gene count histograms and the cells' library sizes.
    fn nb_loglik(&self, r: &[f64], ell: &[f64]) -> f64 {
        let d = self.data;
        let pairs: f64 = (0..d.n_genes)
            .into_par_iter()
            .with_min_len(256)
            .map(|g| {
                (d.gene_pair_ptr[g]..d.gene_pair_ptr[g + 1])
                    .map(|k| d.pair_weight[k] * lgamma_diff(d.pair_count[k], r[g]))
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        let big_r: f64 = r.iter().sum();
        let cells: f64 = ell
            .iter()
            .zip(&d.lib_size)
            .map(|(&l, &lib)| lib * ln_sigmoid(l) + big_r * ln_sigmoid(-l))
            .sum();
        pairs + cells
    }

    /// Joint NB maximum likelihood of (r, logit p̂_c) along the direction the
    /// data identify only weakly: every cell's `logit p̂_c = λ + shape_c`
    /// (`shape_c = ln L_c` with capture, which is exactly the form of the
    /// conditional maximum `ln(L_c / Σ r)`; 0 without), each `r_g` at its
    /// conditional maximum given λ, and λ maximising that profile
    /// likelihood (a grid, then golden section). Alternating conditional
    /// maximisation crawls along this ridge; the profile finds its top
    /// directly, so SVI starts where it would otherwise spend thousands of
    /// steps drifting to.
    fn profile_nb_mle(&self, mut r: Vec<f64>, ell0: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = self.data;
        let shape: Vec<f64> = if self.spec.variant.has_capture() {
            d.lib_size.iter().map(|l| l.max(0.5).ln()).collect()
        } else {
            vec![0.0; d.n_cells]
        };
        let mut mid = ell0.iter().zip(&shape).map(|(e, s)| e - s).sum::<f64>() / d.n_cells as f64;
        if !mid.is_finite() {
            mid = 0.0;
        }
        let ell_at = |lam: f64| -> Vec<f64> { shape.iter().map(|s| lam + s).collect() };
        let profile = |lam: f64, r: &mut Vec<f64>| -> f64 {
            let ell = ell_at(lam);
            let s1: f64 = ell.iter().map(|&l| ln_sigmoid(-l)).sum();
            self.solve_r(&d.pair_weight, s1, r);
            let v = self.nb_loglik(r, &ell);
            if v.is_finite() {
                v
            } else {
                f64::NEG_INFINITY
            }
        };
        // Grid over ±6 around the start (odds from e^-6 to e^6 times it) ...
        let mut best = (mid, f64::NEG_INFINITY);
        for k in -12..=12 {
            let lam = mid + 0.5 * k as f64;
            let v = profile(lam, &mut r);
            if v > best.1 {
                best = (lam, v);
            }
        }
        // ... then golden section within half a grid step of the best.
        let (mut a, mut b) = (best.0 - 0.5, best.0 + 0.5);
        let g = 0.618_033_988_749_895;
        let (mut c, mut e) = (b - g * (b - a), a + g * (b - a));
        let (mut fc, mut fe) = (profile(c, &mut r), profile(e, &mut r));
        while b - a > 1e-4 {
            if fc > fe {
                b = e;
                e = c;
                fe = fc;
                c = b - g * (b - a);
                fc = profile(c, &mut r);
            } else {
                a = c;
                c = e;
                fc = fe;
                e = a + g * (b - a);
                fe = profile(e, &mut r);
            }
        }
        let lam = 0.5 * (a + b);
        profile(lam, &mut r);
        (r, ell_at(lam))
    }
}

/// A single-component starting point, shared by plain and mixture models.
#[derive(Clone)]
pub(crate) struct BaseInit {
    pub r: Vec<f64>,
    /// logit p (the shared scalar).
    pub lp: f64,
    /// Capture probability per cell (1 without capture).
    pub nu: Vec<f64>,
    /// logit p̂ per cell.
    pub ell: Vec<f64>,
    pub gate: Vec<f64>,
}

impl NbModel<'_> {
    pub(crate) fn base_init(&self) -> BaseInit {
        let d = self.data;
        let (g_n, c_n) = (d.n_genes, d.n_cells);
        let cf = c_n as f64;
        // Capture: ν_c ∝ L_c (prior mean 1/2 on average), or L_c / M0 under the capture prior.
        let mean_lib = d.lib_size.iter().sum::<f64>() / cf;
        let nu: Vec<f64> = d
            .lib_size
            .iter()
            .map(
                |&l| match (self.spec.variant.has_capture(), self.spec.capture_prior) {
                    (false, _) => 1.0,
                    (true, Some(cp)) => (l.max(1.0) / cp.ln_m0.exp()).clamp(1e-6, 1.0 - 1e-6),
                    (true, None) => (0.5 * l / mean_lib).clamp(0.01, 0.99),
                },
            )
            .collect();
        // Method of moments given ν: E u_cg = m_g ν_c with m_g = r_g·o, and
        // Var u_cg = m_g ν_c (1 + o ν_c). Per gene, m̂_g = Σ_c u_cg / Σ_c ν_c and
        // ô_g = [Σ_c (u_cg − m̂_g ν_c)² − m̂_g Σν] / (m̂_g Σν²); the shared odds is the
        // median of ô_g, and r_g = m̂_g / o matches every gene's mean exactly.
        let (sum_nu, sum_nu2) = nu.iter().fold((0.0, 0.0), |(a, b), v| (a + v, b + v * v));
        let mut s_u = vec![0.0; g_n];
        let mut s_u2 = vec![0.0; g_n];
        let mut s_unu = vec![0.0; g_n];
        for c in 0..c_n {
            let (genes, counts) = d.row(c);
            for (&g, &u) in genes.iter().zip(counts) {
                let (g, u) = (g as usize, u as f64);
                s_u[g] += u;
                s_u2[g] += u * u;
                s_unu[g] += u * nu[c];
            }
        }
        let m_hat: Vec<f64> = s_u.iter().map(|s| s / sum_nu).collect();
        let mut o_g: Vec<f64> = (0..g_n)
            .filter(|&g| d.gene_nnz[g] >= 3.0)
            .map(|g| {
                let m = m_hat[g];
                let ss = s_u2[g] - 2.0 * m * s_unu[g] + m * m * sum_nu2;
                (ss - m * sum_nu) / (m * sum_nu2)
            })
            .filter(|o| o.is_finite())
            .collect();
        o_g.sort_by(|a, b| a.total_cmp(b));
        let odds0 = if o_g.is_empty() {
            1.0
        } else {
            o_g[o_g.len() / 2]
        }
        .clamp(1e-3, 1e3);
        let r0: Vec<f64> = m_hat
            .iter()
            .map(|&m| (m / odds0).clamp(1e-3, 1e4))
            .collect();
        // Refine by alternating conditional NB maximum likelihood (zero inflation
        // ignored): r_g | p̂ solves Σ_x n_g(x)[ψ(x+r)−ψ(r)] + Σ_c ln(1−p̂_c) = 0, and
        // p̂ | r is closed form: logit p̂_c = ln(L_c / R) (capture) or
        // logit p = ln(Σ L / (C R)) (shared p).
        let ell0: Vec<f64> = nu.iter().map(|v| (odds0 * v).ln()).collect();
        let (mut r_hat, mut ell) = self.profile_nb_mle(r0, &ell0);
        let gate_em = if self.spec.variant.has_gate() {
            Some(self.zero_inflation_em(&mut r_hat, &mut ell, 10))
        } else {
            None
        };
        // Split logit p̂_c = logit p + ln ν_c: anchor ν at L_c/M0 under the capture
        // prior, else put the median ν at 1/2 while keeping every ν_c < 1.
        let mut sorted = ell.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let med = sorted[sorted.len() / 2];
        let max = sorted[sorted.len() - 1];
        let lp = match (self.spec.variant.has_capture(), self.spec.capture_prior) {
            (false, _) => med,
            (true, Some(_)) => {
                let mut diff: Vec<f64> = ell.iter().zip(&nu).map(|(l, v)| l - v.ln()).collect();
                diff.sort_by(|a, b| a.total_cmp(b));
                diff[diff.len() / 2]
            }
            (true, None) => (med + 2f64.ln()).max(max + 0.05),
        };
        let nu: Vec<f64> = ell
            .iter()
            .map(|l| (l - lp).exp().clamp(1e-6, 1.0 - 1e-6))
            .collect();
        // Gates from the EM start (zero-inflated models; unused otherwise).
        let gate: Vec<f64> = gate_em.unwrap_or_else(|| vec![0.05; g_n]);
        BaseInit {
            r: r_hat,
            lp,
            nu,
            ell,
            gate,
        }
    }

    /// The log prior density (in the unconstrained coordinates) of the start
    /// when `logit p̂_c = ell_c` is split as `logit p + ln ν_c` at `logit p =
    /// lp`. The likelihood is the same all along this line; the prior alone
    /// decides where the posterior sits on it.
    fn ridge_prior(&self, base: &BaseInit, lp: f64) -> f64 {
        let mut at = base.clone();
        at.lp = lp;
        at.nu = base
            .ell
            .iter()
            .map(|l| (l - lp).exp().clamp(1e-12, 1.0 - 1e-12))
            .collect();
        let x = self.materialize(&at, std::slice::from_ref(&at.r), &[lp], &[]);
        let mut lp_sum = 0.0;
        for (b, block) in self.layout.blocks.iter().enumerate() {
            for j in 0..block.len {
                lp_sum += self
                    .prior(b, j)
                    .ln_density_x(x[block.offset + j], block.link)
                    .0;
            }
        }
        lp_sum
    }

    /// For capture models the data identify only `p̂_c`: moves `logit p`
    /// (and with it every `ν_c`) to where the prior is highest along the
    /// line of equal likelihood, so that SVI need not drift there.
    pub(crate) fn split_on_ridge(&self, base: &mut BaseInit) {
        if !self.spec.variant.has_capture() || self.spec.mixture.is_some() {
            return;
        }
        let max = base.ell.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // ν_c < 1 needs logit p > max ell_c: search u = ln(logit p − max ell).
        let f = |u: f64| self.ridge_prior(base, max + u.exp());
        let mut best = (f64::NAN, f64::NEG_INFINITY);
        for k in 0..=50 {
            let u = -10.0 + 0.3 * k as f64;
            let v = f(u);
            if v > best.1 {
                best = (u, v);
            }
        }
        if !best.1.is_finite() {
            return;
        }
        let (mut a, mut b) = (best.0 - 0.3, best.0 + 0.3);
        let g = 0.618_033_988_749_895;
        for _ in 0..40 {
            let (c, e) = (b - g * (b - a), a + g * (b - a));
            if f(c) > f(e) {
                b = e;
            } else {
                a = c;
            }
        }
        let lp = max + (0.5 * (a + b)).exp();
        base.lp = lp;
        base.nu = base
            .ell
            .iter()
            .map(|l| (l - lp).exp().clamp(1e-6, 1.0 - 1e-6))
            .collect();
    }

    /// Writes a starting point into the layout: `r[k]` per gene component,
    /// `lp[k]` per scalar component, mixing weights `w` (empty without a mixture).
    pub(crate) fn materialize(
        &self,
        base: &BaseInit,
        r: &[Vec<f64>],
        lp: &[f64],
        w: &[f64],
    ) -> Vec<f64> {
        let g_n = self.data.n_genes;
        let lay = &self.layout;
        let mut x = vec![0.0; lay.total];
        let gb = &lay.blocks[self.b_gene];
        let sblk = &lay.blocks[self.b_scalar];
        for (k, rk) in r.iter().enumerate().take(gb.len / g_n) {
            let odds = lp[k.min(lp.len() - 1)].exp();
            for g in 0..g_n {
                let val = match self.spec.param {
                    Parameterization::Canonical => rk[g],
                    _ => (rk[g] * odds).max(1e-6),
                };
                x[gb.offset + k * g_n + g] = gb.link.inverse(val);
            }
        }
        // A gene-specific p has one row of G per scalar component.
        let per_gene = self.spec.gene_specific_p();
        for j in 0..sblk.len {
            let k = if per_gene { j / g_n } else { j };
            let l = lp[k.min(lp.len() - 1)];
            x[sblk.offset + j] = match self.spec.param {
                Parameterization::MeanOdds => sblk.link.inverse((-l).exp()),
                _ => l,
            };
        }
        // Hierarchies start with their location at the mean of the target's
        // starting coordinates (per gene across components, or overall) and
        // their scale coordinate at its prior's centre.
        // BNB: each gene's ω starts at its moment estimate (see bnb_start).
        if let Some(b) = self.b_bnb {
            let blk = &lay.blocks[b];
            for (xv, om) in x[blk.range()].iter_mut().zip(self.bnb_start(base)) {
                *xv = softplus_inv(om);
            }
        }
        for h in &self.hier {
            let (tb, lb) = (&lay.blocks[h.target], &lay.blocks[h.loc]);
            let per = lb.len;
            for i in 0..per {
                let vals: Vec<f64> = (0..tb.len)
                    .filter(|j| per == 1 || j % g_n == i)
                    .map(|j| x[tb.offset + j])
                    .collect();
                x[lb.offset + i] = vals.iter().sum::<f64>() / vals.len() as f64;
            }
            // Sparse families start at unit scales (τ = λ = ζ = ψ = 1) and
            // the slab at its prior mode.
            x[lay.blocks[h.scale].offset] = match self.block_prior[h.scale] {
                Prior::Normal { loc, .. } => loc,
                _ => 0.0,
            };
            if let Some(b) = h.local {
                x[lay.blocks[b].range()].fill(0.0);
            }
            if let Some(b) = h.slab {
                let (a, scale) = h.hyper.slab();
                x[lay.blocks[b].offset] = (scale / (a + 1.0)).ln();
            }
        }
        if let Some(b) = self.b_cap {
            let blk = &lay.blocks[b];
            for (c, &nu) in base.nu.iter().enumerate() {
                x[blk.offset + c] = match self.capture {
                    Capture::Nu => logit(nu),
                    Capture::Phi(link) => link.inverse((1.0 - nu) / nu),
                    Capture::Eta => softplus_inv((-nu.ln()).max(1e-4)),
                    Capture::None => 0.0,
                };
            }
        }
        if let Some(b) = self.b_gate {
            let blk = &lay.blocks[b];
            for j in 0..blk.len {
                x[blk.offset + j] = logit(base.gate[j % g_n]);
            }
        }
        if let Some(b) = self.b_mix {
            let blk = &lay.blocks[b];
            let last = w[w.len() - 1].max(1e-6);
            for j in 0..blk.len {
                x[blk.offset + j] = (w[j].max(1e-6) / last).ln();
            }
        }
        x
    }

    /// Per-dataset gene parameters: the pooled start scaled by each dataset's
    /// capture-corrected mean against the pooled one (half a count of
    /// pseudo-data keeps genes unseen in a dataset finite).
    pub(crate) fn dataset_start(&self, base: &BaseInit, ds: &super::Datasets) -> Vec<Vec<f64>> {
        let d = self.data;
        let g_n = d.n_genes;
        let mut sum = vec![vec![0.0; g_n]; ds.n];
        let mut nu = vec![0.0; ds.n];
        for c in 0..d.n_cells {
            let k = ds.cell[c] as usize;
            nu[k] += base.nu[c];
            let (genes, counts) = d.row(c);
            for (&g, &u) in genes.iter().zip(counts) {
                sum[k][g as usize] += u as f64;
            }
        }
        let nu_all: f64 = nu.iter().sum();
        (0..ds.n)
            .map(|k| {
                (0..g_n)
                    .map(|g| {
                        let all: f64 = sum.iter().map(|s| s[g]).sum();
                        let pooled = (all + 0.5 * ds.n as f64) / nu_all.max(1e-12);
                        if nu[k] <= 0.0 {
                            return base.r[g];
                        }
                        let own = (sum[k][g] + 0.5) / nu[k];
                        (base.r[g] * own / pooled).max(1e-6)
                    })
                    .collect()
            })
            .collect()
    }

    /// Starting `ω_g` of a BNB fit: the BNB's variance is about `1 + ω` times
    /// the NB's, so `ω_g` starts at the gene's observed squared deviations
    /// from the NB start's means over the NB variance, minus one, within
    /// `[0.01, 10]` (a fixed start near 0 left real genes' `ω` to crawl up at
    /// the step size, and stopping rules ended fits before it had).
    pub(crate) fn bnb_start(&self, base: &BaseInit) -> Vec<f64> {
        let d = self.data;
        let g_n = d.n_genes;
        // Per cell: the NB start's success odds; per gene: Σu², Σu·odds.
        let odds: Vec<f64> = base
            .ell
            .iter()
            .map(|l| l.clamp(-30.0, 30.0).exp())
            .collect();
        let (s1, s2) = (
            odds.iter().sum::<f64>(),
            odds.iter().map(|o| o * o).sum::<f64>(),
        );
        let (mut uu, mut uo) = (vec![0.0; g_n], vec![0.0; g_n]);
        for (c, &o) in odds.iter().enumerate() {
            let (genes, counts) = d.row(c);
            for (&g, &u) in genes.iter().zip(counts) {
                let u = u as f64;
                uu[g as usize] += u * u;
                uo[g as usize] += u * o;
            }
        }
        (0..g_n)
            .map(|g| {
                let r = base.r[g].max(1e-8);
                // Σ_c (u − μ)², μ_c = r·odds_c, against Σ_c (μ + μ²/r).
                let dev = uu[g] - 2.0 * r * uo[g] + r * r * s2;
                let nb_var = r * (s1 + s2);
                (dev / nb_var.max(1e-300) - 1.0).clamp(0.01, 10.0)
            })
            .collect()
    }
}
