//! How engines talk to the outside world while they run: a progress sink and a
//! cancellation flag. The core never prints; the R glue implements both traits.

use std::sync::atomic::{AtomicBool, Ordering};

/// Receives progress reports from a running engine. Called from the engine's thread.
pub trait Progress: Sync {
    /// `step` steps of `total` are done; `loss` is the recent mean loss (NaN if unknown).
    fn report(&self, step: usize, total: usize, loss: f64);
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
