//! R bindings for scribe-core (extendr). Thin by design: convert R lists and
//! dgCMatrix slots into core types, run engines on a worker thread while the R
//! main thread prints progress and polls for interrupts, and turn core errors
//! into R errors. No numerics live here.

use extendr_api::prelude::*;
use extendr_api::Result;
use scribe_core::data::CountMatrix;
use scribe_core::dist::{Link, Prior};
use scribe_core::laplace::cascade::cascade_stats;
use scribe_core::laplace::posterior::{self as laplace_posterior, Fitted};
use scribe_core::laplace::w_prior::LoadingsPrior;
use scribe_core::laplace::{run as run_laplace, Capture, Cascade, LaplaceConfig, LnModel};
use scribe_core::mcmc::init::svi_start;
use scribe_core::mcmc::{MassMatrix, McmcConfig, Start};
use scribe_core::models::nb::{NbModel, NbSpec, Parameterization, Variant};
use scribe_core::models::simulate::{simulate_nb, NbTruth};
use scribe_core::models::{BlockKind, Model};
use scribe_core::optim::early_stop::EarlyStopping;
use scribe_core::optim::OptimizerConfig;
use scribe_core::posterior::denoise::{denoise, Method};
use scribe_core::posterior::draws::NbDraws;
use scribe_core::posterior::loglik::{log_likelihood, responsibilities, By};
use scribe_core::posterior::normalize::{cell_fractions, dirichlet_samples, mean_composition};
use scribe_core::posterior::predictive::predictive;
use scribe_core::posterior::{guide_blocks, n_comp_of, nb_sites, GuideBlock};
use scribe_core::posterior::{nb_sites_from_draws, DrawBlock, Pick, Site};
use scribe_core::progress::{Cancel, ChainProgress, ChainStatus, Progress};
use scribe_core::svi::{initial_guide, SviConfig};
use scribe_core::CoreError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

extern "C" {
    // src/interrupt.c: R_CheckUserInterrupt under R_ToplevelExec, so the
    // interrupt's longjmp never crosses a Rust frame.
    fn scribeR_interrupt_pending() -> std::os::raw::c_int;
}

fn interrupt_pending() -> bool {
    unsafe { scribeR_interrupt_pending() != 0 }
}

fn core_err(e: CoreError) -> Error {
    Error::Other(e.to_string())
}

fn err(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}

// ---------------------------------------------------------------- conversion

struct Args(HashMap<&'static str, Robj>);

impl Args {
    fn new(robj: &Robj, what: &str) -> Result<Self> {
        let l: List = robj
            .clone()
            .try_into()
            .map_err(|_| err(format!("internal: `{what}` must be a list")))?;
        Ok(Args(l.iter().collect()))
    }
    fn get(&self, k: &str) -> Option<&Robj> {
        self.0.get(k).filter(|r| !r.is_null())
    }
    fn real(&self, k: &str) -> Result<f64> {
        self.get(k)
            .and_then(|r| r.as_real().or_else(|| r.as_integer().map(|i| i as f64)))
            .ok_or_else(|| err(format!("`{k}` must be a number")))
    }
    fn real_or(&self, k: &str, d: f64) -> Result<f64> {
        if self.get(k).is_some() {
            self.real(k)
        } else {
            Ok(d)
        }
    }
    fn opt_real(&self, k: &str) -> Result<Option<f64>> {
        if self.get(k).is_some() {
            self.real(k).map(Some)
        } else {
            Ok(None)
        }
    }
    fn boolean(&self, k: &str) -> Result<bool> {
        self.get(k)
            .and_then(|r| r.as_bool())
            .ok_or_else(|| err(format!("`{k}` must be TRUE or FALSE")))
    }
    fn string(&self, k: &str) -> Result<String> {
        self.get(k)
            .and_then(|r| r.as_str())
            .map(|s| s.to_string())
            .ok_or_else(|| err(format!("`{k}` must be a string")))
    }
}

fn parse_link(s: &str) -> Result<Link> {
    match s {
        "softplus" => Ok(Link::Softplus),
        "exp" => Ok(Link::Exp),
        "sigmoid" => Ok(Link::Sigmoid),
        "identity" => Ok(Link::Identity),
        _ => Err(err(format!(
            "`positive_transform` must be \"softplus\" or \"exp\", not \"{s}\""
        ))),
    }
}

fn nb_spec(model: &Robj) -> Result<NbSpec> {
    let a = Args::new(model, "model")?;
    let variant = Variant::parse(&a.string("model")?).map_err(core_err)?;
    let param = Parameterization::parse(&a.string("parameterization")?).map_err(core_err)?;
    let link = parse_link(&a.string("positive_transform")?)?;
    let mut spec = NbSpec::new(variant, param, a.boolean("unconstrained")?, link);
    if let Some(k) = a.get("n_components") {
        let k = k
            .as_real()
            .or_else(|| k.as_integer().map(|v| v as f64))
            .ok_or_else(|| err("`n_components` must be a number"))?;
        let sites: Vec<String> = match a.get("mixture_params") {
            Some(r) => r
                .as_str_vector()
                .ok_or_else(|| err("`mixture_params` must be a character vector"))?
                .iter()
                .map(|s| s.to_string())
                .collect(),
            None => Vec::new(),
        };
        let refs: Vec<&str> = sites.iter().map(|s| s.as_str()).collect();
        spec.set_mixture(k as usize, &refs, a.real_or("mixing_concentration", 1.0)?)
            .map_err(core_err)?;
    }
    if let Some(priors) = a.get("priors") {
        let l: List = priors
            .clone()
            .try_into()
            .map_err(|_| err("`priors` must be a named list"))?;
        for (name, val) in l.iter() {
            let v = val
                .as_real_slice()
                .ok_or_else(|| err(format!("`priors${name}` must be numeric")))?;
            if v.len() != 2 {
                return Err(err(format!("`priors${name}` must have two values")));
            }
            spec.set_prior(name, v[0], v[1]).map_err(core_err)?;
        }
    }
    Ok(spec)
}

fn prior_robj(p: &Prior) -> Robj {
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

fn counts_from_slots(
    n_genes: i32,
    n_cells: i32,
    p: &Robj,
    i: &Robj,
    x: &Robj,
) -> Result<CountMatrix> {
    let p = p
        .as_integer_slice()
        .ok_or_else(|| err("internal: @p must be integer"))?;
    let i = i
        .as_integer_slice()
        .ok_or_else(|| err("internal: @i must be integer"))?;
    let x = x
        .as_real_slice()
        .ok_or_else(|| err("internal: @x must be double"))?;
    CountMatrix::from_csc(n_genes as usize, n_cells as usize, p, i, x).map_err(core_err)
}

fn optimizer(robj: Option<&Robj>) -> Result<OptimizerConfig> {
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
        other => return Err(err(format!("unsupported optimizer \"{other}\""))),
    })
}

