#' @include results.R
NULL

# MCMC (NUTS) fits: argument checks, the results class and its summaries.
# Sampling and every number here come from the core (scribe-core/src/mcmc);
# convergence diagnostics (R-hat, ESS) come from the posterior package.

.mcmc_config_keys <- c("target_accept_prob", "max_tree_depth", "dense_mass", "init_radius", "init_spread")

resolve_mcmc_config <- function(cfg) {
  if (is.null(cfg)) cfg <- list()
  if (!is.list(cfg) || (length(cfg) && (is.null(names(cfg)) || any(names(cfg) == "")))) {
    abort_input("{.arg mcmc_config} must be NULL or a named list.")
  }
  bad <- setdiff(names(cfg), .mcmc_config_keys)
  if (length(bad)) {
    abort_input(c("Unknown {.arg mcmc_config} field{?s}: {.val {bad}}.", "i" = "Known: {.val {(.mcmc_config_keys)}}."))
  }
  out <- core_defaults()$mcmc[.mcmc_config_keys]
  out[names(cfg)] <- cfg
  check_number(out$target_accept_prob, "mcmc_config$target_accept_prob", "a number in (0, 1)", function(v) v > 0 && v < 1)
  check_number(out$max_tree_depth, "mcmc_config$max_tree_depth", "a whole number between 1 and 30",
               function(v) v >= 1 && v <= 30 && v == round(v))
  check_flag(out$dense_mass, "mcmc_config$dense_mass")
  check_number(out$init_radius, "mcmc_config$init_radius", "a number >= 0", function(v) v >= 0)
  check_number(out$init_spread, "mcmc_config$init_spread", "a number >= 0", function(v) v >= 0)
  out$target_accept_prob <- as.numeric(out$target_accept_prob)
  out$max_tree_depth <- as.numeric(out$max_tree_depth)
  out$init_radius <- as.numeric(out$init_radius)
  out$init_spread <- as.numeric(out$init_spread)
  out
}

# Number of unconstrained parameters NUTS moves in (the model's layout, from the core).
mcmc_dimension <- function(model_spec, n_genes, n_cells) {
  sum(call_core(rs_model_layout(model_spec, as.integer(n_genes), as.integer(n_cells)))$len)
}

check_svi_init <- function(svi_init, counts, model_spec) {
  if (is.null(svi_init)) return(NULL)
  if (!is(svi_init, "ScribeSVIResults")) {
    abort_input("{.arg svi_init} must be an SVI fit ({.cls ScribeSVIResults}), not {.cls {class(svi_init)[1]}}.")
  }
  check_format(svi_init, "svi_init")
  genes <- rownames(counts)
  cells <- colnames(counts)
  if (length(svi_init@gene_names) != nrow(counts) || (!is.null(genes) && !identical(svi_init@gene_names, genes))) {
    abort_input("{.arg svi_init} was fitted to different genes ({length(svi_init@gene_names)}, the data have {nrow(counts)}).")
  }
  if (length(svi_init@cell_names) != ncol(counts) || (!is.null(cells) && !identical(svi_init@cell_names, cells))) {
    abort_input("{.arg svi_init} was fitted to different cells ({length(svi_init@cell_names)}, the data have {ncol(counts)}).")
  }
  if (!identical(svi_init@model$model, model_spec$model)) {
    cli::cli_warn(c("{.arg svi_init} is a {.val {svi_init@model$model}} fit; MCMC samples {.val {model_spec$model}}.",
                    "i" = "Shared parameters start from the SVI estimate, the others from the data."))
  }
  core_view(svi_init)
}

