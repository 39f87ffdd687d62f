# Random argument combinations on tiny data (12 genes x 10 cells), half of
# them valid (data scribeR accepts, arguments that fit together, drawn per
# engine) and half with one or two things spoiled (bad data, a bad value of
# an argument of scribe_fit() or of the analysis that follows). Each case
# runs in a forked child R process, so that an abort or a segfault shows up
# here as a failure instead of taking the test run down, and a child that
# does not answer within `fuzz_limit_s` counts as a hang. A valid case must
# end in a result; an invalid one in a result or an error of one of
# scribeR's condition classes (see ?`scribeR-conditions`). A crash, a hang,
# a `scribeR_core_error` or an unclassed error fails the test, with the
# case spelled out.
#
# Sizes are drawn either small (the fit takes milliseconds) or absurd (the
# size check must refuse them before allocating); nothing in between, so the
# whole run takes well under a minute.

fuzz_limit_s <- 20
fuzz_ok_classes <- c("scribeR_input_error", "scribeR_nonfinite")

fuzz_data <- function(kind, base) {
  switch(kind,
    matrix = base,
    dgc = Matrix::Matrix(base, sparse = TRUE),
    double = base + 0,
    unnamed = unname(base),
    empty_gene = rbind(base, zero = 0L),
    empty_cell = cbind(base, zero = 0L),
    with_na = replace(base, 3, NA),
    negative = replace(base, 5, -2L),
    fractional = replace(base + 0, 7, 1.5),
    huge = replace(base + 0, 2, 1e10),
    infinite = replace(base + 0, 2, Inf),
    all_zero = base * 0L,
    one_by_one = base[1, 1, drop = FALSE],
    one_gene = base[1, , drop = FALSE],
    logical = base > 2,
    character = matrix(as.character(base), nrow(base)),
    data_frame = as.data.frame(base),
    vector = as.vector(base),
    null = NULL,
    transposed = t(base)
  )
}

pick <- function(values) values[[sample.int(length(values), 1)]]
maybe <- function(p = 0.3) stats::runif(1) < p

