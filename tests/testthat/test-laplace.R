# Laplace fits of PLN through scribe_fit(). The Woodbury algebra, Newton
# solver and outer gradient are tested against dense references and finite
# differences in the core (src/rust/scribe-core/src/laplace).

simulate_pln <- function(n_genes, n_cells, rank, seed, eta = rep(0, n_cells)) {
  set.seed(seed)
  mu <- runif(n_genes, 0.5, 2.5)
  w <- matrix(rnorm(n_genes * rank, sd = 0.5), n_genes, rank)
  x <- mu + w %*% matrix(rnorm(rank * n_cells), rank, n_cells) + matrix(rnorm(n_genes * n_cells, sd = 0.2), n_genes)
  x <- sweep(x, 2, eta)
  u <- matrix(rpois(length(x), exp(x)), n_genes, dimnames = list(paste0("g", seq_len(n_genes)), paste0("c", seq_len(n_cells))))
  list(counts = Matrix::Matrix(u, sparse = TRUE), mu = mu, w = w)
}

lap_fit <- function(x, ..., model = "pln", n_steps = 200) {
  scribe_fit(x, model = model, inference_method = "laplace", n_steps = n_steps, seed = 1, verbose = FALSE,
             optimizer_config = list(name = "adam", step_size = 0.02), ...)
}

test_that("Laplace PLN recovers the mean and the span of the loadings", {
  sim <- simulate_pln(40, 500, 3, seed = 2)
  fit <- lap_fit(sim$counts, latent_dim = 3, n_steps = 300)
  expect_s4_class(fit, "ScribeLaplaceResults")
  expect_output(show(fit), "Laplace")
  m <- get_map(fit)
  expect_equal(dim(m$W), c(40L, 3L))
  expect_equal(dim(m$latents), c(40L, 500L))
  expect_lt(max(abs(m$mu - sim$mu)), 0.25)
  # Cosines of the principal angles between the true and fitted column spaces.
  cosines <- svd(crossprod(qr.Q(qr(sim$w)), qr.Q(qr(m$W))))$d
  expect_gt(min(cosines), 0.95)
  h <- loss_history(fit)
  expect_lt(mean(utils::tail(h, 20)), h[1])
  expect_true(all(fit@diagnostics$grad_norms < 1e-4))
})

test_that("Laplace fits are reproducible from the seed on any number of threads", {
  sim <- simulate_pln(15, 120, 2, seed = 3)
  a <- lap_fit(sim$counts, latent_dim = 2, n_steps = 30, batch_size = 50, num_threads = 1)
  b <- lap_fit(sim$counts, latent_dim = 2, n_steps = 30, batch_size = 50, num_threads = 2)
  expect_identical(a@params, b@params)
  expect_identical(a@latents, b@latents)
})

test_that("latent_dim, its alias and laplace_config are checked", {
  sim <- simulate_pln(10, 60, 2, seed = 4)
  x <- sim$counts
  expect_equal(lap_fit(x, vae_latent_dim = 2, n_steps = 3)@model$latent_dim, 2)
  expect_error(lap_fit(x, latent_dim = 2, vae_latent_dim = 3), "not both", class = "scribeR_input_error")
  expect_error(lap_fit(x, latent_dim = 10), "latent_dim", class = "scribeR_input_error")
  expect_error(lap_fit(x, latent_dim = 2, laplace_config = list(newton_steps = 3)), "newton_steps",
               class = "scribeR_input_error")
  expect_error(lap_fit(x, latent_dim = 2, laplace_config = list(convergence_action = "panic")),
               "convergence_action", class = "scribeR_input_error")
  expect_error(lap_fit(x, latent_dim = 2, laplace_config = list(damping = -1)), "damping",
               class = "scribeR_input_error")
  expect_error(scribe_fit(x, model = "nbdm", inference_method = "laplace", verbose = FALSE),
               "log-normal", class = "scribeR_input_error")
  expect_error(scribe_fit(x, model = "lnmvcp", inference_method = "laplace", latent_dim = 2, verbose = FALSE),
               "capture prior", class = "scribeR_input_error")
  expect_error(scribe_fit(x, model = "pln", verbose = FALSE), "laplace", class = "scribeR_input_error")
  expect_error(lap_fit(x, latent_dim = 2, priors = list(r = c(0, 1))), "capture prior",
               class = "scribeR_unsupported")
  expect_error(lap_fit(x, latent_dim = 2, priors = list(capture_efficiency = c(10, -1))), "sigma",
               class = "scribeR_input_error")
})

