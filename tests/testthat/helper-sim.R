# Shared simulated data sets (simulated once per test run).
sim_cache <- new.env()
sim_data <- function(model, n_genes = 300, n_cells = 1000, seed = 11) {
  key <- paste(model, n_genes, n_cells, seed)
  if (is.null(sim_cache[[key]])) {
    sim_cache[[key]] <- scribe_simulate(model, n_genes = n_genes, n_cells = n_cells, seed = seed)
  }
  sim_cache[[key]]
}

quick_fit <- function(x, ..., n_steps = 150) {
  scribe_fit(x, ..., n_steps = n_steps, seed = 1, verbose = FALSE)
}

# Fits in a fresh R process that receives SIGINT 2 s after the fit starts
# (system(wait = FALSE) only backgrounds the last command: hence the ()).
# `setup` defines `sim`; `fit` is the call to interrupt. The interrupt
# condition's partial state is printed as "partial: <step> <n losses>".
# Returns the output.
run_interrupted_fit <- function(setup, fit) {
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "suppressPackageStartupMessages(library(scribeR))",
    setup,
    "system(sprintf('(sleep 2; kill -INT %d)', Sys.getpid()), wait = FALSE)",
    "t0 <- proc.time()[['elapsed']]",
    sprintf("res <- tryCatch(%s,", fit),
    "  scribeR_interrupt = function(e) { cat('partial:', e$step, length(e$loss_history), '\\n'); 'stopped' },",
    "  interrupt = function(e) 'interrupt outside the fit')",
    "cat('result:', if (is.character(res)) res else 'finished', '\\n')",
    "cat('seconds:', proc.time()[['elapsed']] - t0, '\\n')",
    "ok <- scribe_fit(sim$counts[1:10, 1:30], model = 'nbdm', n_steps = 5, seed = 1, verbose = FALSE)",
    "cat('usable:', is(ok, 'ScribeSVIResults'), '\\n')"
  ), script)
  system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
}

# The child caught the interrupt as a classed error within 5 s and R still works.
expect_clean_interrupt <- function(out) {
  expect_true(any(grepl("result: stopped", out)), info = paste(out, collapse = "\n"))
  expect_true(any(grepl("usable: TRUE", out)), info = paste(out, collapse = "\n"))
  secs <- as.numeric(sub("seconds: ", "", grep("^seconds:", out, value = TRUE)))
  expect_lt(secs, 5)
}

# Counts of a rank-k PLN (genes x cells dgCMatrix named g1.., c1..): log-rates
# `mu + w z + noise`, z ~ N(0, I_k) per cell, per-gene noise of sd `noise_sd`.
pln_counts <- function(mu, w, n, noise_sd = 0.2) {
  g <- length(mu)
  lat <- mu + w %*% matrix(rnorm(ncol(w) * n), ncol(w)) + matrix(rnorm(g * n, sd = noise_sd), g)
  Matrix::Matrix(matrix(rpois(g * n, exp(lat)), g, dimnames = list(paste0("g", seq_len(g)), paste0("c", seq_len(n)))),
                 sparse = TRUE)
}
