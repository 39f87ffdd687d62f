//! The only file that talks to nuts-rs. Its API changes between minor
//! versions, so everything the rest of the crate needs goes through
//! [`sample_chain`]: a log-density with gradient in, draws and per-draw
//! sampler statistics out.

use super::{ChainStatus, ChainTrace, MassMatrix, McmcConfig};
use crate::error::{CoreError, Result};
use nuts_rs::rand::SeedableRng;
use nuts_rs::{
    Chain, CpuLogpFunc, CpuMath, CpuMathError, DiagNutsSettings, HasDims, LogpError,
    LowRankNutsSettings, NutsError, Settings,
};
use std::collections::HashMap;

/// Why a log-density evaluation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    /// Non-finite density or gradient: NUTS treats the step as a divergence.
    #[error("non-finite log-density or gradient")]
    NonFinite,
    /// The user interrupted; stops the chain.
    #[error("cancelled")]
    Cancelled,
}

impl LogpError for TargetError {
    fn is_recoverable(&self) -> bool {
        matches!(self, TargetError::NonFinite)
    }
}

/// A log-density in the sampler's coordinates. `logp` returns `None` when the
/// chain must stop (interrupt); non-finite values are reported as divergences.
pub(crate) trait Target: Send {
    fn dim(&self) -> usize;
    fn logp(&mut self, z: &[f64], grad: &mut [f64]) -> std::result::Result<f64, TargetError>;
}

struct Func<T: Target>(T);

impl<T: Target> HasDims for Func<T> {
    fn dim_sizes(&self) -> HashMap<String, u64> {
        HashMap::from([
            ("unconstrained_parameter".to_string(), self.0.dim() as u64),
            ("dim".to_string(), self.0.dim() as u64),
        ])
    }
}

impl<T: Target> CpuLogpFunc for Func<T> {
    type LogpError = TargetError;
    type FlowParameters = ();
    type ExpandedVector = Vec<f64>;

    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn logp(
        &mut self,
        position: &[f64],
        grad: &mut [f64],
    ) -> std::result::Result<f64, TargetError> {
        let lp = self.0.logp(position, grad)?;
        if lp.is_finite() && grad.iter().all(|g| g.is_finite()) {
            Ok(lp)
        } else {
            Err(TargetError::NonFinite)
        }
    }

    fn expand_vector<R: nuts_rs::rand::Rng + ?Sized>(
        &mut self,
        _rng: &mut R,
        array: &[f64],
    ) -> std::result::Result<Vec<f64>, CpuMathError> {
        Ok(array.to_vec())
    }
}

/// Our settings on top of nuts-rs' defaults (a macro: the two settings types
/// share fields but no trait that exposes them).
macro_rules! configure {
    ($s:expr, $cfg:expr, $chain:expr) => {{
        let mut s = $s;
        s.num_tune = $cfg.n_warmup as u64;
        s.num_draws = $cfg.n_samples as u64;
        s.maxdepth = $cfg.max_tree_depth as u64;
        s.num_chains = $cfg.n_chains;
        s.seed = $cfg.seed ^ $chain;
        s.adapt_options.step_size_settings.target_accept = $cfg.target_accept;
        s
    }};
}

