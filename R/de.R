#' @include results.R
NULL

# Differential expression between two fits (or two components of one fit) on
# the compositional scale. The numerics (composition draws, CLR differences,
# per-gene summaries, shrinkage, PEFP thresholds, gene-set balances) are in
# the core's `de` module; this file checks arguments, picks the method and
# shapes the results.

#' Differential expression results
#'
#' `ScribeDEResults` holds the comparison made by [scribe_de()]: per gene,
#' the log-ratio difference `delta = CLR(A) - CLR(B)` (a gene up in B has a
#' negative `delta`) summarised by its posterior mean and sd, `P(delta > 0)`
#' and the local false sign rate (lfsr). Use [as.data.frame()] for the table
#' at any practical-significance threshold `tau`, [call_de()] to call genes
#' at a target posterior expected false-discovery proportion (PEFP),
#' [test_gene_sets()], [plot_volcano()], [plot_ma()] and [add_scribe_fit()].
#'
#' @slot method `"empirical"`, `"parametric"` or `"shrinkage"`.
#' @slot labels Names of the two sides.
#' @slot gene_names Genes compared.
#' @slot stats List: the per-gene summaries at `tau = 0`.
#' @slot delta Matrix of `delta` draws (draws x genes) for empirical and
#'   shrinkage results made with `keep_draws = TRUE`; otherwise 0 x 0.
#' @slot moments List: the per-gene Gaussian mean and sd (parametric), or
#'   the unshrunk empirical means and sds and the fitted prior (shrinkage).
#' @slot expression Numeric matrix genes x 2: the log expected composition
#'   of each side at its point estimate (for MA plots).
#' @slot info List: how the comparison was made (draws, components, seed).
#' @slot biological List: with `biological = TRUE`, summaries of the log fold
#'   change of the means (`lfc`), the log variance ratio (`lvr`), the
#'   Jeffreys divergence (`kl_mean`, `kl_sd`) and each side's posterior mean
#'   expression and variance; otherwise empty.
#' @name ScribeDEResults-class
#' @exportClass ScribeDEResults
setClass("ScribeDEResults", representation(
  method = "character", labels = "character", gene_names = "character", stats = "list",
  delta = "matrix", moments = "list", expression = "matrix", info = "list", biological = "list"
))

