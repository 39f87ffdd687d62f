# Model comparison: PSIS-LOO through loo, WAIC in the core, gene-level
# comparison, and the refusal of cell-level LOO for per-cell latents.

test_that("compare_models prefers the zero-inflated model on zero-inflated data and matches loo", {
  sim <- scribe_simulate("zinb", n_genes = 40, n_cells = 300, seed = 1)
  f1 <- scribe_fit(sim$counts, model = "nbdm", seed = 1, verbose = FALSE)
  f2 <- scribe_fit(sim$counts, model = "zinb", seed = 1, verbose = FALSE)
  cmp <- compare_models(list(nbdm = f1, zinb = f2), sim$counts, n_samples = 100, seed = 2)
  expect_s3_class(cmp, "scribe_model_comparison")
  expect_identical(cmp$table$model[1], "zinb")
  expect_gt(-cmp$table$elpd_diff[2] / cmp$table$se_diff[2], 2)
  expect_gt(cmp$table$weight_stacking[1], 0.5)
  # Same draws, same numbers as loo on the log-likelihood matrix.
  l <- log_likelihood(f2, sim$counts, n_samples = 100, seed = 2)
  ref <- suppressWarnings(loo::loo(l, r_eff = rep(1, ncol(l))))
  expect_equal(cmp$table$elpd_loo[1], ref$estimates["elpd_loo", "Estimate"])
  expect_equal(cmp$table$p_loo[1], ref$estimates["p_loo", "Estimate"])
  # WAIC from the core agrees with loo's, up to the variance's divisor: the
  # core's p_waic uses the population variance (S), loo the sample one (S - 1).
  w <- suppressWarnings(loo::waic(l))
  expect_equal(cmp$table$p_waic[1] * 100 / 99, w$estimates["p_waic", "Estimate"])
  lppd <- w$estimates["elpd_waic", "Estimate"] + w$estimates["p_waic", "Estimate"]
  expect_equal(cmp$table$elpd_waic[1], lppd - cmp$table$p_waic[1])
  expect_output(print(cmp), "zinb")
})

test_that("per-cell latents refuse cell-level LOO; by gene the capture model wins", {
  sim <- scribe_simulate("nbvcp", n_genes = 40, n_cells = 300, seed = 1)
  f1 <- scribe_fit(sim$counts, model = "nbdm", seed = 1, verbose = FALSE)
  f2 <- scribe_fit(sim$counts, model = "nbvcp", seed = 1, verbose = FALSE)
  expect_error(compare_models(list(nbdm = f1, nbvcp = f2), sim$counts), "gene_level_comparison",
               class = "scribeR_unsupported")
  cmp <- compare_models(list(nbdm = f1, nbvcp = f2), sim$counts, by = "gene", n_samples = 100, seed = 2)
  expect_identical(cmp$table$model[1], "nbvcp")
  gl <- gene_level_comparison(f1, f2, sim$counts, labels = c("nbdm", "nbvcp"), n_samples = 100, seed = 2)
  expect_lt(attr(gl, "total"), 0)
  expect_gt(mean(gl$favors == "nbvcp"), 0.7)
  expect_identical(order(-abs(gl$z)), seq_len(nrow(gl)))
  # The per-gene sd is the posterior sd of the difference of the per-gene log-likelihoods.
  la <- log_likelihood(f1, sim$counts, by = "gene", n_samples = 100, seed = 2)
  lb <- log_likelihood(f2, sim$counts, by = "gene", n_samples = 100, seed = 2)
  g <- gl$gene[1]
  expect_equal(gl$elpd_diff_se[1], stats::sd(la[, g] - lb[, g]))
})

test_that("model comparison argument errors are clear", {
  sim <- scribe_simulate("nbdm", n_genes = 10, n_cells = 50, seed = 1)
  f <- scribe_fit(sim$counts, model = "nbdm", n_steps = 50, seed = 1, verbose = FALSE)
  expect_error(compare_models(list(f, f), sim$counts), "named list", class = "scribeR_input_error")
  expect_error(compare_models(list(a = f), sim$counts), "two or more", class = "scribeR_input_error")
  expect_error(compare_models(list(a = f, b = "x"), sim$counts), "fits\\$b", class = "scribeR_input_error")
  expect_error(compare_models(list(a = f, b = f), sim$counts, n_samples = 1), "n_samples", class = "scribeR_input_error")
  expect_error(compare_models(list(a = f, b = f), sim$counts, by = "draw"), "by", class = "scribeR_input_error")
  expect_error(gene_level_comparison(f, f, sim$counts, labels = c("a", "a")), "labels", class = "scribeR_input_error")
})

test_that("MCMC fits enter PSIS-LOO with all their draws and chain-based relative efficiencies", {
  skip_on_cran()
  sim <- scribe_simulate("nbdm", n_genes = 8, n_cells = 120, seed = 2)
  mc <- scribe_fit(sim$counts, model = "nbdm", inference_method = "mcmc", n_samples = 100, n_warmup = 100,
                   n_chains = 2, seed = 1, verbose = FALSE)
  sv <- scribe_fit(sim$counts, model = "nbdm", seed = 1, verbose = FALSE)
  cmp <- compare_models(list(mcmc = mc, svi = sv), sim$counts, n_samples = 50, seed = 3)
  l <- log_likelihood(mc, sim$counts, n_samples = 200, seed = 3)
  r_eff <- loo::relative_eff(exp(sweep(l, 2, apply(l, 2, max))), chain_id = rep(1:2, each = 100))
  ref <- suppressWarnings(loo::loo(l, r_eff = r_eff))
  expect_equal(cmp$loo$mcmc$estimates, ref$estimates)
  expect_equal(dim(cmp$loo$svi$pointwise)[1], 120L)
  # Two fits of one model to the same data: no meaningful difference.
  expect_lt(abs(cmp$table$elpd_diff[2]), 4 * cmp$table$se_diff[2] + 1)
})

test_that("stacking gives all weight to a model that is best on every observation", {
  # loo's optimiser fails on this boundary optimum; the exact answer is one-hot.
  point <- cbind(a = c(-10, -20, -30), b = c(-11, -25, -30.5), c = c(-40, -21, -31))
  expect_equal(scribeR:::stacking_of(point), c(1, 0, 0))
  mixed <- cbind(a = c(-10, -20), b = c(-12, -18))
  w <- scribeR:::stacking_of(mixed)
  expect_equal(sum(w), 1)
  expect_true(all(w > 0.01))
})
