#' @include results.R
NULL

# Downstream analyses of a fit: log-likelihoods, component probabilities,
# denoising, normalization and posterior predictive draws. Each is an S4
# generic with a method per results class: here for the fits of a model's
# parameter vector (SVI, MCMC: ScribeLayoutResults), in R/laplace.R for
# Laplace fits. The numerics live in the core's posterior module; these
# methods check inputs, choose point estimates or posterior draws, and shape
# and name the results. Long analyses show progress when
# getOption("scribeR.verbose", interactive()) and stop cleanly on Ctrl-C.

# The counts of `x` as the fitted genes x cells dgCMatrix: named as the fit
# named them, without the cells the fit dropped, and checked against the
# totals of the fitted counts (errors if they differ).
matrix_for_fit <- function(fit, x, assay = NULL) {
  m <- name_counts(as_counts_dgc(scribe_counts(x, assay = assay)), warn = FALSE)
  # Empty cells are fine here (e.g. after subsetting genes); only fitting needs counts.
  m <- validate_counts(m, allow_empty_cells = TRUE)$counts
  if (nrow(m) != length(fit@gene_names) || !identical(rownames(m), fit@gene_names)) {
    abort_input(c("The genes of {.arg x} are not the genes of {.arg fit}.",
                  "i" = "{.arg x} has {nrow(m)} genes; the fit has {length(fit@gene_names)}."))
  }
  if (length(fit@dropped_cells) > 0L) m <- m[, !colnames(m) %in% fit@dropped_cells, drop = FALSE]
  if (ncol(m) != length(fit@cell_names) || !identical(colnames(m), fit@cell_names)) {
    abort_input(c("The cells of {.arg x} are not the cells of {.arg fit}.",
                  "i" = "{.arg x} has {ncol(m)} cells; the fit has {length(fit@cell_names)}."))
  }
  check_fingerprint(fit, m)
  m
}

# The fit keeps the cell and gene totals of the counts it was fitted to; data
# with the same names but other counts are refused.
check_fingerprint <- function(fit, m) {
  fp <- if (methods::.hasSlot(fit, "counts_summary")) fit@counts_summary else list()
  for (what in c("cell", "gene")) {
    want <- fp[[paste0(what, "_totals")]]
    if (!length(want)) next
    got <- if (what == "cell") Matrix::colSums(m) else Matrix::rowSums(m)
    bad <- which(unname(got) != unname(want))
    if (length(bad)) {
      abort_input(c(
        "{.arg x} is not the data {.arg fit} was fitted to.",
        "x" = "The totals of {length(bad)} {what}{cli::qty(length(bad))}{?s} differ (e.g. {what} {.val {names(got)[bad[1]]}}: {got[bad[1]]}, fitted {want[bad[1]]}).",
        "i" = "Give the counts {.fn scribe_fit} was called with (the same assay, before any normalisation)."
      ))
    }
  }
}

# The slots of the fit-matched counts, as the core reads them.
counts_for_fit <- function(fit, x, assay = NULL) counts_slots(matrix_for_fit(fit, x, assay))

# Whether analyses print progress.
analysis_verbose <- function() isTRUE(getOption("scribeR.verbose", interactive()))

run_analysis <- function(fit, what, counts, opts, n_samples, seed, num_threads = getOption("scribeR.num_threads", 1L)) {
  check_format(fit)
  n_draws <- 0
  if (!is.null(n_samples)) {
    check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647 (or NULL for the MAP)", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
    n_draws <- as.numeric(n_samples)
  }
  seed <- resolve_seed(seed)
  opts$seed <- seed
  call_core(rs_nb_analysis(core_view(fit), n_draws, seed, what, counts, opts, analysis_verbose(),
                           resolve_threads(num_threads)))
}

# The analyses' answer to objects that are not fits (or fits they do not apply to).
not_a_fit <- function(fit, what) {
  if (is(fit, "ScribeResults")) {
    abort_unsupported("{.fn {what}} is not available for {.cls {class(fit)[1]}} fits.")
  }
  abort_input("{.arg fit} must be a scribeR results object, not {.cls {class(fit)[1]}}.")
}

