# The VAE engine. FD gradients of the whole loss (encoder, decoder, flow
# prior, KL, globals) for nbdm/nbvcp/zinb/zinbvcp and cluster recovery live
# in the core (src/rust/scribe-core/src/vae/tests.rs).

vae_fit <- function(x, ..., latent_dim = 2, vae_encoder_hidden_dims = c(16, 8), n_steps = 300) {
  scribe_fit(x, inference_method = "vae", latent_dim = latent_dim, vae_encoder_hidden_dims = vae_encoder_hidden_dims,
             vae_decoder_hidden_dims = c(8, 16), kl_annealing_warmup = 100, n_steps = n_steps,
             optimizer_config = list(name = "adam", step_size = 3e-3), seed = 1, verbose = FALSE, ...)
}

test_that("VAE embeddings separate the clusters of a mixture", {
  sim <- scribe_simulate("nbdm", n_genes = 60, n_cells = 450, n_components = 3, seed = 7)
  fit <- vae_fit(sim$counts, model = "nbdm", latent_dim = 3, n_steps = 2500, batch_size = 128)
  expect_s4_class(fit, "ScribeVAEResults")
  expect_output(print(fit), "VAE, latent_dim = 3")
  emb <- get_latent_embeddings(fit, sim$counts)
  expect_identical(dim(emb), c(450L, 3L))
  label <- sim$truth$assignment
  test <- seq(1, 450, by = 3)
  train <- setdiff(seq_len(450), test)
  pred <- vapply(test, function(c) {
    d <- colSums((t(emb[train, , drop = FALSE]) - emb[c, ])^2)
    votes <- table(factor(label[train][order(d)[1:10]], levels = unique(label)))
    as.integer(names(votes)[which.max(votes)])
  }, 1L)
  expect_gte(mean(pred == label[test]), 0.9)
  # Cells the fit never saw: the encoder reads their counts (per cell).
  expect_equal(get_latent_embeddings(fit, sim$counts[, 5:9]), emb[5:9, ])
  zs <- get_latent_samples_conditioned_on_data(fit, sim$counts[, 1:4], n_samples = 7)
  expect_identical(dim(zs), c(7L, 4L, 3L))
  expect_identical(zs, get_latent_samples_conditioned_on_data(fit, sim$counts[, 1:4], n_samples = 7))
  # The standard prior: N(0, I) draws.
  zp <- get_latent_samples(fit, n_samples = 4000)
  expect_equal(unname(colMeans(zp)), rep(0, 3), tolerance = 0.1)
  expect_equal(unname(apply(zp, 2, stats::sd)), rep(1, 3), tolerance = 0.1)
})

test_that("VAE fits of every NB model, with flow priors, are reproducible and saved whole", {
  sim <- sim_data("zinbvcp", n_genes = 15, n_cells = 60, seed = 2)
  for (model in c("nbvcp", "zinb", "zinbvcp")) {
    fit <- vae_fit(sim$counts, model = model, n_steps = 50)
    expect_true(all(is.finite(loss_history(fit))))
  }
  for (flow in c("affine_coupling", "coupling_spline", "maf")) {
    fit <- vae_fit(sim$counts, model = "nbvcp", vae_flow_type = flow, vae_flow_num_layers = 2,
                   vae_flow_hidden_dims = 8, n_steps = 50)
    expect_true(all(is.finite(loss_history(fit))))
    expect_gt(length(fit@params$prior_flow), 0)
    zp <- get_latent_samples(fit, n_samples = 500)
    expect_identical(dim(zp), c(500L, 2L))
    expect_true(all(is.finite(zp)))
  }
  one <- function(threads) vae_fit(sim$counts, model = "nbdm", n_steps = 60, batch_size = 20, num_threads = threads)
  a <- one(1L)
  expect_identical(a@params, one(1L)@params)
  expect_identical(a@params, one(2L)@params)
  path <- tempfile(fileext = ".rds")
  saveRDS(a, path)
  expect_identical(get_latent_embeddings(readRDS(path), sim$counts), get_latent_embeddings(a, sim$counts))
})

