#' Fit a Bayesian count model to single-cell UMI counts
#'
#' One entry point for every model and engine. Accepts base
#' matrices, `dgCMatrix` (and other `Matrix` classes), `DelayedMatrix`,
#' `SummarizedExperiment`/`SingleCellExperiment` (the `assay` argument,
#' default `"counts"`) and Seurat objects (the counts layer of `assay`,
#' default `"RNA"`). Matrices are genes x cells. Sparse input is never
#' densified: the likelihoods use per-gene count histograms, library sizes and
#' closed-form zero terms.
#'
#' @section Models:
#' `"nbdm"` (negative binomial with a shared success probability `p`),
#' `"nbvcp"` (adds a per-cell capture probability), `"zinb"` and `"zinbvcp"`
#' (add a per-gene zero-inflation gate). The NB convention is that of the
#' original SCRIBE code: `NB(u | r, p)` has mean `r p / (1 - p)`.
#' Instead of `model`, the flags `zero_inflation` and `variable_capture` may be
#' given; an explicit `model` that contradicts them is an error.
#'
#' @section Parameterizations:
#' `"canonical"` (alias `"standard"`) samples `p` and `r`; `"mean_prob"`
#' (`"linked"`) samples `p` and `mu` with `r = mu (1 - p) / p`; `"mean_odds"`
#' (`"odds_ratio"`) samples `phi` and `mu` with `r = mu phi`, `p = 1/(1 + phi)`
#' and capture odds `phi_capture`. With `unconstrained = TRUE` every sampled
#' parameter is a transformed Normal (`sigmoid` for probabilities,
#' `positive_transform` for positive quantities). The VAE's decoder outputs
#' `r` (canonical) or `mu` (the other two) for each cell.
#'
#' @section Priors:
#' Defaults follow the original: `p ~ Beta(1, 1)`, `r, mu ~ LogNormal(0, 1)`,
#' `phi, phi_capture ~ BetaPrime(1, 1)`, `p_capture ~ Beta(1, 1)`,
#' `gate ~ Beta(1, 9)`; unconstrained: `Normal(0, 1)` (gate `Normal(-2, 1)`).
#' `priors = list(name = c(a, b))` replaces the two hyper-parameters of a
#' sampled parameter's prior (unlike the original, these are honoured). Names
#' may be internal (`p`, `r`, `mu`, `phi`, `gate`, `p_capture`, `phi_capture`)
#' or descriptive (`probability`, `dispersion`, `mean_expression`,
#' `odds_ratio`, `zero_inflation`, `capture_probability`,
#' `capture_odds_ratio`). `capture_efficiency = c(log(M0), sigma)` switches a
#' capture model to the biology-informed prior
#' `eta_c ~ TruncNormal(log M0 - log L_c, sigma, low = 0)`, `nu_c = exp(-eta_c)`.
#'
#' A family name instead of two numbers selects a gene-level hierarchy on a
#' parameter's unconstrained coordinates `x_j ~ Normal(loc, s_j)`. Families:
#' `"gaussian"` (`s_j = softplus(s)`, one scale), `"horseshoe"` (regularised:
#' `s_j = tau c lambda_j / sqrt(c^2 + tau^2 lambda_j^2)`, `tau, lambda_j ~
#' HalfCauchy(1)`, `c^2 ~ InvGamma(2, 8)`) and `"neg"` (`s_j = sqrt(psi_j)`,
#' `psi_j ~ Gamma(1, rate zeta)`, `zeta ~ Gamma(1, 1)`); also as
#' `list(type = family, ...)` with the family's hyper-parameters
#' (`tau0`, `slab_df`, `slab_scale` for the horseshoe: `tau ~
#' HalfCauchy(tau0)`, `c^2 ~ InvGamma(slab_df/2, slab_df slab_scale^2/2)`,
#' defaults 1, 4, 2; `u`, `a`, `tau` for NEG: `psi_j ~ Gamma(u, rate zeta)`,
#' `zeta ~ Gamma(a, rate tau)`, defaults 1, 1, 1). The sparse families' scales are sampled on the log
#' scale and, unlike the original, the target itself is sampled (centred; the
#' same prior, a different parameterisation for the optimiser; with NUTS the
#' centred horseshoe forms a funnel that shows as divergent transitions, so
#' prefer `"gaussian"` there). Their sites
#' are named after the location, e.g. `logit_p_tau`, `logit_p_lambda`,
#' `logit_p_c2` or `logit_p_zeta`, `logit_p_psi`.
#'
#' `priors = list(probability = family)` gives every gene its own `p_g`
#' (`phi_g` under mean_odds), so genes differ in their variance-to-mean
#' ratio: location `logit_p_loc ~ Normal(0, 1)`, gaussian scale `s ~
#' Normal(0, 0.5)` (under mean_odds the sites are `log_phi_loc`, ... on
#' `phi`'s unconstrained coordinate). Hierarchies live on the unconstrained
#' scale, so such a model is fitted with `unconstrained = TRUE` whatever that
#' argument says (as the original does; every other parameter then takes its
#' unconstrained default prior). With capture, the likelihood needs one pass
#' over each batch's cells x genes per step (the zero terms differ by gene);
#' `p_hat` is not reported (it differs by gene), and normalization takes the
#' Gamma route (`lambda_g = gamma_g p_g / (1 - p_g)`, `gamma_g ~ Gamma(r_g, 1)`).
#' `priors = list(zero_inflation = family)` (zinb, zinbvcp) shrinks the gates
#' together (location `logit_gate_loc ~ Normal(-5, 1)`, gaussian scale `s ~
#' Normal(-2, 0.5)`). `priors = list(mean_expression = family)` with
#' `n_components >= 2` shares strength between the components gene by gene:
#' the gene parameter's unconstrained value (`mu`, or `r` under canonical) in
#' every component is centred on a per-gene `log_mu_loc_g ~ Normal(0, 1)`
#' (`log_r_loc` under canonical; gaussian scale `s ~ Normal(-2, 0.5)`).
#'
#' `overdispersion = "bnb"` replaces the negative binomial by the
#' beta-negative-binomial: each count's success probability is
#' `Beta(alpha, kappa_g)` around `p_hat`, `kappa_g = 2 + (r_g + 1) / omega_g`,
#' `alpha = p_hat (kappa_g - 1) / (1 - p_hat)`, which keeps the mean
#' `r p_hat / (1 - p_hat)` and lets the variance grow by about `1 + omega_g`
#' (heavy tails: genes with a few very large counts). `omega_g =
#' softplus(x_g)` (site `bnb_concentration`) with a hierarchy on `x_g` chosen
#' by `priors = list(overdispersion = family)`: `"horseshoe"` by default
#' (location `bnb_concentration_loc ~ Normal(-5, 1)`, so most genes stay close
#' to the NB), or `"gaussian"` (location `bnb_omega_hyper_loc ~ Normal(0, 1)`,
#' scale `softplus(Normal(0, 1))`), as in the original. The fit is
#' unconstrained and each `omega_g` starts at its moment estimate (the gene's
#' squared deviations from the NB start over the NB variance, minus one, in
#' `[0.01, 10]`). Without capture a gene costs
#' one Beta ratio per distinct count; with capture, one per cell and gene per
#' step. Posterior draws, predictive checks and scores, randomized quantile
#' residuals (the BNB's CDF by its pmf recursion), denoising (closed-form
#' moments: the observed count's success probability has the conjugate
#' posterior `Beta(alpha + u, kappa + r)`, and the expected uncaptured count
#' is linear in it; the original integrates numerically), log-likelihoods,
#' model comparison and normalization (the Gamma route of the mean
#' composition) handle BNB fits; biological DE keeps the NB mean, takes the
#' BNB's variance and reports no divergence (`NA`: the BNB's expression
#' distribution has no closed-form one); per-cell expression fractions
#' (`normalize_counts(fit, x)`) go through each count's latent success
#' probability (see [normalize_counts()]).
#'
#' Both extensions combine with mixtures (`n_components >= 2`). A
#' gene-specific `p` is then one `p_kg` per component and gene when `p` is
#' component-specific (the default `mixture_params = "all"`; `p` is a
#' components x genes matrix), else one `p_g` shared by the components.
#' BNB's `omega_g` is shared by the components: it measures the spread a
#' gene has beyond what its cell's component explains. Without capture a
#' cell costs its nonzeros times the components per step; with capture, its
#' genes times the components (every `p_hat_kcg` differs).
#' Hierarchies on other parameters are classed `scribeR_unsupported`
#' errors for now.
#'
#' @section Guides:
#' SVI's default guide is mean-field: every unconstrained coordinate an
#' independent Gaussian. `guide_rank = k` makes the gene parameter's
#' coordinates jointly Gaussian with covariance `W W^T + diag(s^2)` (`W`:
#' genes x `k`; its entropy in closed form by the matrix determinant lemma),
#' one such Gaussian per mixture component or dataset. Given `p` and
#' capture, the NB likelihood is a sum over genes, so on its own this
#' captures the dependence that mixture responsibilities create between
#' genes. `joint_params` puts the listed parameters into one low-rank
#' Gaussian; `joint_params = "biological"` lets every gene's mean move with
#' `p`, the strongest posterior correlation of a shared-`p` model (on a
#' small nbdm simulation the guide's correlations between `r_g` and `p`
#' match a long NUTS run's within 0.05 and its ELBO is higher than
#' mean-field's). The original conditions gene parameters on scalars
#' through per-gene regressions; one joint Gaussian that includes the
#' scalar expresses the same dependence. Unlike the original,
#' `joint_params` does not switch to `unconstrained = TRUE`, the diagonal is
#' parameterised by its log standard deviation, and `W` starts at small
#' fixed pseudo-random values. The factor's single-sample gradients are
#' noisy: at a step size of 0.01 the loss stays a few nats above
#' mean-field's (a 40-gene simulation), at 0.002 it matches or beats it, so
#' prefer smaller steps (or `restore_best`) with a low-rank guide.
#' [get_map()] returns the mode of each
#' parameter's marginal; [get_posterior_samples()] and every downstream
#' analysis draw from the joint Gaussian.
#'
#' `guide_flow = "affine_coupling"` replaces the Gaussian of the same groups
#' (the gene parameter per component or dataset, or the `joint_params`
#' blocks jointly) by a normalizing flow: `x = loc + s * F^-1(z)`,
#' `z ~ N(0, I)`, with `F` a chain of `guide_flow_num_layers` affine coupling
#' layers of alternating parity (conditioner MLPs of widths
#' `guide_flow_hidden_dims`, default `c(64, 64)`, with layer norm, residual
#' skips and a soft-clamped log-scale) and LOFT tails, as in the original.
#' Unlike the original the elementwise affine `loc + s * .` sits outside
#' the chain and starts at the mean-field start, so a new flow guide is the
#' mean-field start and its couplings see standardised values. Such guides
#' express curved (non-Gaussian) dependence, e.g. between `p` and the genes'
#' `r` with `joint_params = "biological"`. [get_map()] of a flow fit is the
#' mean of 1000 draws of each parameter (the original's `flow_map_method =
#' "mean"`); draws are exact. A flow learns the posterior's shape after its
#' marginals have settled, by ELBO gains too small for the default stopping
#' rule to see, so with `guide_flow` the default rule runs at least 5,000
#' steps (give `early_stopping` to choose otherwise). `guide_flow =
#' "spline_coupling"` swaps each layer's affine map for a monotone
#' rational-quadratic spline on `[-3, 3]` (`guide_flow_n_bins` bins, learned
#' boundary slopes, the identity outside), which can bend single
#' coordinates' marginals too. `guide_flow = "iaf"` stacks inverse
#' autoregressive layers (MADE conditioners; one network pass per draw).
#' Unlike the original's, its MADEs have no layer norm and keep their
#' degrees across residual skips: either would break the autoregressive
#' structure that makes `sum(s)` the log-determinant. On a small curved
#' nbdm posterior (`joint_params = "biological"`) the mean absolute error of
#' each parameter's 5-95% quantiles against a long NUTS run, in NUTS
#' standard deviations, is 0.05 for IAF, 0.07 for affine coupling, 0.42 for
#' spline coupling and 0.74 for mean-field. `"maf"` is refused for guides:
#' its draws take one pass per coordinate. `guide_flow` does not need `unconstrained = TRUE`: every guide of
#' scribeR lives on the unconstrained coordinates.
#'
#' `amortize_capture = TRUE` (nbvcp, zinbvcp) replaces the two free guide
#' parameters of every cell's capture by a network of the cell's library
#' size (`capture_input_transformation`, `log1p` by default, standardised
#' over the fit's cells; hidden widths `capture_hidden_dims`, default
#' `c(64, 32)`, `capture_activation` leaky relu) that outputs the location
#' and log-scale of the capture coordinate's Gaussian, the original's
#' unconstrained form. In these models a cell's capture posterior depends on
#' its counts only through its library size, so nothing is lost; and
#' [predict_capture()] gives the capture of cells the fit never saw. Unlike
#' the original's zero-initialised heads (every cell at capture 1/2) the
#' network starts at a least-squares fit of the mean-field start's capture
#' values, so an amortized fit starts where a mean-field fit does. It pairs
#' with the mean-field guide of the other parameters; with a capture prior
#' it amortizes `eta_capture` (the original silently ignores the request).
#'
#' `dataset_key` groups the cells into datasets (batches, samples, donors):
#' a column of `colData()` / `meta.data`, or a vector with one value per
#' cell. Parameters with a dataset-level family, `priors = list(<param> =
#' list(<key> = family))` (the key's column name, or `dataset` when
#' `dataset_key` is a vector), get one value per dataset, shrunk toward a
#' common location; `dataset_key` alone means `priors = list(mean_expression
#' = list(<key> = "gaussian"))`. The mean (`mu`, or `r` under canonical):
#' `log mu_g^(d) ~ Normal(loc_g, s)` with a per-gene `log_mu_dataset_loc_g
#' ~ Normal(0, 1)` and gaussian scale `softplus(Normal(-2, 0.5))`; the exp
#' link is used for it whatever `positive_transform` says, so dataset effects
#' are multiplicative (as in the original). The probability (`p`, or `phi`
#' under mean_odds), by `prob_dataset_mode`: `"gene_specific"` (default)
#' `p_g^(d)` with a per-gene location, `"scalar"` one `p^(d)` per dataset;
#' location `logit_p_dataset_loc ~ Normal(0, 1)`, scale `softplus(Normal(0,
#' 0.5))`. The gate (zinb, zinbvcp): `priors = list(zero_inflation =
#' list(<key> = family))` gives `gate_g^(d)` around one location
#' `logit_gate_dataset_loc ~ Normal(-5, 0.01)` (the original's), scale
#' `softplus(Normal(-2, 0.5))`. Each cell's likelihood reads its own dataset's values, per
#' dataset and gene by sufficient statistics without capture (one extra pass
#' over each dataset's count histogram per step); with capture, one pass
#' over the batch's cells x genes. Dataset-specific values are `datasets x
#' genes` matrices in [get_map()] (columns of a matrix in `rowData()` after
#' [add_scribe_fit()]); predictive checks, denoising, log-likelihoods and
#' residuals read each cell's own dataset. A single dataset drops the
#' dataset level with a warning (a probability or gate family becomes
#' gene-level).
#' With `overdispersion = "bnb"` the excess dispersion `omega_g` is the
#' gene's in every dataset. Dataset hierarchies with mixtures, several grouping factors and
#' `prob_dataset_mode = "two_level"` are `scribeR_unsupported` errors for
#' now.
#'
#' @section Mixtures:
#' `n_components = K` (K >= 2) makes every cell's gene vector come from one of
#' K components with weights `w ~ Dirichlet(alpha)` (`priors = list(mixing =
#' alpha)`, default 1; honoured, unlike the original). `mixture_params`
#' chooses which parameters are component-specific: `"all"` (default: the
#' gene parameter, the scalar parameter and, for zero-inflated models, the
#' gate), `"biological"` (gene + scalar), `"mean"` (gene parameter), `"prob"`
#' (scalar), `"gate"`, or a character vector of parameter names. Capture is
#' always shared. Mixing weights have a logistic-normal guide. Components
#' start from a split of the cells along the first principal component of
#' log-normalised expression refined by hard EM.
#'
#' @section Variational guide:
#' Mean-field: each unconstrained coordinate has an independent Normal, so
#' `r`/`mu` have LogNormal guides (as in the original), while probabilities
#' have logit-normal guides and odds log-normal ones (the original uses
#' Beta/BetaPrime, which need implicit reparameterization gradients; the
#' transformed-Normal families are reparameterized exactly). The guide starts
#' at a method-of-moments point with scales from the diagonal of the
#' log-posterior Hessian, so fits converge in far fewer steps than from the
#' prior.
#'
#' @section Stopping:
#' By default (`early_stopping = NULL`) SVI and Laplace fits stop when they
#' have settled, and `n_steps` is only the maximum. Every `window` (100)
#' steps the mean loss of the window is compared with that of the previous
#' window, and the window means of the parameters with theirs. The loss has
#' settled when it improved by no more than twice its standard error plus
#' `loss_rtol` (1e-6) of its size plus `loss_ptol` (0.01) nats per
#' parameter (with millions of counts, an improvement of a hundredth of a nat
#' per parameter and window is still far above the noise, but it moves no
#' parameter visibly; the parameters' own test decides then); a parameter
#' has settled when it moved by
#' less than `param_tol` (0.25) of its scale (SVI: its posterior standard
#' deviation under the guide, at least 0.01 on the unconstrained scale; for
#' per-gene and per-cell parameters 99% of them; Laplace: 1% of its size,
#' with the rotation-invariant row norms of `W`). Once ten windows are at
#' hand, a parameter's movement is its mean movement per window over them,
#' and a parameter whose net movement over them is within four times the
#' movement of a single window counts as settled: an optimiser with a fixed
#' step size jitters around the optimum, and that jitter, however wide, is
#' not a reason to go on. The fit has converged when the loss and every
#' parameter settled in two windows in a row. When the loss is flat within
#' its noise but some parameters keep drifting for `patience` (5) windows,
#' the fit stops and names them as weakly identified (not before ten
#' windows, so that drift can be told from jitter; a loss that is only below
#' `loss_ptol` waits for the parameters instead). No fit stops before `min_steps` (300).
#' `show()` and [plot_loss()] say why and when a fit stopped;
#' `fit@diagnostics$stop` holds the verdict and each group's latest drift
#' (in units of its tolerance). Change the settings with
#' `early_stopping = list(rule = "settled", window = 200, ...)`;
#' `early_stopping = FALSE` runs all `n_steps`.
#'
#' Some quantities are identified by the model's structure only in
#' combination: in `nbvcp` and `zinbvcp` without a capture prior the data
#' determine each cell's `p_hat`, not `p` and `p_capture` apart. Along that
#' ridge a fit moves too slowly for any stopping rule to see, and the
#' mean-field spreads do not show it. So the rule does not wait for `p`
#' (`phi`) and the capture parameters of these models (their drift is still
#' in `fit@diagnostics$stop$drift`), and `show()` says that they are
#' identified only together; read `p_hat`, or give `priors =
#' list(capture_efficiency = ...)`.
#'
#' `early_stopping = TRUE`, `"original"` or a list without `rule` use the
#' original's rule instead: `list(patience = 500, min_delta = 1, min_delta_pct
#' = NULL, check_every = 100, warmup = 5000, smoothing_window = 100,
#' restore_best = TRUE, enabled = TRUE)` (defaults shown); every
#' `check_every` steps after `warmup`, the mean of the last `smoothing_window`
#' finite losses is compared with the best so far.
#'
#' @section MCMC:
#' `inference_method = "mcmc"` samples the exact posterior with the No-U-Turn
#' sampler (nuts-rs, the sampler of nutpie) in float64 on the unconstrained
#' parameters (the links' Jacobians included), on the full data (no
#' mini-batches) with mixtures marginalised. `n_chains` chains run in
#' parallel; each chain's random stream derives from `seed` and its index, so
#' draws do not depend on `num_threads`. Defaults follow the original: target
#' acceptance 0.8, maximum tree depth 10, an adapted diagonal mass matrix and
#' dual-averaging step size. nuts-rs adapts the mass matrix from draws and
#' gradients in growing windows (its schedule, not Stan's); `mcmc_config =
#' list(dense_mass = TRUE)` adds a low-rank correction for correlated
#' posteriors. Chains start uniformly in (-2, 2) on the unconstrained scale,
#' or, with `svi_init`, around an SVI fit's point estimate (mapped across
#' parameterizations through the canonical `r`, `p`, capture and gate),
#' within one SVI posterior standard deviation per coordinate, with the
#' sampler preconditioned by the SVI scales (where the SVI and MCMC models
#' share parameterization; otherwise by the diagonal of the log-posterior
#' Hessian). Per-cell capture parameters make the dimension grow with the
#' number of cells; a warning says so when it exceeds
#' `getOption("scribeR.mcmc_warn_dim", 20000)`.
#'
#' @section Laplace:
#' `model = "pln", inference_method = "laplace"` fits the Poisson log-normal
#' model `x_c ~ N(mu, W W^T + diag(d))`, `u_cg ~ Poisson(exp(x_cg))`. Each
#' cell's MAP `x_c` comes from damped Newton steps, warm-started across outer
#' steps: at most `n_newton_steps` per cell and step, and none once the cell's
#' gradient sup-norm is at most `newton_tolerance` (the original always runs
#' all of them and uses the tolerance only for diagnostics; a warm-started
#' cell usually needs one or two, and `show()` reports the mean). Every solve
#' uses nested Woodbury identities, so no genes x genes matrix is formed and a
#' Newton step costs O(G k^2 + k^3) per cell. The
#' global `mu`, `W` and `d` follow the optimiser on the Laplace approximation
#' of the marginal likelihood, with the MAPs held fixed in its gradient. In
#' full batch (the default) that is L-BFGS: each step searches along the
#' quasi-Newton direction, every trial point a Newton sweep over all cells,
#' and accepts the first with a sufficient decrease of the loss at the
#' re-solved MAPs; it stops (reason "line_search") when neither that direction
#' nor the gradient lowers the loss any more. On pbmc3k (2000 genes, k = 16)
#' it reached in 100 steps a loss that Adam at 1e-3 (the original's default)
#' had not reached after 1500. Its rest point differs slightly from the
#' first-order optimisers': they stop where the fixed-MAP gradient vanishes,
#' L-BFGS where the loss at re-solved MAPs stops falling (on a simulated PLN,
#' 0.014 in `mu` and 5e-6 of the loss). `optimizer_config = list(name =
#' "adam", step_size = 1e-3)` gives the original's optimiser; mini-batches
#' (`batch_size`) need a first-order one and use Adam 1e-3 by default. The start is a PCA of
#' `log(u + 1)`, after which `mu` is moved to the mean of the cells' MAPs
#' (the exact maximiser in `mu` with the MAPs fixed), alternating with Newton
#' sweeps over all cells until it moves by less than 0.01 (at most
#' `laplace_config$mu_warm_rounds`, 10): the `log(u + 1)` start sits several units too high for sparse
#' genes, which cost thousands of Adam steps (not for `lnm` with `d_mode =
#' "low_rank"`, nor a `mu` that a cascade fixes or puts a prior on; the
#' original has no such step). Cells whose ELBO turns non-finite are left out of that step;
#' a loss that turns non-finite or grows 1000-fold stops the fit with the best
#' parameters restored. After the last step every cell gets a final Newton
#' sweep, and cells whose gradient norm stays above `10 x newton_tolerance`
#' are re-solved with more iterations and damping. `early_stopping` applies
#' the SVI rule to the outer loss (and restores the smoothed-best state when
#' `restore_best`); without it nothing is restored (the original restores
#' silently even with early stopping off). `priors =
#' list(capture_efficiency = c(log(M0), sigma))` adds the capture block:
#' `u_cg ~ Poisson(exp(x_cg - eta_c))` with
#' `eta_c ~ TruncNormal(log M0 - log L_c, sigma, low = 0)`, solved jointly with
#' `x_c` (Schur complement of the `eta` block; at the bound `eta = 0.001` the
#' step holds `eta` and moves `x` alone). `priors = list(loadings = list(type
#' = ...))` puts a shrinkage prior on the gene-centred loadings
#' ([get_W_compositional()]): `"gaussian"` (`scale`), `"horseshoe_columnwise"`
#' (`tau_scale`, `lambda_min`, `tau_min`, `init_scale`) or `"neg_columnwise"`
#' (normal-exponential-gamma: `alpha`, `beta`, `psi_min`, `gamma_min`,
#' `init_scale`); its scales are fitted with the globals and it is not scaled
#' by N/B. See [w_prior_diagnostics()].
#'
#' `model = "nbln"` replaces the Poisson by a negative binomial with mean
#' `exp(x_cg - eta_c)` and a per-gene dispersion `r_g` fitted with the
#' globals (start: moments). The recommended NBLN workflow is a cascade from
#' an SVI fit of `nbvcp` to the same data: `informative_priors_from = svi`
#' turns 1000 posterior draws into Normal priors on `softplus^-1(r)`,
#' `mu = log(mean expression)` and each cell's `eta = -log(p_capture)`
#' (scale = sd x `informative_priors_tau`, floored at 1e-4), and
#' `informative_priors_freeze` (default `c("r", "eta")`; aliases
#' `dispersion`, `expression`/`mean_expression`, `capture_efficiency`;
#' `character(0)` for none) fixes those quantities at the SVI estimate
#' instead. A frozen `eta` is an offset, so Newton solves for `x` alone. The
#' capture conversion is `eta = log(1 + phi_capture)` (the original's
#' `phi/(1 + phi)` is a slip).
#'
#' `model = "lnm"` (logistic-normal multinomial) models each cell's
#' composition in additive log-ratio coordinates against a reference gene
#' (the one with the most counts): `y_c ~ N(mu, W W^T + diag(d))` over the
#' other G - 1 genes, `u_c ~ Multinomial(N_c, softmax(y_c, 0))`, and the
#' totals `N_c ~ NB(mean mu_T, shape r_T)`. Newton steps use
#' Sherman-Morrison on top of Woodbury, with the original's denominator
#' floor. `model = "lnmvcp"` adds capture through the totals,
#' `N_c ~ NB(mean mu_T exp(-eta_c), r_T)` with
#' `eta_c ~ N(log M0 - log L_c, sigma)` from the required
#' `priors = list(capture_efficiency = c(log(M0), sigma))`; `eta_c` is a
#' scalar Newton problem of its own. Per-cell posteriors of LNM draw the
#' log-ratios from `(A - N rho rho^T)^-1` (Sherman-Morrison on the Woodbury
#' sampler) and counts from the NB totals and the multinomial. Loadings priors
#' are not available for LNM/LNMVCP (as in the original).
#'
#' @param x Counts: see Description.
#' @param model One of `"nbdm"`, `"nbvcp"`, `"zinb"`, `"zinbvcp"` (SVI and
#'   MCMC) or `"pln"`, `"nbln"`, `"lnm"`, `"lnmvcp"` (Laplace and the
#'   VAE). Default
#'   `"nbvcp"` (or the model implied by the flags).
#' @param inference_method `"svi"` (default), `"mcmc"` (NUTS; see the MCMC
#'   section), `"laplace"` (the log-normal models; see the Laplace section)
#'   or `"vae"` (amortized inference with a latent embedding per cell, for
#'   `nbdm`, `nbvcp`, `zinb`, `zinbvcp` in every parameterization and for
#'   `pln`, `nbln` and `lnm` with a linear decoder; see [ScribeVAEResults-class]
#'   and [get_latent_embeddings()]; no early stopping, as in the original). Arguments that only other
#'   engines read (say `latent_dim` or `n_samples` for SVI, `n_steps` for
#'   MCMC) are an error when given a value other than their default, rather
#'   than ignored.
#' @param parameterization See the Parameterizations section.
#' @param unconstrained Use transformed-Normal priors and guides.
#' @param positive_transform `"softplus"` (default) or `"exp"`: the link of
#'   positive parameters when `unconstrained = TRUE`.
#' @param priors Named list of prior hyper-parameters; see Priors.
#' @param zero_inflation,variable_capture Model flags, used when `model` is not given.
#' @param n_components Number of mixture components (`NULL`: no mixture).
#' @param mixture_params Which parameters are component-specific; see Mixtures.
#' @param overdispersion `"none"` (negative binomial) or `"bnb"`
#'   (beta-negative-binomial with per-gene excess dispersion); see Priors.
#' @param dataset_key `NULL`, the name of a cell-level column of `x`
#'   (`colData()` / `meta.data`), or a vector or factor with one value per
#'   cell: groups the cells into datasets with dataset-level priors; see
#'   Priors.
#' @param prob_dataset_mode How `p` varies across datasets when it has a
#'   dataset-level family: `"gene_specific"` (one per dataset and gene) or
#'   `"scalar"` (one per dataset).
#' @param n_steps Number of optimisation steps (default 50000; SVI and Laplace).
#' @param batch_size Cells per step; `NULL` = all cells.
#' @param optimizer_config `NULL` (Adam, step size 1e-3; L-BFGS for Laplace
#'   fits in full batch) or a list with
#'   `name` (`"adam"`, `"clipped_adam"`, `"adagrad"`, `"rmsprop"`, `"sgd"`,
#'   `"momentum"`), `step_size` (required) and optionally `b1`, `b2`, `eps`,
#'   `momentum`, `gamma`, `grad_clip_norm` (clipped_adam only, default 10).
#'   Laplace fits in full batch also take `list(name = "lbfgs", memory = 10)`
#'   (the number of curvature pairs kept; no step size).
#' @param stable_update Skip updates with a non-finite loss or gradient.
#' @param restore_best Return the parameters of the best smoothed loss.
#' @param guide_rank `NULL` (mean-field guide) or a whole number `k`: a
#'   low-rank guide, `N(loc, W W^T + diag(s^2))` with a rank-`k` factor `W`,
#'   over the gene parameter (`r` or `mu`; one Gaussian per mixture component
#'   or dataset) or, with `joint_params`, over those parameters jointly; see
#'   Guides.
#' @param joint_params With `guide_rank`: the parameters of one joint
#'   low-rank Gaussian, as a shorthand (`"biological"`: the gene parameter
#'   and `p`/`phi`; `"mean"`, `"prob"`, `"gate"`, `"all"`: every gene-level
#'   and scalar parameter) or a vector of names (internal or descriptive,
#'   e.g. `c("mean_expression", "probability")`).
#' @param guide_flow `NULL`, `"affine_coupling"`, `"spline_coupling"` or
#'   `"iaf"` (also `"coupling_affine"`, `"coupling_spline"`): a normalizing-flow
#'   guide over the same groups as `guide_rank`; see Guides. Exclusive with
#'   `guide_rank`.
#' @param guide_flow_n_bins Bins of each spline (spline coupling; default 8).
#' @param guide_flow_num_layers,guide_flow_hidden_dims,guide_flow_activation
#'   The flow's coupling layers (default 4), its conditioners' hidden widths
#'   (`NULL`: `c(64, 64)`) and their activation (`"relu"`, `"gelu"`,
#'   `"silu"`, `"tanh"`, `"softplus"`, `"elu"`, `"leaky_relu"`).
#' @param guide_flow_layer_norm,guide_flow_residual,guide_flow_soft_clamp,guide_flow_loft
#'   Layer norm and residual skips in the conditioners, the soft clamp of
#'   each layer's log-scale (else a hard clip at +-5) and the LOFT tail
#'   layer: all `TRUE` by default, as in the original.
#' @param amortize_capture `TRUE` to predict each cell's capture guide from
#'   its library size with a small network (nbvcp, zinbvcp); see Guides.
#' @param capture_hidden_dims,capture_activation,capture_input_transformation
#'   The capture amortizer's hidden widths (`NULL`: `c(64, 32)`), activation
#'   (default `"leaky_relu"`) and input transform of the library size
#'   (`"log1p"`, `"log"`, `"sqrt"`, `"identity"`).
#' @param early_stopping `NULL` (stop when settled), `FALSE` (run all
#'   `n_steps`), `TRUE` or `"original"` (the original's rule) or a list of
#'   settings; see Stopping.
#' @param n_samples,n_warmup,n_chains MCMC: kept draws per chain (default
#'   2000), warmup draws per chain (default 1000) and chains (default 1).
#' @param svi_init MCMC: a [ScribeSVIResults-class] fit to the same data to
#'   start the chains from; see the MCMC section.
#' @param mcmc_config MCMC: `NULL` or a list with any of `target_accept_prob`
#'   (0.8), `max_tree_depth` (10), `dense_mass` (`FALSE`), `init_radius` (2,
#'   the half-width of uniform starts) and `init_spread` (1, the half-width of
#'   starts around `svi_init`, in SVI standard deviations).
#' @param latent_dim Laplace: dimension `k` of the loadings `W` in
#'   `Sigma = W W^T + diag(d)`; VAE: dimension of the embedding (default 10
#'   for both). `vae_latent_dim` is its legacy alias; giving both is an
#'   error.
#' @param vae_latent_dim Legacy alias of `latent_dim`.
#' @param vae_encoder_hidden_dims,vae_decoder_hidden_dims,vae_activation VAE:
#'   the encoder's hidden widths (`NULL`: `c(128, 64)`), the decoder's
#'   (`NULL`: `c(64, 128)`, applied in reverse order as in the original: z
#'   -> 128 -> 64 -> heads; the log-normal models have a linear decoder
#'   and take none) and their activation (`"relu"`, `"gelu"`,
#'   `"silu"`, `"tanh"`, `"elu"`, `"leaky_relu"`). `latent_dim` (default
#'   10) is the embedding's dimension.
#' @param vae_input_transform,vae_standardize VAE: the encoder's transform of
#'   the counts, `"log1p"` (`log(1 + u)`, the default), `"log"` (`log(u +
#'   1e-8)`), `"sqrt"`, `"identity"`, `"log1p_prop"` (`log(1 + u / L)`, `L`
#'   the cell's total), `"log1p_norm"` (`log(1 + 1e4 u / L)`) or `"clr"`
#'   (`log(u + 0.5)` centred per cell; the default `"log1p"` becomes
#'   `"log1p_prop"` for `lnm`, `lnmvcp` and PLN or NBLN with a capture
#'   prior, whose latents describe proportions, as in the original); and whether the transformed input is
#'   standardized per gene by the training cells' mean and standard
#'   deviation (floored at 1e-3; `NULL`: no for the negative-binomial
#'   models, yes for the log-normal models, as in the original). The encoder still reads only the nonzero counts: the
#'   transform's value at zero and the standardization enter its first layer
#'   as dense rank-one terms. New cells are standardized by the training
#'   statistics.
#' @param vae_flow_type,vae_flow_num_layers,vae_flow_hidden_dims VAE: the
#'   latent prior, `"none"` (standard normal) or a learned flow
#'   (`"affine_coupling"`, `"spline_coupling"`, `"maf"`; also the original's
#'   `"coupling_affine"`, `"coupling_spline"`), its layers and conditioner
#'   widths (`NULL`: `c(64, 64)`).
#' @param kl_annealing,kl_annealing_warmup VAE: whether the weight of every
#'   latent term of the loss rises linearly from 0 to 1 over the first
#'   `kl_annealing_warmup` steps (on by default, as in the original).
#' @param laplace_config Laplace: `NULL` or a list with any of
#'   `n_newton_steps` (5), `damping` (0.01), `newton_tolerance` (1e-4),
#'   `newton_max_step` (5), `convergence_action` (`"warn"`, `"raise"` or
#'   `"ignore"`), `rescue_diverged_cells` (`TRUE`),
#'   `rescue_threshold_multiplier` (10), `rescue_n_newton` (50),
#'   `rescue_damping_multiplier` (10), `mu_warm_rounds` (10: the most
#'   rounds that start `mu` at the mean of the MAPs; 0 turns them off); see
#'   the Laplace section.
#' @param informative_priors_from NBLN by Laplace: an SVI fit
#'   ([ScribeSVIResults-class]) of an NB model with capture to the same data,
#'   whose posterior becomes the priors (the cascade; see the Laplace section).
#' @param informative_priors_tau Widening factor of the cascade priors' scales.
#' @param informative_priors_freeze Quantities fixed at the SVI estimate:
#'   `NULL` (default `c("r", "eta")`), `character(0)`, or any of `"r"`, `"mu"`,
#'   `"eta"` and their aliases.
#' @param d_mode LNM by Laplace: `"learned"` (default; `Sigma = W W^T +
#'   diag(d)`, Newton over the G - 1 log-ratios) or `"low_rank"` (`y = mu +
#'   W z`, `z ~ N(0, I)`, Newton over `z`, `d` unused).
#' @param seed Integer seed. `NULL` draws one from R's RNG, so `set.seed()`
#'   makes fits reproducible; the seed used is stored in the result.
#' @param num_threads Threads for the core; `NULL` = all cores. Results do not
#'   depend on it.
#' @param verbose Show a progress line.
#' @param drop_empty Drop cells without counts instead of stopping.
#' @param assay Assay to read from a `SummarizedExperiment` (default
#'   `"counts"`) or Seurat object (default `"RNA"`).
#' @param ... Must be empty: unknown arguments are an error that suggests
#'   the closest argument name.
#' @return A [ScribeSVIResults-class], [ScribeMCMCResults-class] or [ScribeLaplaceResults-class] object.
#' @seealso [scribe_counts()] for the supported input classes.
#' @examples
#' counts <- scribe_example_data()
#' fit <- scribe_fit(counts, model = "nbdm", n_steps = 300, seed = 1, verbose = FALSE)
#' fit
#' head(get_map(fit)$r)
#' small <- counts[order(-Matrix::rowSums(counts))[1:10], 1:100]
#' mc <- scribe_fit(small, model = "nbdm", inference_method = "mcmc", n_samples = 200,
#'                  n_warmup = 200, n_chains = 2, seed = 1, verbose = FALSE, drop_empty = TRUE)
#' print_summary(mc)
#' @export
scribe_fit <- function(x, model = NULL, inference_method = "svi", parameterization = "canonical",
                       unconstrained = FALSE, positive_transform = "softplus", priors = NULL,
                       zero_inflation = NULL, variable_capture = NULL, n_components = NULL,
                       mixture_params = "all", overdispersion = "none", dataset_key = NULL,
                       prob_dataset_mode = "gene_specific", guide_rank = NULL, joint_params = NULL,
                       guide_flow = NULL, guide_flow_num_layers = 4L, guide_flow_hidden_dims = NULL,
                       guide_flow_activation = "relu", guide_flow_n_bins = 8L, guide_flow_layer_norm = TRUE,
                       guide_flow_residual = TRUE, guide_flow_soft_clamp = TRUE, guide_flow_loft = TRUE,
                       amortize_capture = FALSE, capture_hidden_dims = NULL, capture_activation = "leaky_relu",
                       capture_input_transformation = "log1p",
                       n_steps = 50000L, batch_size = NULL, optimizer_config = NULL,
                       stable_update = TRUE, restore_best = FALSE, early_stopping = NULL,
                       n_samples = 2000L, n_warmup = 1000L, n_chains = 1L, svi_init = NULL, mcmc_config = NULL,
                       latent_dim = NULL, vae_latent_dim = NULL, vae_encoder_hidden_dims = NULL,
                       vae_decoder_hidden_dims = NULL, vae_activation = "relu", vae_input_transform = "log1p",
                       vae_standardize = NULL, vae_flow_type = "none",
                       vae_flow_num_layers = 4L, vae_flow_hidden_dims = NULL, kl_annealing = TRUE,
                       kl_annealing_warmup = 2000L, laplace_config = NULL,
                       informative_priors_from = NULL, informative_priors_tau = 1,
                       informative_priors_freeze = NULL, d_mode = NULL,
                       seed = NULL, num_threads = getOption("scribeR.num_threads", 1L),
                       verbose = interactive(), drop_empty = FALSE, assay = NULL, ...) {
  check_unknown_args(list(...))
  # Every documented argument, by name, for the engines (the signature above is the one list).
  args <- mget(setdiff(fit_arg_names(), "assay"), envir = environment())
  counts <- scribe_counts(x, assay = assay)
  if (isTRUE(verbose) && !is.null(attr(counts, "scribe_assay"))) {
    cli::cli_inform("Using assay {.val {attr(counts, 'scribe_assay')}}.")
  }
  args$dataset_key <- resolve_dataset_key(x, dataset_key, ncol(counts))
  .scribe_fit_counts(counts, args)
}

