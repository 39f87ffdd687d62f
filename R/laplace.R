#' @include results.R analysis.R
NULL

# Laplace fits of the log-normal models: argument checks, the results class
# and its accessors. The Newton solves and the outer optimisation run in the
# core (scribe-core/src/laplace).

.laplace_config_keys <- c("n_newton_steps", "damping", "newton_tolerance", "newton_max_step",
                          "convergence_action", "rescue_diverged_cells", "rescue_threshold_multiplier",
                          "rescue_n_newton", "rescue_damping_multiplier", "mu_warm_rounds")

resolve_laplace_config <- function(cfg) {
  if (is.null(cfg)) cfg <- list()
  if (!is.list(cfg) || (length(cfg) && (is.null(names(cfg)) || any(names(cfg) == "")))) {
    abort_input("{.arg laplace_config} must be NULL or a named list.")
  }
  bad <- setdiff(names(cfg), .laplace_config_keys)
  if (length(bad)) {
    abort_input(c("Unknown {.arg laplace_config} field{?s}: {.val {bad}}.", "i" = "Known: {.val {(.laplace_config_keys)}}."))
  }
  out <- c(core_defaults()$laplace[setdiff(.laplace_config_keys, "convergence_action")],
           list(convergence_action = "warn"))
  out[names(cfg)] <- cfg
  whole <- function(lo, hi) function(v) v >= lo && v <= hi && v == round(v)
  check_number(out$n_newton_steps, "laplace_config$n_newton_steps", "a whole number between 1 and 200", whole(1, 200))
  check_number(out$damping, "laplace_config$damping", "a number >= 0", function(v) v >= 0)
  check_number(out$newton_tolerance, "laplace_config$newton_tolerance", "a positive number", function(v) v > 0)
  check_number(out$newton_max_step, "laplace_config$newton_max_step", "a positive number", function(v) v > 0)
  out$convergence_action <- match_choice(out$convergence_action, c("warn", "raise", "ignore"),
                                         "laplace_config$convergence_action")
  check_flag(out$rescue_diverged_cells, "laplace_config$rescue_diverged_cells")
  check_number(out$rescue_threshold_multiplier, "laplace_config$rescue_threshold_multiplier", "a number >= 1",
               function(v) v >= 1)
  check_number(out$rescue_n_newton, "laplace_config$rescue_n_newton", "a whole number between 1 and 1000",
               whole(1, 1000))
  check_number(out$rescue_damping_multiplier, "laplace_config$rescue_damping_multiplier", "a number >= 1",
               function(v) v >= 1)
  check_number(out$mu_warm_rounds, "laplace_config$mu_warm_rounds", "a whole number between 0 and 1000",
               whole(0, 1000))
  num <- setdiff(names(out), c("convergence_action", "rescue_diverged_cells"))
  out[num] <- lapply(out[num], as.numeric)
  out
}