#' Differential expression between two fits
#'
#' Compares the expression compositions of two fitted populations (two
#' fits to the same genes, e.g. control and stimulated cells, or two
#' components of one mixture fit) gene by gene, with Bayesian error control.
#'
#' For NB-family fits (SVI or MCMC) the composition of a parameter draw is
#' `rho ~ Dirichlet(r)` (`p` and capture cancel), drawn
#' `n_samples_dirichlet` times per posterior draw; with
#' `n_samples_dirichlet = 0` it is the expected composition `r / sum(r)`, so
#' that `delta` carries parameter uncertainty only. `delta` is the
#' difference of the centred log-ratios (CLR, floored at `1e-30`); genes left
#' out by `gene_mask` are pooled into one "other" part that enters the CLR
#' reference. The two fits' draws are paired draw by draw; two components of
#' one fit are compared on the same parameter draws (`paired`).
#'
#' For log-normal fits (Laplace fits, and VAE fits of `pln`, `nbln`, `lnm`
#' with the standard-normal latent prior, whose linear decoder gives `mu`
#' and `W`; the two sides may come from different engines) each side is the
#' population of its cells, `rho = softmax(mu + W z + sqrt(d) eps)`,
#' `z ~ N(0, I)`: `"parametric"` (the default there) uses the exact Gaussian
#' marginals of its CLR,
#' `"empirical"` draws imaginary cells. There `delta` includes cell-to-cell
#' variability, so lfsr measures how much the two populations overlap, not
#' the uncertainty of a mean shift.
#'
#' Paired designs: with `fit_a` and `fit_b` named lists of fits (one per
#' donor or sample, fitted separately in each condition), each pair's
#' `delta` draws are computed as above and combined as `sum_d w_d delta_d`,
#' so that baseline differences between donors cancel within each pair.
#' Pairs are matched by name; at least two are needed.
#'
#' `"shrinkage"` fits an adaptive-shrinkage prior (a mixture of centred
#' normals on a grid of 26 scales from `1e-6` to three times the largest
#' posterior sd, weights by EM accelerated with SQUAREM) to the empirical
#' means and sds and reports the shrunk posterior.
#'
#' @param fit_a,fit_b Fits to the same genes. `fit_b` defaults to `fit_a`
#'   (then give two components).
#' @param method `"auto"` (parametric for two log-normal fits, else
#'   empirical), `"empirical"`, `"parametric"` or `"shrinkage"`.
#' @param n_samples Posterior draws per side (NB fits) or imaginary cells
#'   (log-normal fits).
#' @param n_samples_dirichlet Compositions per posterior draw; 0 for the
#'   expected composition.
#' @param component_a,component_b For mixture fits, the component of each
#'   side (1-based); for fits with `dataset_key`, the dataset of each side
#'   (its name or number), which compares datasets within one fit with the
#'   draws paired.
#' @param mixture_weighted For mixture fits without a component: compare
#'   the weighted mixture compositions `sum_k w_k rho_k`.
#' @param gene_mask `NULL`, or a logical vector over the genes (or gene
#'   names) to keep; the others are pooled.
#' @param labels Names of the two sides (default `c("A", "B")`, or the
#'   datasets' names when both sides are datasets given by name).
#' @param keep_draws Keep the `delta` draws in the result (needed for
#'   [as.data.frame()] at new `tau` values and for [test_gene_sets()]).
#' @param shrinkage_max_iter,shrinkage_tol EM settings of `"shrinkage"`.
#' @param seed Seed (`NULL`: from R's RNG).
#' @param num_threads Threads of the core.
#' @param biological Also compare absolute expression draw by draw (SVI and
#'   MCMC fits, one component per side): the log fold change of the NB means
#'   `mu = r p / (1 - p)`, the log ratio of the variances `mu / (1 - p)`, and
#'   the Jeffreys divergence between the Gamma expression distributions
#'   (shape `r`, rate `(1 - p) / p`); see [as.data.frame()]. Unlike the
#'   compositional `delta`, these change when total expression changes.
#'   For BNB fits (`overdispersion = "bnb"`) the variance is the BNB's and
#'   the divergence is `NA`.
#' @param pair_weighting,incomplete_pairs Paired designs (see Details):
#'   how pairs are weighted (`"uniform"`, or by `"min_cells"`, the
#'   `"harmonic"` mean or the `"total_cells"` of the pair's two fits), and
#'   whether names seen on one side only are dropped (with a message) or an
#'   error.
#' @return A [ScribeDEResults-class] object.
#' @examples
#' counts <- scribe_example_data()
#' half <- seq_len(ncol(counts)) <= ncol(counts) / 2
#' fa <- scribe_fit(counts[, half], model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#' fb <- scribe_fit(counts[, !half], model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#' de <- scribe_de(fa, fb, n_samples = 200, seed = 2)
#' de
#' head(as.data.frame(de, tau = log(1.1)))
#' @export
scribe_de <- function(fit_a, fit_b = fit_a, method = c("auto", "empirical", "parametric", "shrinkage"),
                      n_samples = 1000L, n_samples_dirichlet = 1L, component_a = NULL, component_b = NULL,
                      mixture_weighted = FALSE, gene_mask = NULL, labels = c("A", "B"), keep_draws = TRUE,
                      shrinkage_max_iter = 200L, shrinkage_tol = 1e-8, seed = NULL,
                      num_threads = getOption("scribeR.num_threads", 1L),
                      pair_weighting = c("uniform", "min_cells", "harmonic", "total_cells"),
                      incomplete_pairs = c("drop", "error"), biological = FALSE) {
  pairs <- NULL
  if (is_fit_list(fit_a) || is_fit_list(fit_b)) {
    pairs <- resolve_pairs(fit_a, fit_b, pair_weighting, incomplete_pairs)
    fit_a <- pairs$a[[1]]
    fit_b <- pairs$b[[1]]
  }
  check_format(fit_a, "fit_a")
  check_format(fit_b, "fit_b")
  method <- match_choice(method[1], c("auto", "empirical", "parametric", "shrinkage"), "method")
  whole <- function(lo) function(v) v >= lo && v == round(v) && v <= .Machine$integer.max
  check_number(n_samples, "n_samples", "a whole number of at least 2", whole(2))
  check_number(n_samples_dirichlet, "n_samples_dirichlet", "a whole number of at least 0", whole(0))
  check_flag(mixture_weighted, "mixture_weighted")
  check_flag(keep_draws, "keep_draws")
  check_flag(biological, "biological")
  check_number(shrinkage_max_iter, "shrinkage_max_iter", "a whole number of at least 1", whole(1))
  check_number(shrinkage_tol, "shrinkage_tol", "a positive number", function(v) v > 0)
  if (!is.character(labels) || length(labels) != 2L || anyNA(labels)) {
    abort_input("{.arg labels} must be two names, e.g. {.code c(\"ctrl\", \"stim\")}.")
  }
  # Datasets of one fit, named by the caller: the sides take their names.
  if (missing(labels) && is.character(component_a) && is.character(component_b) &&
      length(component_a) == 1L && length(component_b) == 1L) {
    labels <- c(component_a, component_b)
  }
  if (!identical(fit_a@gene_names, fit_b@gene_names)) {
    abort_input(c("{.arg fit_a} and {.arg fit_b} must be fitted to the same genes, in the same order.",
                  "i" = "They have {length(fit_a@gene_names)} and {length(fit_b@gene_names)} genes."))
  }
  # Log-normal fits (Laplace, or the VAE's linear decoder) describe populations.
  laplace <- c(is_ln_population(fit_a), is_ln_population(fit_b))
  if (laplace[1] != laplace[2]) {
    abort_unsupported("{.fn scribe_de} compares two log-normal fits (Laplace or VAE) or two SVI/MCMC fits, not one of each.")
  }
  if (method == "auto") method <- if (laplace[1]) "parametric" else "empirical"
  if (method == "parametric" && !laplace[1]) {
    abort_unsupported(c("{.code method = \"parametric\"} needs two log-normal fits (Laplace or VAE).",
                        "i" = "For SVI and MCMC fits use {.val empirical} or {.val shrinkage}."))
  }
  seed <- resolve_seed(seed)
  genes <- fit_a@gene_names
  keep <- resolve_gene_mask(gene_mask, genes)
  kept <- if (is.null(keep)) genes else genes[keep]
  verbose <- analysis_verbose()
  threads <- resolve_threads(num_threads)
  info <- list(n_samples = as.integer(n_samples), seed = seed, models = c(fit_a@model$model, fit_b@model$model))
  if (biological && (laplace[1] || !is.null(pairs))) {
    abort_unsupported("{.code biological = TRUE} compares two SVI or MCMC fits (or two components of one), not Laplace fits or paired designs.")
  }
  if (!is.null(pairs) && laplace[1]) {
    abort_unsupported("Paired designs compare SVI or MCMC fits; Laplace fits describe populations, not posteriors of a mean.")
  }
  if (laplace[1]) {
    if (!is.null(component_a) || !is.null(component_b) || mixture_weighted) {
      abort_unsupported("Laplace fits have no mixture components; drop {.arg component_a}, {.arg component_b} and {.arg mixture_weighted}.")
    }
    if (identical(fit_a, fit_b)) abort_input("{.arg fit_a} and {.arg fit_b} are the same fit: there is nothing to compare.")
    pa <- de_population(fit_a)
    pb <- de_population(fit_b)
    expression <- cbind(pa$mu - log_sum_exp(pa$mu), pb$mu - log_sum_exp(pb$mu))
    if (method == "parametric") {
      if (!is.null(keep)) abort_unsupported("{.arg gene_mask} applies to empirical comparisons; the parametric one uses all genes.")
      ma <- call_core(rs_de_clr_moments(pa))
      mb <- call_core(rs_de_clr_moments(pb))
      moments <- list(mean = ma$mean - mb$mean, sd = sqrt(ma$var + mb$var), populations = list(pa, pb))
      stats <- call_core(rs_de_gaussian_stats(moments$mean, moments$sd, 0))
      delta <- matrix(numeric(0), 0, 0)
    } else {
      d <- call_core(rs_de_gaussian(pa, pb, as.numeric(n_samples), seed,
                                    if (is.null(keep)) NULL else keep, verbose, threads))
      delta <- as_draw_matrix(d, kept)
    }
  } else {
    comps <- resolve_de_components(fit_a, fit_b, component_a, component_b, mixture_weighted)
    same <- is.null(pairs) && identical(fit_a, fit_b)
    if (same && identical(comps[1], comps[2])) {
      abort_input(c("Both sides are the same fit and component: there is nothing to compare.",
                    "i" = "Give a second fit, or two different {.arg component_a} and {.arg component_b}."))
    }
    opts <- list(component_a = comps[[1]], component_b = comps[[2]],
                 n_dirichlet = as.numeric(n_samples_dirichlet), gene_mask = keep, biological = biological)
    if (is.null(pairs)) {
      d <- call_core(rs_de_nb(core_view(fit_a), if (same) NULL else core_view(fit_b), as.numeric(n_samples),
                              seed, opts, verbose, threads))
      expression <- cbind(nb_log_composition(fit_a, comps[[1]]), nb_log_composition(fit_b, comps[[2]]))
    } else {
      for (side in c("a", "b")) for (nm in names(pairs[[side]])) {
        f <- pairs[[side]][[nm]]
        if (!is(f, "ScribeLayoutResults") || !identical(f@gene_names, genes)) {
          abort_input("Every fit of a paired design must be an SVI or MCMC fit to the same genes ({.arg fit_{side}}${nm} is not).")
        }
        resolve_de_components(f, f, if (side == "a") component_a else component_b,
                              if (side == "a") component_a else component_b, mixture_weighted)
      }
      d <- call_core(rs_de_nb_pairs(lapply(pairs$a, core_view), lapply(pairs$b, core_view), pairs$weights,
                                    as.numeric(n_samples), seed, opts, verbose, threads))
      avg <- function(side, comp) Reduce(`+`, Map(function(f, w) w * nb_log_composition(f, comp), pairs[[side]], pairs$weights))
      expression <- cbind(avg("a", comps[[1]]), avg("b", comps[[2]]))
      info$pairs <- data.frame(pair = names(pairs$a), weight = pairs$weights,
                               cells_a = vapply(pairs$a, function(f) length(f@cell_names), integer(1)),
                               cells_b = vapply(pairs$b, function(f) length(f@cell_names), integer(1)),
                               row.names = NULL)
    }
    delta <- as_draw_matrix(d, kept)
    if (n_components_of(fit_a) > 1L || n_components_of(fit_b) > 1L) {
      info$components <- vapply(comps, function(k) if (k < 0) NA_integer_ else as.integer(k + 1), integer(1))
    }
    info$paired <- same
    info$n_samples_dirichlet <- as.integer(n_samples_dirichlet)
  }
  bio <- list()
  if (biological) {
    if (any(comps < 0)) abort_unsupported("{.code biological = TRUE} needs one component per side, not {.arg mixture_weighted}.")
    sel <- if (is.null(keep)) seq_along(genes) else which(keep)
    b <- d$biological
    pick <- function(st) lapply(st, function(v) if (length(v) == length(genes)) v[sel] else v)
    bio <- list(lfc = pick(b$lfc), lvr = pick(b$lvr), kl_mean = b$kl_mean[sel], kl_sd = b$kl_sd[sel],
                mu_a = b$mu_a[sel], mu_b = b$mu_b[sel], var_a = b$var_a[sel], var_b = b$var_b[sel])
  }
  rownames(expression) <- genes
  colnames(expression) <- labels
  expression <- expression[kept, , drop = FALSE]
  if (method %in% c("empirical", "shrinkage")) {
    stats <- call_core(rs_de_empirical(delta, nrow(delta), 0))
    moments <- list()
    if (method == "shrinkage") {
      moments <- list(mean = stats$delta_mean, sd = stats$delta_sd, max_iter = as.numeric(shrinkage_max_iter),
                      tol = shrinkage_tol)
      sh <- call_core(rs_de_shrink(moments$mean, moments$sd, 0, moments$max_iter, moments$tol))
      stats <- sh$stats
      moments$prior <- sh[c("grid", "weights", "null_proportion", "converged", "n_iter", "log_likelihood")]
    }
    if (!keep_draws) delta <- matrix(numeric(0), 0, 0)
  }
  new("ScribeDEResults", method = method, labels = labels, gene_names = kept, stats = stats,
      delta = delta, moments = moments, expression = expression, info = info, biological = bio)
}

