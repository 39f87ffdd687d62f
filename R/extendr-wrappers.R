# Thin .Call wrappers around the Rust entry points (src/rust/scribe-r/src/lib.rs).
# Internal: users call scribe_fit(), get_map() and friends.

rs_svi_fit <- function(n_genes, n_cells, p, i, x, model, svi, verbose, num_threads) {
  .Call(wrap__rs_svi_fit, n_genes, n_cells, p, i, x, model, svi, verbose, num_threads)
}

rs_nb_sites <- function(model, params, n_draws, seed) {
  .Call(wrap__rs_nb_sites, model, params, n_draws, seed)
}

rs_simulate_nb <- function(model, n_genes, n_cells, n_components, r, p, nu, gate, seed) {
  .Call(wrap__rs_simulate_nb, model, n_genes, n_cells, n_components, r, p, nu, gate, seed)
}

rs_nb_analysis <- function(model, params, n_draws, seed, what, counts, opts, num_threads) {
  .Call(wrap__rs_nb_analysis, model, params, n_draws, seed, what, counts, opts, num_threads)
}

rs_mcmc_fit <- function(n_genes, n_cells, p, i, x, model, mcmc, init, verbose, num_threads) {
  .Call(wrap__rs_mcmc_fit, n_genes, n_cells, p, i, x, model, mcmc, init, verbose, num_threads)
}

rs_laplace_fit <- function(n_genes, n_cells, p, i, x, model, laplace, verbose, num_threads) {
  .Call(wrap__rs_laplace_fit, n_genes, n_cells, p, i, x, model, laplace, verbose, num_threads)
}

rs_cascade_stats <- function(model, params, n_draws, seed, tau) {
  .Call(wrap__rs_cascade_stats, model, params, n_draws, seed, tau)
}

rs_laplace_analysis <- function(fit, counts, what, opts, num_threads) {
  .Call(wrap__rs_laplace_analysis, fit, counts, what, opts, num_threads)
}
