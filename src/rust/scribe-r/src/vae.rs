//! R bindings of the VAE engine: conversions only; the numerics are in
//! `scribe_core::vae`.

use crate::convert::configs::{capture, nb_spec, svi_config};
use crate::convert::counts::counts;
use crate::convert::results::{layout_to_r, summary};
use crate::convert::{indices, reals, Args};
use crate::errors::{respond, GResult};
use crate::runner;
use extendr_api::prelude::*;
use scribe_core::models::lognormal::{Capture, LnModel};
use scribe_core::models::nb::NbModel;
use scribe_core::models::Model;
use scribe_core::nn::flows::{FlowConfig, FlowKind};
use scribe_core::nn::Activation;
use scribe_core::posterior::nb::denoise::Method;
use scribe_core::posterior::By;
use scribe_core::progress::Ctl;
use scribe_core::vae::encoder::{InputTransform, Standardization};
use scribe_core::vae::lognormal::LnVae;
use scribe_core::vae::{conditioned_draws, encode_cells, fit, prior_draws, Vae, VaeConfig};

fn widths(a: &Args, k: &str, default: &[usize]) -> GResult<Vec<usize>> {
    let v = a.reals(k)?;
    Ok(if v.is_empty() {
        default.to_vec()
    } else {
        v.into_iter().map(|x| x as usize).collect()
    })
}

/// The VAE's architecture from the list R resolved.
fn vae_config(robj: &Robj) -> GResult<VaeConfig> {
    let a = Args::new(robj, "vae")?;
    let d = VaeConfig::default();
    let prior = match a.get("flow_type").and_then(|r| r.as_str()) {
        None | Some("none") => None,
        Some(kind) => Some(FlowConfig {
            kind: FlowKind::parse(kind, "vae_flow_type")?,
            num_layers: a.count("flow_num_layers")?,
            hidden: widths(&a, "flow_hidden_dims", &[64, 64])?,
            ..FlowConfig::default()
        }),
    };
    Ok(VaeConfig {
        latent_dim: a.count("latent_dim")?,
        encoder_hidden: widths(&a, "encoder_hidden_dims", &d.encoder_hidden)?,
        decoder_hidden: widths(&a, "decoder_hidden_dims", &d.decoder_hidden)?,
        activation: Activation::parse(&a.string("activation")?, "vae_activation")?,
        prior,
        kl_warmup: a.count("kl_warmup")?,
        block: d.block,
        // Fits saved before these settings existed used log1p, unstandardized.
        input_transform: InputTransform::parse(
            a.get("input_transform")
                .and_then(|r| r.as_str())
                .unwrap_or("log1p"),
        )?,
        standardize: a.boolean_or("standardize", false)?,
        log_var_clip: match a.reals("log_var_clip")?.as_slice() {
            [lo, hi] => Some((*lo, *hi)),
            _ => None,
        },
    })
}

/// The log-normal model a model spec names, if it names one.
fn ln_model(model: &Robj) -> GResult<Option<LnModel>> {
    let a = Args::new(model, "model")?;
    Ok(match a.get("model").and_then(|r| r.as_str()) {
        Some(m @ ("pln" | "nbln" | "lnm" | "lnmvcp")) => Some(LnModel::parse(m)?),
        _ => None,
    })
}

/// A log-normal model spec's capture block (`NULL`: none).
fn ln_capture(model: &Robj) -> GResult<Capture> {
    let a = Args::new(model, "model")?;
    capture(a.get("capture"))
}

/// The fit's named parameter pieces.
fn pieces(params: &Robj) -> GResult<Vec<(&str, Vec<f64>)>> {
    let list = params
        .as_list()
        .ok_or_else(|| crate::errors::internal("`params` must be a list"))?;
    let mut out = Vec::new();
    for (name, x) in list.iter() {
        out.push((name, reals(Some(&x), name)?));
    }
    Ok(out)
}

/// Trains a VAE on an NB-family or log-normal model; returns its layout, parameters in
/// named pieces and the loss history.
/// @noRd
#[extendr]
fn rs_vae_fit(
    counts_r: Robj,
    model: Robj,
    vae: Robj,
    svi: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let data = counts(&counts_r)?;
        let cfg = svi_config(&svi)?;
        if let Some(m) = ln_model(&model)? {
            let net = LnVae::new(m, &data, vae_config(&vae)?, &ln_capture(&model)?)?;
            let res = runner::run("VAE", verbose, num_threads, |sh| fit(&net, &cfg, sh, sh))?;
            return fit_to_r(
                net.split(&res.params),
                net.standardization.as_ref(),
                net.layout(),
                res.loss_history,
                net.reference,
            );
        }
        let nb = NbModel::new(nb_spec(&model)?, &data)?;
        let net = Vae::new(&nb, vae_config(&vae)?)?;
        let res = runner::run("VAE", verbose, num_threads, |sh| fit(&net, &cfg, sh, sh))?;
        fit_to_r(
            net.split(&res.params),
            net.standardization.as_ref(),
            nb.layout(),
            res.loss_history,
            None,
        )
    })())
}

