# Fixed-seed fits of every engine, pinned to the values they gave when this
# test was written. A refactor that changes any of these numbers changed a
# fit; a deliberate change of the numerics updates the pins in the same commit.

pin_sim <- scribe_simulate("nbvcp", n_genes = 30, n_cells = 80, seed = 3)
pin_x <- pin_sim$counts
pin_lx <- pin_x[Matrix::rowSums(pin_x) > 0, ]
pin <- function(object, expected) {
  m <- get_map(object)
  got <- list(
    r = if (!is.null(m[["r"]])) sum(m[["r"]]),
    r3 = if (!is.null(m[["r"]])) as.vector(m[["r"]])[1:3],
    p = m[["p"]],
    p_capture = if (!is.null(m[["p_capture"]])) sum(m[["p_capture"]]),
    mu = if (!is.null(m[["mu"]])) sum(m[["mu"]]),
    W = if (!is.null(m[["W"]])) sum(abs(m[["W"]])),
    loss100 = if (methods::existsMethod("loss_history", class(object))) loss_history(object)[100]
  )
  for (n in names(expected)) expect_equal(got[[n]], expected[[n]], tolerance = 1e-10, label = n)
}
lap_quiet <- list(convergence_action = "ignore")
svi_nbvcp <- scribe_fit(pin_x, model = "nbvcp", n_steps = 100, seed = 1, verbose = FALSE)

test_that("SVI fits keep their numbers", {
  pin(svi_nbvcp, list(
    r = 73.36108142066989, r3 = c(2.6640850369948597, 0.14240301251337734, 0.58237400434378916),
    p = 0.50906882947643661, p_capture = 39.338626907389283, mu = 76.071437485050623,
    loss100 = 3277.497046081884))
  pin(scribe_fit(pin_x, model = "zinbvcp", parameterization = "mean_odds", unconstrained = TRUE,
                 n_steps = 100, batch_size = 40, seed = 2, verbose = FALSE), list(
    r = 85.812317436455771, r3 = c(3.6653698507950701, 0.16401055097971293, 0.72331111247055935),
    p = 0.48879200822196439, p_capture = 40.449934471834872, mu = 82.049529046012992,
    loss100 = 3512.5313036784082))
  pin(scribe_fit(pin_x, model = "nbdm", n_components = 2, n_steps = 100, seed = 3, verbose = FALSE), list(
    r = 91.917019978998027, r3 = c(0.27445855710920009, 2.7263081694494788, 0.048897642610601165),
    p = c(component1 = 0.42334840283751474, component2 = 0.42864020087551691), mu = 68.369912645392404,
    loss100 = 3298.9846033698082))
  pin(scribe_fit(pin_x, model = "nbvcp", parameterization = "mean_prob", n_steps = 100, seed = 4,
                 priors = list(capture_efficiency = c(log(100), 0.5)), verbose = FALSE), list(
    r = 66.965353639236938, r3 = c(2.4231702684418828, 0.13054951296138084, 0.53157792073144605),
    p = 0.5916610743448113, p_capture = 30.412686726931767, mu = 97.029184799119321,
    loss100 = 3263.7082631466988))
})

test_that("MCMC fits keep their numbers", {
  pin(scribe_fit(pin_x[1:8, ], model = "nbdm", inference_method = "mcmc", n_samples = 60, n_warmup = 60,
                 n_chains = 2, seed = 5, verbose = FALSE), list(
    r = 8.9578392692546753, r3 = c(1.704981144456688, 0.14769063303193017, 0.43480794571434084),
    p = 0.4392996421776082, mu = 7.0183218732930035))
  pin(scribe_fit(pin_x, model = "nbvcp", inference_method = "mcmc", n_samples = 30, n_warmup = 30,
                 svi_init = svi_nbvcp, seed = 6, verbose = FALSE), list(
    r = 52.774976310820676, r3 = c(1.8799658892688647, 0.16008425708910384, 0.45187258296463612),
    p = 0.53295736770407698, p_capture = 49.640687822530388, mu = 60.223222700232149))
})

test_that("Laplace fits keep their numbers", {
  pin(scribe_fit(pin_lx, model = "pln", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 7,
                 verbose = FALSE, laplace_config = lap_quiet), list(
    mu = 15.185648052009638, W = 10.971771553379359, loss100 = 3708.4488280384944))
  pin(scribe_fit(pin_lx, model = "nbln", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 8,
                 priors = list(capture_efficiency = c(log(100), 0.5)), verbose = FALSE,
                 laplace_config = lap_quiet), list(
    r = 83.861388923078934, r3 = c(1.2343853122306161, 3.8166641836976063, 0.2435508473744929),
    p_capture = 38.142489720499086, mu = 17.001012046023895, W = 9.4954024036148006,
    loss100 = 5538.8403465818265))
  pin(scribe_fit(pin_lx, model = "lnm", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 9,
                 d_mode = "low_rank", verbose = FALSE, laplace_config = lap_quiet), list(
    mu = -23.96025807363813, W = 23.944968118380626, loss100 = 1371.0508512734782))
})
