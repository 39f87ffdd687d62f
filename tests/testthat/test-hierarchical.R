# Hierarchical extensions of the NB family: gene-specific p
# (priors = list(probability = "gaussian")). Likelihood and prior gradients
# are tested in the core (models/nb/kernels.rs), recovery of logit p_g in
# src/rust/scribe-core/tests/recovery.rs.

gene_p_sim <- function(model = "nbvcp", n_genes = 120, n_cells = 500, seed = 3) {
  key <- paste("gene_p", model, n_genes, n_cells, seed)
  if (is.null(sim_cache[[key]])) {
    set.seed(seed)
    lp <- stats::rnorm(n_genes, 0.3, 1)
    sim_cache[[key]] <- scribe_simulate(model, n_genes = n_genes, n_cells = n_cells, p = stats::plogis(lp),
                                        seed = seed)
  }
  sim_cache[[key]]
}

gene_p_fit <- function(x, ..., n_steps = 2000) {
  scribe_fit(x, ..., n_steps = n_steps, seed = 1, verbose = FALSE,
             optimizer_config = list(name = "adam", step_size = 0.01))
}

# Share of genes whose observed variance lies in the central 95 % band of
# the posterior predictive variance.
variance_coverage <- function(fit, counts) {
  pp <- posterior_predictive(fit, n_samples = 100, seed = 2)
  v <- apply(pp, c(1, 3), stats::var)
  observed <- apply(as.matrix(counts), 1, stats::var)
  lo <- apply(v, 2, stats::quantile, 0.025)
  hi <- apply(v, 2, stats::quantile, 0.975)
  mean(observed >= lo & observed <= hi)
}

test_that("gene-specific p: the simulator takes one p per gene", {
  sim <- gene_p_sim(n_genes = 20, n_cells = 50)
  expect_length(sim$truth$p, 20L)
  expect_named(sim$truth$p, rownames(sim$counts))
  expect_null(sim$truth$p_hat)
  expect_error(scribe_simulate("nbdm", n_genes = 5, p = c(0.5, 0.6)), class = "scribeR_input_error")
  expect_error(scribe_simulate("nbdm", n_genes = 2, p = c(0.5, 1.2)), "`p`")
})

test_that("gene-specific p fits every gene's variance where shared p cannot", {
  sim <- gene_p_sim()
  shared <- gene_p_fit(sim$counts, model = "nbvcp")
  gene <- gene_p_fit(sim$counts, model = "nbvcp", priors = list(probability = "gaussian"))
  expect_true(gene@model$unconstrained)
  map <- get_map(gene)
  expect_named(map$p, rownames(sim$counts))
  expect_null(map$p_hat)
  expect_true(all(c("logit_p_loc", "logit_p_scale") %in% names(map)))
  # Each gene's p up to the shift capture leaves free, for genes with signal.
  expressed <- rowMeans(as.matrix(sim$counts)) >= 0.5
  expect_gt(stats::cor(stats::qlogis(map$p[expressed]), stats::qlogis(sim$truth$p[expressed])), 0.9)
  expect_gt(variance_coverage(gene, sim$counts), 0.9)
  expect_lt(variance_coverage(shared, sim$counts), 0.6)
  # The hierarchy's scale estimates the spread of logit p_g (truth: 1).
  expect_gt(map$logit_p_scale, 0.6)
  expect_lt(map$logit_p_scale, 1.5)
  expect_output(show(gene), "p \\(genes\\)")
  expect_output(show(gene), "common shift")
})