fn early_stopping(robj: Option<&Robj>) -> Result<Option<EarlyStopping>> {
    let Some(robj) = robj else { return Ok(None) };
    let a = Args::new(robj, "early_stopping")?;
    let d = EarlyStopping::default();
    let count = |k: &str, dv: usize| -> Result<usize> { Ok(a.real_or(k, dv as f64)? as usize) };
    Ok(Some(EarlyStopping {
        enabled: if a.get("enabled").is_some() {
            a.boolean("enabled")?
        } else {
            d.enabled
        },
        patience: count("patience", d.patience)?,
        min_delta: a.real_or("min_delta", d.min_delta)?,
        min_delta_pct: a.opt_real("min_delta_pct")?,
        check_every: count("check_every", d.check_every)?.max(1),
        warmup: count("warmup", d.warmup)?,
        smoothing_window: count("smoothing_window", d.smoothing_window)?.max(1),
        restore_best: if a.get("restore_best").is_some() {
            a.boolean("restore_best")?
        } else {
            d.restore_best
        },
    }))
}

fn svi_config(robj: &Robj) -> Result<SviConfig> {
    let a = Args::new(robj, "svi")?;
    Ok(SviConfig {
        n_steps: a.real("n_steps")? as usize,
        batch_size: a.opt_real("batch_size")?.map(|b| b as usize),
        optimizer: optimizer(a.get("optimizer_config"))?,
        stable_update: a.boolean("stable_update")?,
        restore_best: a.boolean("restore_best")?,
        early_stopping: early_stopping(a.get("early_stopping"))?,
        seed: a.real("seed")? as u64,
        n_reports: 100,
    })
}

fn pool(num_threads: i32) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads.max(0) as usize)
        .build()
        .map_err(|e| err(format!("cannot start {num_threads} threads: {e}")))
}

// ------------------------------------------------------- progress/interrupts

#[derive(Default)]
struct SharedProgress {
    state: Mutex<Option<(usize, usize, f64)>>,
    detail: Mutex<String>,
    /// MCMC: the latest status of each chain.
    chains: Mutex<Vec<Option<ChainStatus>>>,
}

impl ChainProgress for SharedProgress {
    fn chain(&self, st: &ChainStatus) {
        if let Ok(mut v) = self.chains.lock() {
            if v.len() <= st.chain {
                v.resize(st.chain + 1, None);
            }
            v[st.chain] = Some(*st);
        }
    }
}

/// One line for all chains: draws done, warmup or sampling, divergences, step size.
fn chains_line(label: &str, v: &[Option<ChainStatus>]) -> String {
    let parts: Vec<String> = v
        .iter()
        .flatten()
        .map(|s| {
            let w = s.total.to_string().len();
            format!(
                "{}: {:>w$}/{}{} div {} eps {:.2e}",
                s.chain + 1,
                s.done,
                s.total,
                if s.warmup { " warmup" } else { "" },
                s.divergences,
                s.step_size
            )
        })
        .collect();
    format!("\r{label} {}   ", parts.join(" | "))
}

