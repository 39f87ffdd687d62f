# Laplace speed and memory on pbmc3k: time per outer step and Newton
# iterations per second per core for PLN, NBLN and LNM with the 2000 most
# variable genes and latent_dim 16, then how one PLN step scales with k (4, 8, 16, 32) and with G
# (500 ... 8000); the cost should follow G k^2 + k^3 per cell. Each figure
# "per outer step" divides a whole fit (start, mu warm-up sweeps, final sweep)
# by its steps; "marginal" is the difference of a 12- and a 2-step fit over
# 10, the cost of one more step. Last, the loss after 300 full-batch steps
# with and without the mu warm-up (laplace_config$mu_warm_rounds), and the
# default full-batch optimiser (L-BFGS) against Adam 1e-3 in time to a loss.
# Usage: Rscript bench/laplace.R [path to shared/data] [threads] [Adam steps, 1500] [convergence]
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 2L
# A fourth argument "convergence" runs only the last section.
only <- if (length(args) >= 4) args[4] else ""

pbmc <- as(readMM(file.path(data_dir, "pbmc3k", "matrix.mtx.gz")), "CsparseMatrix")
storage.mode(pbmc@x) <- "double"
rownames(pbmc) <- make.unique(read.delim(file.path(data_dir, "pbmc3k", "genes.tsv.gz"), header = FALSE)[[2]])
pbmc <- pbmc[rowSums(pbmc > 0) >= 3, ]
# Most variable genes by variance / mean of depth-normalised counts.
norm <- pbmc %*% Diagonal(x = 1e4 / colSums(pbmc))
m <- rowMeans(norm)
v <- rowMeans(norm^2) - m^2
hvg <- order(-(v / m))
adam <- list(name = "adam", step_size = 1e-3)
# Per-step figures use Adam (one sweep per step, comparable across versions);
# `opt = NULL` is the default (L-BFGS in full batch).
run <- function(x, k, steps, batch = NULL, model = "pln", cfg = list(), opt = adam, early_stopping = FALSE) {
  x <- x[, colSums(x) > 0]
  cfg <- utils::modifyList(list(convergence_action = "ignore", rescue_diverged_cells = FALSE), cfg)
  t <- system.time(fit <- suppressWarnings(scribe_fit(
    x, model = model, inference_method = "laplace", latent_dim = k, n_steps = steps, batch_size = batch,
    seed = 1, num_threads = threads, verbose = FALSE, laplace_config = cfg, optimizer_config = opt,
    early_stopping = if (isFALSE(early_stopping)) FALSE else NULL)))[["elapsed"]]
  # Newton iterations actually taken: a cell stops at newton_tolerance, so
  # warm-started cells take fewer than n_newton_steps (5) per outer step.
  nw <- fit@diagnostics$newton
  iters <- nw$outer_steps + nw$final_steps + nw$rescue_steps
  list(t = t, per_step = t / steps, iters_per_s_core = iters / t / threads, us_per_iter = 1e6 * t / iters, fit = fit)
}

