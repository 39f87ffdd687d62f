# Each kind of error the core raises reaches R with its class, decided by
# the kind the core reports (never by the message text).

nb_model <- function(model = "nbdm") {
  list(model = model, parameterization = "canonical", unconstrained = FALSE, positive_transform = "softplus")
}

test_that("core input errors are scribeR_input_error and name the argument", {
  expect_error(call_core(rs_model_layout(nb_model("nbxx"), 3L, 4L)), "model", class = "scribeR_input_error")
  bad <- nb_model()
  bad$positive_transform <- "cube"
  expect_error(call_core(rs_model_layout(bad, 3L, 4L)), "positive_transform", class = "scribeR_input_error")
  # An unknown choice is an error, never a silent default (the glue's old habits).
  fit <- scribe_fit(sim_data("nbdm", 10, 40)$counts, model = "nbdm", n_steps = 5, seed = 1, verbose = FALSE)
  view <- core_view(fit)
  view$layout$kind[1] <- "genes"
  expect_error(call_core(rs_fit_sites(view, 0, 0, FALSE, 1L)), "block kind", class = "scribeR_input_error")
  view <- core_view(fit)
  view$guide <- "low_rank_v0"
  expect_error(call_core(rs_fit_sites(view, 0, 0, FALSE, 1L)), "low_rank_v0", class = "scribeR_input_error")
  expect_error(call_core(rs_laplace_analysis(list(model = "plnx"), list(n_genes = 1, n_cells = 1, p = c(0L, 1L),
                                                                        i = 0L, x = 1), "loglik", list(), FALSE, 1L)),
               "plnx", class = "scribeR_input_error")
})

test_that("a diverged fit is scribeR_nonfinite and keeps its loss history", {
  m <- sim_data("nbdm", 10, 40)$counts
  err <- tryCatch(scribe_fit(m, model = "nbdm", n_steps = 50, seed = 1, verbose = FALSE, stable_update = FALSE,
                             optimizer_config = list(name = "sgd", step_size = 1e6)),
                  error = function(e) e)
  expect_s3_class(err, "scribeR_nonfinite")
  expect_true(is.numeric(err$loss_history) && length(err$loss_history) == err$step)
  expect_false(is.finite(utils::tail(err$loss_history, 1)))
})

test_that("internal errors are scribeR_core_error", {
  expect_error(call_core(rs_fit_sites(list(), 0, 0, FALSE, 1L)), "internal", class = "scribeR_core_error")
  expect_error(call_core(list(error = list(kind = "something new", message = "x"))), class = "scribeR_core_error")
})

test_that("an interrupted SVI fit is scribeR_interrupt with its partial loss history", {
  skip_on_cran()
  out <- run_interrupted_fit(
    c("sim <- scribe_simulate('zinbvcp', n_genes = 200, n_cells = 1000, seed = 1)",
      "invisible(scribe_fit(sim$counts, model = 'zinbvcp', n_steps = 2, seed = 1, verbose = FALSE))"),
    "scribe_fit(sim$counts, model = 'zinbvcp', n_steps = 100000, seed = 1, verbose = FALSE)"
  )
  expect_clean_interrupt(out)
  partial <- as.numeric(strsplit(sub("partial: ", "", grep("^partial:", out, value = TRUE)), " ")[[1]])
  expect_true(partial[1] > 0 && partial[1] == partial[2], info = paste(out, collapse = "\n"))
})

test_that("an interrupted MCMC fit is scribeR_interrupt (not a core error)", {
  skip_on_cran()
  out <- run_interrupted_fit(
    "sim <- scribe_simulate('nbdm', n_genes = 50, n_cells = 300, seed = 1)",
    "scribe_fit(sim$counts, model = 'nbdm', inference_method = 'mcmc', n_samples = 100000, n_warmup = 100, seed = 1, verbose = FALSE)"
  )
  expect_clean_interrupt(out)
})

test_that("a long analysis stops on Ctrl-C", {
  skip_on_cran()
  out <- run_interrupted_fit(
    c("sim <- scribe_simulate('zinbvcp', n_genes = 300, n_cells = 1000, seed = 1)",
      "f <- scribe_fit(sim$counts, model = 'zinbvcp', n_steps = 5, seed = 1, verbose = FALSE)"),
    "log_likelihood(f, sim$counts, n_samples = 5000, seed = 1)"
  )
  expect_clean_interrupt(out)
})

test_that("a setTimeLimit() stop is R's error, not a user interrupt", {
  skip_on_cran()
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "suppressPackageStartupMessages(library(scribeR))",
    "sim <- scribe_simulate('zinbvcp', n_genes = 200, n_cells = 1000, seed = 1)",
    "res <- tryCatch({",
    "  setTimeLimit(elapsed = 1.5, transient = TRUE)",
    "  scribe_fit(sim$counts, model = 'zinbvcp', n_steps = 100000, seed = 1, verbose = FALSE)",
    "}, scribeR_stopped = function(e) paste('stopped:', conditionMessage(e)),",
    "   scribeR_interrupt = function(e) 'interrupt', error = function(e) paste('other:', conditionMessage(e)))",
    "cat('result:', res, '\\n')"
  ), script)
  out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
  expect_true(any(grepl("result: stopped: reached elapsed time limit", out)), info = paste(out, collapse = "\n"))
})

test_that("a fit from another results format says so, naming both formats", {
  fit <- scribe_fit(sim_data("nbdm", 10, 40)$counts, model = "nbdm", n_steps = 5, seed = 1, verbose = FALSE)
  expect_true(validObject(fit))
  future <- fit
  future@format_version <- 99L
  f <- tempfile(fileext = ".rds")
  saveRDS(future, f)
  back <- readRDS(f)
  expect_error(get_map(back), "format 99.*format 2", class = "scribeR_format_error")
  expect_error(log_likelihood(back, sim_data("nbdm", 10, 40)$counts), class = "scribeR_format_error")
  expect_error(show(back), class = "scribeR_format_error")
  expect_error(validObject(back), "results format 99")
  # A fit saved before formats were recorded (no slot at all) is format 1.
  old <- fit
  attr(old, "format_version") <- NULL
  expect_error(get_map(old), "format 1.*format 2", class = "scribeR_input_error")
})

test_that("analyses dispatch on the class of the fit", {
  m <- sim_data("nbdm", 10, 40)$counts
  expect_error(log_likelihood(1, m), "scribeR results object", class = "scribeR_input_error")
  expect_error(denoise_counts("fit", m), "scribeR results object", class = "scribeR_input_error")
  x <- m[, Matrix::colSums(m) > 0]
  lap <- scribe_fit(x, model = "pln", inference_method = "laplace", latent_dim = 2, n_steps = 3, seed = 1,
                    verbose = FALSE, laplace_config = list(convergence_action = "ignore"))
  expect_error(denoise_counts(lap, x), "not available", class = "scribeR_unsupported")
  expect_length(log_likelihood(lap, x), ncol(x))
  expect_error(goodness_of_fit(get_map, x), "scribeR results object", class = "scribeR_input_error")
})
