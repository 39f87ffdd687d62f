#' @include results.R
NULL

# Bayesian model comparison from log-likelihood matrices: PSIS-LOO and
# stacking through the loo package (its PSIS truncates weights relative to
# their maximum, as it should), WAIC and per-gene comparisons in the core.

# Whether a fit has latent variables per cell, which make cell-level
# leave-one-out ill-posed (the left-out cell's latent is informed by that
# cell alone).
has_cell_latents <- function(fit) {
  is(fit, "ScribeLaplaceResults") || is(fit, "ScribeVAEResults") || isTRUE(fit@model$model %in% c("nbvcp", "zinbvcp"))
}

# `n_samples x n` log-likelihood draws of a fit; MCMC fits use every kept
# draw, in chain order, so that loo can account for autocorrelation.
loglik_draws <- function(fit, x, by, n_samples, seed, assay) {
  if (is(fit, "ScribeMCMCResults")) n_samples <- n_kept_of(fit)
  log_likelihood(fit, x, by = by, n_samples = n_samples, seed = seed, assay = assay)
}

# Relative efficiency of each observation's draws: 1 for independent draws
# (SVI), loo's estimate from the chains for MCMC. exp() of a column shifted by
# its maximum has the same effective sample size and does not underflow.
relative_eff_of <- function(fit, l) {
  if (!is(fit, "ScribeMCMCResults")) return(rep(1, ncol(l)))
  n_ch <- n_chains_of(fit)
  shifted <- exp(sweep(l, 2, apply(l, 2, max)))
  loo::relative_eff(shifted, chain_id = rep(seq_len(n_ch), each = nrow(l) %/% n_ch))
}

# Stacking weights of pointwise elpd columns. When one model is at least as
# good on every observation, sum_k w_k exp(elpd_ik) <= exp(elpd_i,best) for
# every w, so stacking gives it all the weight; loo's constrained optimiser
# fails on that boundary optimum ("initial value in 'vmmin' is not finite"),
# so it is answered directly. Shifting each row by its maximum leaves the
# optimum unchanged and keeps exp() from underflowing (per-gene values are in
# the thousands).
stacking_of <- function(point) {
  row_max <- apply(point, 1, max)
  dominant <- which(apply(point, 2, function(col) all(col >= row_max)))
  if (length(dominant)) return(as.numeric(seq_len(ncol(point)) == dominant[1]))
  as.numeric(loo::stacking_weights(point - row_max))
}