cat(sprintf("pbmc3k: %d genes x %d cells; threads = %d\n", nrow(pbmc), ncol(pbmc), threads))
x <- pbmc[hvg[1:2000], ]
if (!identical(only, "convergence")) {
  r <- run(x, 16, 20)
  cat(sprintf("PLN, 2000 HVG, k = 16, full batch: %.2f s per outer step, %.0f Newton iterations/s/core\n",
              r$per_step, r$iters_per_s_core))
  # Memory of the fit alone: this process's peak holds the preprocessing of the
  # whole matrix, so a fresh R process loads the 2000 genes and fits them.
  rds <- tempfile(fileext = ".rds")
  saveRDS(x[, colSums(x) > 0], rds)
  for (model in c("pln", "nbln")) {
    code <- sprintf(paste(
      "suppressPackageStartupMessages(library(scribeR)); x <- readRDS('%s');",
      "hwm <- function() as.numeric(gsub('[^0-9]', '', grep('^VmHWM', readLines('/proc/self/status'), value = TRUE))) / 1024;",
      "b <- hwm(); f <- suppressWarnings(scribe_fit(x, model = '%s', inference_method = 'laplace', latent_dim = 16,",
      "n_steps = 5, seed = 1, num_threads = %d, verbose = FALSE, laplace_config = list(convergence_action = 'ignore')));",
      "cat(round(hwm() - b))"), rds, model, threads)
    mb <- system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(code)), stdout = TRUE)
    cat(sprintf("%s, 2000 HVG, k = 16, full batch: the fit raises peak RSS by %s MB\n", toupper(model), tail(mb, 1)))
  }
  r <- run(x, 16, 20, batch = 256)
  cat(sprintf("PLN, 2000 HVG, k = 16, batch 256:  %.3f s per outer step\n", r$per_step))
  r <- run(x, 16, 20, model = "nbln")
  cat(sprintf("NBLN, 2000 HVG, k = 16, full batch: %.2f s per outer step, %.0f Newton iterations/s/core\n",
              r$per_step, r$iters_per_s_core))
  r <- run(x, 16, 20, model = "lnm")
  cat(sprintf("LNM, 2000 HVG, k = 16, full batch:  %.2f s per outer step, %.0f Newton iterations/s/core\n",
              r$per_step, r$iters_per_s_core))

  for (model in c("pln", "nbln")) {
    marginal <- (run(x, 16, 12, model = model)$t - run(x, 16, 2, model = model)$t) / 10
    cat(sprintf("%s, 2000 HVG, k = 16, full batch: marginal %.3f s per outer step\n", toupper(model), marginal))
  }

  cat("\nScaling (10 steps of 256 cells plus the final sweep; time per cell Newton iteration, all threads):\n")
  cat(sprintf("%6s %4s %16s\n", "G", "k", "us per cell-iter"))
  for (k in c(4, 8, 16, 32)) {
    r <- run(pbmc[hvg[1:2000], ], k, 10, batch = 256)
    cat(sprintf("%6d %4d %16.1f\n", 2000L, as.integer(k), r$us_per_iter))
  }
  for (g in c(500, 1000, 2000, 4000, 8000)) {
    r <- run(pbmc[hvg[1:g], ], 16, 10, batch = 256)
    cat(sprintf("%6d %4d %16.1f\n", as.integer(g), 16L, r$us_per_iter))
  }

  cat("\nPLN, 2000 HVG, k = 16, full batch, Adam 1e-3, loss after 300 steps:\n")
  for (rounds in c(0, 10)) {
    r <- run(x, 16, 300, cfg = list(mu_warm_rounds = rounds))
    cat(sprintf("  mu_warm_rounds = %2d: %.4g (%.0f s)\n", rounds, r$fit@loss_history[300], r$t))
  }
}

# Convergence: the default (L-BFGS in full batch, stopping on its own) against
# Adam 1e-3 (the original's optimiser) for as many steps as `adam_steps`.
# "Time to Adam's loss" is a second L-BFGS fit stopped at the first step whose
# loss is at most Adam's last, timed whole (start and final sweep included,
# as in Adam's time).
adam_steps <- if (length(args) >= 3) as.integer(args[3]) else 1500L
# L-BFGS runs until it stops on its own, or as long as Adam when Adam runs
# fewer than 1000 steps (a quick comparison).
lbfgs_steps <- if (adam_steps < 1000L) adam_steps else 5000L
cat(sprintf("\nConvergence, 2000 HVG, k = 16, full batch: the default (L-BFGS) vs Adam 1e-3 for %d steps\n", adam_steps))
cat(sprintf("%-5s %-7s %6s %8s %13s %22s\n", "model", "opt", "steps", "time", "final loss", "time to Adam's loss"))
for (model in c("pln", "nbln")) {
  a <- run(x, 16, adam_steps, model = model)
  l <- run(x, 16, lbfgs_steps, model = model, opt = NULL, early_stopping = NULL)
  ha <- a$fit@loss_history
  hl <- l$fit@loss_history
  reach <- which(hl <= ha[length(ha)])[1]
  t_reach <- if (!is.na(reach)) run(x, 16, reach, model = model, opt = NULL)$t
  cat(sprintf("%-5s %-7s %6d %7.0fs %13.6g %22s\n", model, "adam", length(ha), a$t, ha[length(ha)], ""))
  cat(sprintf("%-5s %-7s %6d %7.0fs %13.6g %22s   (stop: %s)\n", model, "L-BFGS", length(hl), l$t, hl[length(hl)],
              if (is.na(reach)) "not reached" else sprintf("step %d, %.0f s (%.0fx)", reach, t_reach, a$t / t_reach),
              l$fit@diagnostics$stop$reason))
}
