# Downstream analyses on pbmc3k (genes detected in >= 3 cells), nbvcp fit:
# a 200-draw posterior predictive check on 20 genes, posterior denoising of
# those genes over 200 draws, MAP denoising of every gene, and 200-draw
# per-cell log-likelihoods. Prints time and peak memory.
# Usage: Rscript bench/analysis.R [path to shared/data] [threads]
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 2L
options(scribeR.num_threads = threads)
peak_rss_mb <- function() as.numeric(gsub("[^0-9]", "", grep("^VmHWM", readLines("/proc/self/status"), value = TRUE))) / 1024
m <- as(readMM(file.path(data_dir, "pbmc3k", "matrix.mtx.gz")), "CsparseMatrix")
rownames(m) <- make.unique(read.delim(file.path(data_dir, "pbmc3k", "genes.tsv.gz"), header = FALSE)$V2)
m <- m[rowSums(m > 0) >= 3, ]
fit <- scribe_fit(m, model = "nbvcp", n_steps = 2000, seed = 1, verbose = FALSE)
genes <- rownames(m)[order(-Matrix::rowMeans(m))[1:20]]
cat(sprintf("pbmc3k %d genes x %d cells, threads = %d; peak RSS after fit %.0f MB\n", nrow(m), ncol(m), threads, peak_rss_mb()))
timeit <- function(label, expr) {
  t <- system.time(v <- force(expr))[["elapsed"]]
  cat(sprintf("%-52s %7.2f s   peak RSS %6.0f MB   result %s\n", label, t, peak_rss_mb(), paste(dim(v), collapse = " x ")))
  invisible(v)
}
timeit("posterior_predictive: 200 draws, 20 genes", posterior_predictive(fit, n_samples = 200, genes = genes, seed = 1))
timeit("denoise_counts: 200 draws, 20 genes", denoise_counts(fit, m, n_samples = 200, genes = genes, seed = 1))
timeit("denoise_counts: MAP, all genes (dense output)", denoise_counts(fit, m))
timeit("log_likelihood: 200 draws, by cell", log_likelihood(fit, m, n_samples = 200, seed = 1))
timeit("normalize_counts: 200 draws x 1 Dirichlet", normalize_counts(fit, n_samples = 200, seed = 1))
