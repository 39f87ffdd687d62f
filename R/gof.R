#' @include analysis.R
NULL

# Goodness of fit per gene: randomized quantile residuals under the full
# observation model and posterior predictive calibration scores, computed
# in the core (posterior/nb/gof.rs).

#' Goodness of fit of a model, gene by gene
#'
#' Randomized quantile residuals: for each count `u` of gene `g` in cell
#' `c`, `q = qnorm(v)` with `v` uniform between `F(u - 1)` and `F(u)`
#' (clipped to `[epsilon, 1 - epsilon]`), where `F` is the fitted predictive
#' CDF of that cell: the NB with the cell's capture-adjusted success
#' probability, the zero-inflation gate and, for mixtures, the mixture over
#' components with the global weights (the original ignores capture and
#' gates). VAE fits of NB-family models read each cell through its own
#' decoded `r` (and gate) and its capture. For the log-normal models (VAE and
#' Laplace fits) `F` is Poisson (PLN) or NB (NBLN) at the cell's rate
#' `exp(x - eta)`, and for LNM the marginal of one gene, `NB(mean mu_T
#' exp(-eta) rho_g, r_T)` (the multinomial share of an NB total); each PPC
#' data set is one draw of every cell's latents. Laplace fits use the mixed
#' predictive: a latent per (cell, gene) sees its own count, so each draw
#' takes the cell's embedding `z` from its posterior given the latents and
#' adds fresh per-gene noise `sqrt(d) e` (their point estimate is `mu + W
#' E[z | MAP]`). The point estimates of log-normal fits leave out the
#' latents' spread, which for PLN is all of its overdispersion: use
#' `n_samples` to judge these models. At the MAP (`n_samples = NULL`) or averaged over `n_samples`
#' posterior draws. Under a correct model the residuals of a gene are
#' standard normal: the scores are their `mean`, `variance`, `tail_excess`
#' (fraction beyond +-2 minus the normal 0.0455) and `ks_distance`
#' (Kolmogorov-Smirnov distance to the standard normal).
#'
#' With `ppc = TRUE`, posterior predictive calibration per gene: the count
#' histogram over cells of each of `n_ppc_samples` predictive data sets gives
#' a central `credible_level` band per count bin; `calibration_failure` is
#' the fraction of the observed histogram's non-empty bins outside their
#' band and `l1_distance` the L1 distance to the median predictive histogram.
#' `well_fit` flags genes with residual variance in (0.5, 1.5) and (when
#' computed) calibration failure at most 0.5.
#'
#' @param fit An SVI, MCMC or VAE fit, or a Laplace fit of a log-normal model.
#' @param x The counts the model was fitted to.
#' @param genes Genes to check (names or indices; `NULL`: all).
#' @param n_samples `NULL` (MAP; for VAE fits every cell at its encoder
#'   mean) or posterior draws for the residuals' CDF.
#' @param residuals Keep the residual matrix (cells x genes) for
#'   [plot_residuals()]; `"auto"` keeps it up to 5 million values.
#' @param ppc Compute the PPC calibration scores.
#' @param n_ppc_samples Posterior predictive data sets for them.
#' @param credible_level Width of the bands, in percent.
#' @param max_bin `NULL` or the largest number of count bins above the
#'   smallest predictive count.
#' @param epsilon Clipping of `v`.
#' @param seed Seed (`NULL`: from R's RNG).
#' @param assay Assay of `x`, as in [scribe_fit()].
#' @return An object of class `scribe_gof`: a list with `scores` (one row
#'   per gene: `gene`, `mean`, `variance`, `tail_excess`, `ks_distance`, and
#'   with `ppc` `calibration_failure`, `l1_distance`; `well_fit`) and
#'   `residuals` (cells x genes, or `NULL`).
#' @examples
#' sim <- scribe_simulate("nbvcp", n_genes = 20, n_cells = 300, seed = 1)
#' fit <- scribe_fit(sim$counts, model = "nbvcp", n_steps = 500, seed = 1, verbose = FALSE)
#' gof <- goodness_of_fit(fit, sim$counts, n_ppc_samples = 50, seed = 2)
#' head(gof$scores)
#' @export
goodness_of_fit <- function(fit, x, genes = NULL, n_samples = NULL, residuals = "auto", ppc = TRUE,
                            n_ppc_samples = 200L, credible_level = 95, max_bin = NULL, epsilon = 1e-6,
                            seed = NULL, assay = NULL) {
  if (missing(x)) x <- NULL
  vae <- is(fit, "ScribeVAEResults")
  lap <- is(fit, "ScribeLaplaceResults")
  if (!is(fit, "ScribeLayoutResults") && !vae && !lap) {
    if (is(fit, "ScribeResults")) {
      abort_unsupported("{.fn goodness_of_fit} works on SVI, MCMC, VAE and Laplace fits, not {.cls {class(fit)[1]}}.")
    }
    abort_input("{.arg fit} must be a scribeR results object, not {.cls {class(fit)[1]}}.")
  }
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647 (or NULL for the point estimate)",
               function(v) v >= 1 && v <= .Machine$integer.max && v == round(v), allow_null = TRUE)
  check_flag(ppc, "ppc")
  if (!identical(residuals, "auto")) check_flag(residuals, "residuals")
  check_number(n_ppc_samples, "n_ppc_samples", "a whole number of at least 2", function(v) v >= 2 && v == round(v) && v <= 1e6)
  check_number(credible_level, "credible_level", "a number in (0, 100)", function(v) v > 0 && v < 100)
  check_number(max_bin, "max_bin", "a whole number of at least 1", function(v) v >= 1 && v == round(v), allow_null = TRUE)
  check_number(epsilon, "epsilon", "a number in (0, 0.5)", function(v) v > 0 && v < 0.5)
  # VAE and Laplace fits read each cell's latents from `x`, so they take it whole.
  counts <- if (!vae && !lap) counts_for_fit(fit, x, assay)
  run <- function(what, opts, n, seed) {
    if (vae) return(run_vae_analysis(fit, x, what, opts, n, seed, assay, "goodness_of_fit"))
    if (lap) {
      opts$n_draws <- if (is.null(n)) 0 else as.numeric(n)
      opts$seed <- seed
      return(run_laplace_analysis(fit, x, what, opts, assay))
    }
    run_analysis(fit, what, counts, opts, n, seed)
  }
  gi <- gene_index(fit, genes)
  if (anyDuplicated(gi)) abort_input("{.arg genes} lists a gene more than once.")
  idx <- if (is.null(gi)) seq_along(fit@gene_names) else gi + 1L
  n_cells <- length(fit@cell_names)
  keep <- if (identical(residuals, "auto")) as.numeric(n_cells) * length(idx) <= 5e6 else residuals
  seed <- resolve_seed(seed)
  res <- run("residuals", list(genes = gi, keep = keep, epsilon = epsilon), n_samples, seed)
  names_g <- fit@gene_names[idx]
  scores <- data.frame(gene = names_g, mean = res$mean, variance = res$variance, tail_excess = res$tail_excess,
                       ks_distance = res$ks_distance, stringsAsFactors = FALSE)
  well <- scores$variance > 0.5 & scores$variance < 1.5
  if (ppc) {
    sc <- run("ppc_scores", list(genes = gi, level = credible_level / 100, max_bin = if (!is.null(max_bin)) as.numeric(max_bin)),
              n_ppc_samples, seed + 1)
    scores$calibration_failure <- sc$calibration_failure
    scores$l1_distance <- sc$l1_distance
    well <- well & scores$calibration_failure <= 0.5
  }
  scores$well_fit <- well
  q <- if (keep) matrix(res$values, nrow = n_cells, dimnames = list(fit@cell_names, names_g))
  structure(list(scores = scores, residuals = q, n_samples = n_samples, ppc = ppc), class = "scribe_gof")
}

