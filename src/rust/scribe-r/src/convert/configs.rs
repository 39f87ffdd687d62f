//! Model specifications and engine settings from the validated lists that
//! `R/` builds, and the core's defaults for R to show and fill in.

use super::Args;
use crate::errors::{input, internal, GResult};
use extendr_api::prelude::*;
use scribe_core::dist::Link;
use scribe_core::laplace::w_prior::LoadingsPrior;
use scribe_core::laplace::{Capture, Cascade, LaplaceConfig, LnModel};
use scribe_core::mcmc::{MassMatrix, McmcConfig, DEFAULT_INIT_RADIUS, DEFAULT_INIT_SPREAD};
use scribe_core::models::nb::{DatasetP, NbSpec, Parameterization, Shrinkage, Variant};
use scribe_core::nn::flows::{FlowConfig, FlowKind};
use scribe_core::nn::Activation;
use scribe_core::optim::early_stop::EarlyStopping;
use scribe_core::optim::settle::Settle;
use scribe_core::optim::OptimizerConfig;
use scribe_core::svi::guide::CaptureInput;
use scribe_core::svi::SviConfig;

/// An NB-family model from `list(model, parameterization, unconstrained,
/// positive_transform, priors, n_components, mixture_params,
/// mixing_concentration, overdispersion, hierarchies, dataset_cells, n_datasets,
/// dataset_hierarchies, prob_dataset_mode)`; `hierarchies` names a family per
/// target site.
pub fn nb_spec(model: &Robj) -> GResult<NbSpec> {
    let a = Args::new(model, "model")?;
    let variant = Variant::parse(&a.string("model")?)?;
    let param = Parameterization::parse(&a.string("parameterization")?)?;
    let link = match a.string("positive_transform")?.as_str() {
        "softplus" => Link::Softplus,
        "exp" => Link::Exp,
        other => {
            return Err(input(
                "positive_transform",
                format!("must be \"softplus\" or \"exp\", not \"{other}\""),
            ))
        }
    };
    let mut spec = NbSpec::new(variant, param, a.boolean("unconstrained")?, link);
    if a.get("n_components").is_some() {
        let sites: Vec<String> = match a.get("mixture_params") {
            Some(r) => r
                .as_str_vector()
                .ok_or_else(|| internal("`mixture_params` must be a character vector"))?
                .iter()
                .map(|s| s.to_string())
                .collect(),
            None => Vec::new(),
        };
        let refs: Vec<&str> = sites.iter().map(|s| s.as_str()).collect();
        spec.set_mixture(
            a.count("n_components")?,
            &refs,
            a.real_or("mixing_concentration", 1.0)?,
        )?;
    }
    if a.get("overdispersion").is_some() && a.string("overdispersion")? == "bnb" {
        let family = match a.get("overdispersion_family") {
            Some(_) => {
                Shrinkage::parse(&a.string("overdispersion_family")?, "priors$overdispersion")?
            }
            None => Shrinkage::Horseshoe,
        };
        spec.set_bnb(family)?;
        if let Some(h) = a.get("overdispersion_hyper") {
            let fields: List = h
                .clone()
                .try_into()
                .map_err(|_| internal("`overdispersion_hyper` must be a list"))?;
            let hy = Args::new(h, "priors$overdispersion")?;
            for (name, _) in fields.iter() {
                spec.set_hierarchy_hyper("bnb_concentration", name, hy.real(name)?)?;
            }
        }
    }
    if let Some(cells) = a.get("dataset_cells") {
        // 1-based dataset codes from R, one per cell.
        let n = a.count("n_datasets")?;
        let codes = super::reals(Some(cells), "dataset_key")?;
        let cell = codes
            .iter()
            .map(|&v| {
                if v >= 1.0 && v <= n as f64 && v == v.round() {
                    Ok(v as u32 - 1)
                } else {
                    Err(input(
                        "dataset_key",
                        format!("dataset code {v} is not in 1..{n}"),
                    ))
                }
            })
            .collect::<GResult<Vec<u32>>>()?;
        spec.set_datasets(cell, n)?;
        let mode = match a.get("prob_dataset_mode") {
            Some(_) => match a.string("prob_dataset_mode")?.as_str() {
                "scalar" => DatasetP::Scalar,
                "gene_specific" => DatasetP::GeneSpecific,
                other => {
                    return Err(input(
                        "prob_dataset_mode",
                        format!("must be \"scalar\" or \"gene_specific\", not \"{other}\""),
                    ))
                }
            },
            None => DatasetP::GeneSpecific,
        };
        if let Some(h) = a.get("dataset_hierarchies") {
            let l: List = h
                .clone()
                .try_into()
                .map_err(|_| internal("`dataset_hierarchies` must be a named list"))?;
            for (site, fam) in l.iter() {
                let (name, hyper) = match fam.as_str() {
                    Some(name) => (name.to_string(), None),
                    None => (
                        Args::new(&fam, "priors")?.string("type")?,
                        Some(fam.clone()),
                    ),
                };
                spec.add_dataset_hierarchy(site, Shrinkage::parse(&name, "priors")?, mode)?;
                if let Some(hy) = hyper {
                    let fields: List = hy.clone().try_into().map_err(|_| {
                        internal(format!("`dataset_hierarchies${site}` must be a list"))
                    })?;
                    let h = Args::new(&hy, "priors")?;
                    for (name, _) in fields.iter().filter(|(n, _)| *n != "type") {
                        spec.set_hierarchy_hyper(site, name, h.real(name)?)?;
                    }
                }
            }
        }
    }
    if let Some(h) = a.get("hierarchies") {
        let l: List = h
            .clone()
            .try_into()
            .map_err(|_| internal("`hierarchies` must be a named list"))?;
        // Each entry: a family name, or list(type = family, <hyper-parameters>).
        for (site, fam) in l.iter() {
            match fam.as_str() {
                Some(name) => spec.add_hierarchy(site, Shrinkage::parse(name, "priors")?)?,
                None => {
                    let h = Args::new(&fam, "priors")?;
                    spec.add_hierarchy(site, Shrinkage::parse(&h.string("type")?, "priors")?)?;
                    let fields: List = fam
                        .clone()
                        .try_into()
                        .map_err(|_| internal(format!("`hierarchies${site}` must be a list")))?;
                    for (name, _) in fields.iter().filter(|(n, _)| *n != "type") {
                        spec.set_hierarchy_hyper(site, name, h.real(name)?)?;
                    }
                }
            }
        }
    }
    if let Some(priors) = a.get("priors") {
        let l: List = priors
            .clone()
            .try_into()
            .map_err(|_| internal("`priors` must be a named list"))?;
        for (name, val) in l.iter() {
            let v = val
                .as_real_slice()
                .ok_or_else(|| internal(format!("`priors${name}` must be numeric")))?;
            if v.len() != 2 {
                return Err(input("priors", format!("`{name}` must have two values")));
            }
            spec.set_prior(name, v[0], v[1])?;
        }
    }
    Ok(spec)
}