test_that("unconverged cells follow convergence_action", {
  sim <- simulate_pln(10, 60, 2, seed = 5)
  tight <- list(newton_tolerance = 1e-300, rescue_diverged_cells = FALSE, n_newton_steps = 1)
  expect_warning(lap_fit(sim$counts, latent_dim = 2, n_steps = 2, laplace_config = tight),
                 class = "scribeR_nonconvergence")
  expect_error(lap_fit(sim$counts, latent_dim = 2, n_steps = 2,
                       laplace_config = c(tight, list(convergence_action = "raise"))),
               class = "scribeR_nonconvergence")
  expect_silent(lap_fit(sim$counts, latent_dim = 2, n_steps = 2,
                        laplace_config = c(tight, list(convergence_action = "ignore"))))
})

test_that("Laplace progress shows the Newton gradient norms", {
  sim <- simulate_pln(10, 60, 2, seed = 6)
  msgs <- capture.output(invisible(scribe_fit(sim$counts, model = "pln", inference_method = "laplace",
                                              latent_dim = 2, n_steps = 50, seed = 1, verbose = TRUE)),
                         type = "message")
  expect_true(any(grepl("Laplace \\[.*x max/p99/med", msgs)))
})

test_that("the capture block gives per-cell capture estimates", {
  eta <- seq(0.05, 1.5, length.out = 150)
  sim <- simulate_pln(20, 150, 2, seed = 7, eta = eta)
  m0 <- sum(exp(sim$mu + 0.1))
  fit <- lap_fit(sim$counts, latent_dim = 2, n_steps = 150,
                 priors = list(capture_efficiency = c(log(m0), 0.5)))
  m <- get_map(fit)
  expect_equal(names(m$eta_capture), colnames(sim$counts))
  expect_true(all(m$eta_capture >= 1e-3))
  expect_equal(unname(m$p_capture), unname(exp(-m$eta_capture)))
  expect_output(show(fit), "with capture")
  # The MAP capture follows the simulated one.
  expect_gt(stats::cor(m$eta_capture, eta, method = "spearman"), 0.8)
})

test_that("the horseshoe loadings prior finds the rank; gauge diagnostics", {
  sim <- simulate_pln(30, 300, 2, seed = 8)
  fit <- lap_fit(sim$counts, latent_dim = 6, n_steps = 800,
                 priors = list(loadings = list(type = "horseshoe_columnwise", tau_scale = 1)))
  d <- w_prior_diagnostics(fit)
  expect_identical(d$strategy_type, "horseshoe_columnwise")
  expect_equal(d$effective_rank, 2L)
  expect_length(d$sigma_k, 6L)
  expect_true(d$tau > 0)
  wp <- get_W_compositional(fit)
  expect_equal(unname(colMeans(wp)), rep(0, 6), tolerance = 1e-12)
  gd <- get_gauge_diagnostics(fit)
  expect_equal(gd$gauge_contamination_ratio, gd$W_all_ones_component_norm / gd$W_compositional_norm)
  none <- lap_fit(sim$counts, latent_dim = 2, n_steps = 5)
  expect_null(w_prior_diagnostics(none)$effective_rank)
  expect_length(w_prior_diagnostics(none)$column_frobenius_compositional, 2L)
  neg <- lap_fit(sim$counts, latent_dim = 3, n_steps = 5, priors = list(loadings = list(type = "neg_columnwise")))
  expect_equal(w_prior_diagnostics(neg)$psi_k, w_prior_diagnostics(neg)$sigma_k^2)
  expect_error(lap_fit(sim$counts, latent_dim = 2, priors = list(loadings = list(type = "lasso"))),
               "type", class = "scribeR_input_error")
  expect_error(lap_fit(sim$counts, latent_dim = 2, priors = list(loadings = list(scale = 1))),
               "type", class = "scribeR_input_error")
  expect_error(lap_fit(sim$counts, latent_dim = 2,
                       priors = list(loadings = list(type = "horseshoe_columnwise", tau_scale = -1))),
               "tau_scale", class = "scribeR_input_error")
  expect_error(lap_fit(sim$counts, latent_dim = 2,
                       priors = list(loadings = list(type = "gaussian", tau_scale = 1))),
               "tau_scale", class = "scribeR_input_error")
  expect_error(w_prior_diagnostics(1), class = "scribeR_input_error")
})