impl Progress for SharedProgress {
    fn report(&self, step: usize, total: usize, loss: f64) {
        if let Ok(mut s) = self.state.lock() {
            *s = Some((step, total, loss));
        }
    }
    fn detail(&self, text: String) {
        if let Ok(mut d) = self.detail.lock() {
            *d = text;
        }
    }
}

struct Flag(AtomicBool);
impl Cancel for Flag {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs `work` on a scoped worker thread inside a rayon pool; the R main
/// thread prints progress every 100 ms (when `verbose`) and raises the cancel
/// flag on a user interrupt.
fn run_with_progress<T: Send>(
    label: &str,
    verbose: bool,
    num_threads: i32,
    work: impl FnOnce(&SharedProgress, &Flag) -> std::result::Result<T, CoreError> + Send,
) -> Result<T> {
    let pool = pool(num_threads)?;
    let progress = SharedProgress::default();
    let cancel = Flag(AtomicBool::new(false));
    let mut printed = false;
    let res = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (pr, ca) = (&progress, &cancel);
        let handle = s.spawn(move || {
            let r = pool.install(|| work(pr, ca));
            drop(tx);
            r
        });
        let mut last = None;
        let mut last_chains = Vec::new();
        let mut show = |force: bool| {
            let chains = progress
                .chains
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if !chains.is_empty() {
                if verbose && (chains != last_chains || force) {
                    reprint!("{}", chains_line(label, &chains));
                    printed = true;
                }
                last_chains = chains;
                return;
            }
            let cur = *progress.state.lock().unwrap_or_else(|e| e.into_inner());
            if verbose && (cur != last || force) {
                if let Some((step, total, loss)) = cur {
                    let width = total.to_string().len();
                    let detail = progress
                        .detail
                        .lock()
                        .map(|d| d.clone())
                        .unwrap_or_default();
                    let sep = if detail.is_empty() { "" } else { ", " };
                    reprint!("\r{label} [{step:>width$}/{total}] loss {loss:.6e}{sep}{detail}   ");
                    printed = true;
                }
                last = cur;
            }
        };
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            rx.recv_timeout(Duration::from_millis(100))
        {
            show(false);
            if !cancel.cancelled() && interrupt_pending() {
                cancel.0.store(true, Ordering::Relaxed);
            }
        }
        show(false);
        handle.join()
    });
    if printed {
        reprintln!();
    }
    match res {
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(err(format!("internal error in the numerical core: {what}")))
        }
        Ok(r) => r.map_err(core_err),
    }
}

// -------------------------------------------------------------- entry points

/// Fits an NB-family model by SVI. `model` and `svi` are validated lists built
/// by `scribe_fit()`; counts are the slots of a genes x cells dgCMatrix.
/// @noRd
#[allow(clippy::too_many_arguments)]
#[extendr]
fn rs_svi_fit(
    n_genes: i32,
    n_cells: i32,
    p: Robj,
    i: Robj,
    x: Robj,
    model: Robj,
    svi: Robj,
    verbose: bool,
    num_threads: i32,
) -> Result<Robj> {
    let data = counts_from_slots(n_genes, n_cells, &p, &i, &x)?;
    let spec = nb_spec(&model)?;
    let cfg = svi_config(&svi)?;
    if let Some(b) = cfg.batch_size {
        if b == 0 || b > data.n_cells {
            return Err(err(format!(
                "`batch_size` ({b}) must be between 1 and the number of cells ({})",
                data.n_cells
            )));
        }
    }
    let nb = NbModel::new(spec, &data).map_err(core_err)?;
    let fit = run_with_progress("SVI", verbose, num_threads, |pr, ca| {
        let init = initial_guide(&nb, &nb.initial_point());
        scribe_core::svi::run(&nb, init, &cfg, pr, ca)
    })?;
    let mut names = Vec::new();
    let mut blocks: Vec<Robj> = Vec::new();
    for gb in guide_blocks(nb.layout(), &fit.params, data.n_genes) {
        names.push(gb.name);
        blocks.push(
            list!(
                loc = gb.loc,
                scale = gb.scale,
                link = gb.link.name(),
                kind = kind_name(gb.kind),
                n_comp = gb.n_comp as i32
            )
            .into(),
        );
    }
    let params = List::from_names_and_values(names, blocks)?;
    let priors = block_priors(&nb)?;
    let best_step: Robj = fit.best_step.map_or(().into(), |s| ((s + 1) as f64).into());
    Ok(list!(
        params = params,
        priors = priors,
        loss_history = fit.loss_history,
        early_stopped = fit.early_stopped,
        best_step = best_step,
        best_loss = fit.best_loss,
        restored_best = fit.restored_best
    )
    .into())
}

fn kind_name(k: BlockKind) -> &'static str {
    match k {
        BlockKind::Gene => "gene",
        BlockKind::Scalar => "scalar",
        BlockKind::Cell => "cell",
    }
}

