//! Laplace inference for the log-normal family: per-cell MAP latents by
//! damped Newton (nested Woodbury, O(G k² + k³) per step, cells in
//! parallel), and an outer optimiser on the global parameters of the
//! Laplace-approximated marginal likelihood. PLN (with or without the
//! capture block) is implemented; NBLN, LNM and LNMVCP are not yet.

pub mod init;
pub mod pln;
pub mod w_prior;
pub mod woodbury;

use crate::data::{BatchSampler, CountMatrix};
use crate::error::{CoreError, Result};
use crate::math::softplus;
use crate::progress::{Cancel, Progress};
use crate::svi::optim::{Optimizer, OptimizerConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use woodbury::SigmaFactor;

/// Cells per parallel work unit; fixed so sums group the same way on any
/// number of threads.
const CELL_CHUNK: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct LaplaceConfig {
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
    pub optimizer: OptimizerConfig,
    pub seed: u64,
    pub n_reports: usize,
    /// Capture prior `(ln M0, σ_M)`: `η_c ~ TruncN(ln M0 − ln L_c, σ_M, low = 0)`.
    pub capture: Option<(f64, f64)>,
    pub loadings_prior: w_prior::LoadingsPrior,
}

impl Default for LaplaceConfig {
    fn default() -> Self {
        LaplaceConfig {
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
            optimizer: OptimizerConfig::default(),
            seed: 42,
            n_reports: 100,
            capture: None,
            loadings_prior: w_prior::LoadingsPrior::None,
        }
    }
}

/// A fitted PLN: globals, per-cell MAP latents (cell-major, `C × G`) and diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct PlnFit {
    pub n_genes: usize,
    pub latent_dim: usize,
    pub mu: Vec<f64>,
    /// Loadings, row-major `G × k`.
    pub w: Vec<f64>,
    pub d: Vec<f64>,
    pub latents: Vec<f64>,
    /// Per-cell MAP `η` (empty without capture); `ν = e^{−η}`.
    pub eta: Vec<f64>,
    pub loss_history: Vec<f64>,
    /// Per-cell gradient sup-norm after the final sweep (and rescue).
    pub grad_norms: Vec<f64>,
    pub rescued: Vec<bool>,
    /// Cells whose ELBO was non-finite at some step (masked out of that step).
    pub masked_cells: usize,
    /// Why the outer loop stopped early, if it did (best state restored).
    pub aborted: Option<String>,
    /// Auxiliary parameters of the loadings prior (unconstrained).
    pub w_prior_aux: Vec<f64>,
    pub w_prior: w_prior::WPriorDiagnostics,
}

/// Parameter vector `θ = [μ (G) | W (G k) | d_loc (G)]`, `d = softplus(d_loc)`.
struct Globals {
    g: usize,
    k: usize,
}

impl Globals {
    fn split<'a>(&self, th: &'a [f64]) -> (&'a [f64], &'a [f64], &'a [f64]) {
        let (mu, rest) = th.split_at(self.g);
        let (w, rest) = rest.split_at(self.g * self.k);
        (mu, w, &rest[..self.g])
    }
}

