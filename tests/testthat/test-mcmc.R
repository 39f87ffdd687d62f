# MCMC through scribe_fit(): results interface, reproducibility, warm starts,
# recovery and error paths. Sampler correctness on known targets is tested
# in the core (src/rust/scribe-core/tests/mcmc.rs).

mcmc_fit <- function(x, ..., n_samples = 150, n_warmup = 150, n_chains = 2, seed = 1) {
  scribe_fit(x, inference_method = "mcmc", n_samples = n_samples, n_warmup = n_warmup,
             n_chains = n_chains, seed = seed, verbose = FALSE, ...)
}

test_that("an MCMC fit exposes draws, summaries and diagnostics", {
  sim <- sim_data("nbdm", n_genes = 8, n_cells = 60, seed = 3)
  fit <- mcmc_fit(sim$counts, model = "nbdm")
  expect_s4_class(fit, "ScribeMCMCResults")
  expect_s4_class(fit, "ScribeResults")
  expect_output(show(fit), "NUTS")
  s <- get_samples(fit)
  expect_equal(dim(s$r), c(300L, 8L))
  expect_length(s$p, 300L)
  g <- get_samples(fit, group_by_chain = TRUE)
  expect_equal(dim(g$r), c(2L, 150L, 8L))
  expect_equal(dimnames(g$r)[[1]], c("chain1", "chain2"))
  # Chain 2's draws are the second half of the flat draws.
  expect_equal(g$r[2, , 3], unname(s$r[151:300, 3]))
  a <- posterior::as_draws_array(fit)
  expect_equal(posterior::niterations(a), 150L)
  expect_equal(posterior::nchains(a), 2L)
  expect_setequal(posterior::variables(a), c(paste0("r[", rownames(sim$counts), "]"), "p"))
  expect_true("mu[gene1]" %in% posterior::variables(posterior::as_draws_array(fit, derived = TRUE)))
  out <- capture.output(summ <- print_summary(fit))
  expect_true(all(c("mean", "sd", "q5", "q95", "rhat", "ess_bulk", "ess_tail") %in% names(summ)))
  expect_equal(nrow(summ), 9L)
  expect_true(any(grepl("Number of divergences", out)))
  expect_true(any(grepl("E-BFMI", out)))
  d <- sampler_diagnostics(fit)
  expect_equal(nrow(d), 2L)
  expect_true(all(d$step_size > 0 & d$n_grad > 0))
  # Posterior means: get_map() of the sampled sites is the mean of the draws.
  expect_equal(get_map(fit)$p, mean(s$p))
  expect_equal(unname(get_map(fit)$r), unname(colMeans(s$r)))
  # The shared downstream interface reads the draws.
  ll <- log_likelihood(fit, sim$counts, n_samples = 10)
  expect_equal(dim(ll), c(10L, 60L))
  expect_true(all(is.finite(ll)))
  pp <- posterior_predictive(fit, n_samples = 4, genes = 1:3)
  expect_equal(dim(pp), c(4L, 60L, 3L))
  sub <- fit[2:4, ]
  expect_equal(get_samples(sub)$r, s$r[, 2:4])
  expect_equal(log_likelihood(sub, sim$counts[2:4, ], by = "gene", n_samples = 10),
               log_likelihood(fit, sim$counts, by = "gene", n_samples = 10)[, 2:4])
  f <- tempfile(fileext = ".rds")
  saveRDS(fit, f)
  expect_equal(get_samples(readRDS(f))$p, s$p)
})

test_that("MCMC draws depend on the seed, not on the number of threads", {
  sim <- sim_data("nbvcp", n_genes = 10, n_cells = 40, seed = 4)
  a <- mcmc_fit(sim$counts, model = "nbvcp", n_samples = 50, n_warmup = 50, num_threads = 1)
  b <- mcmc_fit(sim$counts, model = "nbvcp", n_samples = 50, n_warmup = 50, num_threads = 2)
  c <- mcmc_fit(sim$counts, model = "nbvcp", n_samples = 50, n_warmup = 50, num_threads = 1, seed = 2)
  expect_identical(a@params$draws, b@params$draws)
  expect_false(identical(a@params$draws, c@params$draws))
})