resolve_latent_dim <- function(latent_dim, vae_latent_dim, n_genes) {
  if (!is.null(latent_dim) && !is.null(vae_latent_dim)) {
    abort_input("Give {.arg latent_dim} or its legacy alias {.arg vae_latent_dim}, not both.")
  }
  k <- if (!is.null(latent_dim)) latent_dim else if (!is.null(vae_latent_dim)) vae_latent_dim else core_defaults()$laplace$latent_dim
  arg <- if (is.null(latent_dim) && !is.null(vae_latent_dim)) "vae_latent_dim" else "latent_dim"
  check_number(k, arg, "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  if (k >= n_genes) abort_input("{.arg {arg}} ({k}) must be smaller than the number of genes ({n_genes}).")
  as.numeric(k)
}

.loadings_keys <- list(
  none = character(0), gaussian = "scale",
  horseshoe_columnwise = c("tau_scale", "lambda_min", "tau_min", "init_scale"),
  neg_columnwise = c("alpha", "beta", "psi_min", "gamma_min", "init_scale")
)

# The priors a fit of a log-normal model takes: the capture prior
# c(log M0, sigma) and (Laplace only) the loadings shrinkage prior (a list
# with `type`).
laplace_priors <- function(priors, model, loadings = TRUE) {
  out <- list(capture = NULL, loadings = NULL)
  if (!length(priors)) return(out)
  if (!is.list(priors) || is.null(names(priors))) abort_input("{.arg priors} must be a named list.")
  if (!loadings && !is.null(priors$loadings)) {
    abort_unsupported(c("Loadings priors are not available for the VAE: its loadings are the decoder's weights.",
                        "i" = "Fit {.val {model}} by {.code inference_method = \"laplace\"} for a loadings prior."))
  }
  if (model %in% c("lnm", "lnmvcp") && !is.null(priors$loadings)) {
    abort_unsupported("Loadings priors apply to {.val pln} and {.val nbln}, not {.val {model}}.")
  }
  if (model == "lnm" && any(c("capture_efficiency", "eta_capture") %in% names(priors))) {
    abort_input("A capture prior needs {.val lnmvcp}, not {.val lnm}.")
  }
  known <- c("capture_efficiency", "eta_capture", if (loadings) "loadings")
  bad <- setdiff(names(priors), known)
  if (length(bad)) {
    if (loadings) {
      abort_unsupported(c("Laplace fits of {.val {model}} take a capture prior and a loadings prior; not {.val {bad}}.",
                          "i" = "Use {.code priors = list(capture_efficiency = c(log(M0), sigma), loadings = list(type = ...))}."))
    }
    abort_unsupported(c("VAE fits of {.val {model}} take a capture prior only; not {.val {bad}}.",
                        "i" = "Use {.code priors = list(capture_efficiency = c(log(M0), sigma))}; the other priors are fixed (see {.code ?ScribeVAEResults})."))
  }
  cap <- intersect(names(priors), c("capture_efficiency", "eta_capture"))
  if (length(cap) > 1L) abort_input("Give {.code capture_efficiency} or {.code eta_capture}, not both.")
  if (length(cap)) {
    v <- priors[[cap]]
    if (!is.numeric(v) || length(v) != 2L || anyNA(v) || !is.finite(v[1]) || !(v[2] > 0)) {
      abort_input("{.code priors${cap}} must be {.code c(log(M0), sigma)} with {.code sigma > 0}.")
    }
    out$capture <- as.numeric(v)
  }
  if (!is.null(priors$loadings)) {
    l <- priors$loadings
    if (!is.list(l) || is.null(l$type)) abort_input("{.code priors$loadings} must be a list with a {.field type}.")
    type <- match_choice(l$type, names(.loadings_keys), "priors$loadings$type")
    extra <- setdiff(names(l), c("type", .loadings_keys[[type]]))
    if (length(extra)) {
      known <- .loadings_keys[[type]]
      abort_input(c(paste0("Unknown field{?s} of a \"", type, "\" loadings prior: {.val {extra}}."),
                    "i" = if (length(known)) "Known: {.val {known}}." else "It takes no fields."))
    }
    for (f in setdiff(names(l), "type")) {
      check_number(l[[f]], paste0("priors$loadings$", f), "a finite positive number", function(v) is.finite(v) && v > 0)
      l[[f]] <- as.numeric(l[[f]])
    }
    floors <- intersect(names(l), c("lambda_min", "tau_min", "psi_min", "gamma_min"))
    init <- if (is.null(l$init_scale)) 1 else l$init_scale
    for (f in floors) {
      if (l[[f]] >= init) abort_input("{.code priors$loadings${f}} must be smaller than {.field init_scale} ({init}).")
    }
    out$loadings <- l
  }
  out
}

.freeze_aliases <- c(r = "r", dispersion = "r", mu = "mu", mean_expression = "mu", expression = "mu",
                     eta = "eta", capture_efficiency = "eta")

# The NBLN cascade from an SVI fit: empirical priors and frozen values (or NULL).
resolve_cascade <- function(from, tau, freeze, model, counts) {
  if (is.null(from)) {
    if (length(freeze)) cli::cli_warn("{.arg informative_priors_freeze} is ignored without {.arg informative_priors_from}.")
    return(NULL)
  }
  if (model != "nbln") {
    abort_input("{.arg informative_priors_from} (the SVI cascade) applies to {.val nbln}, not {.val {model}}.")
  }
  if (!is(from, "ScribeSVIResults")) {
    abort_input("{.arg informative_priors_from} must be an SVI fit ({.cls ScribeSVIResults}), not {.cls {class(from)[1]}}.")
  }
  if (!identical(from@gene_names, rownames(counts)) && !(is.null(rownames(counts)) && length(from@gene_names) == nrow(counts))) {
    abort_input("{.arg informative_priors_from} was fitted to different genes.")
  }
  if (!identical(from@cell_names, colnames(counts)) && !(is.null(colnames(counts)) && length(from@cell_names) == ncol(counts))) {
    abort_input("{.arg informative_priors_from} was fitted to different cells.")
  }
  check_number(tau, "informative_priors_tau", "a positive number", function(v) v > 0)
  if (is.null(freeze)) freeze <- c("r", "eta")
  if (!is.character(freeze)) abort_input("{.arg informative_priors_freeze} must be a character vector.")
  bad <- setdiff(freeze, names(.freeze_aliases))
  if (length(bad)) {
    abort_input(c("Unknown {.arg informative_priors_freeze} entr{?y/ies}: {.val {bad}}.",
                  "i" = "Use {.val {names(.freeze_aliases)}}."))
  }
  canon <- unname(.freeze_aliases[freeze])
  if (anyDuplicated(canon)) {
    abort_input("{.arg informative_priors_freeze} names the same quantity twice: {.val {freeze[duplicated(canon) | duplicated(canon, fromLast = TRUE)]}}.")
  }
  check_format(from, "informative_priors_from")
  st <- call_core(rs_cascade_stats(core_view(from), 1000L, 0, as.numeric(tau)))
  has_capture <- length(st$eta_loc) > 0L
  if (!has_capture) {
    cli::cli_warn("{.arg informative_priors_from} has no capture ({.val {from@model$model}}); {.code eta} gets no cascade prior.")
    canon <- setdiff(canon, "eta")
  }
  out <- list(freeze = canon, tau = tau, source_model = from@model$model)
  out$core <- list(
    r_prior = if (!"r" %in% canon) list(loc = st$r_loc, scale = st$r_scale),
    mu_prior = if (!"mu" %in% canon) list(loc = st$mu_loc, scale = st$mu_scale),
    r_frozen = if ("r" %in% canon) st$r_point,
    mu_frozen = if ("mu" %in% canon) st$mu_point
  )
  out$capture <- if (!has_capture) NULL else if ("eta" %in% canon) {
    list(mode = "frozen", values = st$eta_point)
  } else {
    list(mode = "prior", loc = st$eta_loc, scale = st$eta_scale)
  }
  out
}

fit_laplace <- function(counts, dropped, model, a, shared) {
  priors <- laplace_priors(a$priors, model)
  cascade <- resolve_cascade(a$informative_priors_from, a$informative_priors_tau, a$informative_priors_freeze,
                             model, counts)
  early_stopping <- resolve_early_stopping(a$early_stopping)
  d_mode <- a$d_mode
  if (!is.null(d_mode)) d_mode <- match_choice(d_mode, c("learned", "low_rank"), "d_mode")
  if (identical(d_mode, "low_rank") && !model %in% c("lnm", "lnmvcp")) {
    cli::cli_warn("{.arg d_mode} applies to {.val lnm} and {.val lnmvcp}; {.val {model}} always learns {.code d}.")
    d_mode <- NULL
  }
  capture <- priors$capture
  if (model == "lnmvcp" && is.null(capture)) {
    abort_input(c("{.val lnmvcp} needs a capture prior.",
                  "i" = "Give {.code priors = list(capture_efficiency = c(log(M0), sigma))}."))
  }
  # The cascade's per-cell capture (frozen or prior) replaces the scalar anchor.
  core_capture <- if (!is.null(cascade$capture)) {
    cascade$capture
  } else if (!is.null(capture)) {
    list(mode = "anchor", ln_m0 = capture[1], sigma = capture[2])
  }
  k <- resolve_latent_dim(a$latent_dim, a$vae_latent_dim, nrow(counts))
  cfg <- resolve_laplace_config(a$laplace_config)
  opt <- resolve_optimizer(a$optimizer_config, lbfgs = TRUE)
  full_batch <- is.null(a$batch_size) || a$batch_size >= ncol(counts)
  # In full batch the outer loss is deterministic, the setting quasi-Newton
  # steps are made for: L-BFGS is the default there (documented in ?scribe_fit).
  if (is.null(opt) && full_batch) opt <- list(name = "lbfgs", memory = 10)
  lbfgs <- identical(opt$name, "lbfgs")
  if (lbfgs && !full_batch) {
    abort_unsupported(c("{.code optimizer_config$name = \"lbfgs\"} needs the full batch: its line search compares losses of the same cells.",
                        "i" = "Drop {.arg batch_size}, or use {.val adam} with mini-batches."))
  }
  lap <- c(list(latent_dim = k, n_steps = as.numeric(a$n_steps),
                batch_size = if (is.null(a$batch_size)) NULL else as.numeric(a$batch_size),
                optimizer_config = if (!lbfgs) opt, lbfgs_memory = if (lbfgs) opt$memory,
                seed = shared$seed, capture = core_capture,
                cascade = cascade$core, loadings = priors$loadings,
                d_mode = if (is.null(d_mode)) "learned" else d_mode), early_stopping, cfg)
  t0 <- proc.time()[["elapsed"]]
  res <- call_core(rs_laplace_fit(counts_slots(counts), model, lap, shared$verbose, shared$num_threads))
  elapsed <- proc.time()[["elapsed"]] - t0
  nm <- fit_names(counts)
  genes <- nm$genes
  cells <- nm$cells
  all_genes <- genes
  # LNM: the latent coordinates are the log-ratios of all but the reference gene.
  if (!is.null(res$reference)) genes <- genes[-res$reference]
  g <- length(genes)
  w <- matrix(res$w, nrow = g, byrow = TRUE, dimnames = list(genes, paste0("factor", seq_len(k))))
  fit <- new("ScribeLaplaceResults",
    model = list(model = model, latent_dim = k, capture_efficiency = capture,
                 cascade = if (is.null(cascade)) NULL else cascade[c("freeze", "tau", "source_model")],
                 loadings = if (is.null(priors$loadings)) list(type = "none") else priors$loadings),
    priors = if (is.null(capture)) list() else list(eta_capture = list(family = "truncnormal", hyper = capture)),
    gene_names = all_genes, cell_names = cells, dropped_cells = dropped, seed = shared$seed,
    counts_summary = shared$counts_summary,
    params = c(list(mu = stats::setNames(res$mu, genes), W = w, d = stats::setNames(res$d, genes)),
               if (length(res$r)) list(r = stats::setNames(res$r, genes)),
               if (length(res$totals)) list(mu_T = res$totals[1], r_T = res$totals[2],
                                            reference = all_genes[res$reference]),
               if (length(res$eta)) list(eta_capture = stats::setNames(res$eta, cells),
                                         p_capture = stats::setNames(exp(-res$eta), cells))),
    latents = matrix(res$latents, nrow = g, dimnames = list(genes, cells)),
    loss_history = res$loss_history, config = lap,
    diagnostics = list(w_prior = res$w_prior, w_prior_aux = res$w_prior_aux,
                       grad_norms = stats::setNames(res$grad_norms, cells),
                       rescued = stats::setNames(res$rescued, cells), masked_cells = res$masked_cells,
                       newton = res$newton,
                       early_stopped = res$early_stopped, stop = res$stop, restored_step = res$restored_step,
                       aborted = res$aborted, elapsed = elapsed, num_threads = shared$num_threads)
  )
  if (!is.null(res$aborted)) {
    cli::cli_warn(c("The Laplace fit stopped early.", "x" = "{res$aborted}"), class = "scribeR_nonfinite")
  }
  check_newton_convergence(fit)
  fit
}

check_newton_convergence <- function(fit) {
  gn <- fit@diagnostics$grad_norms
  tol <- fit@config$newton_tolerance
  bad <- !is.finite(gn) | gn > tol
  if (!any(bad) || fit@config$convergence_action == "ignore") return(invisible())
  q <- stats::quantile(gn[is.finite(gn)], c(0.5, 0.9, 0.99), names = FALSE)
  msg <- c("{sum(bad)} of {length(gn)} cell{?s} did not reach the Newton tolerance ({tol}).",
           "i" = "Gradient norm: worst {format(max(gn), digits = 3)}, median {format(q[1], digits = 3)}, p90 {format(q[2], digits = 3)}, p99 {format(q[3], digits = 3)}.",
           "i" = "Raise {.code laplace_config$n_newton_steps} or {.code damping}, or see {.code fit@diagnostics$grad_norms}.")
  if (fit@config$convergence_action == "raise") {
    cli::cli_abort(msg, class = "scribeR_nonconvergence", call = NULL)
  }
  cli::cli_warn(msg, class = "scribeR_nonconvergence")
}

#' Laplace results
#'
#' `ScribeLaplaceResults` holds a Laplace fit of a log-normal model
#' (`scribe_fit(..., inference_method = "laplace")`): the global parameters
#' `mu`, `W` (genes x `latent_dim`) and `d` of `Sigma = W W^T + diag(d)`, each
#' cell's MAP latent log-rates, the loss history and per-cell Newton
#' diagnostics. `get_map()` returns `mu`, `W`, `d`, with a capture prior the
#' per-cell MAP `eta_capture` and `p_capture = exp(-eta_capture)`, and the
#' latents (genes x cells); `loss_history()` the per-step negative Laplace ELBO.
#'
#' @slot params List: `mu`, `W`, `d` (NBLN: `r`; with capture:
#'   `eta_capture`, `p_capture`; LNM: `mu_T`, `r_T` and the `reference`
#'   gene, with `mu`, `W`, `d` over the other genes).
#' @slot latents MAP latent log-rates, genes x cells (LNM: log-ratios, the
#'   non-reference genes x cells).
#' @slot loss_history Loss per outer step.
#' @slot config List of the engine settings.
#' @slot diagnostics List: per-cell `grad_norms` (gradient sup-norm after the
#'   final sweep and rescue), `rescued`, `masked_cells` (cell-steps left out
#'   for a non-finite ELBO), `newton` (Newton steps taken: `outer_steps` over
#'   `outer_cell_visits` cell visits of the outer loop, `final_steps`,
#'   `rescue_steps`, `warm_steps` in the sweeps before the first outer step
#'   that start `mu` at the mean of the cells' MAPs), `aborted` (why the divergence detector stopped
#'   the loop, or `NULL`), `early_stopped`, `restored_step`, `elapsed`,
#'   `num_threads`.
#' @name ScribeLaplaceResults-class
#' @exportClass ScribeLaplaceResults
setClass("ScribeLaplaceResults", contains = "ScribeResults", representation(
  params = "list", latents = "matrix", loss_history = "numeric", config = "list", diagnostics = "list"
))

#' @rdname ScribeLaplaceResults-class
#' @param object A results object.
#' @export
setMethod("show", "ScribeLaplaceResults", function(object) {
  check_format(object, "object")
  d <- object@diagnostics
  losses <- object@loss_history
  tail_l <- utils::tail(losses[is.finite(losses)], 100L)
  cas <- object@model$cascade
  cat(sprintf("<ScribeLaplaceResults> %s%s, Laplace (latent_dim = %d)\n", object@model$model,
              if (is.null(object@model$capture_efficiency) && is.null(object@params$eta_capture)) "" else " with capture",
              as.integer(object@model$latent_dim)))
  if (!is.null(object@params$reference)) {
    cat(sprintf("  log-ratios against %s; totals NB(mean %.4g, shape %.3g)\n", object@params$reference,
                object@params$mu_T, object@params$r_T))
  }
  if (!is.null(cas)) {
    cat(sprintf("  cascade: priors from an SVI %s fit (tau = %g)%s\n", cas$source_model, cas$tau,
                if (length(cas$freeze)) paste0(", frozen: ", paste(cas$freeze, collapse = ", ")) else ""))
  }
  cat(sprintf("  data:   %d genes x %d cells%s\n", length(object@gene_names), length(object@cell_names),
              if (length(object@dropped_cells)) sprintf(" (%d empty cells dropped)", length(object@dropped_cells)) else ""))
  bs <- object@config$batch_size
  nw <- d$newton
  per_visit <- if (!is.null(nw) && nw$outer_cell_visits > 0) nw$outer_steps / nw$outer_cell_visits else NA_real_
  cat(sprintf("  steps:  %d%s, %s, %s Newton steps per cell and step (at most %d), %.1f s\n", length(losses),
              if (is.null(d$aborted) && !identical(d$stop$reason, "early_stopping")) stop_summary(object) else "",
              paste0(if (is.null(bs)) "full batch" else sprintf("batch size %d", as.integer(bs)), ", ",
                     if (!is.null(object@config$lbfgs_memory)) "L-BFGS"
                     else if (!is.null(object@config$optimizer_config)) object@config$optimizer_config$name else "adam"),
              sprintf("%.1f", per_visit), as.integer(object@config$n_newton_steps), d$elapsed))
  cat(sprintf("  loss:   %s (mean of the last %d steps)%s%s\n", format(mean(tail_l), digits = 7), length(tail_l),
              if (!is.null(d$aborted)) "; stopped by the divergence detector" else if (identical(d$stop$reason, "early_stopping")) "; stopped early" else "",
              if (!is.null(d$restored_step)) sprintf("; state of step %d restored", as.integer(d$restored_step)) else ""))
  gn <- d$grad_norms
  cat(sprintf("  Newton: gradient norm max %.2e, median %.2e; %d cells rescued, %d not converged (tol %g)\n",
              max(gn), stats::median(gn), sum(d$rescued), sum(!is.finite(gn) | gn > object@config$newton_tolerance),
              object@config$newton_tolerance))
  cat(sprintf("  seed:   %s\n", format(object@seed, scientific = FALSE)))
  invisible(object)
})

#' @rdname accessors
#' @export
setMethod("get_map", "ScribeLaplaceResults", function(object, ...) {
  c(object@params, list(latents = object@latents))
})

#' @rdname accessors
#' @export
setMethod("loss_history", "ScribeLaplaceResults", function(object, ...) object@loss_history)

# Gene-centred loadings W_perp = W - colMeans(W): the part of W that changes compositions.
w_perp <- function(w) sweep(w, 2, colMeans(w))

check_laplace <- function(fit) {
  if (!is(fit, "ScribeLaplaceResults")) abort_input("{.arg fit} must be a Laplace fit ({.cls ScribeLaplaceResults}).")
  check_format(fit)
}

#' Loadings diagnostics of a Laplace fit
#'
#' `get_W_compositional()` returns the gene-centred loadings
#' `W_perp = (I - 11^T/G) W`: adding a constant to every gene's log-rate
#' changes no composition, so only `W_perp` is identified by the data.
#' `get_gauge_diagnostics()` measures how much of `W` lies along the
#' all-ones direction. `w_prior_diagnostics()` reports the loadings
#' shrinkage prior's view: per-column norms of `W_perp` and the effective rank
#' (columns above 5% of the largest norm), and for the column-wise priors the
#' fitted per-column scales (`sigma_k`: `lambda_k` for the horseshoe,
#' `sqrt(psi_k)` for NEG), their effective rank and the global scale (`tau`
#' or `gamma`).
#'
#' @param fit A [ScribeLaplaceResults-class] object.
#' @return `get_W_compositional()`: a genes x `latent_dim` matrix.
#'   `get_gauge_diagnostics()`: a list with `W_compositional_norm`,
#'   `W_all_ones_component_norm` and `gauge_contamination_ratio` (their ratio).
#'   `w_prior_diagnostics()`: a list.
#' @examples
#' counts <- scribe_example_data()[1:60, 1:200]
#' counts <- counts[, Matrix::colSums(counts) > 0]
#' fit <- scribe_fit(counts, model = "pln", inference_method = "laplace", latent_dim = 4,
#'                   n_steps = 50, seed = 1, verbose = FALSE,
#'                   priors = list(loadings = list(type = "horseshoe_columnwise")),
#'                   laplace_config = list(convergence_action = "ignore"))
#' w_prior_diagnostics(fit)$effective_rank
#' get_gauge_diagnostics(fit)$gauge_contamination_ratio
#' dim(get_W_compositional(fit))
#' @name laplace-loadings
NULL

#' @rdname laplace-loadings
#' @export
get_W_compositional <- function(fit) {
  check_laplace(fit)
  # Log-ratio loadings are compositional already.
  if (fit@model$model %in% c("lnm", "lnmvcp")) return(fit@params$W)
  w_perp(fit@params$W)
}

#' @rdname laplace-loadings
#' @export
get_gauge_diagnostics <- function(fit) {
  check_laplace(fit)
  w <- fit@params$W
  wp <- get_W_compositional(fit)
  comp <- sqrt(sum(wp^2))
  ones <- sqrt(sum((w - wp)^2))
  list(W_compositional_norm = comp, W_all_ones_component_norm = ones,
       gauge_contamination_ratio = ones / max(comp, 1e-12))
}

#' @rdname laplace-loadings
#' @export
w_prior_diagnostics <- function(fit) {
  check_laplace(fit)
  d <- fit@diagnostics$w_prior
  type <- fit@model$loadings$type
  out <- list(strategy_type = type, column_frobenius_compositional = d$column_norms,
              column_frobenius_raw = d$column_norms_raw)
  if (type != "none") out$effective_rank <- d$effective_rank
  if (type %in% c("horseshoe_columnwise", "neg_columnwise")) {
    out$sigma_k <- d$sigma_k
    out$scale_effective_rank <- d$scale_effective_rank
    out[[if (type == "horseshoe_columnwise") "tau" else "gamma"]] <- d$global
    if (type == "neg_columnwise") out$psi_k <- d$sigma_k^2
  }
  if (type == "gaussian") out$scale <- if (is.null(fit@model$loadings$scale)) 1 else fit@model$loadings$scale
  out
}

# The fit as the core's Laplace analyses read it.
laplace_core_fit <- function(fit) {
  p <- fit@params
  list(k = as.numeric(fit@model$latent_dim), mu = unname(p$mu),
       w = as.vector(t(p$W)), d = unname(p$d), r = if (is.null(p$r)) numeric(0) else unname(p$r),
       latents = as.vector(fit@latents), eta = if (is.null(p$eta_capture)) numeric(0) else unname(p$eta_capture),
       capture = fit@config$capture,
       totals = if (is.null(p$mu_T)) numeric(0) else c(p$mu_T, p$r_T),
       reference = if (is.null(p$reference)) NULL else as.numeric(match(p$reference, fit@gene_names) - 1L),
       model = if (fit@model$model == "lnmvcp") "lnm" else fit@model$model,
       low_rank = identical(fit@config$d_mode, "low_rank"))
}

laplace_cells <- function(fit, cells) {
  ci <- if (is.null(cells)) seq_along(fit@cell_names) else if (is.character(cells)) match(cells, fit@cell_names) else cells
  if (anyNA(ci) || any(ci < 1) || any(ci > length(fit@cell_names)) || any(ci != round(ci))) {
    abort_input("{.arg cells} has entries that are not cells of the fit.")
  }
  as.integer(ci)
}

run_laplace_analysis <- function(fit, x, what, opts, assay = NULL) {
  check_format(fit)
  if (is.null(x)) abort_input("Laplace fits need the counts they were fitted to: give them as {.arg x}.")
  counts <- counts_for_fit(fit, x, assay)
  call_core(rs_laplace_analysis(laplace_core_fit(fit), counts, what, opts, analysis_verbose(),
                                resolve_threads(getOption("scribeR.num_threads", 1L))))
}

#' Draws of the per-cell latents of a Laplace fit, or of a VAE's prior
#'
#' For a VAE fit ([ScribeVAEResults-class]) `get_latent_samples(fit,
#' n_samples = )` draws from the latent prior (a learned flow prior if the
#' fit has one) and returns an `n_samples x latent_dim` matrix; `x` and
#' `cells` are not used. For a Laplace fit:
#' each cell's posterior is the Gaussian around its MAP with the inverse
#' negative Hessian as covariance; draws use its exact square root (Woodbury
#' form, no genes x genes matrix). With a free capture latent, `eta` is drawn
#' jointly (its Schur-complement variance, and the shift it implies for the
#' log-rates). Each cell's draws depend only on `seed` and the cell.
#'
#' @param fit A [ScribeLaplaceResults-class] or [ScribeVAEResults-class] object.
#' @param x The counts the model was fitted to (any input [scribe_fit()] accepts).
#' @param n_samples Number of draws.
#' @param cells Cells (names or indices; default all).
#' @param seed Seed (`NULL`: from R's RNG).
#' @param assay Assay of `x`, as in [scribe_fit()].
#' @return A list: `latents`, an `n_samples x cells x genes` array of
#'   log-rates (LNM: log-ratios of the non-reference genes), and with capture
#'   `eta_capture`, an `n_samples x cells` matrix.
#' @examples
#' counts <- scribe_example_data()[1:40, 1:100]
#' counts <- counts[, Matrix::colSums(counts) > 0]
#' fit <- scribe_fit(counts, model = "pln", inference_method = "laplace", latent_dim = 3,
#'                   n_steps = 30, seed = 1, verbose = FALSE,
#'                   laplace_config = list(convergence_action = "ignore"))
#' dim(get_latent_samples(fit, counts, n_samples = 10, cells = 1:5)$latents)
#' @export
get_latent_samples <- function(fit, x, n_samples = 100L, cells = NULL, seed = NULL, assay = NULL) {
  if (is(fit, "ScribeVAEResults")) return(vae_prior_samples(fit, n_samples, seed))
  check_laplace(fit)
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  ci <- laplace_cells(fit, cells)
  seed <- resolve_seed(seed)
  res <- run_laplace_analysis(fit, x, "latents", list(cells = ci - 1L, n_draws = as.numeric(n_samples), seed = seed),
                              assay)
  coords <- rownames(fit@latents)
  n <- as.integer(n_samples)
  lat <- aperm(array(res$latents, dim = c(n, length(coords), length(ci))), c(1L, 3L, 2L))
  dimnames(lat) <- list(NULL, fit@cell_names[ci], coords)
  out <- list(latents = lat)
  if (length(res$eta)) out$eta_capture <- matrix(res$eta, nrow = n, dimnames = list(NULL, fit@cell_names[ci]))
  out
}

#' @rdname posterior_predictive
setMethod("posterior_predictive", "ScribeLaplaceResults", function(fit, n_samples = 100L, genes = NULL, cells = NULL,
                                                                   biological = FALSE, use_map = FALSE,
                                                                   chunk_cells = 1000L, seed = NULL, x = NULL) {
  laplace_predictive(fit, x, n_samples, genes, cells, use_map, seed)
})

#' @rdname log_likelihood
setMethod("log_likelihood", "ScribeLaplaceResults", function(fit, x, by = c("cell", "gene"), n_samples = NULL,
                                                             split_components = FALSE, seed = NULL, assay = NULL) {
  by <- match_choice(by[1], c("cell", "gene"), "by")
  check_flag(split_components, "split_components")
  laplace_loglik(fit, x, by, n_samples, seed, assay)
})

laplace_predictive <- function(fit, x, n_samples, genes, cells, use_map, seed) {
  check_flag(use_map, "use_map")
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  gi <- gene_index(fit, genes)
  gnames <- if (is.null(gi)) fit@gene_names else fit@gene_names[gi + 1L]
  ci <- laplace_cells(fit, cells)
  seed <- resolve_seed(seed)
  opts <- list(cells = ci - 1L, n_draws = as.numeric(n_samples), seed = seed, use_map = use_map)
  if (!is.null(gi)) opts$genes <- gi
  res <- run_laplace_analysis(fit, x, "predictive", opts)
  a <- aperm(array(res$values, dim = c(as.integer(n_samples), length(gnames), length(ci))), c(1L, 3L, 2L))
  dimnames(a) <- list(NULL, fit@cell_names[ci], gnames)
  a
}

#' @rdname normalize_counts
setMethod("normalize_counts", "ScribeLaplaceResults", function(fit, x = NULL, n_samples = NULL,
                                                               n_samples_dirichlet = 1L, genes = NULL,
                                                               seed = NULL, assay = NULL) {
  if (!identical(as.numeric(n_samples_dirichlet), 1)) {
    abort_input("{.arg n_samples_dirichlet} applies to Dirichlet compositions of NB fits; a log-normal composition is a softmax of latents.")
  }
  seed <- resolve_seed(seed)
  if (!is.null(x)) {
    return(ln_cell_fractions(fit, n_samples, genes, function(opts, n) {
      opts$cells <- seq_along(fit@cell_names) - 1L
      opts$n_draws <- if (is.null(n)) 0 else as.numeric(n)
      opts$seed <- seed
      run_laplace_analysis(fit, x, "fractions", opts, assay)
    }))
  }
  # New cells of the fitted population: softmax(mu + W z + sqrt(d) e), z ~ N(0, I).
  check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647 (or NULL for the mean of 2048 draws)",
               function(v) v >= 1 && v <= .Machine$integer.max && v == round(v), allow_null = TRUE)
  gi <- gene_index(fit, genes)
  gnames <- if (is.null(gi)) fit@gene_names else fit@gene_names[gi + 1L]
  n <- if (is.null(n_samples)) 2048 else as.numeric(n_samples)
  opts <- list(n_draws = n, seed = seed)
  if (!is.null(gi)) opts$genes <- gi
  check_format(fit)
  res <- call_core(rs_laplace_analysis(laplace_core_fit(fit), NULL, "population", opts, analysis_verbose(),
                                       resolve_threads(getOption("scribeR.num_threads", 1L))))
  rho <- matrix(res$values, nrow = as.integer(n), dimnames = list(NULL, gnames))
  if (is.null(n_samples)) colMeans(rho) else rho
})

laplace_loglik <- function(fit, x, by, n_samples, seed, assay) {
  opts <- list(cells = seq_along(fit@cell_names) - 1L, by = by)
  if (!is.null(n_samples)) {
    check_number(n_samples, "n_samples", "a whole number from 1 to 2147483647 (or NULL for the MAP)", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
    opts$n_draws <- as.numeric(n_samples)
    opts$seed <- resolve_seed(seed)
  }
  v <- run_laplace_analysis(fit, x, "loglik", opts, assay)$values
  names_by <- if (by == "cell") fit@cell_names else fit@gene_names
  if (is.null(n_samples)) return(stats::setNames(v, names_by))
  matrix(v, nrow = as.integer(n_samples), dimnames = list(NULL, names_by))
}

#' @rdname accessors
#' @param cells Laplace fits: cells to draw (default all).
#' @export
setMethod("get_posterior_samples", "ScribeLaplaceResults", function(object, n_samples = 100L, seed = NULL, x = NULL,
                                                                     cells = NULL, ...) {
  get_latent_samples(object, x, n_samples = n_samples, cells = cells, seed = seed)
})
