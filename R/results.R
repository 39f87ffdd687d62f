#' Results of a scribeR fit
#'
#' `ScribeResults` is the virtual parent of every engine's results;
#' `ScribeSVIResults` holds a variational fit. Both are plain R data (no
#' external pointers), so `saveRDS()`/`readRDS()` round-trip. Use the
#' accessors rather than slots: [get_map()], [get_posterior_samples()],
#' [loss_history()], [add_scribe_fit()].
#'
#' @slot model List: `model`, `parameterization`, `unconstrained`,
#'   `positive_transform` and the user's `priors`.
#' @slot priors List: the prior family and hyper-parameters of every sampled site.
#' @slot gene_names,cell_names Names of the genes and cells that were fitted.
#' @slot dropped_cells Names of cells removed by `drop_empty = TRUE`.
#' @slot seed The seed of the fit.
#' @slot params List of guide blocks (`loc`, `scale`, `link`, `kind`) per site:
#'   `theta = link(x)`, `x ~ Normal(loc, scale)`.
#' @slot loss_history Negative ELBO per step (`NaN` where an update was skipped).
#' @slot config List of the inference settings.
#' @slot diagnostics List: `early_stopped`, `best_step`, `best_loss`,
#'   `restored_best`, `elapsed` (seconds), `num_threads`.
#' @name ScribeSVIResults-class
#' @aliases ScribeResults-class
#' @exportClass ScribeResults ScribeSVIResults
setClass("ScribeResults", representation("VIRTUAL",
  model = "list", priors = "list", gene_names = "character", cell_names = "character",
  dropped_cells = "character", seed = "numeric"
))

#' @rdname ScribeSVIResults-class
setClass("ScribeSVIResults", contains = "ScribeResults", representation(
  params = "list", loss_history = "numeric", config = "list", diagnostics = "list"
))

new_svi_results <- function(res, counts, model_spec, svi, elapsed, dropped, num_threads) {
  genes <- rownames(counts)
  cells <- colnames(counts)
  if (is.null(genes)) genes <- paste0("gene", seq_len(nrow(counts)))
  if (is.null(cells)) cells <- paste0("cell", seq_len(ncol(counts)))
  new("ScribeSVIResults",
    model = model_spec, priors = res$priors, gene_names = genes, cell_names = cells,
    dropped_cells = dropped, seed = svi$seed, params = res$params,
    loss_history = res$loss_history, config = svi,
    diagnostics = list(
      early_stopped = res$early_stopped, best_step = res$best_step, best_loss = res$best_loss,
      restored_best = res$restored_best, elapsed = elapsed, num_threads = num_threads
    )
  )
}

engine_label <- function(object) {
  if (is(object, "ScribeSVIResults")) "SVI, mean-field guide" else class(object)[1]
}

#' @rdname ScribeSVIResults-class
#' @param object A results object.
#' @export
setMethod("show", "ScribeSVIResults", function(object) {
  m <- object@model
  losses <- object@loss_history
  tail_l <- utils::tail(losses[is.finite(losses)], 100L)
  d <- object@diagnostics
  cat(sprintf("<ScribeSVIResults> %s%s (%s%s), %s\n", m$model,
              if (!is.null(m$n_components)) sprintf(" mixture of %d components", as.integer(m$n_components)) else "",
              m$parameterization, if (isTRUE(m$unconstrained)) ", unconstrained" else "", engine_label(object)))
  cat(sprintf("  data:   %d genes x %d cells%s\n", length(object@gene_names), length(object@cell_names),
              if (length(object@dropped_cells)) sprintf(" (%d empty cells dropped)", length(object@dropped_cells)) else ""))
  bs <- object@config$batch_size
  cat(sprintf("  steps:  %d%s, %s, %.1f s\n", length(losses),
              if (isTRUE(d$early_stopped)) " (stopped early)" else "",
              if (is.null(bs)) "full batch" else sprintf("batch size %d", as.integer(bs)), d$elapsed))
  cat(sprintf("  loss:   %s (mean of the last %d steps)%s\n", format(mean(tail_l), digits = 7), length(tail_l),
              if (isTRUE(d$restored_best)) sprintf("; best parameters restored from step %d", as.integer(d$best_step)) else ""))
  sites <- vapply(names(object@params), function(n) {
    b <- object@params[[n]]
    what <- switch(b$kind, gene = "genes", cell = "cells", scalar = "scalar")
    if (n == "mixing_weights") what <- sprintf("%d components", length(b$loc) + 1L)
    else if (!is.null(b$n_comp) && b$n_comp > 1) what <- sprintf("%s x %d components", what, as.integer(b$n_comp))
    sprintf("%s (%s)", n, what)
  }, character(1))
  cat(sprintf("  params: %s\n", paste(sites, collapse = ", ")))
  cat(sprintf("  seed:   %s\n", format(object@seed, scientific = FALSE)))
  invisible(object)
})