test_that("the NBLN cascade from SVI: priors, freezing with aliases, frozen values kept", {
  sim <- scribe_simulate("nbvcp", n_genes = 25, n_cells = 150, seed = 9)
  x <- sim$counts[, Matrix::colSums(sim$counts) > 0]
  svi <- scribe_fit(x, model = "nbvcp", parameterization = "mean_odds", n_steps = 300, seed = 1, verbose = FALSE)
  fit <- lap_fit(x, model = "nbln", latent_dim = 2, n_steps = 40, informative_priors_from = svi,
                 informative_priors_freeze = c("dispersion", "capture_efficiency"))
  expect_s4_class(fit, "ScribeLaplaceResults")
  expect_output(show(fit), "frozen: r, eta")
  map <- get_map(fit)
  svi_map <- get_map(svi)
  expect_equal(unname(map$r), unname(svi_map$r), tolerance = 1e-12)
  expect_equal(unname(map$eta_capture), unname(-log(svi_map$p_capture)), tolerance = 1e-12)
  expect_equal(unname(map$p_capture), unname(svi_map$p_capture), tolerance = 1e-10)
  # No freeze: r and eta move away from the SVI values under their priors.
  free <- lap_fit(x, model = "nbln", latent_dim = 2, n_steps = 40, informative_priors_from = svi,
                  informative_priors_freeze = character(0), informative_priors_tau = 2)
  expect_false(isTRUE(all.equal(unname(get_map(free)$r), unname(svi_map$r))))
  expect_false(any(grepl("frozen", capture.output(show(free)))))
  expect_error(lap_fit(x, model = "nbln", latent_dim = 2, informative_priors_from = svi,
                       informative_priors_freeze = c("r", "dispersion")), "twice", class = "scribeR_input_error")
  expect_error(lap_fit(x, model = "nbln", latent_dim = 2, informative_priors_from = svi,
                       informative_priors_freeze = "size"), "size", class = "scribeR_input_error")
  expect_error(lap_fit(x, latent_dim = 2, informative_priors_from = svi), "nbln", class = "scribeR_input_error")
  expect_error(lap_fit(x, model = "nbln", latent_dim = 2, informative_priors_from = 1), "SVI fit",
               class = "scribeR_input_error")
  expect_error(lap_fit(x[1:20, ], model = "nbln", latent_dim = 2, informative_priors_from = svi),
               "different genes", class = "scribeR_input_error")
  expect_warning(lap_fit(x, model = "nbln", latent_dim = 2, n_steps = 2, informative_priors_freeze = "r"),
                 "ignored")
  nodepth <- scribe_fit(x, model = "nbdm", n_steps = 100, seed = 1, verbose = FALSE)
  expect_warning(lap_fit(x, model = "nbln", latent_dim = 2, n_steps = 2, informative_priors_from = nodepth),
                 "no capture")
})

test_that("NBLN without a cascade fits dispersions", {
  sim <- scribe_simulate("nbdm", n_genes = 20, n_cells = 200, seed = 10)
  x <- sim$counts[, Matrix::colSums(sim$counts) > 0]
  fit <- lap_fit(x, model = "nbln", latent_dim = 2, n_steps = 100)
  expect_length(get_map(fit)$r, 20L)
  expect_true(all(get_map(fit)$r > 0))
  expect_true(all(fit@diagnostics$grad_norms < 1e-4))
})

