//! The outer loop: the optimiser on the globals of the Laplace ELBO, with
//! mini-batches, global priors, the divergence detector, early stopping,
//! the final sweep and the rescue pass.

use super::cell::EtaMode;
use super::guards::Guards;
use super::objective::{Eval, Objective};
use super::sweep::{cell_norm, sweep, EtaSpec, Globals, Layout, NewtonSettings, SweepOut};
use super::{init, w_prior, Capture, Cascade, LaplaceConfig, LaplaceFit, LnModel, NewtonCounts};
use crate::data::{BatchSampler, CountMatrix};
use crate::error::{CoreError, Partial, Result};
use crate::math::{softplus, softplus_inv};
use crate::optim::lbfgs::{dot, Lbfgs, LineSearch, Next};
use crate::optim::settle::{Group, SettleTracker, Verdict};
use crate::optim::Optimizer;
use crate::optim::StopReason;
use crate::progress::{Cancel, Progress};
use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;

/// The μ warm-up rounds stop once no μ_g moves by more than this.
const MU_WARM_TOL: f64 = 1e-2;

/// A snapshot of the fit: `(θ, η)`. The latents are not kept: the final
/// sweep re-solves every cell's MAP at the restored globals (the PLN/NBLN
/// posterior of `x` is log-concave, so the MAP does not depend on where
/// Newton starts), and a copy of the C × G latents per snapshot was the
/// largest allocation of a fit after the latents themselves.
type State = (Vec<f64>, Vec<f64>);

/// Overwrites a snapshot in place (no allocation per improving step).
fn copy_state(state: &mut State, th: &[f64], eta: &[f64]) {
    state.0.copy_from_slice(th);
    state.1.copy_from_slice(eta);
}