/// Runs one chain from `z0`: `n_warmup` adaptation draws, then `n_samples`
/// kept draws (sampler coordinates). `on_draw` sees every draw's status;
/// returning `false` from it stops the chain with `CoreError::Cancelled`.
#[allow(clippy::field_reassign_with_default)] // nuts-rs settings are built from its defaults
pub(crate) fn sample_chain<T: Target>(
    target: T,
    z0: &[f64],
    cfg: &McmcConfig,
    chain: usize,
    rng_seed: u64,
    on_draw: &mut dyn FnMut(&ChainStatus) -> bool,
) -> Result<ChainTrace> {
    let math = CpuMath::new(Func(target));
    let mut rng = nuts_rs::rand::rngs::ChaCha8Rng::seed_from_u64(rng_seed);
    match cfg.mass_matrix {
        MassMatrix::Diagonal => {
            let s = configure!(DiagNutsSettings::default(), cfg, chain as u64);
            let c = s
                .new_chain(chain as u64, math, &mut rng)
                .map_err(|e| CoreError::Mcmc(format!("invalid sampler settings: {e}")))?;
            drive(c, z0, cfg, chain, on_draw, |st| {
                (st.point.energy, st.point.logp, st.depth)
            })
        }
        MassMatrix::LowRank => {
            let s = configure!(LowRankNutsSettings::default(), cfg, chain as u64);
            let c = s
                .new_chain(chain as u64, math, &mut rng)
                .map_err(|e| CoreError::Mcmc(format!("invalid sampler settings: {e}")))?;
            drive(c, z0, cfg, chain, on_draw, |st| {
                (st.point.energy, st.point.logp, st.depth)
            })
        }
    }
}

fn drive<M: nuts_rs::Math, C: Chain<M>>(
    mut c: C,
    z0: &[f64],
    cfg: &McmcConfig,
    chain: usize,
    on_draw: &mut dyn FnMut(&ChainStatus) -> bool,
    stats_of: impl Fn(&C::Stats) -> (f64, f64, u64),
) -> Result<ChainTrace> {
    let dim = z0.len();
    c.set_position(z0).map_err(|e| init_error(e, chain))?;
    let total = cfg.n_warmup + cfg.n_samples;
    let mut tr = ChainTrace::with_capacity(dim, cfg.n_samples);
    let mut status = ChainStatus {
        chain,
        done: 0,
        total,
        warmup: cfg.n_warmup > 0,
        divergences: 0,
        warmup_divergences: 0,
        step_size: f64::NAN,
    };
    for i in 0..total {
        let (pos, _, stats, prog) = c.expanded_draw().map_err(draw_error)?;
        let warm = i < cfg.n_warmup;
        status.done = i + 1;
        status.warmup = i + 1 < cfg.n_warmup;
        status.step_size = prog.step_size;
        if prog.diverging {
            if warm {
                status.warmup_divergences += 1;
            } else {
                status.divergences += 1;
            }
        }
        tr.n_grad += prog.num_gradients;
        if !warm {
            let (energy, lp, depth) = stats_of(&stats);
            tr.draws.extend_from_slice(&pos);
            tr.diverging.push(prog.diverging);
            tr.n_leapfrog.push(prog.num_steps as u32);
            tr.tree_depth.push(depth as u32);
            tr.step_size.push(prog.step_size);
            tr.energy.push(energy);
            tr.lp.push(lp);
        }
        if !on_draw(&status) {
            return Err(CoreError::cancelled());
        }
    }
    tr.warmup_divergences = status.warmup_divergences;
    Ok(tr)
}

/// Whether nuts-rs stopped because our log-density reported a cancel: the
/// error travels as a boxed `TargetError` inside `NutsError`, so it is found
/// by type, never by its text.
fn is_cancel(e: &anyhow::Error) -> bool {
    let cancel = |t: Option<&TargetError>| matches!(t, Some(TargetError::Cancelled));
    e.chain().any(|c| {
        cancel(c.downcast_ref::<TargetError>())
            || match c.downcast_ref::<NutsError>() {
                Some(NutsError::LogpFailure(b) | NutsError::BadInitGrad(b)) => {
                    cancel(b.downcast_ref::<TargetError>())
                }
                _ => false,
            }
    })
}

fn init_error(e: anyhow::Error, chain: usize) -> CoreError {
    if is_cancel(&e) {
        return CoreError::cancelled();
    }
    CoreError::Mcmc(format!(
        "chain {}: the log-density or its gradient is not finite at the initial point ({e:#})",
        chain + 1
    ))
}

fn draw_error(e: anyhow::Error) -> CoreError {
    if is_cancel(&e) {
        CoreError::cancelled()
    } else {
        CoreError::Mcmc(format!("NUTS stopped: {e:#}"))
    }
}