/// A trained VAE for R: the globals' layout, the parameters in named
/// pieces (with the training data's input statistics when standardized)
/// and the loss history (and LNM's 0-based reference gene).
fn fit_to_r(
    split: Vec<(&'static str, &[f64])>,
    st: Option<&Standardization>,
    layout: &scribe_core::models::Layout,
    loss_history: Vec<f64>,
    reference: Option<usize>,
) -> GResult<Robj> {
    let (mut names, mut vals): (Vec<&str>, Vec<Robj>) = split
        .into_iter()
        .map(|(n, v)| (n, v.to_vec().into()))
        .unzip();
    // New cells are standardized by the training data's input statistics.
    if let Some(st) = st {
        names.extend(["input_mean", "input_std"]);
        vals.extend([st.mean.clone().into(), st.std.clone().into()]);
    }
    Ok(list!(
        layout = layout_to_r(layout),
        params = List::from_names_and_values(names, vals)?,
        loss_history = loss_history,
        reference = match reference {
            Some(r) => Robj::from(r as f64),
            None => Robj::from(()),
        }
    )
    .into())
}

/// Encoder means and log-variances (cells × latent, row-major) of the cells
/// of `counts_r` from a fitted VAE's encoder (and its input statistics,
/// `NULL` without standardization).
/// @noRd
#[extendr]
fn rs_vae_encode(
    counts_r: Robj,
    vae: Robj,
    encoder: Robj,
    input_mean: Robj,
    input_std: Robj,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let data = counts(&counts_r)?;
        let cfg = vae_config(&vae)?;
        let p = reals(Some(&encoder), "encoder")?;
        let st = if input_mean.is_null() {
            None
        } else {
            Some(Standardization {
                mean: reals(Some(&input_mean), "input_mean")?,
                std: reals(Some(&input_std), "input_std")?,
            })
        };
        let (loc, lv) = encode_cells(&cfg, &p, st.as_ref(), &data)?;
        Ok(list!(loc = loc, log_var = lv).into())
    })())
}

/// Draws from each cell's encoder Gaussian (`n × cells × latent`, column-major).
/// @noRd
#[extendr]
fn rs_vae_draws(loc: Robj, log_var: Robj, n: f64, seed: f64) -> Robj {
    respond((|| -> GResult<Robj> {
        let cells = loc.nrows();
        let loc = reals(Some(&loc), "loc")?;
        let lv = reals(Some(&log_var), "log_var")?;
        Ok(conditioned_draws(&loc, &lv, cells, n as usize, seed as u64)?.into())
    })())
}

/// Draws from a fitted VAE's latent prior (`n × latent`, row-major).
/// @noRd
#[extendr]
fn rs_vae_prior_draws(vae: Robj, prior: Robj, n: f64, seed: f64) -> Robj {
    respond((|| -> GResult<Robj> {
        let cfg = vae_config(&vae)?;
        let p = reals(Some(&prior), "prior")?;
        Ok(prior_draws(&cfg, &p, n as usize, seed as u64)?.into())
    })())
}

