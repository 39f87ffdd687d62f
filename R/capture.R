#' Capture probabilities of new cells from a capture amortizer
#'
#' An SVI fit with `amortize_capture = TRUE` predicts each cell's capture
#' posterior from the cell's library size over the fit's genes, so it gives
#' the capture probability `nu` of cells it never saw (and, for the fit's own
#' cells, the posterior its guide holds).
#'
#' @param fit A [ScribeSVIResults-class] fit of an nbvcp or zinbvcp model
#'   with `amortize_capture = TRUE`.
#' @param x Counts of the cells (genes x cells, any input [scribe_fit()]
#'   takes). Genes are matched to the fit's by row name when both have
#'   names, else `x` must have the fit's genes in its order.
#' @param probs Quantiles of each cell's capture posterior to return.
#' @param assay For SingleCellExperiment or Seurat input, the assay to read.
#' @return A cells x `probs` matrix of capture probabilities (column names as
#'   [stats::quantile()] writes them).
#' @export
#' @examples
#' counts <- scribe_example_data()
#' fit <- scribe_fit(counts[1:50, ], model = "nbvcp", amortize_capture = TRUE,
#'                   n_steps = 300, seed = 1, verbose = FALSE)
#' head(predict_capture(fit, counts[1:50, 1:10]))
predict_capture <- function(fit, x, probs = c(0.025, 0.5, 0.975), assay = NULL) {
  if (!is(fit, "ScribeSVIResults") || !identical(fit@guide, "amortized_capture")) {
    abort_input(c("{.arg fit} must be an SVI fit with {.code amortize_capture = TRUE}.",
                  "i" = "Refit with {.code scribe_fit(x, model = \"nbvcp\", amortize_capture = TRUE)}."))
  }
  if (!is.numeric(probs) || !length(probs) || anyNA(probs) || any(probs <= 0 | probs >= 1)) {
    abort_input("{.arg probs} must be numbers strictly between 0 and 1, not {describe_value(probs)}.")
  }
  counts <- counts_of_fit_genes(fit, x, assay)
  lib <- Matrix::colSums(counts)
  q <- call_core(rs_predict_capture(core_view(fit), as.numeric(lib), as.numeric(probs)))
  matrix(q, nrow = length(lib), dimnames = list(colnames(counts), paste0(formatC(100 * probs, format = "fg", width = 1, digits = 7), "%")))
}

# The counts of `x` restricted to (and ordered as) the fit's genes: by row
# name when `x` has names, else `x` must have exactly the fit's genes.
counts_of_fit_genes <- function(fit, x, assay) {
  counts <- scribe_counts(x, assay = assay)
  genes <- fit@gene_names
  if (!is.null(rownames(counts)) && !is.null(genes)) {
    missing <- setdiff(genes, rownames(counts))
    if (length(missing)) {
      abort_input("{.arg x} lacks {length(missing)} of the fit's genes, e.g. {.val {utils::head(missing, 3)}}.")
    }
    return(counts[genes, , drop = FALSE])
  }
  if (nrow(counts) != length(genes)) {
    abort_input("{.arg x} has {nrow(counts)} genes, the fit {length(genes)}; give row names to match them.")
  }
  counts
}