/// The optimizer from `optimizer_config` (`None`: Adam 1e-3).
pub fn optimizer(robj: Option<&Robj>) -> GResult<OptimizerConfig> {
    let Some(robj) = robj else {
        return Ok(OptimizerConfig::default());
    };
    let a = Args::new(robj, "optimizer_config")?;
    let name = a.string("name")?;
    let step_size = a.real("step_size")?;
    Ok(match name.as_str() {
        "adam" | "clipped_adam" => OptimizerConfig::Adam {
            step_size,
            b1: a.real_or("b1", 0.9)?,
            b2: a.real_or("b2", 0.999)?,
            eps: a.real_or("eps", 1e-8)?,
            clip: if name == "clipped_adam" {
                Some(a.real_or("clip_norm", 10.0)?)
            } else {
                None
            },
        },
        "adagrad" => OptimizerConfig::Adagrad {
            step_size,
            momentum: a.real_or("momentum", 0.9)?,
        },
        "rmsprop" => OptimizerConfig::RmsProp {
            step_size,
            gamma: a.real_or("gamma", 0.9)?,
            eps: a.real_or("eps", 1e-8)?,
        },
        "sgd" => OptimizerConfig::Sgd { step_size },
        "momentum" => OptimizerConfig::Momentum {
            step_size,
            mass: a.real_or("momentum", 0.9)?,
        },
        other => {
            return Err(input(
                "optimizer_config$name",
                format!("unknown optimizer \"{other}\""),
            ))
        }
    })
}

