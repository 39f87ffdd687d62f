//! R bindings of differential expression and model comparison: conversions
//! only; the numerics are in `scribe_core::de` and `scribe_core::compare`.

use crate::convert::results::fit_view;
use crate::convert::{reals, Args};
use crate::errors::{internal, respond, GResult};
use crate::runner;
use extendr_api::prelude::*;

fn none() -> Robj {
    ().into()
}
use scribe_core::de::biological::biological;
use scribe_core::de::compositions::{
    gaussian_clr, gaussian_contrast, gaussian_differences, nb_differences, paired_differences,
    Component, GaussianSide, NbSide,
};
use scribe_core::de::error_control::{find_threshold, pefp};
use scribe_core::de::shrinkage::{shrink, ShrinkConfig};
use scribe_core::de::stats::{balance, empirical, gaussian, DeStats};
use scribe_core::posterior::Summary;
use scribe_core::progress::Ctl;

fn stats_to_r(s: DeStats) -> Robj {
    list!(
        taus = s.taus,
        delta_mean = s.delta_mean,
        delta_sd = s.delta_sd,
        prob_positive = s.prob_positive,
        lfsr = s.lfsr,
        prob_up = s.prob_up,
        prob_down = s.prob_down,
        prob_effect = s.prob_effect,
        lfsr_tau = s.lfsr_tau
    )
    .into()
}

/// Component of a side: a 0-based index, or -1 for the weighted mixture.
fn component(o: &Args, k: &str) -> GResult<Component> {
    let v = o.real(k)?;
    Ok(if v < 0.0 {
        Component::Weighted
    } else {
        Component::One(v as usize)
    })
}

fn mask(o: &Args) -> GResult<Option<Vec<bool>>> {
    Ok(o.get("gene_mask").map(|m| {
        m.as_logical_slice()
            .map(|v| v.iter().map(|b| b.is_true()).collect())
            .unwrap_or_default()
    }))
}

/// `Δ` draws (gene-major) between two NB-family fits (core views); `fit_b`
/// NULL compares two components of `fit_a` on the same parameter draws.
/// @noRd
#[extendr]
fn rs_de_nb(
    fit_a: Robj,
    fit_b: Robj,
    n_draws: f64,
    seed: f64,
    opts: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let o = Args::new(&opts, "opts")?;
        let va = fit_view(&fit_a)?;
        let vb = if fit_b.is_null() {
            None
        } else {
            Some(fit_view(&fit_b)?)
        };
        let (ca, cb) = (component(&o, "component_a")?, component(&o, "component_b")?);
        let n_dir = o.count_or("n_dirichlet", 1)?;
        let keep = mask(&o)?;
        let n = n_draws.max(1.0) as usize;
        let bio = o.boolean_or("biological", false)?;
        let (delta, metrics) =
            runner::run("differential expression", verbose, num_threads, |sh| {
                let draws = |v: &crate::convert::results::FitView, s: u64| {
                    crate::nb_draws(v, Summary::Draws { n, seed: s }, None, Ctl::none())
                };
                let da = draws(&va, seed as u64)?;
                let db = match &vb {
                    Some(v) => Some(draws(v, seed as u64 + 1)?),
                    None => None,
                };
                let sa = NbSide {
                    draws: &da,
                    component: ca,
                };
                let sb = NbSide {
                    draws: db.as_ref().unwrap_or(&da),
                    component: cb,
                };
                let metrics = if bio {
                    Some(biological(&sa, &sb)?)
                } else {
                    None
                };
                let delta = nb_differences(
                    &sa,
                    &sb,
                    n_dir,
                    keep.as_deref(),
                    seed as u64 + 2,
                    Ctl::new(sh, sh),
                )?;
                Ok((delta, metrics))
            })?;
        let metrics = match metrics {
            None => none(),
            Some(m) => {
                let (lfc, lvr, kl) = (
                    empirical(&m.lfc, m.n, &[0.0])?,
                    empirical(&m.lvr, m.n, &[0.0])?,
                    empirical(&m.jeffreys, m.n, &[0.0])?,
                );
                list!(
                    lfc = stats_to_r(lfc),
                    lvr = stats_to_r(lvr),
                    kl_mean = kl.delta_mean,
                    kl_sd = kl.delta_sd,
                    mu_a = m.mu_a,
                    mu_b = m.mu_b,
                    var_a = m.var_a,
                    var_b = m.var_b
                )
                .into()
            }
        };
        Ok(list!(
            delta = delta,
            n = (n * n_dir.max(1)) as f64,
            biological = metrics
        )
        .into())
    })())
}