test_that("VAE embeddings are written back as a reduced dimension", {
  sim <- sim_data("nbdm", n_genes = 12, n_cells = 50, seed = 4)
  fit <- vae_fit(sim$counts, model = "nbdm", n_steps = 30)
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = sim$counts))
  sce <- add_scribe_fit(sce, fit)
  expect_equal(SingleCellExperiment::reducedDim(sce, "SCRIBE"), get_latent_embeddings(fit, sim$counts))
  expect_error(add_scribe_fit(sce, fit), "overwrite", class = "scribeR_input_error")
  expect_s4_class(add_scribe_fit(sce, fit, overwrite = TRUE), "SingleCellExperiment")
  skip_if_not_installed("ggplot2")
  SummarizedExperiment::colData(sce)$grp <- rep(c("a", "b"), 25)
  expect_s3_class(plot_latent(fit, sce, color_by = "grp"), "ggplot")
  expect_s3_class(plot_latent(fit, sim$counts), "ggplot")
  expect_error(plot_latent(fit, sce, color_by = "nope"), "color_by", class = "scribeR_input_error")
  expect_error(plot_latent(fit, sim$counts, color_by = 1:3), "color_by", class = "scribeR_input_error")
  if (requireNamespace("uwot", quietly = TRUE)) {
    expect_s3_class(plot_latent(fit, sim$counts, umap = TRUE), "ggplot")
  } else {
    expect_error(plot_latent(fit, sim$counts, umap = TRUE), "uwot", class = "scribeR_input_error")
  }
  skip_if_not_installed("SeuratObject")
  seu <- SeuratObject::CreateSeuratObject(counts = sim$counts)
  seu <- add_scribe_fit(seu, fit)
  expect_equal(unname(SeuratObject::Embeddings(seu, "scribe")), unname(get_latent_embeddings(fit, sim$counts)))
})

test_that("VAE arguments and unavailable verbs give clear errors", {
  sim <- sim_data("nbdm", n_genes = 10, n_cells = 40, seed = 3)
  m <- sim$counts
  expect_error(vae_fit(m, model = "nbdm", n_components = 2), "n_components", class = "scribeR_input_error")
  expect_error(vae_fit(m, model = "nbdm", vae_latent_dim = 3), "not both", class = "scribeR_input_error")
  expect_identical(vae_fit(m, model = "nbdm", latent_dim = NULL, vae_latent_dim = 3, n_steps = 5)@config$vae$latent_dim, 3)
  expect_error(vae_fit(m, model = "nbdm", vae_flow_type = "iaf"), "maf", class = "scribeR_input_error")
  expect_error(vae_fit(m, model = "nbdm", vae_flow_type = "planar"), "vae_flow_type", class = "scribeR_input_error")
  expect_error(vae_fit(m, model = "nbdm", vae_activation = "swish"), "vae_activation", class = "scribeR_input_error")
  expect_error(vae_fit(m, model = "nbdm", vae_encoder_hidden_dims = 0), "vae_encoder_hidden_dims",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, model = "lnmvcp", inference_method = "vae", verbose = FALSE), "capture prior",
               class = "scribeR_input_error")
  expect_error(scribe_fit(m, vae_flow_type = "maf", n_steps = 5, verbose = FALSE), "vae_flow_type",
               class = "scribeR_input_error")
  fit <- vae_fit(m, model = "nbdm", n_steps = 20)
  expect_error(get_map(fit), "x", class = "scribeR_input_error")
  expect_error(posterior_predictive(fit, n_samples = 2), "encoder", class = "scribeR_input_error")
  expect_error(log_likelihood(fit, m, split_components = TRUE), "mixtures", class = "scribeR_input_error")
  expect_error(log_likelihood(fit, m[, 1:30]), "cells", class = "scribeR_input_error")
  expect_error(denoise_counts(fit, m, genes = "nope"), "genes", class = "scribeR_input_error")
  expect_error(posterior_predictive(fit, n_samples = 2, cells = 41, x = m), "cells", class = "scribeR_input_error")
  expect_error(get_latent_embeddings(fit, m[1:4, ]), "genes", class = "scribeR_input_error")
  expect_error(fit[1:3, ], "subset", class = "scribeR_unsupported")
  expect_error(scribe_de(fit, vae_fit(m, model = "nbdm", n_steps = 5)), "VAE", class = "scribeR_unsupported")
  expect_error(goodness_of_fit(fit), "x", class = "scribeR_input_error")
  expect_error(get_latent_embeddings(get_map, m), "VAE fit|results", class = "scribeR_input_error")
})

