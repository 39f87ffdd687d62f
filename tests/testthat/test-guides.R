# Low-rank guides (guide_rank, joint_params). The ELBO gradient is checked
# against finite differences and the guide's correlations against NUTS in the
# core (svi/guide/low_rank.rs, tests/guides.rs).

guide_fit <- function(x, ..., n_steps = 3000) {
  scribe_fit(x, ..., n_steps = n_steps, seed = 1, verbose = FALSE,
             optimizer_config = list(name = "adam", step_size = 0.005))
}

test_that("a joint low-rank guide draws r and p together; mean-field does not", {
  sim <- sim_data("nbdm", n_genes = 8, n_cells = 80, seed = 3)
  mf <- guide_fit(sim$counts, model = "nbdm")
  lr <- guide_fit(sim$counts, model = "nbdm", guide_rank = 2, joint_params = "biological")
  expect_identical(lr@guide, "low_rank")
  expect_output(print(lr), "low-rank guide")
  draws <- function(f) get_posterior_samples(f, n_samples = 2000, seed = 2)
  d_lr <- draws(lr)
  d_mf <- draws(mf)
  c_lr <- stats::cor(log(d_lr$r[, 1]), stats::qlogis(d_lr$p))
  c_mf <- stats::cor(log(d_mf$r[, 1]), stats::qlogis(d_mf$p))
  expect_lt(c_lr, -0.4)
  expect_lt(abs(c_mf), 0.1)
  # Point estimates agree with mean-field's (both near the posterior mode).
  expect_equal(unname(log(get_map(lr)$r)), unname(log(get_map(mf)$r)), tolerance = 0.15)
})

test_that("low-rank fits work with every verb, subset, save and warm-start MCMC", {
  sim <- sim_data("nbvcp", n_genes = 20, n_cells = 120, seed = 4)
  m <- sim$counts
  fit <- guide_fit(m, model = "nbvcp", guide_rank = 3, n_steps = 800)
  expect_true(all(is.finite(log_likelihood(fit, m))))
  expect_equal(dim(posterior_predictive(fit, n_samples = 3)), c(3L, ncol(m), nrow(m)))
  expect_equal(dim(denoise_counts(fit, m)), dim(m))
  sub <- fit[1:5, ]
  expect_identical(sub@guide, "low_rank")
  expect_equal(get_map(sub)$r, get_map(fit)$r[1:5])
  path <- tempfile(fileext = ".rds")
  saveRDS(fit, path)
  back <- readRDS(path)
  expect_identical(get_posterior_samples(back, n_samples = 5, seed = 1), get_posterior_samples(fit, n_samples = 5, seed = 1))
  mc <- scribe_fit(m, model = "nbvcp", inference_method = "mcmc", n_samples = 30, n_warmup = 30, seed = 1,
                   verbose = FALSE, svi_init = fit)
  expect_s4_class(mc, "ScribeMCMCResults")
  # Mixtures: one Gaussian per component.
  mix <- guide_fit(m, model = "nbdm", n_components = 2, guide_rank = 2, n_steps = 200)
  expect_equal(dim(get_map(mix)$r), c(2L, nrow(m)))
})

test_that("low-rank and flow fits are reproducible and thread-count invariant", {
  sim <- sim_data("nbvcp", n_genes = 20, n_cells = 120, seed = 4)
  guides <- list(list(guide_rank = 2, joint_params = c("r", "probability")),
                 list(guide_flow = "coupling_affine", guide_flow_hidden_dims = 8, joint_params = "biological"))
  for (g in guides) {
    one <- function(threads) {
      do.call(scribe_fit, c(list(sim$counts, model = "nbvcp", n_steps = 200, seed = 9, verbose = FALSE,
                                 num_threads = threads), g))
    }
    a <- one(1L)
    expect_identical(get_map(a), get_map(one(1L)))
    expect_identical(get_map(a), get_map(one(2L)))
  }
})

test_that("guide arguments give clear errors", {
  sim <- sim_data("nbdm", n_genes = 8, n_cells = 40, seed = 3)
  m <- sim$counts
  expect_error(scribe_fit(m, joint_params = "biological"), class = "scribeR_unsupported")
  expect_error(scribe_fit(m, guide_rank = 0), "guide_rank", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_rank = 1.5), "guide_rank", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_rank = 9), "at most 8", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_rank = 2, joint_params = "gate"), "joint_params", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_rank = 2, joint_params = c("r", "p_capture")), "p_capture", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_rank = 2, joint_params = NA_character_), "joint_params", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_rank = 2, inference_method = "mcmc"), "guide_rank", class = "scribeR_input_error")
})