fit_mcmc <- function(counts, dropped, model, a, shared) {
  model_spec <- nb_model_spec(model, a, ncol(counts))
  check_number(a$n_samples, "n_samples", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  check_number(a$n_warmup, "n_warmup", "a whole number from 0 to 2147483647", function(v) v >= 0 && v <= .Machine$integer.max && v == round(v))
  check_number(a$n_chains, "n_chains", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  cfg <- resolve_mcmc_config(a$mcmc_config)
  init <- check_svi_init(a$svi_init, counts, model_spec)
  dim <- mcmc_dimension(model_spec, nrow(counts), ncol(counts))
  if (dim > getOption("scribeR.mcmc_warn_dim", 20000)) {
    cli::cli_warn(c(
      "NUTS will move in {dim} dimensions{if (model_spec$model %in% c('nbvcp', 'zinbvcp')) paste0(' (', ncol(counts), ' of them per-cell capture)') else ''}; this can take hours.",
      "i" = "Consider SVI, a subset of genes or cells, or {.arg svi_init} with a short {.arg n_warmup}."
    ))
  }
  mcmc <- c(list(n_samples = as.numeric(a$n_samples), n_warmup = as.numeric(a$n_warmup),
                 n_chains = as.numeric(a$n_chains), seed = shared$seed), cfg)
  t0 <- proc.time()[["elapsed"]]
  res <- call_core(rs_mcmc_fit(counts_slots(counts), model_spec, mcmc, init, shared$verbose, shared$num_threads))
  elapsed <- proc.time()[["elapsed"]] - t0
  nm <- fit_names(counts)
  draws <- matrix(res$draws, nrow = res$dim)
  fit <- new("ScribeMCMCResults",
    model = model_spec, priors = res$priors, gene_names = nm$genes, cell_names = nm$cells,
    dropped_cells = dropped, seed = shared$seed, counts_summary = shared$counts_summary,
    layout = layout_frame(res$layout),
    params = list(draws = draws),
    stats = as.data.frame(res$stats),
    config = c(mcmc, list(svi_init = !is.null(init))),
    diagnostics = c(res$per_chain, list(elapsed = elapsed, num_threads = shared$num_threads))
  )
  n_div <- sum(fit@stats$diverging)
  if (n_div > 0) {
    cli::cli_warn(c(
      "{n_div} divergent transition{?s} after warmup ({round(100 * n_div / nrow(fit@stats), 1)}% of draws).",
      "i" = "Draws near the divergences may be biased.",
      "i" = "Raise {.code mcmc_config = list(target_accept_prob = 0.95)}, run longer warmup, or use a
             reparameterization (e.g. {.code unconstrained = TRUE} or another {.arg parameterization})."
    ))
  }
  fit
}

#' MCMC results
#'
#' `ScribeMCMCResults` holds the draws of a NUTS fit (`scribe_fit(...,
#' inference_method = "mcmc")`) and the sampler's statistics. The shared
#' accessors work on it: [get_map()] returns posterior means (derived
#' quantities from the means of the sampled ones), [get_posterior_samples()]
#' returns kept draws, and [log_likelihood()], [denoise_counts()],
#' [normalize_counts()], [posterior_predictive()] and friends use the draws
#' (`n_samples` of them, evenly spaced over chains, recycled if more are asked
#' for). MCMC-specific: [print_summary()], [get_samples()],
#' [posterior::as_draws_array()] and [sampler_diagnostics()].
#'
#' @slot params List: `draws` (unconstrained parameters x draws, chains one
#'   after another; the rows follow `layout`).
#' @slot stats Per-draw sampler statistics: `chain`, `diverging`,
#'   `tree_depth`, `n_leapfrog`, `step_size`, `energy`, `lp`.
#' @slot config List of the sampler settings (`n_samples`, `n_warmup`,
#'   `n_chains`, `seed`, `target_accept_prob`, `max_tree_depth`, `dense_mass`,
#'   ...).
#' @slot diagnostics List: per chain `e_bfmi`, `warmup_divergences`,
#'   `n_grad` (gradient evaluations, warmup included); `elapsed` seconds and
#'   `num_threads`.
#' @name ScribeMCMCResults-class
#' @exportClass ScribeMCMCResults
setClass("ScribeMCMCResults", contains = "ScribeLayoutResults", representation(
  params = "list", stats = "data.frame", config = "list", diagnostics = "list"
))

n_chains_of <- function(fit) as.integer(fit@config$n_chains)
n_kept_of <- function(fit) nrow(fit@stats)

#' @rdname ScribeMCMCResults-class
#' @param object A results object.
#' @export
setMethod("show", "ScribeMCMCResults", function(object) {
  check_format(object, "object")
  m <- object@model
  cfg <- object@config
  d <- object@diagnostics
  cat(sprintf("<ScribeMCMCResults> %s%s (%s%s), NUTS\n", m$model,
              if (!is.null(m$n_components)) sprintf(" mixture of %d components", as.integer(m$n_components)) else "",
              m$parameterization, if (isTRUE(m$unconstrained)) ", unconstrained" else ""))
  cat(sprintf("  data:    %d genes x %d cells; %d parameters\n", length(object@gene_names),
              length(object@cell_names), nrow(object@params$draws)))
  cat(datasets_line(m))
  cat(sprintf("  chains:  %d x (%d warmup + %d draws)%s, %.1f s\n", n_chains_of(object),
              as.integer(cfg$n_warmup), as.integer(cfg$n_samples),
              if (isTRUE(cfg$svi_init)) ", started from SVI" else "", d$elapsed))
  st <- object@stats
  sat <- mean(st$tree_depth >= cfg$max_tree_depth)
  cat(sprintf("  sampler: %d divergences, step size %s, max tree depth reached in %.1f%% of draws, E-BFMI %s\n",
              sum(st$diverging), paste(format(tapply(st$step_size, st$chain, utils::tail, 1), digits = 3), collapse = "/"),
              100 * sat, paste(format(d$e_bfmi, digits = 2), collapse = "/")))
  cat(sprintf("  seed:    %s\n", format(object@seed, scientific = FALSE)))
  cat("  Use print_summary() for R-hat and effective sample sizes.\n")
  invisible(object)
})

setMethod("core_view", "ScribeMCMCResults", function(object) {
  list(model = object@model, layout = layout_list(object), draws = object@params$draws)
})

#' @rdname accessors
#' @export
setMethod("get_posterior_samples", "ScribeMCMCResults", function(object, n_samples = NULL, seed = NULL, ...) {
  if (is.null(n_samples)) n_samples <- n_kept_of(object)
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  name_sites(object, fit_sites(object, n_samples), draws = TRUE)
})

#' Draws of an MCMC fit
#'
#' `get_samples()` returns every kept draw of every site, sampled and derived
#' (as [get_posterior_samples()] with all draws). With `group_by_chain =
#' TRUE` each site gets leading `chain x draw` dimensions.
#'
#' @param object A [ScribeMCMCResults-class] object.
#' @param group_by_chain Keep the chain axis.
#' @param ... Unused.
#' @return A named list of arrays.
#' @examples
#' counts <- scribe_example_data()
#' small <- counts[order(-Matrix::rowSums(counts))[1:10], 1:100]
#' mc <- scribe_fit(small, model = "nbdm", inference_method = "mcmc", n_samples = 100,
#'                  n_warmup = 100, n_chains = 2, seed = 1, verbose = FALSE, drop_empty = TRUE)
#' dim(get_samples(mc, group_by_chain = TRUE)$r)
#' @export
get_samples <- function(object, group_by_chain = FALSE, ...) {
  if (!is(object, "ScribeMCMCResults")) abort_input("{.arg object} must be an MCMC fit ({.cls ScribeMCMCResults}).")
  check_flag(group_by_chain, "group_by_chain")
  s <- get_posterior_samples(object)
  if (!group_by_chain) return(s)
  n_ch <- n_chains_of(object)
  lapply(s, function(v) {
    d <- if (is.null(dim(v))) length(v) else dim(v)
    dn <- if (is.null(dim(v))) list(NULL) else dimnames(v)
    n_per <- d[1] %/% n_ch
    a <- array(v, dim = c(n_per, n_ch, d[-1]), dimnames = c(list(NULL, paste0("chain", seq_len(n_ch))), dn[-1]))
    aperm(a, c(2L, 1L, seq_along(d)[-1] + 1L))
  })
}

# The sampled (not derived) sites, as a draws x variables matrix with
# posterior-style names `site[label]`.
mcmc_variable_matrix <- function(object, derived = FALSE, variables = NULL) {
  s <- get_posterior_samples(object)
  keep <- if (derived) names(s) else intersect(names(s), object@layout$name)
  cols <- list()
  for (n in keep) {
    v <- s[[n]]
    if (is.null(dim(v))) {
      cols[[n]] <- v
    } else if (length(dim(v)) == 2L) {
      labs <- colnames(v)
      if (is.null(labs)) labs <- seq_len(ncol(v))
      m <- v
      colnames(m) <- sprintf("%s[%s]", n, labs)
      cols[[n]] <- m
    } else {
      labs <- dimnames(v)
      m <- matrix(v, nrow = dim(v)[1])
      colnames(m) <- as.vector(outer(labs[[2]], labs[[3]], function(k, g) sprintf("%s[%s,%s]", n, k, g)))
      cols[[n]] <- m
    }
  }
  m <- do.call(cbind, lapply(names(cols), function(n) {
    v <- cols[[n]]
    if (is.null(dim(v))) matrix(v, ncol = 1, dimnames = list(NULL, n)) else v
  }))
  if (!is.null(variables)) {
    miss <- setdiff(variables, colnames(m))
    if (length(miss)) abort_input("{.arg variables} not in the fit: {.val {utils::head(miss, 5)}}.")
    m <- m[, variables, drop = FALSE]
  }
  m
}

#' Convert MCMC draws for the posterior / bayesplot ecosystem
#'
#' @param x A [ScribeMCMCResults-class] object.
#' @param variables Optional variable names (e.g. `"p"`, `"r[LYZ]"`).
#' @param derived Also include derived quantities (`mu`, `phi`, `p_hat`, ...).
#' @param ... Unused.
#' @return A `draws_array` (iterations x chains x variables).
#' @examples
#' counts <- scribe_example_data()
#' small <- counts[order(-Matrix::rowSums(counts))[1:10], 1:100]
#' mc <- scribe_fit(small, model = "nbdm", inference_method = "mcmc", n_samples = 100,
#'                  n_warmup = 100, n_chains = 2, seed = 1, verbose = FALSE, drop_empty = TRUE)
#' posterior::summarise_draws(posterior::as_draws_array(mc))
#' @exportS3Method posterior::as_draws_array
as_draws_array.ScribeMCMCResults <- function(x, variables = NULL, derived = FALSE, ...) {
  m <- mcmc_variable_matrix(x, derived = derived, variables = variables)
  n_ch <- n_chains_of(x)
  n_per <- nrow(m) %/% n_ch
  a <- array(m, dim = c(n_per, n_ch, ncol(m)),
             dimnames = list(iteration = NULL, chain = NULL, variable = colnames(m)))
  posterior::as_draws_array(a)
}

#' Summarise an MCMC fit
#'
#' One row per scalar element of each sampled site (derived quantities with
#' `derived = TRUE`): mean, sd, median, the central `prob` interval, split
#' R-hat and bulk and tail effective sample sizes (rank-normalised, from the
#' posterior package), then the sampler diagnostics: divergences, tree-depth
#' saturation, E-BFMI per chain and the adapted step sizes.
#'
#' @param object A [ScribeMCMCResults-class] object.
#' @param prob Probability mass of the central interval.
#' @param derived Include derived quantities.
#' @param max_rows Rows to print (all are returned).
#' @param ... Unused.
#' @return The summary as a data frame, invisibly.
#' @examples
#' counts <- scribe_example_data()
#' small <- counts[order(-Matrix::rowSums(counts))[1:10], 1:100]
#' mc <- scribe_fit(small, model = "nbdm", inference_method = "mcmc", n_samples = 100,
#'                  n_warmup = 100, n_chains = 2, seed = 1, verbose = FALSE, drop_empty = TRUE)
#' print_summary(mc)
#' @export
print_summary <- function(object, prob = 0.9, derived = FALSE, max_rows = 20L, ...) {
  if (!is(object, "ScribeMCMCResults")) abort_input("{.arg object} must be an MCMC fit ({.cls ScribeMCMCResults}).")
  check_number(prob, "prob", "a number in (0, 1)", function(v) v > 0 && v < 1)
  q <- c((1 - prob) / 2, (1 + prob) / 2)
  d <- as_draws_array.ScribeMCMCResults(object, derived = derived)
  qfun <- function(x) stats::setNames(stats::quantile(x, q, names = FALSE), sprintf("q%g", 100 * q))
  s <- posterior::summarise_draws(d, mean = mean, sd = stats::sd, median = stats::median, qfun,
                                  rhat = posterior::rhat, ess_bulk = posterior::ess_bulk,
                                  ess_tail = posterior::ess_tail)
  s <- as.data.frame(s)
  shown <- utils::head(s, max_rows)
  num <- vapply(shown, is.numeric, logical(1))
  shown[num] <- lapply(shown[num], function(v) signif(v, 4))
  print(shown, row.names = FALSE)
  if (nrow(s) > max_rows) cat(sprintf("... %d more rows (returned invisibly)\n", nrow(s) - max_rows))
  sd <- sampler_diagnostics(object)
  cat(sprintf("\nNumber of divergences: %d\n", sum(sd$divergences)))
  cat(sprintf("Max tree depth (%d) reached: %d draws\n", as.integer(object@config$max_tree_depth), sum(sd$max_depth_hits)))
  cat(sprintf("E-BFMI per chain: %s%s\n", paste(format(sd$e_bfmi, digits = 3), collapse = ", "),
              if (any(sd$e_bfmi < 0.3, na.rm = TRUE)) " (below 0.3: poor exploration of the energy)" else ""))
  cat(sprintf("Step size per chain: %s\n", paste(format(sd$step_size, digits = 3), collapse = ", ")))
  worst <- suppressWarnings(max(s$rhat, na.rm = TRUE))
  if (is.finite(worst) && worst > 1.01) {
    cat(sprintf("Largest R-hat %.3f > 1.01: the chains have not mixed yet; run more draws%s.\n", worst,
                if (isTRUE(object@config$svi_init)) "" else " or start them from an SVI fit (svi_init)"))
  }
  invisible(s)
}

#' Per-chain sampler diagnostics of an MCMC fit
#'
#' @param object A [ScribeMCMCResults-class] object.
#' @return A data frame with one row per chain: `divergences` (after
#'   warmup), `warmup_divergences`, `max_depth_hits` (draws whose tree reached
#'   the maximum depth), `mean_tree_depth`, `step_size` (adapted), `e_bfmi`,
#'   `n_grad` (gradient evaluations, warmup included) and `grad_per_second`.
#' @examples
#' counts <- scribe_example_data()
#' small <- counts[order(-Matrix::rowSums(counts))[1:10], 1:100]
#' mc <- scribe_fit(small, model = "nbdm", inference_method = "mcmc", n_samples = 100,
#'                  n_warmup = 100, n_chains = 2, seed = 1, verbose = FALSE, drop_empty = TRUE)
#' sampler_diagnostics(mc)
#' @export
sampler_diagnostics <- function(object) {
  if (!is(object, "ScribeMCMCResults")) abort_input("{.arg object} must be an MCMC fit ({.cls ScribeMCMCResults}).")
  st <- object@stats
  d <- object@diagnostics
  ch <- factor(st$chain, levels = seq_len(n_chains_of(object)))
  data.frame(
    chain = seq_len(n_chains_of(object)),
    divergences = as.integer(tapply(st$diverging, ch, sum)),
    warmup_divergences = as.integer(d$warmup_divergences),
    max_depth_hits = as.integer(tapply(st$tree_depth >= object@config$max_tree_depth, ch, sum)),
    mean_tree_depth = as.numeric(tapply(st$tree_depth, ch, mean)),
    step_size = as.numeric(tapply(st$step_size, ch, utils::tail, 1)),
    e_bfmi = d$e_bfmi,
    n_grad = d$n_grad,
    grad_per_second = sum(d$n_grad) / d$elapsed
  )
}
