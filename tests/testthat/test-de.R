# Differential expression: calibration on simulated known DE, agreement of
# the parametric and empirical paths, mixtures, reproducibility, errors.

# Two groups of nbdm cells sharing r except on 10 % of the genes, shifted by
# +-log 2 and +-log 3 in equal numbers (so the geometric mean of r, hence
# the CLR of the unchanged genes, is the same in both groups).
de_sim <- function(seed, n_genes = 200, n_cells = 300) {
  set.seed(seed)
  r <- exp(stats::rnorm(n_genes, log(20), 0.7))
  lfc <- numeric(n_genes)
  lfc[seq_len(n_genes / 10)] <- rep(c(log(2), -log(2), log(3), -log(3)), length.out = n_genes / 10)
  a <- scribe_simulate("nbdm", n_genes = n_genes, n_cells = n_cells, r = r, p = 0.3, seed = seed)
  b <- scribe_simulate("nbdm", n_genes = n_genes, n_cells = n_cells, r = r * exp(lfc), p = 0.3, seed = seed + 1000)
  list(a = a$counts, b = b$counts, lfc = lfc)
}

auc <- function(score, positive) {
  rk <- rank(score)
  n1 <- sum(positive)
  (sum(rk[positive]) - n1 * (n1 + 1) / 2) / (n1 * sum(!positive))
}

de_fits <- local({
  cache <- NULL
  function() {
    if (is.null(cache)) {
      s <- de_sim(1)
      cache <<- list(sim = s, a = scribe_fit(s$a, model = "nbdm", seed = 1, verbose = FALSE),
                     b = scribe_fit(s$b, model = "nbdm", seed = 1, verbose = FALSE))
    }
    cache
  }
})

test_that("lfsr ranks known DE genes and PEFP calls keep the false-discovery proportion", {
  skip_on_cran()
  fdp <- numeric(20)
  aucs <- numeric(20)
  power <- numeric(20)
  for (i in seq_len(20)) {
    s <- de_sim(i)
    fa <- scribe_fit(s$a, model = "nbdm", seed = i, verbose = FALSE)
    fb <- scribe_fit(s$b, model = "nbdm", seed = i, verbose = FALSE)
    de <- scribe_de(fa, fb, n_samples = 500, seed = i)
    df <- as.data.frame(de, target_pefp = 0.05, use_lfsr_tau = FALSE)
    truth <- s$lfc != 0
    aucs[i] <- auc(-df$lfsr, truth)
    fdp[i] <- if (any(df$is_de)) sum(df$is_de & !truth) / sum(df$is_de) else 0
    power[i] <- mean(df$is_de[truth])
  }
  expect_gte(min(aucs), 0.95)
  expect_lte(mean(fdp), 0.07)
  # The calls are not empty: the PEFP bound is met while finding most shifts.
  expect_gt(mean(power), 0.5)
})

test_that("the summaries follow from the draws at any tau", {
  f <- de_fits()
  de <- scribe_de(f$a, f$b, n_samples = 300, seed = 5)
  d <- de@delta
  expect_equal(dim(d), c(300L, 200L))
  df <- as.data.frame(de, tau = log(1.5))
  expect_equal(df$delta_mean, unname(colMeans(d)))
  expect_equal(df$delta_sd, unname(apply(d, 2, stats::sd)))
  expect_equal(df$prob_up, unname(colMeans(d > log(1.5))))
  expect_equal(df$prob_down, unname(colMeans(d < -log(1.5))))
  expect_equal(df$lfsr_tau, 1 - pmax(df$prob_up, df$prob_down))
  pp <- unname(colMeans(d > 0))
  expect_equal(df$lfsr, pmin(pp, 1 - pp))
  # Draws of the CLR difference sum to zero over genes.
  expect_lt(max(abs(rowSums(d))), 1e-8)
  # PEFP: the mean lfsr of the called genes is at most the target, and one more gene would break it.
  called <- call_de(de, target_pefp = 0.05, use_lfsr_tau = FALSE)
  expect_lte(mean(df$lfsr[called]), 0.05)
  nxt <- sort(df$lfsr[!called])[1]
  expect_gt(mean(c(df$lfsr[called], nxt)), 0.05)
  # The fixed rule.
  fixed <- call_de(de, tau = log(1.5), lfsr_threshold = 0.05)
  expect_identical(unname(fixed), df$lfsr < 0.05 & df$prob_effect > 0.95)
  expect_named(called, f$a@gene_names)
})

