#' @include results.R
NULL

# VAE fits of the NB-family models: the engine function of the engine table
# (R/fit.R) and the results class. Training runs in the core
# (scribe-core/src/vae); the parameters come back in named pieces (global
# guide, encoder, decoder, prior flow), which only the core interprets. The
# downstream verbs (log_likelihood, posterior_predictive, denoise_counts,
# get_map) pass the counts back to the core, which encodes and decodes each
# cell (scribe-core/src/vae/analysis.rs).

fit_vae <- function(counts, dropped, model, a, shared) {
  model_spec <- if (model %in% .lognormal_models) ln_vae_spec(model, a) else nb_model_spec(model, a, ncol(counts))
  vae <- resolve_vae(a, nrow(counts), model)
  svi <- list(
    n_steps = as.numeric(a$n_steps), batch_size = if (is.null(a$batch_size)) NULL else as.numeric(a$batch_size),
    optimizer_config = resolve_optimizer(a$optimizer_config), stable_update = a$stable_update,
    restore_best = FALSE, seed = shared$seed
  )
  t0 <- proc.time()[["elapsed"]]
  res <- call_core(rs_vae_fit(counts_slots(counts), model_spec, vae, svi, shared$verbose, shared$num_threads))
  # LNM's reference gene (the log-ratios are against it).
  if (!is.null(res$reference)) model_spec$reference <- rownames(counts)[res$reference + 1L]
  elapsed <- proc.time()[["elapsed"]] - t0
  nm <- fit_names(counts)
  new("ScribeVAEResults",
    model = model_spec, priors = list(), gene_names = nm$genes, cell_names = nm$cells,
    dropped_cells = dropped, seed = shared$seed, counts_summary = shared$counts_summary,
    layout = layout_frame(res$layout), params = res$params, loss_history = res$loss_history,
    config = list(vae = vae, svi = svi),
    diagnostics = list(elapsed = elapsed, num_threads = shared$num_threads)
  )
}

# The model spec of a log-normal VAE, after refusing what it does not read:
# the decoder is linear (its weights are the loadings), and the only prior a
# user sets is capture's anchor (needed by lnmvcp, as in the Laplace engine).
ln_vae_spec <- function(model, a) {
  if (!is.null(a$vae_decoder_hidden_dims)) {
    abort_input(c("{.arg vae_decoder_hidden_dims} does not apply to {.val {model}}: its decoder is linear (mean log-rates plus loadings times the embedding).",
                  "i" = "Drop {.arg vae_decoder_hidden_dims}."))
  }
  if (!identical(a$parameterization, "canonical")) {
    abort_input("{.arg parameterization} applies to the NB models; {.val {model}} has one parameterization.")
  }
  capture <- laplace_priors(a$priors, model, loadings = FALSE)$capture
  if (model == "lnmvcp" && is.null(capture)) {
    abort_input(c("{.val lnmvcp} needs a capture prior: without an anchor the totals' mean and each cell's capture are not separately identified.",
                  "i" = "Give {.code priors = list(capture_efficiency = c(log(M0), sigma))}, with M0 the expected total of a cell at full capture."))
  }
  spec <- list(model = model)
  if (!is.null(capture)) spec$capture <- list(mode = "anchor", ln_m0 = capture[1], sigma = capture[2])
  spec
}