test_that("every downstream verb handles a gene-specific p", {
  sim <- gene_p_sim(n_genes = 30, n_cells = 80, seed = 5)
  fit <- gene_p_fit(sim$counts, model = "zinbvcp", priors = list(probability = list(type = "gaussian")),
                    n_steps = 200)
  d <- get_posterior_samples(fit, n_samples = 10, seed = 1)
  expect_equal(dim(d$p), c(10L, 30L))
  expect_equal(dim(d$mu), c(10L, 30L))
  expect_equal(d$mu, d$r * d$p / (1 - d$p), tolerance = 1e-10)
  pp <- posterior_predictive(fit, n_samples = 5, seed = 1)
  expect_equal(dim(pp), c(5L, 80L, 30L))
  den <- denoise_counts(fit, sim$counts)
  expect_equal(dim(den), c(30L, 80L))
  expect_true(all(den >= as.matrix(sim$counts) - 1e-9))
  ll <- log_likelihood(fit, sim$counts, n_samples = 4, seed = 1)
  expect_true(all(is.finite(ll)))
  nrm <- normalize_counts(fit, n_samples = 4, seed = 1)
  expect_equal(unname(rowSums(nrm)), rep(1, 4), tolerance = 1e-10)
  sce <- SummarizedExperiment::SummarizedExperiment(list(counts = sim$counts))
  sce <- add_scribe_fit(sce, fit)
  rd <- SummarizedExperiment::rowData(sce)
  expect_equal(rd$scribe_p, unname(get_map(fit)$p))
  expect_null(S4Vectors::metadata(sce)$scribe$p)
  # nbdm and mean_odds (gene-specific phi).
  fo <- gene_p_fit(sim$counts, model = "nbdm", parameterization = "mean_odds",
                   priors = list(probability = "gaussian"), n_steps = 200)
  mo <- get_map(fo)
  expect_named(mo$phi, rownames(sim$counts))
  expect_equal(unname(mo$p), unname(1 / (1 + mo$phi)), tolerance = 1e-12)
  expect_true(all(c("log_phi_loc", "log_phi_scale") %in% names(mo)))
})

test_that("gene-specific p: MCMC samples it and warm-starts from SVI", {
  sim <- gene_p_sim(model = "nbdm", n_genes = 10, n_cells = 80, seed = 7)
  svi <- gene_p_fit(sim$counts, model = "nbdm", priors = list(probability = "gaussian"), n_steps = 500)
  fit <- scribe_fit(sim$counts, model = "nbdm", inference_method = "mcmc", priors = list(probability = "gaussian"),
                    svi_init = svi, n_samples = 150, n_warmup = 150, n_chains = 1, seed = 1, verbose = FALSE)
  s <- get_samples(fit)
  expect_equal(dim(s$p), c(150L, 10L))
  expect_gt(stats::cor(colMeans(s$p), get_map(svi)$p), 0.9)
})

test_that("gene-specific p fits are reproducible and thread-count invariant", {
  sim <- gene_p_sim(n_genes = 25, n_cells = 150, seed = 9)
  f <- function(threads, seed = 4) {
    scribe_fit(sim$counts, model = "nbvcp", priors = list(probability = "gaussian"), n_steps = 60,
               seed = seed, num_threads = threads, verbose = FALSE)
  }
  a <- f(1)
  expect_identical(a@params, f(2)@params)
  expect_false(identical(a@params, f(1, seed = 5)@params))
})

test_that("hierarchical priors that do not exist yet are classed errors", {
  m <- sim_data("nbdm", n_genes = 10, n_cells = 30)$counts
  expect_error(quick_fit(m, priors = list(probability = "cauchy")), "priors\\$probability", class = "scribeR_input_error")
  expect_error(quick_fit(m, priors = list(overdispersion = "horseshoe")), "overdispersion = \"bnb\"")
  expect_error(quick_fit(m, model = "nbdm", priors = list(zero_inflation = "gaussian")),
               "zero-inflated", class = "scribeR_input_error")
  expect_error(quick_fit(m, priors = list(mean_expression = "gaussian")), "n_components")
  expect_error(quick_fit(m, priors = list(capture_probability = "gaussian")), class = "scribeR_unsupported")
  expect_error(quick_fit(m, parameterization = "mean_prob", priors = list(dispersion = "gaussian")),
               "not available yet")
  expect_error(quick_fit(m, priors = list(probability = list(type = "gaussian", tau0 = 1))), "tau0")
  expect_error(quick_fit(m, priors = list(probability = list(type = "horseshoe", u = 1))), "does not take")
  expect_error(quick_fit(m, priors = list(probability = list(type = "neg", tau = -1))), "tau")
  expect_error(quick_fit(m, priors = list(probability = "gaussian", p = c(1, 1))), "both a family")
})