test_that("scribe_de is reproducible from its seed and independent of threads", {
  f <- de_fits()
  one <- scribe_de(f$a, f$b, n_samples = 100, seed = 9, num_threads = 1)
  two <- scribe_de(f$a, f$b, n_samples = 100, seed = 9, num_threads = 2)
  expect_identical(one@delta, two@delta)
  other <- scribe_de(f$a, f$b, n_samples = 100, seed = 10)
  expect_false(identical(one@delta, other@delta))
})

test_that("the expected composition and gene masks", {
  f <- de_fits()
  m <- scribe_de(f$a, f$b, n_samples = 200, n_samples_dirichlet = 0, seed = 2)
  d <- scribe_de(f$a, f$b, n_samples = 200, seed = 2)
  # Without Dirichlet noise delta carries parameter uncertainty only: narrower.
  expect_lt(stats::median(m@stats$delta_sd), stats::median(d@stats$delta_sd) / 3)
  # With two draws per parameter draw there are twice the draws.
  expect_equal(nrow(scribe_de(f$a, f$b, n_samples = 50, n_samples_dirichlet = 2, seed = 1)@delta), 100L)
  keep <- f$a@gene_names[1:50]
  mk <- scribe_de(f$a, f$b, n_samples = 100, n_samples_dirichlet = 0, gene_mask = keep, seed = 2)
  expect_identical(mk@gene_names, keep)
  expect_equal(ncol(mk@delta), 50L)
  # Pooling changes the reference but not the differences between kept genes.
  full <- scribe_de(f$a, f$b, n_samples = 100, n_samples_dirichlet = 0, seed = 2)
  expect_equal(mk@delta[, 1] - mk@delta[, 2], full@delta[, 1] - full@delta[, 2], tolerance = 1e-10)
})

test_that("shrinkage pulls noisy effects toward zero and keeps strong ones", {
  f <- de_fits()
  e <- scribe_de(f$a, f$b, n_samples = 500, n_samples_dirichlet = 0, seed = 4)
  s <- scribe_de(f$a, f$b, method = "shrinkage", n_samples = 500, n_samples_dirichlet = 0, seed = 4)
  expect_identical(s@method, "shrinkage")
  truth <- f$sim$lfc != 0
  expect_true(all(abs(s@stats$delta_mean[!truth]) <= abs(e@stats$delta_mean[!truth]) + 1e-12))
  # Unshrunk, the exact nulls with |z| > 2 are sign calls; the shrinkage prior's
  # null component removes most of them.
  false_e <- sum(call_de(e, target_pefp = 0.05, use_lfsr_tau = FALSE) & !truth)
  false_s <- sum(call_de(s, target_pefp = 0.05, use_lfsr_tau = FALSE) & !truth)
  expect_lt(false_s, false_e / 2)
  expect_gt(sum(call_de(s, target_pefp = 0.05, use_lfsr_tau = FALSE) & truth), 10)
  expect_output(show(s), "shrinkage prior")
  # New tau values are recomputed from the stored moments.
  expect_equal(nrow(as.data.frame(s, tau = 0.5)), 200L)
})

test_that("gene-set balances are the ILR contrast of the draws", {
  f <- de_fits()
  de <- scribe_de(f$a, f$b, n_samples = 200, seed = 3)
  genes <- f$a@gene_names
  sets <- list(up = genes[c(1, 3, 5, 7, 9)], null = genes[100:140])
  res <- test_gene_sets(de, sets)
  d <- ncol(de@delta)
  v <- ifelse(seq_len(d) %in% c(1, 3, 5, 7, 9), sqrt((d - 5) / (5 * d)), -sqrt(5 / ((d - 5) * d)))
  b <- as.vector(de@delta %*% v)
  expect_equal(res$balance_mean[1], mean(b))
  expect_equal(res$balance_sd[1], stats::sd(b))
  expect_identical(res$n_genes, c(5L, 41L))
  expect_true(res$is_de[1])
  expect_false(res$is_de[2])
  expect_error(test_gene_sets(de, list(x = "nope")), class = "scribeR_input_error")
  expect_error(test_gene_sets(de, list("gene1")), "named list", class = "scribeR_input_error")
  nodraws <- scribe_de(f$a, f$b, n_samples = 50, seed = 3, keep_draws = FALSE)
  expect_error(test_gene_sets(nodraws, sets), class = "scribeR_unsupported")
  expect_error(as.data.frame(nodraws, tau = 0.1), "keep_draws", class = "scribeR_input_error")
})

