//! R bindings for scribe-core (extendr). Thin by design: every entry point
//! converts its arguments ([`convert`]), runs the core on a worker thread
//! while R shows progress and watches for Ctrl-C ([`runner`]), and returns
//! `list(value = ...)` or a typed `list(error = ...)` ([`errors`]). No
//! numerics live here.

mod convert;
mod de;
mod errors;
mod runner;
mod vae;

use convert::configs::{laplace_config, mcmc_config, nb_spec, svi_config, GuideChoice};
use convert::counts::counts;
use convert::results::{
    dims_of, fit_view, guide_fields_to_r, laplace_to_r, layout_to_r, mcmc_to_r, priors_to_r,
    simulation_to_r, sites_to_r, summary, FitView, Posterior,
};
use convert::{indices, number, Args};
use errors::{internal, respond, GResult};
use extendr_api::prelude::*;
use scribe_core::laplace::cascade::cascade_stats;
use scribe_core::laplace::posterior::{self as laplace_posterior, Fitted};
use scribe_core::laplace::LnModel;
use scribe_core::mcmc::init::svi_start;
use scribe_core::mcmc::Start;
use scribe_core::models::nb::simulate::{simulate_nb, NbTruth};
use scribe_core::models::nb::{NbModel, Variant};
use scribe_core::models::Model;
use scribe_core::posterior::nb::denoise::{denoise, Method};
use scribe_core::posterior::nb::draws::NbDraws;
use scribe_core::posterior::nb::gof::{ppc_scores, quantile_residuals};
use scribe_core::posterior::nb::loglik::{log_likelihood, responsibilities, By};
use scribe_core::posterior::nb::normalize::{cell_fractions, dirichlet_samples, mean_composition};
use scribe_core::posterior::nb::predictive::predictive;
use scribe_core::posterior::nb::sites;
use scribe_core::posterior::Summary;
use scribe_core::progress::Ctl;
use scribe_core::svi::guide::{AmortizedCapture, Flow, Guide, LowRank, MeanField};

fn none() -> Robj {
    ().into()
}

/// The core's defaults of every engine setting.
/// @noRd
#[extendr]
fn rs_defaults() -> Robj {
    respond(Ok(convert::configs::defaults()))
}

/// Whether `n` numbers fit in the memory available (for R's own results).
/// @noRd
#[extendr]
fn rs_check_values(arg: &str, n: f64) -> Robj {
    respond(
        scribe_core::limits::check_values(arg, n)
            .map(|_| ().into())
            .map_err(Into::into),
    )
}

/// The unconstrained layout of an NB-family model for a data size.
/// @noRd
#[extendr]
fn rs_model_layout(model: Robj, n_genes: i32, n_cells: i32) -> Robj {
    respond((|| -> GResult<Robj> {
        let spec = nb_spec(&model)?;
        Ok(layout_to_r(
            &spec.layout(n_genes.max(0) as usize, n_cells.max(0) as usize),
        ))
    })())
}

/// Fits an NB-family model by SVI: the mean-field guide, or a low-rank one
/// when the settings give `guide_rank` (and optionally `joint_params`).
/// @noRd
#[extendr]
fn rs_svi_fit(counts_r: Robj, model: Robj, svi: Robj, verbose: bool, num_threads: i32) -> Robj {
    respond((|| -> GResult<Robj> {
        let data = counts(&counts_r)?;
        let cfg = svi_config(&svi)?;
        let nb = NbModel::new(nb_spec(&model)?, &data)?;
        let gene = nb.spec.param.gene_param();
        let (fit, fitted) = match convert::configs::guide_choice(&svi)? {
            GuideChoice::MeanField => svi_with(
                &nb,
                MeanField {
                    dim: nb.layout().total,
                },
                &cfg,
                verbose,
                num_threads,
            )?,
            GuideChoice::LowRank { rank, joint } => {
                let guide = LowRank::new(nb.layout(), gene, &joint, rank)?;
                svi_with(&nb, guide, &cfg, verbose, num_threads)?
            }
            GuideChoice::Flow { config, joint } => {
                let guide = Flow::new(nb.layout(), gene, &joint, &config)?;
                svi_with(&nb, guide, &cfg, verbose, num_threads)?
            }
            GuideChoice::AmortizedCapture {
                hidden,
                activation,
                input,
            } => {
                let guide = AmortizedCapture::new(nb.layout(), &data, &hidden, activation, input)?;
                svi_with(&nb, guide, &cfg, verbose, num_threads)?
            }
        };
        Ok(list!(
            layout = layout_to_r(nb.layout()),
            guide = fitted.family(),
            params = guide_fields_to_r(fitted.as_ref(), nb.layout())?,
            priors = priors_to_r(&nb)?,
            loss_history = fit.loss_history,
            early_stopped = fit.early_stopped,
            best_step = fit.best_step.map_or_else(none, |s| ((s + 1) as f64).into()),
            best_loss = fit.best_loss,
            restored_best = fit.restored_best,
            stop = convert::results::stop_to_r(&fit.stop, &fit.drift)
        )
        .into())
    })())
}

