# Hierarchical extensions on pbmc3k (2000 most variable genes): time per SVI
# step of each extension relative to plain nbvcp in the same run, the steps
# each fit takes until the stopping rule ends it, and a PPC calibration table:
# the share of genes whose observed mean, variance and zero fraction lie in
# the central 50 / 80 / 95 % posterior predictive bands (100 draws, 500
# genes drawn at random from the 2000, the same for every model).
# A VAE row shows what per-cell r (a decoder of each cell's embedding) does
# to the same calibration; the log-normal VAE rows show the latent-log-rate
# models.
# Usage: Rscript bench/hierarchical.R [path to shared/data] [threads] [n_steps] [rows (regex)]
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 2L
n_steps <- if (length(args) >= 3) as.integer(args[3]) else 3000L
rows <- if (length(args) >= 4) args[4] else "."

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
check_genes <- sort(sample(nrow(x), 500))
cat(sprintf("pbmc3k: %d genes x %d cells; threads = %d; up to %d steps, batch 512\n",
            nrow(x), ncol(x), threads, n_steps))

fit_one <- function(...) {
  t <- system.time(fit <- scribe_fit(x, ..., n_steps = n_steps, batch_size = 512L, seed = 1,
                                     num_threads = threads, verbose = FALSE))[["elapsed"]]
  list(fit = fit, t = t, steps = length(loss_history(fit)))
}

# Observed and predictive per-gene statistics, 100 genes at a time.
calibration <- function(fit) {
  levels <- c(50, 80, 95)
  hits <- array(0, c(3, 3), dimnames = list(c("mean", "variance", "zero fraction"), paste0(levels, "%")))
  for (chunk in split(check_genes, ceiling(seq_along(check_genes) / 100))) {
    # VAE and Laplace fits read each cell's counts.
    pp <- posterior_predictive(fit, n_samples = 100, genes = rownames(x)[chunk], seed = 2,
                               x = if (!is(fit, "ScribeLayoutResults")) x)
    obs <- as.matrix(x[chunk, , drop = FALSE])
    stat <- list(mean = function(a, d) apply(a, d, mean), variance = function(a, d) apply(a, d, stats::var),
                 "zero fraction" = function(a, d) apply(a == 0, d, mean))
    for (s in names(stat)) {
      pred <- stat[[s]](pp, c(1, 3))        # draws x genes
      o <- stat[[s]](obs, 1)
      for (j in seq_along(levels)) {
        a <- (1 - levels[j] / 100) / 2
        lo <- apply(pred, 2, stats::quantile, a)
        hi <- apply(pred, 2, stats::quantile, 1 - a)
        hits[s, j] <- hits[s, j] + sum(o >= lo & o <= hi)
      }
    }
  }
  hits / length(check_genes)
}

runs <- list(
  "nbvcp" = list(model = "nbvcp"),
  "nbvcp, gene-specific p" = list(model = "nbvcp", priors = list(probability = "gaussian")),
  "nbvcp, BNB" = list(model = "nbvcp", overdispersion = "bnb"),
  "nbvcp, BNB, gene-specific p" = list(model = "nbvcp", overdispersion = "bnb", priors = list(probability = "gaussian")),
  # pbmc3k is one batch: two arbitrary halves show the cost of a dataset
  # hierarchy, and its scale should shrink toward zero.
  "nbvcp, 2 datasets (halves)" = list(model = "nbvcp", dataset_key = rep(c("A", "B"), length.out = ncol(x))),
  "nbvcp, 4 components" = list(model = "nbvcp", n_components = 4),
  "nbvcp, 4 components, mean hierarchy" = list(model = "nbvcp", n_components = 4, priors = list(mean_expression = "gaussian")),
  "nbvcp, 4 components, gene-specific p" = list(model = "nbvcp", n_components = 4, priors = list(probability = "gaussian")),
  "nbvcp, 4 components, BNB" = list(model = "nbvcp", n_components = 4, overdispersion = "bnb"),
  "nbvcp, 4 components, BNB, gene-specific p" = list(model = "nbvcp", n_components = 4, overdispersion = "bnb",
                                                     priors = list(probability = "gaussian")),
  "zinbvcp" = list(model = "zinbvcp"),
  "zinbvcp, gene-specific p" = list(model = "zinbvcp", priors = list(probability = "gaussian")),
  "zinbvcp, gate hierarchy" = list(model = "zinbvcp", priors = list(zero_inflation = "gaussian")),
  "nbvcp, VAE (latent_dim 10)" = list(model = "nbvcp", inference_method = "vae", latent_dim = 10),
  # The log-normal family: latent log-rates (log-ratios for LNM) per cell.
  "pln, VAE (latent_dim 10)" = list(model = "pln", inference_method = "vae", latent_dim = 10),
  "nbln, VAE (latent_dim 10)" = list(model = "nbln", inference_method = "vae", latent_dim = 10),
  "lnm, VAE (latent_dim 10)" = list(model = "lnm", inference_method = "vae", latent_dim = 10)
)
runs <- runs[grepl(rows, names(runs))]
base <- NULL
for (name in names(runs)) {
  r <- do.call(fit_one, runs[[name]])
  per <- r$t / r$steps
  if (is.null(base)) base <- per
  cat(sprintf("\n%s: %d steps in %.1f s, %.2f ms per step (%.1f x nbvcp), final loss %.6g\n",
              name, r$steps, r$t, 1e3 * per, per / base, mean(utils::tail(loss_history(r$fit), 100))))
  print(round(calibration(r$fit), 3))
}
