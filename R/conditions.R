# Errors that name the argument, with classes callers can catch.

abort_input <- function(message, ..., .envir = parent.frame()) {
  cli::cli_abort(message, ..., class = "scribeR_input_error", .envir = .envir)
}

abort_unsupported <- function(message, ..., .envir = parent.frame()) {
  cli::cli_abort(message, ..., class = c("scribeR_unsupported", "scribeR_input_error"), .envir = .envir)
}

# Runs a call into the Rust core and turns its errors into classed R conditions.
call_core <- function(expr) {
  tryCatch(expr, error = function(e) {
    msg <- conditionMessage(e)
    if (grepl("interrupted by user", msg, fixed = TRUE)) {
      cli::cli_abort("The fit was interrupted by the user.", class = "scribeR_interrupt", call = NULL)
    }
    if (grepl("diverged", msg, fixed = TRUE)) {
      cli::cli_abort(c("The fit did not converge to finite values.", "x" = "{msg}"),
                     class = "scribeR_nonfinite", call = NULL)
    }
    cli::cli_abort(c("The numerical core reported an error.", "x" = "{msg}"),
                   class = "scribeR_core_error", call = NULL)
  })
}

# `arg` must be a single number satisfying `ok`; `what` describes the requirement.
check_number <- function(x, arg, what, ok = function(v) TRUE, allow_null = FALSE) {
  if (is.null(x) && allow_null) return(invisible(NULL))
  if (!is.numeric(x) || length(x) != 1L || is.na(x) || !ok(x)) {
    shown <- if (is.null(x)) "NULL" else paste(format(x), collapse = ", ")
    abort_input("{.arg {arg}} must be {what}, not {shown}.")
  }
  invisible(x)
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
    shown <- if (is.character(x)) paste0('"', x, '"', collapse = ", ") else format(x)
    abort_input(c("{.arg {arg}} must be one of {.val {choices}}.", "x" = "You supplied {shown}."))
  }
  x
}
