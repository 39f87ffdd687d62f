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
