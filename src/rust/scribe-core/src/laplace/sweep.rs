//! One outer step's per-cell work: the parameter layout, each cell's
//! capture mode, the globals read from θ, and the parallel Newton sweep
//! with the ELBO gradient (PLN/NBLN through `cell`, LNM through `lnm`).

use super::block;
use super::cell::{self, EtaMode, OuterGrad};
use super::woodbury::SigmaFactor;
use super::{lnm, Capture};
use crate::data::CountMatrix;
use crate::error::{CoreError, Result};
use crate::math::softplus;
use crate::models::lognormal::lnm::totals;
use crate::models::lognormal::obs::{NegBin, Obs, Poisson};
use crate::progress::Cancel;
use rayon::prelude::*;

/// Cells per parallel work unit; fixed so sums group the same way on any
/// number of threads.
const CELL_CHUNK: usize = 32;

/// How a sweep runs each cell's Newton solve: at most `n` steps, none once
/// the gradient sup-norm is at most `tol`, Tikhonov `damping` on the Newton
/// matrix and steps capped at `max_step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NewtonSettings {
    pub(crate) n: usize,
    pub(crate) tol: f64,
    pub(crate) damping: f64,
    pub(crate) max_step: f64,
}

impl NewtonSettings {
    /// The outer steps' settings from the fit's configuration.
    pub(crate) fn of(cfg: &super::LaplaceConfig) -> Self {
        NewtonSettings {
            n: cfg.n_newton_steps,
            tol: cfg.newton_tolerance,
            damping: cfg.damping,
            max_step: cfg.newton_max_step,
        }
    }
}

/// Offsets of the blocks of `θ = [μ | W | d_loc | extra | aux]`, where
/// `extra` is `r_loc` (G, NBLN) or `(μ_T, r_T)` raw (2, LNM); `g` is the
/// latent dimension (G − 1 for LNM).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) g: usize,
    pub(crate) k: usize,
    pub(crate) has_r: bool,
    /// LNM's reference gene.
    pub(crate) reference: Option<usize>,
    /// Low-rank LNM: each cell's latent is `z ∈ R^k`.
    pub(crate) low_rank: bool,
}

impl Layout {
    pub(crate) fn w(&self) -> usize {
        self.g
    }
    pub(crate) fn d(&self) -> usize {
        self.g + self.g * self.k
    }
    pub(crate) fn r(&self) -> usize {
        self.d() + self.g
    }
    /// Length of one cell's latent vector.
    pub(crate) fn lat_dim(&self) -> usize {
        if self.low_rank {
            self.k
        } else {
            self.g
        }
    }
    pub(crate) fn n_extra(&self) -> usize {
        if self.has_r {
            self.g
        } else if self.reference.is_some() {
            2
        } else {
            0
        }
    }
    pub(crate) fn aux(&self) -> usize {
        self.r() + self.n_extra()
    }
}

/// The per-cell capture mode and the per-cell prior of `η`.
pub(crate) struct EtaSpec {
    pub(crate) mode: Vec<EtaMode>,
}

impl EtaSpec {
    pub(crate) fn new(capture: &Capture, data: &CountMatrix) -> Result<(Self, Vec<f64>)> {
        let n = data.n_cells;
        let bad = |m: &str| Err(CoreError::arg("priors", m.to_string()));
        Ok(match capture {
            Capture::None => (
                EtaSpec {
                    mode: vec![EtaMode::None; n],
                },
                vec![0.0; n],
            ),
            Capture::Anchor { ln_m0, sigma } => {
                if !(*sigma > 0.0) || !ln_m0.is_finite() {
                    return bad("capture_efficiency must be c(log(M0), sigma) with sigma > 0");
                }
                let anchors: Vec<f64> = data
                    .lib_size
                    .iter()
                    .map(|&l| ln_m0 - l.max(1.0).ln())
                    .collect();
                let mode = anchors
                    .iter()
                    .map(|&a| EtaMode::Free {
                        anchor: a,
                        sigma: *sigma,
                    })
                    .collect();
                let eta0 = anchors.iter().map(|a| a.max(cell::ETA_MIN)).collect();
                (EtaSpec { mode }, eta0)
            }
            Capture::PerCell { loc, scale } => {
                if loc.len() != n || scale.len() != n || scale.iter().any(|s| !(*s > 0.0)) {
                    return bad("the per-cell capture prior does not match the cells");
                }
                let mode = loc
                    .iter()
                    .zip(scale)
                    .map(|(&a, &s)| EtaMode::Free {
                        anchor: a,
                        sigma: s,
                    })
                    .collect();
                (
                    EtaSpec { mode },
                    loc.iter().map(|a| a.max(cell::ETA_MIN)).collect(),
                )
            }
            Capture::Frozen(eta) => {
                if eta.len() != n || eta.iter().any(|e| !e.is_finite()) {
                    return bad("the frozen capture values do not match the cells");
                }
                (
                    EtaSpec {
                        mode: vec![EtaMode::Fixed; n],
                    },
                    eta.clone(),
                )
            }
        })
    }
}

