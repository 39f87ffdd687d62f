//! Fits between R and the core: layouts, named sites, priors, and the "core
//! view" of a stored fit (`list(model, layout, guide, params)` for SVI,
//! `list(model, layout, draws)` for MCMC) as a posterior [`Source`].

use super::configs::nb_spec;
use super::{number, reals, Args};
use crate::errors::{input, internal, GResult};
use extendr_api::prelude::*;
use scribe_core::data::CountMatrix;
use scribe_core::dist::{Link, Prior};
use scribe_core::laplace::LaplaceFit;
use scribe_core::mcmc::{ChainTrace, McmcFit};
use scribe_core::models::nb::simulate::NbTruth;
use scribe_core::models::nb::{NbModel, NbSpec};
use scribe_core::models::{BlockKind, Layout, Model};
use scribe_core::optim::StopReason;
use scribe_core::posterior::{Site, Source, XDraws};
use scribe_core::svi::guide::{self, BlockFields, FittedGuide};

/// A layout as R stores it: columns `name`, `kind`, `link`, `offset` (0-based),
/// `len`, `n_comp` (R turns it into a data frame).
pub fn layout_to_r(layout: &Layout) -> Robj {
    let b = &layout.blocks;
    list!(
        name = b.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
        kind = b.iter().map(|b| b.kind.name()).collect::<Vec<_>>(),
        link = b.iter().map(|b| b.link.name()).collect::<Vec<_>>(),
        offset = b.iter().map(|b| b.offset as i32).collect::<Vec<_>>(),
        len = b.iter().map(|b| b.len as i32).collect::<Vec<_>>(),
        n_comp = b.iter().map(|b| b.n_comp as i32).collect::<Vec<_>>()
    )
    .into()
}

fn strings(a: &Args, k: &str) -> GResult<Vec<String>> {
    Ok(a.need(k)?
        .as_str_vector()
        .ok_or_else(|| internal(format!("layout${k} must be character")))?
        .iter()
        .map(|s| s.to_string())
        .collect())
}

/// A stored layout; blocks must tile the vector in order.
pub fn layout_from_r(robj: &Robj) -> GResult<Layout> {
    let a = Args::new(robj, "layout")?;
    let (names, kinds, links) = (
        strings(&a, "name")?,
        strings(&a, "kind")?,
        strings(&a, "link")?,
    );
    let (offsets, lens, comps) = (a.reals("offset")?, a.reals("len")?, a.reals("n_comp")?);
    let n = names.len();
    if [
        kinds.len(),
        links.len(),
        offsets.len(),
        lens.len(),
        comps.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err(internal("layout columns differ in length"));
    }
    let mut layout = Layout::default();
    for i in 0..n {
        if offsets[i] as usize != layout.total {
            return Err(input("fit", "its layout blocks do not tile its parameters"));
        }
        layout.push(
            &names[i],
            BlockKind::parse(&kinds[i])?,
            lens[i] as usize,
            Link::parse(&links[i], "fit")?,
            comps[i] as usize,
        );
    }
    Ok(layout)
}

/// Sites as `list(<name> = list(values, shape = c(n_draws, len, n_comp), kind))`.
pub fn sites_to_r(sites: Vec<Site>) -> GResult<Robj> {
    let mut names = Vec::with_capacity(sites.len());
    let mut vals: Vec<Robj> = Vec::with_capacity(sites.len());
    for s in sites {
        let shape = vec![s.n_draws as i32, s.len() as i32, s.n_comp as i32];
        names.push(s.name.clone());
        vals.push(list!(values = s.values, shape = shape, kind = s.kind.name()).into());
    }
    Ok(List::from_names_and_values(names, vals)?.into())
}

