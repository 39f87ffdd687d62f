# Turning user input into a validated genes x cells dgCMatrix. Sparse input is
# never densified; dense input is converted to sparse once.

as_counts_dgc <- function(x, arg = "x") {
  if (inherits(x, "dgCMatrix")) return(x)
  if (is.matrix(x)) {
    if (!is.numeric(x) && !is.logical(x)) {
      abort_input("{.arg {arg}} must be a numeric count matrix, not a {typeof(x)} matrix.")
    }
    if (anyNA(x)) abort_input("{.arg {arg}} contains NA values; counts must be complete.")
    storage.mode(x) <- "double"
    return(as(as(as(x, "dMatrix"), "generalMatrix"), "CsparseMatrix"))
  }
  if (is(x, "DelayedMatrix")) return(delayed_to_dgc(x))
  if (is(x, "Matrix")) {
    return(as(as(as(x, "dMatrix"), "generalMatrix"), "CsparseMatrix"))
  }
  abort_input(c(
    "{.arg {arg}} must be a count matrix (matrix, dgCMatrix, DelayedMatrix) or an object holding one.",
    "x" = "You supplied an object of class {.cls {class(x)[1]}}."
  ))
}

# Reads a DelayedMatrix in column blocks of about 1e7 entries, each block
# realised directly as a sparse matrix.
delayed_to_dgc <- function(x) {
  n <- ncol(x)
  if (n == 0L) return(as(as(matrix(0, nrow(x), 0), "dMatrix"), "CsparseMatrix"))
  per <- max(1L, floor(1e7 / max(1L, nrow(x))))
  starts <- seq.int(1L, n, by = per)
  blocks <- lapply(starts, function(s) {
    idx <- s:min(n, s + per - 1L)
    as_counts_dgc(as(x[, idx, drop = FALSE], "CsparseMatrix"))
  })
  out <- do.call(cbind, blocks)
  dimnames(out) <- dimnames(x)
  out
}

# Validates counts; returns the (possibly filtered) matrix and what was dropped.
validate_counts <- function(m, drop_empty = FALSE, arg = "x", allow_empty_cells = FALSE) {
  if (nrow(m) == 0L || ncol(m) == 0L) {
    abort_input("{.arg {arg}} has {nrow(m)} gene{?s} and {ncol(m)} cell{?s}; it needs at least one of each.")
  }
  v <- m@x
  if (anyNA(v)) abort_input("{.arg {arg}} contains NA values; counts must be complete.")
  if (any(!is.finite(v))) abort_input("{.arg {arg}} contains infinite values; counts must be finite.")
  if (any(v < 0)) abort_input("{.arg {arg}} contains negative values; UMI counts are non-negative integers.")
  if (any(v != round(v))) {
    abort_input(c(
      "{.arg {arg}} contains non-integer values; the models need raw UMI counts.",
      "i" = "Pass the raw counts assay, not normalised or log-transformed values."
    ))
  }
  # Cell totals straight from the CSC slots (exact for integer counts).
  cs <- cumsum(c(0, v))
  totals <- cs[m@p[-1L] + 1L] - cs[m@p[-length(m@p)] + 1L]
  empty <- which(totals == 0)
  dropped <- character()
  if (length(empty) > 0L && !allow_empty_cells) {
    if (!isTRUE(drop_empty)) {
      abort_input(c(
        "{length(empty)} cell{?s} of {.arg {arg}} {if (length(empty) == 1L) 'has' else 'have'} no counts at all.",
        "i" = "Filter them first (e.g. {.code x[, colSums(x) > 0]}) or use {.code drop_empty = TRUE}."
      ))
    }
    dropped <- if (is.null(colnames(m))) as.character(empty) else colnames(m)[empty]
    m <- m[, -empty, drop = FALSE]
    if (ncol(m) == 0L) abort_input("{.arg {arg}} has no cell with a nonzero count.")
  }
  list(counts = m, dropped_cells = dropped)
}

# Counts matrix from a SummarizedExperiment (assay by name or number).
counts_from_se <- function(x, assay) {
  nms <- SummarizedExperiment::assayNames(x)
  n <- length(SummarizedExperiment::assays(x))
  if (is.numeric(assay)) {
    if (length(assay) != 1L || assay < 1 || assay > n) {
      abort_input("{.arg assay} = {assay} is out of range; the object has {n} assay{?s}.")
    }
  } else if (!is.character(assay) || length(assay) != 1L || !(assay %in% nms)) {
    abort_input(c("{.arg assay} must name an assay of {.arg x}.",
                  "i" = "Available assays: {.val {nms}}."))
  }
  SummarizedExperiment::assay(x, assay, withDimnames = TRUE)
}

# Counts matrix from a Seurat object (counts layer/slot of `assay`).
counts_from_seurat <- function(x, assay) {
  if (!requireNamespace("SeuratObject", quietly = TRUE)) {
    abort_input("Reading a Seurat object needs the {.pkg SeuratObject} package.")
  }
  if (!(assay %in% SeuratObject::Assays(x))) {
    abort_input(c("{.arg assay} must name an assay of the Seurat object.",
                  "i" = "Available assays: {.val {SeuratObject::Assays(x)}}."))
  }
  # SeuratObject 5 reads layers; version 4 (Debian's) only has slots.
  if (utils::packageVersion("SeuratObject") >= "5.0.0") {
    layer_data <- getExportedValue("SeuratObject", "LayerData")
    return(layer_data(x, assay = assay, layer = "counts"))
  }
  SeuratObject::GetAssayData(x, assay = assay, slot = "counts")
}
