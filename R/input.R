# Turning user input into a validated genes x cells dgCMatrix. Sparse input is
# never densified; dense input is converted to sparse once.

as_counts_dgc <- function(x, arg = "x") {
  if (inherits(x, "dgCMatrix")) return(x)
  if (is.matrix(x)) {
    if (!is.numeric(x)) {
      abort_input("{.arg {arg}} must be a numeric count matrix, not a {typeof(x)} matrix.")
    }
    if (anyNA(x)) abort_input("{.arg {arg}} contains NA values; counts must be complete.")
    storage.mode(x) <- "double"
    return(as(as(as(x, "dMatrix"), "generalMatrix"), "CsparseMatrix"))
  }
  if (is(x, "DelayedMatrix")) return(delayed_to_dgc(x))
  if (is(x, "Matrix")) {
    if (is(x, "lMatrix") || is(x, "nMatrix")) {
      abort_input("{.arg {arg}} must hold counts, not a logical ({.cls {class(x)[1]}}) matrix.")
    }
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

# The largest count the core stores (an unsigned 32-bit integer).
.max_count <- 4294967295

# Fills missing dimnames (gene1, ..., cell1, ...) and makes duplicated ones
# unique (make.unique), so that fits and analyses name genes and cells alike
# and dropped cells keep the names of their columns.
name_counts <- function(m, warn = TRUE) {
  if (nrow(m) == 0L || ncol(m) == 0L) return(m)
  dn <- dimnames(m)
  if (is.null(dn[[1]])) dn[[1]] <- paste0("gene", seq_len(nrow(m)))
  if (is.null(dn[[2]])) dn[[2]] <- paste0("cell", seq_len(ncol(m)))
  for (k in 1:2) {
    if (anyDuplicated(dn[[k]])) {
      what <- c("gene", "cell")[k]
      dup <- unique(dn[[k]][duplicated(dn[[k]])])
      if (warn) {
        cli::cli_warn(c("{length(dup)} {what} name{?s} of {.arg x} {?is/are} not unique (e.g. {.val {dup[1]}}).",
                        "i" = "scribeR names them with {.fn make.unique}, as analyses of the same counts will."))
      }
      dn[[k]] <- make.unique(dn[[k]])
    }
  }
  dimnames(m) <- dn
  m
}

# A warning when the rows look like cell barcodes: scribeR wants genes x cells.
check_orientation <- function(m) {
  rn <- utils::head(rownames(m), 200L)
  if (length(rn) && mean(grepl("^[ACGTN]{8,}([-_][0-9]+)?$", rn)) > 0.5) {
    cli::cli_warn(c("The rows of {.arg x} look like cell barcodes (e.g. {.val {rn[1]}}).",
                    "i" = "scribeR expects genes x cells; transpose with {.code t(x)} if these are cells."))
  }
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
  if (length(v) && max(v) > .max_count) {
    abort_input("{.arg {arg}} contains a count of {format(max(v), big.mark = ',')}; counts above {format(.max_count, big.mark = ',', scientific = FALSE)} (2^32 - 1) are not supported.")
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
    dropped <- colnames(m)[empty]
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
