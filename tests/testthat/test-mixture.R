# Mixtures: recovery up to label switching, shapes, arguments, write-back.

match_components <- function(est, truth) {
  k <- nrow(truth)
  perms <- if (k == 2) list(1:2, 2:1) else list(1:3, c(1, 3, 2), c(2, 1, 3), c(2, 3, 1), c(3, 1, 2), c(3, 2, 1))
  score <- vapply(perms, function(p) sum(vapply(seq_len(k), function(j) cor(log(est[p[j], ]), log(truth[j, ])), 0)), 0)
  perms[[which.max(score)]]
}

test_that("an nbdm mixture recovers component dispersions and weights", {
  sim <- scribe_simulate("nbdm", n_genes = 150, n_cells = 1200, n_components = 3, seed = 4)
  fit <- scribe_fit(sim$counts, model = "nbdm", n_components = 3, mixture_params = "biological",
                    n_steps = 1500, seed = 2, verbose = FALSE)
  m <- get_map(fit)
  expect_identical(dim(m$r), c(3L, 150L))
  perm <- match_components(m$r, sim$truth$r)
  for (j in 1:3) {
    expect_gt(cor(log(m$r[perm[j], ]), log(sim$truth$r[j, ])), 0.95)
    expect_lt(abs(m$mixing_weights[[perm[j]]] - sim$truth$weights[[j]]), 0.05)
    # p_k trades off against r_k; the smallest component has ~190 cells.
    expect_lt(abs(m$p[[perm[j]]] - sim$truth$p[[j]]), 0.1)
  }
  expect_equal(sum(m$mixing_weights), 1)
})

test_that("mixture outputs have component axes where the parameters do", {
  sim <- scribe_simulate("zinbvcp", n_genes = 20, n_cells = 60, n_components = 2, seed = 1)
  fit <- quick_fit(sim$counts, model = "zinbvcp", n_components = 2, mixture_params = "mean")
  m <- get_map(fit)
  expect_identical(dim(m$r), c(2L, 20L))
  expect_length(m$p, 1)
  expect_length(m$gate, 20)
  expect_length(m$mixing_weights, 2)
  d <- get_posterior_samples(fit, n_samples = 7, seed = 1)
  expect_identical(dim(d$r), c(7L, 2L, 20L))
  expect_identical(dimnames(d$r)[[3]], rownames(sim$counts))
  expect_identical(dim(d$mixing_weights), c(7L, 2L))
  expect_equal(rowSums(d$mixing_weights), rep(1, 7))
  expect_output(show(fit), "mixture of 2 components")
  expect_output(show(fit), "r \\(genes x 2 components\\)")
  gate_only <- quick_fit(sim$counts, model = "zinbvcp", n_components = 2, mixture_params = "gate")
  g <- get_map(gate_only)
  expect_identical(dim(g$gate), c(2L, 20L))
  expect_length(g$r, 20)
})

test_that("mixture arguments are validated", {
  m <- sim_data("nbdm", n_genes = 10, n_cells = 30)$counts
  expect_error(quick_fit(m, model = "nbdm", n_components = 2, mixture_params = "gate"), "zero-inflated",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbdm", n_components = 2, mixture_params = c("r", "p_capture")),
               "p_capture", class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbdm", priors = list(mixing = 2)), "mixture", class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbdm", n_components = 2, priors = list(mixing = -1)), "mixing",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbdm", n_components = 40), "larger than the number of cells",
               class = "scribeR_input_error")
  fit <- quick_fit(m, model = "nbdm", n_components = 2, priors = list(mixing = 3, dispersion = c(0, 2)))
  expect_identical(fit@priors$mixing_weights$hyper, 3)
  expect_identical(fit@priors$r$hyper, c(0, 2))
  expect_error(scribe_simulate("nbdm", n_components = 2, p = 0.3), "drawn per component",
               class = "scribeR_input_error")
})

test_that("mixture fits write matrix columns back to the SingleCellExperiment", {
  skip_if_not_installed("SingleCellExperiment")
  sim <- scribe_simulate("nbvcp", n_genes = 20, n_cells = 60, n_components = 2, seed = 3)
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = sim$counts))
  fit <- quick_fit(sce, model = "nbvcp", n_components = 2)
  out <- add_scribe_fit(sce, fit)
  rd <- SummarizedExperiment::rowData(out)
  expect_identical(dim(rd$scribe_r), c(20L, 2L))
  expect_identical(dim(SummarizedExperiment::colData(out)$scribe_p_hat), c(60L, 2L))
  expect_length(S4Vectors::metadata(out)$scribe$mixing_weights, 2)
})

test_that("mixture fits are reproducible across thread counts", {
  sim <- scribe_simulate("zinb", n_genes = 30, n_cells = 150, n_components = 2, seed = 5)
  a <- scribe_fit(sim$counts, model = "zinb", n_components = 2, n_steps = 40, seed = 1, num_threads = 1, verbose = FALSE)
  b <- scribe_fit(sim$counts, model = "zinb", n_components = 2, n_steps = 40, seed = 1, num_threads = 2, verbose = FALSE)
  expect_identical(a@params, b@params)
})
