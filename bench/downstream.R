# Differential expression, model comparison and goodness of fit on pbmc3k
# (genes detected in >= 3 cells). DE: the cells split by a marker (CD3E
# detected or not), nbvcp fitted to each half, scribe_de() with 2000 draws on
# every gene. Model comparison: nbdm, zinb and nbvcp by gene (nbvcp has
# per-cell latents) with 200 draws. Goodness of fit of the nbvcp fit: MAP
# quantile residuals of every gene plus PPC calibration with 100 draws.
# Each step runs in a fresh R process so that its peak RSS is its own.
# Usage: Rscript bench/downstream.R [path to shared/data] [threads]
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 2L
work <- tempfile("scribe-bench-")
dir.create(work)
setup <- sprintf('
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
options(scribeR.num_threads = %d)
peak_rss_mb <- function() as.numeric(gsub("[^0-9]", "", grep("^VmHWM", readLines("/proc/self/status"), value = TRUE))) / 1024
m <- as(readMM(file.path("%s", "pbmc3k", "matrix.mtx.gz")), "CsparseMatrix")
rownames(m) <- make.unique(read.delim(file.path("%s", "pbmc3k", "genes.tsv.gz"), header = FALSE)$V2)
m <- m[rowSums(m > 0) >= 3, ]
colnames(m) <- paste0("cell", seq_len(ncol(m)))
work <- "%s"
timeit <- function(label, expr) {
  base <- peak_rss_mb()
  t <- system.time(v <- force(expr))[["elapsed"]]
  cat(sprintf("%%-58s %%7.2f s   peak RSS %%6.0f MB (%%5.0f MB before)\\n", label, t, peak_rss_mb(), base))
  invisible(v)
}
', threads, data_dir, data_dir, work)
steps <- c(
  fits = '
    cd3 <- m["CD3E", ] > 0
    a <- scribe_fit(m[, cd3], model = "nbvcp", seed = 1, verbose = FALSE)
    b <- scribe_fit(m[, !cd3], model = "nbvcp", seed = 1, verbose = FALSE)
    all <- lapply(c(nbdm = "nbdm", zinb = "zinb", nbvcp = "nbvcp"), function(md) scribe_fit(m, model = md, seed = 1, verbose = FALSE))
    saveRDS(list(a = a, b = b, all = all, cd3 = cd3), file.path(work, "fits.rds"))
    cat(sprintf("pbmc3k %d genes x %d cells (%d CD3E+), threads = %d\\n", nrow(m), ncol(m), sum(cd3), getOption("scribeR.num_threads")))',
  de = '
    f <- readRDS(file.path(work, "fits.rds"))
    de <- timeit("scribe_de: empirical, 2000 draws, all genes", scribe_de(f$a, f$b, n_samples = 2000, seed = 1))
    timeit("as.data.frame at a new tau (recount 2000 draws)", as.data.frame(de, tau = log(1.1), target_pefp = 0.05))
    timeit("scribe_de: shrinkage, 2000 draws, all genes", scribe_de(f$a, f$b, method = "shrinkage", n_samples = 2000, seed = 1))
    cat(sprintf("  genes called at PEFP 0.05: %d\\n", sum(call_de(de, use_lfsr_tau = FALSE))))',
  compare = '
    f <- readRDS(file.path(work, "fits.rds"))
    cmp <- timeit("compare_models: nbdm, zinb, nbvcp by gene, 200 draws", compare_models(f$all, m, by = "gene", n_samples = 200, seed = 1))
    print(cmp)
    timeit("compare_models: nbdm vs zinb by cell, 200 draws", compare_models(f$all[1:2], m, n_samples = 200, seed = 1))
    timeit("gene_level_comparison: nbvcp vs nbdm, 200 draws", gene_level_comparison(f$all$nbvcp, f$all$nbdm, m, n_samples = 200, seed = 1))',
  gof = '
    f <- readRDS(file.path(work, "fits.rds"))
    g <- timeit("goodness_of_fit: MAP residuals, all genes, no PPC", goodness_of_fit(f$all$nbvcp, m, ppc = FALSE, seed = 1))
    g <- timeit("goodness_of_fit: + PPC calibration, 100 draws", goodness_of_fit(f$all$nbvcp, m, n_ppc_samples = 100, residuals = FALSE, seed = 1))
    cat(sprintf("  well fit: %d of %d genes; median calibration failure %.2f\\n", sum(g$scores$well_fit), nrow(g$scores), median(g$scores$calibration_failure)))'
)
for (s in names(steps)) {
  script <- file.path(work, paste0(s, ".R"))
  writeLines(c(setup, steps[[s]]), script)
  status <- system2(file.path(R.home("bin"), "Rscript"), script)
  if (status != 0) stop("step ", s, " failed")
}
unlink(work, recursive = TRUE)
