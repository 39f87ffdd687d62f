# Errors that name the argument, with classes callers can catch, and the one
# place where errors of the Rust core become R conditions.

abort_input <- function(message, ..., .envir = parent.frame()) {
  cli::cli_abort(message, ..., class = "scribeR_input_error", .envir = .envir)
}

abort_unsupported <- function(message, ..., .envir = parent.frame()) {
  cli::cli_abort(message, ..., class = c("scribeR_unsupported", "scribeR_input_error"), .envir = .envir)
}

# Condition classes by the kind the core reports (src/rust/scribe-r/src/errors.rs).
.core_error_classes <- c(
  input = "scribeR_input_error", interrupt = "scribeR_interrupt", nonfinite = "scribeR_nonfinite",
  core = "scribeR_core_error", r = "scribeR_stopped"
)

#' Conditions raised by scribeR
#'
#' Errors carry a class so that callers can catch them with
#' `tryCatch(..., scribeR_input_error = function(e) ...)`:
#' * `scribeR_input_error`: an argument has a value scribeR cannot use (the
#'   message names it); `scribeR_unsupported` (also an input error) for
#'   combinations that are valid elsewhere but not here, and
#'   `scribeR_format_error` (also an input error) for a fit saved in another
#'   results format.
#' * `scribeR_interrupt`: the user pressed Ctrl-C (Esc) during a fit or an
#'   analysis. The numerical core stops at its next step and releases its
#'   memory; for SVI and Laplace fits the condition carries `step` (steps
#'   done) and `loss_history` (the losses so far).
#' * `scribeR_nonfinite`: a fit's loss or parameters became non-finite and
#'   could not recover; it carries `step` and `loss_history` like an
#'   interrupt.
#' * `scribeR_stopped`: R stopped the computation (e.g. a `setTimeLimit()`
#'   limit was reached); the message is R's.
#' * `scribeR_core_error`: any other error of the numerical core (a bug if
#'   it says "internal").
#' Warnings of class `scribeR_nonconvergence` (Laplace Newton tolerance) and
#' `scribeR_nonfinite` (a Laplace fit stopped by its divergence detector)
#' come with a usable fit.
#' @name scribeR-conditions
#' @examples
#' res <- tryCatch(scribe_fit(matrix(-1, 2, 2)), scribeR_input_error = function(e) conditionMessage(e))
#' res
NULL

# Unwraps a core reply (list(value) or list(error)); any R error of the call
# itself (a failed conversion) becomes a core error too.
call_core <- function(expr) {
  # scribeR's own input errors raised while the arguments are evaluated
  # pass through unchanged; anything else is the core's.
  res <- tryCatch(expr, error = function(e) {
    if (inherits(e, "scribeR_input_error")) stop(e)
    list(error = list(kind = "core", message = conditionMessage(e)))
  })
  if (is.null(res$error)) return(res$value)
  e <- res$error
  kind <- if (e$kind %in% names(.core_error_classes)) e$kind else "core"
  msg <- e$message
  partial <- if (!is.null(e$step)) list(step = e$step, loss_history = e$loss_history)
  more <- if (!is.null(partial)) c("i" = "{partial$step} step{?s} had run; the condition holds {.field step} and {.field loss_history}.")
  switch(kind,
    input = cli::cli_abort(
      c(if (is.null(e$argument)) "{msg}" else "{.arg {e$argument}}: {msg}"),
      class = .core_error_classes[["input"]], call = NULL
    ),
    interrupt = cli::cli_abort(c("The computation was interrupted by the user.", more),
                               class = .core_error_classes[["interrupt"]], call = NULL,
                               step = partial$step, loss_history = partial$loss_history),
    nonfinite = cli::cli_abort(c("The fit did not converge to finite values.", "x" = "{msg}", more),
                               class = .core_error_classes[["nonfinite"]], call = NULL,
                               step = partial$step, loss_history = partial$loss_history),
    r = cli::cli_abort(c("{msg}", "i" = "R stopped the computation in scribeR's numerical core."),
                       class = .core_error_classes[["r"]], call = NULL),
    cli::cli_abort(c("The numerical core reported an error.", "x" = "{msg}"),
                   class = .core_error_classes[["core"]], call = NULL)
  )
}

# `arg` must be a single number satisfying `ok`; `what` describes the requirement.
check_number <- function(x, arg, what, ok = function(v) TRUE, allow_null = FALSE) {
  if (is.null(x) && allow_null) return(invisible(NULL))
  if (!is.numeric(x) || length(x) != 1L || !is.finite(x) || !ok(x)) {
    abort_input("{.arg {arg}} must be {what}, not {describe_value(x)}.")
  }
  invisible(x)
}

# A short description of a bad value for messages: the value itself when it
# is a scalar (strings quoted, so "10" is not mistaken for 10), else its kind.
describe_value <- function(x) {
  if (is.null(x)) return("NULL")
  if (is.atomic(x) && length(x) == 1L) {
    return(if (is.character(x) && !is.na(x)) paste0('"', x, '"') else format(x))
  }
  if (is.atomic(x) && length(x) <= 5L && length(x) > 0L) {
    shown <- if (is.character(x)) paste0('"', x, '"') else format(x)
    return(paste0("c(", paste(shown, collapse = ", "), ")"))
  }
  if (is.atomic(x)) return(paste0("a ", typeof(x), " vector of length ", length(x)))
  paste0("an object of class ", class(x)[1])
}

check_flag <- function(x, arg) {
  if (!is.logical(x) || length(x) != 1L || is.na(x)) {
    abort_input("{.arg {arg}} must be TRUE or FALSE.")
  }
  invisible(x)
}

# match.arg() with a message that names the argument and lists the choices.
match_choice <- function(x, choices, arg) {
  if (!is.character(x) || length(x) != 1L || is.na(x) || !(x %in% choices)) {
    abort_input(c("{.arg {arg}} must be one of {.val {choices}}.", "x" = "You supplied {describe_value(x)}."))
  }
  x
}
