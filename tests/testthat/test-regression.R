# Fixed-seed fits of every engine, pinned to the values they gave when this
# test was written. A refactor that changes any of these numbers changed a
# fit; a deliberate change of the numerics updates the pins in the same commit
# (the SVI pins moved with the profile-likelihood start of the NB models, and in
# their last digits with the carried count differences of math::lgamma_digamma_pair_sums;
# the MCMC fits warm-started from SVI moved with them; the Laplace pins moved in
# their sixth digits when a cell's Newton steps began stopping at newton_tolerance,
# and PLN/NBLN moved (to lower losses) when mu began at the mean of the MAPs;
# with laplace_config$mu_warm_rounds = 0 they give the earlier pins to 1e-15;
# since L-BFGS became the full-batch default, the Adam pins name their optimiser
# and reproduce the earlier values exactly).

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
    loss100 = if (methods::existsMethod("loss_history", class(object))) loss_history(object)[100],
    steps = if (methods::existsMethod("loss_history", class(object))) length(loss_history(object)),
    last = if (methods::existsMethod("loss_history", class(object))) utils::tail(loss_history(object), 1)
  )
  for (n in names(expected)) expect_equal(got[[n]], expected[[n]], tolerance = 1e-10, label = n)
}
lap_quiet <- list(convergence_action = "ignore")
lap_adam <- list(name = "adam", step_size = 1e-3)
svi_nbvcp <- scribe_fit(pin_x, model = "nbvcp", n_steps = 100, seed = 1, verbose = FALSE)

test_that("SVI fits keep their numbers", {
  pin(svi_nbvcp, list(
    r = 64.960503607155516, r3 = c(2.3512993335641283, 0.12840971079518787, 0.51821553783083518),
    p = 0.56373361506184694, p_capture = 35.312905851397268, mu = 83.940502406325422,
    loss100 = 3286.7422792265425))
  pin(scribe_fit(pin_x, model = "zinbvcp", parameterization = "mean_odds", unconstrained = TRUE,
                 n_steps = 100, batch_size = 40, seed = 2, verbose = FALSE), list(
    r = 79.627336402444087, r3 = c(3.3469724088554722, 0.15536307600118354, 0.6754054839144954),
    p = 0.49533965069269981, p_capture = 42.213347690698583, mu = 78.156679149922638,
    loss100 = 3498.1947364715929))
  pin(scribe_fit(pin_x, model = "nbdm", n_components = 2, n_steps = 100, seed = 3, verbose = FALSE), list(
    r = 88.656987000886772, r3 = c(0.27353163494233845, 2.6276973302825954, 0.047426750827307164),
    p = c(component1 = 0.43265730659992263, component2 = 0.43763231711647743), mu = 68.442400351934666,
    loss100 = 3299.195718800579))
  pin(scribe_fit(pin_x, model = "nbvcp", parameterization = "mean_prob", n_steps = 100, seed = 4,
                 priors = list(capture_efficiency = c(log(100), 0.5)), verbose = FALSE), list(
    r = 60.167919623028531, r3 = c(2.1707814178739211, 0.11917208866459421, 0.47930655915720666),
    p = 0.63293489414146886, p_capture = 28.475949791405995, mu = 103.7482866711152,
    loss100 = 3264.2417909839783))
})

test_that("MCMC fits keep their numbers", {
  pin(scribe_fit(pin_x[1:8, ], model = "nbdm", inference_method = "mcmc", n_samples = 60, n_warmup = 60,
                 n_chains = 2, seed = 5, verbose = FALSE), list(
    r = 8.9578425774985995, r3 = c(1.704981702315415, 0.14769067636697619, 0.43480812969207339),
    p = 0.43929953842331321, mu = 7.0183215089535356))
  pin(scribe_fit(pin_x, model = "nbvcp", inference_method = "mcmc", n_samples = 30, n_warmup = 30,
                 svi_init = svi_nbvcp, seed = 6, verbose = FALSE), list(
    r = 53.06718621061345, r3 = c(1.8767634216952744, 0.18407282939902106, 0.46427133663330616),
    p = 0.53488335437407353, p_capture = 49.008068158932041, mu = 61.027174224925837))
})

test_that("Laplace fits keep their numbers (Adam, the original's optimiser)", {
  pin(scribe_fit(pin_lx, model = "pln", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 7,
                 verbose = FALSE, laplace_config = lap_quiet, optimizer_config = lap_adam), list(
    mu = 2.0670092494476164, W = 11.41784119381097, loss100 = 3470.3436846924697))
  pin(scribe_fit(pin_lx, model = "nbln", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 8,
                 priors = list(capture_efficiency = c(log(100), 0.5)), verbose = FALSE,
                 laplace_config = lap_quiet, optimizer_config = lap_adam), list(
    r = 84.224369384898154, r3 = c(1.239415827257957, 3.8133833825705143, 0.28038887440440202),
    p_capture = 31.139873571203921, mu = 24.821669894819273, W = 9.9274894809525414,
    loss100 = 5451.2717406378406))
  pin(scribe_fit(pin_lx, model = "lnm", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 9,
                 d_mode = "low_rank", verbose = FALSE, laplace_config = lap_quiet, optimizer_config = lap_adam), list(
    mu = -23.960272510578228, W = 23.944972087746311, loss100 = 1371.0510513029681))
})

test_that("Laplace fits keep their numbers (L-BFGS, the full-batch default)", {
  pin(scribe_fit(pin_lx, model = "pln", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 7,
                 verbose = FALSE, laplace_config = lap_quiet), list(
    mu = -10.17717574201518, W = 17.820623249550824, steps = 43L, last = 3323.6776454930969))
  pin(scribe_fit(pin_lx, model = "nbln", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 8,
                 priors = list(capture_efficiency = c(log(100), 0.5)), verbose = FALSE,
                 laplace_config = lap_quiet), list(
    r = 143.04273734426357, r3 = c(7.7107739840505056, 4.3959028398813631, 0.38733945459378644),
    p_capture = 29.707272461758429, mu = 20.831933023494166, W = 16.710626742668786,
    steps = 98L, last = 5371.8310875520292))
  pin(scribe_fit(pin_lx, model = "lnm", inference_method = "laplace", latent_dim = 2, n_steps = 100, seed = 9,
                 d_mode = "low_rank", verbose = FALSE, laplace_config = lap_quiet), list(
    mu = -48.263889576410882, W = 19.443431356839039, steps = 85L, last = 1178.8600913492792))
})