/// Globals read from `θ` for one step.
pub(crate) struct Globals<'a> {
    pub(crate) mu: &'a [f64],
    pub(crate) w: &'a [f64],
    pub(crate) d: Vec<f64>,
    pub(crate) r: Vec<f64>,
    /// LNM totals `(μ_T, r_T)`.
    pub(crate) totals: (f64, f64),
    pub(crate) sig: SigmaFactor,
}

impl<'a> Globals<'a> {
    pub(crate) fn new(th: &'a [f64], lay: Layout) -> Option<Self> {
        let (g, k) = (lay.g, lay.k);
        let mu = &th[..g];
        let w = &th[lay.w()..lay.w() + g * k];
        let d: Vec<f64> = th[lay.d()..lay.d() + g]
            .iter()
            .map(|&v| softplus(v))
            .collect();
        let r = if lay.has_r {
            th[lay.r()..lay.r() + g]
                .iter()
                .map(|&v| softplus(v))
                .collect()
        } else {
            Vec::new()
        };
        let totals = if lay.reference.is_some() {
            (softplus(th[lay.r()]), softplus(th[lay.r() + 1]))
        } else {
            (f64::NAN, f64::NAN)
        };
        let sig = SigmaFactor::new(w, &d, k)?;
        Some(Globals {
            mu,
            w,
            d,
            r,
            totals,
            sig,
        })
    }
}

/// What one sweep over cells returns.
pub(crate) struct SweepOut {
    /// Σ ELBO over the cells whose ELBO was finite.
    pub(crate) elbo: f64,
    /// Per-cell gradient sup-norms (see [`cell::newton`]).
    pub(crate) norms: Vec<f64>,
    /// Cells whose ELBO or gradient was non-finite (left out).
    pub(crate) masked: usize,
    /// `[μ | W | d | r]` gradient (empty without `want_grad`).
    pub(crate) grad: Vec<f64>,
    /// Newton steps taken, summed over cells.
    pub(crate) newton_steps: usize,
    /// The user asked to stop: chunks started after that did no work, and
    /// the results are incomplete.
    pub(crate) cancelled: bool,
}