# A valid case: data scribeR accepts and arguments that fit together, drawn
# per engine. Each must end in a result.
fuzz_valid_case <- function() {
  engine <- pick(list("svi", "svi", "svi", "svi", "svi", "mcmc", "mcmc", "laplace", "laplace", "laplace"))
  a <- list(inference_method = engine)
  data <- pick(list("matrix", "dgc", "double", "unnamed", "empty_cell"))
  if (data == "empty_cell" || maybe(0.1)) a$drop_empty <- TRUE
  if (maybe()) a$seed <- pick(list(NULL, 1, 42, 2^53))
  if (maybe(0.2)) a$num_threads <- pick(list(1, 2))
  if (engine %in% c("svi", "mcmc")) {
    a$model <- pick(list("nbdm", "nbvcp", "zinb", "zinbvcp"))
    if (maybe()) a$parameterization <- pick(list("canonical", "standard", "mean_prob", "linked", "mean_odds", "odds_ratio"))
    if (maybe(0.2)) a$unconstrained <- TRUE
    if (maybe(0.2)) a$positive_transform <- "exp"
    if (maybe(0.25)) {
      a$n_components <- pick(list(2, 3))
      if (maybe(0.5)) a$mixture_params <- pick(list("all", "biological", "mean", "prob"))
      if (maybe(0.3)) a$priors <- list(mixing = 2)
    }
  }
  if (engine == "svi") {
    a$n_steps <- pick(list(1, 5, 50, 400, 400, NULL))
    if (maybe()) a$batch_size <- pick(list(1, 5, 10))
    if (maybe()) a$optimizer_config <- pick(list(list(name = "adam", step_size = 0.01), list(name = "clipped_adam", step_size = 0.01),
                                                  list(name = "rmsprop", step_size = 0.01), list(name = "adagrad", step_size = 0.1)))
    if (maybe()) a$early_stopping <- pick(list(NULL, TRUE, FALSE, "original", list(rule = "settled", window = 10),
                                               list(patience = 5, warmup = 0, check_every = 10)))
    if (maybe(0.2)) a$stable_update <- FALSE
    if (maybe(0.2)) a$restore_best <- TRUE
  }
  if (engine == "mcmc") {
    a$n_samples <- pick(list(5, 20))
    a$n_warmup <- pick(list(0, 10, 30))
    if (maybe()) a$n_chains <- 2
    if (maybe()) a$mcmc_config <- pick(list(list(target_accept_prob = 0.9), list(max_tree_depth = 4),
                                            list(dense_mass = TRUE)))
  }
  if (engine == "laplace") {
    a$model <- pick(list("pln", "nbln", "lnm", "lnmvcp"))
    a$latent_dim <- pick(list(1, 2, 3))
    a$n_steps <- pick(list(1, 5, 30))
    if (a$model == "lnmvcp" || (a$model != "lnm" && maybe(0.2))) a$priors <- list(capture_efficiency = c(log(40), 1))
    if (a$model %in% c("pln", "nbln") && maybe(0.2)) a$priors <- list(loadings = list(type = "horseshoe_columnwise"))
    if (maybe()) a$batch_size <- pick(list(5, 10))
    if (maybe()) a$laplace_config <- pick(list(list(n_newton_steps = 3), list(convergence_action = "ignore"),
                                              list(rescue_diverged_cells = FALSE)))
    if (maybe(0.2)) a$early_stopping <- pick(list(FALSE, list(rule = "settled", window = 5)))
  }
  what <- if (engine == "laplace") {
    pick(list("samples", "predictive", "loglik", "map", "show", "latent"))
  } else {
    pick(c(list("samples", "predictive", "denoise", "normalize", "loglik", "map", "show", "subset"),
           if (!is.null(a$n_components)) list("probs")))
  }
  an <- list(what = what)
  if (maybe()) an$n_samples <- pick(list(1, 3, 10))
  if (maybe()) an$genes <- if (data == "unnamed") pick(list(1, 1:3)) else pick(list(1, 1:3, "g2"))
  if (maybe() && what != "denoise") an$cells <- if (data == "unnamed") pick(list(1, 2:4)) else pick(list(1, 2:4, "c3"))
  if (maybe()) an$method <- pick(list("mean", "sample", "mode"))
  if (maybe()) an$by <- pick(list("cell", "gene"))
  if (maybe()) an$seed <- 3
  list(valid = TRUE, data = data, args = a, analysis = an)
}

# Values no argument should accept (in any engine), and bad data.
fuzz_bad_values <- list(
  model = list("bogus", NA, 1, c("nbdm", "zinb")),
  inference_method = list("bogus", NA, character()),
  parameterization = list("bogus", NA),
  unconstrained = list(NA, "yes"),
  zero_inflation = list(NA, 2),
  variable_capture = list(NA, "no"),
  n_components = list(1, 0, -1, 2.5, 1e9, NA),
  mixture_params = list("bogus", 3, "gate"),
  n_steps = list(0, -1, 2.5, NA, Inf, 1e12, "10"),
  batch_size = list(0, -3, 1e12, 2.5, 11),
  optimizer_config = list(list(name = "bogus"), list(step_size = -1), "adam", list(name = "adam", step_size = Inf),
                          list(name = "sgd", step_size = 1e6)),
  stable_update = list(NA, "no"),
  restore_best = list("no"),
  early_stopping = list("bogus", list(rule = "settled", window = -1), list(rule = "bogus"), 3),
  priors = list(list(bogus = c(1, 1)), list(p = "a"), list(p = c(1, 2, 3)), list(r = c(-1, -1)), list(gate = c(0, 0)),
                "p"),
  n_samples = list(0, -1, 1e12, NA, 2.5),
  n_warmup = list(-1, 1e12, NA),
  n_chains = list(0, 1e12, NA, 2000),
  mcmc_config = list(list(target_accept_prob = 2), list(bogus = 1), "x"),
  latent_dim = list(0, -1, 1e9, 100, NA),
  laplace_config = list(list(n_newton_steps = 0), list(bogus = 1), list(damping = -1)),
  seed = list(-1, 2^60, NA, Inf, "a"),
  num_threads = list(0, -1, 1e6),
  drop_empty = list(NA, "yes"),
  assay = list("counts", 2),
  bogus_argument = list(1)
)
fuzz_bad_data <- c("with_na", "negative", "fractional", "huge", "infinite", "all_zero", "one_by_one", "logical",
                   "character", "data_frame", "vector", "null", "transposed", "empty_gene", "empty_cell", "one_gene")