test_that("Laplace posteriors: latent draws, predictive checks and log-likelihoods", {
  sim <- simulate_pln(12, 80, 2, seed = 12)
  x <- sim$counts
  fit <- lap_fit(x, latent_dim = 2, n_steps = 60, priors = list(capture_efficiency = c(log(200), 0.5)))
  d <- get_latent_samples(fit, x, n_samples = 400, cells = c("c3", "c7"), seed = 1)
  expect_equal(dim(d$latents), c(400L, 2L, 12L))
  expect_equal(dim(d$eta_capture), c(400L, 2L))
  # Centred on the MAP; a cell's draws do not depend on which other cells are drawn.
  expect_lt(max(abs(colMeans(d$latents[, "c3", ]) - fit@latents[, "c3"])), 0.2)
  d2 <- get_latent_samples(fit, x, n_samples = 400, cells = "c7", seed = 1)
  expect_identical(d2$latents[, "c7", ], d$latents[, "c7", ])
  ppc <- posterior_predictive(fit, n_samples = 30, genes = c("g1", "g2"), x = x, seed = 2)
  expect_equal(dim(ppc), c(30L, 80L, 2L))
  expect_true(all(ppc >= 0 & ppc == round(ppc)))
  map_ppc <- posterior_predictive(fit, n_samples = 30, cells = 1:5, use_map = TRUE, x = x, seed = 2)
  expect_equal(dim(map_ppc), c(30L, 5L, 12L))
  # More spread with latent uncertainty than at the MAP.
  full <- posterior_predictive(fit, n_samples = 300, cells = 1:20, x = x, seed = 3)
  at_map <- posterior_predictive(fit, n_samples = 300, cells = 1:20, use_map = TRUE, x = x, seed = 3)
  expect_gt(mean(apply(full, c(2, 3), stats::var)), mean(apply(at_map, c(2, 3), stats::var)))
  ll <- log_likelihood(fit, x)
  expect_length(ll, 80L)
  expect_true(all(is.finite(ll) & ll < 0))
  lld <- log_likelihood(fit, x, n_samples = 5, seed = 1)
  expect_equal(dim(lld), c(5L, 80L))
  expect_error(posterior_predictive(fit, n_samples = 2), "counts", class = "scribeR_input_error")
  # By gene: at the MAP, each gene's Poisson pmf summed over cells; for PLN
  # the by-gene values add up to the by-cell ones, at the MAP and per draw.
  llg <- log_likelihood(fit, x, by = "gene")
  expect_named(llg, rownames(x))
  rate <- exp(sweep(fit@latents, 2, fit@params$eta_capture))
  expect_equal(llg, rowSums(stats::dpois(as.matrix(x), rate, log = TRUE)), tolerance = 1e-9)
  expect_equal(sum(llg), sum(ll), tolerance = 1e-9)
  lldg <- log_likelihood(fit, x, by = "gene", n_samples = 5, seed = 1)
  expect_equal(dim(lldg), c(5L, 12L))
  expect_equal(rowSums(lldg), rowSums(lld), tolerance = 1e-9)
})

test_that("a divergence is stopped, reported and the best state kept", {
  set.seed(1)
  u <- matrix(rpois(20 * 60, 5), 20, dimnames = list(paste0("g", 1:20), paste0("c", 1:60)))
  expect_warning(fit <- scribe_fit(u, model = "pln", inference_method = "laplace", latent_dim = 2, n_steps = 200,
                                   seed = 1, verbose = FALSE, optimizer_config = list(name = "sgd", step_size = 10),
                                   laplace_config = list(convergence_action = "ignore")),
                 class = "scribeR_nonfinite")
  expect_match(fit@diagnostics$aborted, "restored")
  expect_lt(length(loss_history(fit)), 200L)
  expect_true(all(is.finite(fit@params$mu)) && all(is.finite(fit@params$W)))
})