/// Newton on `cells` (their latents in `lat`, `len·G`, and `eta`), at most
/// `ns.n` Newton steps per cell and none once its gradient sup-norm is at most
/// `ns.tol`, and, with `want_grad`, the ELBO gradient in `[μ | W | d | r]` order.
/// `cancel` is polled once per chunk of cells, so Ctrl-C stops a long sweep
/// within one chunk's work.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sweep(
    cancel: &dyn Cancel,
    data: &CountMatrix,
    cells: &[usize],
    lat: &mut [f64],
    eta: &mut [f64],
    modes: &EtaSpec,
    gl: &Globals<'_>,
    lay: Layout,
    ns: NewtonSettings,
    want_grad: bool,
) -> SweepOut {
    let (g, k) = (lay.g, lay.k);
    let np = g * (k + 2) + lay.n_extra();
    let nb = NegBin::new(&gl.r);
    let obs: &dyn Obs = if lay.has_r { &nb } else { &Poisson };
    let parts: Vec<SweepOut> = lat
        .par_chunks_mut(CELL_CHUNK * lay.lat_dim())
        .zip(cells.par_chunks(CELL_CHUNK))
        .zip(eta.par_chunks_mut(CELL_CHUNK))
        .map_init(
            block::Scratch::default,
            |scratch, ((lchunk, cchunk), echunk)| {
                if cancel.cancelled() {
                    return SweepOut {
                        elbo: 0.0,
                        norms: Vec::new(),
                        masked: 0,
                        grad: Vec::new(),
                        newton_steps: 0,
                        cancelled: true,
                    };
                }
                let Some(rf) = lay.reference else {
                    return block_chunk(
                        obs, data, cchunk, lchunk, echunk, modes, gl, lay, ns, want_grad, scratch,
                    );
                };
                // LNM: one cell at a time.
                let mut u = vec![0.0; data.n_genes];
                let mut grad = vec![0.0; if want_grad { np } else { 0 }];
                let mut tmp = vec![0.0; if want_grad { np } else { 0 }];
                let (mut elbo, mut masked, mut steps) = (0.0, 0, 0);
                let mut norms = Vec::with_capacity(cchunk.len());
                for (i, (x, &c)) in lchunk.chunks_mut(lay.lat_dim()).zip(cchunk).enumerate() {
                    data.dense_row(c, &mut u);
                    let (x0, e0) = (x.to_vec(), echunk[i]);
                    let (gn, e, its) = lnm_cell(
                        &mut echunk[i],
                        modes.mode[c],
                        &u,
                        rf,
                        data.lib_size[c],
                        x,
                        gl,
                        lay,
                        ns,
                        want_grad,
                        &mut tmp,
                    );
                    steps += its;
                    if !x.iter().all(|v| v.is_finite()) || !echunk[i].is_finite() {
                        x.copy_from_slice(&x0);
                        echunk[i] = e0;
                    }
                    norms.push(gn);
                    if want_grad {
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
                SweepOut {
                    elbo,
                    norms,
                    masked,
                    grad,
                    newton_steps: steps,
                    cancelled: false,
                }
            },
        )
        .collect();
    let mut out = SweepOut {
        elbo: 0.0,
        norms: Vec::with_capacity(cells.len()),
        masked: 0,
        grad: vec![0.0; if want_grad { np } else { 0 }],
        newton_steps: 0,
        cancelled: false,
    };
    for part in parts {
        if part.cancelled {
            out.cancelled = true;
            continue;
        }
        out.elbo += part.elbo;
        out.norms.extend(part.norms);
        out.masked += part.masked;
        out.newton_steps += part.newton_steps;
        for (a, b) in out.grad.iter_mut().zip(&part.grad) {
            *a += b;
        }
    }
    out
}

/// One chunk of PLN/NBLN cells as a block (see [`block`]): Newton, then
/// (with `want_grad`) the ELBO and its gradient in `[μ | W | d | r]` order.
/// A cell whose Newton steps left non-finite latents returns to its start.
#[allow(clippy::too_many_arguments)]
fn block_chunk(
    obs: &dyn Obs,
    data: &CountMatrix,
    cells: &[usize],
    lat: &mut [f64],
    eta: &mut [f64],
    modes: &EtaSpec,
    gl: &Globals<'_>,
    lay: Layout,
    ns: NewtonSettings,
    want_grad: bool,
    scratch: &mut block::Scratch,
) -> SweepOut {
    let (g, k) = (lay.g, lay.k);
    let n = cells.len();
    scratch.u.resize(n * g, 0.0);
    for (row, &c) in scratch.u.chunks_exact_mut(g).zip(cells) {
        data.dense_row(c, row);
    }
    let cell_modes: Vec<EtaMode> = cells.iter().map(|&c| modes.mode[c]).collect();
    let (x0, e0) = (lat.to_vec(), eta.to_vec());
    let res = block::newton(
        obs,
        lat,
        eta,
        &cell_modes,
        gl.mu,
        &gl.sig,
        ns.n,
        ns.tol,
        ns.damping,
        ns.max_step,
        scratch,
    );
    for i in 0..n {
        let x = &mut lat[i * g..(i + 1) * g];
        if !x.iter().all(|v| v.is_finite()) || !eta[i].is_finite() {
            x.copy_from_slice(&x0[i * g..(i + 1) * g]);
            eta[i] = e0[i];
        }
    }
    let mut out = SweepOut {
        elbo: 0.0,
        norms: res.iter().map(|r| r.0).collect(),
        masked: 0,
        grad: Vec::new(),
        newton_steps: res.iter().map(|r| r.1).sum(),
        cancelled: false,
    };
    if want_grad {
        let np = g * (k + 2) + lay.n_extra();
        out.grad = vec![0.0; np];
        let grads = OuterGrad::split(&mut out.grad, g, k);
        let mut elbo = vec![0.0; n];
        block::elbo_grad(
            obs,
            lat,
            eta,
            &cell_modes,
            gl.mu,
            gl.w,
            &gl.d,
            &gl.sig,
            scratch,
            grads,
            &mut elbo,
        );
        for e in elbo {
            if e.is_finite() {
                out.elbo += e;
            } else {
                out.masked += 1;
            }
        }
    }
    out
}

/// One LNM cell: Newton on its log-ratios `y`, then (with `want_grad`) its
/// composition ELBO plus the totals' log-density, gradients into `tmp`.
#[allow(clippy::too_many_arguments)]
fn lnm_cell(
    eta: &mut f64,
    mode: EtaMode,
    u: &[f64],
    reference: usize,
    n_tot: f64,
    y: &mut [f64],
    gl: &Globals<'_>,
    lay: Layout,
    ns: NewtonSettings,
    want_grad: bool,
    tmp: &mut [f64],
) -> (f64, f64, usize) {
    let (g, k) = (lay.g, lay.k);
    let ua: Vec<f64> = u
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != reference)
        .map(|(_, &v)| v)
        .collect();
    let (mut gn, its) = if lay.low_rank {
        lnm::newton_z(
            &ua,
            n_tot,
            y,
            gl.mu,
            gl.w,
            ns.n,
            ns.tol,
            ns.damping,
            ns.max_step,
        )
    } else {
        lnm::newton(
            &ua,
            n_tot,
            y,
            gl.mu,
            gl.w,
            &gl.sig,
            ns.n,
            ns.tol,
            ns.damping,
            ns.max_step,
        )
    };
    // LNMVCP: the capture latent is its own scalar problem (the Hessian is
    // block-diagonal between composition and η).
    if let EtaMode::Free { anchor, sigma } = mode {
        let (mu_t, r_t) = gl.totals;
        let ge = lnm::eta_newton(n_tot, mu_t, r_t, anchor, sigma, eta, ns.n, ns.damping);
        gn = gn.max(ge);
    }
    if !want_grad {
        return (gn, f64::NAN, its);
    }
    tmp.iter_mut().for_each(|v| *v = 0.0);
    let (tm, rest) = tmp.split_at_mut(g);
    let (tw, rest) = rest.split_at_mut(g * k);
    let (td, tr) = rest.split_at_mut(g);
    let e = if lay.low_rank {
        lnm::elbo_grad_z(&ua, n_tot, y, gl.mu, gl.w, tm, tw)
    } else {
        lnm::elbo_grad(
            &ua,
            n_tot,
            y,
            gl.mu,
            gl.w,
            &gl.d,
            &gl.sig,
            k,
            OuterGrad {
                mu: tm,
                w: tw,
                d: td,
                r: &mut [],
            },
        )
    };
    let (lp, d_mu, d_r) = match mode {
        EtaMode::Free { anchor, sigma } => {
            lnm::totals_capture(n_tot, gl.totals.0, gl.totals.1, *eta, anchor, sigma)
        }
        _ => totals(n_tot, gl.totals.0, gl.totals.1),
    };
    tr[0] += d_mu;
    tr[1] += d_r;
    (gn, e + lp, its)
}

/// A cell's gradient sup-norm at its current latents.
pub(crate) fn cell_norm(
    data: &CountMatrix,
    c: usize,
    x: &[f64],
    eta: f64,
    mode: EtaMode,
    gl: &Globals<'_>,
    lay: Layout,
) -> f64 {
    let mut u = vec![0.0; data.n_genes];
    data.dense_row(c, &mut u);
    if let Some(rf) = lay.reference {
        let ua: Vec<f64> = u
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != rf)
            .map(|(_, &v)| v)
            .collect();
        let mut gn = if lay.low_rank {
            lnm::grad_norm_z(&ua, data.lib_size[c], x, gl.mu, gl.w)
        } else {
            lnm::grad_norm(&ua, data.lib_size[c], x, gl.mu, gl.w, &gl.sig)
        };
        if let EtaMode::Free { anchor, sigma } = mode {
            let (mu_t, r_t) = gl.totals;
            gn = gn.max(lnm::eta_grad_norm(
                data.lib_size[c],
                mu_t,
                r_t,
                anchor,
                sigma,
                eta,
            ));
        }
        return gn;
    }
    let nb = NegBin::new(&gl.r);
    let obs: &dyn Obs = if lay.has_r { &nb } else { &Poisson };
    cell::grad_norm(obs, &u, x, eta, mode, gl.mu, gl.w, &gl.sig)
}