fn prior_to_r(p: &Prior) -> Robj {
    let (family, a, b) = match *p {
        Prior::Normal { loc, scale } => ("normal", loc, scale),
        Prior::LogNormal { loc, scale } => ("lognormal", loc, scale),
        Prior::Beta { a, b } => ("beta", a, b),
        Prior::BetaPrime { a, b } => ("betaprime", a, b),
        Prior::TruncNormal0 { loc, scale } => ("truncnormal", loc, scale),
        Prior::Flat => ("flat", f64::NAN, f64::NAN),
    };
    list!(family = family, hyper = vec![a, b]).into()
}

/// The prior family and hyper-parameters of every block of the model
/// (simplex blocks: their Dirichlet concentration).
pub fn priors_to_r(nb: &NbModel) -> GResult<Robj> {
    let mut names = Vec::new();
    let mut priors: Vec<Robj> = Vec::new();
    for (b, block) in nb.layout().blocks.iter().enumerate() {
        priors.push(if block.kind == BlockKind::Simplex {
            let a = nb.spec.mixture.map_or(1.0, |m| m.concentration);
            list!(family = "dirichlet", hyper = vec![a]).into()
        } else {
            prior_to_r(&nb.prior(b, 0))
        });
        names.push(block.name.clone());
    }
    Ok(List::from_names_and_values(names, priors)?.into())
}

/// A fitted guide's fields as `list(<block> = list(<field> = values))`.
pub fn guide_fields_to_r(fitted: &dyn FittedGuide, layout: &Layout) -> GResult<Robj> {
    let blocks = fitted.fields(layout);
    let mut names = Vec::with_capacity(blocks.len());
    let mut vals: Vec<Robj> = Vec::with_capacity(blocks.len());
    for b in blocks {
        let (fnames, fvals): (Vec<String>, Vec<Robj>) =
            b.fields.into_iter().map(|(n, v)| (n, v.into())).unzip();
        names.push(b.block);
        vals.push(List::from_names_and_values(fnames, fvals)?.into());
    }
    Ok(List::from_names_and_values(names, vals)?.into())
}

fn guide_fields_from_r(robj: &Robj) -> GResult<Vec<BlockFields>> {
    let l: List = robj
        .clone()
        .try_into()
        .map_err(|_| internal("`params` must be a list"))?;
    let mut out = Vec::new();
    for (block, fields) in l.iter() {
        let fl: List = fields
            .try_into()
            .map_err(|_| internal(format!("`params${block}` must be a list")))?;
        let mut fs = Vec::new();
        for (name, v) in fl.iter() {
            fs.push((name.to_string(), reals(Some(&v), name)?));
        }
        out.push(BlockFields {
            block: block.to_string(),
            fields: fs,
        });
    }
    Ok(out)
}

/// What a stored NB-family fit's posterior is.
pub enum Posterior {
    Guide(Box<dyn FittedGuide>),
    Draws(XDraws),
}

impl Posterior {
    pub fn source(&self) -> &dyn Source {
        match self {
            Posterior::Guide(g) => g.as_ref(),
            Posterior::Draws(d) => d,
        }
    }
}

/// A stored NB-family fit: its model, layout and posterior.
pub struct FitView {
    pub spec: NbSpec,
    pub layout: Layout,
    pub posterior: Posterior,
}

/// The genes and cells a layout describes (0 cells without a cell block).
pub fn dims_of(layout: &Layout) -> (usize, usize) {
    let g = layout
        .blocks
        .iter()
        .find(|b| b.kind == BlockKind::Gene)
        .map_or(0, |b| b.len / b.n_comp.max(1));
    let c = layout
        .blocks
        .iter()
        .find(|b| b.kind == BlockKind::Cell)
        .map_or(0, |b| b.len);
    (g, c)
}