test_that("VAE fits give log-likelihoods, predictive draws, denoised counts and decoded parameters", {
  sim <- sim_data("zinbvcp", n_genes = 30, n_cells = 120, seed = 4)
  m <- sim$counts
  fit <- vae_fit(m, model = "zinbvcp", n_steps = 200)
  # Point estimate: encoder means, the globals' guide modes; by cell and by gene add up.
  ll <- log_likelihood(fit, m)
  expect_named(ll, colnames(m))
  expect_true(all(is.finite(ll) & ll < 0))
  expect_equal(sum(log_likelihood(fit, m, by = "gene")), sum(ll), tolerance = 1e-10)
  draws <- log_likelihood(fit, m, n_samples = 4, seed = 2)
  expect_equal(dim(draws), c(4L, ncol(m)))
  expect_identical(draws, log_likelihood(fit, m, n_samples = 4, seed = 2))
  expect_false(isTRUE(all.equal(draws[1, ], draws[2, ])))
  # Decoded parameters: r and the gate per gene and cell, capture per cell.
  map <- get_map(fit, m)
  expect_equal(dim(map$r), dim(m))
  expect_equal(dimnames(map$gate), dimnames(m))
  expect_named(map$p_capture, colnames(m))
  expect_true(map$p > 0 && map$p < 1 && all(map$r > 0) && all(map$gate > 0 & map$gate < 1))
  # The point log-likelihood of cell 1 from its decoded parameters, by the pmf.
  p_hat <- map$p * map$p_capture[1] / (1 - map$p * (1 - map$p_capture[1]))
  u <- as.numeric(m[, 1])
  nb <- dnbinom(u, size = map$r[, 1], prob = 1 - p_hat)
  expect_equal(unname(ll[1]), sum(log(ifelse(u == 0, map$gate[, 1], 0) + (1 - map$gate[, 1]) * nb)),
               tolerance = 1e-8)
  # Predictive draws: reproducible, independent of chunking, cells in any order.
  pp <- posterior_predictive(fit, n_samples = 5, genes = 1:3, x = m, seed = 3)
  expect_equal(dim(pp), c(5L, ncol(m), 3L))
  expect_identical(pp, posterior_predictive(fit, n_samples = 5, genes = 1:3, x = m, seed = 3, chunk_cells = 17))
  sub <- posterior_predictive(fit, n_samples = 5, genes = 1:3, cells = c(9, 2), x = m, seed = 3)
  expect_identical(unname(sub), unname(pp[, c(9, 2), , drop = FALSE]))
  expect_true(all(pp >= 0 & pp == round(pp)))
  bio <- posterior_predictive(fit, n_samples = 20, x = m, biological = TRUE, use_map = TRUE, seed = 1)
  expect_gt(mean(bio), mean(posterior_predictive(fit, n_samples = 20, x = m, use_map = TRUE, seed = 1)))
  # Denoising undoes capture: means exceed the counts where capture < 1.
  den <- denoise_counts(fit, m, genes = c("gene1", "gene2"))
  expect_equal(dim(den), c(2L, ncol(m)))
  expect_true(all(den >= as.matrix(m[1:2, ]) - 1e-9))
  dv <- denoise_counts(fit, m, method = "sample", n_samples = 3, return_variance = TRUE, seed = 1)
  expect_equal(dim(dv$denoised), c(3L, nrow(m), ncol(m)))
  expect_true(all(dv$denoised == round(dv$denoised) & dv$variance >= 0))
  # No capture, no gate: nothing to denoise.
  nb_fit <- vae_fit(sim_data("nbdm", n_genes = 10, n_cells = 40, seed = 3)$counts, model = "nbdm", n_steps = 20)
  nb_m <- sim_data("nbdm", n_genes = 10, n_cells = 40, seed = 3)$counts
  expect_equal(unname(denoise_counts(nb_fit, nb_m)), unname(as.matrix(nb_m)))
  # Model comparison reads the same log-likelihood draws.
  svi <- scribe_fit(m, model = "zinbvcp", n_steps = 300, seed = 1, verbose = FALSE)
  expect_error(compare_models(list(vae = fit, svi = svi), m, n_samples = 20, seed = 1), "per-cell latent")
  cmp <- suppressWarnings(compare_models(list(vae = fit, svi = svi), m, by = "gene", n_samples = 20, seed = 1))
  expect_setequal(cmp$table$model, c("vae", "svi"))
})