# The core's gene-major draws as a draws x genes matrix, without copying them
# (setting dim() on an unshared vector modifies it in place).
as_draw_matrix <- function(d, genes) {
  delta <- d$delta
  dim(delta) <- c(d$n, length(genes))
  dimnames(delta) <- list(NULL, genes)
  delta
}

is_fit_list <- function(x) is.list(x) && !isS4(x)

# The complete pairs of two named lists of fits, and their weights.
resolve_pairs <- function(fit_a, fit_b, pair_weighting, incomplete_pairs) {
  pair_weighting <- match_choice(pair_weighting[1], c("uniform", "min_cells", "harmonic", "total_cells"), "pair_weighting")
  incomplete_pairs <- match_choice(incomplete_pairs[1], c("drop", "error"), "incomplete_pairs")
  for (arg in c("fit_a", "fit_b")) {
    x <- get(arg)
    if (!is_fit_list(x) || !length(x) || is.null(names(x)) || any(names(x) == "") || anyDuplicated(names(x))) {
      abort_input(c("{.arg {arg}} must be a fit, or (for a paired design) a named list of fits, one per pair (e.g. donor).",
                    "i" = "Both {.arg fit_a} and {.arg fit_b} are then lists, matched by name."))
    }
    for (nm in names(x)) check_format(x[[nm]], sprintf("%s$%s", arg, nm))
  }
  both <- intersect(names(fit_a), names(fit_b))
  lone <- setdiff(union(names(fit_a), names(fit_b)), both)
  if (length(lone)) {
    if (incomplete_pairs == "error") abort_input("Pairs seen on one side only: {.val {lone}}.")
    cli::cli_inform("Dropping {length(lone)} pair{?s} seen on one side only: {.val {lone}}.")
  }
  if (length(both) < 2L) abort_input("A paired design needs at least 2 complete pairs; {length(both)} found.")
  a <- fit_a[both]
  b <- fit_b[both]
  na <- vapply(a, function(f) length(f@cell_names), integer(1))
  nb <- vapply(b, function(f) length(f@cell_names), integer(1))
  w <- switch(pair_weighting, uniform = rep(1, length(both)), min_cells = pmin(na, nb),
              harmonic = na * nb / (na + nb), total_cells = na + nb)
  list(a = a, b = b, weights = unname(as.numeric(w / sum(w))))
}