# Flow guides (guide_flow). FD gradients, invertibility and the comparison
# with NUTS on a curved posterior live in the core (nn/flows, svi/guide/flow.rs,
# tests/guides.rs).

flow_fit <- function(x, ..., guide_flow = "affine_coupling", n_steps = 600) {
  guide_fit(x, ..., guide_flow = guide_flow, guide_flow_hidden_dims = c(16, 16),
            guide_flow_num_layers = 2, n_steps = n_steps)
}

test_that("a joint flow guide draws r and p together and its map is a mean of draws", {
  sim <- sim_data("nbdm", n_genes = 8, n_cells = 80, seed = 3)
  fl <- flow_fit(sim$counts, model = "nbdm", joint_params = "biological", n_steps = 3000)
  expect_identical(fl@guide, "flow")
  expect_output(print(fl), "flow guide")
  d <- get_posterior_samples(fl, n_samples = 2000, seed = 2)
  expect_lt(stats::cor(log(d$r[, 1]), stats::qlogis(d$p)), -0.3)
  mf <- guide_fit(sim$counts, model = "nbdm")
  expect_equal(unname(log(get_map(fl)$r)), unname(log(get_map(mf)$r)), tolerance = 0.15)
  # The point summary is the mean of many draws, so close to the sample mean.
  expect_equal(get_map(fl)$p, mean(d$p), tolerance = 0.01)
})

test_that("flow fits work with every verb, subset, save and warm-start MCMC", {
  sim <- sim_data("nbvcp", n_genes = 20, n_cells = 120, seed = 4)
  m <- sim$counts
  fit <- flow_fit(m, model = "nbvcp", n_steps = 300)
  expect_true(all(is.finite(log_likelihood(fit, m))))
  expect_equal(dim(posterior_predictive(fit, n_samples = 3)), c(3L, ncol(m), nrow(m)))
  expect_equal(dim(denoise_counts(fit, m)), dim(m))
  expect_true(all(is.finite(normalize_counts(fit))))
  sub <- fit[1:5, ]
  expect_identical(sub@guide, "flow")
  expect_equal(dim(get_posterior_samples(sub, n_samples = 4)$r), c(4L, 5L))
  path <- tempfile(fileext = ".rds")
  saveRDS(fit, path)
  back <- readRDS(path)
  expect_identical(get_posterior_samples(back, n_samples = 5, seed = 1), get_posterior_samples(fit, n_samples = 5, seed = 1))
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = m))
  expect_s4_class(add_scribe_fit(sce, fit), "SingleCellExperiment")
  mc <- scribe_fit(m, model = "nbvcp", inference_method = "mcmc", n_samples = 30, n_warmup = 30, seed = 1,
                   verbose = FALSE, svi_init = fit)
  expect_s4_class(mc, "ScribeMCMCResults")
  mix <- flow_fit(m, model = "nbdm", n_components = 2, n_steps = 100)
  expect_equal(dim(get_map(mix)$r), c(2L, nrow(m)))
  # Spline coupling: same verbs, its own stored architecture.
  sp <- flow_fit(m, model = "nbvcp", guide_flow = "spline_coupling", guide_flow_n_bins = 4, n_steps = 200)
  expect_identical(sp@guide, "flow")
  expect_true(all(is.finite(log_likelihood(sp, m))))
  expect_identical(get_posterior_samples(sp[1:3, ], n_samples = 2, seed = 1)$r,
                   get_posterior_samples(sp, n_samples = 2, seed = 1)$r[, 1:3])
  iaf <- flow_fit(m, model = "nbdm", guide_flow = "iaf", joint_params = "biological", n_steps = 200)
  expect_true(all(is.finite(log_likelihood(iaf, m))))
  expect_identical(readRDS({saveRDS(iaf, path); path})@params, iaf@params)
})

test_that("flow arguments give clear errors", {
  sim <- sim_data("nbdm", n_genes = 8, n_cells = 40, seed = 3)
  m <- sim$counts
  expect_error(scribe_fit(m, guide_flow = "affine_coupling", guide_rank = 2), "mutually exclusive",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "maf"), "iaf", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "affine_coupling", guide_flow_n_bins = 4), "guide_flow_n_bins",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "spline_coupling", guide_flow_n_bins = 1), "guide_flow_n_bins",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "planar"), "guide_flow", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow_num_layers = 2), "guide_flow", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "affine_coupling", guide_flow_num_layers = 0), "guide_flow_num_layers",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "affine_coupling", guide_flow_hidden_dims = c(8, -1)),
               "guide_flow_hidden_dims", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "affine_coupling", guide_flow_activation = "sigmoid"),
               "guide_flow_activation", class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "affine_coupling", guide_flow_loft = NA), "guide_flow_loft",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, guide_flow = "affine_coupling", inference_method = "mcmc"), "guide_flow",
               class = "scribeR_input_error")
})

