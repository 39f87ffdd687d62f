#' @include conditions.R
NULL

#' Results of a scribeR fit
#'
#' `ScribeResults` is the virtual parent of every engine's results:
#' [ScribeSVIResults-class], [ScribeMCMCResults-class] and
#' [ScribeLaplaceResults-class]. `ScribeLayoutResults` is the virtual parent
#' of the fits that describe the posterior of a model's whole parameter
#' vector (SVI and MCMC): their `layout` names the blocks of that vector
#' (one row per sampled site: `name`, `kind` (gene, cell, scalar or
#' simplex), `link`, `offset`, `len`, `n_comp`), and every downstream
#' analysis works on them alike. All results are plain R data (no external
#' pointers), so `saveRDS()`/`readRDS()` round-trip; use the accessors
#' rather than slots: [get_map()], [get_posterior_samples()],
#' [loss_history()], [add_scribe_fit()].
#'
#' Each result records the results format it was written in
#' (`format_version`); a fit saved by a version of scribeR with another
#' format gives an error of class `scribeR_format_error` that names both
#' formats, instead of failing somewhere inside.
#'
#' @slot model List: the model and its settings (for NB-family models
#'   `model`, `parameterization`, `unconstrained`, `positive_transform`,
#'   `priors`, and for mixtures `n_components`, `mixture_params`,
#'   `mixing_concentration`).
#' @slot priors List: the prior family and hyper-parameters of every sampled site.
#' @slot gene_names,cell_names Names of the genes and cells that were fitted.
#' @slot dropped_cells Names of cells removed by `drop_empty = TRUE`.
#' @slot seed The seed of the fit.
#' @slot counts_summary List: `cell_totals` and `gene_totals` of the fitted
#'   counts, by which analyses recognise the data the fit belongs to.
#' @slot format_version Integer: the results format.
#' @slot layout (`ScribeLayoutResults`) Data frame: the blocks of the
#'   unconstrained parameter vector.
#' @name ScribeResults-class
#' @aliases ScribeLayoutResults-class
#' @exportClass ScribeResults ScribeLayoutResults
setClass("ScribeResults", representation("VIRTUAL",
  model = "list", priors = "list", gene_names = "character", cell_names = "character",
  dropped_cells = "character", seed = "numeric", counts_summary = "list", format_version = "integer"
), prototype(format_version = 2L))

#' @rdname ScribeResults-class
setClass("ScribeLayoutResults", contains = "ScribeResults", representation("VIRTUAL", layout = "data.frame"))

# The results format this version writes and reads. Format 1 (no slot) kept
# the mean-field layout in the glue; format 2 stores the layout and the guide.
.format_version <- 2L

setValidity("ScribeResults", function(object) {
  if (!identical(object@format_version, .format_version)) {
    return(sprintf("results format %s, expected %s", format(object@format_version), .format_version))
  }
  TRUE
})

# Stops with a clear error when `object` was written in another results format.
check_format <- function(object, arg = "fit") {
  if (!is(object, "ScribeResults")) abort_input("{.arg {arg}} must be a scribeR results object.")
  v <- if (methods::.hasSlot(object, "format_version")) object@format_version else 1L
  if (!identical(as.integer(v), .format_version)) {
    cli::cli_abort(c(
      "{.arg {arg}} was saved in scribeR results format {v}; this version of scribeR reads format {(.format_version)}.",
      "i" = "Refit the model with this version (the counts and the {.fn scribe_fit} call are all it takes)."
    ), class = c("scribeR_format_error", "scribeR_input_error"), call = NULL)
  }
  invisible(object)
}

#' @rdname ScribeResults-class
#' @param object A results object.
#' @export
setMethod("show", "ScribeResults", function(object) {
  check_format(object, "object")
  cat(sprintf("<%s> %s\n", class(object)[1], object@model$model))
  invisible(object)
})