fuzz_bad_analysis <- list(
  n_samples = list(0, -1, 1e12, NA, 2.5, "3"),
  genes = list("nonexistent", 0, 1e6, c(TRUE, FALSE), NA),
  cells = list(1e6, -1, "nonexistent"),
  method = list("bogus", NA, c("mean", "mode", "sample")),
  by = list("bogus", 1),
  other_data = list(TRUE),
  seed = list(NA, -5, "a")
)

# An invalid case: a valid one with one or two things spoiled. It may end in
# a result (some values are only bad in some contexts) or a classed error.
fuzz_invalid_case <- function() {
  case <- fuzz_valid_case()
  case$valid <- FALSE
  for (k in seq_len(pick(list(1, 1, 2)))) {
    where <- pick(list("data", "args", "args", "args", "analysis"))
    if (where == "data") {
      case$data <- pick(as.list(fuzz_bad_data))
    } else if (where == "args") {
      nm <- pick(as.list(names(fuzz_bad_values)))
      case$args[nm] <- list(pick(fuzz_bad_values[[nm]]))
    } else {
      nm <- pick(as.list(names(fuzz_bad_analysis)))
      case$analysis[nm] <- list(pick(fuzz_bad_analysis[[nm]]))
    }
  }
  case
}

fuzz_cases <- function(n, seed) {
  set.seed(seed)
  lapply(seq_len(n), function(i) if (i %% 2 == 1) fuzz_valid_case() else fuzz_invalid_case())
}

fuzz_describe <- function(case) {
  paste0(if (case$valid) "valid" else "invalid", " case; data = ", case$data, "; fit args: ",
         paste(deparse(case$args, width.cutoff = 500L), collapse = ""),
         "; analysis: ", paste(deparse(case$analysis, width.cutoff = 500L), collapse = ""))
}

# Runs one case; returns list(status, class, message). Called in the child.
fuzz_run <- function(case, base) {
  x <- fuzz_data(case$data, base)
  outcome <- function(status, cond = NULL) {
    list(status = status, class = if (is.null(cond)) character() else class(cond),
         message = if (is.null(cond)) "" else conditionMessage(cond))
  }
  tryCatch(suppressWarnings({
    args <- c(list(x), case$args)
    if (is.null(args$verbose)) args$verbose <- FALSE
    fit <- do.call(scribe_fit, args)
    a <- case$analysis
    other <- if (isTRUE(a$other_data)) x + 1L else x
    res <- switch(a$what %||% "show",
      samples = if (is(fit, "ScribeLaplaceResults")) {
        get_posterior_samples(fit, n_samples = a$n_samples %||% 3, seed = a$seed, x = other)
      } else {
        get_posterior_samples(fit, n_samples = a$n_samples %||% 3, seed = a$seed)
      },
      predictive = posterior_predictive(fit, n_samples = a$n_samples %||% 3, genes = a$genes, cells = a$cells,
                                        seed = a$seed, x = other),
      denoise = denoise_counts(fit, other, method = a$method %||% "mean", n_samples = a$n_samples, genes = a$genes,
                               seed = a$seed),
      normalize = normalize_counts(fit, other, n_samples = a$n_samples %||% 3, seed = a$seed),
      loglik = log_likelihood(fit, other, by = a$by %||% "cell", n_samples = a$n_samples, seed = a$seed),
      map = get_map(fit),
      show = utils::capture.output(show(fit)),
      subset = fit[a$genes %||% 1, ],
      probs = cell_type_probabilities(fit, other, n_samples = a$n_samples, seed = a$seed),
      latent = get_latent_samples(fit, other, n_samples = a$n_samples %||% 3, cells = a$cells, seed = a$seed)
    )
    outcome("ok")
  }), error = function(e) outcome("error", e))
}