/// The core view of an SVI or MCMC fit of an NB-family model; the stored
/// layout must be the one its model implies.
pub fn fit_view(robj: &Robj) -> GResult<FitView> {
    let a = Args::new(robj, "fit")?;
    let spec = nb_spec(a.need("model")?)?;
    let layout = layout_from_r(a.need("layout")?)?;
    let (g, c) = dims_of(&layout);
    if spec.layout(g, c) != layout {
        return Err(input(
            "fit",
            "its parameter layout does not match its model (was it changed by hand?)",
        ));
    }
    let posterior = if let Some(draws) = a.get("draws") {
        let x = draws
            .as_real_slice()
            .ok_or_else(|| internal("`draws` must be double"))?
            .to_vec();
        Posterior::Draws(XDraws {
            dim: layout.total,
            x,
        })
    } else {
        let family = a.string("guide")?;
        let fields = guide_fields_from_r(a.need("params")?)?;
        Posterior::Guide(guide::import(&family, &layout, &fields)?)
    };
    Ok(FitView {
        spec,
        layout,
        posterior,
    })
}

/// The layout and capture amortizer of an SVI fit with
/// `amortize_capture = TRUE`.
pub fn amortizer_view(robj: &Robj) -> GResult<(Layout, guide::AmortizedFit)> {
    let v = fit_view(robj)?;
    let a = Args::new(robj, "fit")?;
    if a.get("guide").and_then(|g| g.as_str()) != Some("amortized_capture") {
        return Err(input(
            "fit",
            "was not fitted with `amortize_capture = TRUE`: it has no capture amortizer",
        ));
    }
    let fields = guide_fields_from_r(a.need("params")?)?;
    Ok((
        v.layout.clone(),
        guide::AmortizedFit::from_fields(&v.layout, &fields)?,
    ))
}

/// `(n_draws, seed)` from R: `n_draws <= 0` asks for the point summary.
pub fn summary(n_draws: Robj, seed: Robj) -> GResult<scribe_core::posterior::Summary> {
    let n = number(&n_draws).ok_or_else(|| internal("`n_draws` must be a number"))?;
    let seed = number(&seed).ok_or_else(|| internal("`seed` must be a number"))?;
    Ok(if n <= 0.0 {
        scribe_core::posterior::Summary::Point
    } else {
        scribe_core::posterior::Summary::Draws {
            n: n as usize,
            seed: seed as u64,
        }
    })
}

/// An MCMC fit: draws (chains one after another), layout, priors, per-draw
/// sampler statistics and per-chain diagnostics.
pub fn mcmc_to_r(fit: &McmcFit, nb: &NbModel) -> GResult<Robj> {
    let cat = |f: &dyn Fn(&ChainTrace) -> Vec<f64>| -> Vec<f64> {
        fit.chains.iter().flat_map(f).collect()
    };
    let chain: Vec<i32> = fit
        .chains
        .iter()
        .enumerate()
        .flat_map(|(k, c)| std::iter::repeat_n(k as i32 + 1, c.diverging.len()))
        .collect();
    let diverging: Vec<bool> = fit
        .chains
        .iter()
        .flat_map(|c| c.diverging.clone())
        .collect();
    let stats = list!(
        chain = chain,
        diverging = diverging,
        tree_depth = cat(&|c| c.tree_depth.iter().map(|&v| v as f64).collect()),
        n_leapfrog = cat(&|c| c.n_leapfrog.iter().map(|&v| v as f64).collect()),
        step_size = cat(&|c| c.step_size.clone()),
        energy = cat(&|c| c.energy.clone()),
        lp = cat(&|c| c.lp.clone())
    );
    let per_chain = list!(
        e_bfmi = fit.chains.iter().map(|c| c.e_bfmi()).collect::<Vec<f64>>(),
        warmup_divergences = fit
            .chains
            .iter()
            .map(|c| c.warmup_divergences as i32)
            .collect::<Vec<i32>>(),
        n_grad = fit
            .chains
            .iter()
            .map(|c| c.n_grad as f64)
            .collect::<Vec<f64>>()
    );
    Ok(list!(
        draws = cat(&|c| c.draws.clone()),
        dim = fit.dim as i32,
        layout = layout_to_r(nb.layout()),
        priors = priors_to_r(nb)?,
        stats = stats,
        per_chain = per_chain
    )
    .into())
}

