# Dataset hierarchies (dataset_key): per-dataset means and probabilities
# shrunk toward a common location. Likelihood gradients and the recovery of
# batch effects with shrinkage are tested in the core (models/nb/kernels.rs,
# tests/recovery.rs).

# Two datasets of the same genes; dataset B has 3x the mean of the first
# `n_shift` genes.
dataset_sim <- function(model = "nbvcp", n_genes = 40, n_cells = c(200, 150), n_shift = 10) {
  key <- paste("datasets", model, n_genes, paste(n_cells, collapse = "-"), n_shift)
  if (is.null(sim_cache[[key]])) {
    a <- scribe_simulate(model, n_genes = n_genes, n_cells = n_cells[1], seed = 11)
    r2 <- a$truth$r
    r2[seq_len(n_shift)] <- 3 * r2[seq_len(n_shift)]
    b <- scribe_simulate(model, n_genes = n_genes, n_cells = n_cells[2], r = r2, p = a$truth$p, seed = 12)
    m <- cbind(a$counts, b$counts)
    colnames(m) <- paste0("cell", seq_len(ncol(m)))
    sim_cache[[key]] <- list(counts = m, batch = rep(c("A", "B"), n_cells), n_shift = n_shift)
  }
  sim_cache[[key]]
}

dataset_fit <- function(x, ..., n_steps = 2000) {
  scribe_fit(x, ..., n_steps = n_steps, seed = 1, verbose = FALSE,
             optimizer_config = list(name = "adam", step_size = 0.01))
}

test_that("a dataset mean hierarchy finds the batch effect and names the datasets", {
  sim <- dataset_sim()
  fit <- dataset_fit(sim$counts, model = "nbvcp", dataset_key = sim$batch)
  expect_true(fit@model$unconstrained)
  map <- get_map(fit)
  expect_equal(dim(map$r), c(2L, nrow(sim$counts)))
  expect_equal(rownames(map$r), c("A", "B"))
  lfc <- log(map$r["B", ] / map$r["A", ])
  shifted <- seq_len(sim$n_shift)
  expect_gt(mean(lfc[shifted]), 0.8)
  expect_lt(abs(mean(lfc[-shifted])), 0.15)
  expect_true("log_r_dataset_scale" %in% names(map))
  expect_output(print(fit), "datasets: 2 by dataset \\(A, B\\)")
  expect_output(print(fit), "r \\(genes x 2 datasets\\)")
  draws <- get_posterior_samples(fit, n_samples = 5)
  expect_equal(dim(draws$r), c(5L, 2L, nrow(sim$counts)))
})

test_that("every downstream verb reads each cell's own dataset", {
  sim <- dataset_sim()
  m <- sim$counts
  fit <- dataset_fit(m, model = "nbvcp", dataset_key = sim$batch)
  shifted <- seq_len(sim$n_shift)
  pp <- posterior_predictive(fit, n_samples = 20, seed = 1)
  in_b <- sim$batch == "B"
  # Predicted means of the shifted genes follow the cells' dataset.
  ratio <- colMeans(apply(pp[, in_b, shifted], c(2, 3), mean)) / colMeans(apply(pp[, !in_b, shifted], c(2, 3), mean))
  observed <- Matrix::rowMeans(m[shifted, in_b]) / Matrix::rowMeans(m[shifted, !in_b])
  expect_lt(stats::median(abs(log(ratio) - log(observed))), 0.25)
  expect_gt(stats::median(ratio), 2)
  ll_cell <- log_likelihood(fit, m)
  ll_gene <- log_likelihood(fit, m, by = "gene")
  expect_true(all(is.finite(ll_cell)))
  # Each cell is read against its own dataset: the two views add up to the same total.
  expect_equal(sum(ll_cell), sum(ll_gene), tolerance = 1e-8)
  # Reading every cell against dataset A's parameters fits the B cells worse.
  one <- dataset_fit(m, model = "nbvcp")
  expect_gt(sum(log_likelihood(fit, m)), sum(log_likelihood(one, m)))
  dn <- denoise_counts(fit, m)
  expect_equal(dim(dn), dim(m))
  expect_true(all(is.finite(dn)))
  gof <- goodness_of_fit(fit, m, n_samples = 10)
  expect_s3_class(gof, "scribe_gof")
  if (requireNamespace("SingleCellExperiment", quietly = TRUE)) {
    sce <- SingleCellExperiment::SingleCellExperiment(list(counts = m))
    sce <- add_scribe_fit(sce, fit)
    rd <- SummarizedExperiment::rowData(sce)
    expect_equal(dim(rd$scribe_r), c(nrow(m), 2L))
    expect_equal(colnames(rd$scribe_r), c("A", "B"))
  }
})