# Mixture components, or the datasets of a dataset_key fit (which play the
# part of components whose cells are known), and their names.
n_components_of <- function(fit) {
  if (!is.null(fit@model$dataset_levels)) return(length(fit@model$dataset_levels))
  if (is.null(fit@model$n_components)) 1L else as.integer(fit@model$n_components)
}
component_names <- function(k, fit = NULL) {
  levels <- if (!is.null(fit)) fit@model$dataset_levels
  if (length(levels) == k) levels else paste0("component", seq_len(k))
}

gene_index <- function(fit, genes) {
  if (is.null(genes)) return(NULL)
  idx <- if (is.character(genes)) match(genes, fit@gene_names) else genes
  if (anyNA(idx) || any(idx < 1) || any(idx > length(fit@gene_names)) || any(idx != round(idx))) {
    bad <- if (is.character(genes)) genes[is.na(idx)] else genes[is.na(idx) | idx < 1 | idx > length(fit@gene_names)]
    abort_input("{.arg genes} has entries that are not genes of the fit: {.val {utils::head(bad, 5)}}.")
  }
  as.integer(idx - 1L)
}

#' Log-likelihood of the data under a fit
#'
#' Per cell (`by = "cell"`: sum over genes) or per gene (`by = "gene"`: sum
#' over cells), at the MAP (`n_samples = NULL`) or for `n_samples` posterior
#' draws, as needed for WAIC / PSIS-LOO. Zeros are summed in closed form where
#' the model allows. For mixtures, a cell's value is
#' `logsumexp_k(log w_k + sum_g l_cgk)`; a gene's is
#' `logsumexp_k(log w_k + sum_c l_cgk)` (as in the original: a per-gene
#' quantity in which all cells share one component); `split_components = TRUE`
#' returns the per-component terms instead.
#'
#' VAE fits condition on each cell's embedding: its encoder mean
#' (`n_samples = NULL`) or draws from its encoder Gaussian, each decoded to
#' the cell's own `r` (and gate).
#'
#' Laplace fits (log-normal models) condition on each cell's latent log-rates:
#' at their MAP (`n_samples = NULL`) or drawn from the per-cell Laplace
#' posteriors. By gene, PLN and NBLN sum each gene's pmf over cells; LNM
#' gives each gene its share `sum_c u_cg log rho_cg` of the multinomial (the
#' multinomial coefficient and the NB of the totals belong to no gene, so
#' LNM's by-gene values do not add up to its by-cell ones).
#'
#' @param fit A fitted model.
#' @param x The counts the model was fitted to (any input [scribe_fit()] accepts).
#' @param by `"cell"` or `"gene"`.
#' @param n_samples `NULL` for the MAP, or the number of posterior draws.
#' @param split_components Return per-component values for mixtures.
#' @param seed Seed of the posterior draws.
#' @param assay Assay of `x`, as in [scribe_fit()].
#' @return MAP: a named vector (cells or genes), or a matrix with a column
#'   per component. Draws: an `n_samples x cells` (or genes) matrix, or an
#'   `n_samples x cells x K` array when split.
#' @examples
#' counts <- scribe_example_data()
#' fit <- scribe_fit(counts, model = "nbdm", n_steps = 200, seed = 1, verbose = FALSE)
#' ll <- log_likelihood(fit, counts, n_samples = 20, seed = 2)
#' dim(ll)
#' @param ... Arguments of the methods (see Usage).
#' @export
setGeneric("log_likelihood", function(fit, x, ...) standardGeneric("log_likelihood"))

#' @rdname log_likelihood
setMethod("log_likelihood", "ANY", function(fit, x, ...) not_a_fit(fit, "log_likelihood"))

#' @rdname log_likelihood
setMethod("log_likelihood", "ScribeLayoutResults", function(fit, x, by = c("cell", "gene"), n_samples = NULL,
                                                            split_components = FALSE, seed = NULL, assay = NULL) {
  by <- match_choice(by[1], c("cell", "gene"), "by")
  check_flag(split_components, "split_components")
  counts <- counts_for_fit(fit, x, assay)
  res <- run_analysis(fit, "loglik", counts, list(by = by, split = split_components), n_samples, seed)
  labels <- if (by == "cell") fit@cell_names else fit@gene_names
  s <- if (is.null(n_samples)) 1L else as.integer(n_samples)
  k <- res$n_comp
  v <- res$values
  if (split_components && k > 1L) {
    a <- array(v, dim = c(s, length(labels), k), dimnames = list(NULL, labels, component_names(k, fit)))
    return(if (is.null(n_samples)) a[1, , ] else a)
  }
  if (is.null(n_samples)) return(stats::setNames(v, labels))
  matrix(v, nrow = s, dimnames = list(NULL, labels))
})

