//! Bayesian denoising: the posterior of a cell's pre-capture count `m = u + d`.
//!
//! With `pp = p(1 − ν_c)` and `q = 1 − pp`, the uncaptured count is
//! `d | u ~ NB(r + u, pp)`: mean `(u + r·pp)/q`, variance `(r + u)·pp/q²`, mode
//! `u + ⌊max(r + u − 1, 0)·pp/q⌋`. A zero of a zero-inflated model is a gate
//! zero with probability `w = π/(π + (1−π)((1−p)/q)^r)`, whose value follows
//! the un-thinned prior `NB(r, p)`. BNB fits (`overdispersion = "bnb"`)
//! have closed forms too (see [`BnbPost`]). For mixtures each cell uses its own
//! component responsibilities `P(k | u_c, θ)` (the original uses the global
//! mixing weights, which ignores what the cell's counts say about its type).

use super::draws::NbDraws;
use super::loglik::{cell_responsibilities, pick_index, zinb_zero_terms, ZeroTerms};
use crate::data::CountMatrix;
use crate::dist::draw::{bnb_count, nb_count};
use crate::error::Result;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

/// A denoising estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Mean,
    Mode,
    Sample,
}

impl Method {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Method::Mean),
            "mode" => Ok(Method::Mode),
            "sample" => Ok(Method::Sample),
            other => Err(crate::CoreError::arg(
                "method",
                format!("must be \"mean\", \"mode\" or \"sample\", not \"{other}\""),
            )),
        }
    }
}

/// Mean and variance of one (cell, gene, component) posterior.
struct Post {
    mean: f64,
    var: f64,
}

fn nb_post(u: f64, r: f64, pp: f64) -> Post {
    let q = 1.0 - pp;
    Post {
        mean: (u + r * pp) / q,
        var: (r + u) * pp / (q * q),
    }
}

fn nb_mode(u: f64, r: f64, pp: f64) -> f64 {
    u + ((r + u - 1.0).max(0.0) * pp / (1.0 - pp)).floor()
}

/// The BNB posterior of a pre-capture count. The observed count's success
/// probability `π ~ Beta(α, κ)` (around `p̂`) has the conjugate posterior
/// `Beta(α + u, κ + r)` given `u`; given `π`, the biological probability is
/// `p' = π/(ν + π(1−ν))` and the uncaptured count `d ~ NB(r + u, p'(1−ν))`,
/// whose mean `(u + r)·π(1−ν)/ν` is linear in `π`: mean and variance are
/// closed-form Beta moments (the original integrates numerically). Without
/// capture `d = 0`: the NB formulas.
struct BnbPost {
    u: f64,
    r: f64,
    nu: f64,
    a: f64,
    b: f64,
    p_zero: f64,
}

impl BnbPost {
    fn new(u: f64, r: f64, p: f64, nu: f64, omega: f64) -> Self {
        let p_hat = p * nu / (1.0 - p * (1.0 - nu));
        let odds = p_hat / (1.0 - p_hat);
        let kappa = 2.0 + (r + 1.0) / omega.max(1e-6);
        let alpha = (kappa - 1.0) * odds;
        BnbPost {
            u,
            r,
            nu,
            a: alpha + u,
            b: kappa + r,
            p_zero: crate::models::nb::bnb_ratio(0, r, omega, odds).exp(),
        }
    }

    fn p_zero(&self) -> f64 {
        self.p_zero
    }

    fn post(&self) -> Post {
        let (a, b, u, r, nu) = (self.a, self.b, self.u, self.r, self.nu);
        if nu >= 1.0 {
            return Post { mean: u, var: 0.0 };
        }
        let e1 = a / (a + b);
        let e2 = a * (a + 1.0) / ((a + b) * (a + b + 1.0));
        let slope = (u + r) * (1.0 - nu) / nu;
        // E[Var(d | π)] + Var(E[d | π]) with Var(d | π) = (r+u)(1−ν)π(ν + π(1−ν))/ν².
        let within = (r + u) * (1.0 - nu) * (nu * e1 + (1.0 - nu) * e2) / (nu * nu);
        Post {
            mean: u + slope * e1,
            var: within + slope * slope * (e2 - e1 * e1),
        }
    }

    /// Mode (at the posterior mean of `π`) or a draw (`π` from its posterior).
    fn value(&self, rng: &mut ChaCha8Rng, how: Method) -> f64 {
        let (a, b, u, r, nu) = (self.a, self.b, self.u, self.r, self.nu);
        if nu >= 1.0 {
            return u;
        }
        let pi = match how {
            Method::Sample => rand_distr::Beta::new(a, b)
                .map_or(a / (a + b), |bd| rand_distr::Distribution::sample(&bd, rng)),
            _ => a / (a + b),
        };
        // Odds of the uncaptured count: p'(1−ν)/(1 − p'(1−ν)) = π(1−ν)/ν.
        let odds = pi * (1.0 - nu) / nu;
        match how {
            Method::Sample => u + nb_count(rng, r + u, odds) as f64,
            _ => u + ((r + u - 1.0).max(0.0) * odds).floor(),
        }
    }
}