test_that("VAE input transforms and standardization: new cells are read with the training statistics", {
  sim <- sim_data("nbvcp", n_genes = 25, n_cells = 90, seed = 6)
  m <- sim$counts
  for (tr in c("clr", "log1p_prop")) {
    fit <- vae_fit(m, model = "nbvcp", vae_input_transform = tr, vae_standardize = TRUE, n_steps = 30)
    expect_identical(fit@config$vae$input_transform, tr)
    expect_length(fit@params$input_mean, nrow(m))
    expect_true(all(fit@params$input_std >= 1e-3))
    emb <- get_latent_embeddings(fit, m)
    # A subset of cells is standardized by the training cells, not by itself.
    expect_equal(get_latent_embeddings(fit, m[, 11:30]), emb[11:30, ], tolerance = 1e-12)
    expect_true(all(is.finite(log_likelihood(fit, m))))
  }
  plain <- vae_fit(m, model = "nbvcp", n_steps = 30)
  expect_null(plain@params$input_mean)
  expect_false(isTRUE(all.equal(get_latent_embeddings(plain, m), emb)))
  expect_error(vae_fit(m, model = "nbvcp", vae_input_transform = "log2"), "vae_input_transform",
               class = "scribeR_input_error")
  expect_error(vae_fit(m, model = "nbvcp", vae_standardize = "yes"), "vae_standardize", class = "scribeR_input_error")
  expect_error(scribe_fit(m, vae_input_transform = "clr", n_steps = 5, verbose = FALSE), "vae_input_transform",
               class = "scribeR_input_error")
})

test_that("a VAE's global p and mean expression agree with the SVI fit of the same model", {
  # With per-cell r the VAE's p measures overdispersion left after the
  # embedding, so it need not equal SVI's; on data without cell structure
  # the two agree closely (measured: p 0.585 vs 0.595, truth 0.6; mean
  # expression within 1.6 % at the median).
  sim <- scribe_simulate("nbdm", n_genes = 60, n_cells = 600, seed = 3)
  m <- sim$counts
  vae <- scribe_fit(m, model = "nbdm", inference_method = "vae", latent_dim = 2,
                    vae_encoder_hidden_dims = c(32, 16), vae_decoder_hidden_dims = c(16, 32), n_steps = 2000,
                    batch_size = 200, kl_annealing_warmup = 300, optimizer_config = list(name = "adam", step_size = 3e-3),
                    seed = 1, verbose = FALSE)
  svi <- scribe_fit(m, model = "nbdm", seed = 1, verbose = FALSE)
  mv <- get_map(vae, m)
  ms <- get_map(svi)
  mu_vae <- rowMeans(mv$r) * mv$p / (1 - mv$p)
  expect_lt(abs(mv$p - ms$p), 0.03)
  expect_gt(cor(log(mu_vae), log(ms$mu)), 0.995)
  expect_lt(median(abs(mu_vae / ms$mu - 1)), 0.04)
})

test_that("VAE posterior draws and per-cell fractions", {
  sim <- sim_data("zinbvcp", n_genes = 20, n_cells = 60, seed = 8)
  m <- sim$counts
  fit <- vae_fit(m, model = "zinbvcp", n_steps = 50)
  d <- get_posterior_samples(fit, x = m, n_samples = 4, cells = c("cell3", "cell1"), genes = 2:4, seed = 1)
  expect_length(d$p, 4)
  expect_equal(dimnames(d$p_capture), list(NULL, c("cell3", "cell1")))
  expect_equal(dim(d$r), c(4L, 2L, 3L))
  expect_equal(dimnames(d$gate)[[3]], rownames(m)[2:4])
  expect_true(all(d$r > 0 & d$gate > 0 & d$gate < 1) && all(d$p_capture > 0 & d$p_capture < 1))
  # The same draws whatever cells are asked for.
  full <- get_posterior_samples(fit, x = m, n_samples = 4, seed = 1)
  expect_equal(full$r[, c(3, 1), 2:4], d$r, ignore_attr = TRUE)
  expect_identical(full$p, d$p)
  fr <- normalize_counts(fit, m)
  expect_equal(unname(colSums(fr)), rep(1, ncol(m)), tolerance = 1e-12)
  map <- get_map(fit, m)
  expect_equal(fr[, 5], (map$r[, 5] + m[, 5]) / (sum(map$r[, 5]) + sum(m[, 5])), tolerance = 1e-12)
  dr <- normalize_counts(fit, m, n_samples = 3, genes = 1:2, seed = 2)
  expect_equal(dim(dr), c(3L, 2L, ncol(m)))
  expect_error(normalize_counts(fit), "x", class = "scribeR_input_error")
  expect_error(normalize_counts(fit, m, n_samples_dirichlet = 5), "population", class = "scribeR_input_error")
  expect_error(get_posterior_samples(fit, n_samples = 2), "encoder", class = "scribeR_input_error")
})

