#' Plot the loss curve of a fit
#'
#' The raw and smoothed loss per step; when a stopping rule ended the fit, the
#' last step is marked and the subtitle says why.
#'
#' @param fit A [ScribeSVIResults-class] or [ScribeLaplaceResults-class] object.
#' @param smooth Width of the running-mean window drawn over the raw loss
#'   (`0` for none).
#' @param log_steps Put the step axis on a log scale.
#' @return A `ggplot` object (print it to draw).
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   counts <- scribe_example_data()
#'   fit <- scribe_fit(counts, model = "nbdm", n_steps = 200, seed = 1, verbose = FALSE,
#'                     optimizer_config = list(name = "adam", step_size = 0.01))
#'   plot_loss(fit)
#' }
#' @export
plot_loss <- function(fit, smooth = 50L, log_steps = TRUE) {
  if (!is(fit, "ScribeResults") || !methods::hasMethod("loss_history", class(fit))) {
    abort_input("{.arg fit} must be an SVI or Laplace fit (one with a loss history).")
  }
  if (!requireNamespace("ggplot2", quietly = TRUE)) abort_input("{.fn plot_loss} needs the {.pkg ggplot2} package.")
  check_number(smooth, "smooth", "a whole number from 0 to 2147483647", function(v) v >= 0 && v <= .Machine$integer.max && v == round(v))
  loss <- loss_history(fit)
  df <- data.frame(step = seq_along(loss), loss = loss)
  p <- ggplot2::ggplot(df, ggplot2::aes(x = .data$step, y = .data$loss)) +
    ggplot2::geom_line(colour = "grey70", na.rm = TRUE) +
    ggplot2::labs(x = "step", y = "loss (negative ELBO)",
                  title = sprintf("%s%s: %s loss", fit@model$model,
                                  if (is.null(fit@model$parameterization)) "" else sprintf(" (%s)", fit@model$parameterization),
                                  if (is(fit, "ScribeLaplaceResults")) "Laplace" else "SVI"))
  if (smooth > 1 && length(loss) > smooth) {
    sm <- stats::filter(ifelse(is.finite(loss), loss, NA), rep(1 / smooth, smooth), sides = 1)
    df$smooth <- as.numeric(sm)
    p <- p + ggplot2::geom_line(data = df, ggplot2::aes(y = .data$smooth), colour = "steelblue4", na.rm = TRUE)
  }
  if (log_steps) p <- p + ggplot2::scale_x_log10()
  why <- trimws(gsub("^ \\(|\\)$", "", stop_summary(fit)))
  if (nzchar(why)) {
    end <- data.frame(step = length(loss), loss = utils::tail(loss[is.finite(loss)], 1))
    p <- p + ggplot2::geom_point(data = end, colour = "firebrick", size = 2) +
      ggplot2::labs(subtitle = sprintf("stopped at step %d: %s", length(loss), why))
  }
  p + ggplot2::theme_minimal()
}

require_ggplot <- function(fn) {
  if (!requireNamespace("ggplot2", quietly = TRUE)) abort_input("{.fn {fn}} needs the {.pkg ggplot2} package.")
}

#' Posterior predictive check of count distributions
#'
#' For each gene, the observed fraction of cells with count 0, 1, 2, ... and
#' the 95% (and 50%) posterior predictive intervals of the same fractions.
#' Only the requested genes are simulated.
#'
#' @param fit A fitted model.
#' @param x The counts the model was fitted to.
#' @param genes Genes to show (names or indices).
#' @param n_samples Posterior predictive draws.
#' @param max_count Counts above this are pooled into the last bin.
#' @param seed Seed of the draws.
#' @param assay Assay of `x`, as in [scribe_fit()].
#' @return A `ggplot` object.
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   counts <- scribe_example_data()
#'   fit <- scribe_fit(counts, n_steps = 200, seed = 1, verbose = FALSE)
#'   plot_ppc(fit, counts, genes = c("LYZ", "CD74", "CD3E"), n_samples = 50, seed = 1)
#' }
#' @export
plot_ppc <- function(fit, x, genes, n_samples = 200L, max_count = NULL, seed = NULL, assay = NULL) {
  require_ggplot("plot_ppc")
  m <- matrix_for_fit(fit, x, assay)
  gi <- gene_index(fit, genes) + 1L
  check_number(max_count, "max_count", "a whole number between 1 and 10000", function(v) v >= 1 && v <= 1e4 && v == round(v),
               allow_null = TRUE)
  ppc <- posterior_predictive(fit, n_samples = n_samples, genes = gi, seed = seed, x = m)
  rows <- lapply(seq_along(gi), function(j) {
    obs <- as.numeric(m[gi[j], ])
    top <- if (is.null(max_count)) max(stats::quantile(obs, 0.99), 3) else max_count
    bins <- 0:top
    frac <- function(v) tabulate(pmin(v, top) + 1L, nbins = top + 1L) / length(v)
    sims <- apply(ppc[, , j, drop = FALSE], 1, frac)
    data.frame(
      gene = fit@gene_names[gi[j]], count = bins, observed = frac(obs),
      lo = apply(sims, 1, stats::quantile, 0.025), hi = apply(sims, 1, stats::quantile, 0.975),
      lo50 = apply(sims, 1, stats::quantile, 0.25), hi50 = apply(sims, 1, stats::quantile, 0.75)
    )
  })
  df <- do.call(rbind, rows)
  df$gene <- factor(df$gene, levels = fit@gene_names[gi])
  ggplot2::ggplot(df, ggplot2::aes(x = .data$count)) +
    ggplot2::geom_ribbon(ggplot2::aes(ymin = .data$lo, ymax = .data$hi), fill = "steelblue", alpha = 0.25) +
    ggplot2::geom_ribbon(ggplot2::aes(ymin = .data$lo50, ymax = .data$hi50), fill = "steelblue", alpha = 0.4) +
    ggplot2::geom_point(ggplot2::aes(y = .data$observed), size = 1.2) +
    ggplot2::facet_wrap(~gene, scales = "free") +
    ggplot2::labs(x = "UMI count (last bin pooled)", y = "fraction of cells",
                  title = "Posterior predictive check", subtitle = "points: observed; bands: 50% and 95% predictive intervals") +
    ggplot2::theme_minimal()
}