#' @export
print.scribe_gof <- function(x, ...) {
  s <- x$scores
  cat(sprintf("<scribe_gof> %d genes, randomized quantile residuals at the %s%s\n", nrow(s),
              if (is.null(x$n_samples)) "MAP" else sprintf("posterior (%d draws)", as.integer(x$n_samples)),
              if (x$ppc) " + PPC calibration" else ""))
  cat(sprintf("  residual variance: median %.3f; %d genes outside (0.5, 1.5)\n", stats::median(s$variance),
              sum(s$variance <= 0.5 | s$variance >= 1.5)))
  cat(sprintf("  KS distance: median %.3f, max %.3f\n", stats::median(s$ks_distance), max(s$ks_distance)))
  if (x$ppc) cat(sprintf("  PPC calibration failure: median %.3f\n", stats::median(s$calibration_failure)))
  cat(sprintf("  well fit: %d of %d genes\n", sum(s$well_fit), nrow(s)))
  worst <- utils::head(s[order(-s$ks_distance), c("gene", "variance", "ks_distance")], 5)
  cat("  worst by KS distance:\n")
  print(worst, row.names = FALSE, digits = 3)
  invisible(x)
}

#' Quantile-quantile plots of randomized quantile residuals
#'
#' @param gof A result of [goodness_of_fit()] that kept its residuals.
#' @param genes Genes to show (default: the five worst by KS distance).
#' @return A ggplot object, one panel per gene.
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   sim <- scribe_simulate("nbdm", n_genes = 10, n_cells = 300, seed = 1)
#'   fit <- scribe_fit(sim$counts, model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#'   plot_residuals(goodness_of_fit(fit, sim$counts, ppc = FALSE, seed = 2))
#' }
#' @export
plot_residuals <- function(gof, genes = NULL) {
  require_ggplot("plot_residuals")
  if (!inherits(gof, "scribe_gof")) abort_input("{.arg gof} must be a result of {.fn goodness_of_fit}.")
  if (is.null(gof$residuals)) {
    abort_input(c("{.arg gof} did not keep its residuals.",
                  "i" = "Rerun {.fn goodness_of_fit} with {.code residuals = TRUE} (and {.arg genes} to limit their number)."))
  }
  if (is.null(genes)) genes <- utils::head(gof$scores$gene[order(-gof$scores$ks_distance)], 5)
  bad <- setdiff(genes, colnames(gof$residuals))
  if (!is.character(genes) || length(bad)) abort_input("{.arg genes} are not in {.arg gof}: {.val {utils::head(bad, 5)}}.")
  df <- do.call(rbind, lapply(genes, function(g) {
    q <- sort(gof$residuals[, g])
    data.frame(gene = g, theoretical = stats::qnorm(stats::ppoints(length(q))), residual = q)
  }))
  ggplot2::ggplot(df, ggplot2::aes(x = .data$theoretical, y = .data$residual)) +
    ggplot2::geom_abline(slope = 1, intercept = 0, colour = "grey50", linetype = 2) +
    ggplot2::geom_point(size = 0.6, alpha = 0.6) +
    ggplot2::facet_wrap(~gene) +
    ggplot2::labs(x = "standard normal quantile", y = "randomized quantile residual") +
    ggplot2::theme_minimal()
}