#' Compare fitted models by their expected predictive accuracy
#'
#' Each fit's pointwise log-likelihood matrix (`n_samples` posterior draws x
#' observations) gives PSIS-LOO ([loo::loo()], with its Pareto-k
#' diagnostics), WAIC, and the stacking and pseudo-BMA weights of
#' [loo::stacking_weights()] and [loo::pseudobma_weights()]. Models are
#' ranked by `elpd_loo`; `elpd_diff` and `se_diff` compare each with the best
#' (the standard error of the summed pointwise differences).
#'
#' With `by = "cell"` the observations are cells. Models with latent
#' variables per cell (capture models `nbvcp`/`zinbvcp`, Laplace fits) make
#' that ill-posed: the left-out cell's own latent is informed by that cell
#' alone. Then `by = "cell"` is an error of class `scribeR_unsupported`, and
#' `by = "gene"` compares the per-gene log-likelihoods (summed over cells),
#' treating genes as the exchangeable observations; [gene_level_comparison()]
#' shows which genes favour which model.
#'
#' Draws of SVI fits are independent (relative efficiency 1); MCMC fits use
#' all their kept draws, whose relative efficiencies `loo::relative_eff()`
#' estimates from the chains.
#'
#' @param fits A named list of two or more fits of the same data.
#' @param x The counts the models were fitted to.
#' @param by `"cell"` or `"gene"`.
#' @param n_samples Posterior draws per SVI model (MCMC fits use all theirs).
#' @param seed Seed of the draws.
#' @param assay Assay of `x`, as in [scribe_fit()].
#' @return An object of class `scribe_model_comparison`: a list with `table`
#'   (one row per model: `model`, `elpd_loo`, `se_elpd_loo`, `p_loo`,
#'   `looic`, `elpd_diff`, `se_diff`, `elpd_waic`, `p_waic`, `waic`,
#'   `weight_stacking`, `weight_pseudo_bma`, `n_bad_k` (Pareto k > 0.7)),
#'   `loo` (the loo objects), `pointwise` (observations x models elpd_loo),
#'   and `by`.
#' @examples
#' sim <- scribe_simulate("zinb", n_genes = 30, n_cells = 200, seed = 1)
#' f1 <- scribe_fit(sim$counts, model = "nbdm", n_steps = 400, seed = 1, verbose = FALSE)
#' f2 <- scribe_fit(sim$counts, model = "zinb", n_steps = 400, seed = 1, verbose = FALSE)
#' compare_models(list(nbdm = f1, zinb = f2), sim$counts, n_samples = 100, seed = 2)
#' @export
compare_models <- function(fits, x, by = c("cell", "gene"), n_samples = 200L, seed = NULL, assay = NULL) {
  by <- match_choice(by[1], c("cell", "gene"), "by")
  if (!is.list(fits) || length(fits) < 2L || is.null(names(fits)) || any(names(fits) == "") ||
      anyDuplicated(names(fits))) {
    abort_input("{.arg fits} must be a named list of two or more fits, e.g. {.code list(nbdm = f1, nbvcp = f2)}.")
  }
  for (nm in names(fits)) check_format(fits[[nm]], sprintf("fits$%s", nm))
  check_number(n_samples, "n_samples", "a whole number of at least 2", function(v) v >= 2 && v == round(v) && v <= 1e7)
  latent <- names(fits)[vapply(fits, has_cell_latents, logical(1))]
  if (by == "cell" && length(latent)) {
    abort_unsupported(c(
      "Cell-level leave-one-out is ill-posed for models with per-cell latent variables ({.val {latent}}).",
      "i" = "Compare by gene instead: {.code compare_models(fits, x, by = \"gene\")}, or per gene with {.fn gene_level_comparison}."
    ))
  }
  seed <- resolve_seed(seed)
  ll <- lapply(fits, loglik_draws, x = x, by = by, n_samples = n_samples, seed = seed, assay = assay)
  n_obs <- vapply(ll, ncol, integer(1))
  if (length(unique(n_obs)) != 1L) abort_input("The fits in {.arg fits} were not fitted to the same {by}s.")
  loos <- lapply(names(fits), function(nm) {
    l <- ll[[nm]]
    suppressWarnings(loo::loo(l, r_eff = relative_eff_of(fits[[nm]], l)))
  })
  names(loos) <- names(fits)
  waics <- lapply(ll, function(l) call_core(rs_waic(l, nrow(l))))
  point <- vapply(loos, function(o) o$pointwise[, "elpd_loo"], numeric(n_obs[1]))
  point <- matrix(point, ncol = length(fits), dimnames = list(colnames(ll[[1]]), names(fits)))
  elpd <- colSums(point)
  best <- which.max(elpd)
  diffs <- point - point[, best]
  se_diff <- apply(diffs, 2, function(d) sqrt(length(d) * stats::var(d)))
  stack <- stacking_of(point)
  pbma <- as.numeric(loo::pseudobma_weights(point, BB = FALSE))
  tab <- data.frame(
    model = names(fits),
    elpd_loo = elpd,
    se_elpd_loo = vapply(loos, function(o) o$estimates["elpd_loo", "SE"], numeric(1)),
    p_loo = vapply(loos, function(o) o$estimates["p_loo", "Estimate"], numeric(1)),
    looic = -2 * elpd,
    elpd_diff = colSums(diffs),
    se_diff = se_diff,
    elpd_waic = vapply(waics, function(w) sum(w$elpd), numeric(1)),
    p_waic = vapply(waics, function(w) sum(w$p_waic), numeric(1)),
    waic = vapply(waics, function(w) -2 * sum(w$elpd), numeric(1)),
    weight_stacking = stack,
    weight_pseudo_bma = pbma,
    n_bad_k = vapply(loos, function(o) sum(o$diagnostics$pareto_k > 0.7), integer(1)),
    stringsAsFactors = FALSE, row.names = NULL
  )
  tab <- tab[order(-tab$elpd_loo), , drop = FALSE]
  rownames(tab) <- NULL
  structure(list(table = tab, loo = loos, pointwise = point, by = by, n_samples = as.integer(n_samples)),
            class = "scribe_model_comparison")
}