test_that("dataset p: scalar and gene-specific modes, from a colData column", {
  skip_if_not_installed("SingleCellExperiment")
  sim <- dataset_sim("nbdm")
  sce <- SingleCellExperiment::SingleCellExperiment(list(counts = sim$counts),
                                                    colData = data.frame(batch = sim$batch))
  fit <- dataset_fit(sce, model = "nbdm", dataset_key = "batch",
                     priors = list(probability = list(batch = "gaussian")), prob_dataset_mode = "scalar",
                     n_steps = 500)
  map <- get_map(fit)
  expect_named(map$p, c("A", "B"))
  expect_false("log_r_dataset_loc" %in% names(map))
  fit2 <- dataset_fit(sce, model = "nbdm", dataset_key = "batch",
                      priors = list(mean_expression = list(batch = "gaussian"), probability = list(batch = "neg")),
                      n_steps = 500)
  map2 <- get_map(fit2)
  expect_equal(dim(map2$p), c(2L, nrow(sce)))
  sce <- add_scribe_fit(sce, fit2)
  expect_equal(dim(SummarizedExperiment::rowData(sce)$scribe_p), c(nrow(sce), 2L))
})

test_that("dataset fits warm-start MCMC and are reproducible", {
  sim <- dataset_sim("nbdm", n_genes = 12, n_cells = c(60, 50), n_shift = 4)
  sv <- dataset_fit(sim$counts, model = "nbdm", dataset_key = sim$batch, n_steps = 1000)
  sv2 <- dataset_fit(sim$counts, model = "nbdm", dataset_key = sim$batch, n_steps = 1000)
  expect_identical(get_map(sv), get_map(sv2))
  mc <- scribe_fit(sim$counts, model = "nbdm", inference_method = "mcmc", dataset_key = sim$batch,
                   n_samples = 100, n_warmup = 100, seed = 1, verbose = FALSE, svi_init = sv)
  r <- get_map(mc)$r
  expect_equal(dim(r), c(2L, 12L))
  expect_gt(mean(log(r["B", 1:4] / r["A", 1:4])), 0.5)
})

test_that("dataset arguments give clear errors", {
  sim <- dataset_sim("nbdm", n_genes = 12, n_cells = c(60, 50), n_shift = 4)
  m <- sim$counts
  expect_error(scribe_fit(m, dataset_key = sim$batch[-1]), "one value per cell", class = "scribeR_input_error")
  expect_error(scribe_fit(m, dataset_key = "batch"), "metadata", class = "scribeR_input_error")
  expect_error(scribe_fit(m, dataset_key = replace(sim$batch, 3, NA)), "NA", class = "scribeR_input_error")
  expect_error(scribe_fit(m, priors = list(mean_expression = list(donor = "gaussian"))),
               "not a declared grouping level", class = "scribeR_input_error")
  expect_error(scribe_fit(m, dataset_key = sim$batch, priors = list(mean_expression = list(donor = "gaussian"))),
               "Declared level", class = "scribeR_input_error")
  expect_error(scribe_fit(m, dataset_key = sim$batch, prob_dataset_mode = "scalar"),
               "prob_dataset_mode", class = "scribeR_input_error")
  expect_error(scribe_fit(m, prob_dataset_mode = "scalar"), "dataset_key", class = "scribeR_input_error")
  expect_error(scribe_fit(m, dataset_key = sim$batch, n_components = 2), class = "scribeR_unsupported")
  expect_error(scribe_fit(m, dataset_key = sim$batch, priors = list(probability = list(dataset = "gaussian")),
                          prob_dataset_mode = "two_level"), class = "scribeR_unsupported")
  expect_error(scribe_fit(m, model = "nbdm", dataset_key = sim$batch,
                          priors = list(zero_inflation = list(dataset = "gaussian"))),
               "zero-inflated", class = "scribeR_input_error")
  expect_error(scribe_fit(m, model = "zinb", dataset_key = sim$batch,
                          priors = list(zero_inflation = list(dataset = "gaussian"), gate = "neg")),
               "simultaneously", class = "scribeR_input_error")
  expect_error(scribe_fit(m, dataset_key = sim$batch, priors = list(capture_probability = list(dataset = "gaussian"))),
               "capture_probability", class = "scribeR_unsupported")
  expect_error(scribe_fit(m, dataset_key = sim$batch, priors = list(probability = list(dataset = "gaussian"),
                                                                   p = "gaussian")),
               "simultaneously", class = "scribeR_input_error")
  expect_error(scribe_fit(m, inference_method = "laplace", model = "pln", dataset_key = sim$batch),
               "dataset_key", class = "scribeR_input_error")
  expect_warning(fit <- scribe_fit(m, dataset_key = rep("A", ncol(m)), n_steps = 10, verbose = FALSE),
                 "one dataset")
  expect_null(fit@model$dataset_levels)
})

