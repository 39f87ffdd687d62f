#' Simulate UMI counts from an NB-family model
#'
#' Draws a genes x cells count matrix from `nbdm`, `nbvcp`, `zinb` or
#' `zinbvcp`. Parameters left `NULL` are drawn by the core: `r ~
#' LogNormal(0, 1)`, `p = 0.6`, capture `nu ~ Beta(4, 4)`, gates `~ Beta(1, 4)`
#' on every third gene (0 elsewhere). Useful for checking that a fit recovers
#' known parameters. With `n_components = K`, cells come from K components
#' that share `r` except on a fifth of the genes (multiplied by `exp(+-1.5)`),
#' with `p` from 0.5 to 0.7 and weights proportional to 1, ..., K.
#'
#' @param model Model name.
#' @param n_genes,n_cells Dimensions.
#' @param r Per-gene dispersion (length `n_genes`).
#' @param p Success probability (NB convention: mean `r p / (1 - p)`): one
#'   number shared by all genes, or `n_genes` numbers for a gene-specific `p`
#'   (the model of `priors = list(probability = "gaussian")` in
#'   [scribe_fit()]; `truth$p` is then named by gene and `p_hat` omitted).
#' @param p_capture Per-cell capture probability (capture models).
#' @param gate Per-gene zero-inflation probability (zero-inflated models).
#' @param omega Per-gene excess dispersion of beta-negative-binomial counts
#'   (`overdispersion = "bnb"` in [scribe_fit()]; `NULL`: negative binomial),
#'   shared by the components of a mixture.
#' @param n_components `NULL` or the number of mixture components (>= 2);
#'   then `r`, `p` and `gate` are drawn and cannot be given.
#' @param seed Seed (`NULL`: from R's RNG).
#' @return A list with `counts` (a `dgCMatrix`, genes x cells) and `truth`
#'   (the parameters used, plus `p_hat` for capture models; for mixtures `r`
#'   and `gate` are `K x genes` matrices, `p` and `weights` length-K vectors,
#'   and `assignment` the component of each cell).
#' @examples
#' sim <- scribe_simulate("nbdm", n_genes = 50, n_cells = 100, seed = 1)
#' dim(sim$counts)
#' summary(sim$truth$r)
#' @export
scribe_simulate <- function(model = c("nbdm", "nbvcp", "zinb", "zinbvcp"), n_genes = 100L,
                            n_cells = 500L, r = NULL, p = NULL, p_capture = NULL, gate = NULL,
                            omega = NULL, n_components = NULL, seed = NULL) {
  model <- match_choice(model[1], c("nbdm", "nbvcp", "zinb", "zinbvcp"), "model")
  whole <- function(v) v >= 1 && v == round(v) && v <= .Machine$integer.max
  check_number(n_genes, "n_genes", "a whole number between 1 and 2147483647", whole)
  check_number(n_cells, "n_cells", "a whole number between 1 and 2147483647", whole)
  if (n_genes * n_cells > 1e9) {
    abort_input("{.arg n_genes} x {.arg n_cells} ({format(n_genes * n_cells)}) is above the simulator's limit of 1e9 entries.")
  }
  check_vec <- function(v, arg, n, ok, what) {
    if (is.null(v)) return(NULL)
    if (!is.numeric(v) || length(v) != n || anyNA(v) || !all(ok(v))) {
      abort_input("{.arg {arg}} must be {n} number{?s} {what}.")
    }
    as.numeric(v)
  }
  r <- check_vec(r, "r", n_genes, function(v) v > 0 & is.finite(v), "> 0")
  if (length(p) > 1L) {
    p <- check_vec(p, "p", n_genes, function(v) v > 0 & v < 1, "in (0, 1) (one per gene, or a single number)")
  } else {
    check_number(p, "p", "a number in (0, 1)", function(v) v > 0 && v < 1, allow_null = TRUE)
  }
  p_capture <- check_vec(p_capture, "p_capture", n_cells, function(v) v > 0 & v <= 1, "in (0, 1]")
  gate <- check_vec(gate, "gate", n_genes, function(v) v >= 0 & v < 1, "in [0, 1)")
  omega <- check_vec(omega, "omega", n_genes, function(v) v > 0 & is.finite(v), "> 0")
  k <- 1L
  if (!is.null(n_components)) {
    check_number(n_components, "n_components", "a whole number from 2 to 2147483647", function(v) v >= 2 && v <= .Machine$integer.max && v == round(v))
    if (!is.null(r) || !is.null(p) || !is.null(gate)) {
      abort_input("{.arg r}, {.arg p} and {.arg gate} are drawn per component when {.arg n_components} is given.")
    }
    k <- as.integer(n_components)
  }
  seed <- resolve_seed(seed)
  s <- call_core(rs_simulate_nb(model, as.integer(n_genes), as.integer(n_cells), k, r,
                                if (is.null(p)) NULL else as.numeric(p), p_capture, gate, omega, seed))
  genes <- paste0("gene", seq_len(n_genes))
  cells <- paste0("cell", seq_len(n_cells))
  counts <- new("dgCMatrix", i = s$i, p = s$p, x = s$x, Dim = c(as.integer(n_genes), as.integer(n_cells)),
                Dimnames = list(genes, cells))
  comps <- paste0("component", seq_len(k))
  per_comp <- function(v) if (k == 1L) stats::setNames(v, genes) else t(matrix(v, n_genes, k, dimnames = list(genes, comps)))
  gene_p <- length(s$prob) == n_genes && k == 1L && length(p) > 1L
  truth <- list(r = per_comp(s$r), p = if (gene_p) stats::setNames(s$prob, genes) else if (k == 1L) s$prob else stats::setNames(s$prob, comps))
  if (!is.null(s$p_capture)) {
    truth$p_capture <- stats::setNames(s$p_capture, cells)
    if (k == 1L && !gene_p) truth$p_hat <- truth$p * truth$p_capture / (1 - truth$p * (1 - truth$p_capture))
  }
  if (!is.null(s$gate)) truth$gate <- per_comp(s$gate)
  if (!is.null(omega)) truth$omega <- stats::setNames(omega, genes)
  if (k > 1L) {
    truth$weights <- stats::setNames(s$weights, comps)
    truth$assignment <- stats::setNames(s$assignment, cells)
  }
  list(counts = counts, truth = truth)
}
