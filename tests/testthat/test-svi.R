m <- sim_data("nbvcp", n_genes = 50, n_cells = 200)$counts

test_that("same seed gives identical fits, whatever the number of threads", {
  a <- scribe_fit(m, model = "zinbvcp", n_steps = 60, seed = 5, num_threads = 1, verbose = FALSE)
  b <- scribe_fit(m, model = "zinbvcp", n_steps = 60, seed = 5, num_threads = 2, verbose = FALSE)
  expect_identical(a@params, b@params)
  expect_identical(loss_history(a), loss_history(b))
  c <- scribe_fit(m, model = "zinbvcp", n_steps = 60, seed = 6, num_threads = 1, verbose = FALSE)
  expect_false(identical(a@params, c@params))
  set.seed(9); d1 <- scribe_fit(m, model = "nbdm", n_steps = 20, verbose = FALSE)
  set.seed(9); d2 <- scribe_fit(m, model = "nbdm", n_steps = 20, verbose = FALSE)
  expect_identical(d1@params, d2@params)
  expect_identical(d1@seed, d2@seed)
})

test_that("every optimizer runs and lowers the loss", {
  cfgs <- list(
    list(name = "adam", step_size = 0.01),
    list(name = "clipped_adam", step_size = 0.01, grad_clip_norm = 5),
    list(name = "adagrad", step_size = 0.05),
    list(name = "rmsprop", step_size = 0.001),
    list(name = "sgd", step_size = 1e-7),
    list(name = "momentum", step_size = 1e-8, momentum = 0.9)
  )
  for (cfg in cfgs) {
    fit <- scribe_fit(m, model = "nbdm", n_steps = 300, seed = 2, optimizer_config = cfg, verbose = FALSE)
    l <- loss_history(fit)
    expect_true(all(is.finite(l)), label = cfg$name)
    expect_lte(mean(utils::tail(l, 50)), mean(utils::head(l, 50)) + 1, label = cfg$name)
  }
})

test_that("early stopping stops and restores the best parameters", {
  fit <- scribe_fit(m, model = "nbdm", n_steps = 5000, seed = 2, verbose = FALSE,
                    early_stopping = list(warmup = 0, patience = 200, min_delta = 1, check_every = 50,
                                          smoothing_window = 50))
  expect_true(fit@diagnostics$early_stopped)
  expect_lt(length(loss_history(fit)), 5000)
  expect_true(fit@diagnostics$restored_best)
  expect_output(show(fit), "stopped early")
  rb <- scribe_fit(m, model = "nbdm", n_steps = 300, seed = 2, verbose = FALSE, restore_best = TRUE)
  expect_length(loss_history(rb), 300)
  expect_false(rb@diagnostics$early_stopped)
})

test_that("a diverging optimizer gives a clear error", {
  expect_error(
    scribe_fit(m, model = "nbdm", n_steps = 200, seed = 1, verbose = FALSE, stable_update = FALSE,
               optimizer_config = list(name = "sgd", step_size = 10)),
    "finite", class = "scribeR_nonfinite"
  )
})

test_that("progress is shown only when verbose", {
  expect_silent(scribe_fit(m, model = "nbdm", n_steps = 20, seed = 1, verbose = FALSE))
  msgs <- capture.output(invisible(scribe_fit(m, model = "nbdm", n_steps = 2000, seed = 1, verbose = TRUE)),
                         type = "message")
  expect_true(any(grepl("SVI \\[", msgs)))
})

test_that("Ctrl-C stops a fit with a classed error and leaves R usable", {
  skip_on_cran()
  skip_on_os("windows")
  out <- run_interrupted_fit(
    c("sim <- scribe_simulate('zinbvcp', n_genes = 200, n_cells = 1000, seed = 1)",
      "invisible(scribe_fit(sim$counts, model = 'zinbvcp', n_steps = 2, seed = 1, verbose = FALSE))"),
    "scribe_fit(sim$counts, model = 'zinbvcp', n_steps = 5000, seed = 1, verbose = FALSE)"
  )
  expect_clean_interrupt(out)
})