/// The posterior of one pre-capture count `m` given its observed count `u`
/// and one setting of its parameters (`gate`: the zero-inflation
/// probability of zero-inflated models; `omega`: BNB's excess dispersion):
/// its mean, its variance and, when `pick` names a method other than the
/// mean, that method's value (the mode, or a draw from `rng`).
#[allow(clippy::too_many_arguments)]
pub fn count_posterior(
    u: f64,
    r: f64,
    p: f64,
    nu: f64,
    gate: Option<f64>,
    omega: Option<f64>,
    pick: Option<Method>,
    rng: &mut ChaCha8Rng,
) -> (f64, f64, Option<f64>) {
    let pp = p * (1.0 - nu);
    let q = 1.0 - pp;
    // The observed-count pathway: its mean/variance, its mode and a draw,
    // and P(u = 0) under the count model.
    let (obs, p_zero) = match omega {
        None => (nb_post(u, r, pp), ((1.0 - p) / q).powf(r)),
        Some(om) => {
            let b = BnbPost::new(u, r, p, nu, om);
            (b.post(), b.p_zero())
        }
    };
    let obs_value = |rng: &mut ChaCha8Rng, how: Method| match (omega, how) {
        (None, Method::Mode) => nb_mode(u, r, pp),
        (None, _) if pp > 0.0 => u + nb_count(rng, r + u, pp / q) as f64,
        (None, _) => u,
        (Some(om), how) => BnbPost::new(u, r, p, nu, om).value(rng, how),
    };
    match gate {
        Some(pi) if u == 0.0 => {
            // Gate zero (value from the un-thinned prior) vs count-model zero.
            let w = pi / (pi + (1.0 - pi) * p_zero);
            let odds = p / (1.0 - p);
            let (mg, vg) = match omega {
                None => (r * odds, r * odds * (1.0 + odds)),
                Some(om) => (r * odds, crate::models::nb::bnb_variance(r, odds, om)),
            };
            let value = pick.map(|m| match m {
                Method::Mode if w > 0.5 => ((r - 1.0).max(0.0) * odds).floor(),
                Method::Mode => obs_value(rng, Method::Mode),
                _ if rng.random::<f64>() < w => match omega {
                    None => nb_count(rng, r, odds) as f64,
                    Some(om) => bnb_count(rng, r, odds, om) as f64,
                },
                _ => match omega {
                    None => nb_count(rng, r, pp / q) as f64,
                    Some(_) => obs_value(rng, Method::Sample),
                },
            });
            (
                w * mg + (1.0 - w) * obs.mean,
                w * vg + (1.0 - w) * obs.var + w * (1.0 - w) * (mg - obs.mean).powi(2),
                value,
            )
        }
        _ => (obs.mean, obs.var, pick.map(|m| obs_value(rng, m))),
    }
}