#' Extract a genes x cells count matrix from supported inputs
#'
#' The input side of [scribe_fit()]: methods for base matrices (integer or
#' double), `dgCMatrix` and other `Matrix` classes, `DelayedMatrix` (read in
#' column blocks straight into sparse form), `SummarizedExperiment` /
#' `SingleCellExperiment` (`assay`, default `"counts"`, a name or a number)
#' and Seurat objects (counts of `assay`, default `"RNA"`). Define a method
#' for a new class to make `scribe_fit()` accept it.
#'
#' @param x An object holding counts.
#' @param assay Assay to use (only for objects with several).
#' @param ... Unused.
#' @return A `dgCMatrix` (genes x cells); for objects with assays, the used
#'   assay is recorded in the attribute `"scribe_assay"`.
#' @examples
#' m <- matrix(rpois(20, 2), 4, 5)
#' scribe_counts(m)
#' @export
setGeneric("scribe_counts", function(x, assay = NULL, ...) standardGeneric("scribe_counts"))

no_assay <- function(assay) {
  if (!is.null(assay)) {
    abort_input("{.arg assay} only applies to SummarizedExperiment and Seurat input, not to a count matrix.")
  }
}

#' @rdname scribe_counts
setMethod("scribe_counts", "matrix", function(x, assay = NULL, ...) {
  no_assay(assay)
  as_counts_dgc(x)
})

