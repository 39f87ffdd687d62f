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

test_that("by default a fit stops when the loss and the parameters have settled", {
  sim <- sim_data("nbdm", n_genes = 60, n_cells = 400, seed = 3)
  fit <- scribe_fit(sim$counts, model = "nbdm", n_steps = 20000, seed = 1, verbose = FALSE)
  st <- fit@diagnostics$stop
  expect_true(st$reason %in% c("converged", "weakly_identified"))
  expect_lt(length(loss_history(fit)), 20000)
  expect_gte(length(loss_history(fit)), 300)
  expect_output(show(fit), if (st$reason == "converged") "converged" else "weakly identified")
  expect_named(st$drift, fit@layout$name)
  # It stopped near where a long run ends: p within 2 % of the run to 8000 steps.
  long <- scribe_fit(sim$counts, model = "nbdm", n_steps = 8000, seed = 1, verbose = FALSE,
                     early_stopping = FALSE)
  expect_length(loss_history(long), 8000)
  expect_equal(get_map(fit)$p, get_map(long)$p, tolerance = 0.02)
  expect_equal(long@diagnostics$stop$reason, "n_steps")
  skip_if_not_installed("ggplot2")
  expect_match(plot_loss(fit)$labels$subtitle, "stopped at step")
})

test_that("a drift along a flat loss is reported as weak identification", {
  # nbvcp: only p_hat = p nu / (1 - p (1 - nu)) is identified; p and capture
  # trade off along a ridge. The rule does not wait for them (their drift is
  # reported); in mean_prob, mu moves along the ridge with p, and a tight
  # param_tol names it.
  sim <- sim_data("nbvcp", n_genes = 80, n_cells = 400, seed = 4)
  fit <- scribe_fit(sim$counts, model = "nbvcp", parameterization = "mean_prob", n_steps = 20000, seed = 1,
                    verbose = FALSE, early_stopping = list(rule = "settled", param_tol = 0.01))
  st <- fit@diagnostics$stop
  expect_identical(st$reason, "weakly_identified")
  expect_identical(st$drifting, "mu")
  expect_named(st$drift, c("mu", "p", "p_capture"))
  expect_gt(st$drift[["p_capture"]], 1)
  expect_output(show(fit), "weakly identified")
  # The ridge is the model's, whatever the verdict: show() names it for
  # capture models without a capture prior, and only for them.
  expect_output(show(fit), "only through p_hat")
  pinned <- scribe_fit(sim$counts, model = "nbvcp", n_steps = 300, seed = 1, verbose = FALSE,
                       priors = list(capture_efficiency = c(log(1000), 0.5)))
  expect_false(any(grepl("only through p_hat", capture.output(show(pinned)))))
})

test_that("the stopping rule is chosen by early_stopping", {
  m <- sim_data("nbdm", n_genes = 20, n_cells = 60)$counts
  expect_identical(quick_fit(m, model = "nbdm", n_steps = 700, early_stopping = FALSE)@diagnostics$stop$reason,
                   "n_steps")
  orig <- quick_fit(m, model = "nbdm", n_steps = 700, early_stopping = "original")
  expect_null(orig@config$settle)
  expect_false(is.null(orig@config$early_stopping))
  custom <- quick_fit(m, model = "nbdm", n_steps = 3000, early_stopping = list(rule = "settled", window = 50,
                                                                                min_steps = 100))
  expect_identical(custom@config$settle$window, 50)
  expect_error(quick_fit(m, early_stopping = list(rule = "settled", patience = 5, warmup = 1)), "warmup",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, early_stopping = list(rule = "fast")), "rule", class = "scribeR_input_error")
  expect_error(quick_fit(m, early_stopping = "sometimes"), "early_stopping", class = "scribeR_input_error")
})
