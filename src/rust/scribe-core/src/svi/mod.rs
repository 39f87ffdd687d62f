//! Stochastic variational inference: the training loop over any [`Guide`]
//! (the families live in [`guide`]), with mini-batching over cells, the
//! shared optimizers and early stopping / restore-best of [`crate::optim`],
//! `stable_update`, and a Laplace-style start for the guide's scales.

pub mod guide;

use crate::data::{Batch, BatchSampler};
use crate::error::{CoreError, Partial, Result};
use crate::models::{log_joint_grad, Model};
use crate::optim::early_stop::{Decision, EarlyStopping, Tracker};
use crate::optim::settle::{Group, Settle, SettleTracker, Verdict};
use crate::optim::StopReason;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::progress::{Cancel, Progress};
use guide::Guide;
use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;

/// Settings of one SVI run.
#[derive(Debug, Clone, PartialEq)]
pub struct SviConfig {
    pub n_steps: usize,
    /// Cells per step; `None` = full batch.
    pub batch_size: Option<usize>,
    pub optimizer: OptimizerConfig,
    /// Skip updates whose loss or gradient is not finite (and record NaN).
    pub stable_update: bool,
    /// Track and restore the best parameters even without early stopping.
    pub restore_best: bool,
    pub early_stopping: Option<EarlyStopping>,
    /// The default stopping rule: stop when the loss and the parameters settle.
    pub settle: Option<Settle>,
    pub seed: u64,
    /// How many progress reports to emit over the run.
    pub n_reports: usize,
}