test_that("VAE fits of the mean parameterizations decode the mean and keep r = mu (1 - p) / p", {
  sim <- sim_data("nbvcp", n_genes = 20, n_cells = 80, seed = 9)
  m <- sim$counts
  for (param in c("mean_prob", "mean_odds")) {
    fit <- vae_fit(m, model = "nbvcp", parameterization = param, n_steps = 150)
    expect_output(show(fit), param)
    expect_true(all(is.finite(fit@loss_history)))
    map <- get_map(fit, m)
    expect_true(map$p > 0 && map$p < 1 && all(map$r > 0) && all(map$p_capture > 0 & map$p_capture < 1))
    ll <- log_likelihood(fit, m)
    p_hat <- map$p * map$p_capture[2] / (1 - map$p * (1 - map$p_capture[2]))
    expect_equal(unname(ll[2]), sum(dnbinom(as.numeric(m[, 2]), size = map$r[, 2], prob = 1 - p_hat, log = TRUE)),
                 tolerance = 1e-8)
  }
})

# PLN and NBLN: a linear decoder over latent log-rates. Recovery of the
# mean, the loading span and NBLN's dispersions on data simulated from the
# models, and FD gradients of the loss, live in the core
# (src/rust/scribe-core/src/vae/lognormal_tests.rs).
ln_counts <- function() {
  set.seed(3)
  g <- 30; n <- 200
  w <- matrix(rnorm(g * 2, sd = 0.5), g)
  pln_counts(runif(g, 0.5, 2), w, n)
}

ln_vae <- function(x, model = "pln", ...) {
  scribe_fit(x, model = model, inference_method = "vae", latent_dim = 2, vae_encoder_hidden_dims = c(16, 8),
             n_steps = 300, kl_annealing_warmup = 100, optimizer_config = list(name = "adam", step_size = 3e-3),
             seed = 1, verbose = FALSE, ...)
}

test_that("PLN and NBLN VAE fits: parameters, log-likelihoods that are the pmf at the decoded log-rates", {
  x <- ln_counts()
  u <- as.matrix(x)
  for (model in c("pln", "nbln")) {
    fit <- ln_vae(x, model)
    expect_s4_class(fit, "ScribeVAEResults")
    expect_output(print(fit), paste0(model, ", linear decoder"))
    expect_true(fit@config$vae$standardize)
    m <- get_map(fit, x)
    expect_identical(dim(m$W), c(30L, 2L))
    expect_identical(dim(m$latents), c(30L, 200L))
    expect_true(all(m$d > 0))
    expect_identical(!is.null(m$r), model == "nbln")
    # The point log-rates are mu + W times each cell's encoder mean.
    emb <- get_latent_embeddings(fit, x)
    expect_equal(m$latents, m$mu + m$W %*% t(emb), ignore_attr = TRUE, tolerance = 1e-8)
    dens <- if (model == "pln") dpois(u, exp(m$latents), log = TRUE) else
      dnbinom(u, size = m$r, mu = exp(m$latents), log = TRUE)
    expect_equal(log_likelihood(fit, x), colSums(dens), tolerance = 1e-8)
    expect_equal(unname(log_likelihood(fit, x, by = "gene")), unname(rowSums(dens)), tolerance = 1e-8)
    ld <- log_likelihood(fit, x, n_samples = 3, seed = 2)
    expect_identical(dim(ld), c(3L, 200L))
    expect_true(all(is.finite(ld)))
  }
})