fn parse_kind(s: &str) -> BlockKind {
    match s {
        "gene" => BlockKind::Gene,
        "scalar" => BlockKind::Scalar,
        _ => BlockKind::Cell,
    }
}

/// The prior family and hyper-parameters of every block of the model.
fn block_priors(nb: &NbModel) -> Result<List> {
    let mut names = Vec::new();
    let mut priors: Vec<Robj> = Vec::new();
    for (b, block) in nb.layout().blocks.iter().enumerate() {
        priors.push(if block.name == "mixing_weights" {
            let a = nb.spec.mixture.map_or(1.0, |m| m.concentration);
            list!(family = "dirichlet", hyper = vec![a]).into()
        } else {
            prior_robj(&nb.prior(b, 0))
        });
        names.push(block.name.clone());
    }
    List::from_names_and_values(names, priors)
}

fn draw_blocks_from_r(blocks: &Robj) -> Result<Vec<DrawBlock>> {
    let l: List = blocks
        .clone()
        .try_into()
        .map_err(|_| err("internal: draw blocks must be a list"))?;
    let mut out = Vec::new();
    for (name, blk) in l.iter() {
        let a = Args::new(&blk, "draw block")?;
        out.push(DrawBlock {
            name: name.to_string(),
            kind: parse_kind(&a.string("kind")?),
            link: parse_link(&a.string("link")?)?,
            offset: a.real("offset")? as usize,
            len: a.real("len")? as usize,
            n_comp: a.real_or("n_comp", 1.0)? as usize,
        });
    }
    Ok(out)
}

/// The sites of a fit's `params`: the guide (SVI: MAP or guide draws) or the
/// MCMC draws matrix (posterior means, or `n_draws` evenly spaced draws,
/// recycled when more are asked for than were kept).
fn fit_sites(spec: &NbSpec, params: &Robj, n_draws: i32, seed: f64) -> Result<Vec<Site>> {
    let a = Args::new(params, "params")?;
    if let (Some(draws), Some(blocks)) = (a.get("draws"), a.get("blocks")) {
        let x = draws
            .as_real_slice()
            .ok_or_else(|| err("internal: draws must be double"))?;
        let blocks = draw_blocks_from_r(blocks)?;
        let dim = blocks.iter().map(|b| b.offset + b.len).max().unwrap_or(0);
        let total = x.len() / dim.max(1);
        let pick = if n_draws <= 0 {
            Pick::Mean
        } else {
            let n = n_draws as usize;
            Pick::Draws(
                (0..n)
                    .map(|i| if n <= total { i * total / n } else { i % total })
                    .collect(),
            )
        };
        return nb_sites_from_draws(spec, &blocks, x, dim, &pick).map_err(core_err);
    }
    let blocks = guide_blocks_from_r(params)?;
    let draws = (n_draws > 0).then_some((n_draws as usize, seed as u64));
    nb_sites(spec, &blocks, draws).map_err(core_err)
}

/// Samples an NB-family model's posterior by NUTS. `mcmc` holds the sampler
/// settings; `init` is NULL (uniform start) or list(model, params) of an SVI
/// fit to start from.
/// @noRd
#[allow(clippy::too_many_arguments)]
#[extendr]
fn rs_mcmc_fit(
    n_genes: i32,
    n_cells: i32,
    p: Robj,
    i: Robj,
    x: Robj,
    model: Robj,
    mcmc: Robj,
    init: Robj,
    verbose: bool,
    num_threads: i32,
) -> Result<Robj> {
    let data = counts_from_slots(n_genes, n_cells, &p, &i, &x)?;
    let spec = nb_spec(&model)?;
    let a = Args::new(&mcmc, "mcmc")?;
    let cfg = McmcConfig {
        n_samples: a.real("n_samples")? as usize,
        n_warmup: a.real("n_warmup")? as usize,
        n_chains: a.real("n_chains")? as usize,
        seed: a.real("seed")? as u64,
        target_accept: a.real_or("target_accept_prob", 0.8)?,
        max_tree_depth: a.real_or("max_tree_depth", 10.0)? as usize,
        mass_matrix: if a.get("dense_mass").is_some() && a.boolean("dense_mass")? {
            MassMatrix::LowRank
        } else {
            MassMatrix::Diagonal
        },
    };
    let nb = NbModel::new(spec, &data).map_err(core_err)?;
    let svi = if init.is_null() {
        None
    } else {
        let ia = Args::new(&init, "svi_init")?;
        let need = |k: &str| {
            ia.get(k)
                .ok_or_else(|| err(format!("internal: svi_init${k}")))
        };
        let sspec = nb_spec(need("model")?)?;
        let guide = guide_blocks_from_r(need("params")?)?;
        let sites = nb_sites(&sspec, &guide, None).map_err(core_err)?;
        Some((guide, sites))
    };
    let radius = a.real_or("init_radius", 2.0)?;
    let spread = a.real_or("init_spread", 1.0)?;
    let fit = run_with_progress("MCMC", verbose, num_threads, |pr, ca| {
        let start = match &svi {
            None => Start::Uniform { radius },
            Some((guide, sites)) => {
                let (loc, scale) = svi_start(&nb, sites, guide)?;
                Start::Around { loc, scale, spread }
            }
        };
        scribe_core::mcmc::run(&nb, &cfg, &start, pr, ca)
    })?;
    let mut names = Vec::new();
    let mut blocks: Vec<Robj> = Vec::new();
    for b in &nb.layout().blocks {
        names.push(b.name.clone());
        blocks.push(
            list!(
                link = b.link.name(),
                kind = kind_name(b.kind),
                n_comp = n_comp_of(b, data.n_genes) as i32,
                offset = b.offset as i32,
                len = b.len as i32
            )
            .into(),
        );
    }
    let blocks = List::from_names_and_values(names, blocks)?;
    let cat = |f: &dyn Fn(&scribe_core::mcmc::ChainTrace) -> Vec<f64>| -> Vec<f64> {
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
        blocks = blocks,
        priors = block_priors(&nb)?,
        stats = stats,
        per_chain = per_chain
    )
    .into())
}

