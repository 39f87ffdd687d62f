#' Write a fit back into a SingleCellExperiment
#'
#' Gene-level MAP estimates go to `rowData()` (`scribe_r`, `scribe_mu`,
#' `scribe_gate`, `scribe_bnb_concentration` of BNB fits, and `scribe_p`,
#' `scribe_phi` when `p` is gene-specific),
#' cell-level ones to `colData()` (`scribe_p_capture`,
#' `scribe_p_hat`), and a summary (model, scalars, mixing weights, loss
#' history, seed) to `metadata()$scribe`. Component-specific estimates of a
#' mixture are stored as matrix columns (genes x K, cells x K). Existing columns are only replaced with
#' `overwrite = TRUE`. Cells dropped by `drop_empty = TRUE` get `NA`.
#'
#' A VAE fit adds its cells' embeddings (the encoder means of
#' [get_latent_embeddings()], from the object's counts) as the reduced
#' dimension `"SCRIBE"` (Seurat: a `DimReduc` named `"scribe"`, key
#' `SCRIBE_`), `NA` for cells the fit dropped.
#'
#' A differential expression result of [scribe_de()] adds the gene columns
#' `scribe_de_delta_mean`, `scribe_de_delta_sd`, `scribe_de_lfsr` and
#' `scribe_de_is_de` (called at PEFP 0.05, `tau = 0`), `NA` for genes it did
#' not compare, and its method and labels to `metadata()$scribe_de`
#' (Seurat: feature metadata and `Misc(object, "scribe_de")`).
#'
#' @param sce A `SingleCellExperiment` or `SummarizedExperiment` with the
#'   fitted genes and cells.
#' @param fit A fit of `sce` (e.g. [ScribeSVIResults-class]) or a
#'   [ScribeDEResults-class] comparison of fits to its genes.
#' @param overwrite Replace existing `scribe_*` columns, assays and metadata.
#' @param denoised Also add the MAP-denoised counts (posterior mean, dense)
#'   as the assay (Seurat: layer of a new assay) `"scribe_denoised"`.
#' @return `sce` with the fit added. For a Seurat object, gene-level results
#'   go to the assay's feature metadata and cell-level ones to `meta.data`;
#'   the summary goes to `Misc(object, "scribe")`.
#' @examples
#' if (requireNamespace("SingleCellExperiment", quietly = TRUE)) {
#'   counts <- scribe_example_data()
#'   sce <- SingleCellExperiment::SingleCellExperiment(list(counts = counts))
#'   fit <- scribe_fit(sce, model = "nbvcp", n_steps = 200, seed = 1, verbose = FALSE,
#'                     optimizer_config = list(name = "adam", step_size = 0.01))
#'   sce <- add_scribe_fit(sce, fit)
#'   head(SummarizedExperiment::rowData(sce))
#' }
#' @export
add_scribe_fit <- function(sce, fit, overwrite = FALSE, denoised = FALSE) {
  check_flag(denoised, "denoised")
  if (is(fit, "ScribeDEResults")) return(add_de_columns(sce, fit, overwrite))
  if (is(fit, "ScribeVAEResults")) return(add_vae_embedding(sce, fit, overwrite))
  if (inherits(sce, "Seurat")) return(add_scribe_fit_seurat(sce, fit, overwrite, denoised))
  if (!is(sce, "SummarizedExperiment")) {
    abort_input("{.arg sce} must be a SingleCellExperiment or SummarizedExperiment, not {.cls {class(sce)[1]}}.")
  }
  check_format(fit)
  check_flag(overwrite, "overwrite")
  genes <- rownames(sce)
  cells <- colnames(sce)
  if (is.null(genes)) genes <- paste0("gene", seq_len(nrow(sce)))
  if (is.null(cells)) cells <- paste0("cell", seq_len(ncol(sce)))
  if (!identical(genes, fit@gene_names)) {
    abort_input("The genes of {.arg sce} are not the genes of {.arg fit} ({nrow(sce)} vs {length(fit@gene_names)}).")
  }
  if (!all(fit@cell_names %in% cells) || length(setdiff(cells, c(fit@cell_names, fit@dropped_cells))) > 0L) {
    abort_input("The cells of {.arg sce} are not the cells of {.arg fit}.")
  }
  map <- get_map(fit)
  rd <- SummarizedExperiment::rowData(sce)
  cd <- SummarizedExperiment::colData(sce)
  put <- function(df, col, values, where) {
    if (col %in% names(df) && !overwrite) {
      abort_input("{where} already has a column {.field {col}}; use {.code overwrite = TRUE} to replace it.")
    }
    df[[col]] <- values
    df
  }
  for (n in intersect(c("r", "mu", "gate", "d", "bnb_concentration", gene_specific_p_sites(map, fit@gene_names)), names(map))) {
    v <- map[[n]]
    if (is(fit, "ScribeLaplaceResults")) {
      # LNM's per-gene values skip the reference gene: align by name.
      full <- rep(NA_real_, length(genes))
      full[match(names(v), genes)] <- unname(v)
      v <- full
    } else {
      # Dataset rows keep the datasets' names as the columns of the matrix.
      v <- if (is.matrix(v)) t(if (is.null(fit@model$dataset_levels)) unname(v) else v) else unname(v)
      if (is.matrix(v)) rownames(v) <- NULL
    }
    rd <- put(rd, paste0("scribe_", n), v, "rowData(sce)")
  }
  for (n in intersect(c("p_capture", "p_hat"), names(map))) {
    v <- map[[n]]
    idx <- match(fit@cell_names, cells)
    if (is.matrix(v)) {
      full <- matrix(NA_real_, length(cells), nrow(v))
      full[idx, ] <- t(unname(v))
    } else {
      full <- rep(NA_real_, length(cells))
      full[idx] <- unname(v)
    }
    cd <- put(cd, paste0("scribe_", n), full, "colData(sce)")
  }
  SummarizedExperiment::rowData(sce) <- rd
  SummarizedExperiment::colData(sce) <- cd
  if (denoised) {
    if ("scribe_denoised" %in% SummarizedExperiment::assayNames(sce) && !overwrite) {
      abort_input("{.arg sce} already has an assay {.val scribe_denoised}; use {.code overwrite = TRUE}.")
    }
    full <- matrix(NA_real_, nrow(sce), ncol(sce), dimnames = dimnames(sce))
    full[, match(fit@cell_names, cells)] <- denoise_counts(fit, sce[, match(fit@cell_names, cells)])
    SummarizedExperiment::assay(sce, "scribe_denoised", withDimnames = FALSE) <- full
  }
  md <- S4Vectors::metadata(sce)
  if (!is.null(md$scribe) && !overwrite) {
    abort_input("{.code metadata(sce)$scribe} already exists; use {.code overwrite = TRUE} to replace it.")
  }
  md$scribe <- list(
    model = fit@model, engine = class(fit)[1],
    p = if (!length(gene_specific_p_sites(map, fit@gene_names))) map$p, phi = if (!length(gene_specific_p_sites(map, fit@gene_names))) map$phi,
    mixing_weights = map$mixing_weights,
    loss_history = if (methods::hasMethod("loss_history", class(fit))) loss_history(fit),
    seed = fit@seed, dropped_cells = fit@dropped_cells
  )
  S4Vectors::metadata(sce) <- md
  sce
}

