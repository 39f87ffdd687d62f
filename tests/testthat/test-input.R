test_that("every input class gives the same fit as the plain matrix", {
  sim <- sim_data("nbvcp", n_genes = 40, n_cells = 120)
  dgc <- sim$counts
  ref <- quick_fit(dgc, model = "nbvcp")
  same <- function(fit) {
    expect_identical(fit@params, ref@params)
    expect_identical(fit@gene_names, ref@gene_names)
    expect_identical(fit@cell_names, ref@cell_names)
  }
  dense <- as.matrix(dgc)
  same(quick_fit(dense, model = "nbvcp"))
  storage.mode(dense) <- "integer"
  same(quick_fit(dense, model = "nbvcp"))
  same(quick_fit(as(dgc, "TsparseMatrix"), model = "nbvcp"))
  se <- SummarizedExperiment::SummarizedExperiment(list(counts = dgc))
  same(quick_fit(se, model = "nbvcp"))
  skip_if_not_installed("SingleCellExperiment")
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = dgc, other = dgc * 2))
  same(quick_fit(sce, model = "nbvcp"))
  same(quick_fit(sce, model = "nbvcp", assay = 1))
  expect_false(identical(quick_fit(sce, model = "nbvcp", assay = "other")@params, ref@params))
})

test_that("DelayedMatrix input is read block-wise to the same fit", {
  skip_if_not_installed("DelayedArray")
  sim <- sim_data("nbdm", n_genes = 30, n_cells = 80)
  ref <- quick_fit(sim$counts, model = "nbdm")
  dm <- DelayedArray::DelayedArray(sim$counts)
  expect_identical(quick_fit(dm, model = "nbdm")@params, ref@params)
})

test_that("Seurat objects are read from the counts of the RNA assay", {
  skip_if_not_installed("SeuratObject")
  sim <- sim_data("nbdm", n_genes = 30, n_cells = 80)
  ref <- quick_fit(sim$counts, model = "nbdm")
  so <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = sim$counts))
  expect_identical(quick_fit(so, model = "nbdm")@params, ref@params)
})

test_that("bad counts give errors that name the problem", {
  m <- as.matrix(sim_data("nbdm", n_genes = 10, n_cells = 20)$counts)
  bad <- m; bad[1, 1] <- -1
  expect_error(quick_fit(bad), "negative", class = "scribeR_input_error")
  bad <- m; bad[1, 1] <- 0.5
  expect_error(quick_fit(bad), "non-integer", class = "scribeR_input_error")
  bad <- m; bad[1, 1] <- NA
  expect_error(quick_fit(bad), "NA", class = "scribeR_input_error")
  bad <- m; bad[1, 1] <- Inf
  expect_error(quick_fit(bad), "infinite", class = "scribeR_input_error")
  expect_error(quick_fit(m[, 0]), "at least one", class = "scribeR_input_error")
  expect_error(quick_fit(m[0, ]), "at least one", class = "scribeR_input_error")
  expect_error(quick_fit(matrix("a", 2, 2)), "numeric", class = "scribeR_input_error")
  expect_error(quick_fit(list(1, 2)), "count matrix", class = "scribeR_input_error")
})

test_that("empty cells stop the fit unless drop_empty = TRUE", {
  m <- sim_data("nbdm", n_genes = 10, n_cells = 20)$counts
  m[, 3] <- 0
  m <- Matrix::drop0(m)
  expect_error(quick_fit(m), "drop_empty", class = "scribeR_input_error")
  fit <- quick_fit(m, model = "nbdm", drop_empty = TRUE)
  expect_identical(fit@dropped_cells, "cell3")
  expect_length(fit@cell_names, 19)
  expect_output(show(fit), "1 empty cells dropped")
})

test_that("genes never detected are kept and get finite estimates", {
  m <- sim_data("nbdm", n_genes = 10, n_cells = 50)$counts
  m[2, ] <- 0
  m <- Matrix::drop0(m)
  r <- get_map(quick_fit(m, model = "nbdm"))$r
  expect_true(all(is.finite(r)))
  expect_lt(r[["gene2"]], min(r[-2]))
})

test_that("SummarizedExperiment assay errors name the assay", {
  m <- sim_data("nbdm", n_genes = 10, n_cells = 20)$counts
  se <- SummarizedExperiment::SummarizedExperiment(list(counts = m))
  expect_error(quick_fit(se, assay = "logcounts"), "Available assays", class = "scribeR_input_error")
  expect_error(quick_fit(se, assay = 3), "out of range", class = "scribeR_input_error")
  expect_error(quick_fit(m, assay = "counts"), "only applies", class = "scribeR_input_error")
})