/// Runs SVI of `guide` on the worker thread; returns the run and the fitted guide.
fn svi_with<G: Guide>(
    nb: &NbModel,
    guide: G,
    cfg: &scribe_core::svi::SviConfig,
    verbose: bool,
    num_threads: i32,
) -> GResult<(
    scribe_core::svi::SviFit,
    Box<dyn scribe_core::svi::guide::FittedGuide>,
)> {
    let fit = runner::run("SVI", verbose, num_threads, |sh| {
        let init = scribe_core::svi::initial_params(nb, &guide);
        scribe_core::svi::run(nb, &guide, init, cfg, sh, sh)
    })?;
    let fitted = guide.fitted(&fit.params);
    Ok((fit, fitted))
}

/// Samples an NB-family posterior by NUTS; `init` is NULL (uniform start)
/// or the core view of an SVI fit to start from.
/// @noRd
#[extendr]
fn rs_mcmc_fit(
    counts_r: Robj,
    model: Robj,
    mcmc: Robj,
    init: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let data = counts(&counts_r)?;
        let (cfg, radius, spread) = mcmc_config(&mcmc)?;
        let nb = NbModel::new(nb_spec(&model)?, &data)?;
        let warm = if init.is_null() {
            None
        } else {
            Some(fit_view(&init)?)
        };
        let fit = runner::run("MCMC", verbose, num_threads, |sh| {
            let start = match &warm {
                None => Start::Uniform { radius },
                Some(v) => {
                    let point = sites(
                        &v.spec,
                        &v.layout,
                        v.posterior.source(),
                        Summary::Point,
                        Ctl::new(sh, sh),
                    )?;
                    let scales = v.posterior.source().scales();
                    let (loc, scale) = svi_start(&nb, &point, &v.layout, scales.as_deref())?;
                    Start::Around { loc, scale, spread }
                }
            };
            scribe_core::mcmc::run(&nb, &cfg, &start, sh, sh)
        })?;
        mcmc_to_r(&fit, &nb)
    })())
}

/// Fits a log-normal model by Laplace. Latents come back cell-major (`G`
/// values per cell), loadings row-major.
/// @noRd
#[extendr]
fn rs_laplace_fit(
    counts_r: Robj,
    model: &str,
    laplace: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let data = counts(&counts_r)?;
        let cfg = laplace_config(model, &laplace)?;
        let fit = runner::run("Laplace", verbose, num_threads, |sh| {
            scribe_core::laplace::run(&data, &cfg, sh, sh)
        })?;
        Ok(laplace_to_r(fit))
    })())
}

/// Point summary (`n_draws <= 0`) or draws of every sampled and derived
/// site of an SVI or MCMC fit (`fit` is its core view).
/// @noRd
#[extendr]
fn rs_fit_sites(fit: Robj, n_draws: Robj, seed: Robj, verbose: bool, num_threads: i32) -> Robj {
    respond((|| -> GResult<Robj> {
        let v = fit_view(&fit)?;
        let sm = summary(n_draws, seed)?;
        let s = runner::run("draws", verbose, num_threads, |sh| {
            sites(
                &v.spec,
                &v.layout,
                v.posterior.source(),
                sm,
                Ctl::new(sh, sh),
            )
        })?;
        sites_to_r(s)
    })())
}