#' @rdname scribe_counts
setMethod("scribe_counts", "Matrix", function(x, assay = NULL, ...) {
  no_assay(assay)
  as_counts_dgc(x)
})

#' @rdname scribe_counts
setMethod("scribe_counts", "SummarizedExperiment", function(x, assay = NULL, ...) {
  if (is.null(assay)) assay <- "counts"
  m <- as_counts_dgc(counts_from_se(x, assay))
  attr(m, "scribe_assay") <- assay
  m
})

#' @rdname scribe_counts
setMethod("scribe_counts", "ANY", function(x, assay = NULL, ...) {
  if (inherits(x, "Seurat")) {
    if (is.null(assay)) assay <- "RNA"
    m <- as_counts_dgc(counts_from_seurat(x, assay))
    attr(m, "scribe_assay") <- assay
    return(m)
  }
  no_assay(assay)
  as_counts_dgc(x)
})

.nb_models <- c("nbdm", "nbvcp", "zinb", "zinbvcp")
.lognormal_models <- c("pln", "nbln", "lnm", "lnmvcp")
.parameterizations <- c(canonical = "canonical", standard = "canonical", mean_prob = "mean_prob",
                        linked = "mean_prob", mean_odds = "mean_odds", odds_ratio = "mean_odds")

# The arguments of scribe_fit() (besides `x` and `...`).
fit_arg_names <- function() setdiff(names(formals(scribe_fit)), c("x", "..."))