test_that("components of one mixture fit are compared on paired draws", {
  sim <- scribe_simulate("nbdm", n_genes = 40, n_cells = 400, n_components = 2, seed = 3)
  mix <- scribe_fit(sim$counts, model = "nbdm", n_components = 2, seed = 1, verbose = FALSE)
  de <- scribe_de(mix, component_a = 1, component_b = 2, n_samples = 200, seed = 1)
  expect_true(de@info$paired)
  # The simulator shifts r by exp(+-1.5) on a fifth of the genes: those separate.
  truth <- abs(log(sim$truth$r[1, ]) - log(sim$truth$r[2, ])) > 1
  expect_gt(auc(-de@stats$lfsr, truth), 0.9)
  w <- scribe_de(mix, mixture_weighted = TRUE, component_b = NULL, n_samples = 50, seed = 1,
                 fit_b = scribe_fit(sim$counts, model = "nbdm", seed = 1, verbose = FALSE))
  expect_true(is.na(w@info$components[1]))
  expect_error(scribe_de(mix, n_samples = 10), "component_a", class = "scribeR_input_error")
  expect_error(scribe_de(mix, component_a = 1, component_b = 1, n_samples = 10), "nothing to compare",
               class = "scribeR_input_error")
  expect_error(scribe_de(mix, component_a = 3, component_b = 1), "component_a", class = "scribeR_input_error")
})

test_that("parametric and empirical DE agree for Laplace fits", {
  skip_on_cran()
  sim <- scribe_simulate("nbdm", n_genes = 30, n_cells = 300, seed = 4)
  half <- seq_len(300) <= 150
  la <- suppressWarnings(scribe_fit(sim$counts[, half], model = "pln", inference_method = "laplace",
                                    latent_dim = 2, n_steps = 100, seed = 1, verbose = FALSE))
  lb <- suppressWarnings(scribe_fit(sim$counts[, !half], model = "pln", inference_method = "laplace",
                                    latent_dim = 2, n_steps = 100, seed = 1, verbose = FALSE))
  par <- scribe_de(la, lb)
  expect_identical(par@method, "parametric")
  emp <- scribe_de(la, lb, method = "empirical", n_samples = 4000, seed = 1)
  expect_gte(stats::cor(par@stats$delta_mean, emp@stats$delta_mean), 0.99)
  expect_lt(max(abs(par@stats$delta_sd / emp@stats$delta_sd - 1)), 0.1)
  # Gene-set balances: exact Gaussian moments against the draws.
  sets <- list(first = la@gene_names[1:5], last = la@gene_names[20:30])
  gp <- test_gene_sets(par, sets)
  ge <- test_gene_sets(emp, sets)
  expect_true(all(abs(gp$balance_mean - ge$balance_mean) < 4 * gp$balance_sd / sqrt(4000)))
  expect_equal(gp$balance_sd, ge$balance_sd, tolerance = 0.05)
  expect_error(scribe_de(la, la), "same fit", class = "scribeR_input_error")
})