/// A Laplace fit: globals, MAP latents (cell-major), diagnostics.
pub fn laplace_to_r(fit: LaplaceFit) -> Robj {
    let none = || -> Robj { ().into() };
    let w = &fit.w_prior;
    list!(
        mu = fit.mu,
        w = fit.w,
        d = fit.d,
        r = fit.r,
        totals = fit.totals,
        reference = fit.reference.map_or_else(none, |g| (g as i32 + 1).into()),
        latents = fit.latents,
        eta = fit.eta,
        latent_dim = fit.latent_dim as i32,
        loss_history = fit.loss_history,
        grad_norms = fit.grad_norms,
        rescued = fit.rescued,
        masked_cells = fit.masked_cells as i32,
        newton = list!(
            outer_steps = fit.newton.outer_steps as f64,
            outer_cell_visits = fit.newton.outer_cell_visits as f64,
            final_steps = fit.newton.final_steps as f64,
            warm_steps = fit.newton.warm_steps as f64,
            rescue_steps = fit.newton.rescue_steps as f64
        ),
        early_stopped = fit.early_stopped,
        stop = stop_to_r(&fit.stop, &fit.drift),
        restored_step = fit.restored_step.map_or_else(none, |s| (s as f64).into()),
        aborted = fit.aborted.map_or_else(none, |s| s.into()),
        w_prior = list!(
            column_norms = w.column_norms.clone(),
            column_norms_raw = w.column_norms_raw.clone(),
            effective_rank = w.effective_rank as i32,
            sigma_k = w.sigma_k.clone(),
            scale_effective_rank = w
                .scale_effective_rank
                .map_or_else(none, |v| (v as i32).into()),
            global = w.global.map_or_else(none, |v| v.into())
        ),
        w_prior_aux = fit.w_prior_aux
    )
    .into()
}

/// Simulated counts (CSC slots, genes × cells) and the truth used.
pub fn simulation_to_r(m: &CountMatrix, truth: NbTruth) -> Robj {
    let none = || -> Robj { ().into() };
    let pp: Vec<i32> = m.cell_ptr.iter().map(|&v| v as i32).collect();
    let i: Vec<i32> = m.gene_idx.iter().map(|&v| v as i32).collect();
    let x: Vec<f64> = m.counts.iter().map(|&v| v as f64).collect();
    let (r, prob, gate, weights, assignment): (Vec<f64>, Vec<f64>, Robj, Robj, Robj) =
        match truth.mixture {
            Some(m) => (
                m.r.concat(),
                m.p,
                m.gate.map_or_else(none, |g| g.concat().into()),
                m.weights.into(),
                m.assignment
                    .iter()
                    .map(|&a| a as i32 + 1)
                    .collect::<Vec<i32>>()
                    .into(),
            ),
            None => (
                truth.r,
                truth.p_gene.unwrap_or_else(|| vec![truth.p]),
                truth.gate.map_or_else(none, |v| v.into()),
                none(),
                none(),
            ),
        };
    list!(
        p = pp,
        i = i,
        x = x,
        r = r,
        prob = prob,
        p_capture = truth.nu.map_or_else(none, |v| v.into()),
        gate = gate,
        weights = weights,
        assignment = assignment
    )
    .into()
}

/// Why a fit stopped: `list(reason, drifting, drift)` (`drift`: the last
/// drift per parameter group under the settled rule, ≤ 1 meaning settled).
pub fn stop_to_r(stop: &StopReason, drift: &[(String, f64)]) -> Robj {
    let (names, values): (Vec<String>, Vec<f64>) = drift.iter().cloned().unzip();
    let drift: Robj = if names.is_empty() {
        ().into()
    } else {
        let mut v: Robj = values.into();
        let _ = v.set_names(names);
        v
    };
    list!(
        reason = stop.name(),
        drifting = stop.drifting().to_vec(),
        drift = drift
    )
    .into()
}
