#' @include results.R
NULL

#' Subset a fit by genes and cells
#'
#' `fit[genes, cells]` keeps the variational parameters (SVI) or the draws
#' (MCMC) of the chosen genes and cells (names, indices or logical vectors;
#' either may be missing).
#' Shared parameters and mixing weights are unchanged, so log-likelihoods,
#' denoising and predictive draws of the subset equal the corresponding
#' parts of the full fit's.
#'
#' @param x A fitted model.
#' @param i Genes.
#' @param j Cells.
#' @param ... Unused.
#' @param drop Unused (always a results object).
#' @return A results object of the same class.
#' @examples
#' counts <- scribe_example_data()
#' fit <- scribe_fit(counts, n_steps = 200, seed = 1, verbose = FALSE)
#' small <- fit[c("LYZ", "CD74"), 1:100]
#' small
#' @name subset-results
#' @aliases [,ScribeLayoutResults,ANY,ANY,ANY-method
#' @export
setMethod("[", "ScribeLayoutResults", function(x, i, j, ..., drop = FALSE) {
  check_format(x, "x")
  sel <- subset_selection(x, if (missing(i)) NULL else i, if (missing(j)) NULL else j)
  # The core knows which coordinates of the posterior belong to which genes and cells.
  res <- call_core(rs_subset_fit(core_view(x), length(x@gene_names), sel$genes - 1L, sel$cells - 1L))
  x@layout <- layout_frame(res$layout)
  if (is(x, "ScribeMCMCResults")) {
    x@params$draws <- matrix(res$draws, nrow = sum(res$layout$len))
  } else {
    x@params <- res$params
  }
  # Totals stay known only along the axis that kept everything of the other.
  fp <- x@counts_summary
  all_genes <- length(sel$genes) == length(x@gene_names) && all(sel$genes == seq_along(x@gene_names))
  all_cells <- length(sel$cells) == length(x@cell_names) && all(sel$cells == seq_along(x@cell_names))
  x@counts_summary <- list(cell_totals = if (all_genes && length(fp$cell_totals)) fp$cell_totals[sel$cells],
                           gene_totals = if (all_cells && length(fp$gene_totals)) fp$gene_totals[sel$genes])
  x@gene_names <- x@gene_names[sel$genes]
  x@cell_names <- x@cell_names[sel$cells]
  x
})

subset_selection <- function(x, i, j) {
  pick <- function(idx, names, what) {
    if (missing(idx) || is.null(idx)) return(seq_along(names))
    out <- if (is.character(idx)) match(idx, names) else if (is.logical(idx)) {
      if (length(idx) != length(names)) abort_input("A logical {what} index must have length {length(names)}.")
      which(idx)
    } else idx
    if (anyNA(out) || any(out < 1) || any(out > length(names)) || any(out != round(out))) {
      abort_input("The {what} index has entries that are not {what}s of the fit.")
    }
    as.integer(out)
  }
  list(genes = pick(i, x@gene_names, "gene"), cells = pick(j, x@cell_names, "cell"))
}