#' Mean-variance relationship: observed and fitted
#'
#' Each gene's mean and variance across cells, observed and under one
#' posterior predictive draw of the whole data set (which includes capture
#' and zero inflation). Log-log axes; the dashed line is the Poisson
#' variance.
#'
#' @inheritParams plot_ppc
#' @param genes Genes to show (default all; the predictive draw simulates
#'   these genes for every cell).
#' @return A `ggplot` object.
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   counts <- scribe_example_data()
#'   fit <- scribe_fit(counts, n_steps = 200, seed = 1, verbose = FALSE)
#'   plot_mean_variance(fit, counts, seed = 1)
#' }
#' @export
plot_mean_variance <- function(fit, x, genes = NULL, seed = NULL, assay = NULL) {
  require_ggplot("plot_mean_variance")
  m <- matrix_for_fit(fit, x, assay)
  gi <- if (is.null(genes)) seq_along(fit@gene_names) else gene_index(fit, genes) + 1L
  m <- m[gi, , drop = FALSE]
  obs_mean <- Matrix::rowMeans(m)
  obs_var <- Matrix::rowMeans(m^2) - obs_mean^2
  ppc <- posterior_predictive(fit, n_samples = 1L, genes = gi, seed = seed, x = m)[1, , , drop = TRUE]
  ppc <- matrix(ppc, nrow = length(fit@cell_names))
  df <- rbind(
    data.frame(gene = rownames(m), mean = obs_mean, variance = obs_var, source = "observed"),
    data.frame(gene = rownames(m), mean = colMeans(ppc), variance = apply(ppc, 2, stats::var), source = "model")
  )
  df <- df[df$mean > 0 & df$variance > 0, ]
  ggplot2::ggplot(df, ggplot2::aes(x = .data$mean, y = .data$variance, colour = .data$source)) +
    ggplot2::geom_point(alpha = 0.5, size = 0.8) +
    ggplot2::geom_abline(slope = 1, intercept = 0, linetype = "dashed", colour = "grey40") +
    ggplot2::scale_x_log10() + ggplot2::scale_y_log10() +
    ggplot2::scale_colour_manual(values = c(observed = "black", model = "darkorange")) +
    ggplot2::labs(title = "Mean-variance relationship", x = "mean UMI count", y = "variance") +
    ggplot2::theme_minimal()
}

#' Capture probability against library size
#'
#' @inheritParams plot_ppc
#' @return A `ggplot` object of each cell's MAP capture probability (and, for
#'   single-component fits, the effective `p_hat`) against its library size.
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   counts <- scribe_example_data()
#'   fit <- scribe_fit(counts, n_steps = 200, seed = 1, verbose = FALSE)
#'   plot_capture(fit, counts)
#' }
#' @export
plot_capture <- function(fit, x, assay = NULL) {
  require_ggplot("plot_capture")
  # A VAE's point estimate decodes the cells: it needs their counts.
  map <- if (is(fit, "ScribeVAEResults")) get_map(fit, x, assay = assay) else get_map(fit)
  if (is.null(map$p_capture)) abort_input("{.arg fit} has no capture probabilities (model {.val {fit@model$model}}).")
  m <- matrix_for_fit(fit, x, assay)
  df <- data.frame(library_size = Matrix::colSums(m), p_capture = unname(map$p_capture))
  ggplot2::ggplot(df, ggplot2::aes(x = .data$library_size, y = .data$p_capture)) +
    ggplot2::geom_point(alpha = 0.4, size = 0.8) +
    ggplot2::scale_x_log10() +
    ggplot2::labs(title = "Capture probability vs library size", x = "library size (UMIs)", y = "capture probability (MAP)") +
    ggplot2::theme_minimal()
}