/// The `m` cells (1-based) with the largest (or non-finite) gradient norms.
fn worst_cells(cells: &[usize], norms: &[f64], m: usize) -> String {
    let mut idx: Vec<usize> = (0..cells.len()).collect();
    let key = |i: usize| {
        if norms[i].is_finite() {
            norms[i]
        } else {
            f64::INFINITY
        }
    };
    idx.sort_by(|&a, &b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    idx.iter()
        .take(m)
        .map(|&i| format!("cell {} ({:.2e})", cells[i] + 1, norms[i]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sup-norm summary `(max, p99, median)` of per-cell gradient norms.
pub fn norm_summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v
        .iter()
        .map(|x| if x.is_finite() { *x } else { f64::INFINITY })
        .collect();
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let q = |p: f64| s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
    (s[s.len() - 1], q(0.99), q(0.5))
}

/// Trials an L-BFGS line search rejected: their Newton steps and cell
/// visits still count.
#[derive(Default)]
struct Rejected {
    trials: usize,
    newton_steps: usize,
}

impl Rejected {
    fn count(&self, newton: &mut NewtonCounts, n_cells: usize) {
        newton.outer_steps += self.newton_steps;
        newton.outer_cell_visits += self.trials * n_cells;
    }
}

enum LbfgsStep {
    /// The accepted point's evaluation (its sweep left the latents at its MAPs).
    Moved(Eval, Rejected),
    /// Neither the quasi-Newton nor the steepest-descent direction gave a
    /// sufficient decrease.
    Stuck(Rejected),
    Cancelled,
}

/// Largest change of any coordinate of θ (unconstrained scale) that a line
/// search starts from: the first step has no curvature to size it, and a
/// quasi-Newton step built from a few pairs can overshoot wildly.
const LBFGS_MAX_MOVE: f64 = 1.0;

/// One L-BFGS step of the globals from `th` (evaluated in `cur`): every
/// trial point is a full-batch sweep, warm-started from the last trial's
/// MAPs (the posterior of each cell's latents is log-concave, so where
/// Newton starts does not change the MAP it finds). A trial with more
/// masked cells than the current point counts as a failure: dropping a
/// cell's ELBO would fake a decrease.
#[allow(clippy::too_many_arguments)]
fn lbfgs_step(
    obj: &Objective<'_>,
    lb: &mut Lbfgs,
    th: &mut Vec<f64>,
    cur: &Eval,
    all: &[usize],
    latents: &mut [f64],
    eta: &mut [f64],
) -> LbfgsStep {
    let mut rejected = Rejected::default();
    loop {
        let mut d = lb.direction(&cur.grad);
        let mut slope = dot(&cur.grad, &d);
        if !(slope < 0.0) {
            lb.reset();
            d = cur.grad.iter().map(|v| -v).collect();
            slope = -dot(&cur.grad, &cur.grad);
        }
        let d_max = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if !(slope < 0.0) || !d_max.is_finite() {
            return LbfgsStep::Stuck(rejected);
        }
        let mut alpha = (LBFGS_MAX_MOVE / d_max).min(1.0);
        let mut ls = LineSearch::new(cur.loss, slope, alpha);
        loop {
            let trial: Vec<f64> = th.iter().zip(&d).map(|(t, d)| t + alpha * d).collect();
            let ev = obj.eval(&trial, all, latents, eta);
            let f = match &ev {
                Some(e) if e.cancelled => return LbfgsStep::Cancelled,
                Some(e) if e.masked <= cur.masked => e.loss,
                _ => f64::NAN,
            };
            match ls.trial(f) {
                Next::Accept => {
                    let ev = ev.expect("an accepted trial was evaluated");
                    let s: Vec<f64> = trial.iter().zip(th.iter()).map(|(a, b)| a - b).collect();
                    let y: Vec<f64> = ev.grad.iter().zip(&cur.grad).map(|(a, b)| a - b).collect();
                    lb.push(s, y);
                    *th = trial;
                    return LbfgsStep::Moved(ev, rejected);
                }
                Next::Try(a) => {
                    alpha = a;
                    rejected.trials += 1;
                    rejected.newton_steps += ev.map_or(0, |e| e.newton_steps);
                }
                Next::Fail => {
                    rejected.trials += 1;
                    rejected.newton_steps += ev.map_or(0, |e| e.newton_steps);
                    break;
                }
            }
        }
        // A failed quasi-Newton search falls back to steepest descent once.
        if lb.is_empty() {
            return LbfgsStep::Stuck(rejected);
        }
        lb.reset();
    }
}

/// The globals the settled rule watches: `μ`, the row norms of `W` (a
/// rotation of the loadings leaves the model unchanged, so `W` itself need
/// not settle), `d`, then `r` or the totals, then the loadings prior's
/// auxiliaries, all on their natural scale.
fn watched(th: &[f64], lay: Layout) -> Vec<f64> {
    let (g, k) = (lay.g, lay.k);
    let mut v = th[..g].to_vec();
    v.extend((0..g).map(|i| {
        th[lay.w() + i * k..lay.w() + (i + 1) * k]
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
    }));
    v.extend(th[lay.d()..lay.aux()].iter().map(|&x| softplus(x)));
    v.extend_from_slice(&th[lay.aux()..]);
    v
}

/// The groups of [`watched`].
fn settle_groups(lay: Layout, n_theta: usize) -> Vec<Group> {
    let g = lay.g;
    let mut out = Vec::new();
    let mut at = 0;
    let mut add = |name: &str, len: usize| {
        if len > 0 {
            out.push(Group {
                name: name.to_string(),
                range: at..at + len,
                robust: false,
                ridge: false,
            });
        }
        at += len;
    };
    add("mu", g);
    add("W", g);
    add("d", g);
    let extra = if lay.has_r { "r" } else { "totals" };
    add(extra, lay.n_extra());
    add("loadings_prior", n_theta - lay.aux());
    out
}

/// Fits PLN or NBLN by Laplace.
pub fn run(
    data: &CountMatrix,
    cfg: &LaplaceConfig,
    progress: &dyn Progress,
    cancel: &dyn Cancel,
) -> Result<LaplaceFit> {
    let n = data.n_cells;
    let k = cfg.latent_dim;
    crate::data::check_batch_size(cfg.batch_size, n)?;
    crate::limits::check_values("n_steps", cfg.n_steps as f64)?;
    let is_lnm = cfg.model == LnModel::Lnm;
    let reference = is_lnm.then(|| crate::models::lognormal::lnm_reference(data));
    if is_lnm {
        if matches!(cfg.capture, Capture::PerCell { .. } | Capture::Frozen(_)) {
            return Err(CoreError::arg(
                "informative_priors_from",
                "the cascade applies to nbln",
            ));
        }
        if cfg.loadings_prior != w_prior::LoadingsPrior::None {
            return Err(CoreError::arg(
                "priors$loadings",
                "loadings priors apply to pln and nbln, not lnm",
            ));
        }
        if cfg.cascade != Cascade::default() {
            return Err(CoreError::arg(
                "informative_priors_from",
                "the cascade applies to nbln",
            ));
        }
    }
    let g = if is_lnm {
        data.n_genes - 1
    } else {
        data.n_genes
    };
    if k == 0 || k >= g {
        return Err(CoreError::arg(
            "latent_dim",
            format!("must be between 1 and the number of genes − 1 ({})", g - 1),
        ));
    }
    // The PCA start needs more cells than factors.
    if k >= n {
        return Err(CoreError::arg(
            "latent_dim",
            format!("({k}) must be smaller than the number of cells ({n})"),
        ));
    }
    if cfg.n_newton_steps == 0 || cfg.n_newton_steps > 200 {
        return Err(CoreError::arg(
            "laplace_config$n_newton_steps",
            "must be between 1 and 200",
        ));
    }
    if !(cfg.damping >= 0.0) {
        return Err(CoreError::arg("laplace_config$damping", "must be >= 0"));
    }
    cfg.optimizer.validate()?;
    cfg.loadings_prior.validate()?;
    let lay = Layout {
        g,
        k,
        has_r: cfg.model == LnModel::Nbln,
        reference,
        low_rank: is_lnm && cfg.lnm_low_rank,
    };
    let ld = lay.lat_dim();
    let cas = &cfg.cascade;
    for (what, v) in [
        ("r", cas.r_prior.as_ref().map(|p| (p.0.len(), p.1.len()))),
        ("mu", cas.mu_prior.as_ref().map(|p| (p.0.len(), p.1.len()))),
    ] {
        if v.is_some_and(|(a, b)| a != g || b != g) {
            return Err(CoreError::arg(
                "informative_priors_from",
                format!("its '{what}' prior does not match the genes"),
            ));
        }
    }
    let (modes, mut eta) = EtaSpec::new(&cfg.capture, data)?;
    let start = match reference {
        Some(rf) => init::lnm_start(data, rf, k, cfg.seed),
        None => init::pln_start(data, k, cfg.seed),
    };
    // θ: μ (frozen > prior loc > data), W (PCA), d = 0.1, r (frozen > prior > moments), aux.
    let mu0 = cas
        .mu_frozen
        .clone()
        .or_else(|| cas.mu_prior.as_ref().map(|p| p.0.clone()))
        .unwrap_or(start.mu);
    let mut th: Vec<f64> = mu0.iter().chain(&start.w).copied().collect();
    th.extend(std::iter::repeat_n(
        softplus_inv(if is_lnm { 0.01 } else { 0.1 }),
        g,
    ));
    if is_lnm {
        let mean_total = data.lib_size.iter().sum::<f64>() / n as f64;
        // With capture, μ_T is the total at full capture, M0.
        let mu_t0 = match cfg.capture {
            Capture::Anchor { ln_m0, .. } => ln_m0.exp(),
            _ => mean_total.max(1.0),
        };
        th.push(softplus_inv(mu_t0));
        th.push(softplus_inv(4.0));
    }
    if lay.has_r {
        let r_loc: Vec<f64> = match (&cas.r_frozen, &cas.r_prior) {
            (Some(r), _) => r.iter().map(|&v| softplus_inv(v.max(1e-8))).collect(),
            (None, Some(p)) => p.0.clone(),
            _ => crate::models::lognormal::mom_dispersion(data)
                .iter()
                .map(|&v| softplus_inv(v))
                .collect(),
        };
        th.extend(r_loc);
    }
    th.extend(cfg.loadings_prior.init_aux(k));
    // Frozen coordinates, restored after every update.
    let mut frozen: Vec<(usize, f64)> = Vec::new();
    if let Some(m) = &cas.mu_frozen {
        frozen.extend(m.iter().enumerate().map(|(i, &v)| (i, v)));
    }
    if lay.has_r && cas.r_frozen.is_some() {
        frozen.extend((0..g).map(|i| (lay.r() + i, th[lay.r() + i])));
    }
    // Low-rank LNM cells start at z = 0 (y = μ).
    let mut latents = if lay.low_rank {
        vec![0.0; n * k]
    } else {
        start.latents
    };
    for (c, e) in eta.iter().enumerate() {
        // LNM's η does not shift the log-ratios.
        if modes.mode[c] != EtaMode::None && !is_lnm {
            latents[c * ld..(c + 1) * ld]
                .iter_mut()
                .for_each(|v| *v += e);
        }
    }
    let mut opt = Optimizer::new(cfg.optimizer.clone(), th.len());
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut sampler = cfg
        .batch_size
        .filter(|&b| b < n)
        .map(|b| BatchSampler::new(n, b));
    if cfg
        .lbfgs_memory
        .is_some_and(|m| m == 0 || m > crate::optim::lbfgs::MAX_MEMORY)
    {
        return Err(CoreError::arg(
            "optimizer_config$memory",
            format!("must be between 1 and {}", crate::optim::lbfgs::MAX_MEMORY),
        ));
    }
    if cfg.lbfgs_memory.is_some() && sampler.is_some() {
        return Err(CoreError::arg(
            "optimizer_config",
            "L-BFGS needs the full batch: its line search compares losses of the same cells",
        ));
    }
    let mut history = Vec::with_capacity(crate::limits::history_capacity(cfg.n_steps));
    let batch = sampler.as_ref().map_or(0, |_| cfg.batch_size.unwrap_or(0));
    let (mut lat_buf, mut eta_buf) = (vec![0.0; batch * ld], vec![0.0; batch]);
    let (mut best, mut best_loss) = ((th.clone(), eta.clone()), f64::INFINITY);
    let mut guards = Guards::default();
    let mut tracker = cfg
        .early_stopping
        .clone()
        .map(crate::optim::early_stop::Tracker::new);
    // (θ, η, step) at the smoothed-best check.
    let mut es_best: Option<(State, usize)> = None;
    let mut early_stopped = false;
    if let Some(s) = &cfg.settle {
        s.validate()?;
    }
    let watch_groups = settle_groups(lay, th.len());
    let n_watch = watch_groups.last().map_or(0, |gr| gr.range.end);
    let mut settle = cfg
        .settle
        .clone()
        .map(|s| SettleTracker::new(s, watch_groups, n_watch));
    let mut stop = StopReason::MaxSteps;
    let mut masked_total = 0;
    let mut newton = NewtonCounts::default();
    let mut aborted = None;
    // μ from the MAPs before the first optimiser step. With the MAPs held
    // fixed, the ELBO depends on μ only through Σ_c (x̂_c − μ)ᵀ Σ⁻¹ (x̂_c − μ),
    // so the mean of the MAPs maximises it exactly; alternating Newton sweeps
    // with that update moves μ from the log(u + 1) start, which sits several
    // units too high for sparse genes (thousands of optimiser steps at the
    // default step size), to where it settles. Not for low-rank LNM (its
    // latents are z, not y) nor for a μ the cascade fixes or puts a prior on.
    let all: Vec<usize> = (0..n).collect();
    if !lay.low_rank && cas.mu_frozen.is_none() && cas.mu_prior.is_none() {
        for _ in 0..cfg.mu_warm_rounds {
            let Some(gl) = Globals::new(&th, lay) else {
                break;
            };
            let sw = sweep(
                cancel,
                data,
                &all,
                &mut latents,
                &mut eta,
                &modes,
                &gl,
                lay,
                NewtonSettings::of(cfg),
                false,
            );
            if sw.cancelled {
                return Err(CoreError::cancelled().with_partial(Partial {
                    step: 0,
                    loss_history: history,
                }));
            }
            newton.warm_steps += sw.newton_steps;
            let mut mean = vec![0.0; g];
            for x in latents.chunks_exact(ld) {
                for (m, v) in mean.iter_mut().zip(x) {
                    *m += v;
                }
            }
            let mut shift: f64 = 0.0;
            for (t, m) in th[..g].iter_mut().zip(&mean) {
                let m = m / n as f64;
                shift = shift.max((m - *t).abs());
                *t = m;
            }
            if shift < MU_WARM_TOL {
                break;
            }
        }
    }
    let obj = Objective {
        data,
        cfg,
        lay,
        modes: &modes,
        cancel,
        frozen,
    };
    let mut lbfgs = cfg.lbfgs_memory.map(Lbfgs::new);
    let report_every = (cfg.n_steps / cfg.n_reports.max(1)).max(1);
    // L-BFGS hands the evaluation at its accepted point to the next step.
    let mut carried: Option<Eval> = None;
    let all: Vec<usize> = (0..n).collect();
    let cancelled_at = |step: usize, history: &[f64]| {
        CoreError::cancelled().with_partial(Partial {
            step,
            loss_history: history.to_vec(),
        })
    };
    for step in 0..cfg.n_steps {
        if cancel.cancelled() {
            return Err(cancelled_at(step, &history));
        }
        let drawn: Vec<usize>;
        let cells: &[usize] = match sampler.as_mut() {
            Some(s) => {
                drawn = s.draw(&mut rng).iter().map(|&c| c as usize).collect();
                &drawn
            }
            None => &all,
        };
        let ev = match carried.take() {
            Some(ev) => Some(ev),
            // Full batch: the sweep works on the latents in place (an aborted
            // step restores the best state anyway); a mini-batch is gathered
            // into buffers kept across steps and scattered back below.
            None if sampler.is_some() => {
                for (i, &c) in cells.iter().enumerate() {
                    lat_buf[i * ld..(i + 1) * ld].copy_from_slice(&latents[c * ld..(c + 1) * ld]);
                    eta_buf[i] = eta[c];
                }
                obj.eval(
                    &th,
                    cells,
                    &mut lat_buf[..cells.len() * ld],
                    &mut eta_buf[..cells.len()],
                )
            }
            None => obj.eval(&th, cells, &mut latents, &mut eta),
        };
        let Some(ev) = ev else {
            aborted = Some(format!(
                "step {}: the prior covariance is not positive definite",
                step + 1
            ));
            break;
        };
        if ev.cancelled {
            return Err(cancelled_at(step, &history));
        }
        masked_total += ev.masked;
        newton.outer_steps += ev.newton_steps;
        newton.outer_cell_visits += cells.len();
        let loss = ev.loss;
        history.push(loss);
        let all_masked = ev.masked == cells.len();
        if let Some(why) = guards
            .check(step, loss, &history)
            .or_else(|| all_masked.then(|| "every cell's ELBO was non-finite".to_string()))
        {
            aborted = Some(format!(
                "step {}: {why} (first loss {:.4e}, best {:.4e}); worst cells by Newton gradient: {}; the best parameters were restored. Lower the step size, raise laplace_config$damping, or reduce latent_dim",
                step + 1,
                guards.init_signed,
                best_loss,
                worst_cells(cells, &ev.norms, 3)
            ));
            break;
        }
        if sampler.is_some() {
            for (i, &c) in cells.iter().enumerate() {
                latents[c * ld..(c + 1) * ld].copy_from_slice(&lat_buf[i * ld..(i + 1) * ld]);
                eta[c] = eta_buf[i];
            }
        }
        if loss < best_loss {
            best_loss = loss;
            copy_state(&mut best, &th, &eta);
        }
        if let Some(tr) = tracker.as_mut() {
            use crate::optim::early_stop::Decision;
            match tr.check(step, &history) {
                Decision::Improved if tr.cfg.restore_best => match es_best.as_mut() {
                    Some((state, at)) => {
                        copy_state(state, &th, &eta);
                        *at = step + 1;
                    }
                    None => es_best = Some(((th.clone(), eta.clone()), step + 1)),
                },
                Decision::Stop => {
                    early_stopped = true;
                    stop = StopReason::EarlyStopping;
                    progress.report(step + 1, cfg.n_steps, loss);
                    break;
                }
                _ => {}
            }
        }
        if let Some(st) = settle.as_mut() {
            let w = watched(&th, lay);
            let scale = || w.iter().map(|v| 0.01 * v.abs().max(1.0)).collect();
            match st.push(step, loss, &w, &scale) {
                Verdict::Continue => {}
                Verdict::Converged => stop = StopReason::Converged,
                Verdict::WeaklyIdentified(g) => stop = StopReason::WeaklyIdentified(g),
            }
            // On the last step the loop ends anyway, after its update.
            if stop != StopReason::MaxSteps && step + 1 < cfg.n_steps {
                early_stopped = true;
                progress.report(step + 1, cfg.n_steps, loss);
                break;
            }
        }
        match lbfgs.as_mut() {
            None => {
                opt.step(&mut th, &ev.grad);
                for &(i, v) in &obj.frozen {
                    th[i] = v;
                }
            }
            Some(lb) => match lbfgs_step(&obj, lb, &mut th, &ev, &all, &mut latents, &mut eta) {
                LbfgsStep::Moved(next, rejected) => {
                    rejected.count(&mut newton, n);
                    carried = Some(next);
                }
                LbfgsStep::Cancelled => return Err(cancelled_at(step + 1, &history)),
                // No step along steepest descent lowers the loss: the
                // globals sit at a minimum to the precision of the MAPs.
                LbfgsStep::Stuck(rejected) => {
                    rejected.count(&mut newton, n);
                    stop = StopReason::LineSearch;
                    early_stopped = true;
                    progress.report(step + 1, cfg.n_steps, loss);
                    break;
                }
            },
        }
        if (step + 1) % report_every == 0 || step + 1 == cfg.n_steps {
            let (mx, p99, med) = norm_summary(&ev.norms);
            let block = match (
                is_lnm,
                matches!(cfg.capture, Capture::None | Capture::Frozen(_)),
            ) {
                (true, true) => "comp",
                (true, false) => "comp, η",
                (false, true) => "x",
                (false, false) => "x, η",
            };
            let per_cell = ev.newton_steps as f64 / cells.len() as f64;
            progress.detail(format!(
                "{block} max/p99/med {mx:.2e}/{p99:.2e}/{med:.2e}, {per_cell:.1} Newton steps/cell"
            ));
            progress.report(step + 1, cfg.n_steps, loss);
        }
    }
    let mut restored_step = None;
    if aborted.is_some() {
        (th, eta) = best;
    } else if let Some((state, at)) = es_best {
        (th, eta) = state;
        restored_step = Some(at);
    }
    // Final sweep over all cells at the final globals, then rescue.
    let gl = Globals::new(&th, lay).ok_or_else(|| {
        CoreError::non_finite(
            history.len(),
            "the prior covariance is not positive definite",
        )
        .with_partial(Partial {
            step: history.len(),
            loss_history: history.clone(),
        })
    })?;
    let n_final = (2 * cfg.n_newton_steps).max(10);
    let final_sweep = sweep(
        cancel,
        data,
        &all,
        &mut latents,
        &mut eta,
        &modes,
        &gl,
        lay,
        NewtonSettings {
            n: n_final,
            ..NewtonSettings::of(cfg)
        },
        false,
    );
    let stopped = |out: &SweepOut| -> Result<()> {
        if out.cancelled {
            return Err(CoreError::cancelled().with_partial(Partial {
                step: history.len(),
                loss_history: history.clone(),
            }));
        }
        Ok(())
    };
    stopped(&final_sweep)?;
    newton.final_steps = final_sweep.newton_steps;
    let mut norms = final_sweep.norms;
    let mut rescued = vec![false; n];
    if cfg.rescue_diverged_cells {
        let bad: Vec<usize> = (0..n)
            .filter(|&c| !(norms[c] <= cfg.newton_tolerance * cfg.rescue_threshold_multiplier))
            .collect();
        if !bad.is_empty() {
            let mut lat: Vec<f64> = bad
                .iter()
                .flat_map(|&c| latents[c * ld..(c + 1) * ld].iter().copied())
                .collect();
            let mut eta_b: Vec<f64> = bad.iter().map(|&c| eta[c]).collect();
            let rescue = sweep(
                cancel,
                data,
                &bad,
                &mut lat,
                &mut eta_b,
                &modes,
                &gl,
                lay,
                NewtonSettings {
                    n: cfg.rescue_n_newton,
                    damping: cfg.damping * cfg.rescue_damping_multiplier,
                    ..NewtonSettings::of(cfg)
                },
                false,
            );
            stopped(&rescue)?;
            newton.rescue_steps = rescue.newton_steps;
            for (i, &c) in bad.iter().enumerate() {
                latents[c * ld..(c + 1) * ld].copy_from_slice(&lat[i * ld..(i + 1) * ld]);
                eta[c] = eta_b[i];
                rescued[c] = true;
                let x = &latents[c * ld..(c + 1) * ld];
                norms[c] = cell_norm(data, c, x, eta[c], modes.mode[c], &gl, lay);
            }
        }
    }
    let has_eta = !matches!(cfg.capture, Capture::None);
    // Low-rank LNM reports the MAP log-ratios y = μ + W ẑ, like the learned mode.
    if lay.low_rank {
        latents = (0..n)
            .flat_map(|c| {
                let z = &latents[c * k..(c + 1) * k];
                (0..g)
                    .map(|i| gl.mu[i] + (0..k).map(|j| gl.w[i * k + j] * z[j]).sum::<f64>())
                    .collect::<Vec<f64>>()
            })
            .collect();
    }
    Ok(LaplaceFit {
        n_genes: data.n_genes,
        latent_dim: k,
        mu: gl.mu.to_vec(),
        w: gl.w.to_vec(),
        d: gl.d.clone(),
        r: gl.r.clone(),
        totals: if is_lnm {
            vec![gl.totals.0, gl.totals.1]
        } else {
            Vec::new()
        },
        reference,
        latents,
        eta: if has_eta { eta } else { Vec::new() },
        loss_history: history,
        grad_norms: norms,
        rescued,
        masked_cells: masked_total,
        newton,
        aborted,
        early_stopped,
        stop,
        drift: settle.map_or_else(Vec::new, |st| st.drifts()),
        restored_step,
        w_prior: cfg.loadings_prior.diagnostics(gl.w, g, k, &th[lay.aux()..]),
        w_prior_aux: th[lay.aux()..].to_vec(),
    })
}