impl Default for SviConfig {
    fn default() -> Self {
        SviConfig {
            n_steps: 50_000,
            batch_size: None,
            optimizer: OptimizerConfig::default(),
            stable_update: true,
            restore_best: false,
            early_stopping: None,
            settle: Some(Settle::default()),
            seed: 42,
            n_reports: 100,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct SviFit {
    /// The guide's variational parameters (see [`Guide::fitted`]).
    pub params: Vec<f64>,
    /// One `−ELBO` estimate per executed step (NaN where an update was skipped).
    pub loss_history: Vec<f64>,
    pub early_stopped: bool,
    pub best_step: Option<usize>,
    pub best_loss: f64,
    pub restored_best: bool,
    pub stop: StopReason,
    /// The last drift of each layout block under the settled rule (≤ 1: settled).
    pub drift: Vec<(String, f64)>,
}

/// The settled rule's parameter groups: one per layout block; per-gene and
/// per-cell blocks are judged by 99 % of their coordinates (the dispersion of
/// a gene seen in a handful of cells stays weakly identified long after the
/// rest has settled).
/// The model's ridge blocks ([`Model::ridge_blocks`]) are not waited for.
pub fn settle_groups<M: Model>(model: &M) -> Vec<Group> {
    let ridge = model.ridge_blocks();
    model
        .layout()
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| Group {
            name: b.name.clone(),
            range: b.range(),
            robust: matches!(
                b.kind,
                crate::models::BlockKind::Cell | crate::models::BlockKind::Gene
            ),
            ridge: ridge.contains(&i),
        })
        .collect()
}

/// The smallest scale the settled rule measures a parameter's movement against.
const SPREAD_FLOOR: f64 = 0.01;

/// Consecutive non-finite steps after which a run is declared diverged.
pub(crate) const MAX_NONFINITE_RUN: usize = 100;

/// Per-coordinate log scales of a Laplace approximation at `x0`:
/// `ln(1/sqrt(−H_jj))` from the diagonal of the log-joint Hessian (0.1 where
/// it is not negative), clamped to `[1e-4, 1]`, so that guides start near
/// their optimum instead of at the prior's width. MCMC warm starts use the
/// same scales for blocks an SVI fit does not describe.
pub fn initial_log_scales<M: Model>(model: &M, x0: &[f64]) -> Vec<f64> {
    let n = x0.len();
    let batch = Batch::full(model.data());
    let mut ws = model.workspace();
    let mut hdiag = vec![f64::NAN; n];
    if model.blocks_are_separable() {
        let (mut gp, mut gm) = (vec![0.0; n], vec![0.0; n]);
        let h = 1e-4;
        for block in &model.layout().blocks {
            let mut x = x0.to_vec();
            let r = block.range();
            x[r.clone()].iter_mut().for_each(|v| *v += h);
            log_joint_grad(model, &x, &batch, &mut gp, &mut ws);
            x[r.clone()].iter_mut().for_each(|v| *v -= 2.0 * h);
            log_joint_grad(model, &x, &batch, &mut gm, &mut ws);
            for k in r {
                hdiag[k] = (gp[k] - gm[k]) / (2.0 * h);
            }
        }
    }
    hdiag
        .iter()
        .map(|&h| {
            let sd = if h.is_finite() && h < 0.0 {
                1.0 / (-h).sqrt()
            } else {
                0.1
            };
            sd.clamp(1e-4, 1.0).ln()
        })
        .collect()
}

/// The guide's starting parameters for `model`: at the model's data-driven
/// point with the scales of [`initial_log_scales`].
pub fn initial_params<M: Model, G: Guide>(model: &M, guide: &G) -> Vec<f64> {
    let x0 = model.initial_point();
    guide.initial_params(&x0, &initial_log_scales(model, &x0))
}

/// Runs SVI of `guide` from its parameters `init` (see [`initial_params`]).
pub fn run<M: Model, G: Guide>(
    model: &M,
    guide: &G,
    init: Vec<f64>,
    cfg: &SviConfig,
    progress: &dyn Progress,
    cancel: &dyn Cancel,
) -> Result<SviFit> {
    cfg.optimizer.validate()?;
    if let Some(s) = &cfg.settle {
        s.validate()?;
    }
    if cfg.n_steps < 1 {
        return Err(CoreError::arg("n_steps", "must be at least 1"));
    }
    let data = model.data();
    crate::data::check_batch_size(cfg.batch_size, data.n_cells)?;
    crate::limits::check_values("n_steps", cfg.n_steps as f64)?;
    let n = guide.n_params();
    if init.len() != n {
        return Err(CoreError::arg(
            "init",
            format!("expected {} values, got {}", n, init.len()),
        ));
    }
    let mut v = init;
    let mut opt = Optimizer::new(cfg.optimizer.clone(), n);
    let mut scratch = guide.scratch();
    let mut ws = model.workspace();
    let mut grad = vec![0.0; n];
    let mut rng_noise = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng_noise.set_stream(1);
    let mut rng_batch = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng_batch.set_stream(2);
    let mut batch = Batch::full(data);
    let mut sampler = match cfg.batch_size {
        Some(b) if b < data.n_cells => Some(BatchSampler::new(data.n_cells, b)),
        _ => None,
    };
    let es_cfg = match (&cfg.early_stopping, cfg.restore_best) {
        (Some(es), rb) => Some(EarlyStopping {
            restore_best: es.restore_best || rb,
            ..es.clone()
        }),
        (None, true) => Some(EarlyStopping {
            enabled: false,
            restore_best: true,
            ..Default::default()
        }),
        (None, false) => None,
    };
    let mut tracker = es_cfg.map(Tracker::new);
    let dim = model.layout().total;
    let mut settle = cfg
        .settle
        .clone()
        .map(|s| SettleTracker::new(s, settle_groups(model), dim));
    let mut loc = vec![0.0; if settle.is_some() { dim } else { 0 }];
    let mut stop = StopReason::MaxSteps;
    let mut best_params: Option<Vec<f64>> = None;
    let mut losses = Vec::with_capacity(crate::limits::history_capacity(cfg.n_steps));
    let report_every = (cfg.n_steps / cfg.n_reports.max(1)).max(1);
    let mut last_report = 0usize;
    let mut nonfinite_run = 0usize;
    let mut early_stopped = false;
    for t in 0..cfg.n_steps {
        if cancel.cancelled() {
            return Err(CoreError::cancelled().with_partial(Partial {
                step: t,
                loss_history: losses,
            }));
        }
        if let Some(s) = sampler.as_mut() {
            let cells = s.draw(&mut rng_batch);
            batch.set_cells(data, cells);
        }
        let loss = guide.loss_and_grad(
            model,
            &v,
            &batch,
            &mut rng_noise,
            &mut scratch,
            &mut ws,
            &mut grad,
        );
        let finite = loss.is_finite() && grad.iter().all(|g| g.is_finite());
        if finite {
            nonfinite_run = 0;
            opt.step(&mut v, &grad);
            losses.push(loss);
        } else {
            nonfinite_run += 1;
            losses.push(f64::NAN);
            let why = if !cfg.stable_update {
                Some("the loss or its gradient is not finite (stable_update = FALSE); try stable_update = TRUE or a smaller step_size".to_string())
            } else if nonfinite_run >= MAX_NONFINITE_RUN {
                Some(format!("{MAX_NONFINITE_RUN} consecutive steps had a non-finite loss; try a smaller step_size"))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(CoreError::non_finite(t + 1, why).with_partial(Partial {
                    step: t + 1,
                    loss_history: losses,
                }));
            }
        }
        if let Some(tr) = tracker.as_mut() {
            match tr.check(t, &losses) {
                Decision::Improved if tr.cfg.restore_best => best_params = Some(v.clone()),
                Decision::Stop => {
                    early_stopped = true;
                    stop = StopReason::EarlyStopping;
                    report(progress, &losses, &mut last_report, t + 1, cfg.n_steps);
                    break;
                }
                _ => {}
            }
        }
        if let Some(st) = settle.as_mut() {
            guide.location(&v, &mut loc);
            // Movement is judged against the posterior spread, but never
            // against less than 0.01 (1 % on a log scale): creeping below
            // that changes nothing a user reads.
            let spread = || {
                let mut s = vec![0.0; dim];
                guide.spread(&v, &mut s);
                s.iter_mut().for_each(|x| *x = x.max(SPREAD_FLOOR));
                s
            };
            match st.push(t, losses[t], &loc, &spread) {
                Verdict::Continue => {}
                Verdict::Converged => stop = StopReason::Converged,
                Verdict::WeaklyIdentified(g) => stop = StopReason::WeaklyIdentified(g),
            }
            if stop != StopReason::MaxSteps {
                // Settling on the very last step is not an early stop.
                early_stopped = t + 1 < cfg.n_steps;
                report(progress, &losses, &mut last_report, t + 1, cfg.n_steps);
                break;
            }
        }
        if (t + 1) % report_every == 0 || t + 1 == cfg.n_steps {
            report(progress, &losses, &mut last_report, t + 1, cfg.n_steps);
        }
    }
    let restored_best = best_params.is_some();
    if let Some(b) = best_params {
        v = b;
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(
            CoreError::non_finite(losses.len(), "variational parameters are not finite")
                .with_partial(Partial {
                    step: losses.len(),
                    loss_history: losses,
                }),
        );
    }
    let (best_step, best_loss) = tracker.map_or((None, f64::NAN), |t| (t.best_step, t.best));
    let drift = settle.map_or_else(Vec::new, |st| st.drifts());
    Ok(SviFit {
        params: v,
        loss_history: losses,
        early_stopped,
        best_step,
        best_loss,
        restored_best,
        stop,
        drift,
    })
}

fn report(progress: &dyn Progress, losses: &[f64], last: &mut usize, step: usize, total: usize) {
    let window = &losses[(*last).min(losses.len())..];
    let (s, k) = window
        .iter()
        .filter(|v| v.is_finite())
        .fold((0.0, 0), |(s, k), v| (s + v, k + 1));
    progress.report(step, total, if k > 0 { s / k as f64 } else { f64::NAN });
    *last = losses.len();
}