#' Mixture component probabilities of every cell
#'
#' `P(k | u_c, theta) = softmax_k(log w_k + sum_g log f_k(u_cg))`, at the MAP
#' or per posterior draw, plus hard assignments and the assignment entropy.
#'
#' @inheritParams log_likelihood
#' @return MAP: a list with `probabilities` (cells x K), `assignment` (the
#'   most probable component per cell) and `entropy` (per cell, nats). Draws:
#'   the same, with `probabilities` the mean over draws and `samples` an
#'   `n_samples x cells x K` array.
#' @examples
#' sim <- scribe_simulate("nbdm", n_genes = 50, n_cells = 300, n_components = 2, seed = 1)
#' fit <- scribe_fit(sim$counts, model = "nbdm", n_components = 2, n_steps = 300, seed = 1,
#'                   verbose = FALSE)
#' prob <- cell_type_probabilities(fit, sim$counts)
#' table(prob$assignment, sim$truth$assignment)
#' @param ... Arguments of the methods (see Usage).
#' @export
setGeneric("cell_type_probabilities", function(fit, x, ...) standardGeneric("cell_type_probabilities"))

#' @rdname cell_type_probabilities
setMethod("cell_type_probabilities", "ANY", function(fit, x, ...) not_a_fit(fit, "cell_type_probabilities"))

#' @rdname cell_type_probabilities
setMethod("cell_type_probabilities", "ScribeLayoutResults", function(fit, x, n_samples = NULL, seed = NULL,
                                                                     assay = NULL) {
  k <- n_components_of(fit)
  if (k < 2L || is.null(fit@model$n_components)) {
    abort_input("{.arg fit} is not a mixture model; component probabilities need {.arg n_components} >= 2.")
  }
  counts <- counts_for_fit(fit, x, assay)
  res <- run_analysis(fit, "responsibilities", counts, list(), n_samples, seed)
  s <- if (is.null(n_samples)) 1L else as.integer(n_samples)
  a <- array(res$values, dim = c(s, length(fit@cell_names), k),
             dimnames = list(NULL, fit@cell_names, component_names(k, fit)))
  prob <- apply(a, c(2, 3), mean)
  out <- list(
    probabilities = prob,
    assignment = stats::setNames(max.col(prob, ties.method = "first"), fit@cell_names),
    entropy = -rowSums(prob * log(pmax(prob, 1e-300)))
  )
  if (!is.null(n_samples)) out$samples <- a
  out
})

#' Bayesian denoising of observed counts
#'
#' The posterior of each cell's pre-capture count given its observed count:
#' with `pp = p (1 - nu_c)` and `q = 1 - pp`, the mean is `(u + r pp) / q`,
#' the variance `(r + u) pp / q^2` and the mode `u + floor(max(r + u - 1, 0)
#' pp / q)`; a zero of a zero-inflated model is a gate zero with probability
#' `w = g / (g + (1 - g) ((1 - p) / q)^r)`, whose value follows the un-thinned
#' `NB(r, p)`. Without capture and gate, denoised counts equal the observed
#' ones. Mixtures weight each component by the cell's own component
#' probability (the original uses the global mixing weights, ignoring what the
#' cell's counts say about its type).
#'
#' @inheritParams log_likelihood
#' @param method `"mean"`, `"mode"` or `"sample"`; a length-2 vector gives the
#'   method for ordinary counts and for zeros of zero-inflated models.
#' @param genes Genes to denoise (names or indices; default all).
#' @param return_variance Also return the posterior variance.
#' @return MAP: a genes x cells matrix (or a list with `denoised` and
#'   `variance`). Draws: an `n_samples x genes x cells` array (or a list).
#' @examples
#' counts <- scribe_example_data()
#' fit <- scribe_fit(counts, n_steps = 200, seed = 1, verbose = FALSE)
#' den <- denoise_counts(fit, counts, genes = c("LYZ", "CD74"))
#' den[, 1:5]
#' @param ... Arguments of the methods (see Usage).
#' @export
setGeneric("denoise_counts", function(fit, x, ...) standardGeneric("denoise_counts"))