test_that("PLN VAE: draws, predictive counts, reproducibility, saveRDS and write-back", {
  x <- ln_counts()
  fit <- ln_vae(x)
  s <- get_posterior_samples(fit, n_samples = 400, x = x, cells = c(2, 5), genes = 1:3, seed = 4)
  expect_identical(dim(s$latents), c(400L, 2L, 3L))
  m <- get_map(fit, x)
  # Draws spread around the point log-rates.
  expect_lt(max(abs(apply(s$latents, c(2, 3), mean) - t(m$latents[1:3, c(2, 5)]))), 0.1)
  pp <- posterior_predictive(fit, n_samples = 30, x = x, seed = 1)
  expect_identical(dim(pp), c(30L, 200L, 30L))
  expect_true(all(pp >= 0 & pp == round(pp)))
  # Predictive means track the observed gene means.
  expect_gt(cor(colMeans(apply(pp, c(2, 3), mean)), Matrix::rowMeans(x)), 0.95)
  expect_identical(posterior_predictive(fit, n_samples = 5, cells = 1:50, x = x, seed = 2, chunk_cells = 7),
                   posterior_predictive(fit, n_samples = 5, cells = 1:50, x = x, seed = 2))
  expect_identical(dim(posterior_predictive(fit, n_samples = 4, use_map = TRUE, x = x)), c(4L, 200L, 30L))
  expect_error(posterior_predictive(fit, n_samples = 4, biological = TRUE, x = x), "biological",
               class = "scribeR_input_error")
  expect_identical(ln_vae(x, num_threads = 2)@params, fit@params)
  path <- tempfile(fileext = ".rds")
  saveRDS(fit, path)
  expect_identical(log_likelihood(readRDS(path), x), log_likelihood(fit, x))
  sce <- add_scribe_fit(SingleCellExperiment::SingleCellExperiment(list(counts = x)), fit)
  expect_identical(dim(SingleCellExperiment::reducedDim(sce, "SCRIBE")), c(200L, 2L))
})

test_that("log-normal VAEs refuse what they do not read, by name", {
  x <- ln_counts()
  expect_error(ln_vae(x, vae_decoder_hidden_dims = c(8, 8)), "vae_decoder_hidden_dims", class = "scribeR_input_error")
  expect_error(ln_vae(x, parameterization = "mean_odds"), "parameterization", class = "scribeR_input_error")
  expect_error(ln_vae(x, priors = list(loadings = list(type = "gaussian"))), "decoder", class = "scribeR_unsupported")
  expect_error(ln_vae(x, priors = list(r = c(1, 1))), "capture prior only", class = "scribeR_unsupported")
  expect_error(ln_vae(x, priors = list(capture_efficiency = c(7, -1))), "sigma", class = "scribeR_input_error")
  expect_error(ln_vae(x, "lnm", priors = list(capture_efficiency = c(7, 1))), "lnmvcp", class = "scribeR_input_error")
  expect_error(ln_vae(x, "lnmvcp"), "capture prior", class = "scribeR_input_error")
  expect_error(ln_vae(x, latent_dim = 40), "latent_dim")
  fit <- ln_vae(x)
  expect_error(denoise_counts(fit, x), "not available", class = "scribeR_unsupported")
  expect_error(scribe_fit(x, model = "pln", verbose = FALSE), "vae", class = "scribeR_input_error")
})

test_that("LNM VAE fits: log-ratios against a reference, multinomial and NB-of-total log-likelihoods", {
  x <- ln_counts()
  u <- as.matrix(x)
  fit <- ln_vae(x, "lnm")
  expect_output(print(fit), "lnm, linear decoder")
  m <- get_map(fit, x)
  # The reference is the gene with the most counts; the latents cover the others.
  expect_identical(m$reference, rownames(x)[which.max(Matrix::rowSums(x))])
  coords <- setdiff(rownames(x), m$reference)
  expect_identical(rownames(m$W), coords)
  expect_identical(dim(m$latents), c(29L, 200L))
  expect_gt(m$mu_T, 0)
  expect_gt(m$r_T, 0)
  logits <- rbind(m$latents, 0)
  rownames(logits)[30] <- m$reference
  logits <- logits[rownames(x), ]
  want <- vapply(seq_len(ncol(u)), function(c) {
    p <- exp(logits[, c] - max(logits[, c]))
    dmultinom(u[, c], prob = p / sum(p), log = TRUE) + dnbinom(sum(u[, c]), size = m$r_T, mu = m$mu_T, log = TRUE)
  }, 0)
  expect_equal(unname(log_likelihood(fit, x)), want, tolerance = 1e-8)
  pp <- posterior_predictive(fit, n_samples = 20, genes = 1:4, x = x, seed = 1)
  expect_identical(dim(pp), c(20L, 200L, 4L))
  s <- get_posterior_samples(fit, n_samples = 3, x = x, cells = 1:2, genes = coords[1:2])
  expect_identical(dimnames(s$latents)[[3]], coords[1:2])
  expect_error(get_posterior_samples(fit, n_samples = 3, x = x, genes = m$reference), "latent coordinates",
               class = "scribeR_input_error")
})