test_that("NUTS recovers the parameters of data simulated from nbdm", {
  sim <- scribe_simulate("nbdm", n_genes = 20, n_cells = 300, seed = 7)
  fit <- mcmc_fit(sim$counts, model = "nbdm", n_samples = 300, n_warmup = 300)
  s <- get_samples(fit)
  lo <- apply(s$r, 2, stats::quantile, 0.025)
  hi <- apply(s$r, 2, stats::quantile, 0.975)
  expect_gte(mean(sim$truth$r >= lo & sim$truth$r <= hi), 0.85)
  expect_lt(abs(mean(s$p) - sim$truth$p), 4 * stats::sd(s$p) + 0.01)
  capture.output(summ <- print_summary(fit, max_rows = 0))
  expect_true(all(summ$rhat < 1.05))
})

test_that("svi_init maps every parameterization and agrees with a cold start", {
  sim <- sim_data("nbvcp", n_genes = 12, n_cells = 80, seed = 5)
  cold <- mcmc_fit(sim$counts, model = "nbvcp", n_samples = 300, n_warmup = 300)
  ref <- colMeans(log(get_samples(cold)$mu))
  for (par in c("canonical", "mean_prob", "mean_odds")) {
    for (unc in c(FALSE, TRUE)) {
      svi <- scribe_fit(sim$counts, model = "nbvcp", parameterization = par, unconstrained = unc,
                        n_steps = 1500, seed = 1, verbose = FALSE)
      warm <- mcmc_fit(sim$counts, model = "nbvcp", svi_init = svi, n_samples = 300, n_warmup = 100)
      expect_true(warm@config$svi_init)
      lm <- log(get_samples(warm)$mu)
      # Posterior means of log mu agree within a few Monte-Carlo errors.
      expect_lt(max(abs(colMeans(lm) - ref) / apply(lm, 2, stats::sd)), 0.5,
                label = sprintf("%s%s", par, if (unc) " (unconstrained)" else ""))
    }
  }
  # Across models: nbdm SVI starts an nbvcp chain (capture from the data), with a warning.
  svi <- scribe_fit(sim$counts, model = "nbdm", n_steps = 500, seed = 1, verbose = FALSE)
  expect_warning(w <- mcmc_fit(sim$counts, model = "nbvcp", svi_init = svi, n_samples = 20, n_warmup = 20),
                 "nbdm")
  expect_s4_class(w, "ScribeMCMCResults")
})

test_that("MCMC mixtures and zero-inflated models run", {
  sim <- scribe_simulate("zinb", n_genes = 10, n_cells = 60, seed = 2)
  fit <- mcmc_fit(sim$counts, model = "zinb", n_samples = 40, n_warmup = 40)
  expect_equal(dim(get_samples(fit)$gate), c(80L, 10L))
  mix <- scribe_simulate("nbdm", n_genes = 10, n_cells = 60, n_components = 2, seed = 3)
  fit <- mcmc_fit(mix$counts, model = "nbdm", n_components = 2, n_samples = 40, n_warmup = 40)
  w <- get_samples(fit)$mixing_weights
  expect_equal(dim(w), c(80L, 2L))
  expect_equal(unname(rowSums(w)), rep(1, 80))
  expect_equal(dim(cell_type_probabilities(fit, mix$counts, n_samples = 5)$probabilities), c(60L, 2L))
})