test_that("a gate hierarchy shrinks the gates and a mean hierarchy ties components", {
  sim <- sim_data("zinb", n_genes = 40, n_cells = 300, seed = 13)
  fit <- gene_p_fit(sim$counts, model = "zinb", priors = list(zero_inflation = "gaussian"), n_steps = 600)
  map <- get_map(fit)
  expect_true(fit@model$unconstrained)
  expect_true(all(c("logit_gate_loc", "logit_gate_scale") %in% names(map)))
  expect_length(map$gate, 40L)
  expect_true(all(is.finite(log_likelihood(fit, sim$counts))))
  # Mixture: every component's mu of a gene is drawn around that gene's location.
  mix <- sim_data("nbdm", n_genes = 30, n_cells = 200, seed = 14)
  fm <- gene_p_fit(mix$counts, model = "nbdm", n_components = 2, parameterization = "mean_prob",
                   priors = list(mean_expression = "gaussian"), n_steps = 300)
  mm <- get_map(fm)
  expect_equal(dim(mm$mu), c(2L, 30L))
  expect_length(mm$log_mu_loc, 30L)
  expect_named(mm$log_mu_loc, rownames(mix$counts))
  expect_gt(stats::cor(mm$log_mu_loc, log(colMeans(mm$mu))), 0.9)
  expect_error(gene_p_fit(mix$counts, model = "nbdm", n_components = 2, mixture_params = "prob",
                          priors = list(mean_expression = "gaussian"), n_steps = 5),
               "component-specific", class = "scribeR_input_error")
})

test_that("BNB: heavy-tailed genes get their excess dispersion, and the verbs handle it", {
  set.seed(2)
  omega <- rep(c(0.05, 1.5), 20)
  sim <- scribe_simulate("nbdm", n_genes = 40, n_cells = 800, r = stats::rlnorm(40, 1, 0.5), omega = omega, seed = 4)
  expect_named(sim$truth$omega, rownames(sim$counts))
  fit <- gene_p_fit(sim$counts, model = "nbdm", overdispersion = "bnb")
  expect_true(fit@model$unconstrained)
  map <- get_map(fit)
  expect_named(map$bnb_concentration, rownames(sim$counts))
  heavy <- omega > 1
  expect_gt(stats::median(map$bnb_concentration[heavy]), 5 * stats::median(map$bnb_concentration[!heavy]))
  nb <- gene_p_fit(sim$counts, model = "nbdm")
  expect_gt(variance_coverage(fit, sim$counts), variance_coverage(nb, sim$counts))
  expect_gt(variance_coverage(fit, sim$counts), 0.8)
  # Log-likelihoods (and so model comparison) favour the BNB on BNB data.
  ll_bnb <- sum(log_likelihood(fit, sim$counts))
  ll_nb <- sum(log_likelihood(nb, sim$counts))
  expect_gt(ll_bnb, ll_nb)
  expect_equal(unname(rowSums(normalize_counts(fit, n_samples = 3, seed = 1))), rep(1, 3), tolerance = 1e-10)
  # Denoising: no capture, nothing missing: the counts themselves.
  expect_equal(unname(denoise_counts(fit, sim$counts)), unname(as.matrix(sim$counts)))
  # Per-cell fractions through each count's latent p: each cell's sum to 1.
  fr <- normalize_counts(fit, sim$counts)
  expect_equal(unname(colSums(fr)), rep(1, ncol(sim$counts)), tolerance = 1e-10)
  frs <- normalize_counts(fit, sim$counts, n_samples = 20, seed = 1)
  expect_identical(dim(frs), c(20L, 40L, 800L))
  expect_lt(max(abs(apply(frs, c(1, 3), sum) - 1)), 1e-10)
  # Biological DE against the NB fit: the same means, the BNB's larger variances.
  de <- scribe_de(fit, nb, biological = TRUE, n_samples = 50, seed = 1)
  bio <- as.data.frame(de)
  expect_lt(stats::median(abs(bio$bio_lfc_mean)), 0.1)
  expect_gt(stats::median(bio$bio_lvr_mean[heavy]), stats::median(bio$bio_lvr_mean[!heavy]))
  expect_true(all(is.na(bio$bio_kl_mean)))
  gof <- goodness_of_fit(fit, sim$counts, genes = rownames(sim$counts)[1:6], ppc = FALSE, seed = 1)
  expect_true(all(is.finite(unlist(gof$residuals))))
  sce <- add_scribe_fit(SummarizedExperiment::SummarizedExperiment(list(counts = sim$counts)), fit)
  expect_equal(SummarizedExperiment::rowData(sce)$scribe_bnb_concentration, unname(map$bnb_concentration))
  # With capture and zero inflation, and MCMC.
  small <- sim$counts[1:8, 1:80]
  z <- gene_p_fit(small, model = "zinbvcp", overdispersion = "bnb", priors = list(probability = "gaussian"),
                  n_steps = 100)
  expect_true(all(is.finite(log_likelihood(z, small))))
  den <- denoise_counts(z, small)
  expect_true(all(den >= as.matrix(small) - 1e-9))
  expect_true(all(is.finite(denoise_counts(z, small, method = "sample", seed = 1))))
  # NUTS: the gaussian family (the centred horseshoe makes a funnel, see ?scribe_fit).
  mc <- scribe_fit(small, model = "nbdm", overdispersion = "bnb", priors = list(overdispersion = "gaussian"),
                   inference_method = "mcmc", n_samples = 100, n_warmup = 100, seed = 1, verbose = FALSE)
  expect_equal(dim(get_samples(mc)$bnb_concentration), c(100L, 8L))
  expect_error(quick_fit(small, overdispersion = "nb2"), "overdispersion")
  expect_error(scribe_fit(small, model = "pln", inference_method = "laplace", overdispersion = "bnb", verbose = FALSE),
               "overdispersion")
})