# Seurat: feature metadata of the default assay, meta.data, Misc().
add_scribe_fit_seurat <- function(obj, fit, overwrite, denoised) {
  if (!requireNamespace("SeuratObject", quietly = TRUE)) abort_input("Seurat write-back needs {.pkg SeuratObject}.")
  assay <- SeuratObject::DefaultAssay(obj)
  genes <- rownames(obj)
  cells <- colnames(obj)
  if (!identical(genes, fit@gene_names)) abort_input("The genes of the Seurat object are not the genes of {.arg fit}.")
  if (!all(fit@cell_names %in% cells)) abort_input("The cells of the Seurat object are not the cells of {.arg fit}.")
  map <- get_map(fit)
  feat <- list()
  for (n in intersect(c("r", "mu", "gate", "bnb_concentration", gene_specific_p_sites(map, fit@gene_names)), names(map))) {
    v <- map[[n]]
    if (is.matrix(v)) {
      for (k in seq_len(nrow(v))) feat[[sprintf("scribe_%s_%s", n, rownames(v)[k])]] <- unname(v[k, ])
    } else {
      feat[[paste0("scribe_", n)]] <- unname(v)
    }
  }
  old <- names(obj[[assay]][[]])
  if (any(names(feat) %in% old) && !overwrite) {
    abort_input("The feature metadata already has scribe columns; use {.code overwrite = TRUE}.")
  }
  obj[[assay]] <- SeuratObject::AddMetaData(obj[[assay]], metadata = data.frame(feat, row.names = genes))
  cell_md <- list()
  for (n in intersect(c("p_capture", "p_hat"), names(map))) {
    v <- map[[n]]
    if (is.matrix(v)) next
    full <- rep(NA_real_, length(cells))
    full[match(fit@cell_names, cells)] <- unname(v)
    cell_md[[paste0("scribe_", n)]] <- full
  }
  if (length(cell_md)) {
    if (any(names(cell_md) %in% names(obj[[]])) && !overwrite) {
      abort_input("meta.data already has scribe columns; use {.code overwrite = TRUE}.")
    }
    obj <- SeuratObject::AddMetaData(obj, metadata = data.frame(cell_md, row.names = cells))
  }
  if (denoised) {
    counts <- SeuratObject::GetAssayData(obj, assay = assay, slot = "counts")
    den <- denoise_counts(fit, counts[, fit@cell_names, drop = FALSE])
    assay_obj <- SeuratObject::CreateAssayObject(data = den)
    SeuratObject::Key(assay_obj) <- "scribedenoised_" # keys may not contain inner underscores
    obj[["scribe_denoised"]] <- assay_obj
  }
  SeuratObject::Misc(obj, "scribe") <- list(model = fit@model, p = if (!length(gene_specific_p_sites(map, fit@gene_names))) map$p,
                                            mixing_weights = map$mixing_weights,
                                            loss_history = if (methods::hasMethod("loss_history", class(fit))) loss_history(fit),
                                            seed = fit@seed)
  obj
}

