//! Runs core work on a worker thread while the R main thread shows progress
//! and watches for interrupts. Rust worker threads never call R; the main
//! thread polls every 100 ms: it prints the latest progress (when `verbose`)
//! and asks R, through `src/interrupt.c`, whether the user pressed Ctrl-C
//! (or R raised an error such as `setTimeLimit()`'s). Either raises the
//! cancel flag; the engine stops at its next check, every Rust value is
//! dropped, and only then does the error reach R.

use crate::errors::{GResult, GlueError};
use extendr_api::prelude::*;
use scribe_core::progress::{Cancel, ChainProgress, ChainStatus, Progress};
use scribe_core::CoreError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

extern "C" {
    // 0: nothing; 1: a user interrupt; 2: R raised an error (message below).
    fn scribeR_interrupt_pending() -> std::os::raw::c_int;
    fn scribeR_interrupt_message() -> *const std::os::raw::c_char;
}

/// Why R wants the work to stop, if it does.
enum Stop {
    Interrupt,
    RError(String),
}

fn poll_r() -> Option<Stop> {
    // SAFETY: both functions run R API calls confined by R_ToplevelExec and
    // are only called here, from the R main thread.
    match unsafe { scribeR_interrupt_pending() } {
        0 => None,
        2 => {
            let msg = unsafe { std::ffi::CStr::from_ptr(scribeR_interrupt_message()) };
            Some(Stop::RError(msg.to_string_lossy().into_owned()))
        }
        _ => Some(Stop::Interrupt),
    }
}

/// A rayon pool of `num_threads` threads (0: all cores).
fn pool(num_threads: i32) -> GResult<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads.max(0) as usize)
        .build()
        .map_err(|e| {
            GlueError::Core(CoreError::arg(
                "num_threads",
                format!("cannot start {num_threads} threads: {e}"),
            ))
        })
}

/// Progress shared between the engine's threads and the R main thread.
#[derive(Default)]
pub struct Shared {
    state: Mutex<Option<(usize, usize, f64)>>,
    detail: Mutex<String>,
    /// MCMC: the latest status of each chain.
    chains: Mutex<Vec<Option<ChainStatus>>>,
    cancel: AtomicBool,
}

impl Progress for Shared {
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

impl ChainProgress for Shared {
    fn chain(&self, st: &ChainStatus) {
        if let Ok(mut v) = self.chains.lock() {
            if v.len() <= st.chain {
                v.resize(st.chain + 1, None);
            }
            v[st.chain] = Some(*st);
        }
    }
}

impl Cancel for Shared {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
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

/// The progress line of a step count, with the loss when there is one.
fn step_line(label: &str, step: usize, total: usize, loss: f64, detail: &str) -> String {
    let width = total.to_string().len();
    let loss = if loss.is_nan() {
        String::new()
    } else {
        format!(" loss {loss:.6e}")
    };
    let sep = if detail.is_empty() { "" } else { ", " };
    format!("\r{label} [{step:>width$}/{total}]{loss}{sep}{detail}   ")
}

/// Runs `work` on a scoped worker thread inside a rayon pool of
/// `num_threads`; the R main thread prints progress (when `verbose`) and
/// raises the cancel flag on an interrupt. A stop requested by R (not the
/// user) comes back as R's own error.
pub fn run<T: Send>(
    label: &str,
    verbose: bool,
    num_threads: i32,
    work: impl FnOnce(&Shared) -> Result<T, CoreError> + Send,
) -> GResult<T> {
    let pool = pool(num_threads)?;
    let shared = Shared::default();
    let mut printed = false;
    let mut stop = None;
    let res = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let sh = &shared;
        let handle = s.spawn(move || {
            let r = pool.install(|| work(sh));
            drop(tx);
            r
        });
        let mut last = None;
        let mut last_chains = Vec::new();
        let mut show = || {
            let chains = shared
                .chains
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if !chains.is_empty() {
                if verbose && chains != last_chains {
                    reprint!("{}", chains_line(label, &chains));
                    printed = true;
                }
                last_chains = chains;
                return;
            }
            let cur = *shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if verbose && cur != last {
                if let Some((step, total, loss)) = cur {
                    let detail = shared.detail.lock().map(|d| d.clone()).unwrap_or_default();
                    reprint!("{}", step_line(label, step, total, loss, &detail));
                    printed = true;
                }
                last = cur;
            }
        };
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            rx.recv_timeout(Duration::from_millis(100))
        {
            show();
            if stop.is_none() {
                stop = poll_r();
                if stop.is_some() {
                    shared.cancel.store(true, Ordering::Relaxed);
                }
            }
        }
        show();
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
            Err(GlueError::Internal(format!(
                "the numerical core panicked: {what}"
            )))
        }
        Ok(Err(e @ CoreError::Cancelled(_))) => match stop {
            Some(Stop::RError(msg)) => Err(GlueError::R(msg)),
            _ => Err(GlueError::Core(e)),
        },
        Ok(r) => r.map_err(GlueError::Core),
    }
}