#' Mixture composition
#'
#' Mixing weights (MAP) next to the fraction of cells assigned to each
#' component by [cell_type_probabilities()].
#'
#' @inheritParams plot_ppc
#' @return A `ggplot` object.
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   sim <- scribe_simulate("nbdm", n_genes = 50, n_cells = 300, n_components = 2, seed = 1)
#'   fit <- scribe_fit(sim$counts, model = "nbdm", n_components = 2, n_steps = 300, seed = 1,
#'                     verbose = FALSE)
#'   plot_mixture(fit, sim$counts)
#' }
#' @export
plot_mixture <- function(fit, x, assay = NULL) {
  require_ggplot("plot_mixture")
  prob <- cell_type_probabilities(fit, x, assay = assay)
  k <- ncol(prob$probabilities)
  w <- get_map(fit)$mixing_weights
  df <- data.frame(
    component = factor(rep(colnames(prob$probabilities), 2), levels = colnames(prob$probabilities)),
    fraction = c(unname(w), tabulate(prob$assignment, k) / length(prob$assignment)),
    what = rep(c("mixing weight (MAP)", "cells assigned"), each = k)
  )
  ggplot2::ggplot(df, ggplot2::aes(x = .data$component, y = .data$fraction, fill = .data$what)) +
    ggplot2::geom_col(position = "dodge") +
    ggplot2::labs(title = "Mixture composition", x = NULL, y = "fraction", fill = NULL) +
    ggplot2::theme_minimal()
}

#' Latent embedding of a VAE fit
#'
#' Cells in the VAE's latent space: its first two dimensions, or with
#' `umap = TRUE` a two-dimensional UMAP of all of them (through the uwot
#' package, when installed).
#'
#' @param fit A [ScribeVAEResults-class] fit.
#' @param x The cells' counts (genes x cells, any input [scribe_fit()] takes).
#' @param color_by `NULL`, a `colData()` / `meta.data` column of `x`, or one
#'   value per cell to colour the cells by.
#' @param umap Show a UMAP of the embedding instead of its first two dimensions.
#' @param assay For SingleCellExperiment or Seurat input, the assay to read.
#' @return A `ggplot` object.
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   sim <- scribe_simulate("nbdm", n_genes = 50, n_cells = 300, n_components = 2, seed = 1)
#'   vae <- scribe_fit(sim$counts, model = "nbdm", inference_method = "vae", latent_dim = 2,
#'                     n_steps = 300, seed = 1, verbose = FALSE)
#'   plot_latent(vae, sim$counts, color_by = factor(sim$truth$assignment))
#' }
#' @export
plot_latent <- function(fit, x, color_by = NULL, umap = FALSE, assay = NULL) {
  require_ggplot("plot_latent")
  check_flag(umap, "umap")
  emb <- get_latent_embeddings(fit, x, assay = assay)
  if (umap) {
    if (!requireNamespace("uwot", quietly = TRUE)) abort_input("{.code umap = TRUE} needs the {.pkg uwot} package.")
    xy <- uwot::umap(emb, n_components = 2)
    labs <- c("UMAP 1", "UMAP 2")
  } else {
    if (ncol(emb) < 2) abort_input("The embedding has one dimension; {.fn plot_latent} shows two.")
    xy <- emb[, 1:2, drop = FALSE]
    labs <- c("z1", "z2")
  }
  df <- data.frame(d1 = xy[, 1], d2 = xy[, 2])
  if (!is.null(color_by)) {
    if (is.character(color_by) && length(color_by) == 1L && ncol(emb) != 1L) {
      meta <- if (is(x, "SummarizedExperiment")) SummarizedExperiment::colData(x) else if (inherits(x, "Seurat")) x[[]] else NULL
      if (is.null(meta) || !color_by %in% names(meta)) {
        abort_input("{.arg color_by} names no column {.val {color_by}} of {.arg x}'s cell metadata.")
      }
      color_by <- meta[[color_by]]
    }
    if (length(color_by) != nrow(emb)) {
      abort_input("{.arg color_by} must name a cell-metadata column or have one value per cell ({nrow(emb)}), not {length(color_by)}.")
    }
    df$colour <- color_by
  }
  aes <- if (is.null(df$colour)) ggplot2::aes(x = .data$d1, y = .data$d2) else ggplot2::aes(x = .data$d1, y = .data$d2, colour = .data$colour)
  ggplot2::ggplot(df, aes) +
    ggplot2::geom_point(alpha = 0.6, size = 0.8) +
    ggplot2::labs(title = "VAE latent embedding", x = labs[1], y = labs[2], colour = NULL) +
    ggplot2::theme_minimal()
}