/// Denoised values for the genes `genes` of every cell and draw: layout
/// `j + J·(c + C·s)` (genes × cells per draw). `zi_method` applies to zeros
/// of zero-inflated models. Variances (if asked) use the same layout.
#[allow(clippy::too_many_arguments)]
pub fn denoise(
    d: &NbDraws,
    data: &CountMatrix,
    genes: &[usize],
    method: Method,
    zi_method: Method,
    want_variance: bool,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
    let (s_n, c_n, j_n, k_n) = (d.n_draws, data.n_cells, genes.len(), d.n_comp);
    let copies = if want_variance { 2.0 } else { 1.0 };
    crate::limits::check_values("n_samples", copies * (j_n * c_n) as f64 * s_n as f64)?;
    let work = ctl.work(s_n);
    let mut vals = vec![0.0; j_n * c_n * s_n];
    let mut vars = if want_variance {
        vec![0.0; j_n * c_n * s_n]
    } else {
        Vec::new()
    };
    let mut pos = vec![usize::MAX; data.n_genes];
    for (j, &g) in genes.iter().enumerate() {
        pos[g] = j;
    }
    for s in 0..s_n {
        if work.stopped() {
            break;
        }
        let zero_terms: Vec<ZeroTerms> = (0..k_n).map(|k| zinb_zero_terms(d, s, k)).collect();
        let rows: Vec<(Vec<f64>, Vec<f64>)> = (0..c_n)
            .into_par_iter()
            .map(|c| {
                let mut out = vec![0.0; j_n];
                let mut vout = vec![0.0; if want_variance { j_n } else { 0 }];
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                // Stream 0 belongs to the guide draws; (draw, cell) streams start above it.
                rng.set_stream(((s as u64 + 1) << 32) | c as u64);
                // Responsibilities of this cell.
                let gam = cell_responsibilities(d, s, data, c, &zero_terms);
                // Component used by mode (most responsible) and by sampling (drawn).
                let k_mode = gam
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |x| x.0);
                let k_draw = pick_index(&gam, rng.random());
                let mut u_row = vec![0.0; j_n];
                let (gi, ci) = data.row(c);
                for (&g, &u) in gi.iter().zip(ci) {
                    if pos[g as usize] != usize::MAX {
                        u_row[pos[g as usize]] = u as f64;
                    }
                }
                let nu = d.nu_of(s, c);
                for (j, &g) in genes.iter().enumerate() {
                    let u = u_row[j];
                    let zi_zero = u == 0.0 && d.gate.is_some();
                    let m = if zi_zero { zi_method } else { method };
                    let (mut m_tot, mut second, mut value) = (0.0, 0.0, 0.0);
                    for k in 0..k_n {
                        let picked = k == if m == Method::Sample { k_draw } else { k_mode };
                        let pick = (picked && m != Method::Mean).then_some(m);
                        let (mean, var, v) = count_posterior(
                            u,
                            d.r_of(s, k)[g],
                            d.p_at(s, k, g),
                            nu,
                            d.gate_of(s, k).map(|pi| pi[g]),
                            d.omega_at(s, g),
                            pick,
                            &mut rng,
                        );
                        if let Some(v) = v {
                            value = v;
                        }
                        m_tot += gam[k] * mean;
                        second += gam[k] * (var + mean * mean);
                    }
                    out[j] = if m == Method::Mean { m_tot } else { value };
                    if want_variance {
                        vout[j] = (second - m_tot * m_tot).max(0.0);
                    }
                }
                (out, vout)
            })
            .collect();
        for (c, (row, vrow)) in rows.into_iter().enumerate() {
            let at = (s * c_n + c) * j_n;
            vals[at..at + j_n].copy_from_slice(&row);
            if want_variance {
                vars[at..at + j_n].copy_from_slice(&vrow);
            }
        }
        work.tick();
    }
    work.finish((vals, if want_variance { Some(vars) } else { None }))
}

#[cfg(test)]
mod bnb_tests {
    use super::*;
    use crate::math::lgamma;

    /// The closed-form moments against numerical integration over the Beta
    /// posterior of the observed count's success probability.
    #[test]
    fn bnb_denoising_moments_match_numerical_integration() {
        let (u, r, p, nu, omega) = (3.0, 1.4, 0.7, 0.35, 0.8);
        let b = BnbPost::new(u, r, p, nu, omega);
        let post = b.post();
        // ∫ Beta(π; a, b) E[m | π] and the total variance, by the midpoint rule.
        let (a, bb) = (b.a, b.b);
        let lbeta = lgamma(a) + lgamma(bb) - lgamma(a + bb);
        let n = 400_000;
        let (mut m1, mut m2) = (0.0, 0.0);
        for i in 0..n {
            let pi = (i as f64 + 0.5) / n as f64;
            let w = ((a - 1.0) * pi.ln() + (bb - 1.0) * (1.0 - pi).ln() - lbeta).exp() / n as f64;
            let pp = pi * (1.0 - nu) / (nu + pi * (1.0 - nu));
            let q = 1.0 - pp;
            let mean = (u + r * pp) / q;
            let var = (r + u) * pp / (q * q);
            m1 += w * mean;
            m2 += w * (var + mean * mean);
        }
        assert!((post.mean - m1).abs() < 1e-5 * m1, "{} vs {m1}", post.mean);
        let v = m2 - m1 * m1;
        assert!((post.var - v).abs() < 1e-4 * v, "{} vs {v}", post.var);
        // Without capture nothing is missing.
        let full = BnbPost::new(u, r, p, 1.0, omega).post();
        assert_eq!((full.mean, full.var), (u, 0.0));
    }

    #[test]
    fn bnb_variance_matches_simulation() {
        use crate::models::nb::bnb_variance;
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (r, odds, omega) = (1.5, 2.0, 0.5);
        let n = 400_000;
        let x: Vec<f64> = (0..n)
            .map(|_| bnb_count(&mut rng, r, odds, omega) as f64)
            .collect();
        let m = x.iter().sum::<f64>() / n as f64;
        let v = x.iter().map(|y| (y - m).powi(2)).sum::<f64>() / n as f64;
        let want = bnb_variance(r, odds, omega);
        assert!((v - want).abs() < 0.03 * want, "{v} vs {want}");
    }
}