/// Runs Newton on the cells `cells` (their latents in `lat`, `len·G`) and,
/// with `grad`, accumulates the ELBO gradient. Returns (Σ ELBO over finite
/// cells, per-cell grad norms, masked count, gradient).
#[allow(clippy::too_many_arguments)]
fn sweep(
    data: &CountMatrix,
    cells: &[usize],
    lat: &mut [f64],
    eta: &mut [f64],
    capture: Option<(&[f64], f64)>,
    mu: &[f64],
    w: &[f64],
    d: &[f64],
    sig: &SigmaFactor,
    k: usize,
    n_newton: usize,
    damping: f64,
    max_step: f64,
    want_grad: bool,
) -> (f64, Vec<f64>, usize, Vec<f64>) {
    let g = data.n_genes;
    let np = g * (k + 2);
    // Without capture, `eta` is empty: give every chunk an empty slice.
    let eta_chunk = if capture.is_some() {
        CELL_CHUNK
    } else {
        usize::MAX
    };
    let mut no_eta: Vec<&mut [f64]> = Vec::new();
    let eta_parts: Vec<&mut [f64]> = if capture.is_some() {
        eta.chunks_mut(eta_chunk).collect()
    } else {
        no_eta.extend((0..cells.len().div_ceil(CELL_CHUNK)).map(|_| &mut [][..]));
        std::mem::take(&mut no_eta)
    };
    let parts: Vec<(f64, Vec<f64>, usize, Vec<f64>)> = lat
        .par_chunks_mut(CELL_CHUNK * g)
        .zip(cells.par_chunks(CELL_CHUNK))
        .zip(eta_parts.into_par_iter())
        .map(|((lchunk, cchunk), echunk)| {
            let mut u = vec![0.0; g];
            let mut grad = if want_grad { vec![0.0; np] } else { Vec::new() };
            let mut tmp = vec![0.0; if want_grad { np } else { 0 }];
            let (mut elbo, mut masked) = (0.0, 0);
            let mut norms = Vec::with_capacity(cchunk.len());
            for (i, (x, &c)) in lchunk.chunks_mut(g).zip(cchunk).enumerate() {
                pln::dense_counts(data, c, &mut u);
                let backup = x.to_vec();
                let cp = capture.map(|(anchor, sigma)| pln::CapturePrior {
                    anchor: anchor[c],
                    sigma,
                });
                let gn = match cp {
                    None => pln::newton_cell(&u, x, mu, w, sig, n_newton, damping, max_step),
                    Some(cp) => {
                        let e0 = echunk[i];
                        let gn = pln::newton_cell_capture(
                            &u,
                            x,
                            &mut echunk[i],
                            cp,
                            mu,
                            w,
                            sig,
                            n_newton,
                            damping,
                            max_step,
                        );
                        if !echunk[i].is_finite() {
                            echunk[i] = e0;
                        }
                        gn
                    }
                };
                if !x.iter().all(|v| v.is_finite()) {
                    x.copy_from_slice(&backup);
                }
                norms.push(gn);
                if want_grad {
                    tmp.iter_mut().for_each(|v| *v = 0.0);
                    let (tm, rest) = tmp.split_at_mut(g);
                    let (tw, td) = rest.split_at_mut(g * k);
                    let e = match cp {
                        None => pln::cell_elbo_grad(&u, x, mu, w, d, sig, k, tm, tw, td),
                        Some(cp) => pln::cell_elbo_grad_capture(
                            &u, x, echunk[i], cp, mu, w, d, sig, k, tm, tw, td,
                        ),
                    };
                    if e.is_finite() && tmp.iter().all(|v| v.is_finite()) {
                        elbo += e;
                        for (a, b) in grad.iter_mut().zip(&tmp) {
                            *a += b;
                        }
                    } else {
                        masked += 1;
                    }
                }
            }
            (elbo, norms, masked, grad)
        })
        .collect();
    let mut total = 0.0;
    let mut norms = Vec::with_capacity(cells.len());
    let mut masked = 0;
    let mut grad = vec![0.0; if want_grad { np } else { 0 }];
    for (e, n, m, gr) in parts {
        total += e;
        norms.extend(n);
        masked += m;
        for (a, b) in grad.iter_mut().zip(&gr) {
            *a += b;
        }
    }
    (total, norms, masked, grad)
}

/// Sup-norm summary `(max, p99, median)` of per-cell gradient norms.
pub fn norm_summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v
        .iter()
        .map(|x| if x.is_finite() { *x } else { f64::INFINITY })
        .collect();
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let q = |p: f64| s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
    (s[s.len() - 1], q(0.99), q(0.5))
}