test_that("MCMC arguments are checked with clear messages", {
  sim <- sim_data("nbdm", n_genes = 8, n_cells = 60, seed = 3)
  x <- sim$counts
  svi <- scribe_fit(x, model = "nbdm", n_steps = 50, seed = 1, verbose = FALSE)
  expect_error(scribe_fit(x, svi_init = svi, n_steps = 10, verbose = FALSE),
               class = "scribeR_input_error", regexp = "svi_init")
  expect_error(mcmc_fit(x, model = "nbdm", svi_init = "fit"), class = "scribeR_input_error", regexp = "svi_init")
  expect_error(mcmc_fit(x[8:1, ], model = "nbdm", svi_init = svi), class = "scribeR_input_error",
               regexp = "different genes")
  expect_error(mcmc_fit(x, model = "nbdm", mcmc_config = list(target_accept = 0.9)),
               class = "scribeR_input_error", regexp = "target_accept")
  expect_error(mcmc_fit(x, model = "nbdm", mcmc_config = list(target_accept_prob = 1.5)),
               class = "scribeR_input_error", regexp = "target_accept_prob")
  expect_error(mcmc_fit(x, model = "nbdm", mcmc_config = list(max_tree_depth = 0)),
               class = "scribeR_input_error", regexp = "max_tree_depth")
  expect_error(mcmc_fit(x, model = "nbdm", n_warmup = -1), class = "scribeR_input_error", regexp = "n_warmup")
  expect_error(mcmc_fit(x, model = "nbdm", n_chains = 0), class = "scribeR_input_error", regexp = "n_chains")
  expect_error(mcmc_fit(x, model = "nbdm", n_samples = 1.5), class = "scribeR_input_error", regexp = "n_samples")
  expect_error(mcmc_fit(x, model = "pln"), class = "scribeR_input_error", regexp = "log-normal")
  expect_error(mcmc_fit(x, model = "nbdm", batch_size = 10, n_samples = 5, n_warmup = 5),
               class = "scribeR_input_error", regexp = "batch_size.*does not apply")
  expect_error(print_summary(svi), class = "scribeR_input_error", regexp = "MCMC fit")
  # Large dimensions warn with the count and a suggestion (threshold lowered for the test).
  old <- options(scribeR.mcmc_warn_dim = 50)
  on.exit(options(old), add = TRUE)
  sim2 <- sim_data("nbvcp", n_genes = 10, n_cells = 60, seed = 4)
  expect_warning(mcmc_fit(sim2$counts, model = "nbvcp", n_samples = 5, n_warmup = 5),
                 "71 dimensions.*60 of them per-cell capture")
  expect_error(get_samples(svi), class = "scribeR_input_error", regexp = "MCMC fit")
})

test_that("divergent transitions are counted and reported with a remedy", {
  sim <- sim_data("nbvcp", n_genes = 10, n_cells = 40, seed = 4)
  # A tiny target acceptance forces huge steps, hence divergences.
  expect_warning(fit <- mcmc_fit(sim$counts, model = "nbvcp", n_samples = 100, n_warmup = 100,
                                 mcmc_config = list(target_accept_prob = 0.01)),
                 "divergent.*target_accept_prob")
  expect_gt(sum(sampler_diagnostics(fit)$divergences), 0)
})

test_that("MCMC progress shows each chain and is silent when verbose = FALSE", {
  sim <- sim_data("nbdm", n_genes = 8, n_cells = 60, seed = 3)
  expect_silent(mcmc_fit(sim$counts, model = "nbdm", n_samples = 20, n_warmup = 20))
  msgs <- capture.output(invisible(scribe_fit(sim$counts, model = "nbdm", inference_method = "mcmc",
                                              n_samples = 300, n_warmup = 300, n_chains = 2,
                                              seed = 1, verbose = TRUE)), type = "message")
  expect_true(any(grepl("MCMC 1: .* div .* eps .*\\| 2:", msgs)))
})

test_that("Ctrl-C stops all chains with a classed error and leaves R usable", {
  skip_on_cran()
  skip_on_os("windows")
  out <- run_interrupted_fit(
    "sim <- scribe_simulate('nbvcp', n_genes = 300, n_cells = 1000, seed = 1)",
    "scribe_fit(sim$counts, model = 'nbvcp', inference_method = 'mcmc', n_samples = 5000, n_warmup = 5000, n_chains = 2, seed = 1, verbose = FALSE)"
  )
  expect_clean_interrupt(out)
})