# The VAE's architecture for the core, checked.
resolve_vae <- function(a, n_genes, model = "nbdm") {
  ln <- model %in% .lognormal_models
  k <- resolve_latent_dim(a$latent_dim, a$vae_latent_dim, n_genes)
  widths <- function(v, arg) {
    if (is.null(v)) return(NULL)
    if (!is.numeric(v) || !length(v) || anyNA(v) || any(v < 1 | v > 8192 | v != round(v))) {
      abort_input("{.arg {arg}} must be {.code NULL} or whole numbers from 1 to 8192, not {describe_value(v)}.")
    }
    as.numeric(v)
  }
  acts <- c("relu", "gelu", "silu", "tanh", "elu", "leaky_relu")
  act <- a$vae_activation
  if (!is.character(act) || length(act) != 1L || is.na(act) || !tolower(act) %in% acts) {
    abort_input("{.arg vae_activation} must be one of {.val {acts}}, not {describe_value(act)}.")
  }
  flows <- c("none", "affine_coupling", "coupling_affine", "spline_coupling", "coupling_spline", "maf", "iaf")
  flow <- a$vae_flow_type
  if (!is.character(flow) || length(flow) != 1L || is.na(flow) || !flow %in% flows) {
    abort_input("{.arg vae_flow_type} must be one of {.val {flows}}, not {describe_value(flow)}.")
  }
  if (flow == "iaf") {
    abort_input(c("{.code vae_flow_type = \"iaf\"} evaluates prior densities one coordinate at a time.",
                  "i" = "Use {.val maf} (the same family, one pass per density) or a coupling flow."))
  }
  transforms <- c("log1p", "log", "sqrt", "identity", "log1p_prop", "log1p_norm", "clr")
  tr <- a$vae_input_transform
  if (!is.character(tr) || length(tr) != 1L || is.na(tr) || !tr %in% transforms) {
    abort_input("{.arg vae_input_transform} must be one of {.val {transforms}}, not {describe_value(tr)}.")
  }
  # As in the original: where the latents describe proportions (LNM's
  # composition, or log-rates behind a cell's capture), the encoder reads
  # proportions unless the user chose a transform other than the default.
  captured <- any(c("capture_efficiency", "eta_capture") %in% names(a$priors))
  if (tr == "log1p" && (model %in% c("lnm", "lnmvcp") || (ln && captured))) tr <- "log1p_prop"
  # As in the original: the log-normal models standardize their input by default.
  standardize <- if (is.null(a$vae_standardize)) ln else a$vae_standardize
  check_flag(standardize, "vae_standardize")
  check_number(a$vae_flow_num_layers, "vae_flow_num_layers", "a whole number from 1 to 64",
               function(v) v >= 1 && v <= 64 && v == round(v))
  check_flag(a$kl_annealing, "kl_annealing")
  check_number(a$kl_annealing_warmup, "kl_annealing_warmup", "a whole number >= 0",
               function(v) v >= 0 && v == round(v))
  list(latent_dim = as.numeric(k), encoder_hidden_dims = widths(a$vae_encoder_hidden_dims, "vae_encoder_hidden_dims"),
       decoder_hidden_dims = widths(a$vae_decoder_hidden_dims, "vae_decoder_hidden_dims"),
       activation = tolower(act), input_transform = tr, standardize = standardize, flow_type = flow, flow_num_layers = as.numeric(a$vae_flow_num_layers),
       flow_hidden_dims = widths(a$vae_flow_hidden_dims, "vae_flow_hidden_dims"),
       kl_warmup = if (a$kl_annealing) as.numeric(a$kl_annealing_warmup) else 0,
       log_var_clip = if (ln) c(-7, 2))
}

