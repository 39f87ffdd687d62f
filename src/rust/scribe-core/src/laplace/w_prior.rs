//! Shrinkage priors on the loadings. They act on the gene-centred loadings
//! `W⊥ = (I − 11ᵀ/G) W` (the part of W that changes compositions; the
//! all-ones direction is a gauge of the log-normal models), with
//! `d_eff = G − 1` in every Gaussian normaliser. Auxiliary scales live in
//! unconstrained coordinates, `scale = floor + softplus(raw)`, whose
//! log-Jacobian `ln σ(raw)` is part of the log-density. The prior enters the
//! loss unscaled by N/B.

use crate::math::{lgamma, sigmoid, softplus, softplus_inv};
use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadingsPrior {
    None,
    /// `W⊥_gk ~ N(0, scale²)`.
    Gaussian {
        scale: f64,
    },
    /// Column k: `W⊥[:, k] ~ N(0, λ_k² I)`, `λ_k ~ HalfCauchy(τ)`, `τ ~ HalfCauchy(tau_scale)`.
    HorseshoeColumnwise {
        tau_scale: f64,
        lambda_min: f64,
        tau_min: f64,
        init_scale: f64,
    },
    /// Column k: `W⊥[:, k] ~ N(0, ψ_k I)`, `ψ_k ~ Exp(γ)`, `γ ~ Gamma(α, β)`.
    NegColumnwise {
        alpha: f64,
        beta: f64,
        psi_min: f64,
        gamma_min: f64,
        init_scale: f64,
    },
}

/// What the fitted loadings prior says about W.
#[derive(Debug, Clone, PartialEq)]
pub struct WPriorDiagnostics {
    /// `‖W⊥[:, k]‖₂`.
    pub column_norms: Vec<f64>,
    /// `‖W[:, k]‖₂` (raw W).
    pub column_norms_raw: Vec<f64>,
    /// Columns whose norm exceeds 5 % of the largest.
    pub effective_rank: usize,
    /// Per-column prior scale: λ_k (horseshoe) or √ψ_k (NEG); empty otherwise.
    pub sigma_k: Vec<f64>,
    pub scale_effective_rank: Option<usize>,
    /// τ (horseshoe) or γ (NEG).
    pub global: Option<f64>,
}

fn ln_half_cauchy(x: f64, s: f64) -> (f64, f64, f64) {
    // value, d/dx, d/ds
    let r = x / s;
    let v = (2.0 / (PI * s)).ln() - (1.0 + r * r).ln();
    let dx = -2.0 * x / (s * s + x * x);
    let ds = -1.0 / s + 2.0 * x * x / (s * (s * s + x * x));
    (v, dx, ds)
}

fn ln_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

fn rank_5pct(v: &[f64]) -> usize {
    let mx = v.iter().copied().fold(0.0, f64::max);
    v.iter().filter(|&&x| x > 0.05 * mx).count()
}