test_that("mixtures take a gene-specific p and BNB, and every verb handles them", {
  sim <- scribe_simulate("nbvcp", n_genes = 30, n_cells = 300, n_components = 2,
                         omega = rep(c(0.05, 1), 15), seed = 5)
  expect_named(sim$truth$omega, rownames(sim$counts))
  fit <- gene_p_fit(sim$counts, model = "nbvcp", n_components = 2, overdispersion = "bnb",
                    priors = list(probability = "gaussian"), n_steps = 300)
  m <- get_map(fit)
  # p is component-specific by default: one value per component and gene.
  expect_identical(dim(m$p), c(2L, 30L))
  expect_identical(dimnames(m$p), list(c("component1", "component2"), rownames(sim$counts)))
  expect_named(m$bnb_concentration, rownames(sim$counts))
  expect_output(show(fit), "p \\(genes x 2 components\\)")
  d <- get_posterior_samples(fit, n_samples = 4, seed = 1)
  expect_identical(dim(d$p), c(4L, 2L, 30L))
  expect_identical(dim(d$bnb_concentration), c(4L, 30L))
  # The components are found: each cell's most likely one matches the truth (up to labels).
  ct <- cell_type_probabilities(fit, sim$counts)
  agree <- mean(ct$assignment == sim$truth$assignment)
  expect_gt(max(agree, 1 - agree), 0.95)
  ll <- log_likelihood(fit, sim$counts)
  expect_true(all(is.finite(ll)))
  expect_true(all(is.finite(log_likelihood(fit, sim$counts, by = "gene"))))
  expect_identical(dim(posterior_predictive(fit, n_samples = 5, seed = 1)), c(5L, 300L, 30L))
  den <- denoise_counts(fit, sim$counts)
  expect_true(all(den >= as.matrix(sim$counts) - 1e-9))
  nc <- normalize_counts(fit, n_samples = 3, seed = 1)
  expect_equal(unname(apply(nc, c(1, 3), sum)), matrix(1, 3, 2), tolerance = 1e-10)
  de <- as.data.frame(scribe_de(fit, component_a = 1, component_b = 2, n_samples = 20, seed = 1))
  expect_equal(nrow(de), 30L)
  gof <- goodness_of_fit(fit, sim$counts, genes = rownames(sim$counts)[1:4], ppc = FALSE, seed = 1)
  expect_true(all(is.finite(unlist(gof$residuals))))
  f <- tempfile(fileext = ".rds")
  saveRDS(fit, f)
  expect_identical(get_map(readRDS(f)), m)
  # With p shared by the components: one p per gene.
  shared <- gene_p_fit(sim$counts, model = "nbvcp", n_components = 2, mixture_params = "mean",
                       priors = list(probability = "gaussian"), n_steps = 50)
  expect_length(get_map(shared)$p, 30L)
  # NUTS samples the same model, warm-started from SVI.
  small <- sim$counts[1:6, 1:60]
  small <- small[, Matrix::colSums(small) > 0]
  mc <- scribe_fit(small, model = "nbdm", n_components = 2, overdispersion = "bnb",
                   priors = list(probability = "gaussian", overdispersion = "gaussian"),
                   inference_method = "mcmc", n_samples = 50, n_warmup = 50, seed = 1, verbose = FALSE)
  expect_identical(dim(get_samples(mc)$p), c(50L, 2L, 6L))
  expect_identical(dim(get_samples(mc)$bnb_concentration), c(50L, 6L))
  expect_true(all(is.finite(log_likelihood(mc, small))))
})