log_sum_exp <- function(x) {
  m <- max(x)
  m + log(sum(exp(x - m)))
}

# `gene_mask` as a logical vector over `genes`, or NULL for all.
resolve_gene_mask <- function(gene_mask, genes) {
  if (is.null(gene_mask)) return(NULL)
  if (is.character(gene_mask)) {
    bad <- setdiff(gene_mask, genes)
    if (length(bad)) abort_input("{.arg gene_mask} names genes the fits do not have: {.val {utils::head(bad, 5)}}.")
    gene_mask <- genes %in% gene_mask
  }
  if (!is.logical(gene_mask) || length(gene_mask) != length(genes) || anyNA(gene_mask)) {
    abort_input("{.arg gene_mask} must be gene names or {length(genes)} TRUE/FALSE values (one per gene).")
  }
  if (sum(gene_mask) < 2L) abort_input("{.arg gene_mask} must keep at least 2 genes.")
  if (all(gene_mask)) return(NULL)
  gene_mask
}

# The 0-based component of each side (-1: the weighted mixture).
resolve_de_components <- function(fit_a, fit_b, component_a, component_b, mixture_weighted) {
  one <- function(fit, comp, arg) {
    k <- n_components_of(fit)
    if (is.null(comp)) {
      if (k == 1L) return(0)
      if (mixture_weighted) return(-1)
      if (!is.null(fit@model$dataset_levels)) {
        abort_input(c("{.arg {arg}} is needed: the fit has {k} datasets.",
                      "i" = "Give a dataset ({.val {fit@model$dataset_levels}}) or {.code mixture_weighted = TRUE} (weighted by the datasets' cells)."))
      }
      abort_input(c("{.arg {arg}} is needed: the fit is a mixture of {k} components.",
                    "i" = "Give a component (1 to {k}) or {.code mixture_weighted = TRUE}."))
    }
    if (mixture_weighted) abort_input("Give either {.arg {arg}} or {.code mixture_weighted = TRUE}, not both.")
    levels <- fit@model$dataset_levels
    if (is.character(comp) && length(comp) == 1L && !is.null(levels)) {
      if (!comp %in% levels) abort_input("{.arg {arg}} {.val {comp}} is not a dataset of the fit ({.val {levels}}).")
      comp <- match(comp, levels)
    }
    check_number(comp, arg, sprintf("a %s from 1 to %d", if (is.null(levels)) "component" else "dataset (or its name)", k),
                 function(v) v >= 1 && v <= k && v == round(v))
    as.numeric(comp - 1)
  }
  list(one(fit_a, component_a, "component_a"), one(fit_b, component_b, "component_b"))
}

