//! How engines talk to the outside world while they run: a progress sink and a
//! cancellation flag. The core never prints; the R glue implements both traits.

use std::sync::atomic::{AtomicBool, Ordering};

/// Receives progress reports from a running engine. Called from the engine's thread.
pub trait Progress: Sync {
    /// `step` steps of `total` are done; `loss` is the recent mean loss (NaN if unknown).
    fn report(&self, step: usize, total: usize, loss: f64);
    /// Extra engine-specific text shown after the loss (e.g. Newton gradient norms).
    fn detail(&self, _text: String) {}
}

/// Polled by engines between steps; `true` makes them stop with `CoreError::Cancelled`.
pub trait Cancel: Sync {
    fn cancelled(&self) -> bool;
}

/// Progress sink that ignores every report (tests, benches).
pub struct NoProgress;
impl Progress for NoProgress {
    fn report(&self, _: usize, _: usize, _: f64) {}
}

/// A cancel flag that is never raised.
pub struct NeverCancel;
impl Cancel for NeverCancel {
    fn cancelled(&self) -> bool {
        false
    }
}

impl Cancel for AtomicBool {
    fn cancelled(&self) -> bool {
        self.load(Ordering::Relaxed)
    }
}

/// Where one MCMC chain stands, reported after every draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChainStatus {
    pub chain: usize,
    /// Draws done (warmup included) of `total`.
    pub done: usize,
    pub total: usize,
    pub warmup: bool,
    /// Divergent transitions among the kept draws so far.
    pub divergences: usize,
    pub warmup_divergences: usize,
    pub step_size: f64,
}

/// Receives per-chain MCMC progress. Called from the chains' threads.
pub trait ChainProgress: Sync {
    fn chain(&self, status: &ChainStatus);
}

impl ChainProgress for NoProgress {
    fn chain(&self, _: &ChainStatus) {}
}
