m <- sim_data("nbdm", n_genes = 10, n_cells = 30)$counts

test_that("unknown names and impossible combinations are clear errors", {
  expect_error(quick_fit(m, model = "nbxx"), "model", class = "scribeR_input_error")
  expect_error(quick_fit(m, parameterization = "mean_disp2"), "parameterization", class = "scribeR_input_error")
  expect_error(quick_fit(m, inference_method = "magic"), "inference_method", class = "scribeR_input_error")
  expect_error(quick_fit(m, optimizer_config = list(name = "lbfgs", step_size = 1)), "optimizer_config\\$name",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, optimizer_config = list(name = "adam")), "step_size", class = "scribeR_input_error")
  expect_error(quick_fit(m, optimizer_config = list(name = "adam", step_size = 1e-3, grad_clip_norm = 1)),
               "clipped_adam", class = "scribeR_input_error")
  expect_error(quick_fit(m, optimizer_config = list(name = "adam", step_size = 1e-3, foo = 1)), "foo",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, priors = list(foo = c(1, 1))), "foo", class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbdm", priors = list(gate = c(1, 9))), "gate", class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbdm", priors = list(capture_efficiency = c(10, 1))), "capture",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbvcp", parameterization = "mean_odds", priors = list(r = c(0, 1))),
               "r", class = "scribeR_input_error")
  expect_error(quick_fit(m, priors = list(p = c(1, 1), probability = c(2, 2))), "Ambiguous",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, priors = list(p = c(1, NA))), "two finite", class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbdm", zero_inflation = TRUE), "contradicts", class = "scribeR_input_error")
  expect_error(quick_fit(m, n_stpes = 10), "did you mean `n_steps`", class = "scribeR_input_error")
  expect_error(quick_fit(m, early_stopping = list(patiense = 10)), "patiense", class = "scribeR_input_error")
})

test_that("numeric arguments are range-checked", {
  expect_error(quick_fit(m, batch_size = 31), "larger than the number of cells", class = "scribeR_input_error")
  expect_error(quick_fit(m, batch_size = 0), "batch_size", class = "scribeR_input_error")
  expect_error(quick_fit(m, n_steps = 0), "n_steps", class = "scribeR_input_error")
  expect_error(scribe_fit(m, n_steps = 5, seed = -1, verbose = FALSE), "seed", class = "scribeR_input_error")
  expect_error(quick_fit(m, num_threads = 0), "num_threads", class = "scribeR_input_error")
  expect_error(quick_fit(m, unconstrained = NA), "unconstrained", class = "scribeR_input_error")
  expect_error(quick_fit(m, optimizer_config = list(name = "adam", step_size = -1)), "step_size",
               class = "scribeR_input_error")
})

test_that("engines and models not yet available say so", {
  expect_error(quick_fit(m, model = "lnmvcp", inference_method = "vae"), "capture prior", class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "pln"), "laplace", class = "scribeR_input_error")
  expect_error(quick_fit(m, n_components = 1), "n_components", class = "scribeR_input_error")
})

test_that("arguments of another engine are an error that names them and their engine", {
  expect_error(quick_fit(m, latent_dim = 4), "latent_dim.*does not apply.*read by laplace",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, n_samples = 100, n_chains = 2), "n_samples.*n_chains.*read by mcmc",
               class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "nbdm", inference_method = "mcmc", n_steps = 10),
               "n_steps.*read by svi and laplace", class = "scribeR_input_error")
  expect_error(quick_fit(m, model = "pln", inference_method = "laplace", latent_dim = 2, n_components = 2),
               "n_components.*read by svi and mcmc", class = "scribeR_input_error")
  expect_error(quick_fit(m, mixture_params = "mean"), "mixture_params.*n_components", class = "scribeR_input_error")
  # Defaults given explicitly are not "given" for another engine.
  expect_s4_class(quick_fit(m, n_samples = 2000L, n_steps = 5), "ScribeSVIResults")
})

test_that("model flags resolve to models", {
  expect_identical(quick_fit(m, zero_inflation = TRUE, n_steps = 5)@model$model, "zinbvcp")
  expect_identical(quick_fit(m, variable_capture = FALSE, n_steps = 5)@model$model, "nbdm")
  expect_identical(quick_fit(m, zero_inflation = TRUE, variable_capture = FALSE, n_steps = 5)@model$model, "zinb")
  expect_identical(quick_fit(m, n_steps = 5)@model$model, "nbvcp")
  expect_identical(quick_fit(m, model = "zinb", zero_inflation = TRUE, n_steps = 5)@model$model, "zinb")
})

test_that("aliases of parameterizations and priors are accepted", {
  fit <- quick_fit(m, model = "nbdm", parameterization = "odds_ratio", priors = list(odds_ratio = c(2, 2)),
                   n_steps = 5)
  expect_identical(fit@model$parameterization, "mean_odds")
  expect_identical(fit@priors$phi$hyper, c(2, 2))
  expect_identical(fit@priors$phi$family, "betaprime")
})
