# Goodness of fit: residuals of the generating model are standard normal;
# a model without capture on capture-varying data is not.

# The PPC calibration failure of each gene recomputed in R from predictive
# draws `pp` (draws x cells x genes) and the observed counts (genes x cells).
ppc_failure_in_r <- function(pp, obs) {
  vapply(seq_len(dim(pp)[3]), function(j) {
    x <- pp[, , j]
    lo <- min(x)
    nb <- max(x) - lo + 1
    dens <- t(apply(x, 1, function(v) tabulate(v - lo + 1, nbins = nb) / length(v)))
    band <- apply(dens, 2, stats::quantile, c(0.025, 0.975))
    o <- obs[j, ]
    o <- o[o >= lo & o <= max(x)]
    ob <- tabulate(o - lo + 1, nbins = nb) / length(o)
    ne <- ob > 0
    mean(ob[ne] < band[1, ne] | ob[ne] > band[2, ne])
  }, numeric(1))
}

test_that("quantile residuals are uniform under the true model and not without capture", {
  # Strongly varying capture: half the cells keep 10 % of their molecules, half 90 %.
  set.seed(3)
  sim <- scribe_simulate("nbvcp", n_genes = 30, n_cells = 600, r = exp(stats::rnorm(30, log(20), 0.5)),
                         p = 0.6, p_capture = rep(c(0.1, 0.9), 300), seed = 3)
  vcp <- scribe_fit(sim$counts, model = "nbvcp", seed = 1, verbose = FALSE)
  dm <- scribe_fit(sim$counts, model = "nbdm", seed = 1, verbose = FALSE)
  good <- goodness_of_fit(vcp, sim$counts, n_ppc_samples = 100, seed = 2)
  bad <- goodness_of_fit(dm, sim$counts, n_ppc_samples = 100, seed = 2)
  expect_equal(dim(good$residuals), c(600L, 30L))
  # Pooled over genes, the residuals of the fitted generating model pass a KS test.
  expect_gt(suppressWarnings(stats::ks.test(as.vector(good$residuals), "pnorm"))$p.value, 0.01)
  expect_lt(suppressWarnings(stats::ks.test(as.vector(bad$residuals), "pnorm"))$p.value, 1e-6)
  expect_gt(mean(good$scores$well_fit), mean(bad$scores$well_fit))
  expect_lt(stats::median(good$scores$calibration_failure), stats::median(bad$scores$calibration_failure))
  expect_output(print(good), "well fit")
})

test_that("goodness_of_fit options, reproducibility and errors", {
  sim <- scribe_simulate("zinb", n_genes = 12, n_cells = 200, seed = 1)
  fit <- scribe_fit(sim$counts, model = "zinb", n_steps = 300, seed = 1, verbose = FALSE)
  a <- goodness_of_fit(fit, sim$counts, genes = c("gene2", "gene5"), ppc = FALSE, seed = 4)
  b <- goodness_of_fit(fit, sim$counts, genes = c("gene2", "gene5"), ppc = FALSE, seed = 4)
  expect_identical(a, b)
  expect_identical(a$scores$gene, c("gene2", "gene5"))
  expect_false("calibration_failure" %in% names(a$scores))
  post <- goodness_of_fit(fit, sim$counts, n_samples = 20, ppc = FALSE, residuals = FALSE, seed = 4)
  expect_null(post$residuals)
  expect_error(plot_residuals(post), "residuals = TRUE", class = "scribeR_input_error")
  expect_error(goodness_of_fit(fit, sim$counts, genes = "nope"), "genes", class = "scribeR_input_error")
  expect_error(goodness_of_fit(fit, sim$counts, credible_level = 120), "credible_level", class = "scribeR_input_error")
  expect_error(goodness_of_fit("fit", sim$counts), "results object", class = "scribeR_input_error")
  skip_if_not_installed("ggplot2")
  expect_s3_class(plot_residuals(a, genes = "gene2"), "ggplot")
  expect_error(plot_residuals(a, genes = "gene9"), "genes", class = "scribeR_input_error")
})

test_that("PPC calibration scores agree with the same statistic computed in R from predictive draws", {
  counts <- scribe_example_data()
  fit <- scribe_fit(counts, seed = 1, n_steps = 300, verbose = FALSE)
  genes <- rownames(counts)[1:40]
  g <- goodness_of_fit(fit, counts, genes = genes, n_ppc_samples = 200, residuals = FALSE, seed = 1)
  pp <- posterior_predictive(fit, n_samples = 200, genes = genes, seed = 2)
  obs <- as.matrix(counts[genes, ])
  in_r <- ppc_failure_in_r(pp, obs)
  # Different random draws, the same statistic.
  expect_gt(stats::cor(g$scores$calibration_failure, in_r), 0.9)
  expect_lt(abs(mean(g$scores$calibration_failure) - mean(in_r)), 0.05)
})