impl LoadingsPrior {
    pub fn validate(&self) -> crate::Result<()> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        let good = match *self {
            LoadingsPrior::None => true,
            LoadingsPrior::Gaussian { scale } => ok(scale),
            LoadingsPrior::HorseshoeColumnwise {
                tau_scale,
                lambda_min,
                tau_min,
                init_scale,
            } => {
                ok(tau_scale)
                    && ok(lambda_min)
                    && ok(tau_min)
                    && ok(init_scale)
                    && lambda_min < init_scale
                    && tau_min < init_scale
            }
            LoadingsPrior::NegColumnwise {
                alpha,
                beta,
                psi_min,
                gamma_min,
                init_scale,
            } => {
                ok(alpha)
                    && ok(beta)
                    && ok(psi_min)
                    && ok(gamma_min)
                    && ok(init_scale)
                    && psi_min < init_scale
                    && gamma_min < init_scale
            }
        };
        if good {
            Ok(())
        } else {
            Err(crate::CoreError::arg(
                "priors$loadings",
                "every hyper-parameter must be finite and positive, and floors smaller than init_scale",
            ))
        }
    }

    pub fn n_aux(&self, k: usize) -> usize {
        match self {
            LoadingsPrior::HorseshoeColumnwise { .. } | LoadingsPrior::NegColumnwise { .. } => {
                k + 1
            }
            _ => 0,
        }
    }

    /// Starting auxiliary parameters: every scale at `init_scale`.
    pub fn init_aux(&self, k: usize) -> Vec<f64> {
        match *self {
            LoadingsPrior::HorseshoeColumnwise {
                lambda_min,
                tau_min,
                init_scale,
                ..
            } => {
                let mut v = vec![softplus_inv(init_scale - lambda_min); k];
                v.push(softplus_inv(init_scale - tau_min));
                v
            }
            LoadingsPrior::NegColumnwise {
                psi_min,
                gamma_min,
                init_scale,
                ..
            } => {
                let mut v = vec![softplus_inv(init_scale - psi_min); k];
                v.push(softplus_inv(init_scale - gamma_min));
                v
            }
            _ => Vec::new(),
        }
    }

    /// `W⊥` and the squared column norms.
    fn centred(w: &[f64], g: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
        let mut mean = vec![0.0; k];
        for i in 0..g {
            for j in 0..k {
                mean[j] += w[i * k + j] / g as f64;
            }
        }
        let wp: Vec<f64> = (0..g * k).map(|ij| w[ij] - mean[ij % k]).collect();
        let mut n2 = vec![0.0; k];
        for i in 0..g {
            for j in 0..k {
                n2[j] += wp[i * k + j] * wp[i * k + j];
            }
        }
        (wp, n2)
    }

    /// `ln p(W⊥, aux)`; adds its gradient w.r.t. W (row-major `g × k`) and aux.
    pub fn log_prob_grad(
        &self,
        w: &[f64],
        g: usize,
        k: usize,
        aux: &[f64],
        gw: &mut [f64],
        gaux: &mut [f64],
    ) -> f64 {
        if let LoadingsPrior::None = self {
            return 0.0;
        }
        let d_eff = (g - 1) as f64;
        let ln2pi = (2.0 * PI).ln();
        let (wp, n2) = Self::centred(w, g, k);
        // Per-column precision 1/v_k of the Gaussian on W⊥[:, k].
        let (lp, inv_var) = match *self {
            LoadingsPrior::None => unreachable!(),
            LoadingsPrior::Gaussian { scale } => {
                let s2 = scale * scale;
                let lp = (0..k).map(|j| -0.5 * n2[j] / s2).sum::<f64>()
                    - d_eff * k as f64 * scale.ln()
                    - 0.5 * d_eff * k as f64 * ln2pi;
                (lp, vec![1.0 / s2; k])
            }
            LoadingsPrior::HorseshoeColumnwise {
                tau_scale,
                lambda_min,
                tau_min,
                ..
            } => {
                let lam: Vec<f64> = (0..k).map(|j| lambda_min + softplus(aux[j])).collect();
                let tau = tau_min + softplus(aux[k]);
                let mut lp = 0.0;
                let mut d_tau = 0.0;
                for j in 0..k {
                    let l = lam[j];
                    lp += -0.5 * n2[j] / (l * l) - d_eff * l.ln() - 0.5 * d_eff * ln2pi;
                    let (hc, hdx, hds) = ln_half_cauchy(l, tau);
                    lp += hc + ln_sigmoid(aux[j]);
                    let d_l = n2[j] / (l * l * l) - d_eff / l + hdx;
                    gaux[j] += d_l * sigmoid(aux[j]) + (1.0 - sigmoid(aux[j]));
                    d_tau += hds;
                }
                let (hc, hdx, _) = ln_half_cauchy(tau, tau_scale);
                lp += hc + ln_sigmoid(aux[k]);
                d_tau += hdx;
                gaux[k] += d_tau * sigmoid(aux[k]) + (1.0 - sigmoid(aux[k]));
                (lp, lam.iter().map(|l| 1.0 / (l * l)).collect())
            }
            LoadingsPrior::NegColumnwise {
                alpha,
                beta,
                psi_min,
                gamma_min,
                ..
            } => {
                let psi: Vec<f64> = (0..k).map(|j| psi_min + softplus(aux[j])).collect();
                let gam = gamma_min + softplus(aux[k]);
                let mut lp = 0.0;
                let mut d_gam = 0.0;
                for j in 0..k {
                    let p = psi[j];
                    lp += -0.5 * n2[j] / p - 0.5 * d_eff * p.ln() - 0.5 * d_eff * ln2pi;
                    lp += gam.ln() - gam * p + ln_sigmoid(aux[j]);
                    let d_p = 0.5 * n2[j] / (p * p) - 0.5 * d_eff / p - gam;
                    gaux[j] += d_p * sigmoid(aux[j]) + (1.0 - sigmoid(aux[j]));
                    d_gam += 1.0 / gam - p;
                }
                lp += alpha * beta.ln() - lgamma(alpha) + (alpha - 1.0) * gam.ln() - beta * gam
                    + ln_sigmoid(aux[k]);
                d_gam += (alpha - 1.0) / gam - beta;
                gaux[k] += d_gam * sigmoid(aux[k]) + (1.0 - sigmoid(aux[k]));
                (lp, psi.iter().map(|p| 1.0 / p).collect())
            }
        };
        // ∂/∂W⊥ = −W⊥ / v_k; ∂/∂W = (I − 11ᵀ/G) ∂/∂W⊥ (centre each column again).
        let mut gp: Vec<f64> = (0..g * k).map(|ij| -wp[ij] * inv_var[ij % k]).collect();
        let mut mean = vec![0.0; k];
        for i in 0..g {
            for j in 0..k {
                mean[j] += gp[i * k + j] / g as f64;
            }
        }
        for (ij, v) in gp.iter_mut().enumerate() {
            *v -= mean[ij % k];
        }
        for (a, b) in gw.iter_mut().zip(&gp) {
            *a += b;
        }
        lp
    }

    pub fn diagnostics(&self, w: &[f64], g: usize, k: usize, aux: &[f64]) -> WPriorDiagnostics {
        let (_, n2) = Self::centred(w, g, k);
        let column_norms: Vec<f64> = n2.iter().map(|v| v.sqrt()).collect();
        let column_norms_raw: Vec<f64> = (0..k)
            .map(|j| (0..g).map(|i| w[i * k + j].powi(2)).sum::<f64>().sqrt())
            .collect();
        let (sigma_k, global) = match *self {
            LoadingsPrior::HorseshoeColumnwise {
                lambda_min,
                tau_min,
                ..
            } => (
                (0..k).map(|j| lambda_min + softplus(aux[j])).collect(),
                Some(tau_min + softplus(aux[k])),
            ),
            LoadingsPrior::NegColumnwise {
                psi_min, gamma_min, ..
            } => (
                (0..k)
                    .map(|j| (psi_min + softplus(aux[j])).sqrt())
                    .collect(),
                Some(gamma_min + softplus(aux[k])),
            ),
            _ => (Vec::new(), None),
        };
        WPriorDiagnostics {
            effective_rank: rank_5pct(&column_norms),
            scale_effective_rank: (!sigma_k.is_empty()).then(|| rank_5pct(&sigma_k)),
            column_norms,
            column_norms_raw,
            sigma_k,
            global,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_gradients_match_finite_differences() {
        let (g, k) = (7, 3);
        let w: Vec<f64> = (0..g * k).map(|i| ((i as f64) * 0.61).sin()).collect();
        let priors = [
            LoadingsPrior::Gaussian { scale: 0.7 },
            LoadingsPrior::HorseshoeColumnwise {
                tau_scale: 1.0,
                lambda_min: 1e-3,
                tau_min: 1e-3,
                init_scale: 1.0,
            },
            LoadingsPrior::NegColumnwise {
                alpha: 1.5,
                beta: 2.0,
                psi_min: 1e-6,
                gamma_min: 1e-6,
                init_scale: 1.0,
            },
        ];
        for pr in priors {
            let aux: Vec<f64> = (0..pr.n_aux(k)).map(|i| 0.3 - 0.2 * i as f64).collect();
            let f = |w: &[f64], aux: &[f64]| {
                let (mut a, mut b) = (vec![0.0; g * k], vec![0.0; aux.len()]);
                pr.log_prob_grad(w, g, k, aux, &mut a, &mut b)
            };
            let (mut gw, mut ga) = (vec![0.0; g * k], vec![0.0; aux.len()]);
            pr.log_prob_grad(&w, g, k, &aux, &mut gw, &mut ga);
            let h = 1e-6;
            for i in 0..g * k {
                let (mut p, mut m) = (w.clone(), w.clone());
                p[i] += h;
                m[i] -= h;
                let fd = (f(&p, &aux) - f(&m, &aux)) / (2.0 * h);
                assert!((fd - gw[i]).abs() < 1e-6 * (1.0 + fd.abs()), "{pr:?} W {i}");
            }
            for i in 0..aux.len() {
                let (mut p, mut m) = (aux.clone(), aux.clone());
                p[i] += h;
                m[i] -= h;
                let fd = (f(&w, &p) - f(&w, &m)) / (2.0 * h);
                assert!(
                    (fd - ga[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{pr:?} aux {i}: {fd} vs {}",
                    ga[i]
                );
            }
            // Scales start at init_scale.
            if let LoadingsPrior::HorseshoeColumnwise { .. } = pr {
                let a0 = pr.init_aux(k);
                let dg = pr.diagnostics(&w, g, k, &a0);
                assert!(dg.sigma_k.iter().all(|s| (s - 1.0).abs() < 1e-12));
            }
        }
    }

    #[test]
    fn effective_rank_counts_columns_above_5_percent() {
        let (g, k) = (4, 3);
        // Column 3 is tiny; column 2 is constant (pure gauge), so W⊥ has rank 1.
        let w = vec![
            1.0, 5.0, 0.001, -1.0, 5.0, 0.0, 2.0, 5.0, 0.001, -2.0, 5.0, 0.0,
        ];
        let d = LoadingsPrior::None.diagnostics(&w, g, k, &[]);
        assert_eq!(d.effective_rank, 1);
        assert!(d.column_norms[1] < 1e-12 && d.column_norms_raw[1] == 10.0);
    }
}