# "p" and "phi" when the fit's p is gene-specific (a vector named by gene).
gene_specific_p_sites <- function(map, genes) {
  p <- map$p
  by_gene <- if (is.matrix(p)) identical(colnames(p), genes) else identical(names(p), genes)
  if (by_gene) c("p", "phi") else character()
}

# A VAE fit's embeddings as a reduced dimension (SingleCellExperiment) or a
# DimReduc (Seurat).
add_vae_embedding <- function(obj, fit, overwrite) {
  check_format(fit)
  check_flag(overwrite, "overwrite")
  if (!identical(rownames(obj), fit@gene_names)) {
    abort_input("The genes of {.arg sce} are not the genes of {.arg fit}.")
  }
  cells <- colnames(obj)
  if (!all(fit@cell_names %in% cells)) abort_input("The cells of {.arg sce} are not the cells of {.arg fit}.")
  emb <- get_latent_embeddings(fit, obj)
  emb[!rownames(emb) %in% fit@cell_names, ] <- NA
  if (inherits(obj, "Seurat")) {
    if (!requireNamespace("SeuratObject", quietly = TRUE)) abort_input("Seurat write-back needs {.pkg SeuratObject}.")
    if ("scribe" %in% SeuratObject::Reductions(obj) && !overwrite) {
      abort_input("The Seurat object already has a reduction {.val scribe}; use {.code overwrite = TRUE} to replace it.")
    }
    colnames(emb) <- paste0("SCRIBE_", seq_len(ncol(emb)))
    obj[["scribe"]] <- SeuratObject::CreateDimReducObject(embeddings = emb, key = "SCRIBE_",
                                                          assay = SeuratObject::DefaultAssay(obj))
    return(obj)
  }
  if (!is(obj, "SingleCellExperiment")) {
    abort_input("A VAE fit's embeddings go to {.fn reducedDim}: {.arg sce} must be a SingleCellExperiment.")
  }
  if ("SCRIBE" %in% SingleCellExperiment::reducedDimNames(obj) && !overwrite) {
    abort_input("{.arg sce} already has a reduced dimension {.val SCRIBE}; use {.code overwrite = TRUE} to replace it.")
  }
  SingleCellExperiment::reducedDim(obj, "SCRIBE") <- emb
  obj
}