/// `Δ` draws of a paired design: `fits_a[[d]]` against `fits_b[[d]]` (core
/// views), weighted by `weights`.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_de_nb_pairs(
    fits_a: Robj,
    fits_b: Robj,
    weights: Robj,
    n_draws: f64,
    seed: f64,
    opts: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let o = Args::new(&opts, "opts")?;
        let views = |r: &Robj| -> GResult<Vec<crate::convert::results::FitView>> {
            let l: List = r
                .clone()
                .try_into()
                .map_err(|_| internal("fits must be a list"))?;
            l.iter().map(|(_, f)| fit_view(&f)).collect()
        };
        let (va, vb) = (views(&fits_a)?, views(&fits_b)?);
        let (ca, cb) = (component(&o, "component_a")?, component(&o, "component_b")?);
        let n_dir = o.count_or("n_dirichlet", 1)?;
        let keep = mask(&o)?;
        let w = reals(Some(&weights), "weights")?;
        let n = n_draws.max(1.0) as usize;
        let delta = runner::run("differential expression", verbose, num_threads, |sh| {
            let draws = |v: &crate::convert::results::FitView, s: u64| {
                crate::nb_draws(v, Summary::Draws { n, seed: s }, None, Ctl::none())
            };
            let base = seed as u64;
            let da: Vec<_> = va
                .iter()
                .enumerate()
                .map(|(i, v)| draws(v, base + 2 * i as u64))
                .collect::<Result<_, _>>()?;
            let db: Vec<_> = vb
                .iter()
                .enumerate()
                .map(|(i, v)| draws(v, base + 2 * i as u64 + 1))
                .collect::<Result<_, _>>()?;
            let pairs: Vec<_> = da
                .iter()
                .zip(&db)
                .map(|(a, b)| {
                    (
                        NbSide {
                            draws: a,
                            component: ca,
                        },
                        NbSide {
                            draws: b,
                            component: cb,
                        },
                    )
                })
                .collect();
            paired_differences(
                &pairs,
                &w,
                n_dir,
                keep.as_deref(),
                base + 2 * va.len() as u64,
                Ctl::new(sh, sh),
            )
        })?;
        Ok(list!(delta = delta, n = (n * n_dir.max(1)) as f64).into())
    })())
}

/// A log-normal population as R sends it: list(mu, w (row-major), d, k).
struct Population {
    mu: Vec<f64>,
    w: Vec<f64>,
    d: Vec<f64>,
    k: usize,
}

impl Population {
    fn read(r: &Robj, what: &str) -> GResult<Self> {
        let a = Args::new(r, what)?;
        Ok(Population {
            mu: a.reals("mu")?,
            w: a.reals("w")?,
            d: a.reals("d")?,
            k: a.count("k")?,
        })
    }
    fn side(&self) -> GaussianSide<'_> {
        GaussianSide {
            mu: &self.mu,
            w: &self.w,
            d: &self.d,
            k: self.k,
        }
    }
}

/// `n` draws of `Δ` between two log-normal populations, each
/// list(mu, w (row-major), d, k).
/// @noRd
#[extendr]
fn rs_de_gaussian(
    a: Robj,
    b: Robj,
    n: f64,
    seed: f64,
    gene_mask: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let (pa, pb) = (
            Population::read(&a, "fit_a")?,
            Population::read(&b, "fit_b")?,
        );
        let keep: Option<Vec<bool>> = gene_mask
            .as_logical_slice()
            .map(|v| v.iter().map(|x| x.is_true()).collect());
        let n = n.max(1.0) as usize;
        let delta = runner::run("differential expression", verbose, num_threads, |sh| {
            let sa = pa.side();
            let sb = pb.side();
            gaussian_differences(&sa, &sb, n, keep.as_deref(), seed as u64, Ctl::new(sh, sh))
        })?;
        Ok(list!(delta = delta, n = n as f64).into())
    })())
}

/// Empirical summaries of gene-major `Δ` draws (`n` per gene).
/// @noRd
#[extendr]
fn rs_de_empirical(delta: Robj, n: f64, taus: Robj) -> Robj {
    respond((|| -> GResult<Robj> {
        let d = delta
            .as_real_slice()
            .ok_or_else(|| internal("`delta` must be double"))?;
        Ok(stats_to_r(empirical(
            d,
            n as usize,
            &reals(Some(&taus), "tau")?,
        )?))
    })())
}

/// The CLR mean and variance per gene of a log-normal population
/// list(mu, w (row-major), d, k).
/// @noRd
#[extendr]
fn rs_de_clr_moments(side: Robj) -> Robj {
    respond((|| -> GResult<Robj> {
        let p = Population::read(&side, "fit")?;
        let (mean, var) = gaussian_clr(&p.side());
        Ok(list!(mean = mean, var = var).into())
    })())
}

