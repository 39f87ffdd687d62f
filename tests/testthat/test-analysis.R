# Downstream analyses: log-likelihoods, component probabilities, denoising,
# normalization, posterior predictive draws.

sim_v <- sim_data("nbvcp", n_genes = 60, n_cells = 400)
fit_v <- scribe_fit(sim_v$counts, model = "nbvcp", n_steps = 800, seed = 2, verbose = FALSE)

test_that("log-likelihoods by cell and by gene add up to the same total", {
  lc <- log_likelihood(fit_v, sim_v$counts, by = "cell")
  lg <- log_likelihood(fit_v, sim_v$counts, by = "gene")
  expect_named(lc, colnames(sim_v$counts))
  expect_named(lg, rownames(sim_v$counts))
  expect_equal(sum(lc), sum(lg), tolerance = 1e-10)
  d <- log_likelihood(fit_v, sim_v$counts, n_samples = 15, seed = 1)
  expect_identical(dim(d), c(15L, 400L))
  expect_true(all(is.finite(d)))
  # At the mode the log-likelihood exceeds that of typical draws by about
  # d/2 for d parameters (Gaussian posterior): positive, of order d.
  n_par <- 60 + 1 + 400
  gap <- sum(lc) - median(rowSums(d))
  expect_gt(gap, 0)
  expect_lt(gap, 2 * n_par)
})

test_that("posterior predictive intervals cover the observed gene means", {
  ppc <- posterior_predictive(fit_v, n_samples = 200, seed = 3)
  expect_identical(dim(ppc), c(200L, 400L, 60L))
  draw_means <- apply(ppc, c(1, 3), mean)
  lo <- apply(draw_means, 2, stats::quantile, 0.025)
  hi <- apply(draw_means, 2, stats::quantile, 0.975)
  obs <- Matrix::rowMeans(sim_v$counts)
  covered <- mean(obs >= lo & obs <= hi)
  expect_gt(covered, 0.85)
})

test_that("predictive draws do not depend on chunking, and honour gene and cell subsets", {
  a <- posterior_predictive(fit_v, n_samples = 5, genes = c("gene3", "gene7"), seed = 1, chunk_cells = 1000)
  b <- posterior_predictive(fit_v, n_samples = 5, genes = c("gene3", "gene7"), seed = 1, chunk_cells = 7)
  expect_identical(a, b)
  c1 <- posterior_predictive(fit_v, n_samples = 5, genes = c(3, 7), cells = 10:20, seed = 1)
  expect_identical(unname(c1), unname(a[, 10:20, ]))
  bio <- posterior_predictive(fit_v, n_samples = 50, genes = "gene3", biological = TRUE, seed = 1)
  expect_gt(mean(bio), mean(a[, , "gene3"]))
  expect_error(posterior_predictive(fit_v, genes = "nope"), "not genes of the fit", class = "scribeR_input_error")
  # MAP predictive draws: parameters fixed, so gene means vary less across draws.
  mp <- posterior_predictive(fit_v, n_samples = 60, genes = 1:10, use_map = TRUE, seed = 2)
  pp <- posterior_predictive(fit_v, n_samples = 60, genes = 1:10, seed = 2)
  expect_identical(dim(mp), c(60L, 400L, 10L))
  expect_lt(mean(apply(apply(mp, c(1, 3), mean), 2, sd)), mean(apply(apply(pp, c(1, 3), mean), 2, sd)))
})

test_that("denoising keeps counts without capture and inflates them with it", {
  sim <- sim_data("nbdm", n_genes = 20, n_cells = 50)
  f <- quick_fit(sim$counts, model = "nbdm")
  expect_equal(denoise_counts(f, sim$counts), as.matrix(sim$counts))
  den <- denoise_counts(fit_v, sim_v$counts, genes = c("gene1", "gene2"), return_variance = TRUE)
  expect_identical(dim(den$denoised), c(2L, 400L))
  obs <- as.matrix(sim_v$counts[c("gene1", "gene2"), ])
  expect_true(all(den$denoised >= obs))
  expect_true(all(den$variance >= 0))
  # MAP mean formula: (u + r pp) / q with pp = p (1 - nu).
  m <- get_map(fit_v)
  pp <- m$p * (1 - m$p_capture[1])
  expect_equal(den$denoised[1, 1], unname((obs[1, 1] + m$r[["gene1"]] * pp) / (1 - pp)))
  draws <- denoise_counts(fit_v, sim_v$counts, method = "sample", n_samples = 4, genes = 1:3, seed = 1)
  expect_identical(dim(draws), c(4L, 3L, 400L))
  expect_true(all(draws == round(draws)))
  expect_error(denoise_counts(fit_v, sim_v$counts, method = "median"), "method", class = "scribeR_input_error")
})

test_that("zero-inflated zeros are denoised through the gate posterior", {
  sim <- sim_data("zinb", n_genes = 30, n_cells = 200)
  f <- scribe_fit(sim$counts, model = "zinb", n_steps = 300, seed = 1, verbose = FALSE)
  den <- denoise_counts(f, sim$counts)
  zero <- as.matrix(sim$counts) == 0
  expect_true(all(den[!zero] == as.matrix(sim$counts)[!zero]))
  m <- get_map(f)
  g <- 1
  w <- m$gate[g] / (m$gate[g] + (1 - m$gate[g]) * (1 - m$p)^m$r[g])
  expect_equal(unique(den[g, zero[g, ]]), unname(w * m$r[g] * m$p / (1 - m$p)))
})