test_that("goodness_of_fit of a VAE fit reads each cell's decoded NB, and its PPC agrees with predictive draws", {
  # Three clusters a single NB per gene cannot fit: the VAE's embedding can.
  sim <- scribe_simulate("nbdm", n_genes = 20, n_cells = 400, n_components = 3, seed = 5)
  fit <- scribe_fit(sim$counts, model = "nbdm", inference_method = "vae", latent_dim = 2, vae_encoder_hidden_dims = 16,
                    vae_decoder_hidden_dims = 16, n_steps = 1500, batch_size = 128, kl_annealing_warmup = 200,
                    optimizer_config = list(name = "adam", step_size = 5e-3), seed = 1, verbose = FALSE)
  svi <- scribe_fit(sim$counts, model = "nbdm", seed = 1, verbose = FALSE)
  g <- goodness_of_fit(fit, sim$counts, n_ppc_samples = 100, seed = 2)
  gs <- goodness_of_fit(svi, sim$counts, n_ppc_samples = 100, seed = 2)
  expect_identical(dim(g$residuals), c(400L, 20L))
  # Residuals near standard normal (pooled KS distance 0.019 here), closer
  # than those of the population model, and better calibrated.
  expect_lt(suppressWarnings(stats::ks.test(as.vector(g$residuals), "pnorm"))$statistic, 0.03)
  expect_lt(max(g$scores$ks_distance), max(gs$scores$ks_distance))
  expect_lt(stats::median(g$scores$calibration_failure), stats::median(gs$scores$calibration_failure))
  expect_gt(mean(g$scores$well_fit), 0.9)
  expect_identical(goodness_of_fit(fit, sim$counts, genes = 2:3, n_samples = 3, ppc = FALSE, seed = 4),
                   goodness_of_fit(fit, sim$counts, genes = 2:3, n_samples = 3, ppc = FALSE, seed = 4))
  # The PPC statistic, recomputed in R from the VAE's predictive draws.
  pp <- posterior_predictive(fit, n_samples = 200, x = sim$counts, seed = 3)
  g2 <- goodness_of_fit(fit, sim$counts, n_ppc_samples = 200, residuals = FALSE, seed = 3)
  obs <- as.matrix(sim$counts)
  in_r <- ppc_failure_in_r(pp, obs)
  expect_lt(abs(mean(g2$scores$calibration_failure) - mean(in_r)), 0.05)
})

test_that("goodness_of_fit of log-normal fits (Laplace and VAE) reads each cell's latents", {
  set.seed(3)
  g <- 25; n <- 300
  w <- matrix(rnorm(g * 2, sd = 0.5), g)
  x <- pln_counts(runif(g, 0.5, 2), w, n, noise_sd = 0.3)
  lap <- scribe_fit(x, model = "pln", inference_method = "laplace", latent_dim = 2, seed = 1, verbose = FALSE)
  gl <- goodness_of_fit(lap, x, n_samples = 30, n_ppc_samples = 50, seed = 2)
  expect_identical(dim(gl$residuals), c(300L, 25L))
  expect_true(all(is.finite(gl$residuals)))
  # The PLN fit of PLN data: residual variances near 1 (0.88 here) once the
  # embedding's posterior and the per-gene noise are drawn.
  expect_lt(abs(stats::median(gl$scores$variance) - 1), 0.25)
  expect_lt(stats::median(gl$scores$calibration_failure), 0.3)
  # At the MAP alone, PLN's predictive is Poisson: too narrow for these counts
  # (1.24 here).
  gm <- goodness_of_fit(lap, x, ppc = FALSE, seed = 2)
  expect_gt(stats::median(gm$scores$variance), stats::median(gl$scores$variance))
  expect_identical(goodness_of_fit(lap, x, genes = c("g3", "g1"), n_samples = 5, ppc = FALSE, seed = 4)$scores,
                   goodness_of_fit(lap, x, genes = c("g3", "g1"), n_samples = 5, ppc = FALSE, seed = 4)$scores)
  expect_error(goodness_of_fit(lap, x, n_samples = 0), "n_samples", class = "scribeR_input_error")
  expect_error(goodness_of_fit(lap, x, genes = c("g1", "g1")), "more than once", class = "scribeR_input_error")

  for (model in c("nbln", "lnm")) {
    v <- scribe_fit(x, model = model, inference_method = "vae", latent_dim = 2, vae_encoder_hidden_dims = c(16, 8),
                    n_steps = 300, kl_annealing_warmup = 100, seed = 1, verbose = FALSE)
    gv <- goodness_of_fit(v, x, n_samples = 10, n_ppc_samples = 30, genes = 1:6, seed = 2)
    expect_identical(gv$scores$gene, paste0("g", 1:6))
    expect_true(all(is.finite(gv$scores$variance)) && all(gv$scores$calibration_failure <= 1))
  }
})