#' @rdname denoise_counts
setMethod("denoise_counts", "ANY", function(fit, x, ...) not_a_fit(fit, "denoise_counts"))

#' @rdname denoise_counts
setMethod("denoise_counts", "ScribeLayoutResults", function(fit, x, method = "mean", n_samples = NULL, genes = NULL,
                                                            return_variance = FALSE, seed = NULL, assay = NULL) {
  d <- denoise_options(fit, method, genes, return_variance)
  counts <- counts_for_fit(fit, x, assay)
  res <- run_analysis(fit, "denoise", counts, d$opts, n_samples, seed)
  shape_denoised(fit, res, d$genes, n_samples, return_variance)
})

# denoise_counts()'s arguments checked, as the core's options, and the
# names of the genes asked for.
denoise_options <- function(fit, method, genes, return_variance) {
  if (!is.character(method) || !(length(method) %in% 1:2)) {
    abort_input("{.arg method} must be one or two of {.val {c('mean', 'mode', 'sample')}}.")
  }
  for (m in method) match_choice(m, c("mean", "mode", "sample"), "method")
  check_flag(return_variance, "return_variance")
  gi <- gene_index(fit, genes)
  opts <- list(method = method[1], zi_method = method[length(method)], return_variance = return_variance)
  if (!is.null(gi)) opts$genes <- gi
  list(opts = opts, genes = if (is.null(gi)) fit@gene_names else fit@gene_names[gi + 1L])
}

# The core's denoised values (genes x cells per draw) as denoise_counts() returns them.
shape_denoised <- function(fit, res, gnames, n_samples, return_variance) {
  shape <- function(v) {
    if (is.null(n_samples)) return(matrix(v, nrow = length(gnames), dimnames = list(gnames, fit@cell_names)))
    a <- array(v, dim = c(length(gnames), length(fit@cell_names), as.integer(n_samples)),
               dimnames = list(gnames, fit@cell_names, NULL))
    aperm(a, c(3L, 1L, 2L))
  }
  den <- shape(res$values)
  if (return_variance) list(denoised = den, variance = shape(res$variance)) else den
}