# Log of the expected composition r / sum(r) at the point estimate (for MA plots).
nb_log_composition <- function(fit, comp) {
  map <- get_map(fit)
  r <- map$r
  if (is.matrix(r)) {
    r <- if (comp < 0) colSums(r * map$mixing_weights) else r[comp + 1, ]
  }
  log(r) - log(sum(r))
}

# Whether a fit is of a log-normal model whose cells form a Gaussian
# population of latents: a Laplace fit, or a log-normal VAE.
is_ln_population <- function(fit) {
  is(fit, "ScribeLaplaceResults") || (is(fit, "ScribeVAEResults") && is_ln_vae(fit))
}

# A log-normal fit as a population list(mu, w (row-major), d, k) over all its
# genes; LNM's reference gene gets mu = 0, a zero row of W and d = 0. A VAE's
# population is its decoder's image of the N(0, I) prior (a flow prior is not
# Gaussian, so it is refused).
de_population <- function(fit) {
  p <- if (is(fit, "ScribeVAEResults")) vae_ln_params(fit) else fit@params
  genes <- fit@gene_names
  k <- ncol(p$W)
  mu <- stats::setNames(numeric(length(genes)), genes)
  d <- mu
  w <- matrix(0, length(genes), k, dimnames = list(genes, NULL))
  mu[names(p$mu)] <- p$mu
  d[names(p$d)] <- p$d
  w[rownames(p$W), ] <- p$W
  list(mu = unname(mu), w = as.vector(t(w)), d = unname(d), k = as.numeric(k))
}

# A log-normal VAE's mu, W and d (named by its latent coordinates), read from
# its parameters without counts.
vae_ln_params <- function(fit) {
  check_format(fit)
  if (!identical(fit@config$vae$flow_type, "none")) {
    abort_unsupported(c("{.fn scribe_de} of a VAE fit with a flow prior is not available: its population of latents is not Gaussian.",
                        "i" = "Fit with {.code vae_flow_type = \"none\"}, or compare Laplace fits."))
  }
  k <- as.integer(fit@config$vae$latent_dim)
  res <- call_core(rs_ln_vae_population(fit@params, as.numeric(k)))
  coords <- ln_vae_coords(fit)
  list(mu = stats::setNames(res$mu, coords), d = stats::setNames(res$d, coords),
       W = matrix(res$w, ncol = k, byrow = TRUE, dimnames = list(coords, NULL)))
}

# Per-gene summaries at thresholds `taus`, recomputed from what the result keeps.
de_stats <- function(de, taus) {
  if (identical(taus, 0) || identical(as.numeric(taus), de@stats$taus)) return(de@stats)
  switch(de@method,
    parametric = call_core(rs_de_gaussian_stats(de@moments$mean, de@moments$sd, taus)),
    shrinkage = call_core(rs_de_shrink(de@moments$mean, de@moments$sd, taus, de@moments$max_iter,
                                       de@moments$tol))$stats,
    empirical = {
      if (!length(de@delta)) {
        abort_input(c("This result kept no draws, so its summaries exist at {.code tau = 0} only.",
                      "i" = "Rerun {.fn scribe_de} with {.code keep_draws = TRUE}."))
      }
      call_core(rs_de_empirical(de@delta, nrow(de@delta), taus))
    }
  )
}

check_tau <- function(tau) {
  check_number(tau, "tau", "a number of at least 0 (a log-ratio, e.g. log(1.1))", function(v) is.finite(v) && v >= 0)
  as.numeric(tau)
}

check_pefp <- function(target_pefp, allow_null = TRUE) {
  check_number(target_pefp, "target_pefp", "a number in (0, 1)", function(v) v > 0 && v < 1, allow_null = allow_null)
}