#' Accessors of fitted models
#'
#' `get_map()` returns point estimates: the mode of each parameter's
#' variational marginal (for log-normal guides `exp(loc - scale^2)`; for
#' logit- and softplus-normal guides the mode is found numerically), plus the
#' derived quantities `r`, `mu`, `p`, `phi` (and for capture models
#' `p_capture` and the identified per-cell success probability
#' `p_hat = p nu / (1 - p (1 - nu))`) computed from those modes.
#' `get_posterior_samples()` draws from the variational posterior and derives
#' the same quantities per draw. `loss_history()` is the per-step negative ELBO.
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

.site_order <- c("r", "mu", "p", "phi", "gate", "mixing_weights", "p_capture", "phi_capture", "eta_capture", "p_hat")

# Turns the core's flat site values (draw fastest, then element, then
# component) into named vectors (MAP) or arrays (draws): `draws x K x genes`
# for component-specific gene parameters, `K x genes` for their MAP, and so on.
name_sites <- function(object, sites, draws) {
  sites <- sites[intersect(.site_order, names(sites))]
  comps <- function(k) paste0("component", seq_len(k))
  lapply(stats::setNames(names(sites), names(sites)), function(n) {
    s <- sites[[n]]
    n_draws <- s$shape[1]; len <- s$shape[2]; k <- s$shape[3]
    labels <- switch(s$kind, gene = object@gene_names, cell = object@cell_names, scalar = NULL)
    if (n == "mixing_weights") labels <- NULL
    v <- s$values
    if (!draws) {
      if (k == 1L) return(stats::setNames(v, labels))
      if (len == 1L) return(stats::setNames(v, comps(k)))
      return(t(matrix(v, nrow = len, ncol = k, dimnames = list(labels, comps(k)))))
    }
    if (k == 1L && len == 1L) return(v)
    if (k == 1L) return(matrix(v, nrow = n_draws, dimnames = list(NULL, labels)))
    if (len == 1L) return(matrix(v, nrow = n_draws, dimnames = list(NULL, comps(k))))
    aperm(array(v, dim = c(n_draws, len, k), dimnames = list(NULL, labels, comps(k))), c(1L, 3L, 2L))
  })
}

#' @rdname accessors
#' @export
setMethod("get_map", "ScribeSVIResults", function(object, ...) {
  sites <- call_core(rs_nb_sites(object@model, object@params, 0L, 0))
  name_sites(object, sites, draws = FALSE)
})

#' @rdname accessors
#' @export
setMethod("get_posterior_samples", "ScribeSVIResults", function(object, n_samples = 100L, seed = NULL, ...) {
  check_number(n_samples, "n_samples", "a whole number >= 1", function(v) v >= 1 && v == round(v))
  seed <- resolve_seed(seed)
  sites <- call_core(rs_nb_sites(object@model, object@params, as.integer(n_samples), seed))
  name_sites(object, sites, draws = TRUE)
})

#' @rdname accessors
#' @export
setMethod("loss_history", "ScribeSVIResults", function(object, ...) object@loss_history)