test_that("log-normal VAE fits are compared as populations, also against a Laplace fit", {
  skip_on_cran()
  set.seed(4)
  g <- 15; n <- 250
  w <- matrix(rnorm(g * 2, sd = 0.4), g)
  mu <- runif(g, 1, 2)
  xa <- pln_counts(mu, w, n)
  xb <- pln_counts(mu + c(1.5, rep(0, g - 1)), w, n)
  vae <- function(x, n_steps = 600, ...) scribe_fit(x, model = "pln", inference_method = "vae", latent_dim = 2,
                                                     vae_encoder_hidden_dims = 16, n_steps = n_steps, seed = 1,
                                                     verbose = FALSE, ...)
  va <- vae(xa)
  vb <- vae(xb)
  de <- scribe_de(va, vb)
  expect_identical(de@method, "parametric")
  # g1 is 1.5 lower (log scale) in A; its CLR moves by about 1.5 (14/15 of it).
  top <- which.max(abs(de@stats$delta_mean))
  expect_identical(de@gene_names[top], "g1")
  expect_lt(abs(de@stats$delta_mean[top] + 1.4), 0.3)
  # The other genes move only through the CLR's centre.
  expect_lt(max(abs(de@stats$delta_mean[-top] - stats::median(de@stats$delta_mean[-top]))), 0.3)
  la <- scribe_fit(xa, model = "pln", inference_method = "laplace", latent_dim = 2, seed = 1, verbose = FALSE)
  mixed <- scribe_de(la, vb, method = "empirical", n_samples = 2000, seed = 1)
  expect_identical(mixed@gene_names[which.max(abs(mixed@stats$delta_mean))], "g1")
  flow <- vae(xa, vae_flow_type = "affine_coupling", vae_flow_num_layers = 2, n_steps = 20)
  expect_error(scribe_de(flow, vb), "flow prior", class = "scribeR_unsupported")
  nb <- scribe_fit(xa, model = "nbdm", seed = 1, verbose = FALSE)
  expect_error(scribe_de(va, nb), "log-normal", class = "scribeR_unsupported")
})

test_that("scribe_de argument errors name the argument", {
  f <- de_fits()
  other <- scribe_fit(f$sim$a[1:50, ], model = "nbdm", n_steps = 50, seed = 1, verbose = FALSE)
  expect_error(scribe_de(f$a, other), "same genes", class = "scribeR_input_error")
  expect_error(scribe_de(f$a, f$b, method = "parametric"), "Laplace", class = "scribeR_unsupported")
  expect_error(scribe_de(f$a, f$b, method = "bayes"), "method", class = "scribeR_input_error")
  expect_error(scribe_de(f$a, f$b, n_samples = 1), "n_samples", class = "scribeR_input_error")
  expect_error(scribe_de(f$a, f$b, labels = "x"), "labels", class = "scribeR_input_error")
  expect_error(scribe_de(f$a, f$b, gene_mask = c(TRUE, FALSE)), "gene_mask", class = "scribeR_input_error")
  expect_error(scribe_de(f$a, f$b, gene_mask = "nope"), "gene_mask", class = "scribeR_input_error")
  expect_error(scribe_de(f$a), "nothing to compare", class = "scribeR_input_error")
  expect_error(scribe_de(f$a, "fit"), "fit_b", class = "scribeR_input_error")
  de <- scribe_de(f$a, f$b, n_samples = 20, seed = 1)
  expect_error(as.data.frame(de, tau = -1), "tau", class = "scribeR_input_error")
  expect_error(call_de(de, target_pefp = 2), "target_pefp", class = "scribeR_input_error")
  expect_error(call_de("de"), "scribe_de", class = "scribeR_input_error")
})

test_that("DE results print, plot and write back", {
  f <- de_fits()
  de <- scribe_de(f$a, f$b, n_samples = 200, labels = c("ctrl", "stim"), seed = 1)
  expect_output(show(de), "empirical: ctrl vs stim, 200 genes, 200 draws")
  expect_output(show(de), "called at PEFP 0.05")
  df <- as.data.frame(de)
  expect_true(all(c("log_expr_ctrl", "log_expr_stim") %in% names(df)))
  skip_if_not_installed("ggplot2")
  expect_s3_class(plot_volcano(de), "ggplot")
  expect_s3_class(plot_ma(de, label = 0), "ggplot")
  skip_if_not_installed("SingleCellExperiment")
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = f$sim$a))
  sce <- add_scribe_fit(sce, de)
  rd <- SummarizedExperiment::rowData(sce)
  expect_equal(rd$scribe_de_lfsr, de@stats$lfsr)
  expect_identical(rd$scribe_de_is_de, unname(call_de(de, use_lfsr_tau = FALSE)))
  expect_identical(S4Vectors::metadata(sce)$scribe_de$labels, c("ctrl", "stim"))
  expect_error(add_scribe_fit(sce, de), "overwrite", class = "scribeR_input_error")
  expect_silent(add_scribe_fit(sce, de, overwrite = TRUE))
})