/// Fits PLN by Laplace (with the capture block when `cfg.capture` is set).
pub fn run_pln(
    data: &CountMatrix,
    cfg: &LaplaceConfig,
    progress: &dyn Progress,
    cancel: &dyn Cancel,
) -> Result<PlnFit> {
    let (g, n, k) = (data.n_genes, data.n_cells, cfg.latent_dim);
    if k == 0 || k >= g {
        return Err(CoreError::arg(
            "latent_dim",
            format!("must be between 1 and the number of genes − 1 ({})", g - 1),
        ));
    }
    if cfg.n_newton_steps == 0 || cfg.n_newton_steps > 200 {
        return Err(CoreError::arg(
            "laplace_config$n_newton_steps",
            "must be between 1 and 200",
        ));
    }
    if !(cfg.damping >= 0.0) {
        return Err(CoreError::arg("laplace_config$damping", "must be >= 0"));
    }
    cfg.optimizer.validate()?;
    let gl = Globals { g, k };
    let start = init::pln_start(data, k, cfg.seed);
    let mut th: Vec<f64> = start.mu.iter().chain(&start.w).copied().collect();
    th.extend(std::iter::repeat_n(crate::math::softplus_inv(0.1), g));
    cfg.loadings_prior.validate()?;
    let aux_at = th.len();
    th.extend(cfg.loadings_prior.init_aux(k));
    let mut latents = start.latents;
    // Capture: per-cell anchors ln M0 − ln max(L, 1); latents start at log(u + 1) + anchor.
    let anchors: Vec<f64> = match cfg.capture {
        Some((ln_m0, sigma)) => {
            if !(sigma > 0.0) || !ln_m0.is_finite() {
                return Err(CoreError::arg(
                    "priors",
                    "capture_efficiency must be c(log(M0), sigma) with sigma > 0",
                ));
            }
            data.lib_size
                .iter()
                .map(|&l| ln_m0 - l.max(1.0).ln())
                .collect()
        }
        None => Vec::new(),
    };
    let capture = cfg.capture.map(|(_, sigma)| (&anchors[..], sigma));
    let mut eta: Vec<f64> = anchors.iter().map(|a| a.max(1e-3)).collect();
    for (c, a) in anchors.iter().enumerate() {
        latents[c * g..(c + 1) * g]
            .iter_mut()
            .for_each(|v| *v += a.max(1e-3));
    }
    let mut opt = Optimizer::new(cfg.optimizer.clone(), th.len());
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut sampler = cfg
        .batch_size
        .filter(|&b| b < n)
        .map(|b| BatchSampler::new(n, b));
    let mut history = Vec::with_capacity(cfg.n_steps);
    let (mut best, mut best_loss) = ((th.clone(), latents.clone(), eta.clone()), f64::INFINITY);
    let mut init_loss = f64::NAN;
    let mut masked_total = 0;
    let mut aborted = None;
    let report_every = (cfg.n_steps / cfg.n_reports.max(1)).max(1);
    for step in 0..cfg.n_steps {
        if cancel.cancelled() {
            return Err(CoreError::Cancelled);
        }
        let cells: Vec<usize> = match sampler.as_mut() {
            Some(s) => s.draw(&mut rng).iter().map(|&c| c as usize).collect(),
            None => (0..n).collect(),
        };
        let scale = n as f64 / cells.len() as f64;
        let (mu, w, dl) = gl.split(&th);
        let d: Vec<f64> = dl.iter().map(|&v| softplus(v)).collect();
        let Some(sig) = SigmaFactor::new(w, &d, k) else {
            aborted = Some(format!(
                "step {}: the prior covariance is not positive definite",
                step + 1
            ));
            break;
        };
        let mut lat: Vec<f64> = cells
            .iter()
            .flat_map(|&c| latents[c * g..(c + 1) * g].iter().copied())
            .collect();
        let mut eta_b: Vec<f64> = if capture.is_some() {
            cells.iter().map(|&c| eta[c]).collect()
        } else {
            Vec::new()
        };
        let (elbo, norms, masked, grad) = sweep(
            data,
            &cells,
            &mut lat,
            &mut eta_b,
            capture,
            mu,
            w,
            &d,
            &sig,
            k,
            cfg.n_newton_steps,
            cfg.damping,
            cfg.newton_max_step,
            true,
        );
        masked_total += masked;
        // The loadings prior: unscaled by N/B (its weight falls as N grows).
        let mut g_prior = vec![0.0; th.len()];
        let lp_w = {
            let (gw, gaux) = g_prior[g..].split_at_mut(g * k);
            cfg.loadings_prior
                .log_prob_grad(w, g, k, &th[aux_at..], gw, &mut gaux[g..])
        };
        let loss = -scale * elbo - lp_w;
        history.push(loss);
        if step == 0 {
            init_loss = loss.abs();
        }
        // Divergence guards: a non-finite loss, or one that grew 1000-fold.
        if !loss.is_finite() || (step >= 50 && loss.abs() > 1000.0 * init_loss) {
            aborted = Some(format!(
                "step {}: the loss became {} (it started at {:.4e}); the best parameters (loss {:.4e}) were restored. Lower the step size, raise laplace_config$damping, or reduce latent_dim",
                step + 1, loss, init_loss, best_loss
            ));
            break;
        }
        for (i, &c) in cells.iter().enumerate() {
            latents[c * g..(c + 1) * g].copy_from_slice(&lat[i * g..(i + 1) * g]);
            if capture.is_some() {
                eta[c] = eta_b[i];
            }
        }
        if loss < best_loss {
            best_loss = loss;
            best = (th.clone(), latents.clone(), eta.clone());
        }
        // Loss gradient = −scale · ∇ELBO, chained through d = softplus(d_loc).
        let mut lg: Vec<f64> = grad.iter().map(|v| -scale * v).collect();
        for i in 0..g {
            lg[g + g * k + i] *= crate::math::sigmoid(th[g + g * k + i]);
        }
        lg.resize(th.len(), 0.0);
        for (a, b) in lg.iter_mut().zip(&g_prior) {
            *a -= b;
        }
        opt.step(&mut th, &lg);
        if (step + 1) % report_every == 0 || step + 1 == cfg.n_steps {
            let (mx, p99, med) = norm_summary(&norms);
            progress.detail(format!("x max/p99/med {mx:.2e}/{p99:.2e}/{med:.2e}"));
            progress.report(step + 1, cfg.n_steps, loss);
        }
    }
    if aborted.is_some() {
        th = best.0;
        latents = best.1;
        eta = best.2;
    }
    // Final sweep over all cells at the final globals, then rescue.
    let (mu, w, dl) = gl.split(&th);
    let d: Vec<f64> = dl.iter().map(|&v| softplus(v)).collect();
    let sig = SigmaFactor::new(w, &d, k).ok_or_else(|| CoreError::NonFinite {
        step: history.len(),
        msg: "the prior covariance is not positive definite".into(),
    })?;
    let all: Vec<usize> = (0..n).collect();
    let n_final = (2 * cfg.n_newton_steps).max(10);
    let (_, mut norms, _, _) = sweep(
        data,
        &all,
        &mut latents,
        &mut eta,
        capture,
        mu,
        w,
        &d,
        &sig,
        k,
        n_final,
        cfg.damping,
        cfg.newton_max_step,
        false,
    );
    let mut rescued = vec![false; n];
    if cfg.rescue_diverged_cells {
        let bad: Vec<usize> = (0..n)
            .filter(|&c| !(norms[c] <= cfg.newton_tolerance * cfg.rescue_threshold_multiplier))
            .collect();
        if !bad.is_empty() {
            let mut lat: Vec<f64> = bad
                .iter()
                .flat_map(|&c| latents[c * g..(c + 1) * g].iter().copied())
                .collect();
            let damp = cfg.damping * cfg.rescue_damping_multiplier;
            let mut eta_b: Vec<f64> = if capture.is_some() {
                bad.iter().map(|&c| eta[c]).collect()
            } else {
                Vec::new()
            };
            let (_, nn, _, _) = sweep(
                data,
                &bad,
                &mut lat,
                &mut eta_b,
                capture,
                mu,
                w,
                &d,
                &sig,
                k,
                cfg.rescue_n_newton,
                damp,
                cfg.newton_max_step,
                false,
            );
            for (i, &c) in bad.iter().enumerate() {
                latents[c * g..(c + 1) * g].copy_from_slice(&lat[i * g..(i + 1) * g]);
                rescued[c] = true;
                let mut u = vec![0.0; g];
                pln::dense_counts(data, c, &mut u);
                let x = &latents[c * g..(c + 1) * g];
                norms[c] = if !nn[i].is_finite() {
                    f64::NAN
                } else if let Some((anchor, sigma)) = capture {
                    eta[c] = eta_b[i];
                    let cp = pln::CapturePrior {
                        anchor: anchor[c],
                        sigma,
                    };
                    pln::cell_grad_norm_capture(&u, x, eta[c], cp, mu, w, &sig)
                } else {
                    pln::cell_grad_norm(&u, x, mu, w, &sig)
                };
            }
        }
    }
    Ok(PlnFit {
        n_genes: g,
        latent_dim: k,
        mu: mu.to_vec(),
        w: w.to_vec(),
        d,
        latents,
        eta,
        loss_history: history,
        grad_norms: norms,
        rescued,
        masked_cells: masked_total,
        aborted,
        w_prior: cfg.loadings_prior.diagnostics(w, g, k, &th[aux_at..]),
        w_prior_aux: th[aux_at..].to_vec(),
    })
}
