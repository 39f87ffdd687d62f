#' A small real data set: a pbmc3k subset
#'
#' UMI counts of 500 genes x 1000 cells from 10x Genomics' "3k PBMCs from a
#' Healthy Donor" (v1 chemistry, Cell Ranger 1.1.0): 1000 cells drawn at
#' random (`set.seed(1)`) and, among them, the 500 genes detected in the most
#' cells (`inst/scripts/make-example-data.R` rebuilds it). Licensed CC BY 4.0;
#' attribution: "3k PBMCs from a Healthy Donor, Single Cell Gene Expression
#' Dataset by Cell Ranger 1.1.0, 10x Genomics (2016)".
#'
#' @param class `"dgCMatrix"` (default) or `"SingleCellExperiment"`.
#' @return Genes x cells counts in the requested class.
#' @examples
#' counts <- scribe_example_data()
#' dim(counts)
#' @export
scribe_example_data <- function(class = c("dgCMatrix", "SingleCellExperiment")) {
  class <- match_choice(class[1], c("dgCMatrix", "SingleCellExperiment"), "class")
  counts <- readRDS(system.file("extdata", "pbmc3k_subset.rds", package = "scribeR", mustWork = TRUE))
  if (class == "dgCMatrix") return(counts)
  if (!requireNamespace("SingleCellExperiment", quietly = TRUE)) {
    abort_input("{.code class = \"SingleCellExperiment\"} needs the {.pkg SingleCellExperiment} package.")
  }
  SingleCellExperiment::SingleCellExperiment(list(counts = counts))
}