/// Downstream analyses of a fitted VAE on the counts it was fitted to
/// (`what`: "loglik", "predictive", "denoise", "draws", "cell_fractions",
/// "residuals", "ppc_scores" or "decoded"); `params` is
/// the fit's named parameter pieces.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_vae_analysis(
    counts_r: Robj,
    model: Robj,
    vae: Robj,
    params: Robj,
    what: &str,
    opts: Robj,
    n_draws: Robj,
    seed: Robj,
    verbose: bool,
    num_threads: i32,
) -> Robj {
    respond((|| -> GResult<Robj> {
        let data = counts(&counts_r)?;
        let pieces = pieces(&params)?;
        let named: Vec<(&str, &[f64])> = pieces.iter().map(|(n, x)| (*n, x.as_slice())).collect();
        if let Some(m) = ln_model(&model)? {
            let net = LnVae::new(m, &data, vae_config(&vae)?, &ln_capture(&model)?)?;
            let v = net.join(&named)?;
            return ln_analysis(&net, &v, what, &opts, n_draws, seed, verbose, num_threads);
        }
        let nb = NbModel::new(nb_spec(&model)?, &data)?;
        let net = Vae::new(&nb, vae_config(&vae)?)?;
        let v = net.join(&named)?;
        let sm = summary(n_draws, seed)?;
        let o = Args::new(&opts, "opts")?;
        let aseed = o.real_or("seed", 0.0)? as u64;
        let genes = indices(o.get("genes"), data.n_genes, "genes")?;
        Ok(match what {
            "loglik" => {
                let by = By::parse(&o.string("by")?)?;
                let vals = runner::run("log-likelihood", verbose, num_threads, |sh| {
                    net.log_likelihood(&v, by, sm, Ctl::new(sh, sh))
                })?;
                list!(values = vals).into()
            }
            "predictive" => {
                let cells = indices(o.get("cells"), data.n_cells, "cells")?;
                let bio = o.boolean("biological")?;
                let copies = o.count_or("replicate_map", 1)?;
                let vals = runner::run("predictive", verbose, num_threads, |sh| {
                    net.predictive(&v, &cells, &genes, bio, sm, copies, aseed, Ctl::new(sh, sh))
                })?;
                list!(values = vals).into()
            }
            "denoise" => {
                let (m, zm) = (
                    Method::parse(&o.string("method")?)?,
                    Method::parse(&o.string("zi_method")?)?,
                );
                let want_var = o.boolean("return_variance")?;
                let (vals, var) = runner::run("denoising", verbose, num_threads, |sh| {
                    net.denoise(&v, &genes, m, zm, want_var, sm, aseed, Ctl::new(sh, sh))
                })?;
                let var: Robj = match var {
                    Some(x) => x.into(),
                    None => ().into(),
                };
                list!(values = vals, variance = var).into()
            }
            "draws" => {
                let cells = indices(o.get("cells"), data.n_cells, "cells")?;
                let d = runner::run("posterior draws", verbose, num_threads, |sh| {
                    net.parameter_draws(&v, &cells, &genes, sm, Ctl::new(sh, sh))
                })?;
                let gate: Robj = match d.gate {
                    Some(x) => x.into(),
                    None => ().into(),
                };
                list!(p = d.p, nu = d.nu, r = d.r, gate = gate).into()
            }
            "cell_fractions" => {
                let sample = o.boolean("sample")?;
                let vals = runner::run("fractions", verbose, num_threads, |sh| {
                    net.cell_fractions(&v, &genes, sample, sm, aseed, Ctl::new(sh, sh))
                })?;
                list!(values = vals).into()
            }
            "residuals" => {
                let (keep, eps) = (o.boolean("keep")?, o.real("epsilon")?);
                let res = runner::run("quantile residuals", verbose, num_threads, |sh| {
                    net.quantile_residuals(&v, &genes, keep, eps, sm, aseed, Ctl::new(sh, sh))
                })?;
                crate::gof_residuals_to_r(res)
            }
            "ppc_scores" => {
                let level = o.real("level")?;
                let max_bin = o.opt_real("max_bin")?.map(|m| m as usize);
                let sc = runner::run("PPC scores", verbose, num_threads, |sh| {
                    net.ppc_scores(&v, &genes, level, max_bin, sm, aseed, Ctl::new(sh, sh))
                })?;
                crate::ppc_to_r(sc)
            }
            "decoded" => {
                let pt = runner::run("decoding", verbose, num_threads, |sh| {
                    net.decoded_point(&v, Ctl::new(sh, sh))
                })?;
                let gate: Robj = match pt.gate {
                    Some(x) => x.into(),
                    None => ().into(),
                };
                list!(p = pt.p, nu = pt.nu, r = pt.r, gate = gate).into()
            }
            other => {
                return Err(crate::errors::internal(format!(
                    "unknown VAE analysis '{other}'"
                )))
            }
        })
    })())
}

