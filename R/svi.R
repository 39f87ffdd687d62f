#' @include results.R
NULL

# SVI fits of the NB-family models: the engine function of the engine table
# (R/fit.R) and the results class. The optimisation runs in the core
# (scribe-core/src/svi); the guide's parameters come back as named fields per
# site (mean-field: `loc`, `scale`; low-rank adds `group` and `factor`),
# which only the core interprets.

fit_svi <- function(counts, dropped, model, a, shared) {
  model_spec <- nb_model_spec(model, a, ncol(counts))
  svi <- list(
    n_steps = as.numeric(a$n_steps), batch_size = if (is.null(a$batch_size)) NULL else as.numeric(a$batch_size),
    optimizer_config = resolve_optimizer(a$optimizer_config), stable_update = a$stable_update,
    restore_best = a$restore_best, seed = shared$seed
  )
  guide <- resolve_guide(a, model, model_spec$parameterization)
  stopping <- resolve_early_stopping(a$early_stopping)
  # A flow learns the posterior's shape after its marginals have settled, by
  # ELBO gains too small for the default rule's loss test: run it longer.
  if (!is.null(guide$guide_flow) && is.null(a$early_stopping)) stopping$settle$min_steps <- 5000
  svi <- c(svi, stopping, guide)
  t0 <- proc.time()[["elapsed"]]
  res <- call_core(rs_svi_fit(counts_slots(counts), model_spec, svi, shared$verbose, shared$num_threads))
  elapsed <- proc.time()[["elapsed"]] - t0
  nm <- fit_names(counts)
  fit <- new("ScribeSVIResults",
    model = model_spec, priors = res$priors, gene_names = nm$genes, cell_names = nm$cells,
    dropped_cells = dropped, seed = shared$seed, counts_summary = shared$counts_summary,
    layout = layout_frame(res$layout), guide = res$guide,
    params = res$params, loss_history = res$loss_history, config = svi,
    diagnostics = list(
      early_stopped = res$early_stopped, best_step = res$best_step, best_loss = res$best_loss,
      restored_best = res$restored_best, stop = res$stop, elapsed = elapsed, num_threads = shared$num_threads
    )
  )
  check_svi_result(fit)
  fit
}

# A fit whose point estimates are not finite is unusable: an error (with the
# loss history); many skipped updates are worth a warning.
check_svi_result <- function(fit) {
  losses <- fit@loss_history
  skipped <- mean(!is.finite(losses))
  point <- fit_sites(fit, 0)
  bad <- names(point)[!vapply(point, function(s) all(is.finite(s$values)), logical(1))]
  hint <- "Lower {.code optimizer_config$step_size}, or use {.code clipped_adam}."
  if (length(bad)) {
    cli::cli_abort(c("The fit did not converge to finite values.",
                     "x" = "Its estimates of {.val {bad}} are not finite; {round(100 * skipped)}% of the updates had a non-finite loss.",
                     "i" = hint),
                   class = "scribeR_nonfinite", call = NULL, step = length(losses), loss_history = losses)
  }
  if (skipped > 0.1) {
    cli::cli_warn(c("{round(100 * skipped)}% of the updates had a non-finite loss and were skipped.", "i" = hint),
                  class = "scribeR_nonfinite")
  }
}

#' SVI results
#'
#' `ScribeSVIResults` holds a variational fit (`scribe_fit(..., inference_method
#' = "svi")`, the default). It is a [ScribeLayoutResults][ScribeResults-class]
#' object, so [get_map()], [get_posterior_samples()], [log_likelihood()],
#' [denoise_counts()], [normalize_counts()], [posterior_predictive()],
#' [cell_type_probabilities()], `[` and [add_scribe_fit()] work on it.
#'
#' @slot guide The variational family (`"mean_field"`).
#' @slot params List of the guide's parameters per site, as named numeric
#'   fields; for the mean-field guide `loc` and `scale`: `theta = link(x)`,
#'   `x ~ Normal(loc, scale)`, with the site's link in `layout`.
#' @slot loss_history Negative ELBO per step (`NaN` where an update was skipped).
#' @slot config List of the inference settings.
#' @slot diagnostics List: `early_stopped`, `best_step`, `best_loss`,
#'   `restored_best`, `elapsed` (seconds), `num_threads`.
#' @name ScribeSVIResults-class
#' @exportClass ScribeSVIResults
setClass("ScribeSVIResults", contains = "ScribeLayoutResults", representation(
  guide = "character", params = "list", loss_history = "numeric", config = "list", diagnostics = "list"
))

