# Rebuilds inst/extdata/pbmc3k_subset.rds from the 10x pbmc3k matrix.
# Usage: Rscript inst/scripts/make-example-data.R /path/to/pbmc3k
library(Matrix)
dir <- commandArgs(trailingOnly = TRUE)[1]
m <- as(readMM(file.path(dir, "matrix.mtx.gz")), "CsparseMatrix")
genes <- read.delim(file.path(dir, "genes.tsv.gz"), header = FALSE)
bc <- read.delim(file.path(dir, "barcodes.tsv.gz"), header = FALSE)
rownames(m) <- make.unique(genes$V2)
colnames(m) <- bc$V1
set.seed(1)
m <- m[, sort(sample(ncol(m), 1000))]
det <- rowSums(m > 0)
m <- m[sort(order(-det)[1:500]), ]
stopifnot(all(colSums(m) > 0))
saveRDS(as(m, "CsparseMatrix"), "inst/extdata/pbmc3k_subset.rds", compress = "xz")