/// The analyses of a log-normal VAE (see `rs_vae_analysis`).
#[allow(clippy::too_many_arguments)]
fn ln_analysis(
    net: &LnVae,
    v: &[f64],
    what: &str,
    opts: &Robj,
    n_draws: Robj,
    seed: Robj,
    verbose: bool,
    num_threads: i32,
) -> GResult<Robj> {
    let (n_cells, n_genes) = (
        scribe_core::vae::fit::Objective::data(net).n_cells,
        scribe_core::vae::fit::Objective::data(net).n_genes,
    );
    let n = crate::convert::number(&n_draws).unwrap_or(0.0).max(0.0) as usize;
    let seed = crate::convert::number(&seed).unwrap_or(0.0) as u64;
    let o = Args::new(opts, "opts")?;
    let genes = indices(o.get("genes"), n_genes, "genes")?;
    Ok(match what {
        "loglik" => {
            let by = By::parse(&o.string("by")?)?;
            let vals = runner::run("log-likelihood", verbose, num_threads, |sh| {
                net.log_likelihood(v, by, n, seed, Ctl::new(sh, sh))
            })?;
            list!(values = vals).into()
        }
        "predictive" => {
            if o.boolean_or("biological", false)? {
                return Err(scribe_core::CoreError::arg(
                    "biological",
                    "applies to the NB models; a log-normal VAE's predictive counts are its only draws",
                )
                .into());
            }
            let cells = indices(o.get("cells"), n_cells, "cells")?;
            let copies = o.count_or("replicate_map", 0)?;
            let (m, point) = if copies > 0 {
                (copies, true)
            } else {
                (n, false)
            };
            let vals = runner::run("predictive", verbose, num_threads, |sh| {
                net.predictive(v, &cells, &genes, m, point, seed, Ctl::new(sh, sh))
            })?;
            // (s, gene, cell) to the NB VAE's (s, cell, gene), draws fastest.
            let (nc, ng) = (cells.len(), genes.len());
            let mut out = vec![0.0; vals.len()];
            for c in 0..nc {
                for g in 0..ng {
                    let (from, to) = ((c * ng + g) * m, (g * nc + c) * m);
                    out[to..to + m].copy_from_slice(&vals[from..from + m]);
                }
            }
            list!(values = out).into()
        }
        "cell_fractions" => {
            let all: Vec<usize> = (0..n_cells).collect();
            let vals = net.fractions(v, &all, &genes, n, seed)?;
            list!(values = vals).into()
        }
        "residuals" => {
            let (keep, eps) = (o.boolean("keep")?, o.real("epsilon")?);
            let res = runner::run("quantile residuals", verbose, num_threads, |sh| {
                net.quantile_residuals(v, &genes, keep, eps, n, seed, Ctl::new(sh, sh))
            })?;
            crate::gof_residuals_to_r(res)
        }
        "ppc_scores" => {
            let level = o.real("level")?;
            let max_bin = o.opt_real("max_bin")?.map(|m| m as usize);
            let sc = runner::run("PPC scores", verbose, num_threads, |sh| {
                net.ppc_scores(v, &genes, level, max_bin, n, seed, Ctl::new(sh, sh))
            })?;
            crate::ppc_to_r(sc)
        }
        "draws" => {
            let cells = indices(o.get("cells"), n_cells, "cells")?;
            let coords = indices(o.get("genes"), net.width, "genes")?;
            let vals = net.latent_draws(v, &cells, &coords, n, seed)?;
            let eta = net.capture_values(v, &cells, n, seed);
            list!(latents = vals, eta = eta).into()
        }
        "decoded" => {
            let (mu, w, d, r) = net.population(v);
            let all: Vec<usize> = (0..n_cells).collect();
            let coords: Vec<usize> = (0..net.width).collect();
            let lat = net.latent_draws(v, &all, &coords, 0, 0)?;
            let eta = net.capture_values(v, &all, 0, 0);
            list!(mu = mu, w = w, d = d, r = r, latents = lat, eta = eta).into()
        }
        other => {
            return Err(crate::errors::internal(format!(
                "the analysis '{other}' is not available for log-normal VAE fits"
            )))
        }
    })
}

/// The population `list(mu, w (row-major), d)` of a log-normal VAE fit from
/// its parameter pieces (no counts needed).
/// @noRd
#[extendr]
fn rs_ln_vae_population(params: Robj, latent_dim: f64) -> Robj {
    respond((|| -> GResult<Robj> {
        let pieces = pieces(&params)?;
        let piece = |name: &str| {
            pieces
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, x)| x.as_slice())
                .ok_or_else(|| crate::errors::internal(format!("the fit has no '{name}'")))
        };
        let (mu, w, d) = scribe_core::vae::lognormal::population_from_pieces(
            latent_dim as usize,
            piece("decoder_head")?,
            piece("global_loc")?,
        )?;
        Ok(list!(mu = mu, w = w, d = d).into())
    })())
}

extendr_module! {
    mod vae;
    fn rs_ln_vae_population;
    fn rs_vae_analysis;
    fn rs_vae_prior_draws;
    fn rs_vae_fit;
    fn rs_vae_encode;
    fn rs_vae_draws;
}
