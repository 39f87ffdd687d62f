# Thin .Call wrappers around the Rust entry points (src/rust/scribe-r/src/lib.rs).
# Each returns list(value = ...) or list(error = ...); call_core() unwraps it.
# Internal: users call scribe_fit(), get_map() and friends.

rs_defaults <- function() .Call(wrap__rs_defaults)

rs_check_values <- function(arg, n) .Call(wrap__rs_check_values, arg, n)

rs_model_layout <- function(model, n_genes, n_cells) {
  .Call(wrap__rs_model_layout, model, n_genes, n_cells)
}

rs_svi_fit <- function(counts, model, svi, verbose, num_threads) {
  .Call(wrap__rs_svi_fit, counts, model, svi, verbose, num_threads)
}

rs_mcmc_fit <- function(counts, model, mcmc, init, verbose, num_threads) {
  .Call(wrap__rs_mcmc_fit, counts, model, mcmc, init, verbose, num_threads)
}

rs_laplace_fit <- function(counts, model, laplace, verbose, num_threads) {
  .Call(wrap__rs_laplace_fit, counts, model, laplace, verbose, num_threads)
}

rs_fit_sites <- function(fit, n_draws, seed, verbose, num_threads) {
  .Call(wrap__rs_fit_sites, fit, n_draws, seed, verbose, num_threads)
}

rs_subset_fit <- function(fit, n_genes, genes, cells) {
  .Call(wrap__rs_subset_fit, fit, n_genes, genes, cells)
}

rs_nb_analysis <- function(fit, n_draws, seed, what, counts, opts, verbose, num_threads) {
  .Call(wrap__rs_nb_analysis, fit, n_draws, seed, what, counts, opts, verbose, num_threads)
}

rs_laplace_analysis <- function(fit, counts, what, opts, verbose, num_threads) {
  .Call(wrap__rs_laplace_analysis, fit, counts, what, opts, verbose, num_threads)
}

rs_cascade_stats <- function(fit, n_draws, seed, tau) {
  .Call(wrap__rs_cascade_stats, fit, n_draws, seed, tau)
}

rs_simulate_nb <- function(model, n_genes, n_cells, n_components, r, p, nu, gate, omega, seed) {
  .Call(wrap__rs_simulate_nb, model, n_genes, n_cells, n_components, r, p, nu, gate, omega, seed)
}

rs_predict_capture <- function(fit, lib_size, probs) {
  .Call(wrap__rs_predict_capture, fit, lib_size, probs)
}

# Differential expression and model comparison (src/rust/scribe-r/src/de.rs).
rs_de_nb <- function(fit_a, fit_b, n_draws, seed, opts, verbose, num_threads) {
  .Call(wrap__rs_de_nb, fit_a, fit_b, n_draws, seed, opts, verbose, num_threads)
}

rs_de_nb_pairs <- function(fits_a, fits_b, weights, n_draws, seed, opts, verbose, num_threads) {
  .Call(wrap__rs_de_nb_pairs, fits_a, fits_b, weights, n_draws, seed, opts, verbose, num_threads)
}

rs_de_gaussian <- function(a, b, n, seed, gene_mask, verbose, num_threads) {
  .Call(wrap__rs_de_gaussian, a, b, n, seed, gene_mask, verbose, num_threads)
}

rs_de_empirical <- function(delta, n, taus) .Call(wrap__rs_de_empirical, delta, n, taus)

rs_de_clr_moments <- function(side) .Call(wrap__rs_de_clr_moments, side)

rs_de_gaussian_stats <- function(mean, sd, taus) .Call(wrap__rs_de_gaussian_stats, mean, sd, taus)

rs_de_shrink <- function(mean, sd, taus, max_iter, tol) .Call(wrap__rs_de_shrink, mean, sd, taus, max_iter, tol)

rs_de_threshold <- function(lfsr, target) .Call(wrap__rs_de_threshold, lfsr, target)

rs_de_balances <- function(delta, n, sets) .Call(wrap__rs_de_balances, delta, n, sets)

rs_de_gaussian_balances <- function(a, b, sets) .Call(wrap__rs_de_gaussian_balances, a, b, sets)

rs_waic <- function(l, n_draws) .Call(wrap__rs_waic, l, n_draws)

rs_paired_sd <- function(l_a, l_b, n_draws) .Call(wrap__rs_paired_sd, l_a, l_b, n_draws)

# VAE (src/rust/scribe-r/src/vae.rs).
rs_vae_fit <- function(counts_r, model, vae, svi, verbose, num_threads) {
  .Call(wrap__rs_vae_fit, counts_r, model, vae, svi, verbose, num_threads)
}

rs_vae_encode <- function(counts_r, vae, encoder, input_mean, input_std) {
  .Call(wrap__rs_vae_encode, counts_r, vae, encoder, input_mean, input_std)
}

rs_vae_draws <- function(loc, log_var, n, seed) {
  .Call(wrap__rs_vae_draws, loc, log_var, n, seed)
}

rs_vae_prior_draws <- function(vae, prior, n, seed) {
  .Call(wrap__rs_vae_prior_draws, vae, prior, n, seed)
}

rs_ln_vae_population <- function(params, latent_dim) {
  .Call(wrap__rs_ln_vae_population, params, latent_dim)
}

rs_vae_analysis <- function(counts_r, model, vae, params, what, opts, n_draws, seed, verbose, num_threads) {
  .Call(wrap__rs_vae_analysis, counts_r, model, vae, params, what, opts, n_draws, seed, verbose, num_threads)
}