test_that("datasets of one fit compare by DE and normalize per dataset", {
  sim <- dataset_sim()
  m <- sim$counts
  fit <- dataset_fit(m, model = "nbvcp", dataset_key = sim$batch)
  de <- scribe_de(fit, component_a = "B", component_b = "A", n_samples = 200, seed = 1)
  res <- as.data.frame(de)
  shifted <- rownames(m)[seq_len(sim$n_shift)]
  top <- res$gene[order(-res$delta_mean)][seq_len(sim$n_shift)]
  expect_gte(length(intersect(top, shifted)), sim$n_shift - 1L)
  expect_identical(de@info$components, c(2L, 1L))
  expect_identical(de@labels, c("B", "A"))
  expect_error(scribe_de(fit, component_a = "C", component_b = "A"), "not a dataset", class = "scribeR_input_error")
  expect_error(scribe_de(fit), "2 datasets", class = "scribeR_input_error")
  comp <- normalize_counts(fit)
  expect_equal(rownames(comp), c("A", "B"))
  expect_equal(unname(rowSums(comp)), c(1, 1), tolerance = 1e-10)
  expect_error(cell_type_probabilities(fit, m), "not a mixture", class = "scribeR_input_error")
  ll <- log_likelihood(fit, m, split_components = TRUE)
  expect_equal(colnames(ll), c("A", "B"))
  expect_true(all(is.infinite(ll[sim$batch == "A", "B"])))
})

test_that("dataset gates: one gate per dataset and gene, read by each cell", {
  sim <- dataset_sim("zinb", n_genes = 20, n_cells = c(120, 100), n_shift = 5)
  fit <- dataset_fit(sim$counts, model = "zinb", dataset_key = sim$batch,
                     priors = list(zero_inflation = list(dataset = "gaussian")), n_steps = 600)
  gate <- get_map(fit)$gate
  expect_equal(dim(gate), c(2L, 20L))
  expect_equal(rownames(gate), c("A", "B"))
  expect_true(all(gate > 0 & gate < 1))
  expect_true("logit_gate_dataset_scale" %in% names(get_map(fit)))
  expect_true(all(is.finite(log_likelihood(fit, sim$counts))))
  expect_warning(one <- dataset_fit(sim$counts, model = "zinb", dataset_key = rep("A", ncol(sim$counts)),
                                    priors = list(zero_inflation = list(dataset = "gaussian")), n_steps = 10),
                 "one dataset")
  expect_identical(one@model$hierarchies$gate, "gaussian")
})

test_that("BNB with datasets: per-dataset means, one excess dispersion per gene", {
  sim <- dataset_sim("nbdm", n_genes = 15, n_cells = c(100, 80), n_shift = 5)
  fit <- dataset_fit(sim$counts, model = "nbdm", dataset_key = sim$batch, overdispersion = "bnb", n_steps = 800)
  map <- get_map(fit)
  expect_equal(dim(map$r), c(2L, 15L))
  expect_length(map$bnb_concentration, 15L)
  expect_gt(mean(log(map$r["B", 1:5] / map$r["A", 1:5])), 0.6)
  expect_true(all(is.finite(log_likelihood(fit, sim$counts, by = "gene"))))
  expect_equal(dim(posterior_predictive(fit, n_samples = 2)), c(2L, 180L, 15L))
})