# What the core reads of a fit: list(model, layout, guide, params) for SVI,
# list(model, layout, draws) for MCMC.
setGeneric("core_view", function(object) standardGeneric("core_view"))

layout_list <- function(object) as.list(object@layout)

# The layout the core returns, as a data frame.
layout_frame <- function(l) {
  data.frame(name = l$name, kind = l$kind, link = l$link, offset = l$offset, len = l$len,
             n_comp = l$n_comp, stringsAsFactors = FALSE)
}

# Why and when a fit stopped, for show(): " (converged: ...)".
stop_summary <- function(object) {
  d <- object@diagnostics
  st <- d$stop
  reason <- if (is.null(st)) if (isTRUE(d$early_stopped)) "early_stopping" else "n_steps" else st$reason
  settled_on <- !is.null(object@config$settle)
  switch(reason,
    converged = " (converged: the loss and every parameter settled)",
    weakly_identified = sprintf(" (stopped: the loss settled while %s kept drifting: weakly identified)",
                                paste(st$drifting, collapse = ", ")),
    early_stopping = " (stopped early by the original rule)",
    line_search = " (converged: no step along the quasi-Newton direction or the gradient lowers the loss)",
    n_steps = if (settled_on) " (n_steps reached before the loss and parameters settled)" else "",
    ""
  )
}

# "  datasets: 2 by batch (A, B)" for show() of a dataset_key fit ("" otherwise).
datasets_line <- function(model) {
  lv <- model$dataset_levels
  if (is.null(lv)) return("")
  sprintf("  datasets: %d by %s (%s%s)\n", length(lv), model$dataset_key, paste(utils::head(lv, 6L), collapse = ", "),
          if (length(lv) > 6L) ", ..." else "")
}

# "name (genes)" per site, for show().
layout_summary <- function(layout, rows = "components") {
  vapply(seq_len(nrow(layout)), function(i) {
    b <- layout[i, ]
    what <- switch(b$kind, gene = "genes", cell = "cells", scalar = "scalar",
                   simplex = sprintf("%d components", as.integer(b$n_comp)))
    if (b$kind != "simplex" && b$n_comp > 1) what <- sprintf("%s x %d %s", what, as.integer(b$n_comp), rows)
    sprintf("%s (%s)", b$name, what)
  }, character(1))
}

#' Accessors of fitted models
#'
#' `get_map()` returns point estimates: for SVI fits the mode of each
#' parameter's variational marginal (for log-normal guides `exp(loc -
#' scale^2)`; for logit- and softplus-normal guides the mode is found
#' numerically), for MCMC fits the posterior means, plus the derived
#' quantities `r`, `mu`, `p`, `phi` (and for capture models `p_capture` and
#' the identified per-cell success probability `p_hat = p nu / (1 - p (1 -
#' nu))`) computed from those estimates. `get_posterior_samples()` draws from
#' the variational posterior (or returns MCMC draws) and derives the same
#' quantities per draw. `loss_history()` is the per-step loss.
#'
#' @param object A results object.
#' @param n_samples Number of draws.
#' @param seed Seed of the draws (`NULL`: from R's RNG).
#' @param ... Unused.
#' @return `get_map()`: a named list of numeric vectors named by gene or cell
#'   (scalars unnamed); for mixtures, component-specific gene parameters are
#'   `K x genes` matrices, component-specific scalars and `mixing_weights`
#'   length-K vectors (the MAP of the mixing weights is the softmax of the
#'   guide's location). `get_posterior_samples()`: a named list of
#'   `n_samples x genes` or `n_samples x cells` matrices, length-`n_samples`
#'   vectors for scalars, and `n_samples x K x genes` arrays for
#'   component-specific parameters. `loss_history()`: numeric vector.
#' @examples
#' counts <- scribe_example_data()
#' fit <- scribe_fit(counts, model = "nbdm", n_steps = 200, seed = 1, verbose = FALSE,
#'                   optimizer_config = list(name = "adam", step_size = 0.01))
#' str(get_map(fit)[c("p", "phi")])
#' draws <- get_posterior_samples(fit, n_samples = 50, seed = 2)
#' dim(draws$r)
#' plot(loss_history(fit), type = "l")
#' @name accessors
NULL