test_that("normalization returns compositions", {
  rho <- normalize_counts(fit_v)
  expect_equal(sum(rho), 1)
  m <- get_map(fit_v)
  expect_equal(rho, m$r / sum(m$r))
  d <- normalize_counts(fit_v, n_samples = 10, n_samples_dirichlet = 3, seed = 1)
  expect_identical(dim(d), c(30L, 60L))
  expect_equal(rowSums(d), rep(1, 30))
  # Per-cell fractions: posterior mean (r + u_c) / (sum(r) + L_c) at the MAP.
  pc <- normalize_counts(fit_v, sim_v$counts)
  expect_identical(dim(pc), c(60L, 400L))
  expect_equal(unname(colSums(pc)), rep(1, 400))
  u <- as.matrix(sim_v$counts)
  expect_equal(pc[, 7], (m$r + u[, 7]) / (sum(m$r) + sum(u[, 7])))
  pd <- normalize_counts(fit_v, sim_v$counts, n_samples = 5, genes = c("gene1", "gene2"), seed = 1)
  expect_identical(dim(pd), c(5L, 2L, 400L))
  expect_true(all(pd > 0 & pd < 1))
  expect_error(normalize_counts(fit_v, genes = "gene1"), "per-cell", class = "scribeR_input_error")
})

test_that("mixture component probabilities recover the simulated types", {
  sim <- scribe_simulate("nbdm", n_genes = 100, n_cells = 600, n_components = 2, seed = 8)
  f <- scribe_fit(sim$counts, model = "nbdm", n_components = 2, n_steps = 800, seed = 1, verbose = FALSE)
  prob <- cell_type_probabilities(f, sim$counts)
  expect_equal(unname(rowSums(prob$probabilities)), rep(1, 600))
  agree <- max(mean(prob$assignment == sim$truth$assignment), mean(prob$assignment != sim$truth$assignment))
  expect_gt(agree, 0.9)
  expect_true(all(prob$entropy >= 0 & prob$entropy <= log(2) + 1e-12))
  post <- cell_type_probabilities(f, sim$counts, n_samples = 5, seed = 1)
  expect_identical(dim(post$samples), c(5L, 600L, 2L))
  ls <- log_likelihood(f, sim$counts, split_components = TRUE)
  expect_identical(dim(ls), c(600L, 2L))
  expect_error(cell_type_probabilities(fit_v, sim_v$counts), "not a mixture", class = "scribeR_input_error")
})

test_that("data that do not match the fit are rejected", {
  expect_error(log_likelihood(fit_v, sim_v$counts[1:10, ]), "genes", class = "scribeR_input_error")
  expect_error(denoise_counts(fit_v, sim_v$counts[, 1:10]), "cells", class = "scribeR_input_error")
  other <- sim_v$counts
  rownames(other)[1] <- "renamed"
  expect_error(log_likelihood(fit_v, other), "genes", class = "scribeR_input_error")
})

test_that("subsetting a fit keeps the matching parameters", {
  small <- fit_v[c("gene2", "gene5"), 11:30]
  expect_identical(small@gene_names, c("gene2", "gene5"))
  expect_length(small@cell_names, 20)
  m_all <- get_map(fit_v)
  m_small <- get_map(small)
  expect_equal(m_small$r, m_all$r[c("gene2", "gene5")])
  expect_equal(m_small$p_capture, m_all$p_capture[11:30])
  # Gene-wise log-likelihoods of the subset equal those of the full fit on those cells' data.
  sub_counts <- sim_v$counts[c("gene2", "gene5"), 11:30]
  expect_equal(sum(log_likelihood(small, sub_counts, by = "cell")),
               sum(log_likelihood(small, sub_counts, by = "gene")))
  mix <- scribe_simulate("nbdm", n_genes = 10, n_cells = 40, n_components = 2, seed = 1)
  fm <- quick_fit(mix$counts, model = "nbdm", n_components = 2)
  sm <- fm[c(2, 9), ]
  expect_equal(get_map(sm)$r, get_map(fm)$r[, c(2, 9)])
  expect_error(fit_v["nope", ], "not genes", class = "scribeR_input_error")
})

test_that("plots are ggplot objects", {
  skip_if_not_installed("ggplot2")
  expect_s3_class(plot_ppc(fit_v, sim_v$counts, genes = c("gene1", "gene2"), n_samples = 20, seed = 1), "ggplot")
  expect_s3_class(plot_mean_variance(fit_v, sim_v$counts, seed = 1), "ggplot")
  expect_s3_class(plot_capture(fit_v, sim_v$counts), "ggplot")
  sim <- scribe_simulate("nbdm", n_genes = 20, n_cells = 80, n_components = 2, seed = 2)
  f <- quick_fit(sim$counts, model = "nbdm", n_components = 2)
  expect_s3_class(plot_mixture(f, sim$counts), "ggplot")
  expect_error(plot_capture(f, sim$counts), "no capture", class = "scribeR_input_error")
})

test_that("write-back can add denoised counts, and works for Seurat objects", {
  skip_if_not_installed("SingleCellExperiment")
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = sim_v$counts))
  out <- add_scribe_fit(sce, fit_v, denoised = TRUE)
  expect_equal(SummarizedExperiment::assay(out, "scribe_denoised"), denoise_counts(fit_v, sim_v$counts))
  skip_if_not_installed("SeuratObject")
  so <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = sim_v$counts))
  so2 <- add_scribe_fit(so, fit_v, denoised = TRUE)
  expect_equal(so2[["RNA"]][[]]$scribe_r, unname(get_map(fit_v)$r))
  expect_equal(unname(so2$scribe_p_hat), unname(get_map(fit_v)$p_hat))
  expect_true("scribe_denoised" %in% SeuratObject::Assays(so2))
  expect_error(add_scribe_fit(so2, fit_v), "overwrite", class = "scribeR_input_error")
  expect_equal(SeuratObject::Misc(so2, "scribe")$p, get_map(fit_v)$p)
})