/// Fits PLN by Laplace. `laplace` holds the engine settings (validated in R).
/// Latents come back cell-major (`G` values per cell), loadings row-major.
/// @noRd
#[allow(clippy::too_many_arguments)]
#[extendr]
fn rs_laplace_fit(
    n_genes: i32,
    n_cells: i32,
    p: Robj,
    i: Robj,
    x: Robj,
    model: &str,
    laplace: Robj,
    verbose: bool,
    num_threads: i32,
) -> Result<Robj> {
    let data = counts_from_slots(n_genes, n_cells, &p, &i, &x)?;
    let model = match model {
        "pln" => LnModel::Pln,
        "nbln" => LnModel::Nbln,
        "lnm" => LnModel::Lnm,
        other => {
            return Err(err(format!(
                "internal: Laplace model '{other}' is not implemented"
            )))
        }
    };
    let a = Args::new(&laplace, "laplace")?;
    let d = LaplaceConfig::default();
    let vec_of = |r: Option<&Robj>, what: &str| -> Result<Option<Vec<f64>>> {
        match r {
            None => Ok(None),
            Some(v) => v
                .as_real_slice()
                .map(|s| Some(s.to_vec()))
                .ok_or_else(|| err(format!("internal: `{what}` must be numeric"))),
        }
    };
    let pair = |r: Option<&Robj>, what: &str| -> Result<Option<(Vec<f64>, Vec<f64>)>> {
        let Some(r) = r else { return Ok(None) };
        let l = Args::new(r, what)?;
        Ok(Some((
            vec_of(l.get("loc"), what)?.unwrap_or_default(),
            vec_of(l.get("scale"), what)?.unwrap_or_default(),
        )))
    };
    let capture = capture_from(a.get("capture"))?;
    let cascade = match a
        .get("cascade")
        .map(|c| Args::new(c, "cascade"))
        .transpose()?
    {
        None => Cascade::default(),
        Some(c) => Cascade {
            r_prior: pair(c.get("r_prior"), "r_prior")?,
            mu_prior: pair(c.get("mu_prior"), "mu_prior")?,
            r_frozen: vec_of(c.get("r_frozen"), "r_frozen")?,
            mu_frozen: vec_of(c.get("mu_frozen"), "mu_frozen")?,
        },
    };
    let cfg = LaplaceConfig {
        model,
        latent_dim: a.real("latent_dim")? as usize,
        n_steps: a.real("n_steps")? as usize,
        batch_size: a.opt_real("batch_size")?.map(|b| b as usize),
        n_newton_steps: a.real_or("n_newton_steps", d.n_newton_steps as f64)? as usize,
        damping: a.real_or("damping", d.damping)?,
        newton_tolerance: a.real_or("newton_tolerance", d.newton_tolerance)?,
        newton_max_step: a.real_or("newton_max_step", d.newton_max_step)?,
        rescue_diverged_cells: if a.get("rescue_diverged_cells").is_some() {
            a.boolean("rescue_diverged_cells")?
        } else {
            d.rescue_diverged_cells
        },
        rescue_threshold_multiplier: a
            .real_or("rescue_threshold_multiplier", d.rescue_threshold_multiplier)?,
        rescue_n_newton: a.real_or("rescue_n_newton", d.rescue_n_newton as f64)? as usize,
        rescue_damping_multiplier: a
            .real_or("rescue_damping_multiplier", d.rescue_damping_multiplier)?,
        optimizer: optimizer(a.get("optimizer_config"))?,
        seed: a.real("seed")? as u64,
        n_reports: 100,
        capture,
        cascade,
        loadings_prior: loadings_prior(a.get("loadings"))?,
        lnm_low_rank: a.get("d_mode").and_then(|d| d.as_str()) == Some("low_rank"),
        early_stopping: early_stopping(a.get("early_stopping"))?,
    };
    let fit = run_with_progress("Laplace", verbose, num_threads, |pr, ca| {
        run_laplace(&data, &cfg, pr, ca)
    })?;
    let none = || -> Robj { ().into() };
    Ok(list!(
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
        early_stopped = fit.early_stopped,
        restored_step = fit.restored_step.map_or_else(none, |s| (s as f64).into()),
        aborted = fit.aborted.map_or_else(none, |s| s.into()),
        w_prior = list!(
            column_norms = fit.w_prior.column_norms,
            column_norms_raw = fit.w_prior.column_norms_raw,
            effective_rank = fit.w_prior.effective_rank as i32,
            sigma_k = fit.w_prior.sigma_k,
            scale_effective_rank = fit
                .w_prior
                .scale_effective_rank
                .map_or_else(none, |v| (v as i32).into()),
            global = fit.w_prior.global.map_or_else(none, |v| v.into())
        ),
        w_prior_aux = fit.w_prior_aux
    )
    .into())
}