test_that("LNM: log-ratios against the most abundant gene, totals, compositional loadings", {
  set.seed(13)
  g1 <- 15
  mu <- runif(g1, -3, -1)
  w <- matrix(rnorm(g1 * 2, sd = 0.5), g1)
  y <- mu + w %*% matrix(rnorm(2 * 300), 2) + matrix(rnorm(g1 * 300, sd = 0.1), g1)
  rho <- apply(rbind(exp(y), 1), 2, function(v) v / sum(v))
  u <- matrix(rpois(length(rho), 2000 * rho), nrow(rho),
              dimnames = list(paste0("g", seq_len(g1 + 1)), paste0("c", seq_len(300))))
  fit <- lap_fit(u, model = "lnm", latent_dim = 2, n_steps = 300)
  m <- get_map(fit)
  expect_identical(m$reference, "g16")
  expect_equal(names(m$mu), paste0("g", 1:15))
  expect_lt(max(abs(m$mu - mu)), 0.25)
  expect_equal(dim(fit@latents), c(15L, 300L))
  expect_equal(m$mu_T, mean(colSums(u)), tolerance = 0.05)
  expect_identical(get_W_compositional(fit), m$W)
  expect_equal(get_gauge_diagnostics(fit)$gauge_contamination_ratio, 0)
  expect_output(show(fit), "log-ratios against g16")
  d <- get_latent_samples(fit, u, n_samples = 50, cells = 1:3, seed = 1)
  expect_equal(dim(d$latents), c(50L, 3L, 15L))
  expect_equal(dimnames(d$latents)[[3]], paste0("g", 1:15))
  ppc <- posterior_predictive(fit, n_samples = 20, cells = 1:10, x = u, seed = 1)
  expect_equal(dim(ppc), c(20L, 10L, 16L))
  # Totals of the draws follow the fitted NB totals.
  expect_equal(mean(apply(ppc, c(1, 2), sum)), m$mu_T, tolerance = 0.1)
  ll <- log_likelihood(fit, u)
  expect_true(all(is.finite(ll) & ll < 0))
  expect_error(lap_fit(u, model = "lnm", latent_dim = 2, priors = list(loadings = list(type = "gaussian"))),
               class = "scribeR_unsupported")
  expect_error(lap_fit(u, model = "lnm", latent_dim = 2, priors = list(capture_efficiency = c(8, 0.5))),
               "lnmvcp", class = "scribeR_input_error")
  low <- lap_fit(u, model = "lnm", latent_dim = 2, n_steps = 150, d_mode = "low_rank")
  expect_identical(low@config$d_mode, "low_rank")
  expect_lt(max(abs(get_map(low)$mu - mu)), 0.3)
  expect_equal(dim(get_latent_samples(low, u, n_samples = 5, cells = 1:2)$latents), c(5L, 2L, 15L))
  expect_warning(lap_fit(u, latent_dim = 2, n_steps = 2, d_mode = "low_rank",
                         laplace_config = list(convergence_action = "ignore")), "d_mode")
  expect_error(lap_fit(u, model = "lnm", latent_dim = 2, d_mode = "diag"), "d_mode", class = "scribeR_input_error")
  vcp <- lap_fit(u, model = "lnmvcp", latent_dim = 2, n_steps = 100,
                 priors = list(capture_efficiency = c(log(2000), 0.3)))
  expect_length(get_map(vcp)$eta_capture, 300L)
  expect_output(show(vcp), "lnmvcp with capture")
  # Deeper cells have the smaller capture latent.
  expect_lt(stats::cor(get_map(vcp)$eta_capture, log(colSums(u)), method = "spearman"), -0.9)
})

test_that("Laplace fits write back to a SingleCellExperiment and share the accessors", {
  skip_if_not_installed("SingleCellExperiment")
  sim <- simulate_pln(12, 80, 2, seed = 14)
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = sim$counts))
  fit <- lap_fit(sce, latent_dim = 2, n_steps = 30, priors = list(capture_efficiency = c(log(200), 0.5)))
  sce <- add_scribe_fit(sce, fit)
  rd <- SummarizedExperiment::rowData(sce)
  expect_equal(rd$scribe_mu, unname(get_map(fit)$mu))
  expect_equal(SummarizedExperiment::colData(sce)$scribe_p_capture, unname(get_map(fit)$p_capture))
  s <- get_posterior_samples(fit, n_samples = 5, x = sce, cells = 1:2, seed = 1)
  expect_equal(dim(s$latents), c(5L, 2L, 12L))
})

test_that("early stopping applies to Laplace fits", {
  sim <- simulate_pln(12, 80, 2, seed = 15)
  fit <- lap_fit(sim$counts, latent_dim = 2, n_steps = 2000,
                 early_stopping = list(patience = 30, min_delta = 1e12, check_every = 10, warmup = 20,
                                       smoothing_window = 10))
  expect_true(fit@diagnostics$early_stopped)
  expect_lt(length(loss_history(fit)), 100L)
  expect_equal(fit@diagnostics$restored_step, 21)
  expect_output(show(fit), "stopped early; state of step 21 restored")
})