/// The fit restricted to some genes and cells (0-based; `NULL` keeps all):
/// its new layout and guide fields or draws.
/// @noRd
#[extendr]
fn rs_subset_fit(fit: Robj, n_genes: i32, genes: Robj, cells: Robj) -> Robj {
    respond((|| -> GResult<Robj> {
        let v = fit_view(&fit)?;
        let pick = |r: &Robj, what: &str, n: usize| -> GResult<Option<Vec<usize>>> {
            (!r.is_null())
                .then(|| indices(Some(r), n, what))
                .transpose()
        };
        let n_cells = v
            .layout
            .blocks
            .iter()
            .find(|b| b.kind == scribe_core::models::BlockKind::Cell)
            .map_or(usize::MAX, |b| b.len);
        let g = pick(&genes, "i", n_genes.max(0) as usize)?;
        let c = pick(&cells, "j", n_cells)?;
        let (layout, keep) =
            v.layout
                .select(n_genes.max(0) as usize, g.as_deref(), c.as_deref())?;
        Ok(match &v.posterior {
            Posterior::Guide(guide) => {
                let sub = guide.select(&keep);
                list!(
                    layout = layout_to_r(&layout),
                    params = guide_fields_to_r(sub.as_ref(), &layout)?
                )
                .into()
            }
            Posterior::Draws(d) => {
                list!(layout = layout_to_r(&layout), draws = d.select(&keep).x).into()
            }
        })
    })())
}

/// The parameter draws of an NB-family fit for the downstream analyses.
fn nb_draws(
    v: &FitView,
    sm: Summary,
    replicate: Option<usize>,
    ctl: Ctl<'_>,
) -> scribe_core::Result<NbDraws> {
    let s = sites(&v.spec, &v.layout, v.posterior.source(), sm, ctl)?;
    let d = NbDraws::from_sites(&v.spec, &s)?;
    Ok(match replicate {
        Some(n) => d.replicate(n)?,
        None => d,
    })
}

