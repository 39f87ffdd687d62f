//! The one error type of the core. Variants carry the offending value so the R
//! glue can turn them into messages that name the argument, and a [`kind`]
//! that the glue passes across the FFI unchanged, so R picks the condition
//! class from the kind and never from the message text.
//!
//! [`kind`]: CoreError::kind

use thiserror::Error;

/// What a run had done when it stopped early (interrupt or divergence), so
/// that the user keeps what was computed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Partial {
    /// Steps (SVI, Laplace) or draws (MCMC) completed.
    pub step: usize,
    /// The losses recorded so far (empty for engines without a loss).
    pub loss_history: Vec<f64>,
}

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
    NonFinite {
        step: usize,
        msg: String,
        partial: Partial,
    },
    /// The sampler could not start or continue (e.g. no finite initial point).
    #[error("MCMC failed: {0}")]
    Mcmc(String),
    /// The caller asked the engine to stop (e.g. Ctrl-C in R).
    #[error("interrupted by user")]
    Cancelled(Partial),
}

/// The class of an error, as R sees it (`scribeR_input_error`,
/// `scribeR_interrupt`, `scribeR_nonfinite`, `scribeR_core_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Input,
    Interrupt,
    NonFinite,
    Core,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Input => "input",
            ErrorKind::Interrupt => "interrupt",
            ErrorKind::NonFinite => "nonfinite",
            ErrorKind::Core => "core",
        }
    }
}

impl CoreError {
    pub fn arg(arg: &str, msg: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            arg: arg.to_string(),
            msg: msg.into(),
        }
    }

    /// A cancellation that carries no partial state (yet).
    pub fn cancelled() -> Self {
        CoreError::Cancelled(Partial::default())
    }

    /// A divergence at `step` with no partial state (yet).
    pub fn non_finite(step: usize, msg: impl Into<String>) -> Self {
        CoreError::NonFinite {
            step,
            msg: msg.into(),
            partial: Partial::default(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            CoreError::InvalidArgument { .. } | CoreError::InvalidCounts(_) => ErrorKind::Input,
            CoreError::Cancelled(_) => ErrorKind::Interrupt,
            CoreError::NonFinite { .. } => ErrorKind::NonFinite,
            CoreError::Mcmc(_) => ErrorKind::Core,
        }
    }

    /// The argument the error is about, if any.
    pub fn argument(&self) -> Option<&str> {
        match self {
            CoreError::InvalidArgument { arg, .. } => Some(arg),
            CoreError::InvalidCounts(_) => Some("x"),
            _ => None,
        }
    }

    /// The message without the argument prefix (R adds its own).
    pub fn message(&self) -> String {
        match self {
            CoreError::InvalidArgument { msg, .. } | CoreError::InvalidCounts(msg) => msg.clone(),
            other => other.to_string(),
        }
    }

    /// What the run had done, for interrupts and divergences.
    pub fn partial(&self) -> Option<&Partial> {
        match self {
            CoreError::Cancelled(p) | CoreError::NonFinite { partial: p, .. } => Some(p),
            _ => None,
        }
    }

    /// Attaches an engine's partial state to an interrupt or a divergence
    /// (other errors pass through unchanged).
    pub fn with_partial(self, p: Partial) -> Self {
        match self {
            CoreError::Cancelled(_) => CoreError::Cancelled(p),
            CoreError::NonFinite { step, msg, .. } => CoreError::NonFinite {
                step,
                msg,
                partial: p,
            },
            other => other,
        }
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_arguments_and_partial_state() {
        let e = CoreError::arg("batch_size", "too large");
        assert_eq!(e.kind(), ErrorKind::Input);
        assert_eq!(e.argument(), Some("batch_size"));
        assert_eq!(e.message(), "too large");
        assert!(e.partial().is_none());
        let p = Partial {
            step: 3,
            loss_history: vec![1.0, 2.0, 3.0],
        };
        let c = CoreError::cancelled().with_partial(p.clone());
        assert_eq!(c.kind(), ErrorKind::Interrupt);
        assert_eq!(c.partial(), Some(&p));
        let d = CoreError::non_finite(7, "NaN").with_partial(p.clone());
        assert_eq!(d.kind(), ErrorKind::NonFinite);
        assert_eq!(d.partial(), Some(&p));
        assert!(d.message().contains("step 7"));
        assert_eq!(CoreError::Mcmc("x".into()).kind(), ErrorKind::Core);
        assert_eq!(
            CoreError::InvalidCounts("negative".into()).argument(),
            Some("x")
        );
    }
}
