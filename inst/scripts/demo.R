# Fit nbvcp by SVI to the bundled pbmc3k subset, print the fit and write a
# loss-curve PNG. Usage: Rscript demo.R [output directory]
suppressPackageStartupMessages(library(scribeR))
out <- commandArgs(trailingOnly = TRUE)[1]
if (is.na(out)) out <- "."
dir.create(out, showWarnings = FALSE, recursive = TRUE)

sce <- scribe_example_data("SingleCellExperiment")
cat(sprintf("pbmc3k subset: %d genes x %d cells\n", nrow(sce), ncol(sce)))
fit <- scribe_fit(sce, model = "nbvcp", seed = 1, verbose = TRUE)   # stops when settled
print(fit)

map <- get_map(fit)
cat(sprintf("\nshared p = %.3f; capture probability: median %.3f (range %.3f-%.3f)\n",
            map$p, stats::median(map$p_capture), min(map$p_capture), max(map$p_capture)))
# With p shared across genes, r is each gene's Dirichlet concentration: the
# model's composition of a cell is rho ~ Dirichlet(r).
cat("top genes by normalized expression (MAP composition, %):\n")
print(round(100 * utils::head(sort(normalize_counts(fit), decreasing = TRUE), 8), 2))
cat("denoised LYZ counts (posterior mean) vs observed, first 6 cells:\n")
print(rbind(observed = as.numeric(SummarizedExperiment::assay(sce)["LYZ", 1:6]),
            denoised = round(denoise_counts(fit, sce, genes = "LYZ")[1, 1:6], 1)))

sce <- add_scribe_fit(sce, fit)
cat("\nrowData columns added:", grep("^scribe_", names(SummarizedExperiment::rowData(sce)), value = TRUE), "\n")

png_file <- file.path(out, "pbmc3k_nbvcp_loss.png")
grDevices::png(png_file, width = 900, height = 550, res = 120)
print(plot_loss(fit))
invisible(grDevices::dev.off())
cat("loss curve written to", png_file, "\n")