/// Early stopping from `early_stopping` (`None`: off); missing fields take
/// the core's defaults.
pub fn early_stopping(robj: Option<&Robj>) -> GResult<Option<EarlyStopping>> {
    let Some(robj) = robj else { return Ok(None) };
    let a = Args::new(robj, "early_stopping")?;
    let d = EarlyStopping::default();
    Ok(Some(EarlyStopping {
        enabled: a.boolean_or("enabled", d.enabled)?,
        patience: a.count_or("patience", d.patience)?,
        min_delta: a.real_or("min_delta", d.min_delta)?,
        min_delta_pct: a.opt_real("min_delta_pct")?,
        check_every: a.count_or("check_every", d.check_every)?.max(1),
        warmup: a.count_or("warmup", d.warmup)?,
        smoothing_window: a.count_or("smoothing_window", d.smoothing_window)?.max(1),
        restore_best: a.boolean_or("restore_best", d.restore_best)?,
    }))
}

/// The settled rule from `settle` (`None`: off); missing fields take the
/// core's defaults.
pub fn settle(robj: Option<&Robj>) -> GResult<Option<Settle>> {
    let Some(robj) = robj else { return Ok(None) };
    let a = Args::new(robj, "settle")?;
    let d = Settle::default();
    Ok(Some(Settle {
        window: a.count_or("window", d.window)?,
        loss_rtol: a.real_or("loss_rtol", d.loss_rtol)?,
        loss_ptol: a.real_or("loss_ptol", d.loss_ptol)?,
        param_tol: a.real_or("param_tol", d.param_tol)?,
        patience: a.count_or("patience", d.patience)?,
        min_steps: a.count_or("min_steps", d.min_steps)?,
    }))
}

pub fn svi_config(robj: &Robj) -> GResult<SviConfig> {
    let a = Args::new(robj, "svi")?;
    Ok(SviConfig {
        n_steps: a.count("n_steps")?,
        batch_size: a
            .get("batch_size")
            .map(|_| a.count("batch_size"))
            .transpose()?,
        optimizer: optimizer(a.get("optimizer_config"))?,
        stable_update: a.boolean("stable_update")?,
        restore_best: a.boolean("restore_best")?,
        early_stopping: early_stopping(a.get("early_stopping"))?,
        settle: settle(a.get("settle"))?,
        seed: a.real("seed")? as u64,
        n_reports: SviConfig::default().n_reports,
    })
}

/// The variational family of an SVI fit.
pub enum GuideChoice {
    MeanField,
    LowRank {
        rank: usize,
        joint: Vec<String>,
    },
    Flow {
        config: FlowConfig,
        joint: Vec<String>,
    },
    AmortizedCapture {
        hidden: Vec<usize>,
        activation: Activation,
        input: CaptureInput,
    },
}

/// The guide of an SVI config (`guide_rank`, `guide_flow` and its
/// architecture, `joint_params`), checked and resolved in R.
pub fn guide_choice(robj: &Robj) -> GResult<GuideChoice> {
    let a = Args::new(robj, "svi")?;
    let joint = match a.get("joint_params") {
        Some(r) => r
            .as_str_vector()
            .ok_or_else(|| internal("`joint_params` must be a character vector"))?
            .iter()
            .map(|s| s.to_string())
            .collect(),
        None => Vec::new(),
    };
    if a.get("guide_rank").is_some() {
        return Ok(GuideChoice::LowRank {
            rank: a.count("guide_rank")?,
            joint,
        });
    }
    if a.boolean_or("amortize_capture", false)? {
        return Ok(GuideChoice::AmortizedCapture {
            hidden: a
                .reals("capture_hidden_dims")?
                .into_iter()
                .map(|h| h as usize)
                .collect(),
            activation: Activation::parse(&a.string("capture_activation")?, "capture_activation")?,
            input: CaptureInput::parse(&a.string("capture_input_transformation")?)?,
        });
    }
    if a.get("guide_flow").is_none() {
        return Ok(GuideChoice::MeanField);
    }
    let d = FlowConfig::default();
    let hidden = a
        .reals("guide_flow_hidden_dims")?
        .into_iter()
        .map(|h| h as usize)
        .collect::<Vec<_>>();
    let config = FlowConfig {
        kind: FlowKind::parse(&a.string("guide_flow")?, "guide_flow")?,
        num_layers: a.count_or("guide_flow_num_layers", d.num_layers)?,
        hidden: if hidden.is_empty() { d.hidden } else { hidden },
        activation: Activation::parse(
            &a.string("guide_flow_activation")?,
            "guide_flow_activation",
        )?,
        layer_norm: a.boolean_or("guide_flow_layer_norm", d.layer_norm)?,
        residual: a.boolean_or("guide_flow_residual", d.residual)?,
        soft_clamp: a.boolean_or("guide_flow_soft_clamp", d.soft_clamp)?,
        n_bins: a.count_or("guide_flow_n_bins", d.n_bins)?,
        loft_tau: if a.boolean_or("guide_flow_loft", true)? {
            d.loft_tau
        } else {
            None
        },
        final_affine: false,
    };
    Ok(GuideChoice::Flow { config, joint })
}