# Amortized capture. FD gradients and the network's start live in the core
# (svi/guide/amortized.rs).

test_that("amortized capture agrees with mean-field capture and predicts new cells", {
  sim <- sim_data("nbvcp", n_genes = 30, n_cells = 300, seed = 5)
  m <- sim$counts
  fit_a <- function(...) scribe_fit(m, model = "nbvcp", n_steps = 3000, seed = 1, verbose = FALSE, ...)
  mf <- fit_a()
  am <- fit_a(amortize_capture = TRUE)
  expect_identical(am@guide, "amortized_capture")
  expect_output(print(am), "amortized-capture guide")
  nu_mf <- get_map(mf)$p_capture
  nu_am <- get_map(am)$p_capture
  expect_gt(stats::cor(nu_mf, nu_am, method = "spearman"), 0.95)
  # New cells: capture from their counts; the fit's own cells get their guide's values.
  q <- predict_capture(am, m[, 1:20])
  expect_identical(dim(q), c(20L, 3L))
  expect_identical(colnames(q), c("2.5%", "50%", "97.5%"))
  expect_true(all(q[, 1] < q[, 2] & q[, 2] < q[, 3] & q > 0 & q < 1))
  expect_equal(unname(q[, 2]), unname(nu_am[1:20]), tolerance = 0.05)
  doubled <- predict_capture(am, 2 * m[, 1:20], probs = 0.5)
  expect_true(all(doubled[, 1] > q[, 2]))
  # Every verb, subset and save.
  expect_true(all(is.finite(log_likelihood(am, m))))
  expect_equal(dim(denoise_counts(am, m)), dim(m))
  sub <- am[1:10, 1:50]
  expect_identical(sub@guide, "amortized_capture")
  path <- tempfile(fileext = ".rds")
  saveRDS(am, path)
  expect_identical(predict_capture(readRDS(path), m[, 1:5]), predict_capture(am, m[, 1:5]))
  mc <- scribe_fit(m, model = "nbvcp", inference_method = "mcmc", n_samples = 20, n_warmup = 20, seed = 1,
                   verbose = FALSE, svi_init = am)
  expect_s4_class(mc, "ScribeMCMCResults")
  a1 <- scribe_fit(m, model = "nbvcp", amortize_capture = TRUE, n_steps = 200, batch_size = 64, seed = 3,
                   verbose = FALSE, num_threads = 1L)
  a2 <- scribe_fit(m, model = "nbvcp", amortize_capture = TRUE, n_steps = 200, batch_size = 64, seed = 3,
                   verbose = FALSE, num_threads = 2L)
  expect_identical(get_map(a1), get_map(a2))
})

test_that("amortized capture arguments give clear errors", {
  sim <- sim_data("nbvcp", n_genes = 8, n_cells = 40, seed = 3)
  m <- sim$counts
  expect_error(scribe_fit(m, model = "nbdm", amortize_capture = TRUE), "per-cell capture",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, model = "nbvcp", capture_hidden_dims = 8), "amortize_capture",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, model = "nbvcp", amortize_capture = TRUE, guide_rank = 2),
               class = "scribeR_unsupported")
  expect_error(scribe_fit(m, model = "nbvcp", amortize_capture = TRUE, capture_activation = "swoosh"),
               "capture_activation", class = "scribeR_input_error")
  expect_error(scribe_fit(m, model = "nbvcp", amortize_capture = TRUE, capture_input_transformation = "exp"),
               "capture_input_transformation", class = "scribeR_input_error")
  expect_error(scribe_fit(m, model = "nbvcp", amortize_capture = NA), "amortize_capture",
               class = "scribeR_input_error")
  mf <- scribe_fit(m, model = "nbvcp", n_steps = 50, seed = 1, verbose = FALSE)
  expect_error(predict_capture(mf, m), "amortize_capture", class = "scribeR_input_error")
  am <- scribe_fit(m, model = "nbvcp", amortize_capture = TRUE, n_steps = 50, seed = 1, verbose = FALSE)
  expect_error(predict_capture(am, m[1:3, ]), "genes", class = "scribeR_input_error")
  expect_error(predict_capture(am, m, probs = 1), "probs", class = "scribeR_input_error")
})
