# Guide families on pbmc3k (2000 most variable genes, nbvcp): time per SVI
# step of each guide relative to mean-field in the same run (500 fixed steps,
# batch 512), the steps each takes until the default stopping rule ends it
# (Adam 0.002) with the loss it reaches, and the loss after n_steps fixed
# steps (losses: means of the last 200 steps).
# Flows: 4 coupling layers with [64, 64] conditioners, one flow over the
# 2000 genes' r (or r and p jointly); their default rule runs >= 5000 steps.
# Usage: Rscript bench/guides.R [path to shared/data] [threads] [n_steps] [timing only: 1]
suppressPackageStartupMessages({ library(scribeR); library(Matrix) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "../shared/data"
threads <- if (length(args) >= 2) as.integer(args[2]) else 1L
n_steps <- if (length(args) >= 3) as.integer(args[3]) else 10000L
timing_only <- length(args) >= 4 && args[4] == "1"

pbmc <- as(readMM(file.path(data_dir, "pbmc3k", "matrix.mtx.gz")), "CsparseMatrix")
storage.mode(pbmc@x) <- "double"
rownames(pbmc) <- make.unique(read.delim(file.path(data_dir, "pbmc3k", "genes.tsv.gz"), header = FALSE)[[2]])
colnames(pbmc) <- paste0("cell", seq_len(ncol(pbmc)))
pbmc <- pbmc[rowSums(pbmc > 0) >= 3, ]
norm <- pbmc %*% Diagonal(x = 1e4 / colSums(pbmc))
m <- rowMeans(norm)
v <- rowMeans(norm^2) - m^2
x <- pbmc[order(-(v / m))[1:2000], ]
cat(sprintf("pbmc3k nbvcp: %d genes x %d cells; threads = %d\n", nrow(x), ncol(x), threads))

guides <- list(
  "mean-field" = list(),
  "low-rank, rank 8" = list(guide_rank = 8),
  "joint low-rank (biological), rank 8" = list(guide_rank = 8, joint_params = "biological"),
  "flow (affine coupling, defaults)" = list(guide_flow = "affine_coupling"),
  "joint flow (biological)" = list(guide_flow = "affine_coupling", joint_params = "biological"),
  "IAF flow" = list(guide_flow = "iaf"),
  "amortized capture" = list(amortize_capture = TRUE)
)
opt <- list(name = "adam", step_size = 0.002)
base <- NULL
for (name in names(guides)) {
  g <- guides[[name]]
  t <- system.time(do.call(scribe_fit, c(list(x, model = "nbvcp", n_steps = 500L, early_stopping = FALSE,
                                              batch_size = 512L, seed = 1, num_threads = threads, verbose = FALSE,
                                              optimizer_config = opt), g)))[["elapsed"]]
  per <- t / 500
  if (is.null(base)) base <- per
  run <- function(...) {
    l <- loss_history(do.call(scribe_fit, c(list(x, model = "nbvcp", batch_size = 512L, seed = 1, num_threads = threads,
                                                 verbose = FALSE, optimizer_config = opt, ...), g)))
    c(length(l), mean(utils::tail(l, 200)))
  }
  if (timing_only) {
    cat(sprintf("%-38s %6.2f ms/step (%.2f x mean-field)\n", name, 1e3 * per, per / base))
    next
  }
  stopped <- run(n_steps = 50000L)
  fixed <- run(n_steps = n_steps, early_stopping = FALSE)
  cat(sprintf("%-38s %6.2f ms/step (%.2f x mean-field); stopping rule: %5d steps, loss %.6g; %d steps: loss %.6g\n",
              name, 1e3 * per, per / base, stopped[1], stopped[2], n_steps, fixed[2]))
}