/// Downstream analyses of an SVI or MCMC fit at its point summary
/// (`n_draws <= 0`) or on posterior draws: `what` is "loglik",
/// "responsibilities", "denoise", "normalize", "cell_fractions",
/// "predictive", "residuals" (randomized quantile residuals) or
/// "ppc_scores"; `counts` is the fitted counts or NULL; `opts` the
/// analysis' options. Returns list(values, ...).
/// @noRd
#[allow(clippy::too_many_arguments)]
#[extendr]
fn rs_nb_analysis(
    fit: Robj,
    n_draws: Robj,
    seed: Robj,
    what: &str,
    counts_r: Robj,
    opts: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let v = fit_view(&fit)?;
        let sm = summary(n_draws, seed)?;
        let o = Args::new(&opts, "opts")?;
        let replicate = o
            .get("replicate_map")
            .map(|_| o.count("replicate_map"))
            .transpose()?;
        let data = if counts_r.is_null() {
            None
        } else {
            Some(counts(&counts_r)?)
        };
        let dat = || {
            data.as_ref()
                .ok_or_else(|| internal("this analysis needs counts"))
        };
        let aseed = o.real_or("seed", 0.0)? as u64;
        // Options are read here, on the R thread; only Rust values enter the worker.
        Ok(match what {
            "loglik" => {
                let (by, split, dat) = (By::parse(&o.string("by")?)?, o.boolean("split")?, dat()?);
                let (vals, k) = runner::run("log-likelihood", verbose, num_threads, |sh| {
                    let d = nb_draws(&v, sm, replicate, Ctl::new(sh, sh))?;
                    Ok((
                        log_likelihood(&d, dat, by, split, Ctl::new(sh, sh))?,
                        d.n_comp,
                    ))
                })?;
                list!(values = vals, n_comp = k as i32).into()
            }
            "responsibilities" => {
                let dat = dat()?;
                let (vals, k) = runner::run("responsibilities", verbose, num_threads, |sh| {
                    let d = nb_draws(&v, sm, replicate, Ctl::new(sh, sh))?;
                    Ok((responsibilities(&d, dat, Ctl::new(sh, sh))?, d.n_comp))
                })?;
                list!(values = vals, n_comp = k as i32).into()
            }
            "denoise" => {
                let dat = dat()?;
                let (m, zm) = (
                    Method::parse(&o.string("method")?)?,
                    Method::parse(&o.string("zi_method")?)?,
                );
                let want_var = o.boolean("return_variance")?;
                let genes = indices(o.get("genes"), dat.n_genes, "genes")?;
                let (vals, var) = runner::run("denoising", verbose, num_threads, |sh| {
                    let d = nb_draws(&v, sm, replicate, Ctl::new(sh, sh))?;
                    denoise(&d, dat, &genes, m, zm, want_var, aseed, Ctl::new(sh, sh))
                })?;
                list!(
                    values = vals,
                    variance = var.map_or_else(none, |x| x.into())
                )
                .into()
            }
            "normalize" => {
                let n_dir = o.count_or("n_dirichlet", 0)?;
                let (vals, k) = runner::run("normalization", verbose, num_threads, |sh| {
                    let d = nb_draws(&v, sm, replicate, Ctl::new(sh, sh))?;
                    let vals = if n_dir == 0 {
                        mean_composition(&d)
                    } else {
                        dirichlet_samples(&d, n_dir, aseed)?
                    };
                    Ok((vals, d.n_comp))
                })?;
                list!(values = vals, n_comp = k as i32).into()
            }
            "cell_fractions" => {
                let dat = dat()?;
                let genes = indices(o.get("genes"), dat.n_genes, "genes")?;
                let sample = o.boolean("sample")?;
                let vals = runner::run("fractions", verbose, num_threads, |sh| {
                    let d = nb_draws(&v, sm, replicate, Ctl::new(sh, sh))?;
                    cell_fractions(&d, dat, &genes, sample, aseed, Ctl::new(sh, sh))
                })?;
                list!(values = vals).into()
            }
            "predictive" => {
                let (n_genes, _) = dims_of(&v.layout);
                let cells = indices(o.get("cells"), o.count("n_cells")?, "cells")?;
                let genes = indices(o.get("genes"), n_genes, "genes")?;
                let bio = o.boolean("biological")?;
                let vals = runner::run("predictive", verbose, num_threads, |sh| {
                    let d = nb_draws(&v, sm, replicate, Ctl::new(sh, sh))?;
                    predictive(&d, &cells, &genes, bio, aseed, Ctl::new(sh, sh))
                })?;
                list!(values = vals).into()
            }
            "residuals" => {
                let dat = dat()?;
                let genes = indices(o.get("genes"), dat.n_genes, "genes")?;
                let (keep, eps) = (o.boolean("keep")?, o.real("epsilon")?);
                let res = runner::run("quantile residuals", verbose, num_threads, |sh| {
                    let d = nb_draws(&v, sm, replicate, Ctl::new(sh, sh))?;
                    quantile_residuals(&d, dat, &genes, keep, eps, aseed, Ctl::new(sh, sh))
                })?;
                gof_residuals_to_r(res)
            }
            "ppc_scores" => {
                let dat = dat()?;
                let genes = indices(o.get("genes"), dat.n_genes, "genes")?;
                let level = o.real("level")?;
                let max_bin = o.opt_real("max_bin")?.map(|m| m as usize);
                let sc = runner::run("PPC scores", verbose, num_threads, |sh| {
                    let d = nb_draws(&v, sm, replicate, Ctl::new(sh, sh))?;
                    ppc_scores(&d, dat, &genes, level, max_bin, aseed, Ctl::new(sh, sh))
                })?;
                ppc_to_r(sc)
            }
            other => return Err(internal(format!("unknown analysis '{other}'"))),
        })
    })())
}