# The engines: the models each one fits and the function that fits them
# (by name, defined in R/svi.R, R/mcmc.R, R/laplace.R). `fit = NULL`: not
# available in this version. An engine function takes the validated counts,
# the dropped cells, the model name, every argument of scribe_fit() and the
# shared settings resolved here.
.engines <- list(
  svi = list(models = .nb_models, fit = "fit_svi"),
  mcmc = list(models = .nb_models, fit = "fit_mcmc"),
  laplace = list(models = .lognormal_models, fit = "fit_laplace"),
  vae = list(models = c(.nb_models, .lognormal_models), fit = "fit_vae")
)

# Arguments that only some engines read. Given a value other than its default
# for an engine that does not read it, an argument is an input error rather
# than silently ignored (a user who sets `latent_dim` for an SVI fit expects
# it to do something).
.engine_only_args <- list(
  parameterization = c("svi", "mcmc", "vae"), unconstrained = c("svi", "mcmc"), positive_transform = c("svi", "mcmc"),
  n_components = c("svi", "mcmc"), mixture_params = c("svi", "mcmc"), overdispersion = c("svi", "mcmc"),
  dataset_key = c("svi", "mcmc"), prob_dataset_mode = c("svi", "mcmc"), guide_rank = "svi", joint_params = "svi",
  guide_flow = "svi", guide_flow_num_layers = "svi", guide_flow_hidden_dims = "svi",
  guide_flow_activation = "svi", guide_flow_n_bins = "svi", guide_flow_layer_norm = "svi", guide_flow_residual = "svi",
  guide_flow_soft_clamp = "svi", guide_flow_loft = "svi", amortize_capture = "svi",
  capture_hidden_dims = "svi", capture_activation = "svi", capture_input_transformation = "svi",
  n_steps = c("svi", "laplace", "vae"), batch_size = c("svi", "laplace", "vae"),
  optimizer_config = c("svi", "laplace", "vae"), early_stopping = c("svi", "laplace"),
  stable_update = c("svi", "vae"), restore_best = "svi",
  n_samples = "mcmc", n_warmup = "mcmc", n_chains = "mcmc", svi_init = "mcmc", mcmc_config = "mcmc",
  latent_dim = c("laplace", "vae"), vae_latent_dim = c("laplace", "vae"), laplace_config = "laplace",
  vae_encoder_hidden_dims = "vae", vae_decoder_hidden_dims = "vae", vae_activation = "vae",
  vae_input_transform = "vae", vae_standardize = "vae", vae_flow_type = "vae",
  vae_flow_num_layers = "vae", vae_flow_hidden_dims = "vae", kl_annealing = "vae", kl_annealing_warmup = "vae",
  informative_priors_from = "laplace", informative_priors_tau = "laplace",
  informative_priors_freeze = "laplace", d_mode = "laplace"
)