#' Calling differentially expressed genes
#'
#' `call_de()` calls the genes whose (tau-) lfsr lies below the threshold
#' that keeps the posterior expected false-discovery proportion (PEFP: the
#' mean lfsr of the genes called) at `target_pefp`, choosing the largest
#' such set. With `lfsr_threshold` instead, it applies the fixed rule
#' `lfsr < lfsr_threshold & prob_effect > prob_effect_threshold`.
#'
#' `as.data.frame()` returns one row per gene: `gene`, `delta_mean`,
#' `delta_sd`, `prob_positive`, `lfsr`, `prob_up`, `prob_down`,
#' `prob_effect`, `lfsr_tau` (at `tau`), the log expected composition of
#' each side (`log_expr_<label>`), with `target_pefp` a column `is_de`, and
#' for results made with `biological = TRUE` the posterior mean, sd and lfsr
#' of the log fold change of the means (`bio_lfc_*`) and of the log variance
#' ratio (`bio_lvr_*`), the Jeffreys divergence (`bio_kl_mean`, `bio_kl_sd`)
#' and each side's posterior mean expression (`mu_<label>`).
#'
#' @param x,de A [ScribeDEResults-class] object.
#' @param tau Practical-significance threshold on `delta` (a log-ratio):
#'   `prob_up = P(delta > tau)`, `prob_down = P(delta < -tau)`,
#'   `lfsr_tau = 1 - max(prob_up, prob_down)`.
#' @param target_pefp Target PEFP (`NULL`: no calls).
#' @param use_lfsr_tau Call on `lfsr_tau` (else on `lfsr`).
#' @param lfsr_threshold,prob_effect_threshold The fixed rule (instead of
#'   `target_pefp`).
#' @param row.names,optional Unused (for the generic).
#' @param ... Unused.
#' @return `call_de()`: a named logical vector; `as.data.frame()`: a data
#'   frame.
#' @examples
#' counts <- scribe_example_data()
#' half <- seq_len(ncol(counts)) <= ncol(counts) / 2
#' fa <- scribe_fit(counts[, half], model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#' fb <- scribe_fit(counts[, !half], model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#' de <- scribe_de(fa, fb, n_samples = 200, seed = 2)
#' sum(call_de(de, target_pefp = 0.05))
#' @name call_de
#' @export
call_de <- function(de, tau = 0, target_pefp = 0.05, use_lfsr_tau = TRUE, lfsr_threshold = NULL,
                    prob_effect_threshold = 0.95) {
  check_de(de)
  tau <- check_tau(tau)
  check_flag(use_lfsr_tau, "use_lfsr_tau")
  s <- de_stats(de, tau)
  if (!is.null(lfsr_threshold)) {
    check_number(lfsr_threshold, "lfsr_threshold", "a number in (0, 1]", function(v) v > 0 && v <= 1)
    check_number(prob_effect_threshold, "prob_effect_threshold", "a number in [0, 1]", function(v) v >= 0 && v <= 1)
    called <- s$lfsr < lfsr_threshold & s$prob_effect > prob_effect_threshold
  } else {
    check_pefp(target_pefp, allow_null = FALSE)
    l <- if (use_lfsr_tau) s$lfsr_tau else s$lfsr
    called <- l < call_core(rs_de_threshold(l, target_pefp))$threshold
  }
  stats::setNames(called, de@gene_names)
}

check_de <- function(de) {
  if (!is(de, "ScribeDEResults")) abort_input("{.arg de} must be a result of {.fn scribe_de}, not {.cls {class(de)[1]}}.")
}

#' @rdname call_de
#' @export
as.data.frame.ScribeDEResults <- function(x, row.names = NULL, optional = FALSE, ..., tau = 0, target_pefp = NULL,
                                          use_lfsr_tau = TRUE) {
  tau <- check_tau(tau)
  check_pefp(target_pefp)
  s <- de_stats(x, tau)
  out <- data.frame(gene = x@gene_names, delta_mean = s$delta_mean, delta_sd = s$delta_sd,
                    prob_positive = s$prob_positive, lfsr = s$lfsr, prob_up = s$prob_up,
                    prob_down = s$prob_down, prob_effect = s$prob_effect, lfsr_tau = s$lfsr_tau,
                    stringsAsFactors = FALSE)
  out[[paste0("log_expr_", x@labels[1])]] <- unname(x@expression[, 1])
  out[[paste0("log_expr_", x@labels[2])]] <- unname(x@expression[, 2])
  if (!is.null(target_pefp)) {
    out$is_de <- unname(call_de(x, tau = tau, target_pefp = target_pefp, use_lfsr_tau = use_lfsr_tau))
  }
  b <- x@biological
  if (length(b)) {
    out$bio_lfc_mean <- b$lfc$delta_mean
    out$bio_lfc_sd <- b$lfc$delta_sd
    out$bio_lfc_lfsr <- b$lfc$lfsr
    out$bio_lvr_mean <- b$lvr$delta_mean
    out$bio_lvr_sd <- b$lvr$delta_sd
    out$bio_lvr_lfsr <- b$lvr$lfsr
    out$bio_kl_mean <- b$kl_mean
    out$bio_kl_sd <- b$kl_sd
    out[[paste0("mu_", x@labels[1])]] <- b$mu_a
    out[[paste0("mu_", x@labels[2])]] <- b$mu_b
  }
  out
}

#' @rdname ScribeDEResults-class
#' @param object A `ScribeDEResults` object.
#' @export
setMethod("show", "ScribeDEResults", function(object) {
  n <- length(object@gene_names)
  draws <- if (object@method == "parametric") "exact Gaussian marginals" else
    sprintf("%d draws", if (length(object@delta)) nrow(object@delta) else object@info$n_samples)
  cat(sprintf("<ScribeDEResults> %s: %s vs %s, %d genes, %s\n", object@method, object@labels[1],
              object@labels[2], n, draws))
  comps <- object@info$components
  if (!is.null(comps)) {
    cat(sprintf("  components: %s\n", paste(ifelse(is.na(comps), "weighted mixture", comps), collapse = " vs ")))
  }
  pr <- object@info$pairs
  if (!is.null(pr)) {
    cat(sprintf("  paired design: %d pairs (%s), weights %s\n", nrow(pr), paste(utils::head(pr$pair, 5), collapse = ", "),
                paste(format(round(pr$weight, 3)), collapse = " ")))
  }
  if (object@method == "shrinkage") {
    pr <- object@moments$prior
    cat(sprintf("  shrinkage prior: null proportion %.3f (EM %s after %d iterations)\n", pr$null_proportion,
                if (isTRUE(pr$converged)) "converged" else "stopped", as.integer(pr$n_iter)))
  }
  called <- call_de(object, tau = 0, target_pefp = 0.05, use_lfsr_tau = FALSE)
  cat(sprintf("  called at PEFP 0.05 (tau = 0): %d genes (%d up in %s, %d up in %s)\n", sum(called),
              sum(called & object@stats$delta_mean > 0), object@labels[1],
              sum(called & object@stats$delta_mean < 0), object@labels[2]))
  top <- order(object@stats$lfsr, -abs(object@stats$delta_mean))[seq_len(min(10L, n))]
  if (length(top)) {
    tab <- data.frame(gene = object@gene_names[top], delta_mean = signif(object@stats$delta_mean[top], 3),
                      delta_sd = signif(object@stats$delta_sd[top], 3), lfsr = signif(object@stats$lfsr[top], 3))
    cat("  top genes by lfsr:\n")
    print(tab, row.names = FALSE)
  }
  invisible(object)
})

