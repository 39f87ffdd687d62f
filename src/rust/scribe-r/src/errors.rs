//! The one error that crosses the FFI. Every entry point returns
//! `list(value = ...)` or `list(error = list(kind, argument, message, step,
//! loss_history))`; R turns `kind` into the condition class
//! (`R/conditions.R`) and never reads the message to decide it.

use extendr_api::prelude::*;
use scribe_core::{CoreError, ErrorKind};

/// What can go wrong in a call.
#[derive(Debug)]
pub enum GlueError {
    /// An error of the core (or a core-typed error raised while converting).
    Core(CoreError),
    /// R handed us something `R/` should have prevented: a bug, not user input.
    Internal(String),
    /// R raised an error while the engine ran (e.g. `setTimeLimit()`): the
    /// engine was stopped and R's message is passed on.
    R(String),
}

impl From<CoreError> for GlueError {
    fn from(e: CoreError) -> Self {
        GlueError::Core(e)
    }
}

impl From<extendr_api::Error> for GlueError {
    fn from(e: extendr_api::Error) -> Self {
        GlueError::Internal(e.to_string())
    }
}

pub type GResult<T> = std::result::Result<T, GlueError>;

/// An internal error: R passed a malformed object.
pub fn internal(msg: impl Into<String>) -> GlueError {
    GlueError::Internal(msg.into())
}

/// An input error about `arg` (e.g. an unknown choice).
pub fn input(arg: &str, msg: impl Into<String>) -> GlueError {
    GlueError::Core(CoreError::arg(arg, msg))
}

/// The reply to R: `list(value = v)` or `list(error = ...)`.
pub fn respond(r: GResult<Robj>) -> Robj {
    let none = || -> Robj { ().into() };
    match r {
        Ok(v) => list!(value = v).into(),
        Err(e) => {
            let (kind, arg, msg, partial) = match &e {
                GlueError::Core(c) => (
                    c.kind().name(),
                    c.argument().map(str::to_string),
                    c.message(),
                    c.partial().cloned(),
                ),
                GlueError::Internal(m) => (
                    ErrorKind::Core.name(),
                    None,
                    format!("internal error: {m}"),
                    None,
                ),
                GlueError::R(m) => ("r", None, m.clone(), None),
            };
            let (step, losses): (Robj, Robj) = match partial {
                Some(p) => ((p.step as f64).into(), p.loss_history.into()),
                None => (none(), none()),
            };
            list!(
                error = list!(
                    kind = kind,
                    argument = arg.map_or_else(none, |a| a.into()),
                    message = msg,
                    step = step,
                    loss_history = losses
                )
            )
            .into()
        }
    }
}