#' Results of a VAE fit
#'
#' `inference_method = "vae"` trains an encoder that maps each cell's counts
#' to a Gaussian over a `latent_dim`-dimensional embedding and a decoder
#' that maps the embedding to the cell's gene parameters (`r`, or the mean
#' `mu` in the `"mean_prob"` and `"mean_odds"` parameterizations with `r =
#' mu (1 - p) / p`, and the gate of zero-inflated models); `p` (or `phi`)
#' and per-cell capture keep mean-field guides. See
#' [get_latent_embeddings()].
#'
#' Downstream verbs read each cell through its own decoded parameters and so
#' need the counts the fit was fitted to (`x`): [log_likelihood()],
#' [posterior_predictive()], [denoise_counts()], [normalize_counts()] (per-cell
#' fractions only: a VAE has no population composition apart from its
#' cells), [get_map()] (which returns `p`, the capture of each cell, and `r`
#' and the gate as genes x cells matrices at each cell's encoder mean) and
#' [get_posterior_samples()] (`p`, capture as `n_samples x cells`, `r` and
#' the gate as `n_samples x cells x genes` arrays; `cells` and `genes` pick
#' a subset) and [goodness_of_fit()] (residuals under each cell's decoded
#' NB; each PPC data set is one posterior draw). Their point estimate puts
#' every cell at its encoder mean and the globals at their guide modes; a
#' posterior draw draws the globals from their guide and each cell's
#' embedding from its encoder Gaussian. Cells are decoded block by block, so
#' a check on a few genes never holds a cells x genes array of parameters.
#'
#' @section Log-normal models (PLN, NBLN, LNM, LNMVCP): The decoder is linear, as
#'   in the original: a cell's mean latents are `mu + W z`, so the decoder's
#'   bias and weights are the mean and the loadings of the model's
#'   covariance `W t(W) + diag(d)`. The latents are log-rates (PLN, NBLN) or
#'   LNM's log-ratios against a reference gene (the one with the most
#'   counts; `get_map()$reference`), whose total is `NB(mu_T, r_T)`. The
#'   diagonal `d` enters as noise added to the latents in each step, not
#'   scored by the ELBO; this bound loosens as `d` grows, so `d` is only
#'   weakly identified and stays near or below its prior
#'   (`LogNormal(-4.6, 1)`, median 0.01). The Laplace engine estimates `d`
#'   from the data. `d`, NBLN's `r` (prior `LogNormal(log median r_MoM, 1)`)
#'   and LNM's `mu_T` and `r_T` (priors `LogNormal` around the totals' moment
#'   estimates, scale 1) have mean-field guides. Fits start at the PCA start
#'   of the Laplace engine, and the encoder's log-variance is clipped to
#'   `[-7, 2]` (as in the original). [get_map()] returns `mu`, `W`
#'   (coordinates x `latent_dim`), `d`, `r` (NBLN), `mu_T`, `r_T` and
#'   `reference` (LNM), and `latents`, the point latents `mu + W m` of each
#'   cell (coordinates x cells, `m` its encoder mean).
#'   [get_posterior_samples()] returns `latents`, an `n_samples x cells x
#'   coordinates` array of draws `mu + W z + sqrt(d) e` with `z` from the
#'   cell's encoder Gaussian; the globals stay at their guide medians.
#'   [log_likelihood()] and [posterior_predictive()] read these draws (or the
#'   point latents).
#'
#'   Capture: `priors = list(capture_efficiency = c(log(M0), sigma))` gives
#'   each cell a capture latent `eta_c >= 0` (capture probability `exp(-eta_c)`)
#'   with the prior `TruncNormal(log M0 - log L_c, sigma, lower = 0)`, `L_c`
#'   the cell's total and `M0` the expected total at full capture, and a
#'   mean-field guide of its own (not amortized, so the verbs need the
#'   fit's cells). PLN and NBLN then observe the log-rates minus `eta_c`;
#'   `lnmvcp`'s total is `NB(mu_T exp(-eta_c), r_T)` and its composition is
#'   LNM's. `lnmvcp` needs this prior (as in the Laplace engine): with a flat
#'   prior on capture, the totals' mean and each cell's capture are not
#'   separately identified. [get_map()] adds `eta_capture` and `p_capture`
#'   per cell, [get_posterior_samples()] their draws (`n_samples x cells`),
#'   and the likelihood and predictive verbs draw them with the latents. The
#'   [normalize_counts()] gives each cell's composition (the softmax of its
#'   latents), [goodness_of_fit()] residuals under each cell's latents, and
#'   [scribe_de()] compares the population of latents `mu + W z + sqrt(d) e`,
#'   `z ~ N(0, I)`, with another log-normal fit's (VAE or Laplace; not with a
#'   flow prior). The
#'   loadings priors of the Laplace engine and [denoise_counts()] are not
#'   available for these fits yet (classed errors).
#'
#' @slot layout Data frame: the blocks of the global parameters' vector.
#' @slot params List: `global_loc`, `global_log_scale` (the global guide),
#'   `encoder`, `decoder`, `decoder_head` and `prior_flow` (flat parameter
#'   vectors only the core interprets).
#' @slot loss_history Loss (negative ELBO, with the KL weight of each step) per step.
#' @slot config List: the architecture (`vae`) and training settings (`svi`).
#' @slot diagnostics List: `elapsed` seconds and `num_threads`.
#' @name ScribeVAEResults-class
#' @exportClass ScribeVAEResults
setClass("ScribeVAEResults", contains = "ScribeResults", representation(
  layout = "data.frame", params = "list", loss_history = "numeric", config = "list", diagnostics = "list"
))

