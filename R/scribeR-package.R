#' scribeR: Bayesian models of single-cell UMI counts
#'
#' `scribe_fit()` fits negative-binomial count models to a genes x cells count
#' matrix (base matrix, `dgCMatrix`, `DelayedMatrix`, `SingleCellExperiment`,
#' `SummarizedExperiment` or Seurat object) by stochastic variational
#' inference. Results are [ScribeSVIResults-class] objects; see [get_map()],
#' [get_posterior_samples()], [loss_history()] and [add_scribe_fit()].
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