/// Sampler settings and the start's half-widths `(init_radius, init_spread)`.
pub fn mcmc_config(robj: &Robj) -> GResult<(McmcConfig, f64, f64)> {
    let a = Args::new(robj, "mcmc")?;
    let d = McmcConfig::default();
    let cfg = McmcConfig {
        n_samples: a.count("n_samples")?,
        n_warmup: a.count("n_warmup")?,
        n_chains: a.count("n_chains")?,
        seed: a.real("seed")? as u64,
        target_accept: a.real_or("target_accept_prob", d.target_accept)?,
        max_tree_depth: a.count_or("max_tree_depth", d.max_tree_depth)?,
        mass_matrix: if a.boolean_or("dense_mass", false)? {
            MassMatrix::LowRank
        } else {
            MassMatrix::Diagonal
        },
    };
    Ok((
        cfg,
        a.real_or("init_radius", DEFAULT_INIT_RADIUS)?,
        a.real_or("init_spread", DEFAULT_INIT_SPREAD)?,
    ))
}

/// The loadings prior from `priors$loadings` (`None`: no prior).
fn loadings_prior(robj: Option<&Robj>) -> GResult<LoadingsPrior> {
    let Some(robj) = robj else {
        return Ok(LoadingsPrior::None);
    };
    let a = Args::new(robj, "priors$loadings")?;
    Ok(match a.string("type")?.as_str() {
        "none" => LoadingsPrior::None,
        "gaussian" => LoadingsPrior::Gaussian {
            scale: a.real_or("scale", 1.0)?,
        },
        "horseshoe_columnwise" => LoadingsPrior::HorseshoeColumnwise {
            tau_scale: a.real_or("tau_scale", 1.0)?,
            lambda_min: a.real_or("lambda_min", 1e-3)?,
            tau_min: a.real_or("tau_min", 1e-3)?,
            init_scale: a.real_or("init_scale", 1.0)?,
        },
        "neg_columnwise" => LoadingsPrior::NegColumnwise {
            alpha: a.real_or("alpha", 1.0)?,
            beta: a.real_or("beta", 1.0)?,
            psi_min: a.real_or("psi_min", 1e-6)?,
            gamma_min: a.real_or("gamma_min", 1e-6)?,
            init_scale: a.real_or("init_scale", 1.0)?,
        },
        other => {
            return Err(input(
                "priors$loadings$type",
                format!("unknown loadings prior \"{other}\""),
            ))
        }
    })
}

/// The capture block: `NULL`, or list(mode = "anchor", ln_m0, sigma),
/// list(mode = "prior", loc, scale), list(mode = "frozen", values).
pub fn capture(r: Option<&Robj>) -> GResult<Capture> {
    let Some(r) = r else { return Ok(Capture::None) };
    let c = Args::new(r, "capture")?;
    Ok(match c.string("mode")?.as_str() {
        "anchor" => Capture::Anchor {
            ln_m0: c.real("ln_m0")?,
            sigma: c.real("sigma")?,
        },
        "prior" => Capture::PerCell {
            loc: c.reals("loc")?,
            scale: c.reals("scale")?,
        },
        "frozen" => Capture::Frozen(c.reals("values")?),
        other => return Err(internal(format!("unknown capture mode '{other}'"))),
    })
}

/// Empirical priors `list(loc, scale)` of the cascade.
fn prior_pair(r: Option<&Robj>, what: &str) -> GResult<Option<(Vec<f64>, Vec<f64>)>> {
    let Some(r) = r else { return Ok(None) };
    let l = Args::new(r, what)?;
    Ok(Some((l.reals("loc")?, l.reals("scale")?)))
}