#' @rdname ScribeVAEResults-class
#' @param object A `ScribeVAEResults` object.
#' @export
setMethod("show", "ScribeVAEResults", function(object) {
  check_format(object, "object")
  v <- object@config$vae
  cat(sprintf("<ScribeVAEResults> %s%s, VAE, latent_dim = %d, %s prior\n", object@model$model,
              if (is_ln_vae(object)) ", linear decoder" else
                sprintf(" (%s)", if (is.null(object@model$parameterization)) "canonical" else object@model$parameterization),
              as.integer(v$latent_dim), if (identical(v$flow_type, "none")) "standard normal" else paste(v$flow_type, "flow")))
  cat(sprintf("  data:   %d genes x %d cells\n", length(object@gene_names), length(object@cell_names)))
  cat(sprintf("  steps:  %d, %s, %.1f s\n", length(object@loss_history),
              if (is.null(object@config$svi$batch_size)) "full batch" else paste("batch", object@config$svi$batch_size),
              object@diagnostics$elapsed))
  cat(sprintf("  loss:   %.2f (mean of the last 100 steps)\n", mean(utils::tail(object@loss_history, 100), na.rm = TRUE)))
  invisible(object)
})

# Whether a VAE fit is of a log-normal model (linear decoder, latent log-rates).
is_ln_vae <- function(fit) isTRUE(fit@model$model %in% .lognormal_models)

# Names of a log-normal VAE's latent coordinates: the genes, or LNM's genes
# but the reference.
ln_vae_coords <- function(fit) setdiff(fit@gene_names, fit@model$reference)

# Each cell's composition under a log-normal fit (the softmax of its latent
# log-rates; capture cancels): genes x cells, or n_samples x genes x cells.
# `run(opts, n)` calls the engine's "cell_fractions" analysis.
ln_cell_fractions <- function(fit, n_samples, genes, run) {
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647 (or NULL for the point estimate)",
               function(v) v >= 1 && v <= .Machine$integer.max && v == round(v), allow_null = TRUE)
  gi <- gene_index(fit, genes)
  opts <- list()
  if (!is.null(gi)) opts$genes <- gi
  res <- run(opts, n_samples)
  gnames <- if (is.null(gi)) fit@gene_names else fit@gene_names[gi + 1L]
  n_cells <- length(fit@cell_names)
  if (is.null(n_samples)) return(matrix(res$values, nrow = length(gnames), byrow = FALSE,
                                        dimnames = list(gnames, fit@cell_names)))
  a <- array(res$values, dim = c(as.integer(n_samples), length(gnames), n_cells),
             dimnames = list(NULL, gnames, fit@cell_names))
  a
}

# Verbs that read NB parameters per cell have no log-normal VAE form yet.
check_nb_vae <- function(fit, verb) {
  if (is_ln_vae(fit)) {
    abort_unsupported(c("{.fn {verb}} is not available for VAE fits of {.val {fit@model$model}} yet.",
                        "i" = "These fits support {.fn log_likelihood}, {.fn posterior_predictive}, {.fn normalize_counts}, {.fn goodness_of_fit}, {.fn get_map}, {.fn get_posterior_samples}, {.fn compare_models} and the embeddings."))
  }
}

#' @rdname accessors
setMethod("loss_history", "ScribeVAEResults", function(object, ...) object@loss_history)

# Runs a downstream analysis of a VAE fit on the counts it was fitted to
# (the encoder reads them; the core decodes each cell's parameters).
run_vae_analysis <- function(fit, x, what, opts, n_samples, seed, assay = NULL, verb = what) {
  check_format(fit)
  if (is.null(x)) {
    abort_input(c("{.fn {verb}} of a VAE fit reads each cell through its encoder: give the counts it was fitted to as {.arg x}."))
  }
  n_draws <- 0
  if (!is.null(n_samples)) {
    check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647 (or NULL for the point estimate)",
                 function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
    n_draws <- as.numeric(n_samples)
  }
  seed <- resolve_seed(seed)
  opts$seed <- seed
  counts <- counts_for_fit(fit, x, assay)
  call_core(rs_vae_analysis(counts, fit@model, fit@config$vae, fit@params, what, opts, n_draws, seed,
                            analysis_verbose(), resolve_threads(getOption("scribeR.num_threads", 1L))))
}

