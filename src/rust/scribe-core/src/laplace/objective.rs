//! The outer loss at one setting of the globals θ: a Newton sweep of the
//! cells at θ (warm-started from their stored latents), then
//! `−(N/B) Σ ELBO_c − log p(θ)` and its gradient in θ with the MAPs held
//! fixed, chained through softplus for `d`, `r` and the LNM totals, and zero
//! on frozen coordinates. Both outer optimisers (a first-order step per
//! evaluation, or L-BFGS with a line search of several) call it.

use super::sweep::{sweep, EtaSpec, Globals, Layout, NewtonSettings, SweepOut};
use super::{Cascade, LaplaceConfig, LnModel};
use crate::data::CountMatrix;
use crate::math::sigmoid;
use crate::progress::Cancel;

/// `Σ ln N(v; loc, scale)`, adding its gradient into `g`.
fn normal_prior(v: &[f64], loc: &[f64], scale: &[f64], g: &mut [f64]) -> f64 {
    let mut lp = 0.0;
    for i in 0..v.len() {
        let z = (v[i] - loc[i]) / scale[i];
        lp += -0.5 * z * z - scale[i].ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
        g[i] -= z / scale[i];
    }
    lp
}

/// The fixed parts of the outer problem.
pub(crate) struct Objective<'a> {
    pub(crate) data: &'a CountMatrix,
    pub(crate) cfg: &'a LaplaceConfig,
    pub(crate) lay: Layout,
    pub(crate) modes: &'a EtaSpec,
    pub(crate) cancel: &'a dyn Cancel,
    /// Coordinates of θ held at their start (the cascade's frozen values).
    pub(crate) frozen: Vec<(usize, f64)>,
}

/// The loss and its gradient at one θ, with the sweep's diagnostics.
pub(crate) struct Eval {
    pub(crate) loss: f64,
    /// ∇θ loss (empty when the sweep was cancelled).
    pub(crate) grad: Vec<f64>,
    pub(crate) norms: Vec<f64>,
    pub(crate) masked: usize,
    pub(crate) newton_steps: usize,
    pub(crate) cancelled: bool,
}

impl Objective<'_> {
    fn cascade(&self) -> &Cascade {
        &self.cfg.cascade
    }

    /// Sweeps `cells` (their latents and η in `lat`, `eta`, updated in
    /// place) at θ and returns the loss; `None` when θ gives no positive
    /// definite prior covariance.
    pub(crate) fn eval(
        &self,
        th: &[f64],
        cells: &[usize],
        lat: &mut [f64],
        eta: &mut [f64],
    ) -> Option<Eval> {
        let (lay, cfg) = (self.lay, self.cfg);
        let (g, k) = (lay.g, lay.k);
        let gl = Globals::new(th, lay)?;
        let SweepOut {
            elbo,
            norms,
            masked,
            grad,
            newton_steps,
            cancelled,
        } = sweep(
            self.cancel,
            self.data,
            cells,
            lat,
            eta,
            self.modes,
            &gl,
            lay,
            NewtonSettings::of(cfg),
            true,
        );
        if cancelled {
            return Some(Eval {
                loss: f64::NAN,
                grad: Vec::new(),
                norms,
                masked,
                newton_steps,
                cancelled,
            });
        }
        let scale = self.data.n_cells as f64 / cells.len() as f64;
        // Global priors (unscaled by N/B): loadings shrinkage and the
        // cascade's empirical priors on free μ and r_loc.
        let cas = self.cascade();
        let mut g_prior = vec![0.0; th.len()];
        let mut lp = {
            let (gw, rest) = g_prior[lay.w()..].split_at_mut(g * k);
            let aux_off = lay.aux() - lay.d();
            cfg.loadings_prior
                .log_prob_grad(gl.w, g, k, &th[lay.aux()..], gw, &mut rest[aux_off..])
        };
        if let (Some((loc, sc)), None) = (&cas.mu_prior, &cas.mu_frozen) {
            lp += normal_prior(&th[..g], loc, sc, &mut g_prior[..g]);
        }
        if let (true, Some((loc, sc)), None) = (lay.has_r, &cas.r_prior, &cas.r_frozen) {
            lp += normal_prior(
                &th[lay.r()..lay.r() + g],
                loc,
                sc,
                &mut g_prior[lay.r()..lay.r() + g],
            );
        }
        // −scale · ∇ELBO − ∇ priors, chained through softplus for d and r.
        let mut lg: Vec<f64> = grad.iter().map(|v| -scale * v).collect();
        lg.resize(th.len(), 0.0);
        for i in 0..g {
            lg[lay.d() + i] *= sigmoid(th[lay.d() + i]);
            if lay.has_r {
                lg[lay.r() + i] *= sigmoid(th[lay.r() + i]);
            }
        }
        if cfg.model == LnModel::Lnm {
            for i in 0..2 {
                lg[lay.r() + i] *= sigmoid(th[lay.r() + i]);
            }
        }
        for (a, b) in lg.iter_mut().zip(&g_prior) {
            *a -= b;
        }
        for &(i, _) in &self.frozen {
            lg[i] = 0.0;
        }
        Some(Eval {
            loss: -scale * elbo - lp,
            grad: lg,
            norms,
            masked,
            newton_steps,
            cancelled,
        })
    }
}