setMethod("core_view", "ScribeSVIResults", function(object) {
  list(model = object@model, layout = layout_list(object), guide = object@guide, params = object@params)
})

#' @rdname ScribeSVIResults-class
#' @param object A results object.
#' @export
setMethod("show", "ScribeSVIResults", function(object) {
  check_format(object, "object")
  m <- object@model
  losses <- object@loss_history
  tail_l <- utils::tail(losses[is.finite(losses)], 100L)
  d <- object@diagnostics
  cat(sprintf("<ScribeSVIResults> %s%s (%s%s), SVI, %s guide\n", m$model,
              if (!is.null(m$n_components)) sprintf(" mixture of %d components", as.integer(m$n_components)) else "",
              m$parameterization, if (isTRUE(m$unconstrained)) ", unconstrained" else "",
              gsub("_", "-", object@guide)))
  cat(sprintf("  data:   %d genes x %d cells%s\n", length(object@gene_names), length(object@cell_names),
              if (length(object@dropped_cells)) sprintf(" (%d empty cells dropped)", length(object@dropped_cells)) else ""))
  bs <- object@config$batch_size
  cat(sprintf("  steps:  %d%s, %s, %.1f s\n", length(losses), stop_summary(object),
              if (is.null(bs)) "full batch" else sprintf("batch size %d", as.integer(bs)), d$elapsed))
  cat(sprintf("  loss:   %s (mean of the last %d steps)%s\n", format(mean(tail_l), digits = 7), length(tail_l),
              if (isTRUE(d$restored_best)) sprintf("; best parameters restored from step %d", as.integer(d$best_step)) else ""))
  cat(datasets_line(m))
  cat(sprintf("  params: %s\n", paste(layout_summary(object@layout, if (is.null(m$dataset_levels)) "components" else "datasets"),
                                    collapse = ", ")))
  cat(sprintf("  seed:   %s\n", format(object@seed, scientific = FALSE)))
  note <- ridge_note(object)
  if (length(note)) cat(sprintf("  note:   %s\n", note))
  invisible(object)
})

# Capture models without a capture prior: the data determine each cell's
# p_hat, not p and its capture apart. The mean-field guide cannot show this
# (its spreads of p and p_capture are those across the ridge, not along it),
# and along the ridge the fit moves too slowly for any stopping rule to see,
# so show() says so whatever the stopping verdict.
ridge_note <- function(object) {
  m <- object@model
  if (!isTRUE(m$model %in% c("nbvcp", "zinbvcp")) || !is.null(object@priors$eta_capture)) return(character())
  if (!is.null(m$hierarchies[[if (isTRUE(m$parameterization == "mean_odds")) "phi" else "p"]])) {
    return(paste("p_g and p_capture are identified only up to a common shift of every logit p_g against",
                 "every log p_capture; priors = list(capture_efficiency = ...) separates them"))
  }
  paste("p and p_capture are identified only through p_hat (get_map(fit)$p_hat);",
        "priors = list(capture_efficiency = ...) separates them")
}

#' @rdname accessors
#' @export
setMethod("get_posterior_samples", "ScribeSVIResults", function(object, n_samples = 100L, seed = NULL, ...) {
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  seed <- resolve_seed(seed)
  name_sites(object, fit_sites(object, n_samples, seed), draws = TRUE)
})

#' @rdname accessors
#' @export
setMethod("loss_history", "ScribeSVIResults", function(object, ...) object@loss_history)