#' @export
print.scribe_model_comparison <- function(x, digits = 1, ...) {
  cat(sprintf("<scribe_model_comparison> %d models, %d %ss (PSIS-LOO by loo)\n",
              nrow(x$table), nrow(x$pointwise), x$by))
  t <- x$table
  shown <- data.frame(model = t$model, elpd_loo = round(t$elpd_loo, digits), elpd_diff = round(t$elpd_diff, digits),
                      se_diff = round(t$se_diff, digits), p_loo = round(t$p_loo, digits),
                      elpd_waic = round(t$elpd_waic, digits), stacking = round(t$weight_stacking, 3),
                      pseudo_bma = round(t$weight_pseudo_bma, 3), `k>0.7` = t$n_bad_k, check.names = FALSE)
  print(shown, row.names = FALSE)
  if (any(t$n_bad_k > 0)) {
    cat(sprintf("  %d model(s) have observations with Pareto k > 0.7: their elpd_loo is unreliable (see x$loo).\n",
                sum(t$n_bad_k > 0)))
  }
  invisible(x)
}

#' Which genes favour which model
#'
#' For each gene, the WAIC expected log predictive density of its counts
#' (summed over cells, per posterior draw) under two fits, their difference
#' `elpd_diff = elpd_a - elpd_b`, its posterior sd `elpd_diff_se` (the sd over
#' draws of the difference of the per-gene log-likelihoods: a posterior
#' uncertainty, not a cross-validation standard error) and `z =
#' elpd_diff / elpd_diff_se`. Usable for any pair of fits, including models
#' with per-cell latent variables.
#'
#' @param fit_a,fit_b Two fits of the same data.
#' @param x The counts.
#' @param labels Names of the two fits.
#' @inheritParams compare_models
#' @return A data frame sorted by `|z|`: `gene`, `elpd_a`, `elpd_b`,
#'   `elpd_diff`, `elpd_diff_se`, `z`, `p_waic_a`, `p_waic_b`, `favors`;
#'   attribute `total` is the summed `elpd_diff`.
#' @examples
#' sim <- scribe_simulate("zinb", n_genes = 30, n_cells = 200, seed = 1)
#' f1 <- scribe_fit(sim$counts, model = "nbdm", n_steps = 400, seed = 1, verbose = FALSE)
#' f2 <- scribe_fit(sim$counts, model = "zinb", n_steps = 400, seed = 1, verbose = FALSE)
#' head(gene_level_comparison(f1, f2, sim$counts, labels = c("nbdm", "zinb"), n_samples = 100))
#' @export
gene_level_comparison <- function(fit_a, fit_b, x, labels = c("A", "B"), n_samples = 200L, seed = NULL,
                                  assay = NULL) {
  check_format(fit_a, "fit_a")
  check_format(fit_b, "fit_b")
  if (!is.character(labels) || length(labels) != 2L || anyNA(labels) || labels[1] == labels[2]) {
    abort_input("{.arg labels} must be two different names.")
  }
  check_number(n_samples, "n_samples", "a whole number of at least 2", function(v) v >= 2 && v == round(v) && v <= 1e7)
  if (!identical(fit_a@gene_names, fit_b@gene_names)) abort_input("{.arg fit_a} and {.arg fit_b} must be fitted to the same genes.")
  seed <- resolve_seed(seed)
  la <- loglik_draws(fit_a, x, "gene", n_samples, seed, assay)
  lb <- loglik_draws(fit_b, x, "gene", n_samples, seed, assay)
  wa <- call_core(rs_waic(la, nrow(la)))
  wb <- call_core(rs_waic(lb, nrow(lb)))
  se <- call_core(rs_paired_sd(la, lb, nrow(la)))
  diff <- wa$elpd - wb$elpd
  z <- ifelse(se > 0, diff / se, 0)
  out <- data.frame(gene = colnames(la), elpd_a = wa$elpd, elpd_b = wb$elpd, elpd_diff = diff, elpd_diff_se = se,
                    z = z, p_waic_a = wa$p_waic, p_waic_b = wb$p_waic,
                    favors = ifelse(diff > 0, labels[1], labels[2]), stringsAsFactors = FALSE)
  out <- out[order(-abs(out$z)), , drop = FALSE]
  rownames(out) <- NULL
  attr(out, "total") <- sum(diff)
  out
}