test_that("L-BFGS on the outer loss: fewer steps, the rank at default settings, clear errors", {
  sim <- simulate_pln(40, 400, 3, seed = 11)
  lb <- scribe_fit(sim$counts, model = "pln", inference_method = "laplace", latent_dim = 8, n_steps = 300,
                   seed = 1, verbose = FALSE, optimizer_config = list(name = "lbfgs"),
                   priors = list(loadings = list(type = "horseshoe_columnwise", tau_scale = 1)))
  expect_equal(w_prior_diagnostics(lb)$effective_rank, 3L)
  h <- loss_history(lb)
  expect_true(all(diff(h) <= 0))
  expect_lt(max(abs(get_map(lb)$mu - sim$mu)), 0.25)
  # The same fit on 1 and 2 threads.
  small <- simulate_pln(15, 120, 2, seed = 3)
  one <- function(t) scribe_fit(small$counts, model = "pln", inference_method = "laplace", latent_dim = 2,
                                n_steps = 20, seed = 1, verbose = FALSE, num_threads = t,
                                optimizer_config = list(name = "lbfgs", memory = 5))
  expect_identical(get_map(one(1))$W, get_map(one(2))$W)
  expect_error(scribe_fit(small$counts, model = "pln", inference_method = "laplace", latent_dim = 2, batch_size = 50,
                          optimizer_config = list(name = "lbfgs")),
               "full batch", class = "scribeR_unsupported")
  expect_error(scribe_fit(small$counts, model = "pln", inference_method = "laplace", latent_dim = 2,
                          optimizer_config = list(name = "lbfgs", step_size = 0.1)),
               "step_size", class = "scribeR_input_error")
  expect_error(scribe_fit(small$counts, model = "pln", inference_method = "laplace", latent_dim = 2,
                          optimizer_config = list(name = "lbfgs", memory = 0)),
               "memory", class = "scribeR_input_error")
  expect_error(scribe_fit(small$counts, model = "pln", inference_method = "laplace", latent_dim = 2,
                          optimizer_config = list(name = "lbfgs", memory = 1e9)),
               "between 1 and 100", class = "scribeR_input_error")
  expect_error(scribe_fit(small$counts, model = "nbdm", n_steps = 5, optimizer_config = list(name = "lbfgs")),
               "laplace", class = "scribeR_unsupported")
})

test_that("normalize_counts of log-normal fits: each cell's softmax of its latents, and new cells' compositions", {
  set.seed(5)
  g <- 12; n <- 150
  w <- matrix(rnorm(g * 2, sd = 0.5), g)
  x <- pln_counts(runif(g, 0.5, 2), w, n)
  lap <- scribe_fit(x, model = "pln", inference_method = "laplace", latent_dim = 2, seed = 1, verbose = FALSE)
  rho <- normalize_counts(lap, x)
  expect_identical(dim(rho), c(12L, 150L))
  m <- get_map(lap)
  want <- exp(m$latents) / rep(colSums(exp(m$latents)), each = 12)
  expect_equal(rho, want, ignore_attr = TRUE, tolerance = 1e-12)
  expect_equal(normalize_counts(lap, x, genes = c("g3", "g1")), rho[c("g3", "g1"), ], tolerance = 1e-14)
  d <- normalize_counts(lap, x, n_samples = 40, seed = 2)
  expect_identical(dim(d), c(40L, 12L, 150L))
  expect_equal(colSums(d[1, , ]), rep(1, 150), ignore_attr = TRUE, tolerance = 1e-12)
  # Posterior draws centre on the MAP composition.
  expect_lt(max(abs(apply(d, c(2, 3), mean) - rho)), 0.05)
  pop <- normalize_counts(lap)
  expect_identical(names(pop), rownames(x))
  expect_equal(sum(pop), 1, tolerance = 1e-12)
  # New cells of the population spread like the fitted cells.
  expect_gt(cor(pop, rowMeans(rho)), 0.99)
  expect_identical(dim(normalize_counts(lap, n_samples = 7, genes = 1:3, seed = 1)), c(7L, 3L))
  expect_error(normalize_counts(lap, n_samples_dirichlet = 5), "n_samples_dirichlet", class = "scribeR_input_error")

  lnm <- scribe_fit(x, model = "lnm", inference_method = "vae", latent_dim = 2, vae_encoder_hidden_dims = 8,
                    n_steps = 100, seed = 1, verbose = FALSE)
  r2 <- normalize_counts(lnm, x, genes = 1:12)
  expect_equal(colSums(r2), rep(1, 150), ignore_attr = TRUE, tolerance = 1e-12)
  mv <- get_map(lnm, x)
  ref <- mv$reference
  other <- rownames(x)[2]
  if (other == ref) other <- rownames(x)[3]
  # A log-ratio is the log of two shares.
  expect_equal(log(r2[other, ] / r2[ref, ]), mv$latents[other, ], tolerance = 1e-10)
  expect_error(normalize_counts(lnm), "x", class = "scribeR_input_error")
})
