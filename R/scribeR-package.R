#' scribeR: Bayesian models of single-cell UMI counts
#'
#' `scribe_fit()` fits count models to a genes x cells count matrix (base
#' matrix, `dgCMatrix`, `DelayedMatrix`, `SingleCellExperiment`,
#' `SummarizedExperiment` or Seurat object): the negative-binomial family by
#' stochastic variational inference ([ScribeSVIResults-class]) or NUTS
#' ([ScribeMCMCResults-class]), the log-normal family by per-cell Laplace
#' approximations ([ScribeLaplaceResults-class]). See [get_map()],
#' [get_posterior_samples()], [log_likelihood()], [posterior_predictive()],
#' [denoise_counts()], [normalize_counts()] and [add_scribe_fit()]; errors are
#' classed conditions ([scribeR-conditions]).
#'
#' Options: `scribeR.num_threads` (default threads), `scribeR.verbose`
#' (progress of long analyses; default `interactive()`),
#' `scribeR.mcmc_warn_dim` (the NUTS dimension above which a fit warns).
#'
#' Threads: the numerical core runs on `num_threads` threads (default
#' `getOption("scribeR.num_threads", 1L)`; `NULL` uses all cores). Results do
#' not depend on the number of threads.
#'
#' @keywords internal
#' @importFrom methods setClass setGeneric setMethod setValidity new is as validObject slot show
#' @importFrom stats setNames
#' @importFrom rlang .data
#' @importClassesFrom Matrix dgCMatrix Matrix
#' @importClassesFrom SummarizedExperiment SummarizedExperiment
#' @useDynLib scribeR, .registration = TRUE
"_PACKAGE"