#' @rdname accessors
#' @param x VAE and Laplace fits: the counts the model was fitted to.
#' @param assay VAE fits: the assay of `x`, as in [scribe_fit()].
#' @export
setMethod("get_map", "ScribeVAEResults", function(object, x = NULL, assay = NULL, ...) {
  res <- run_vae_analysis(object, x, "decoded", list(), NULL, NULL, assay, "get_map")
  g <- object@gene_names
  cells <- object@cell_names
  if (is_ln_vae(object)) {
    k <- as.integer(object@config$vae$latent_dim)
    coords <- ln_vae_coords(object)
    out <- list(mu = stats::setNames(res$mu, coords),
                W = matrix(res$w, ncol = k, byrow = TRUE, dimnames = list(coords, paste0("z", seq_len(k)))),
                d = stats::setNames(res$d, coords))
    if (object@model$model == "nbln") out$r <- stats::setNames(res$r, g)
    if (object@model$model %in% c("lnm", "lnmvcp")) {
      out$mu_T <- res$r[1]
      out$r_T <- res$r[2]
      out$reference <- object@model$reference
    }
    out$latents <- matrix(res$latents, nrow = length(coords), dimnames = list(coords, cells))
    if (length(res$eta)) {
      out$eta_capture <- stats::setNames(res$eta, cells)
      out$p_capture <- exp(-out$eta_capture)
    }
    return(out)
  }
  out <- list(p = res$p)
  if (object@model$model %in% c("nbvcp", "zinbvcp")) out$p_capture <- stats::setNames(res$nu, cells)
  out$r <- matrix(res$r, nrow = length(g), dimnames = list(g, cells))
  if (!is.null(res$gate)) out$gate <- matrix(res$gate, nrow = length(g), dimnames = list(g, cells))
  out
})

#' @rdname accessors
#' @param genes VAE fits: genes to return (names or indices; default all).
setMethod("get_posterior_samples", "ScribeVAEResults", function(object, n_samples = 100L, seed = NULL, x = NULL,
                                                                 cells = NULL, genes = NULL, assay = NULL, ...) {
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647",
               function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  coords <- if (is_ln_vae(object)) ln_vae_coords(object) else object@gene_names
  gi <- if (is.null(genes)) NULL else if (is.character(genes)) match(genes, coords) - 1L else genes - 1L
  if (!is.null(gi) && (!is.numeric(gi) || anyNA(gi) || any(gi < 0 | gi >= length(coords) | gi != round(gi)))) {
    abort_input("{.arg genes} has entries that are not {if (is_ln_vae(object)) 'latent coordinates' else 'genes'} of the fit.")
  }
  gnames <- if (is.null(gi)) coords else coords[gi + 1L]
  ci <- if (is.null(cells)) seq_along(object@cell_names) else if (is.character(cells)) match(cells, object@cell_names) else cells
  if (anyNA(ci) || any(ci < 1) || any(ci > length(object@cell_names)) || any(ci != round(ci))) {
    abort_input("{.arg cells} has entries that are not cells of the fit.")
  }
  opts <- list(cells = as.integer(ci - 1L))
  if (!is.null(gi)) opts$genes <- gi
  res <- run_vae_analysis(object, x, "draws", opts, n_samples, seed, assay, "get_posterior_samples")
  s <- as.integer(n_samples)
  cn <- object@cell_names[ci]
  if (is_ln_vae(object)) {
    lat <- aperm(array(res$latents, dim = c(s, length(gnames), length(ci))), c(1L, 3L, 2L))
    dimnames(lat) <- list(NULL, cn, gnames)
    out <- list(latents = lat)
    if (length(res$eta)) {
      out$eta_capture <- matrix(res$eta, nrow = s, dimnames = list(NULL, cn))
      out$p_capture <- exp(-out$eta_capture)
    }
    return(out)
  }
  cube <- function(v) array(v, dim = c(s, length(ci), length(gnames)), dimnames = list(NULL, cn, gnames))
  out <- list(p = res$p)
  if (object@model$model %in% c("nbvcp", "zinbvcp")) out$p_capture <- matrix(res$nu, nrow = s, dimnames = list(NULL, cn))
  out$r <- cube(res$r)
  if (!is.null(res$gate)) out$gate <- cube(res$gate)
  out
})