/// Posterior analyses of a Laplace fit: "latents" (draws of the latent
/// log-rates and capture), "predictive" (count draws; `use_map` for the MAP
/// latents), "loglik" (log-likelihood by cell or by gene, at the MAP or
/// per draw), "fractions" (per-cell compositions) and "population" (new
/// cells' compositions), "residuals" and "ppc_scores" (goodness of fit).
/// `fit` is list(model, k, mu, w (row-major), d, r, latents, eta, capture,
/// and for LNM totals and the 0-based reference gene).
/// @noRd
#[extendr]
fn rs_laplace_analysis(
    fit: Robj,
    counts_r: Robj,
    what: &str,
    opts: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let f = Args::new(&fit, "fit")?;
        let model = LnModel::parse(&f.string("model")?)?;
        let (mu, w, d, r) = (f.reals("mu")?, f.reals("w")?, f.reals("d")?, f.reals("r")?);
        let (latents, eta, totals) = (f.reals("latents")?, f.reals("eta")?, f.reals("totals")?);
        let capture = convert::configs::capture(f.get("capture"))?;
        let fitted = Fitted {
            model,
            k: f.count("k")?,
            mu: &mu,
            w: &w,
            d: &d,
            r: &r,
            latents: &latents,
            eta: &eta,
            capture: &capture,
            totals: &totals,
            reference: f.opt_real("reference")?.map(|r| r as usize),
            low_rank: f.boolean_or("low_rank", false)?,
        };
        let o = Args::new(&opts, "opts")?;
        let seed = o.real_or("seed", 0.0)? as u64;
        let n = o.count_or("n_draws", 0)?;
        if what == "population" {
            // New cells: no counts needed.
            let n_genes = mu.len() + usize::from(fitted.reference.is_some());
            let genes = indices(o.get("genes"), n_genes, "genes")?;
            let v = laplace_posterior::population_fractions(&fitted, &genes, n.max(1), seed)?;
            return Ok(list!(values = v).into());
        }
        let data = counts(&counts_r)?;
        let cells = indices(o.get("cells"), data.n_cells, "cells")?;
        Ok(match what {
            "latents" => {
                let (x, e) = runner::run("latent draws", verbose, num_threads, |sh| {
                    laplace_posterior::latent_draws(
                        &fitted,
                        &data,
                        &cells,
                        n,
                        seed,
                        Ctl::new(sh, sh),
                    )
                })?;
                list!(latents = x, eta = e).into()
            }
            "predictive" => {
                let genes = indices(o.get("genes"), data.n_genes, "genes")?;
                let use_map = o.boolean("use_map")?;
                let v = runner::run("predictive", verbose, num_threads, |sh| {
                    laplace_posterior::predictive(
                        &fitted,
                        &data,
                        &cells,
                        &genes,
                        n,
                        use_map,
                        seed,
                        Ctl::new(sh, sh),
                    )
                })?;
                list!(values = v).into()
            }
            "loglik" => {
                let draws = (n > 0).then_some((n, seed));
                let by = By::parse(&o.string("by")?)?;
                let v = runner::run("log-likelihood", verbose, num_threads, |sh| {
                    laplace_posterior::loglik(&fitted, &data, &cells, draws, by, Ctl::new(sh, sh))
                })?;
                list!(values = v).into()
            }
            "fractions" => {
                let genes = indices(o.get("genes"), data.n_genes, "genes")?;
                let draws = (n > 0).then_some((n, seed));
                let v = runner::run("fractions", verbose, num_threads, |sh| {
                    laplace_posterior::fractions(
                        &fitted,
                        &data,
                        &cells,
                        &genes,
                        draws,
                        Ctl::new(sh, sh),
                    )
                })?;
                list!(values = v).into()
            }
            "residuals" => {
                let genes = indices(o.get("genes"), data.n_genes, "genes")?;
                let (keep, eps) = (o.boolean("keep")?, o.real("epsilon")?);
                let draws = (n > 0).then_some((n, seed));
                let res = runner::run("quantile residuals", verbose, num_threads, |sh| {
                    laplace_posterior::quantile_residuals(
                        &fitted,
                        &data,
                        &genes,
                        keep,
                        eps,
                        draws,
                        seed,
                        Ctl::new(sh, sh),
                    )
                })?;
                gof_residuals_to_r(res)
            }
            "ppc_scores" => {
                let genes = indices(o.get("genes"), data.n_genes, "genes")?;
                let level = o.real("level")?;
                let max_bin = o.opt_real("max_bin")?.map(|m| m as usize);
                let sc = runner::run("PPC scores", verbose, num_threads, |sh| {
                    laplace_posterior::ppc_scores(
                        &fitted,
                        &data,
                        &genes,
                        level,
                        max_bin,
                        n,
                        seed,
                        Ctl::new(sh, sh),
                    )
                })?;
                ppc_to_r(sc)
            }
            other => return Err(internal(format!("unknown analysis '{other}'"))),
        })
    })())
}

/// Per-gene PPC calibration scores for R.
pub(crate) fn ppc_to_r(sc: scribe_core::posterior::nb::gof::PpcScores) -> Robj {
    list!(
        calibration_failure = sc.calibration_failure,
        l1_distance = sc.l1_distance
    )
    .into()
}

/// Per-gene residual summaries (and the residuals, if kept) for R.
pub(crate) fn gof_residuals_to_r(res: scribe_core::posterior::nb::gof::Residuals) -> Robj {
    list!(
        mean = res.mean,
        variance = res.variance,
        tail_excess = res.tail_excess,
        ks_distance = res.ks_distance,
        values = match res.values {
            Some(x) => Robj::from(x),
            None => Robj::from(()),
        }
    )
    .into()
}