fn real_vec(r: Option<&Robj>, what: &str) -> Result<Vec<f64>> {
    match r {
        None => Ok(Vec::new()),
        Some(v) => v
            .as_real_slice()
            .map(|s| s.to_vec())
            .ok_or_else(|| err(format!("internal: `{what}` must be numeric"))),
    }
}

/// The capture block from its R description: NULL, or list(mode = "anchor",
/// ln_m0, sigma), list(mode = "prior", loc, scale), list(mode = "frozen", values).
fn capture_from(r: Option<&Robj>) -> Result<Capture> {
    let Some(r) = r else { return Ok(Capture::None) };
    let c = Args::new(r, "capture")?;
    Ok(match c.string("mode")?.as_str() {
        "anchor" => Capture::Anchor {
            ln_m0: c.real("ln_m0")?,
            sigma: c.real("sigma")?,
        },
        "prior" => Capture::PerCell {
            loc: real_vec(c.get("loc"), "capture")?,
            scale: real_vec(c.get("scale"), "capture")?,
        },
        "frozen" => Capture::Frozen(real_vec(c.get("values"), "capture")?),
        other => return Err(err(format!("internal: capture mode '{other}'"))),
    })
}

/// Posterior analyses of a Laplace fit: "latents" (draws of the latent
/// log-rates and capture), "predictive" (count draws; `use_map` for the MAP
/// latents) and "loglik" (per-cell log-likelihood at the MAP or per draw).
/// `fit` is list(model, k, mu, w (row-major), d, r, latents, eta, capture,
/// and for LNM totals and the 0-based reference gene).
/// @noRd
#[extendr]
fn rs_laplace_analysis(
    fit: Robj,
    counts: Robj,
    what: &str,
    opts: Robj,
    num_threads: i32,
) -> Result<Robj> {
    let f = Args::new(&fit, "fit")?;
    let c = Args::new(&counts, "counts")?;
    let need = |k: &str| {
        c.get(k)
            .cloned()
            .ok_or_else(|| err(format!("internal: counts${k}")))
    };
    let data = counts_from_slots(
        c.real("n_genes")? as i32,
        c.real("n_cells")? as i32,
        &need("p")?,
        &need("i")?,
        &need("x")?,
    )?;
    let model = match f.string("model")?.as_str() {
        "nbln" => LnModel::Nbln,
        "lnm" => LnModel::Lnm,
        _ => LnModel::Pln,
    };
    let (mu, w, d, r) = (
        real_vec(f.get("mu"), "mu")?,
        real_vec(f.get("w"), "w")?,
        real_vec(f.get("d"), "d")?,
        real_vec(f.get("r"), "r")?,
    );
    let (latents, eta) = (
        real_vec(f.get("latents"), "latents")?,
        real_vec(f.get("eta"), "eta")?,
    );
    let capture = capture_from(f.get("capture"))?;
    let totals = real_vec(f.get("totals"), "totals")?;
    let fitted = Fitted {
        model,
        k: f.real("k")? as usize,
        mu: &mu,
        w: &w,
        d: &d,
        r: &r,
        latents: &latents,
        eta: &eta,
        capture: &capture,
        totals: &totals,
        reference: f.opt_real("reference")?.map(|r| r as usize),
        low_rank: f.get("low_rank").and_then(|v| v.as_bool()).unwrap_or(false),
    };
    let o = Args::new(&opts, "opts")?;
    let cells = indices(o.get("cells"), data.n_cells)?;
    let seed = o.real_or("seed", 0.0)? as u64;
    let n = o.real_or("n_draws", 0.0)? as usize;
    let pool = pool(num_threads)?;
    Ok(match what {
        "latents" => {
            let (x, e) = pool
                .install(|| laplace_posterior::latent_draws(&fitted, &data, &cells, n, seed))
                .map_err(core_err)?;
            list!(latents = x, eta = e).into()
        }
        "predictive" => {
            let genes = indices(o.get("genes"), data.n_genes)?;
            let use_map = o.boolean("use_map")?;
            let v = pool
                .install(|| {
                    laplace_posterior::predictive(&fitted, &data, &cells, &genes, n, use_map, seed)
                })
                .map_err(core_err)?;
            list!(values = v).into()
        }
        "loglik" => {
            let draws = (n > 0).then_some((n, seed));
            let v = pool
                .install(|| laplace_posterior::cell_loglik(&fitted, &data, &cells, draws))
                .map_err(core_err)?;
            list!(values = v).into()
        }
        other => return Err(err(format!("internal: unknown analysis '{other}'"))),
    })
}