#' Gene-set tests on a differential expression result
#'
#' For each set, the isometric log-ratio balance of the set against all
#' other genes, `b = sum_g v_g delta_g` with `v_g = +sqrt(n_out / (n_in D))`
#' on the set and `-sqrt(n_in / (n_out D))` off it (the log geometric-mean
#' ratio of the set to the rest, scaled), summarised per draw like a gene;
#' sets are called at `target_pefp` on their lfsr. Empirical and shrinkage
#' results use their draws (`keep_draws = TRUE`; shrinkage does not apply to
#' balances); parametric results the exact Gaussian moments of the balance,
#' `c' mu` and `|W'c|^2 + sum c_g^2 d_g` per side.
#'
#' @param de A [ScribeDEResults-class] object.
#' @param sets A named list of character vectors of genes.
#' @param tau Practical-significance threshold on the balance.
#' @param target_pefp Target PEFP over the sets.
#' @return A data frame with one row per set: `set`, `n_genes`,
#'   `balance_mean`, `balance_sd`, `prob_positive`, `lfsr`, `prob_effect`,
#'   `lfsr_tau`, `is_de`.
#' @examples
#' counts <- scribe_example_data()
#' half <- seq_len(ncol(counts)) <= ncol(counts) / 2
#' fa <- scribe_fit(counts[, half], model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#' fb <- scribe_fit(counts[, !half], model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#' de <- scribe_de(fa, fb, n_samples = 200, seed = 2)
#' test_gene_sets(de, list(first = rownames(counts)[1:10]))
#' @export
test_gene_sets <- function(de, sets, tau = 0, target_pefp = 0.05) {
  check_de(de)
  tau <- check_tau(tau)
  check_pefp(target_pefp, allow_null = FALSE)
  parametric <- identical(de@method, "parametric")
  if (!parametric && !length(de@delta)) {
    abort_unsupported(c("{.fn test_gene_sets} needs the draws of an empirical comparison.",
                        "i" = "Rerun {.fn scribe_de} with {.code keep_draws = TRUE}."))
  }
  if (!is.list(sets) || !length(sets) || is.null(names(sets)) || any(names(sets) == "") ||
      !all(vapply(sets, is.character, logical(1)))) {
    abort_input("{.arg sets} must be a named list of character vectors of genes.")
  }
  idx <- lapply(names(sets), function(nm) {
    i <- match(unique(sets[[nm]]), de@gene_names)
    if (anyNA(i)) {
      abort_input("{.arg sets}: set {.val {nm}} names genes not in the comparison: {.val {utils::head(sets[[nm]][is.na(i)], 5)}}.")
    }
    if (length(i) >= length(de@gene_names)) abort_input("{.arg sets}: set {.val {nm}} holds every gene; it needs genes outside it.")
    as.numeric(i - 1L)
  })
  s <- if (parametric) {
    m <- call_core(rs_de_gaussian_balances(de@moments$populations[[1]], de@moments$populations[[2]], idx))
    call_core(rs_de_gaussian_stats(m$mean, m$sd, tau))
  } else {
    b <- call_core(rs_de_balances(de@delta, nrow(de@delta), idx))
    call_core(rs_de_empirical(b, nrow(de@delta), tau))
  }
  out <- data.frame(set = names(sets), n_genes = lengths(idx), balance_mean = s$delta_mean,
                    balance_sd = s$delta_sd, prob_positive = s$prob_positive, lfsr = s$lfsr,
                    prob_effect = s$prob_effect, lfsr_tau = s$lfsr_tau, stringsAsFactors = FALSE)
  out$is_de <- out$lfsr_tau < call_core(rs_de_threshold(out$lfsr_tau, target_pefp))$threshold
  out
}