#' Compositional normalization
#'
#' With `p` shared by the genes of a cell, the NB factorises into the cell's
#' total and a Dirichlet-multinomial composition with concentration `r`
#' (capture cancels).
#'
#' VAE fits give per-cell fractions only (`x` is required), from each cell's
#' decoded `r`: `Dirichlet(r_c + u_c)`.
#'
#' Log-normal fits (PLN, NBLN, LNM; Laplace and VAE): a cell's composition is
#' the softmax of its latent log-rates (LNM: of its log-ratios with the
#' reference's 0), and capture cancels. With `x`, each cell's composition at
#' its point latents (the Laplace MAP, the VAE's decoded encoder mean) or one
#' per latent draw (`n_samples`). Without `x` (Laplace fits), compositions of
#' new cells of the fitted population, `softmax(mu + W z + sqrt(d) e)` with
#' `z ~ N(0, I)`: `n_samples` draws, or their mean over 2048 draws.
#'
#' Without `x`: the population composition `rho ~ Dirichlet(r)`, i.e. the
#' expected composition `mu / sum(mu)` at the MAP (`n_samples = NULL`) or
#' `n_samples_dirichlet` Dirichlet draws per posterior draw.
#'
#' With `x`: per-cell expression fractions from the conjugate posterior
#' `rho_c | u_c ~ Dirichlet(r + u_c)`: its mean `(r_g + u_cg) / (sum(r) +
#' L_c)` at the MAP parameters (`n_samples = NULL`), or one draw of each
#' cell's fractions per posterior draw. Mixtures weight (mean) or pick (draw)
#' components by each cell's own probabilities. The zero-inflation gate is
#' ignored here. With a gene-specific `p` the composition is no longer a
#' Dirichlet: each gene's rate has the posterior `Gamma(r_g + u_cg, rate
#' (1 - p_g)/p_g + nu_c)` and the fractions normalize those rates. BNB fits
#' go through the count's latent success probability, whose posterior is
#' `Beta(alpha + u, kappa + r)`: the rate's mean is `(r + u) E[p_hat' | u] /
#' nu_c`, and a draw takes `p_hat'` from that Beta, then the rate given it.
#'
#' @inheritParams log_likelihood
#' @param x `NULL` for the population composition, or the fitted counts for
#'   per-cell fractions.
#' @param n_samples_dirichlet Dirichlet draws per posterior draw (population
#'   composition only).
#' @param genes Genes to return (per-cell fractions; default all).
#' @return Population: a named vector over genes (a `K x genes` matrix for
#'   mixtures), or a `(n_samples * n_samples_dirichlet) x genes` matrix (an
#'   array with a component axis last for mixtures). Per cell: a genes x
#'   cells matrix of fractions, or an `n_samples x genes x cells` array.
#' @examples
#' counts <- scribe_example_data()
#' fit <- scribe_fit(counts, model = "nbdm", n_steps = 200, seed = 1, verbose = FALSE)
#' head(sort(normalize_counts(fit), decreasing = TRUE))
#' rho <- normalize_counts(fit, n_samples = 50, seed = 1)
#' dim(rho)
#' per_cell <- normalize_counts(fit, counts, genes = c("LYZ", "CD74"))
#' per_cell[, 1:4]
#' @param ... Arguments of the methods (see Usage).
#' @export
setGeneric("normalize_counts", function(fit, x = NULL, ...) standardGeneric("normalize_counts"))

#' @rdname normalize_counts
setMethod("normalize_counts", "ANY", function(fit, x = NULL, ...) not_a_fit(fit, "normalize_counts"))

