# Inputs a new user met: sizes that used to abort R, valid input that used
# to fail, and wrong results given silently. Each is an error that names the
# argument, or it works.

hard_sim <- sim_data("zinb", n_genes = 20, n_cells = 60, seed = 5)
hard_m <- hard_sim$counts
hard_fit <- scribe_fit(hard_m, model = "zinb", n_steps = 50, seed = 1, verbose = FALSE)
hard_x <- hard_m[, Matrix::colSums(hard_m) > 0]
hard_lap <- scribe_fit(hard_x, model = "pln", inference_method = "laplace", latent_dim = 2, n_steps = 5, seed = 1,
                       verbose = FALSE, laplace_config = list(convergence_action = "ignore"))

test_that("sizes that cannot be allocated are errors naming the argument", {
  expect_error(scribe_fit(hard_m, model = "nbdm", n_steps = 1e10, verbose = FALSE), "n_steps",
               class = "scribeR_input_error")
  expect_error(scribe_fit(hard_x, model = "pln", inference_method = "laplace", latent_dim = 2, n_steps = 1e12,
                          verbose = FALSE), "n_steps", class = "scribeR_input_error")
  expect_error(scribe_fit(hard_m, model = "nbdm", inference_method = "mcmc", n_chains = 1e9, verbose = FALSE),
               "n_chains", class = "scribeR_input_error")
  expect_error(scribe_fit(hard_m, model = "nbdm", inference_method = "mcmc", n_samples = 2e9, verbose = FALSE),
               "n_samples", class = "scribeR_input_error")
  expect_error(normalize_counts(hard_fit, n_samples = 2, n_samples_dirichlet = 1e12), "n_samples_dirichlet",
               class = "scribeR_input_error")
  expect_error(get_latent_samples(hard_lap, hard_x, n_samples = 1e12, cells = 1), "n_samples",
               class = "scribeR_input_error")
  expect_error(get_posterior_samples(hard_fit, n_samples = 1e9), "n_samples.*GB", class = "scribeR_input_error")
  expect_error(posterior_predictive(hard_fit, n_samples = 1e9), "n_samples", class = "scribeR_input_error")
  expect_error(plot_ppc(hard_fit, hard_m, genes = 1, max_count = 1e6), "max_count", class = "scribeR_input_error")
  expect_error(scribe_simulate("nbdm", n_genes = 3e9, n_cells = 2), "n_genes", class = "scribeR_input_error")
  expect_error(scribe_simulate("nbdm", n_genes = 1e5, n_cells = 1e5), "limit", class = "scribeR_input_error")
})

test_that("non-finite, out-of-range and non-count arguments are clear errors", {
  expect_error(scribe_fit(hard_m, n_steps = Inf, verbose = FALSE), "n_steps", class = "scribeR_input_error")
  expect_error(scribe_fit(hard_m, model = "nbdm", n_steps = 2, seed = Inf, verbose = FALSE), "seed",
               class = "scribeR_input_error")
  expect_error(scribe_fit(as.matrix(hard_m) > 0, model = "nbdm", n_steps = 2, verbose = FALSE), "logical",
               class = "scribeR_input_error")
  expect_error(scribe_fit(Matrix::Matrix(as.matrix(hard_m) > 0, sparse = TRUE), model = "nbdm", n_steps = 2,
                          verbose = FALSE), "logical", class = "scribeR_input_error")
  big <- hard_m
  big@x[1] <- 1e10
  expect_error(scribe_fit(big, model = "nbdm", n_steps = 2, verbose = FALSE), "2\\^32 - 1",
               class = "scribeR_input_error")
  big@x[1] <- 2^60
  expect_error(scribe_fit(big, model = "nbdm", n_steps = 2, verbose = FALSE), "2\\^32 - 1",
               class = "scribeR_input_error")
  expect_error(scribe_fit(hard_x[, 1:3], model = "pln", inference_method = "laplace", latent_dim = 5, n_steps = 2,
                          verbose = FALSE), "latent_dim", class = "scribeR_input_error")
  tm <- Matrix::t(hard_m)
  rownames(tm) <- sprintf("%s-1", vapply(seq_len(nrow(tm)), function(i) paste(sample(c("A", "C", "G", "T"), 14, TRUE),
                                                                           collapse = ""), ""))
  expect_warning(scribe_fit(tm, model = "nbdm", n_steps = 2, verbose = FALSE, drop_empty = TRUE), "barcodes")
})

