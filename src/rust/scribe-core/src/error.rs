//! The one error type of the core. Variants carry the offending value so the R
//! glue can turn them into messages that name the argument.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// An argument has a value the core cannot use.
    #[error("`{arg}`: {msg}")]
    InvalidArgument { arg: String, msg: String },
    /// The count matrix is malformed (negative, non-integer, non-finite, bad indices).
    #[error("`counts`: {0}")]
    InvalidCounts(String),
    /// The objective became non-finite and could not recover.
    #[error("the fit diverged at step {step}: {msg}")]
    NonFinite { step: usize, msg: String },
    /// The sampler could not start or continue (e.g. no finite initial point).
    #[error("MCMC failed: {0}")]
    Mcmc(String),
    /// The caller asked the engine to stop (e.g. Ctrl-C in R).
    #[error("interrupted by user")]
    Cancelled,
}

impl CoreError {
    pub fn arg(arg: &str, msg: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            arg: arg.to_string(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;