check_engine_args <- function(a, method) {
  defaults <- formals(scribe_fit)
  given <- vapply(names(.engine_only_args), function(n) {
    !method %in% .engine_only_args[[n]] && differs_from_default(a[[n]], eval(defaults[[n]]))
  }, NA)
  if (!any(given)) return(invisible())
  nms <- names(given)[given]
  used_by <- vapply(nms, function(n) paste(.engine_only_args[[n]], collapse = " and "), "")
  abort_input(c(
    "{.arg {nms}} {?does/do} not apply to {.code inference_method = \"{method}\"}.",
    stats::setNames(paste0("`", nms, "` is read by ", used_by, "."), rep("i", length(nms)))
  ))
}

differs_from_default <- function(value, default) {
  if (is.null(value) || is.null(default)) return(!is.null(value) || !is.null(default))
  if (is.numeric(value) && is.numeric(default) && length(value) == 1L && length(default) == 1L) {
    return(is.na(value) || value != default)
  }
  !identical(value, default)
}

# The matrix-level worker of scribe_fit(): checks what every engine shares,
# then dispatches through the engine table.
.scribe_fit_counts <- function(counts, args) {
  a <- args
  model <- resolve_model(a$model, a$zero_inflation, a$variable_capture)
  method <- match_choice(a$inference_method, names(.engines), "inference_method")
  engine <- .engines[[method]]
  if (!model %in% engine$models) {
    if (model %in% .lognormal_models) {
      abort_input(c(
        "{.val {model}} is a log-normal model; it is fitted by {.code inference_method = \"laplace\"} or {.code \"vae\"}.",
        "i" = "SVI and MCMC fit the NB models ({.val {(.nb_models)}})."
      ))
    }
    abort_input(c("{.code inference_method = \"{method}\"} fits the log-normal models ({.val {(.lognormal_models)}}), not {.val {model}}.",
                  "i" = "Fit {.val {model}} by {.val svi} or {.val mcmc}."))
  }
  if (is.null(engine$fit)) {
    available <- names(Filter(function(e) !is.null(e$fit), .engines))
    abort_unsupported("{.code inference_method = \"{method}\"} is not available in this version of scribeR; use {.val {available}}.")
  }
  check_engine_args(a, method)
  a$parameterization <- .parameterizations[[match_choice(a$parameterization, names(.parameterizations),
                                                         "parameterization")]]
  a$positive_transform <- match_choice(a$positive_transform, c("softplus", "exp"), "positive_transform")
  check_flag(a$unconstrained, "unconstrained")
  check_flag(a$stable_update, "stable_update")
  check_flag(a$restore_best, "restore_best")
  check_flag(a$verbose, "verbose")
  check_flag(a$drop_empty, "drop_empty")
  check_number(a$n_steps, "n_steps", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
  counts <- name_counts(counts)
  v <- validate_counts(counts, drop_empty = a$drop_empty)
  if (!is.null(a$dataset_key)) {
    a$dataset <- dataset_codes(a$dataset_key, !colnames(counts) %in% v$dropped_cells)
  }
  counts <- v$counts
  check_orientation(counts)
  if (!is.null(a$batch_size)) {
    check_number(a$batch_size, "batch_size", "a whole number from 1 to 2147483647", function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
    if (a$batch_size > ncol(counts)) {
      abort_input("{.arg batch_size} ({a$batch_size}) is larger than the number of cells ({ncol(counts)}).")
    }
  }
  shared <- list(seed = resolve_seed(a$seed), num_threads = resolve_threads(a$num_threads), verbose = a$verbose,
                 counts_summary = list(cell_totals = unname(Matrix::colSums(counts)),
                                       gene_totals = unname(Matrix::rowSums(counts))))
  get(engine$fit, mode = "function")(counts, v$dropped_cells, model, a, shared)
}

# The genes x cells slots the core reads.
counts_slots <- function(m) list(n_genes = nrow(m), n_cells = ncol(m), p = m@p, i = m@i, x = m@x)

# Gene and cell names of fitted counts (named by name_counts()).
fit_names <- function(counts) list(genes = rownames(counts), cells = colnames(counts))

# The NB-family model description the core reads (SVI and MCMC).
nb_model_spec <- function(model, a, n_cells) {
  parameterization <- a$parameterization
  priors <- a$priors
  mixing <- NULL
  if (is.list(priors) && !is.null(priors$mixing)) {
    mixing <- priors$mixing
    priors$mixing <- NULL
    if (is.null(a$n_components)) abort_input("{.code priors$mixing} needs a mixture model ({.arg n_components} >= 2).")
    check_number(mixing, "priors$mixing", "a positive number (the Dirichlet concentration)", function(v) v > 0)
  }
  families <- split_prior_families(priors, model, parameterization, a$dataset$name)
  scalar <- if (parameterization == "mean_odds") "phi" else "p"
  gene <- if (parameterization == "canonical") "r" else "mu"
  dsp <- dataset_spec(families, a, gene, scalar)
  families <- dsp$families
  priors <- families$priors
  hier <- families$hierarchies
  spec <- list(
    model = model, parameterization = parameterization,
    # Hierarchical priors live on the unconstrained scale (see ?scribe_fit, Priors).
    unconstrained = a$unconstrained || length(hier) > 0L || !is.null(dsp$fields),
    positive_transform = a$positive_transform,
    priors = resolve_priors(if (length(priors)) priors else NULL, model, parameterization)
  )
  if (!is.null(dsp$fields)) {
    if (!is.null(a$n_components)) abort_unsupported("Dataset hierarchies ({.arg dataset_key}) with a mixture model are not available yet.")
    spec <- c(spec, dsp$fields)
  }
  if (!is.null(hier[[gene]]) && is.null(a$n_components)) {
    abort_input(c("A {.code mean_expression} hierarchy shares each gene's value across mixture components.",
                  "i" = "Give {.arg n_components} >= 2 (with the gene parameter component-specific)."))
  }
  od <- match_choice(a$overdispersion, c("none", "bnb"), "overdispersion")
  od_family <- hier$bnb_concentration
  hier$bnb_concentration <- NULL
  if (!is.null(od_family) && od != "bnb") {
    abort_input("{.code priors$overdispersion} chooses the family of the BNB's excess dispersion: give {.code overdispersion = \"bnb\"} too.")
  }
  if (od == "bnb") {
    spec$overdispersion <- "bnb"
    # The family of omega's hierarchy goes with the hierarchies (hyper-parameters too).
    spec$overdispersion_family <- if (is.null(od_family)) "horseshoe" else if (is.list(od_family)) od_family$type else od_family
    if (is.list(od_family)) spec$overdispersion_hyper <- od_family[setdiff(names(od_family), "type")]
    spec$unconstrained <- TRUE
  }
  if (length(hier)) spec$hierarchies <- hier
  if (is.null(a$n_components) && differs_from_default(a$mixture_params, "all")) {
    abort_input("{.arg mixture_params} applies to mixture models: give {.arg n_components} >= 2 as well.")
  }
  if (!is.null(a$n_components)) {
    check_number(a$n_components, "n_components", "a whole number from 2 to 2147483647", function(v) v >= 2 && v <= .Machine$integer.max && v == round(v))
    if (a$n_components > n_cells) {
      abort_input("{.arg n_components} ({a$n_components}) is larger than the number of cells ({n_cells}).")
    }
    spec$n_components <- as.numeric(a$n_components)
    spec$mixture_params <- resolve_mixture_params(a$mixture_params, model, parameterization)
    spec$mixing_concentration <- if (is.null(mixing)) 1 else as.numeric(mixing)
  }
  spec
}

check_unknown_args <- function(dots) {
  if (length(dots) == 0L) return(invisible())
  nms <- names(dots)
  if (is.null(nms) || any(nms == "")) {
    abort_input("All arguments after {.arg x} must be named.")
  }
  hints <- vapply(nms, function(n) {
    known <- fit_arg_names()
    close <- known[utils::adist(n, known)[1, ] <= 2]
    if (length(close) > 0L) paste0(" (did you mean `", close[1], "`?)") else ""
  }, character(1))
  abort_input(c("Unknown argument{?s} to {.fn scribe_fit}: {.arg {nms}}.",
                stats::setNames(paste0("`", nms, "`", hints), rep("x", length(nms)))))
}

# Flags vs model: an explicit model wins; flags are only read when model is NULL,
# and a model that contradicts given flags is an error naming both.
resolve_model <- function(model, zero_inflation, variable_capture) {
  if (!is.null(zero_inflation)) check_flag(zero_inflation, "zero_inflation")
  if (!is.null(variable_capture)) check_flag(variable_capture, "variable_capture")
  flags_given <- !is.null(zero_inflation) || !is.null(variable_capture)
  from_flags <- function() {
    zi <- isTRUE(zero_inflation)
    vc <- if (is.null(variable_capture)) TRUE else variable_capture
    if (zi && vc) "zinbvcp" else if (zi) "zinb" else if (vc) "nbvcp" else "nbdm"
  }
  if (is.null(model)) return(if (flags_given) from_flags() else "nbvcp")
  model <- match_choice(model, c(.nb_models, .lognormal_models), "model")
  if (flags_given && model %in% .nb_models) {
    zi <- model %in% c("zinb", "zinbvcp")
    vc <- model %in% c("nbvcp", "zinbvcp")
    if ((!is.null(zero_inflation) && zero_inflation != zi) ||
        (!is.null(variable_capture) && variable_capture != vc)) {
      abort_input(c(
        "{.arg model} = {.val {model}} contradicts the model flags.",
        "x" = "zero_inflation = {format(zero_inflation)}, variable_capture = {format(variable_capture)}.",
        "i" = "Give either {.arg model} or the flags, not both."
      ))
    }
  }
  if (model %in% .lognormal_models && isTRUE(zero_inflation)) {
    abort_input("Zero inflation ({.arg zero_inflation}) is not supported for the log-normal model {.val {model}}.")
  }
  model
}

resolve_seed <- function(seed) {
  if (is.null(seed)) return(as.numeric(sample.int(.Machine$integer.max, 1L)))
  check_number(seed, "seed", "a whole number between 0 and 2^53", function(v) v >= 0 && v <= 2^53 && v == round(v))
  as.numeric(seed)
}

# The core's defaults of every engine setting (rs_defaults()), read once.
.scribe_cache <- new.env(parent = emptyenv())
core_defaults <- function() {
  if (is.null(.scribe_cache$defaults)) .scribe_cache$defaults <- call_core(rs_defaults())
  .scribe_cache$defaults
}

resolve_threads <- function(num_threads) {
  if (is.null(num_threads)) return(0L)
  check_number(num_threads, "num_threads", "a whole number between 1 and 1024 (or NULL for all cores)",
               function(v) v >= 1 && v <= 1024 && v == round(v))
  as.integer(num_threads)
}

# Which sampled parameters become component-specific.
resolve_mixture_params <- function(mixture_params, model, parameterization) {
  gene <- if (parameterization == "canonical") "r" else "mu"
  scalar <- if (parameterization == "mean_odds") "phi" else "p"
  zi <- model %in% c("zinb", "zinbvcp")
  if (!is.character(mixture_params) || length(mixture_params) == 0L || anyNA(mixture_params)) {
    abort_input("{.arg mixture_params} must be a shorthand or a character vector of parameter names.")
  }
  if (length(mixture_params) == 1L && mixture_params %in% c("all", "biological", "mean", "prob", "gate")) {
    if (mixture_params == "gate" && !zi) {
      abort_input("{.code mixture_params = \"gate\"} needs a zero-inflated model, not {.val {model}}.")
    }
    return(switch(mixture_params,
      all = c(gene, scalar, if (zi) "gate"), biological = c(gene, scalar),
      mean = gene, prob = scalar, gate = "gate"
    ))
  }
  internal <- ifelse(mixture_params %in% names(.prior_aliases), .prior_aliases[mixture_params], mixture_params)
  allowed <- c(gene, scalar, if (zi) "gate")
  bad <- setdiff(internal, allowed)
  if (length(bad) > 0L) {
    abort_input(c(
      "{.arg mixture_params} names {.val {bad}}, which cannot be component-specific here.",
      "i" = "Choose from {.val {allowed}} or a shorthand: all, biological, mean, prob{if (zi) ', gate' else ''}."
    ))
  }
  unique(unname(internal))
}

# `dataset_key` as list(values = one value per cell of `x`, name = the
# level's name in `priors`): a cell-level column of `x` or a vector.
resolve_dataset_key <- function(x, key, n_cells) {
  if (is.null(key)) return(NULL)
  if (is.character(key) && length(key) == 1L && n_cells != 1L) {
    cols <- if (is(x, "SummarizedExperiment")) {
      SummarizedExperiment::colData(x)
    } else if (inherits(x, "Seurat")) {
      x[[]]
    } else {
      abort_input(c("{.arg dataset_key} names a column of the cells' metadata, which a {.cls {class(x)[1]}} does not have.",
                    "i" = "Give a SingleCellExperiment or Seurat object, or one value per cell."))
    }
    if (!key %in% names(cols)) {
      abort_input(c("{.arg dataset_key} {.val {key}} is not a column of the cells' metadata.",
                    "i" = "Available columns: {.val {names(cols)}}."))
    }
    return(list(values = cols[[key]], name = key))
  }
  if (is.list(key) || !is.null(dim(key)) || length(key) != n_cells) {
    abort_input(c("{.arg dataset_key} must be a column name or one value per cell.",
                  "i" = "It has {length(key)} value{?s}; {.arg x} has {n_cells} cell{?s}."))
  }
  list(values = key, name = "dataset")
}

# Dataset codes (1-based) of the kept cells and the datasets' names.
dataset_codes <- function(key, keep) {
  v <- key$values[keep]
  if (anyNA(v)) {
    abort_input("{.arg dataset_key} is missing (NA) for {sum(is.na(v))} cell{?s}.")
  }
  f <- droplevels(as.factor(v))
  list(codes = as.integer(f), levels = levels(f), name = key$name)
}

# Moves dataset-level families (`priors$mean_expression = list(<level> =
# family)`) into `dataset_hierarchies`, applying the defaults and the
# single-dataset downgrade; returns the updated families and spec fields.
dataset_spec <- function(families, a, gene, scalar) {
  ds <- a$dataset
  dh <- families$dataset_hierarchies
  mode_given <- differs_from_default(a$prob_dataset_mode, "gene_specific")
  if (is.null(ds)) {
    if (length(dh)) {
      abort_input(c("{.arg priors} gives a dataset-level family ({.val {names(dh)}}), which needs {.arg dataset_key}.",
                    "i" = "Give {.arg dataset_key}, or a gene-level family (e.g. {.code list(probability = \"gaussian\")})."))
    }
    if (mode_given) abort_input("{.arg prob_dataset_mode} applies with {.arg dataset_key}.")
    return(list(families = families, fields = NULL))
  }
  mode <- match_choice(a$prob_dataset_mode, c("gene_specific", "scalar", "two_level"), "prob_dataset_mode")
  if (mode == "two_level") {
    abort_unsupported("{.code prob_dataset_mode = \"two_level\"} is not available yet; use {.val gene_specific} or {.val scalar}.")
  }
  if (!length(dh)) dh[[gene]] <- "gaussian"
  if (mode_given && is.null(dh[[scalar]])) {
    abort_input("{.arg prob_dataset_mode} applies to a dataset-level {.code probability} family, e.g. {.code priors = list(probability = list({ds$name} = \"gaussian\"))}.")
  }
  if (!is.null(dh[[scalar]]) && !is.null(families$hierarchies[[scalar]])) {
    abort_input("A gene-level and a dataset-level {.code probability} family cannot be set simultaneously.")
  }
  if (!is.null(dh$gate) && !is.null(families$hierarchies$gate)) {
    abort_input("A gene-level and a dataset-level {.code zero_inflation} family cannot be set simultaneously.")
  }
  if (length(ds$levels) == 1L) {
    cli::cli_warn("{.arg dataset_key} has one dataset ({.val {ds$levels}}): fitting without the dataset level.")
    if (!is.null(dh[[scalar]]) && mode == "gene_specific") families$hierarchies[[scalar]] <- dh[[scalar]]
    if (!is.null(dh$gate)) families$hierarchies$gate <- dh$gate
    families$dataset_hierarchies <- NULL
    return(list(families = families, fields = NULL))
  }
  fields <- list(dataset_cells = as.numeric(ds$codes), n_datasets = length(ds$levels),
                 dataset_levels = ds$levels, dataset_key = ds$name, dataset_hierarchies = dh)
  if (!is.null(dh[[scalar]])) fields$prob_dataset_mode <- mode
  families$dataset_hierarchies <- dh
  list(families = families, fields = fields)
}

# Shrinkage families of hierarchical priors and their hyper-parameters.
.shrinkage_families <- c("gaussian", "horseshoe", "neg")
.shrinkage_hyper <- list(gaussian = character(), horseshoe = c("tau0", "slab_df", "slab_scale"),
                         neg = c("u", "a", "tau"))

# Takes the hierarchical (family) entries out of `priors`: a family name, or
# list(type = family), selects a gene-level hierarchy instead of
# hyper-parameters. Targets: `probability` (p, or phi under mean_odds; made
# gene-specific), `zero_inflation` (gate) and `mean_expression` (the gene
# parameter across mixture components). Returns the remaining priors and
# `hierarchies`, a named list (internal target site -> family).
split_prior_families <- function(priors, model, parameterization, level = NULL) {
  out <- list(priors = priors, hierarchies = list(), dataset_hierarchies = list())
  if (!is.list(priors) || is.null(names(priors))) return(out)
  # Dataset-level entries: list(<level> = family or list(type = family, ...)).
  is_level <- vapply(seq_along(priors), function(k) {
    v <- priors[[k]]
    is.list(v) && is.null(v$type) && length(v) == 1L && !is.null(names(v)) && names(priors)[k] != "loadings" &&
      (is.character(v[[1]]) || (is.list(v[[1]]) && !is.null(v[[1]]$type)))
  }, logical(1))
  for (k in which(is_level)) {
    name <- names(priors)[k]
    lv <- names(priors[[k]])
    if (is.null(level) || lv != level) {
      abort_input(c("{.code priors${name}} references level {.val {lv}}, which is not a declared grouping level.",
                    "i" = if (is.null(level)) "Give {.arg dataset_key} to declare one." else "Declared level: {.val {level}}."))
    }
    sub <- split_prior_families(stats::setNames(list(priors[[k]][[1]]), name), model, parameterization)
    site <- names(sub$hierarchies)
    gene <- if (parameterization == "canonical") "r" else "mu"
    scalar <- if (parameterization == "mean_odds") "phi" else "p"
    if (!site %in% c(gene, scalar, "gate")) {
      abort_unsupported(c("A dataset-level prior on {.val {name}} is not available yet.",
                          "i" = "Dataset-level families exist for {.code mean_expression}, {.code probability} and {.code zero_inflation}."))
    }
    out$dataset_hierarchies[[site]] <- sub$hierarchies[[site]]
  }
  priors <- priors[!is_level]
  out$priors <- priors
  if (!length(priors)) return(out)
  gene <- if (parameterization == "canonical") "r" else "mu"
  scalar <- if (parameterization == "mean_odds") "phi" else "p"
  targets <- c(probability = scalar, p = scalar, zero_inflation = "gate", gate = "gate",
               mean_expression = gene, stats::setNames(gene, gene), overdispersion = "bnb_concentration",
               bnb_concentration = "bnb_concentration")
  if (parameterization == "mean_odds") targets <- c(targets, odds_ratio = "phi", phi = "phi")
  if (parameterization == "canonical") targets <- c(targets, dispersion = "r")
  is_family <- vapply(seq_along(priors), function(k) {
    v <- priors[[k]]
    is.character(v) || (is.list(v) && !is.null(v$type) && names(priors)[k] != "loadings")
  }, logical(1))
  for (k in which(is_family)) {
    name <- names(priors)[k]
    val <- priors[[k]]
    hyper <- NULL
    if (is.list(val)) {
      hyper <- val[setdiff(names(val), "type")]
      val <- val$type
    }
    if (!is.character(val) || length(val) != 1L || is.na(val)) {
      abort_input("{.code priors${name}} must be a family name ({.val {.shrinkage_families}}) or two numbers.")
    }
    family <- match_choice(val, .shrinkage_families, paste0("priors$", name))
    allowed <- .shrinkage_hyper[[family]]
    bad <- setdiff(names(hyper), allowed)
    if (length(bad)) {
      abort_input(c("{.code priors${name}} has field{?s} {.val {bad}}, which the {.val {family}} family does not take.",
                    "i" = if (length(allowed)) "Its hyper-parameters: {.val {allowed}}." else "It has no hyper-parameters."))
    }
    for (f in names(hyper)) {
      check_number(hyper[[f]], paste0("priors$", name, "$", f), "a positive number", function(v) is.finite(v) && v > 0)
    }
    if (!(name %in% names(targets))) {
      abort_unsupported(c("A hierarchical ({.val {family}}) prior on {.val {name}} is not available yet.",
                          "i" = "Hierarchies exist for {.code probability}, {.code zero_inflation}, {.code mean_expression} and {.code overdispersion}."))
    }
    site <- unname(targets[name])
    if (!is.null(out$hierarchies[[site]])) abort_input("{.arg priors} gives a family for {.val {site}} twice.")
    out$hierarchies[[site]] <- if (length(hyper)) c(list(type = family), lapply(hyper, as.numeric)) else family
  }
  out$priors <- priors[!is_family]
  for (site in names(out$hierarchies)) {
    both <- intersect(names(out$priors), names(targets)[targets == site])
    if (length(both)) {
      abort_input("{.arg priors} gives both a family and hyper-parameters for {.val {both}}.")
    }
  }
  if (!is.null(out$hierarchies$gate) && !(model %in% c("zinb", "zinbvcp"))) {
    abort_input("A {.code zero_inflation} hierarchy needs a zero-inflated model ({.val zinb}, {.val zinbvcp}), not {.val {model}}.")
  }
  out
}

# The guide of an SVI fit: list(guide_rank | guide_flow and its architecture,
# joint_params) for the core, with joint_params' shorthands and descriptive
# names resolved to sampled sites.
resolve_guide <- function(a, model, parameterization) {
  rank <- a$guide_rank
  joint <- a$joint_params
  amortized <- resolve_amortizer(a, model)
  if (length(amortized)) {
    if (!is.null(rank) || !is.null(a$guide_flow) || !is.null(joint)) {
      abort_unsupported(c("{.arg amortize_capture} with {.arg guide_rank}, {.arg guide_flow} or {.arg joint_params} is not available yet.",
                          "i" = "The capture amortizer pairs with the mean-field guide of the other parameters."))
    }
    return(amortized)
  }
  out <- resolve_flow(a)
  if (!is.null(rank) && length(out)) {
    abort_input(c("{.arg guide_rank} and {.arg guide_flow} are mutually exclusive.",
                  "i" = "Give one: a low-rank Gaussian or a normalizing flow."))
  }
  if (is.null(rank) && !length(out)) {
    if (!is.null(joint)) {
      abort_unsupported(c("{.arg joint_params} without {.arg guide_rank} or {.arg guide_flow} (per-gene linear coupling only) is not available yet.",
                          "i" = "Give {.arg guide_rank} too, e.g. {.code guide_rank = 4}."))
    }
    return(list())
  }
  if (!is.null(rank)) {
    check_number(rank, "guide_rank", "a whole number from 1 to 2147483647",
                 function(v) v >= 1 && v <= .Machine$integer.max && v == round(v))
    out <- list(guide_rank = as.numeric(rank))
  }
  if (is.null(joint)) return(out)
  if (!is.character(joint) || !length(joint) || anyNA(joint)) {
    abort_input("{.arg joint_params} must be a shorthand ({.val biological}, {.val mean}, {.val prob}, {.val gate}, {.val all}) or parameter names.")
  }
  gene <- if (parameterization == "canonical") "r" else "mu"
  scalar <- if (parameterization == "mean_odds") "phi" else "p"
  zi <- model %in% c("zinb", "zinbvcp")
  shorthand <- list(biological = c(gene, scalar), mean = gene, prob = scalar, gate = "gate",
                    all = c(gene, scalar, if (zi) "gate", if (identical(a$overdispersion, "bnb")) "bnb_concentration"))
  sites <- unlist(lapply(joint, function(j) {
    if (j %in% names(shorthand)) return(shorthand[[j]])
    if (j %in% names(.prior_aliases)) return(unname(.prior_aliases[j]))
    j
  }))
  allowed <- c(gene, scalar, if (zi) "gate", if (identical(a$overdispersion, "bnb")) "bnb_concentration")
  bad <- setdiff(sites, allowed)
  if (length(bad)) {
    abort_input(c("{.arg joint_params} names {.val {bad}}, which {?is/are} not a gene-level or scalar parameter of {.val {model}} ({parameterization}).",
                  "i" = "Parameters it can join: {.val {allowed}}."))
  }
  out$joint_params <- unique(sites)
  out
}

# The capture amortizer's settings for the core (list() without
# `amortize_capture`); its settings without it are an error, not ignored.
resolve_amortizer <- function(a, model) {
  check_flag(a$amortize_capture, "amortize_capture")
  arch <- c("capture_hidden_dims", "capture_activation", "capture_input_transformation")
  if (!a$amortize_capture) {
    defaults <- formals(scribe_fit)
    given <- arch[vapply(arch, function(n) differs_from_default(a[[n]], eval(defaults[[n]])), NA)]
    if (length(given)) {
      abort_input("{.arg {given}} set{?s/} up the capture amortizer: give {.code amortize_capture = TRUE} too.")
    }
    return(list())
  }
  if (!model %in% c("nbvcp", "zinbvcp")) {
    abort_input(c("{.arg amortize_capture} applies to models with per-cell capture ({.val nbvcp}, {.val zinbvcp}), not {.val {model}}.",
                  "i" = "Give {.code variable_capture = TRUE} or a VCP {.arg model}."))
  }
  hidden <- a$capture_hidden_dims
  if (!is.null(hidden) && (!is.numeric(hidden) || !length(hidden) || anyNA(hidden) ||
                           any(hidden < 1 | hidden > 4096 | hidden != round(hidden)))) {
    abort_input("{.arg capture_hidden_dims} must be {.code NULL} or whole numbers from 1 to 4096, not {describe_value(hidden)}.")
  }
  acts <- c("relu", "gelu", "silu", "tanh", "softplus", "elu", "leaky_relu")
  act <- a$capture_activation
  if (!is.character(act) || length(act) != 1L || is.na(act) || !act %in% acts) {
    abort_input("{.arg capture_activation} must be one of {.val {acts}}, not {describe_value(act)}.")
  }
  inputs <- c("log1p", "log", "sqrt", "identity")
  input <- a$capture_input_transformation
  if (!is.character(input) || length(input) != 1L || is.na(input) || !input %in% inputs) {
    abort_input("{.arg capture_input_transformation} must be one of {.val {inputs}}, not {describe_value(input)}.")
  }
  list(amortize_capture = TRUE, capture_hidden_dims = as.numeric(if (is.null(hidden)) c(64, 32) else hidden),
       capture_activation = act, capture_input_transformation = input)
}

# A flow guide's settings for the core (list() without `guide_flow`). The
# architecture arguments without `guide_flow` are an error, not ignored.
resolve_flow <- function(a) {
  arch <- c("guide_flow_num_layers", "guide_flow_hidden_dims", "guide_flow_activation", "guide_flow_n_bins",
            "guide_flow_layer_norm", "guide_flow_residual", "guide_flow_soft_clamp", "guide_flow_loft")
  if (is.null(a$guide_flow)) {
    defaults <- formals(scribe_fit)
    given <- arch[vapply(arch, function(n) differs_from_default(a[[n]], eval(defaults[[n]])), NA)]
    if (length(given)) {
      abort_input(c("{.arg {given}} set{?s/} up a flow guide: give {.arg guide_flow} too.",
                    "i" = "For example {.code guide_flow = \"affine_coupling\"}."))
    }
    return(list())
  }
  flow <- a$guide_flow
  known <- c("affine_coupling", "coupling_affine", "spline_coupling", "coupling_spline", "maf", "iaf")
  if (!is.character(flow) || length(flow) != 1L || is.na(flow) || !flow %in% known) {
    abort_input("{.arg guide_flow} must be one of {.val {known}}, not {describe_value(flow)}.")
  }
  if (flow == "maf") {
    abort_input(c("{.code guide_flow = \"maf\"} draws one coordinate at a time (one network pass per coordinate), too slow to train a guide.",
                  "i" = "Use {.val iaf} (the same family, one pass per draw) or {.val affine_coupling}."))
  }
  spline <- flow %in% c("spline_coupling", "coupling_spline")
  check_number(a$guide_flow_n_bins, "guide_flow_n_bins", "a whole number from 2 to 64",
               function(v) v >= 2 && v <= 64 && v == round(v))
  if (!spline && differs_from_default(a$guide_flow_n_bins, 8L)) {
    abort_input("{.arg guide_flow_n_bins} applies to {.code guide_flow = \"spline_coupling\"}, not {.val {flow}}.")
  }
  check_number(a$guide_flow_num_layers, "guide_flow_num_layers", "a whole number from 1 to 64",
               function(v) v >= 1 && v <= 64 && v == round(v))
  hidden <- a$guide_flow_hidden_dims
  if (!is.null(hidden) && (!is.numeric(hidden) || !length(hidden) || anyNA(hidden) ||
                           any(hidden < 1 | hidden > 4096 | hidden != round(hidden)))) {
    abort_input("{.arg guide_flow_hidden_dims} must be {.code NULL} or whole numbers from 1 to 4096, not {describe_value(hidden)}.")
  }
  acts <- c("relu", "gelu", "silu", "tanh", "softplus", "elu", "leaky_relu")
  act <- a$guide_flow_activation
  if (!is.character(act) || length(act) != 1L || is.na(act) || !act %in% acts) {
    abort_input("{.arg guide_flow_activation} must be one of {.val {acts}}, not {describe_value(act)}.")
  }
  for (n in c("guide_flow_layer_norm", "guide_flow_residual", "guide_flow_soft_clamp", "guide_flow_loft")) {
    check_flag(a[[n]], n)
  }
  list(guide_flow = if (spline) "spline_coupling" else if (flow == "iaf") "iaf" else "affine_coupling",
       guide_flow_num_layers = as.numeric(a$guide_flow_num_layers), guide_flow_n_bins = as.numeric(a$guide_flow_n_bins),
       guide_flow_hidden_dims = if (is.null(hidden)) NULL else as.numeric(hidden),
       guide_flow_activation = act, guide_flow_layer_norm = a$guide_flow_layer_norm,
       guide_flow_residual = a$guide_flow_residual, guide_flow_soft_clamp = a$guide_flow_soft_clamp,
       guide_flow_loft = a$guide_flow_loft)
}

.prior_aliases <- c(probability = "p", dispersion = "r", mean_expression = "mu", odds_ratio = "phi",
                    zero_inflation = "gate", capture_probability = "p_capture",
                    capture_odds_ratio = "phi_capture", capture_efficiency = "eta_capture")

sampled_sites <- function(model, parameterization) {
  gene <- if (parameterization == "canonical") "r" else "mu"
  scalar <- if (parameterization == "mean_odds") "phi" else "p"
  cap <- if (parameterization == "mean_odds") "phi_capture" else "p_capture"
  c(gene, scalar,
    if (model %in% c("nbvcp", "zinbvcp")) c(cap, "eta_capture"),
    if (model %in% c("zinb", "zinbvcp")) "gate")
}

resolve_priors <- function(priors, model, parameterization) {
  if (is.null(priors)) return(list())
  if (!is.list(priors) || is.null(names(priors)) || any(names(priors) == "")) {
    abort_input("{.arg priors} must be a named list, e.g. {.code list(p = c(2, 2))}.")
  }
  nms <- names(priors)
  internal <- ifelse(nms %in% names(.prior_aliases), .prior_aliases[nms], nms)
  dup <- internal[duplicated(internal)]
  if (length(dup) > 0L) {
    abort_input("Ambiguous {.arg priors}: {.val {unique(dup)}} is given twice (under its name and an alias).")
  }
  allowed <- sampled_sites(model, parameterization)
  out <- list()
  for (k in seq_along(priors)) {
    name <- internal[k]
    val <- priors[[k]]
    if (!(name %in% allowed)) {
      abort_input(c(
        "{.arg priors} has no parameter {.val {nms[k]}} for model {.val {model}} ({parameterization}).",
        "i" = "Sampled parameters: {.val {setdiff(allowed, 'eta_capture')}}{if ('eta_capture' %in% allowed) ', capture_efficiency' else ''}."
      ))
    }
    if (!is.numeric(val) || length(val) != 2L || anyNA(val) || any(!is.finite(val))) {
      abort_input("{.arg priors${nms[k]}} must be two finite numbers, e.g. {.code c(1, 1)}.")
    }
    out[[name]] <- as.numeric(val)
  }
  out
}

# `lbfgs = TRUE` where the engine offers L-BFGS (the Laplace outer loop in
# full batch); its settings come back as list(name = "lbfgs", memory = m).
resolve_optimizer <- function(cfg, lbfgs = FALSE) {
  if (is.null(cfg)) return(NULL)
  if (!is.list(cfg)) abort_input("{.arg optimizer_config} must be a list, e.g. {.code list(name = \"adam\", step_size = 1e-3)}.")
  known <- c("name", "step_size", "b1", "b2", "eps", "momentum", "gamma", "grad_clip_norm", if (lbfgs) "memory")
  bad <- setdiff(names(cfg), known)
  if (length(bad) > 0L) {
    abort_input(c("Unknown {.arg optimizer_config} field{?s}: {.val {bad}}.", "i" = "Known fields: {.val {known}}."))
  }
  name <- if (is.null(cfg$name)) "adam" else tolower(trimws(cfg$name))
  if (identical(name, "lbfgs") && !lbfgs) {
    abort_unsupported(c("{.code optimizer_config$name = \"lbfgs\"} is for {.code inference_method = \"laplace\"} in full batch.",
                        "i" = "Stochastic objectives (mini-batches, Monte Carlo ELBOs) need a first-order optimiser such as {.val adam}."))
  }
  name <- match_choice(name, c("adam", "clipped_adam", "adagrad", "rmsprop", "sgd", "momentum", if (lbfgs) "lbfgs"),
                       "optimizer_config$name")
  if (name == "lbfgs") {
    check_number(cfg$memory, "optimizer_config$memory", "a whole number between 1 and 100",
                 function(v) v >= 1 && v <= 100 && v == round(v), TRUE)
    if (!is.null(cfg$step_size)) {
      abort_input("{.val lbfgs} has no {.field step_size}: each step searches along its direction.")
    }
    return(list(name = "lbfgs", memory = as.numeric(if (is.null(cfg$memory)) 10 else cfg$memory)))
  }
  if (is.null(cfg$step_size)) {
    abort_input("{.arg optimizer_config} needs a {.field step_size} (e.g. 1e-3).")
  }
  check_number(cfg$step_size, "optimizer_config$step_size", "a positive number", function(v) v > 0)
  for (f in c("b1", "b2", "momentum", "gamma")) {
    check_number(cfg[[f]], paste0("optimizer_config$", f), "a number in [0, 1)", function(v) v >= 0 && v < 1, allow_null = TRUE)
  }
  check_number(cfg$eps, "optimizer_config$eps", "a positive number", function(v) v > 0, allow_null = TRUE)
  if (!is.null(cfg$grad_clip_norm)) {
    if (name != "clipped_adam") {
      abort_input("{.field grad_clip_norm} in {.arg optimizer_config} is only supported with {.code name = \"clipped_adam\"}.")
    }
    check_number(cfg$grad_clip_norm, "optimizer_config$grad_clip_norm", "a positive number", function(v) v > 0)
  }
  out <- cfg[setdiff(names(cfg), "grad_clip_norm")]
  out$name <- name
  if (!is.null(cfg$grad_clip_norm)) out$clip_norm <- cfg$grad_clip_norm
  lapply(out, function(v) if (is.numeric(v)) as.numeric(v) else v)
}

# The stopping rule: list(early_stopping = <the original's rule or NULL>,
# settle = <the settled rule or NULL>). `NULL` (the default) is the settled
# rule with its defaults, `FALSE` none (run all `n_steps`), `TRUE` or
# `"original"` the original's rule, `"settled"` the settled rule, and a list
# either rule's settings (`rule = "settled"` for the settled rule; without
# `rule`, the original's).
resolve_early_stopping <- function(es) {
  if (is.null(es) || identical(es, "settled")) return(list(settle = list()))
  if (isFALSE(es)) return(list())
  if (isTRUE(es) || identical(es, "original")) return(list(early_stopping = list()))
  if (!is.list(es)) {
    abort_input(c("{.arg early_stopping} must be NULL, TRUE, FALSE, {.val original}, {.val settled} or a list of settings.",
                  "i" = "NULL (the default) stops when the loss and the parameters have settled; FALSE runs all {.arg n_steps}."))
  }
  rule <- if (is.null(es$rule)) "original" else match_choice(es$rule, c("original", "settled"), "early_stopping$rule")
  es$rule <- NULL
  whole <- function(v) v == round(v)
  if (rule == "settled") {
    known <- c("window", "loss_rtol", "loss_ptol", "param_tol", "patience", "min_steps")
    bad <- setdiff(names(es), known)
    if (length(bad) > 0L) {
      abort_input(c("Unknown {.arg early_stopping} field{?s} of the settled rule: {.val {bad}}.", "i" = "Known fields: {.val {known}}."))
    }
    check_number(es$window, "early_stopping$window", "a whole number >= 2", function(v) v >= 2 && whole(v), TRUE)
    check_number(es$patience, "early_stopping$patience", "a whole number >= 1", function(v) v >= 1 && whole(v), TRUE)
    check_number(es$min_steps, "early_stopping$min_steps", "a whole number >= 0", function(v) v >= 0 && whole(v), TRUE)
    check_number(es$loss_rtol, "early_stopping$loss_rtol", "a number >= 0", function(v) v >= 0, TRUE)
    check_number(es$loss_ptol, "early_stopping$loss_ptol", "a number >= 0", function(v) v >= 0, TRUE)
    check_number(es$param_tol, "early_stopping$param_tol", "a number > 0", function(v) v > 0, TRUE)
    return(list(settle = lapply(es, as.numeric)))
  }
  known <- c("enabled", "patience", "min_delta", "min_delta_pct", "check_every", "warmup",
             "smoothing_window", "restore_best")
  bad <- setdiff(names(es), known)
  if (length(bad) > 0L) {
    abort_input(c("Unknown {.arg early_stopping} field{?s}: {.val {bad}}.", "i" = "Known fields: {.val {known}}."))
  }
  check_number(es$patience, "early_stopping$patience", "a whole number > 0", function(v) v > 0 && whole(v), TRUE)
  check_number(es$check_every, "early_stopping$check_every", "a whole number > 0", function(v) v > 0 && whole(v), TRUE)
  check_number(es$smoothing_window, "early_stopping$smoothing_window", "a whole number > 0", function(v) v > 0 && whole(v), TRUE)
  check_number(es$warmup, "early_stopping$warmup", "a whole number >= 0", function(v) v >= 0 && whole(v), TRUE)
  check_number(es$min_delta, "early_stopping$min_delta", "a number >= 0", function(v) v >= 0, TRUE)
  check_number(es$min_delta_pct, "early_stopping$min_delta_pct", "a number >= 0", function(v) v >= 0, TRUE)
  if (!is.null(es$enabled)) check_flag(es$enabled, "early_stopping$enabled")
  if (!is.null(es$restore_best)) check_flag(es$restore_best, "early_stopping$restore_best")
  if (!is.null(es$smoothing_window) && es$smoothing_window > 1000) {
    cli::cli_warn("{.field smoothing_window} = {es$smoothing_window} averages over a very long window.")
  }
  list(early_stopping = lapply(es, function(v) if (is.numeric(v)) as.numeric(v) else v))
}
