//! Laplace inference for the log-normal family: per-cell MAP latents by
//! damped Newton (nested Woodbury, O(G k² + k³) per step, cells in
//! parallel), and an outer optimiser on the global parameters of the
//! Laplace-approximated marginal likelihood, with the MAPs held fixed.
//! PLN and NBLN (with or without capture, with empirical priors and frozen
//! values from an SVI cascade), LNM and LNMVCP (learned or low-rank `d`).
//! The observation kernels come from [`crate::models::lognormal`]; this
//! module owns the Woodbury algebra, the Newton solvers, the outer loop, its
//! guards, the loadings priors and the cascade.

mod block;
pub mod cascade;
pub mod cell;
mod guards;
pub mod init;
pub mod lnm;
mod objective;
mod outer;
pub mod posterior;
mod sweep;
pub mod w_prior;
pub mod woodbury;

pub use outer::{norm_summary, run};
pub(crate) use sweep::EtaSpec;

pub use crate::models::lognormal::{Capture, LnModel};
use crate::optim::OptimizerConfig;

/// Empirical priors and frozen values for the globals (NBLN cascade). Priors
/// are Normal on `r_loc = softplus⁻¹(r)` and on `μ`; frozen values win.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cascade {
    pub r_prior: Option<(Vec<f64>, Vec<f64>)>,
    pub mu_prior: Option<(Vec<f64>, Vec<f64>)>,
    /// Frozen dispersions `r` (not `r_loc`).
    pub r_frozen: Option<Vec<f64>>,
    pub mu_frozen: Option<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaplaceConfig {
    pub model: LnModel,
    pub latent_dim: usize,
    pub n_steps: usize,
    pub batch_size: Option<usize>,
    pub n_newton_steps: usize,
    /// Tikhonov term added to the Newton matrix (not to the ELBO's log-det).
    pub damping: f64,
    /// Sup-norm of a cell's gradient below which its MAP counts as converged.
    pub newton_tolerance: f64,
    pub newton_max_step: f64,
    pub rescue_diverged_cells: bool,
    pub rescue_threshold_multiplier: f64,
    pub rescue_n_newton: usize,
    pub rescue_damping_multiplier: f64,
    /// At most this many (Newton sweep, μ ← mean of the MAPs) rounds before
    /// the first outer step (0: none).
    pub mu_warm_rounds: usize,
    pub optimizer: OptimizerConfig,
    /// L-BFGS with this many curvature pairs instead of `optimizer` (full
    /// batch only): each step is a line search along the quasi-Newton
    /// direction, every trial a Newton sweep over all cells.
    pub lbfgs_memory: Option<usize>,
    pub seed: u64,
    pub n_reports: usize,
    pub capture: Capture,
    pub cascade: Cascade,
    pub loadings_prior: w_prior::LoadingsPrior,
    /// LNM `d_mode = "low_rank"`: `y = μ + W z`, `z ~ N(0, I_k)`, Newton over
    /// `z` (d unused); otherwise ("learned") Newton over `y ~ N(μ, WWᵀ + diag d)`.
    pub lnm_low_rank: bool,
    /// The SVI engine's early-stopping rule on the outer loss (`None`: off,
    /// and unlike the original nothing is restored unless it is given).
    pub early_stopping: Option<crate::optim::early_stop::EarlyStopping>,
    /// The default stopping rule on the outer loss and the globals (`μ`,
    /// the rotation-invariant row norms of `W`, `d`, `r` or the totals, and
    /// the loadings prior's scales), each judged against 1 % of its size.
    pub settle: Option<crate::optim::settle::Settle>,
}

impl Default for LaplaceConfig {
    fn default() -> Self {
        LaplaceConfig {
            model: LnModel::Pln,
            latent_dim: 10,
            n_steps: 50_000,
            batch_size: None,
            n_newton_steps: 5,
            damping: 1e-2,
            newton_tolerance: 1e-4,
            newton_max_step: 5.0,
            rescue_diverged_cells: true,
            rescue_threshold_multiplier: 10.0,
            rescue_n_newton: 50,
            rescue_damping_multiplier: 10.0,
            mu_warm_rounds: 10,
            optimizer: OptimizerConfig::default(),
            lbfgs_memory: None,
            seed: 42,
            n_reports: 100,
            capture: Capture::None,
            cascade: Cascade::default(),
            loadings_prior: w_prior::LoadingsPrior::None,
            lnm_low_rank: false,
            early_stopping: None,
            settle: Some(crate::optim::settle::Settle::default()),
        }
    }
}

/// Newton steps taken in a fit: a cell stops once its gradient sup-norm is
/// at most `newton_tolerance`, so warm-started cells take fewer than the
/// `n_newton_steps` maximum.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NewtonCounts {
    /// Summed over the outer steps' cells.
    pub outer_steps: usize,
    /// Cells visited over the outer steps (one per cell per step).
    pub outer_cell_visits: usize,
    /// In the final sweep over all cells.
    pub final_steps: usize,
    /// In the sweeps that start μ at the mean of the MAPs.
    pub warm_steps: usize,
    /// In the rescue pass.
    pub rescue_steps: usize,
}

/// A Laplace fit: globals, per-cell MAP latents (cell-major, `C × G`) and diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct LaplaceFit {
    pub n_genes: usize,
    pub latent_dim: usize,
    pub mu: Vec<f64>,
    /// Loadings, row-major `G × k`.
    pub w: Vec<f64>,
    pub d: Vec<f64>,
    /// NBLN dispersions (empty for PLN).
    pub r: Vec<f64>,
    /// LNM: `(μ_T, r_T)` of the totals model; empty otherwise.
    pub totals: Vec<f64>,
    /// LNM: the reference gene of the log-ratios (μ, W, d and latents cover the others).
    pub reference: Option<usize>,
    pub latents: Vec<f64>,
    /// Per-cell MAP (or frozen) `η` (empty without capture); `ν = e^{−η}`.
    pub eta: Vec<f64>,
    pub loss_history: Vec<f64>,
    /// Per-cell gradient sup-norm after the final sweep (and rescue).
    pub grad_norms: Vec<f64>,
    pub rescued: Vec<bool>,
    /// Cell-steps whose ELBO was non-finite (left out of that step).
    pub masked_cells: usize,
    /// Newton steps actually taken (cells stop at `newton_tolerance`).
    pub newton: NewtonCounts,
    /// Why the outer loop stopped early, if it did (best state restored).
    pub aborted: Option<String>,
    /// Stopped by the early-stopping rule.
    pub early_stopped: bool,
    pub stop: crate::optim::StopReason,
    /// The last drift of each group of globals under the settled rule.
    pub drift: Vec<(String, f64)>,
    /// Step (1-based) whose smoothed-best state was restored, if any.
    pub restored_step: Option<usize>,
    /// Auxiliary parameters of the loadings prior (unconstrained).
    pub w_prior_aux: Vec<f64>,
    pub w_prior: w_prior::WPriorDiagnostics,
}