`%||%` <- function(a, b) if (is.null(a)) b else a

# Forks one child per case (two at a time) and collects what each reports.
fuzz_collect <- function(cases, base, limit_s, run = fuzz_run) {
  results <- vector("list", length(cases))
  running <- list()
  next_case <- 1L
  while (next_case <= length(cases) || length(running)) {
    while (length(running) < 2L && next_case <= length(cases)) {
      i <- next_case
      job <- parallel::mcparallel(run(cases[[i]], base), silent = TRUE)
      running[[as.character(job$pid)]] <- list(job = job, i = i, start = Sys.time())
      next_case <- next_case + 1L
    }
    done <- suppressWarnings(parallel::mccollect(lapply(running, `[[`, "job"), wait = FALSE, timeout = 0.05))
    for (pid in names(done)) {
      r <- running[[pid]]
      v <- done[[pid]]
      results[[r$i]] <- if (is.list(v) && !inherits(v, "try-error") && !is.null(v$status)) {
        v
      } else {
        list(status = "crash", class = character(), message = paste(format(v), collapse = " "))
      }
      running[[pid]] <- NULL
    }
    for (pid in names(running)) {
      r <- running[[pid]]
      if (as.numeric(difftime(Sys.time(), r$start, units = "secs")) > limit_s) {
        tools::pskill(as.integer(pid), tools::SIGKILL)
        suppressWarnings(parallel::mccollect(r$job, wait = TRUE))
        results[[r$i]] <- list(status = "hang", class = character(), message = "")
        running[[pid]] <- NULL
      }
    }
  }
  results
}

test_that("the fuzz harness sees a crash and a hang", {
  skip_on_cran()
  skip_on_os("windows")
  run <- function(case, base) {
    if (case == "crash") tools::pskill(Sys.getpid(), tools::SIGSEGV)
    if (case == "hang") Sys.sleep(30)
    list(status = "ok", class = character(), message = "")
  }
  res <- fuzz_collect(list("crash", "hang", "fine"), NULL, limit_s = 1, run = run)
  expect_identical(vapply(res, `[[`, "", "status"), c("crash", "hang", "ok"))
})

test_that("random argument combinations end in a result or a classed error, never a crash or hang", {
  skip_on_cran()
  skip_on_os("windows") # forked children
  set.seed(1)
  base <- matrix(stats::rpois(12 * 10, 3), 12, 10, dimnames = list(paste0("g", 1:12), paste0("c", 1:10)))
  cases <- fuzz_cases(240, seed = 20261129)
  # Children inherit what the parent has loaded: run one valid and one
  # invalid case here first so that each child does not lazy-load the same
  # functions again (a tenth of a second per child instead of half a second).
  for (case in cases[1:2]) fuzz_run(case, base)
  results <- fuzz_collect(cases, base, fuzz_limit_s)
  status <- vapply(results, `[[`, "", "status")
  valid <- vapply(cases, `[[`, NA, "valid")
  classed <- vapply(results, function(r) any(r$class %in% fuzz_ok_classes), NA)
  bad <- which((valid & status != "ok") | (!valid & !(status == "ok" | (status == "error" & classed))))
  report <- vapply(bad, function(i) {
    r <- results[[i]]
    sprintf("case %d [%s %s]: %s\n  %s", i, r$status, paste(r$class, collapse = "/"), r$message,
            fuzz_describe(cases[[i]]))
  }, "")
  expect(length(bad) == 0, paste(c("Failing combinations:", report), collapse = "\n"))
  # The draw must exercise both sides: refused inputs among the invalid cases.
  expect_gt(sum(!valid & status == "error"), 60)
})
