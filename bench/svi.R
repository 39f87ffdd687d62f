# SVI speed and memory on real data. Prints steps per second and peak memory
# for nbvcp and zinbvcp on pbmc3k (genes detected in >= 3 cells), full batch
# and batch_size = 512, and on neurons10k; then the number of steps a fit
# needs to converge on 2000 x 1000 data simulated from nbvcp.
# Usage: Rscript bench/svi.R [path to shared/data] [threads]
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 2L

read10x <- function(dir) {
  m <- as(readMM(file.path(dir, "matrix.mtx.gz")), "CsparseMatrix")
  storage.mode(m@x) <- "double"
  m
}
peak_rss_mb <- function() {
  l <- grep("^VmHWM", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", l)) / 1024
}
bench_fit <- function(label, counts, model, steps, batch_size = NULL) {
  gc()
  t <- system.time(fit <- scribe_fit(counts, model = model, n_steps = steps, batch_size = batch_size,
                                      seed = 1, num_threads = threads, verbose = FALSE))[["elapsed"]]
  cat(sprintf("%-34s %-8s %6d steps  %8.2f ms/step  %9.1f steps/s  peak RSS %7.0f MB  final loss %.6e\n",
              label, model, steps, 1000 * t / steps, steps / t, peak_rss_mb(),
              mean(utils::tail(loss_history(fit), 100))))
}

pbmc <- read10x(file.path(data_dir, "pbmc3k"))
pbmc <- pbmc[rowSums(pbmc > 0) >= 3, ]
cat(sprintf("pbmc3k: %d genes x %d cells, %d nonzeros; threads = %d\n", nrow(pbmc), ncol(pbmc), length(pbmc@x), threads))
bench_fit("pbmc3k full batch", pbmc, "nbvcp", 2000)
bench_fit("pbmc3k batch 512", pbmc, "nbvcp", 2000, 512)
bench_fit("pbmc3k full batch", pbmc, "zinbvcp", 50)
bench_fit("pbmc3k batch 512", pbmc, "zinbvcp", 100, 512)

neu <- read10x(file.path(data_dir, "neurons10k"))
neu <- neu[, colSums(neu) > 0]
cat(sprintf("neurons10k: %d genes x %d cells (empty cell dropped)\n", nrow(neu), ncol(neu)))
bench_fit("neurons10k full batch", neu, "nbvcp", 2000)
bench_fit("neurons10k batch 512", neu, "nbvcp", 2000, 512)
bench_fit("neurons10k full batch", neu, "zinbvcp", 100)

# Convergence: steps until the smoothed (window 100) loss stays within 0.1 % of its final value.
sim <- scribe_simulate("nbvcp", n_genes = 1000, n_cells = 2000, seed = 1)
fit <- scribe_fit(sim$counts, model = "nbvcp", n_steps = 5000, seed = 1, num_threads = threads, verbose = FALSE)
l <- loss_history(fit)
sm <- stats::filter(l, rep(1 / 100, 100), sides = 1)
fin <- sm[length(sm)]
off <- which(abs(sm - fin) > 1e-3 * abs(fin))
cat(sprintf("convergence (nbvcp, 2000 cells x 1000 genes, Adam 1e-3): smoothed loss within 0.1%% of final from step %d of 5000\n",
            if (length(off)) max(off) + 1L else 100L))
