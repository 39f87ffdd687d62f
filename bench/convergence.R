# The default fit on pbmc3k (genes detected in >= 3 cells), side by side with
# glmGamPoi's glm_gp() (a per-gene NB GLM with size factors) on the same
# machine: wall time, steps, why the fit stopped, and the estimates that move
# along the p-capture ridge. Usage:
#   Rscript bench/convergence.R [path to shared/data] [threads] [models]
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 2L
models <- if (length(args) >= 3) strsplit(args[3], ",")[[1]] else c("nbdm", "nbvcp")
options(scribeR.num_threads = threads)
m <- as(readMM(file.path(data_dir, "pbmc3k", "matrix.mtx.gz")), "CsparseMatrix")
rownames(m) <- make.unique(read.delim(file.path(data_dir, "pbmc3k", "genes.tsv.gz"), header = FALSE)$V2)
colnames(m) <- read.delim(file.path(data_dir, "pbmc3k", "barcodes.tsv.gz"), header = FALSE)$V1
m <- m[rowSums(m > 0) >= 3, ]
cat(sprintf("pbmc3k: %d genes x %d cells, %d threads\n", nrow(m), ncol(m), threads))
for (model in models) {
  t <- system.time(fit <- scribe_fit(m, model = model, seed = 1, verbose = FALSE))[["elapsed"]]
  st <- fit@diagnostics$stop
  mp <- get_map(fit)
  cat(sprintf("scribe_fit(%s) defaults: %6.1f s, %5d steps, stop: %s%s, p = %.4f%s\n", model, t,
              length(loss_history(fit)), st$reason,
              if (length(st$drifting)) paste0(" (", paste(st$drifting, collapse = ", "), ")") else "",
              mp$p, if (!is.null(mp$p_hat)) sprintf(", median p_hat = %.4f", stats::median(mp$p_hat)) else ""))
}
if (requireNamespace("glmGamPoi", quietly = TRUE)) {
  t <- system.time(gp <- glmGamPoi::glm_gp(m, on_disk = FALSE))[["elapsed"]]
  cat(sprintf("glmGamPoi::glm_gp(): %6.1f s (single thread)\n", t))
}