/// Empirical priors (from `n_draws` guide draws, widened by `tau`) and point
/// values of r, log mu and eta from an SVI fit, for the NBLN cascade.
/// @noRd
#[extendr]
fn rs_cascade_stats(model: Robj, params: Robj, n_draws: i32, seed: f64, tau: f64) -> Result<Robj> {
    let spec = nb_spec(&model)?;
    let draws = fit_sites(&spec, &params, n_draws, seed)?;
    let point = fit_sites(&spec, &params, 0, 0.0)?;
    let st = cascade_stats(&draws, &point, tau).map_err(core_err)?;
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
}

/// The loadings prior from `priors$loadings` (validated in R; NULL = none).
fn loadings_prior(robj: Option<&Robj>) -> Result<LoadingsPrior> {
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
        other => return Err(err(format!("unknown loadings prior type \"{other}\""))),
    })
}

fn guide_blocks_from_r(params: &Robj) -> Result<Vec<GuideBlock>> {
    let l: List = params
        .clone()
        .try_into()
        .map_err(|_| err("internal: params must be a list"))?;
    let mut out = Vec::new();
    for (name, blk) in l.iter() {
        let a = Args::new(&blk, "params block")?;
        let loc = a
            .get("loc")
            .and_then(|r| r.as_real_slice())
            .ok_or_else(|| err("internal: block loc"))?
            .to_vec();
        let scale = a
            .get("scale")
            .and_then(|r| r.as_real_slice())
            .ok_or_else(|| err("internal: block scale"))?
            .to_vec();
        let kind = match a.string("kind")?.as_str() {
            "gene" => BlockKind::Gene,
            "scalar" => BlockKind::Scalar,
            _ => BlockKind::Cell,
        };
        let n_comp = a.real_or("n_comp", 1.0)? as usize;
        out.push(GuideBlock {
            name: name.to_string(),
            kind,
            link: parse_link(&a.string("link")?)?,
            loc,
            scale,
            n_comp,
        });
    }
    Ok(out)
}

/// MAP (n_draws = 0) or guide draws of every sampled and derived NB site.
/// @noRd
#[extendr]
fn rs_nb_sites(model: Robj, params: Robj, n_draws: i32, seed: f64) -> Result<Robj> {
    let spec = nb_spec(&model)?;
    let sites = fit_sites(&spec, &params, n_draws, seed)?;
    // Each site: its values (draw index fastest, then element, then component)
    // with the shape c(n_draws, len, n_comp); R names and arranges them.
    let mut names = Vec::new();
    let mut vals: Vec<Robj> = Vec::new();
    for s in sites {
        names.push(s.name.clone());
        let shape = vec![s.n_draws as i32, s.len() as i32, s.n_comp as i32];
        vals.push(list!(values = s.values, shape = shape, kind = kind_name(s.kind)).into());
    }
    Ok(List::from_names_and_values(names, vals)?.into())
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
    seed: f64,
) -> Result<Robj> {
    let variant = Variant::parse(model).map_err(core_err)?;
    let opt = |o: &Robj| o.as_real_slice().map(|s| s.to_vec());
    let mut truth = if n_components >= 2 {
        NbTruth::random_mixture(
            variant,
            n_genes as usize,
            n_cells as usize,
            n_components as usize,
            seed as u64,
        )
    } else {
        NbTruth::random(variant, n_genes as usize, n_cells as usize, seed as u64)
    };
    if let Some(v) = opt(&r) {
        truth.r = v;
    }
    if let Some(v) = p.as_real() {
        truth.p = v;
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
    let m = simulate_nb(&truth, seed as u64 + 1);
    let pp: Vec<i32> = m.cell_ptr.iter().map(|&v| v as i32).collect();
    let i: Vec<i32> = m.gene_idx.iter().map(|&v| v as i32).collect();
    let x: Vec<f64> = m.counts.iter().map(|&v| v as f64).collect();
    let none = || -> Robj { ().into() };
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
                vec![truth.p],
                truth.gate.map_or_else(none, |v| v.into()),
                none(),
                none(),
            ),
        };
    Ok(list!(
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
    .into())
}

fn parse_method(s: &str) -> Result<Method> {
    match s {
        "mean" => Ok(Method::Mean),
        "mode" => Ok(Method::Mode),
        "sample" => Ok(Method::Sample),
        _ => Err(err(format!(
            "`method` must be \"mean\", \"mode\" or \"sample\", not \"{s}\""
        ))),
    }
}