#' Volcano and MA plots of a differential expression result
#'
#' `plot_volcano()`: `delta_mean` against `-log10(lfsr)` (lfsr floored at
#' `1 / (draws + 1)`, the resolution of the empirical estimate);
#' `plot_ma()`: the mean of the two sides' log expected compositions
#' against `delta_mean`. Genes called at `target_pefp` are highlighted.
#'
#' @inheritParams call_de
#' @param de A [ScribeDEResults-class] object.
#' @param label Number of top genes (by lfsr) to label.
#' @return A ggplot object.
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   counts <- scribe_example_data()
#'   half <- seq_len(ncol(counts)) <= ncol(counts) / 2
#'   fa <- scribe_fit(counts[, half], model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#'   fb <- scribe_fit(counts[, !half], model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#'   de <- scribe_de(fa, fb, n_samples = 200, seed = 2)
#'   plot_volcano(de)
#'   plot_ma(de)
#' }
#' @export
plot_volcano <- function(de, tau = 0, target_pefp = 0.05, label = 10L) {
  df <- de_plot_frame(de, tau, target_pefp, "plot_volcano")
  floor <- if (length(de@delta)) 1 / (nrow(de@delta) + 1) else 1e-300
  df$y <- -log10(pmax(df$lfsr_tau, floor))
  de_plot(df, "delta_mean", "y", label, de,
          xlab = sprintf("delta (CLR %s - %s)", de@labels[1], de@labels[2]),
          ylab = if (tau > 0) sprintf("-log10 lfsr (tau = %g)", tau) else "-log10 lfsr")
}

#' @rdname plot_volcano
#' @export
plot_ma <- function(de, tau = 0, target_pefp = 0.05, label = 10L) {
  df <- de_plot_frame(de, tau, target_pefp, "plot_ma")
  df$a <- (df[[paste0("log_expr_", de@labels[1])]] + df[[paste0("log_expr_", de@labels[2])]]) / 2
  de_plot(df, "a", "delta_mean", label, de, xlab = "mean log expected composition",
          ylab = sprintf("delta (CLR %s - %s)", de@labels[1], de@labels[2]))
}

de_plot_frame <- function(de, tau, target_pefp, fn) {
  require_ggplot(fn)
  check_de(de)
  as.data.frame.ScribeDEResults(de, tau = tau, target_pefp = target_pefp)
}

de_plot <- function(df, x, y, label, de, xlab, ylab) {
  check_number(label, "label", "a whole number of at least 0", function(v) v >= 0 && v == round(v))
  df$called <- factor(ifelse(df$is_de, "called", "not called"), levels = c("called", "not called"))
  top <- df[order(df$lfsr_tau, -abs(df$delta_mean)), , drop = FALSE][seq_len(min(label, nrow(df))), , drop = FALSE]
  p <- ggplot2::ggplot(df, ggplot2::aes(x = .data[[x]], y = .data[[y]], colour = .data$called)) +
    ggplot2::geom_point(size = 0.8, alpha = 0.7) +
    ggplot2::scale_colour_manual(values = c(called = "#b2182b", `not called` = "grey60"), drop = FALSE) +
    ggplot2::labs(x = xlab, y = ylab, colour = NULL,
                  title = sprintf("%s vs %s (%s)", de@labels[1], de@labels[2], de@method)) +
    ggplot2::theme_minimal()
  if (nrow(top)) p <- p + ggplot2::geom_text(data = top, ggplot2::aes(label = .data$gene), size = 3,
                                             vjust = -0.6, show.legend = FALSE)
  p
}

# add_scribe_fit() for a DE result: per-gene columns, NA for genes not compared.
add_de_columns <- function(obj, de, overwrite) {
  check_flag(overwrite, "overwrite")
  seurat <- inherits(obj, "Seurat")
  if (!seurat && !is(obj, "SummarizedExperiment")) {
    abort_input("{.arg sce} must be a SingleCellExperiment, SummarizedExperiment or Seurat object, not {.cls {class(obj)[1]}}.")
  }
  genes <- rownames(obj)
  idx <- match(de@gene_names, genes)
  if (anyNA(idx)) abort_input("{.arg sce} lacks genes of the comparison, e.g. {.val {de@gene_names[is.na(idx)][1]}}.")
  col <- function(v) {
    full <- rep(if (is.logical(v)) NA else NA_real_, length(genes))
    full[idx] <- unname(v)
    full
  }
  cols <- list(scribe_de_delta_mean = col(de@stats$delta_mean), scribe_de_delta_sd = col(de@stats$delta_sd),
               scribe_de_lfsr = col(de@stats$lfsr),
               scribe_de_is_de = col(call_de(de, target_pefp = 0.05, use_lfsr_tau = FALSE)))
  summary <- list(method = de@method, labels = de@labels, target_pefp = 0.05, tau = 0)
  if (seurat) {
    if (!requireNamespace("SeuratObject", quietly = TRUE)) abort_input("Seurat write-back needs {.pkg SeuratObject}.")
    assay <- SeuratObject::DefaultAssay(obj)
    if (any(names(cols) %in% names(obj[[assay]][[]])) && !overwrite) {
      abort_input("The feature metadata already has scribe_de columns; use {.code overwrite = TRUE}.")
    }
    obj[[assay]] <- SeuratObject::AddMetaData(obj[[assay]], metadata = data.frame(cols, row.names = genes))
    SeuratObject::Misc(obj, "scribe_de") <- summary
    return(obj)
  }
  rd <- SummarizedExperiment::rowData(obj)
  if (any(names(cols) %in% names(rd)) && !overwrite) {
    abort_input("{.code rowData(sce)} already has scribe_de columns; use {.code overwrite = TRUE} to replace them.")
  }
  for (n in names(cols)) rd[[n]] <- cols[[n]]
  SummarizedExperiment::rowData(obj) <- rd
  md <- S4Vectors::metadata(obj)
  md$scribe_de <- summary
  S4Vectors::metadata(obj) <- md
  obj
}