/// Empirical priors (from `n_draws` posterior draws, widened by `tau`) and
/// point values of r, log mu and eta from an SVI fit, for the NBLN cascade.
/// @noRd
#[extendr]
fn rs_cascade_stats(fit: Robj, n_draws: i32, seed: f64, tau: f64) -> Robj {
    respond((|| -> GResult<Robj> {
        let v = fit_view(&fit)?;
        let src = v.posterior.source();
        let draws = sites(
            &v.spec,
            &v.layout,
            src,
            Summary::Draws {
                n: n_draws.max(1) as usize,
                seed: seed as u64,
            },
            Ctl::none(),
        )?;
        let point = sites(&v.spec, &v.layout, src, Summary::Point, Ctl::none())?;
        let st = cascade_stats(&draws, &point, tau)?;
        Ok(list!(
            r_loc = st.r_loc.0,
            r_scale = st.r_loc.1,
            mu_loc = st.mu.0,
            mu_scale = st.mu.1,
            eta_loc = st.eta.0,
            eta_scale = st.eta.1,
            r_point = st.r_point,
            mu_point = st.mu_point,
            eta_point = st.eta_point
        )
        .into())
    })())
}

/// Simulates counts from an NB-family model; returns the truth used and the
/// genes x cells CSC slots. Missing truth components (`NULL`) are drawn from
/// the core's default generator.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_simulate_nb(
    model: &str,
    n_genes: i32,
    n_cells: i32,
    n_components: i32,
    r: Robj,
    p: Robj,
    nu: Robj,
    gate: Robj,
    omega: Robj,
    seed: f64,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let variant = Variant::parse(model)?;
        let opt = |o: &Robj| o.as_real_slice().map(|s| s.to_vec());
        let (g, c) = (n_genes.max(0) as usize, n_cells.max(0) as usize);
        let mut truth = if n_components >= 2 {
            NbTruth::random_mixture(variant, g, c, n_components as usize, seed as u64)
        } else {
            NbTruth::random(variant, g, c, seed as u64)
        };
        if let Some(v) = opt(&r) {
            truth.r = v;
        }
        match opt(&p) {
            Some(v) if v.len() > 1 => truth.p_gene = Some(v),
            _ => {
                if let Some(v) = number(&p) {
                    truth.p = v;
                }
            }
        }
        if variant.has_capture() {
            if let Some(v) = opt(&nu) {
                truth.nu = Some(v);
            }
        }
        if variant.has_gate() {
            if let Some(v) = opt(&gate) {
                truth.gate = Some(v);
            }
        }
        truth.omega = opt(&omega);
        let m = simulate_nb(&truth, seed as u64 + 1);
        Ok(simulation_to_r(&m, truth))
    })())
}

/// Quantiles `probs` of the capture probability of cells with library sizes
/// `lib_size`, from the capture amortizer of an SVI fit (cells × probs,
/// column-major for R).
/// @noRd
#[extendr]
fn rs_predict_capture(fit: Robj, lib_size: Robj, probs: Robj) -> Robj {
    respond((|| -> GResult<Robj> {
        let (layout, am) = convert::results::amortizer_view(&fit)?;
        let lib = convert::reals(Some(&lib_size), "lib_size")?;
        let probs = convert::reals(Some(&probs), "probs")?;
        let q = am.capture_quantiles(&layout, &lib, &probs)?;
        let (n, k) = (lib.len(), probs.len());
        let col_major: Vec<f64> = (0..k)
            .flat_map(|j| (0..n).map(move |c| (c, j)))
            .map(|(c, j)| q[c * k + j])
            .collect();
        Ok(col_major.into())
    })())
}

extendr_module! {
    mod scribeR;
    use de;
    use vae;
    fn rs_defaults;
    fn rs_check_values;
    fn rs_model_layout;
    fn rs_svi_fit;
    fn rs_mcmc_fit;
    fn rs_laplace_fit;
    fn rs_fit_sites;
    fn rs_subset_fit;
    fn rs_nb_analysis;
    fn rs_laplace_analysis;
    fn rs_cascade_stats;
    fn rs_simulate_nb;
    fn rs_predict_capture;
}