fn indices(robj: Option<&Robj>, n: usize) -> Result<Vec<usize>> {
    match robj {
        None => Ok((0..n).collect()),
        Some(r) => {
            let v = r
                .as_integer_slice()
                .ok_or_else(|| err("internal: indices must be integer"))?;
            v.iter()
                .map(|&i| {
                    if i >= 0 && (i as usize) < n {
                        Ok(i as usize)
                    } else {
                        Err(err(format!("index {i} out of range")))
                    }
                })
                .collect()
        }
    }
}

/// Downstream analyses on the MAP (`n_draws = 0`) or on guide draws:
/// `what` is "loglik", "responsibilities", "denoise", "normalize" or
/// "predictive"; `counts` is a list(n_genes, n_cells, p, i, x) or NULL;
/// `opts` holds the analysis' options. Returns list(values, ...).
/// @noRd
#[allow(clippy::too_many_arguments)]
#[extendr]
fn rs_nb_analysis(
    model: Robj,
    params: Robj,
    n_draws: i32,
    seed: f64,
    what: &str,
    counts: Robj,
    opts: Robj,
    num_threads: i32,
) -> Result<Robj> {
    let spec = nb_spec(&model)?;
    let sites = fit_sites(&spec, &params, n_draws, seed)?;
    let o = Args::new(&opts, "opts")?;
    let mut d = NbDraws::from_sites(spec.variant, &sites).map_err(core_err)?;
    if let Some(n) = o.opt_real("replicate_map")? {
        d = d.replicate(n as usize);
    }
    let data = if counts.is_null() {
        None
    } else {
        let c = Args::new(&counts, "counts")?;
        let need = |k: &str| {
            c.get(k)
                .cloned()
                .ok_or_else(|| err(format!("internal: counts${k}")))
        };
        Some(counts_from_slots(
            c.real("n_genes")? as i32,
            c.real("n_cells")? as i32,
            &need("p")?,
            &need("i")?,
            &need("x")?,
        )?)
    };
    let data_ref = || {
        data.as_ref()
            .ok_or_else(|| err("internal: this analysis needs counts"))
    };
    let aseed = o.real_or("seed", 0.0)? as u64;
    let pool = pool(num_threads)?;
    let none = || -> Robj { ().into() };
    // Options are read on the R thread; only plain Rust values enter the pool.
    Ok(match what {
        "loglik" => {
            let by = if o.string("by")? == "gene" {
                By::Gene
            } else {
                By::Cell
            };
            let split = o.boolean("split")?;
            let dat = data_ref()?;
            let v = pool.install(|| log_likelihood(&d, dat, by, split));
            list!(values = v, n_comp = d.n_comp as i32).into()
        }
        "responsibilities" => {
            let dat = data_ref()?;
            let v = pool.install(|| responsibilities(&d, dat));
            list!(values = v, n_comp = d.n_comp as i32).into()
        }
        "denoise" => {
            let dat = data_ref()?;
            let genes = indices(o.get("genes"), d.n_genes)?;
            let (m, zm) = (
                parse_method(&o.string("method")?)?,
                parse_method(&o.string("zi_method")?)?,
            );
            let want_var = o.boolean("return_variance")?;
            let (v, var) = pool.install(|| denoise(&d, dat, &genes, m, zm, want_var, aseed));
            list!(values = v, variance = var.map_or_else(none, |x| x.into())).into()
        }
        "normalize" => {
            let n_dir = o.real_or("n_dirichlet", 0.0)? as usize;
            let v = pool.install(|| {
                if n_dir == 0 {
                    mean_composition(&d)
                } else {
                    dirichlet_samples(&d, n_dir, aseed)
                }
            });
            list!(values = v, n_comp = d.n_comp as i32).into()
        }
        "cell_fractions" => {
            let dat = data_ref()?;
            let genes = indices(o.get("genes"), d.n_genes)?;
            let sample = o.boolean("sample")?;
            let v = pool.install(|| cell_fractions(&d, dat, &genes, sample, aseed));
            list!(values = v).into()
        }
        "predictive" => {
            let n_cells = if d.n_cells > 0 {
                d.n_cells
            } else {
                o.real("n_cells")? as usize
            };
            let cells = indices(o.get("cells"), n_cells)?;
            let genes = indices(o.get("genes"), d.n_genes)?;
            let bio = o.boolean("biological")?;
            let v = pool.install(|| predictive(&d, &cells, &genes, bio, aseed));
            list!(values = v).into()
        }
        other => return Err(err(format!("internal: unknown analysis '{other}'"))),
    })
}

extendr_module! {
    mod scribeR;
    fn rs_svi_fit;
    fn rs_nb_sites;
    fn rs_simulate_nb;
    fn rs_nb_analysis;
    fn rs_mcmc_fit;
    fn rs_laplace_fit;
    fn rs_cascade_stats;
    fn rs_laplace_analysis;
}