#' @rdname accessors
#' @export
setGeneric("get_map", function(object, ...) standardGeneric("get_map"))

#' @rdname accessors
#' @export
setGeneric("get_posterior_samples", function(object, ...) standardGeneric("get_posterior_samples"))

#' @rdname accessors
#' @export
setGeneric("loss_history", function(object, ...) standardGeneric("loss_history"))

.site_order <- c("r", "mu", "p", "phi", "gate", "mixing_weights", "p_capture", "phi_capture", "eta_capture", "p_hat",
                 "logit_p_loc", "logit_p_scale", "log_phi_loc", "log_phi_scale", "logit_gate_loc", "logit_gate_scale",
                 "log_mu_loc", "log_mu_scale", "log_r_loc", "log_r_scale", "log_mu_dataset_loc", "log_mu_dataset_scale",
                 "log_r_dataset_loc", "log_r_dataset_scale", "logit_p_dataset_loc", "logit_p_dataset_scale",
                 "log_phi_dataset_loc", "log_phi_dataset_scale", "bnb_concentration",
                 "bnb_omega_hyper_loc", "bnb_omega_hyper_scale")

# Turns the core's flat site values (draw fastest, then element, then
# component) into named vectors (MAP) or arrays (draws): `draws x K x genes`
# for component-specific gene parameters, `K x genes` for their MAP, and so on.
name_sites <- function(object, sites, draws) {
  # Known sites first, then any others (hierarchy scales) in the core's order.
  sites <- sites[c(intersect(.site_order, names(sites)), setdiff(names(sites), .site_order))]
  # Dataset rows are named after the datasets, mixture components by number.
  levels <- object@model$dataset_levels
  comps <- function(k) if (length(levels) == k) levels else paste0("component", seq_len(k))
  lapply(stats::setNames(names(sites), names(sites)), function(n) {
    s <- sites[[n]]
    n_draws <- s$shape[1]; len <- s$shape[2]; k <- s$shape[3]
    labels <- switch(s$kind, gene = object@gene_names, cell = object@cell_names, NULL)
    v <- s$values
    if (s$kind == "simplex") {
      if (!draws) return(stats::setNames(v, comps(k)))
      return(matrix(v, nrow = n_draws, dimnames = list(NULL, comps(k))))
    }
    # A scalar with components is a vector over components; a gene or cell
    # site keeps its gene/cell axis even when it has a single gene.
    per_item <- s$kind != "scalar"
    if (!draws) {
      if (k == 1L) return(stats::setNames(v, labels))
      if (len == 1L && !per_item) return(stats::setNames(v, comps(k)))
      return(t(matrix(v, nrow = len, ncol = k, dimnames = list(labels, comps(k)))))
    }
    if (k == 1L && len == 1L && !per_item) return(v)
    if (k == 1L) return(matrix(v, nrow = n_draws, dimnames = list(NULL, labels)))
    if (len == 1L && !per_item) return(matrix(v, nrow = n_draws, dimnames = list(NULL, comps(k))))
    aperm(array(v, dim = c(n_draws, len, k), dimnames = list(NULL, labels, comps(k))), c(1L, 3L, 2L))
  })
}

# Sites of a layout fit: its point summary (n_draws = 0) or draws.
fit_sites <- function(object, n_draws, seed = 0) {
  check_format(object, "object")
  call_core(rs_fit_sites(core_view(object), as.numeric(n_draws), as.numeric(seed), n_draws > 0 && analysis_verbose(),
                         resolve_threads(getOption("scribeR.num_threads", 1L))))
}

#' @rdname accessors
#' @export
setMethod("get_map", "ScribeLayoutResults", function(object, ...) {
  name_sites(object, fit_sites(object, 0), draws = FALSE)
})