#' @rdname normalize_counts
setMethod("normalize_counts", "ScribeVAEResults", function(fit, x = NULL, n_samples = NULL,
                                                           n_samples_dirichlet = 1L, genes = NULL,
                                                           seed = NULL, assay = NULL) {
  if (!identical(as.numeric(n_samples_dirichlet), 1)) {
    abort_input("{.arg n_samples_dirichlet} applies to the population composition, which VAE fits do not have.")
  }
  if (is_ln_vae(fit)) {
    if (is.null(x)) abort_input("{.fn normalize_counts} of a VAE fit gives each cell's composition: give the counts it was fitted to as {.arg x}.")
    return(ln_cell_fractions(fit, n_samples, genes, function(opts, n) {
      run_vae_analysis(fit, x, "cell_fractions", opts, n, seed, assay, "normalize_counts")
    }))
  }
  gi <- gene_index(fit, genes)
  opts <- list(sample = !is.null(n_samples))
  if (!is.null(gi)) opts$genes <- gi
  res <- run_vae_analysis(fit, x, "cell_fractions", opts, n_samples, seed, assay, "normalize_counts")
  gnames <- if (is.null(gi)) fit@gene_names else fit@gene_names[gi + 1L]
  if (is.null(n_samples)) return(matrix(res$values, nrow = length(gnames), dimnames = list(gnames, fit@cell_names)))
  a <- array(res$values, dim = c(length(gnames), length(fit@cell_names), as.integer(n_samples)),
             dimnames = list(gnames, fit@cell_names, NULL))
  aperm(a, c(3L, 1L, 2L))
})

# Analyses that read population-level parameters from the core's view of a
# fit (DE between fits) have no VAE form yet: a VAE's r differs by cell.
setMethod("core_view", "ScribeVAEResults", function(object) {
  abort_unsupported(c("This analysis is not available for VAE fits yet: it reads population-level parameters, and a VAE's {.code r} differs by cell.",
                      "i" = "VAE fits support {.fn log_likelihood}, {.fn posterior_predictive}, {.fn denoise_counts}, {.fn normalize_counts}, {.fn goodness_of_fit} and {.fn compare_models}."))
})

#' @rdname ScribeVAEResults-class
#' @param x A `ScribeVAEResults` object.
#' @param i,j,drop,... Unused: VAE fits cannot be subset.
#' @aliases [,ScribeVAEResults,ANY,ANY,ANY-method
#' @export
setMethod("[", "ScribeVAEResults", function(x, i, j, ..., drop = FALSE) {
  abort_unsupported(c("VAE fits cannot be subset: the encoder reads every gene of each cell.",
                      "i" = "Subset what the verbs return (e.g. {.code posterior_predictive(fit, genes = , cells = , x = )})."))
})

# VAE fits have no mixture components to split by.
check_no_split <- function(split_components) {
  check_flag(split_components, "split_components")
  if (split_components) abort_input("{.arg split_components} applies to mixtures; VAE fits have none.")
}

#' @rdname log_likelihood
setMethod("log_likelihood", "ScribeVAEResults", function(fit, x, by = c("cell", "gene"), n_samples = NULL,
                                                         split_components = FALSE, seed = NULL, assay = NULL) {
  by <- match_choice(by[1], c("cell", "gene"), "by")
  check_no_split(split_components)
  v <- run_vae_analysis(fit, x, "loglik", list(by = by), n_samples, seed, assay, "log_likelihood")$values
  labels <- if (by == "cell") fit@cell_names else fit@gene_names
  if (is.null(n_samples)) return(stats::setNames(v, labels))
  matrix(v, nrow = as.integer(n_samples), dimnames = list(NULL, labels))
})

#' @rdname denoise_counts
setMethod("denoise_counts", "ScribeVAEResults", function(fit, x, method = "mean", n_samples = NULL, genes = NULL,
                                                         return_variance = FALSE, seed = NULL, assay = NULL) {
  check_nb_vae(fit, "denoise_counts")
  d <- denoise_options(fit, method, genes, return_variance)
  res <- run_vae_analysis(fit, x, "denoise", d$opts, n_samples, seed, assay, "denoise_counts")
  shape_denoised(fit, res, d$genes, n_samples, return_variance)
})

