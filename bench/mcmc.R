# NUTS speed and efficiency on real data. For nbdm and nbvcp on two pbmc3k
# subsets (the 200 most expressed genes x 500 cells, and 2000 genes x all
# 2700 cells), 4 chains x (warmup + draws): wall time, gradient evaluations
# per second, minimum bulk ESS per second over all sampled parameters, and
# divergences.
# Usage: Rscript bench/mcmc.R [path to shared/data] [threads] [warmup] [draws] [dense]
# ("dense" as the fifth argument adds the low-rank mass-matrix adaptation).
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 2L
n_warmup <- if (length(args) >= 3) as.integer(args[3]) else 1000L
n_samples <- if (length(args) >= 4) as.integer(args[4]) else 1000L
dense <- length(args) >= 5 && args[5] == "dense"

pbmc <- as(readMM(file.path(data_dir, "pbmc3k", "matrix.mtx.gz")), "CsparseMatrix")
storage.mode(pbmc@x) <- "double"
rownames(pbmc) <- make.unique(read.delim(file.path(data_dir, "pbmc3k", "genes.tsv.gz"), header = FALSE)[[2]])
top <- order(-rowSums(pbmc))
subsets <- list(
  "200 genes x 500 cells" = pbmc[top[1:200], 1:500],
  "2000 genes x 2700 cells" = pbmc[top[1:2000], ]
)

cat(sprintf("threads = %d; 4 chains x (%d warmup + %d draws); %s mass matrix\n", threads, n_warmup, n_samples,
            if (dense) "diagonal + low-rank" else "diagonal"))
cat(sprintf("%-24s %-6s %6s %9s %12s %14s %12s %6s %8s\n", "data", "model", "dim", "wall (s)",
            "grad evals/s", "min bulk ESS", "min ESS/s", "div", "max rhat"))
for (nm in names(subsets)) {
  x <- subsets[[nm]]
  x <- x[, colSums(x) > 0]
  for (model in c("nbdm", "nbvcp")) {
    t <- system.time(fit <- suppressWarnings(scribe_fit(
      x, model = model, inference_method = "mcmc", n_samples = n_samples, n_warmup = n_warmup,
      n_chains = 4, seed = 1, num_threads = threads, verbose = FALSE,
      mcmc_config = list(dense_mass = dense))))[["elapsed"]]
    a <- posterior::as_draws_array(fit)
    ess <- suppressWarnings(posterior::summarise_draws(a, ess_bulk = posterior::ess_bulk, rhat = posterior::rhat))
    d <- sampler_diagnostics(fit)
    cat(sprintf("%-24s %-6s %6d %9.1f %12.0f %14.0f %12.2f %6d %8.3f\n", nm, model, nrow(fit@params$draws), t,
                sum(d$n_grad) / t, min(ess$ess_bulk), min(ess$ess_bulk) / t, sum(d$divergences),
                max(ess$rhat)))
  }
}
