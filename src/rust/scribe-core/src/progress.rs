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

/// The progress sink and cancel flag of one call, passed by value.
#[derive(Clone, Copy)]
pub struct Ctl<'a> {
    pub progress: &'a dyn Progress,
    pub cancel: &'a dyn Cancel,
}

impl Ctl<'static> {
    /// No reports, never cancelled (tests, internal calls).
    pub fn none() -> Self {
        Ctl {
            progress: &NoProgress,
            cancel: &NeverCancel,
        }
    }
}

impl<'a> Ctl<'a> {
    pub fn new(progress: &'a dyn Progress, cancel: &'a dyn Cancel) -> Self {
        Ctl { progress, cancel }
    }

    /// Progress of `total` units of work done in any order, on any thread.
    pub fn work(self, total: usize) -> Work<'a> {
        Work {
            ctl: self,
            total,
            done: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// Counts finished units of an analysis (draws, cells), reports about 200
/// times over the run, and tells workers when to stop.
pub struct Work<'a> {
    ctl: Ctl<'a>,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
}

impl Work<'_> {
    /// Whether the caller asked to stop (workers skip what is left).
    #[inline]
    pub fn stopped(&self) -> bool {
        self.ctl.cancel.cancelled()
    }

    /// Marks one unit done.
    #[inline]
    pub fn tick(&self) {
        let d = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        // About 200 reports: when d·200/total moves to the next integer.
        let t = self.total.max(1);
        if d * 200 / t != (d - 1) * 200 / t || d == self.total {
            self.ctl.progress.report(d, self.total, f64::NAN);
        }
    }

    /// `value`, unless the caller asked to stop (then the work is incomplete).
    pub fn finish<T>(&self, value: T) -> crate::Result<T> {
        if self.stopped() {
            Err(crate::CoreError::cancelled())
        } else {
            Ok(value)
        }
    }
}