test_that("valid input that used to fail works", {
  # MCMC fits write back (they have no loss history).
  mc <- scribe_fit(hard_x[1:5, ], model = "nbdm", inference_method = "mcmc", n_samples = 20, n_warmup = 20, seed = 1,
                   verbose = FALSE, drop_empty = TRUE)
  skip_if_not_installed("SingleCellExperiment")
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = hard_x[1:5, mc@cell_names]))
  out <- add_scribe_fit(sce, mc)
  expect_equal(SummarizedExperiment::rowData(out)$scribe_r, unname(get_map(mc)$r))
  expect_null(S4Vectors::metadata(out)$scribe$loss_history)
  # Sampling denoised zeros of a zero-inflated model without capture.
  den <- denoise_counts(hard_fit, hard_m, method = "sample", seed = 1)
  expect_true(all(is.finite(den)) && all(den >= 0))
  # A one-gene mixture keeps its gene axis and writes back.
  g1 <- hard_m[1, , drop = FALSE]
  g1 <- g1[, Matrix::colSums(g1) > 0, drop = FALSE]
  mix <- scribe_fit(g1, model = "nbdm", n_components = 2, n_steps = 5, seed = 1, verbose = FALSE)
  expect_identical(dim(get_map(mix)$r), c(2L, 1L))
  out1 <- add_scribe_fit(SingleCellExperiment::SingleCellExperiment(list(counts = g1)), mix)
  expect_identical(dim(SummarizedExperiment::rowData(out1)$scribe_r), c(1L, 2L))
})

test_that("plots of Laplace fits take the counts they need", {
  skip_if_not_installed("ggplot2")
  expect_s3_class(plot_ppc(hard_lap, hard_x, genes = 1:2, n_samples = 5, seed = 1), "ggplot")
  expect_s3_class(plot_mean_variance(hard_lap, hard_x, seed = 1), "ggplot")
})

test_that("unnamed and duplicated cells keep their names through drop_empty and the analyses", {
  um <- unname(as.matrix(hard_m))
  um[, 3] <- 0
  f <- scribe_fit(um, model = "nbdm", n_steps = 5, seed = 1, verbose = FALSE, drop_empty = TRUE)
  expect_identical(f@dropped_cells, "cell3")
  expect_identical(f@cell_names[3], "cell4")
  ll <- log_likelihood(f, um)
  expect_identical(names(ll), f@cell_names)
  dm <- hard_m
  colnames(dm)[2] <- colnames(dm)[1]
  expect_warning(fd <- scribe_fit(dm, model = "nbdm", n_steps = 5, seed = 1, verbose = FALSE), "not unique")
  expect_identical(fd@cell_names[1:2], c(colnames(dm)[1], paste0(colnames(dm)[1], ".1")))
  expect_length(log_likelihood(fd, dm), ncol(dm))
})

test_that("a diverged fit is an error, not a fit with infinite estimates", {
  err <- tryCatch(scribe_fit(hard_m, model = "nbdm", n_steps = 30, seed = 1, verbose = FALSE,
                             optimizer_config = list(name = "sgd", step_size = 10)),
                  error = function(e) e)
  expect_s3_class(err, "scribeR_nonfinite")
  expect_match(conditionMessage(err), "not finite")
  expect_length(err$loss_history, 30)
})

test_that("analyses refuse other data with the same names", {
  other <- hard_m
  other@x <- other@x + 1
  expect_error(log_likelihood(hard_fit, other), "not the data", class = "scribeR_input_error")
  expect_error(denoise_counts(hard_fit, other), "not the data", class = "scribeR_input_error")
  # A subset of the fit recognises the matching subset of the data.
  small <- hard_fit[1:5, ]
  expect_length(log_likelihood(small, hard_m[1:5, ]), ncol(hard_m))
  expect_error(log_likelihood(small, other[1:5, ]), "not the data", class = "scribeR_input_error")
})