test_that("horseshoe and NEG hierarchies fit, name their scales, and shrink", {
  sim <- gene_p_sim(n_genes = 60, n_cells = 300, seed = 17)
  hs <- gene_p_fit(sim$counts, model = "nbvcp", priors = list(probability = "horseshoe"), n_steps = 800)
  m <- get_map(hs)
  expect_true(all(c("logit_p_loc", "logit_p_tau", "logit_p_lambda", "logit_p_c2") %in% names(m)))
  expect_named(m$logit_p_lambda, rownames(sim$counts))
  expressed <- rowMeans(as.matrix(sim$counts)) >= 0.5
  expect_gt(stats::cor(stats::qlogis(m$p[expressed]), stats::qlogis(sim$truth$p[expressed])), 0.8)
  ng <- gene_p_fit(sim$counts, model = "nbvcp", priors = list(probability = list(type = "neg")), n_steps = 300)
  expect_true(all(c("logit_p_zeta", "logit_p_psi") %in% names(get_map(ng))))
  # Hyper-parameters reach the prior: a tighter global scale shrinks the genes together.
  tight <- gene_p_fit(sim$counts, model = "nbvcp", n_steps = 800,
                      priors = list(probability = list(type = "horseshoe", tau0 = 0.01, slab_scale = 0.5)))
  expect_lt(stats::sd(stats::qlogis(get_map(tight)$p)), stats::sd(stats::qlogis(m$p)))
  bn <- gene_p_fit(sim$counts[1:10, ], model = "nbdm", overdispersion = "bnb", n_steps = 20,
                   priors = list(overdispersion = list(type = "neg", a = 2)))
  expect_true("bnb_concentration_zeta" %in% names(get_map(bn)))
  # BNB defaults to the horseshoe, centred near the NB (omega ~ softplus(-5)).
  nb_data <- sim_data("nbdm", n_genes = 30, n_cells = 300, seed = 18)$counts
  b <- gene_p_fit(nb_data, model = "nbdm", overdispersion = "bnb", n_steps = 800)
  mb <- get_map(b)
  expect_true(all(c("bnb_concentration_loc", "bnb_concentration_tau") %in% names(mb)))
  expect_lt(stats::median(mb$bnb_concentration), 0.1)
  bg <- gene_p_fit(nb_data, model = "nbdm", overdispersion = "bnb", priors = list(overdispersion = "gaussian"),
                   n_steps = 50)
  expect_true("bnb_omega_hyper_loc" %in% names(get_map(bg)))
})