#' @rdname posterior_predictive
setMethod("posterior_predictive", "ScribeVAEResults", function(fit, n_samples = 100L, genes = NULL, cells = NULL,
                                                               biological = FALSE, use_map = FALSE,
                                                               chunk_cells = 1000L, seed = NULL, x = NULL) {
  chunked_predictive(fit, n_samples, genes, cells, biological, use_map, chunk_cells, seed, function(opts, n, seed) {
    run_vae_analysis(fit, x, "predictive", opts, n, seed, verb = "posterior_predictive")$values
  })
})

# Encoder outputs (loc, log_var: cells x latent) for counts matched to the fit's genes.
vae_encode <- function(fit, x, assay) {
  check_format(fit)
  if (!is(fit, "ScribeVAEResults")) abort_input("{.arg fit} must be a VAE fit ({.code inference_method = \"vae\"}).")
  counts <- name_counts(counts_of_fit_genes(fit, x, assay))
  # Empty cells encode like any other (e.g. cells a fit dropped, kept in an SCE).
  validate_counts(counts, allow_empty_cells = TRUE)
  res <- call_core(rs_vae_encode(counts_slots(counts), fit@config$vae, fit@params$encoder,
                                 fit@params$input_mean, fit@params$input_std))
  k <- as.integer(fit@config$vae$latent_dim)
  dn <- list(colnames(counts), paste0("z", seq_len(k)))
  list(loc = matrix(res$loc, ncol = k, byrow = TRUE, dimnames = dn),
       log_var = matrix(res$log_var, ncol = k, byrow = TRUE, dimnames = dn))
}

#' Latent embeddings of a VAE fit
#'
#' `get_latent_embeddings()` returns each cell's encoder mean, the point
#' embedding (cells the fit never saw included: the encoder reads their
#' counts). `get_latent_samples_conditioned_on_data()` draws from each
#' cell's encoder Gaussian `N(loc, exp(log_var / 2))`.
#'
#' @param fit A [ScribeVAEResults-class] fit.
#' @param x Counts (genes x cells, any input [scribe_fit()] takes) with the
#'   fit's genes (matched by row name when `x` has names).
#' @param n_samples Draws per cell.
#' @param seed Seed of the draws (`NULL`: the fit's seed).
#' @param assay For SingleCellExperiment or Seurat input, the assay to read.
#' @return `get_latent_embeddings()`: a cells x `latent_dim` matrix.
#'   `get_latent_samples_conditioned_on_data()`: an array
#'   `n_samples` x cells x `latent_dim`.
#' @export
#' @examples
#' counts <- scribe_example_data()[1:100, 1:300]
#' counts <- counts[, Matrix::colSums(counts) > 0]
#' vae <- scribe_fit(counts, model = "nbdm", inference_method = "vae", latent_dim = 2,
#'                   vae_encoder_hidden_dims = c(32, 16), vae_decoder_hidden_dims = c(16, 32),
#'                   n_steps = 100, seed = 1, verbose = FALSE)
#' head(get_latent_embeddings(vae, counts))
get_latent_embeddings <- function(fit, x, assay = NULL) {
  vae_encode(fit, x, assay)$loc
}

#' @rdname get_latent_embeddings
#' @export
get_latent_samples_conditioned_on_data <- function(fit, x, n_samples = 100L, seed = NULL, assay = NULL) {
  check_number(n_samples, "n_samples", "a whole number >= 1", function(v) v >= 1 && v == round(v))
  enc <- vae_encode(fit, x, assay)
  seed <- if (is.null(seed)) fit@seed else resolve_seed(seed)
  draws <- call_core(rs_vae_draws(enc$loc, enc$log_var, as.numeric(n_samples), as.numeric(seed)))
  array(draws, dim = c(n_samples, dim(enc$loc)), dimnames = c(list(NULL), dimnames(enc$loc)))
}

# n_samples x latent_dim draws of a VAE's latent prior.
vae_prior_samples <- function(fit, n_samples, seed) {
  check_format(fit)
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647",
               function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  seed <- if (is.null(seed)) fit@seed else resolve_seed(seed)
  z <- call_core(rs_vae_prior_draws(fit@config$vae, fit@params$prior_flow, as.numeric(n_samples), as.numeric(seed)))
  k <- as.integer(fit@config$vae$latent_dim)
  matrix(z, ncol = k, byrow = TRUE, dimnames = list(NULL, paste0("z", seq_len(k))))
}