/// Mean and sd of the balance of each gene set (0-based indices) between
/// two log-normal populations: ILR weights `+sqrt(n₋/(n₊D))` on the set,
/// `−sqrt(n₊/(n₋D))` off it.
/// @noRd
#[extendr]
fn rs_de_gaussian_balances(a: Robj, b: Robj, sets: Robj) -> Robj {
    respond((|| -> GResult<Robj> {
        let (pa, pb) = (
            Population::read(&a, "fit_a")?,
            Population::read(&b, "fit_b")?,
        );
        let d_n = pa.mu.len();
        let sets: List = sets
            .try_into()
            .map_err(|_| internal("`sets` must be a list"))?;
        let (mut mean, mut sd) = (Vec::new(), Vec::new());
        for (_, s) in sets.iter() {
            let idx = reals(Some(&s), "sets")?;
            let mut in_set = vec![false; d_n];
            idx.iter().for_each(|&i| in_set[i as usize] = true);
            let n_plus = in_set.iter().filter(|&&x| x).count() as f64;
            let (n_minus, dn) = (d_n as f64 - n_plus, d_n as f64);
            let c: Vec<f64> = in_set
                .iter()
                .map(|&x| {
                    if x {
                        (n_minus / (n_plus * dn)).sqrt()
                    } else {
                        -(n_plus / (n_minus * dn)).sqrt()
                    }
                })
                .collect();
            let (ma, va) = gaussian_contrast(&pa.side(), &c);
            let (mb, vb) = gaussian_contrast(&pb.side(), &c);
            mean.push(ma - mb);
            sd.push((va + vb).sqrt());
        }
        Ok(list!(mean = mean, sd = sd).into())
    })())
}

/// Summaries of Gaussian `Δ` per gene (the parametric path).
/// @noRd
#[extendr]
fn rs_de_gaussian_stats(mean: Robj, sd: Robj, taus: Robj) -> Robj {
    respond((|| -> GResult<Robj> {
        Ok(stats_to_r(gaussian(
            &reals(Some(&mean), "mean")?,
            &reals(Some(&sd), "sd")?,
            &reals(Some(&taus), "tau")?,
        )?))
    })())
}

/// Adaptive shrinkage of empirical means and sds.
/// @noRd
#[extendr]
fn rs_de_shrink(mean: Robj, sd: Robj, taus: Robj, max_iter: f64, tol: f64) -> Robj {
    respond((|| -> GResult<Robj> {
        let cfg = ShrinkConfig {
            max_iter: max_iter as usize,
            tol,
            ..Default::default()
        };
        let s = shrink(
            &reals(Some(&mean), "mean")?,
            &reals(Some(&sd), "sd")?,
            &reals(Some(&taus), "tau")?,
            cfg,
        )?;
        Ok(list!(
            stats = stats_to_r(s.stats),
            grid = s.grid,
            weights = s.weights,
            null_proportion = s.null_proportion,
            converged = s.converged,
            n_iter = s.n_iter as f64,
            log_likelihood = s.log_likelihood
        )
        .into())
    })())
}

/// The lfsr threshold that keeps the PEFP at `target`, and the PEFP of it.
/// @noRd
#[extendr]
fn rs_de_threshold(lfsr: Robj, target: f64) -> Robj {
    respond((|| -> GResult<Robj> {
        let l = reals(Some(&lfsr), "lfsr")?;
        let t = find_threshold(&l, target);
        Ok(list!(threshold = t, pefp = pefp(&l, t)).into())
    })())
}

/// Draws of the balance of each gene set (0-based indices) against the rest.
/// @noRd
#[extendr]
fn rs_de_balances(delta: Robj, n: f64, sets: Robj) -> Robj {
    respond((|| -> GResult<Robj> {
        let d = delta
            .as_real_slice()
            .ok_or_else(|| internal("`delta` must be double"))?;
        let sets: List = sets
            .try_into()
            .map_err(|_| internal("`sets` must be a list"))?;
        let mut out = Vec::new();
        for (_, s) in sets.iter() {
            let idx: Vec<usize> = reals(Some(&s), "sets")?
                .iter()
                .map(|&i| i as usize)
                .collect();
            out.extend(balance(d, n as usize, &idx)?);
        }
        Ok(out.into())
    })())
}

/// Pointwise WAIC of an `S × n` log-likelihood matrix.
/// @noRd
#[extendr]
fn rs_waic(l: Robj, n_draws: f64) -> Robj {
    respond((|| -> GResult<Robj> {
        let x = l
            .as_real_slice()
            .ok_or_else(|| internal("`l` must be double"))?;
        let w = scribe_core::compare::waic(x, n_draws as usize)?;
        Ok(list!(lppd = w.lppd, p_waic = w.p_waic, elpd = w.elpd).into())
    })())
}

/// Per-observation posterior sd of `L_A − L_B`.
/// @noRd
#[extendr]
fn rs_paired_sd(l_a: Robj, l_b: Robj, n_draws: f64) -> Robj {
    respond((|| -> GResult<Robj> {
        let a = l_a
            .as_real_slice()
            .ok_or_else(|| internal("`l_a` must be double"))?;
        let b = l_b
            .as_real_slice()
            .ok_or_else(|| internal("`l_b` must be double"))?;
        Ok(scribe_core::compare::paired_sd(a, b, n_draws as usize)?.into())
    })())
}

extendr_module! {
    mod de;
    fn rs_de_nb;
    fn rs_de_nb_pairs;
    fn rs_de_gaussian;
    fn rs_de_empirical;
    fn rs_de_clr_moments;
    fn rs_de_gaussian_stats;
    fn rs_de_shrink;
    fn rs_de_threshold;
    fn rs_de_balances;
    fn rs_de_gaussian_balances;
    fn rs_waic;
    fn rs_paired_sd;
}
