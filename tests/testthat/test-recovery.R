# Parameter recovery on data simulated from each model (1000 cells x 300 genes).

test_that("nbdm recovers r and p", {
  sim <- sim_data("nbdm")
  m <- get_map(scribe_fit(sim$counts, model = "nbdm", n_steps = 2000, seed = 3, verbose = FALSE))
  expect_gt(cor(log(m$r), log(sim$truth$r)), 0.95)
  expect_lt(abs(m$p - sim$truth$p) / sim$truth$p, 0.10)
})

test_that("zinb recovers r, p and identifiable gates", {
  sim <- sim_data("zinb")
  m <- get_map(scribe_fit(sim$counts, model = "zinb", n_steps = 2000, seed = 3, verbose = FALSE))
  expect_gt(cor(log(m$r), log(sim$truth$r)), 0.95)
  expect_lt(abs(m$p - sim$truth$p) / sim$truth$p, 0.10)
  # With small r the NB alone explains the zeros and the gate is not
  # identified; where r > 1 the excess zeros are real dropout.
  real <- sim$truth$gate > 0.2 & sim$truth$r > 1
  expect_gt(sum(real), 5)
  expect_lt(mean(abs(m$gate[real] - sim$truth$gate[real])), 0.1)
  expect_lt(mean(m$gate[sim$truth$gate == 0 & sim$truth$r > 1]), 0.05)
})

test_that("nbvcp recovers r and the per-cell effective probability", {
  sim <- sim_data("nbvcp")
  m <- get_map(scribe_fit(sim$counts, model = "nbvcp", n_steps = 2000, seed = 3, verbose = FALSE))
  expect_gt(cor(log(m$r), log(sim$truth$r)), 0.95)
  expect_gt(cor(m$p_hat, sim$truth$p_hat), 0.9)
})

test_that("zinbvcp recovers r, p_hat and identifiable gates", {
  sim <- sim_data("zinbvcp")
  m <- get_map(scribe_fit(sim$counts, model = "zinbvcp", n_steps = 1500, seed = 3, verbose = FALSE))
  expect_gt(cor(log(m$r), log(sim$truth$r)), 0.95)
  expect_gt(cor(m$p_hat, sim$truth$p_hat), 0.9)
  real <- sim$truth$gate > 0.2 & sim$truth$r > 1
  expect_lt(mean(abs(m$gate[real] - sim$truth$gate[real])), 0.1)
})

test_that("every parameterization recovers the same model", {
  sim <- sim_data("nbvcp")
  for (par in c("mean_prob", "mean_odds")) {
    for (unc in c(FALSE, TRUE)) {
      fit <- scribe_fit(sim$counts, model = "nbvcp", parameterization = par, unconstrained = unc,
                        n_steps = 1500, seed = 3, verbose = FALSE)
      m <- get_map(fit)
      expect_gt(cor(log(m$r), log(sim$truth$r)), 0.95, label = paste(par, unc))
      expect_gt(cor(m$p_hat, sim$truth$p_hat), 0.9, label = paste(par, unc))
      expect_equal(m$r, m$mu / (m$p / (1 - m$p)), tolerance = 1e-8)
    }
  }
})

test_that("the biology-informed capture prior anchors nu to L / M0", {
  sim <- sim_data("nbvcp")
  m0 <- 2000
  fit <- scribe_fit(sim$counts, model = "nbvcp", n_steps = 1500, seed = 3, verbose = FALSE,
                    priors = list(capture_efficiency = c(log(m0), 0.5)))
  expect_true("eta_capture" %in% names(fit@params))
  m <- get_map(fit)
  expect_gt(cor(m$p_hat, sim$truth$p_hat), 0.9)
  lib <- Matrix::colSums(sim$counts)
  expect_gt(cor(log(m$p_capture), log(lib)), 0.9)
})

test_that("mini-batches recover the same parameters", {
  sim <- sim_data("nbdm")
  m <- get_map(scribe_fit(sim$counts, model = "nbdm", n_steps = 3000, batch_size = 200, seed = 3,
                          verbose = FALSE))
  expect_gt(cor(log(m$r), log(sim$truth$r)), 0.95)
  expect_lt(abs(m$p - sim$truth$p) / sim$truth$p, 0.10)
})
