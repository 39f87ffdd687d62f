# Goodness of fit on real data, one row per model and engine: pbmc3k, the
# 2000 most variable genes, the same 200 of them checked for every fit.
# Reports the median per-gene residual variance (1 under a right model), the
# median KS distance of the residuals to the standard normal, the median PPC
# calibration failure, the share of genes goodness_of_fit() calls well fit,
# and the seconds goodness_of_fit() took. Log-normal fits average the
# residuals' CDF over 20 latent draws (their point estimate leaves out the
# latents' spread).
# Usage: Rscript bench/gof.R [path to shared/data] [threads] [n_steps] [rows (regex)]
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 2L
n_steps <- if (length(args) >= 3) as.integer(args[3]) else 3000L
rows <- if (length(args) >= 4) args[4] else "."
options(scribeR.num_threads = threads)

pbmc <- as(readMM(file.path(data_dir, "pbmc3k", "matrix.mtx.gz")), "CsparseMatrix")
storage.mode(pbmc@x) <- "double"
rownames(pbmc) <- make.unique(read.delim(file.path(data_dir, "pbmc3k", "genes.tsv.gz"), header = FALSE)[[2]])
colnames(pbmc) <- paste0("cell", seq_len(ncol(pbmc)))
pbmc <- pbmc[rowSums(pbmc > 0) >= 3, ]
norm <- pbmc %*% Diagonal(x = 1e4 / colSums(pbmc))
m <- rowMeans(norm)
v <- rowMeans(norm^2) - m^2
x <- pbmc[order(-(v / m))[1:2000], ]
set.seed(1)
check <- rownames(x)[sort(sample(nrow(x), 200))]
cat(sprintf("pbmc3k: %d genes x %d cells; %d genes checked; threads = %d\n", nrow(x), ncol(x), length(check), threads))

fits <- list(
  "nbvcp SVI" = function() scribe_fit(x, model = "nbvcp", seed = 1, num_threads = threads, verbose = FALSE),
  "nbvcp VAE" = function() scribe_fit(x, model = "nbvcp", inference_method = "vae", n_steps = n_steps, batch_size = 512L,
                                      seed = 1, num_threads = threads, verbose = FALSE),
  "nbln VAE" = function() scribe_fit(x, model = "nbln", inference_method = "vae", n_steps = n_steps, batch_size = 512L,
                                     seed = 1, num_threads = threads, verbose = FALSE),
  "pln VAE" = function() scribe_fit(x, model = "pln", inference_method = "vae", n_steps = n_steps, batch_size = 512L,
                                    seed = 1, num_threads = threads, verbose = FALSE),
  "pln Laplace" = function() scribe_fit(x, model = "pln", inference_method = "laplace", latent_dim = 10, n_steps = 200,
                                        seed = 1, num_threads = threads, verbose = FALSE)
)
out <- NULL
for (name in grep(rows, names(fits), value = TRUE)) {
  t_fit <- system.time(fit <- fits[[name]]())[["elapsed"]]
  ln <- !is(fit, "ScribeLayoutResults") && isTRUE(fit@model$model %in% c("pln", "nbln", "lnm", "lnmvcp"))
  t_gof <- system.time(g <- goodness_of_fit(fit, x, genes = check, n_samples = if (ln) 20L, n_ppc_samples = 100L,
                                            residuals = FALSE, seed = 2))[["elapsed"]]
  s <- g$scores
  row <- data.frame(fit = name, fit_s = round(t_fit), residual_variance = stats::median(s$variance),
                    ks = stats::median(s$ks_distance), calibration_failure = stats::median(s$calibration_failure),
                    well_fit = mean(s$well_fit), gof_s = round(t_gof, 1))
  print(row, row.names = FALSE, digits = 3)
  out <- rbind(out, row)
}
cat("\n")
print(out, row.names = FALSE, digits = 3)
