sim <- sim_data("zinbvcp", n_genes = 40, n_cells = 100)
fit <- scribe_fit(sim$counts, model = "zinbvcp", n_steps = 100, seed = 4, verbose = FALSE)

test_that("show() summarises the fit", {
  expect_output(show(fit), "zinbvcp \\(canonical\\)")
  expect_output(show(fit), "40 genes x 100 cells")
  expect_output(show(fit), "gate \\(genes\\)")
})

test_that("get_map() returns named estimates with derived quantities", {
  m <- get_map(fit)
  expect_named(m, c("r", "mu", "p", "phi", "gate", "p_capture", "p_hat"))
  expect_identical(names(m$r), rownames(sim$counts))
  expect_identical(names(m$p_capture), colnames(sim$counts))
  expect_length(m$p, 1)
  expect_equal(m$mu, m$r * m$p / (1 - m$p))
  expect_equal(m$phi, (1 - m$p) / m$p)
  expect_equal(m$p_hat, m$p * m$p_capture / (1 - m$p * (1 - m$p_capture)))
  # LogNormal guide on r: the mode is exp(loc - scale^2).
  expect_equal(unname(m$r), exp(fit@params$r$loc - fit@params$r$scale^2))
})

test_that("get_posterior_samples() returns draws x genes / cells", {
  d <- get_posterior_samples(fit, n_samples = 30, seed = 1)
  expect_identical(dim(d$r), c(30L, 40L))
  expect_identical(dim(d$p_capture), c(30L, 100L))
  expect_length(d$p, 30)
  expect_identical(colnames(d$gate), rownames(sim$counts))
  expect_identical(d, get_posterior_samples(fit, n_samples = 30, seed = 1))
  # Draw means approach the guide's mean.
  big <- get_posterior_samples(fit, n_samples = 4000, seed = 2)
  want <- exp(fit@params$r$loc + fit@params$r$scale^2 / 2)
  expect_equal(unname(colMeans(big$r)), want, tolerance = 0.05)
  expect_error(get_posterior_samples(fit, n_samples = 0), "n_samples", class = "scribeR_input_error")
})

test_that("results round-trip through saveRDS()", {
  f <- tempfile(fileext = ".rds")
  saveRDS(fit, f)
  back <- readRDS(f)
  expect_identical(back, fit)
  expect_identical(get_map(back), get_map(fit))
})

test_that("add_scribe_fit() writes gene, cell and summary results", {
  skip_if_not_installed("SingleCellExperiment")
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = sim$counts))
  f2 <- scribe_fit(sce, model = "zinbvcp", n_steps = 100, seed = 4, verbose = FALSE)
  out <- add_scribe_fit(sce, f2)
  rd <- SummarizedExperiment::rowData(out)
  cd <- SummarizedExperiment::colData(out)
  m <- get_map(f2)
  expect_equal(rd$scribe_r, unname(m$r))
  expect_equal(rd$scribe_gate, unname(m$gate))
  expect_equal(cd$scribe_p_hat, unname(m$p_hat))
  expect_equal(S4Vectors::metadata(out)$scribe$p, m$p)
  expect_error(add_scribe_fit(out, f2), "overwrite", class = "scribeR_input_error")
  expect_silent(add_scribe_fit(out, f2, overwrite = TRUE))
  expect_error(add_scribe_fit(sce[1:10, ], f2), "genes", class = "scribeR_input_error")
  expect_error(add_scribe_fit(sim$counts, f2), "SingleCellExperiment", class = "scribeR_input_error")
})

test_that("plot_loss() returns a ggplot", {
  skip_if_not_installed("ggplot2")
  expect_s3_class(plot_loss(fit), "ggplot")
})

test_that("the bundled pbmc3k subset fits", {
  counts <- scribe_example_data()
  expect_s4_class(counts, "dgCMatrix")
  expect_identical(dim(counts), c(500L, 1000L))
  f <- scribe_fit(counts, n_steps = 200, seed = 1, verbose = FALSE)
  expect_true(all(is.finite(get_map(f)$r)))
})

test_that("scribe_simulate() checks its arguments", {
  expect_error(scribe_simulate("nbdm", n_genes = 5, r = 1:3), "r", class = "scribeR_input_error")
  expect_error(scribe_simulate("nbdm", p = 1.5), "p", class = "scribeR_input_error")
  s <- scribe_simulate("nbvcp", n_genes = 5, n_cells = 10, seed = 1)
  expect_identical(dim(s$counts), c(5L, 10L))
  expect_identical(s, scribe_simulate("nbvcp", n_genes = 5, n_cells = 10, seed = 1))
})