pub fn laplace_config(model: &str, robj: &Robj) -> GResult<LaplaceConfig> {
    let a = Args::new(robj, "laplace")?;
    let d = LaplaceConfig::default();
    let cascade = match a
        .get("cascade")
        .map(|c| Args::new(c, "cascade"))
        .transpose()?
    {
        None => Cascade::default(),
        Some(c) => Cascade {
            r_prior: prior_pair(c.get("r_prior"), "r_prior")?,
            mu_prior: prior_pair(c.get("mu_prior"), "mu_prior")?,
            r_frozen: c.opt_reals("r_frozen")?,
            mu_frozen: c.opt_reals("mu_frozen")?,
        },
    };
    let lnm_low_rank = match a.get("d_mode").and_then(|d| d.as_str()) {
        None | Some("learned") => false,
        Some("low_rank") => true,
        Some(other) => {
            return Err(input(
                "d_mode",
                format!("must be \"learned\" or \"low_rank\", not \"{other}\""),
            ))
        }
    };
    Ok(LaplaceConfig {
        model: LnModel::parse(model)?,
        latent_dim: a.count("latent_dim")?,
        n_steps: a.count("n_steps")?,
        batch_size: a
            .get("batch_size")
            .map(|_| a.count("batch_size"))
            .transpose()?,
        n_newton_steps: a.count_or("n_newton_steps", d.n_newton_steps)?,
        damping: a.real_or("damping", d.damping)?,
        newton_tolerance: a.real_or("newton_tolerance", d.newton_tolerance)?,
        newton_max_step: a.real_or("newton_max_step", d.newton_max_step)?,
        rescue_diverged_cells: a.boolean_or("rescue_diverged_cells", d.rescue_diverged_cells)?,
        rescue_threshold_multiplier: a
            .real_or("rescue_threshold_multiplier", d.rescue_threshold_multiplier)?,
        rescue_n_newton: a.count_or("rescue_n_newton", d.rescue_n_newton)?,
        rescue_damping_multiplier: a
            .real_or("rescue_damping_multiplier", d.rescue_damping_multiplier)?,
        mu_warm_rounds: a.count_or("mu_warm_rounds", d.mu_warm_rounds)?,
        optimizer: optimizer(a.get("optimizer_config"))?,
        lbfgs_memory: a
            .get("lbfgs_memory")
            .map(|_| a.count("lbfgs_memory"))
            .transpose()?,
        seed: a.real("seed")? as u64,
        n_reports: d.n_reports,
        capture: capture(a.get("capture"))?,
        cascade,
        loadings_prior: loadings_prior(a.get("loadings"))?,
        lnm_low_rank,
        early_stopping: early_stopping(a.get("early_stopping"))?,
        settle: settle(a.get("settle"))?,
    })
}

/// The core's defaults, for R to fill in and document.
pub fn defaults() -> Robj {
    let m = McmcConfig::default();
    let l = LaplaceConfig::default();
    let s = SviConfig::default();
    let e = EarlyStopping::default();
    let step_size = match OptimizerConfig::default() {
        OptimizerConfig::Adam { step_size, .. } => step_size,
        _ => f64::NAN,
    };
    list!(
        svi = list!(
            n_steps = s.n_steps as f64,
            stable_update = s.stable_update,
            restore_best = s.restore_best
        ),
        optimizer = list!(name = "adam", step_size = step_size),
        settle = {
            let s = Settle::default();
            list!(
                window = s.window as f64,
                loss_rtol = s.loss_rtol,
                loss_ptol = s.loss_ptol,
                param_tol = s.param_tol,
                patience = s.patience as f64,
                min_steps = s.min_steps as f64
            )
        },
        early_stopping = list!(
            enabled = e.enabled,
            patience = e.patience as f64,
            min_delta = e.min_delta,
            check_every = e.check_every as f64,
            warmup = e.warmup as f64,
            smoothing_window = e.smoothing_window as f64,
            restore_best = e.restore_best
        ),
        mcmc = list!(
            n_samples = m.n_samples as f64,
            n_warmup = m.n_warmup as f64,
            n_chains = m.n_chains as f64,
            target_accept_prob = m.target_accept,
            max_tree_depth = m.max_tree_depth as f64,
            dense_mass = m.mass_matrix == MassMatrix::LowRank,
            init_radius = DEFAULT_INIT_RADIUS,
            init_spread = DEFAULT_INIT_SPREAD
        ),
        laplace = list!(
            latent_dim = l.latent_dim as f64,
            n_newton_steps = l.n_newton_steps as f64,
            damping = l.damping,
            newton_tolerance = l.newton_tolerance,
            newton_max_step = l.newton_max_step,
            rescue_diverged_cells = l.rescue_diverged_cells,
            rescue_threshold_multiplier = l.rescue_threshold_multiplier,
            rescue_n_newton = l.rescue_n_newton as f64,
            rescue_damping_multiplier = l.rescue_damping_multiplier,
            mu_warm_rounds = l.mu_warm_rounds as f64
        )
    )
    .into()
}
