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
#' @aliases [,ScribeSVIResults,ANY,ANY,ANY-method [,ScribeMCMCResults,ANY,ANY,ANY-method
#' @export
setMethod("[", "ScribeSVIResults", function(x, i, j, ..., drop = FALSE) {
  sel <- subset_selection(x, if (missing(i)) NULL else i, if (missing(j)) NULL else j)
  gi <- sel$genes
  ci <- sel$cells
  g_n <- length(x@gene_names)
  x@params <- lapply(x@params, function(b) {
    idx <- block_index(b$kind, b$n_comp, length(b$loc), gi, ci, g_n)
    b$loc <- b$loc[idx]
    b$scale <- b$scale[idx]
    b
  })
  x@gene_names <- x@gene_names[gi]
  x@cell_names <- x@cell_names[ci]
  x
})

#' @rdname subset-results
#' @export
setMethod("[", "ScribeMCMCResults", function(x, i, j, ..., drop = FALSE) {
  sel <- subset_selection(x, if (missing(i)) NULL else i, if (missing(j)) NULL else j)
  g_n <- length(x@gene_names)
  rows <- integer(0)
  blocks <- x@params$blocks
  for (n in names(blocks)) {
    b <- blocks[[n]]
    idx <- block_index(b$kind, b$n_comp, b$len, sel$genes, sel$cells, g_n)
    rows <- c(rows, b$offset + idx)
    blocks[[n]]$offset <- length(rows) - length(idx)
    blocks[[n]]$len <- length(idx)
  }
  x@params <- list(draws = x@params$draws[rows, , drop = FALSE], blocks = blocks)
  x@gene_names <- x@gene_names[sel$genes]
  x@cell_names <- x@cell_names[sel$cells]
  x
})

# Positions (1-based) within a block of the selected genes (every component) or cells.
block_index <- function(kind, n_comp, len, gi, ci, g_n) {
  switch(kind,
    gene = as.vector(outer(gi, (seq_len(n_comp) - 1L) * g_n, "+")),
    cell = ci,
    scalar = seq_len(len)
  )
}

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