test_that("MCMC fits are compared on their draws", {
  skip_on_cran()
  s <- de_sim(5, n_genes = 40, n_cells = 150)
  mc <- function(x) scribe_fit(x, model = "nbdm", inference_method = "mcmc", n_samples = 150, n_warmup = 150,
                               n_chains = 1, seed = 1, verbose = FALSE)
  de <- scribe_de(mc(s$a), mc(s$b), n_samples = 150, n_samples_dirichlet = 0, seed = 1)
  expect_equal(dim(de@delta), c(150L, 40L))
  truth <- s$lfc != 0
  expect_gt(auc(-de@stats$lfsr, truth), 0.9)
  expect_equal(sign(de@stats$delta_mean[truth]), -sign(s$lfc[truth]))
})

test_that("paired designs combine per-donor differences", {
  skip_on_cran()
  # Three donors with donor-specific baselines on a third of the genes; the
  # condition shifts the first 10 % of genes in every donor.
  set.seed(8)
  g <- 100
  base <- exp(stats::rnorm(g, log(20), 0.7))
  lfc <- numeric(g)
  lfc[1:10] <- rep(c(log(3), -log(3)), 5)
  fits_a <- list()
  fits_b <- list()
  for (d in c("d1", "d2", "d3")) {
    donor <- base * exp(ifelse(seq_len(g) %% 3 == 0, stats::rnorm(g, 0, 1), 0))
    n_a <- if (d == "d1") 150 else 250
    a <- scribe_simulate("nbdm", n_genes = g, n_cells = n_a, r = donor, p = 0.3, seed = match(d, c("d1", "d2", "d3")))
    b <- scribe_simulate("nbdm", n_genes = g, n_cells = 250, r = donor * exp(lfc), p = 0.3, seed = 10 + match(d, c("d1", "d2", "d3")))
    fits_a[[d]] <- scribe_fit(a$counts, model = "nbdm", seed = 1, verbose = FALSE)
    fits_b[[d]] <- scribe_fit(b$counts, model = "nbdm", seed = 1, verbose = FALSE)
  }
  de <- scribe_de(fits_a, fits_b, n_samples = 300, pair_weighting = "harmonic", seed = 1)
  expect_equal(de@info$pairs$pair, c("d1", "d2", "d3"))
  h <- c(150 * 250 / 400, 250 * 250 / 500, 250 * 250 / 500)
  expect_equal(de@info$pairs$weight, h / sum(h))
  truth <- lfc != 0
  expect_gt(auc(-de@stats$lfsr, truth), 0.95)
  expect_equal(sign(de@stats$delta_mean[truth]), -sign(lfc[truth]))  # B carries the shift
  expect_output(show(de), "paired design: 3 pairs")
  expect_message(one <- scribe_de(fits_a[1:2], c(fits_b[1:2], list(extra = fits_b$d3)), n_samples = 50, seed = 2),
                 "extra")
  expect_equal(nrow(one@info$pairs), 2L)
  expect_error(scribe_de(fits_a[1:2], fits_b[2:3], incomplete_pairs = "error"), "one side only",
               class = "scribeR_input_error")
  expect_error(scribe_de(fits_a[1], fits_b[1]), "at least 2", class = "scribeR_input_error")
  expect_error(scribe_de(unname(fits_a), fits_b), "named list", class = "scribeR_input_error")
})

test_that("biological metrics compare absolute means and variances", {
  f <- de_fits()
  de <- scribe_de(f$a, f$b, n_samples = 300, biological = TRUE, seed = 1)
  df <- as.data.frame(de)
  expect_true(all(c("bio_lfc_mean", "bio_lfc_lfsr", "bio_lvr_mean", "bio_kl_mean", "mu_A", "mu_B") %in% names(df)))
  # The same posterior draws as get_posterior_samples(): LFC of their means.
  da <- get_posterior_samples(f$a, n_samples = 300, seed = 1)
  db <- get_posterior_samples(f$b, n_samples = 300, seed = 2)
  expect_equal(df$bio_lfc_mean, unname(colMeans(log(da$mu) - log(db$mu))), tolerance = 1e-10)
  expect_equal(df$mu_A, unname(colMeans(da$mu)), tolerance = 1e-10)
  # Shared p: the variance mu / (1 - p) moves with the mean, so LVR tracks LFC.
  expect_gt(stats::cor(df$bio_lvr_mean, df$bio_lfc_mean), 0.95)
  truth <- f$sim$lfc != 0
  expect_gt(auc(df$bio_kl_mean, truth), 0.95)
  expect_error(scribe_de(f$a, f$b, biological = NA), "biological", class = "scribeR_input_error")
})