test_that("log-normal VAEs with capture: each cell's capture offsets its log-rates or scales its total", {
  x <- ln_counts()
  u <- as.matrix(x)
  lib <- colSums(u)
  prior <- list(capture_efficiency = c(log(2 * mean(lib)), 0.5))
  fit <- ln_vae(x, "pln", priors = prior)
  # The encoder reads proportions when capture is modelled (as in the original).
  expect_identical(fit@config$vae$input_transform, "log1p_prop")
  expect_identical(ln_vae(x, "pln", priors = prior, vae_input_transform = "sqrt")@config$vae$input_transform, "sqrt")
  m <- get_map(fit, x)
  expect_identical(names(m$eta_capture), colnames(x))
  expect_true(all(m$eta_capture > 0))
  expect_equal(m$p_capture, exp(-m$eta_capture))
  # Cells with smaller totals are read as less well captured.
  expect_gt(cor(m$eta_capture, -log(lib)), 0.9)
  dens <- dpois(u, exp(sweep(m$latents, 2, m$eta_capture)), log = TRUE)
  expect_equal(log_likelihood(fit, x), colSums(dens), tolerance = 1e-8)
  s <- get_posterior_samples(fit, n_samples = 300, x = x, cells = c(3, 7), genes = 1:2, seed = 2)
  expect_identical(dim(s$eta_capture), c(300L, 2L))
  expect_identical(colnames(s$eta_capture), colnames(x)[c(3, 7)])
  expect_lt(max(abs(colMeans(s$eta_capture) - m$eta_capture[c(3, 7)])), 0.05)
  expect_true(all(is.finite(log_likelihood(fit, x, n_samples = 2, seed = 1))))

  vcp <- ln_vae(x, "lnmvcp", priors = prior)
  expect_output(print(vcp), "lnmvcp, linear decoder")
  mv <- get_map(vcp, x)
  # mu_T is the total at full capture: about M0, not the observed mean total.
  expect_gt(mv$mu_T, 1.3 * mean(lib))
  logits <- rbind(mv$latents, 0)
  rownames(logits)[30] <- mv$reference
  logits <- logits[rownames(x), ]
  want <- vapply(seq_len(ncol(u)), function(c) {
    p <- exp(logits[, c] - max(logits[, c]))
    dmultinom(u[, c], prob = p / sum(p), log = TRUE) +
      dnbinom(lib[c], size = mv$r_T, mu = mv$mu_T * mv$p_capture[c], log = TRUE)
  }, 0)
  expect_equal(unname(log_likelihood(vcp, x)), want, tolerance = 1e-8)
  pp <- posterior_predictive(vcp, n_samples = 10, genes = 1:3, x = x, seed = 1)
  expect_identical(dim(pp), c(10L, 200L, 3L))
  expect_error(log_likelihood(vcp, x[, 1:50]), "cells", class = "scribeR_input_error")
})

test_that("cells a VAE fit dropped as empty encode, and write-back marks them NA", {
  x <- ln_counts()[, 1:60]
  x <- cbind(x, Matrix::Matrix(0, nrow(x), 1, sparse = TRUE, dimnames = list(NULL, "empty")))
  fit <- vae_fit(x, model = "nbdm", n_steps = 20, drop_empty = TRUE)
  expect_identical(fit@dropped_cells, "empty")
  emb <- get_latent_embeddings(fit, x)
  expect_true(all(is.finite(emb)))
  sce <- add_scribe_fit(SingleCellExperiment::SingleCellExperiment(list(counts = x)), fit)
  rd <- SingleCellExperiment::reducedDim(sce, "SCRIBE")
  expect_true(all(is.na(rd["empty", ])))
  expect_false(anyNA(rd[1:60, ]))
})
