# VAE speed and memory. Workload 1 (the original's measured anchor: nbdm,
# 2000 cells x 1000 genes, full batch, default architecture: 143.7 ms/step
# at 7.3 GB peak on CPU): simulated with scribe_simulate(). Workload 2:
# pbmc3k, every gene detected in at least one cell, batch 256. Each run is a
# fresh R process, so its peak RSS (VmHWM) is the fit's plus R's baseline
# (reported separately). Each run also times the downstream verbs.
# The model is nbdm unless a third argument names another (e.g. pln, nbln:
# the same counts, fitted with the log-normal VAE's linear decoder).
# Usage: Rscript bench/vae.R [path to shared/data] [n_steps] [model]
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
n_steps <- if (length(args) >= 2) as.integer(args[2]) else 200L
model <- if (length(args) >= 3) args[3] else "nbdm"

one_run <- function(workload, threads) {
  code <- sprintf('
    suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
    hwm <- function() as.numeric(sub("[^0-9]*([0-9]+).*", "\\\\1", grep("VmHWM", readLines("/proc/self/status"), value = TRUE))) / 1024
    if ("%s" == "sim") {
      x <- scribe_simulate("nbdm", n_genes = 1000, n_cells = 2000, seed = 1)$counts; batch <- NULL
    } else {
      x <- as(readMM(file.path("%s", "pbmc3k", "matrix.mtx.gz")), "CsparseMatrix")
      storage.mode(x@x) <- "double"
      x <- x[Matrix::rowSums(x) > 0, ]; batch <- 256L
    }
    base <- hwm()
    t <- system.time(fit <- scribe_fit(x, model = "%s", inference_method = "vae", n_steps = %d, batch_size = batch,
                                       seed = 1, num_threads = %d, verbose = FALSE))[["elapsed"]]
    cat(sprintf("%s, %%d genes x %%d cells, batch %%s, %%d threads: %%.1f ms/step, %%.0f cells/s, peak RSS %%.0f MB (R and data before the fit: %%.0f MB)\\n",
                nrow(x), ncol(x), if (is.null(batch)) "full" else batch, %d, 1e3 * t / %d,
                %d * (if (is.null(batch)) ncol(x) else batch) / t, hwm(), base))
    # Downstream verbs decode every cell (all genes for log-likelihoods, only
    # the asked-for genes for predictive draws).
    options(scribeR.num_threads = %d)
    t_ll <- system.time(log_likelihood(fit, x))[["elapsed"]]
    t_lld <- system.time(log_likelihood(fit, x, n_samples = 10, seed = 1))[["elapsed"]]
    t_pp <- system.time(posterior_predictive(fit, n_samples = 100, genes = 1:5, x = x, seed = 1))[["elapsed"]]
    cat(sprintf("  analyses: log_likelihood point %%.2f s, 10 draws %%.2f s; posterior_predictive 100 draws x 5 genes %%.2f s\n",
                t_ll, t_lld, t_pp))
  ', workload, data_dir, model, n_steps, threads, model, threads, n_steps, n_steps, threads)
  # The child sees this session's libraries (a development install included).
  system2("Rscript", c("-e", shQuote(code)), env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":")))
}

for (w in c("sim", "pbmc")) for (th in 1:2) one_run(w, th)