#' @rdname normalize_counts
setMethod("normalize_counts", "ScribeLayoutResults", function(fit, x = NULL, n_samples = NULL,
                                                              n_samples_dirichlet = 1L, genes = NULL,
                                                              seed = NULL, assay = NULL) {
  check_number(n_samples_dirichlet, "n_samples_dirichlet", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  if (!is.null(x)) {
    counts <- counts_for_fit(fit, x, assay)
    gi <- gene_index(fit, genes)
    opts <- list(sample = !is.null(n_samples))
    if (!is.null(gi)) opts$genes <- gi
    res <- run_analysis(fit, "cell_fractions", counts, opts, n_samples, seed)
    gnames <- if (is.null(gi)) fit@gene_names else fit@gene_names[gi + 1L]
    if (is.null(n_samples)) return(matrix(res$values, nrow = length(gnames), dimnames = list(gnames, fit@cell_names)))
    a <- array(res$values, dim = c(length(gnames), length(fit@cell_names), as.integer(n_samples)),
               dimnames = list(gnames, fit@cell_names, NULL))
    return(aperm(a, c(3L, 1L, 2L)))
  }
  if (!is.null(genes)) abort_input("{.arg genes} applies to per-cell fractions (give {.arg x}).")
  n_dir <- if (is.null(n_samples)) 0 else as.numeric(n_samples_dirichlet)
  res <- run_analysis(fit, "normalize", NULL, list(n_dirichlet = n_dir), n_samples, seed)
  k <- res$n_comp
  g <- fit@gene_names
  if (is.null(n_samples)) {
    if (k == 1L) return(stats::setNames(res$values, g))
    return(t(matrix(res$values, nrow = length(g), dimnames = list(g, component_names(k, fit)))))
  }
  t_n <- as.integer(n_samples) * as.integer(n_samples_dirichlet)
  a <- array(res$values, dim = c(length(g), t_n, k), dimnames = list(g, NULL, component_names(k, fit)))
  if (k == 1L) return(t(a[, , 1]))
  aperm(a, c(2L, 1L, 3L))
})

#' Posterior predictive counts
#'
#' Draws counts from the fitted model for each posterior draw: capture,
#' zero inflation and (for mixtures) a component per cell drawn from the
#' mixing weights, or the "biological" counts `NB(r, p)` without capture or
#' gate (`biological = TRUE`). Only the requested genes and cells are drawn,
#' in chunks of `chunk_cells` cells, so a check on a few genes never builds a
#' cells x all-genes array; chunking does not change the numbers.
#'
#' @inheritParams log_likelihood
#' @param n_samples Number of posterior draws.
#' @param genes Genes (names or indices; default all).
#' @param cells Cells (names or indices; default all).
#' @param biological Draw pre-capture counts without the gate.
#' @param use_map Draw all `n_samples` data sets at the MAP (observation
#'   noise only) instead of at posterior draws.
#' @param chunk_cells Cells per call into the core (bounds temporary memory).
#' @param x Laplace and VAE fits only: the counts the model was fitted to
#'   (each cell's Hessian, or its encoder's output, depends on them). Draws
#'   then come from the MAP latents or encoder means (`use_map = TRUE`), or
#'   from the per-cell Laplace posteriors or encoder Gaussians.
#' @return An `n_samples x cells x genes` array of counts.
#' @examples
#' counts <- scribe_example_data()
#' fit <- scribe_fit(counts, n_steps = 200, seed = 1, verbose = FALSE)
#' ppc <- posterior_predictive(fit, n_samples = 20, genes = c("LYZ", "CD74"), seed = 1)
#' dim(ppc)
#' @param ... Arguments of the methods (see Usage).
#' @export
setGeneric("posterior_predictive", function(fit, ...) standardGeneric("posterior_predictive"))

#' @rdname posterior_predictive
setMethod("posterior_predictive", "ANY", function(fit, ...) not_a_fit(fit, "posterior_predictive"))

#' @rdname posterior_predictive
setMethod("posterior_predictive", "ScribeLayoutResults", function(fit, n_samples = 100L, genes = NULL, cells = NULL,
                                                                  biological = FALSE, use_map = FALSE,
                                                                  chunk_cells = 1000L, seed = NULL, x = NULL) {
  chunked_predictive(fit, n_samples, genes, cells, biological, use_map, chunk_cells, seed, function(opts, n, seed) {
    opts$n_cells <- length(fit@cell_names)
    run_analysis(fit, "predictive", NULL, opts, n, seed)$values
  })
})

# Predictive draws of the fits whose core draws any subset of cells alike
# (SVI, MCMC, VAE): the arguments checked, then `draw(opts, n_samples or
# NULL for the MAP, seed)` per chunk of `chunk_cells` cells, assembled as an
# `n_samples x cells x genes` array.
chunked_predictive <- function(fit, n_samples, genes, cells, biological, use_map, chunk_cells, seed, draw) {
  check_flag(biological, "biological")
  check_flag(use_map, "use_map")
  check_number(chunk_cells, "chunk_cells", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  gi <- gene_index(fit, genes)
  gnames <- if (is.null(gi)) fit@gene_names else fit@gene_names[gi + 1L]
  ci <- if (is.null(cells)) seq_along(fit@cell_names) else if (is.character(cells)) match(cells, fit@cell_names) else cells
  if (anyNA(ci) || any(ci < 1) || any(ci > length(fit@cell_names)) || any(ci != round(ci))) {
    abort_input("{.arg cells} has entries that are not cells of the fit.")
  }
  seed <- resolve_seed(seed)
  call_core(rs_check_values("n_samples", as.numeric(n_samples) * length(ci) * length(gnames)))
  s <- as.integer(n_samples)
  out <- array(0, dim = c(s, length(ci), length(gnames)), dimnames = list(NULL, fit@cell_names[ci], gnames))
  for (start in seq.int(1L, length(ci), by = chunk_cells)) {
    idx <- start:min(length(ci), start + chunk_cells - 1L)
    opts <- list(cells = as.integer(ci[idx] - 1L), biological = biological)
    if (!is.null(gi)) opts$genes <- gi
    if (use_map) opts$replicate_map <- as.numeric(s)
    values <- draw(opts, if (use_map) NULL else n_samples, seed)
    out[, idx, ] <- array(values, dim = c(s, length(idx), length(gnames)))
  }
  out
}
