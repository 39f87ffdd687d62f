//! The default stopping rule ("settled"): a fit stops when its loss has
//! stopped improving *and* the parameters a user reads have stopped moving,
//! measured against their own scale (for SVI, the guide's posterior standard
//! deviation). When the loss has settled but some parameters keep drifting
//! (along a direction of almost equal loss, such as the `p`–capture ridge of
//! NBVCP, where the data identify only `p̂`), it stops after `patience`
//! windows and names them as weakly identified instead of running on.
//!
//! Losses and parameters are compared as means over consecutive windows of
//! `window` steps, so mini-batch noise and optimizer oscillation average
//! out: the loss has settled when the improvement of its window mean is
//! within twice its standard error plus `loss_rtol`·|loss| plus `loss_ptol`
//! nats per tracked parameter (with millions of counts, an improvement of a
//! hundredth of a nat per parameter per window is still far above the noise,
//! yet it moves no parameter by a visible fraction of its spread; the
//! parameters' own test then decides); a group of
//! parameters has settled when its window mean moved by less than
//! `param_tol` of its scale (every coordinate of a shared or per-gene group;
//! 99 % of a per-cell group, whose coordinates move only when their cell is
//! in a mini-batch).
//!
//! A stochastic optimizer with a fixed step size does not come to rest: its
//! iterates jitter around the optimum, and for well-determined parameters
//! (a highly expressed gene's `r`) the jitter of a window mean can exceed
//! `param_tol` of the posterior spread however long the fit runs. So a
//! coordinate also counts as settled when its net movement over the last
//! [`JITTER_WINDOWS`] windows is within [`JITTER_Z`] times the typical
//! movement of one window: a steady drift moves ten times as far as one
//! window, a jitter around a fixed point no further.

use std::collections::VecDeque;
use std::ops::Range;

/// Windows over which net movement is compared with the movement of one
/// window to tell jitter from drift.
pub const JITTER_WINDOWS: usize = 10;

/// Net movement over [`JITTER_WINDOWS`] windows, in units of the
/// root-mean-square movement of one window, below which a coordinate is
/// jitter, not drift: between the ~1 of a stationary jitter (exceeding 4 has
/// a chance of 1e-4) and the 10 of a steady drift. A drift of more than
/// ~0.6 of the window mean's jitter per window is still seen.
pub const JITTER_Z: f64 = 4.0;

/// Settings of the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    pub window: usize,
    pub loss_rtol: f64,
    /// Improvement per window, in nats per tracked parameter, below which the
    /// loss counts as settled however clearly it is still falling.
    pub loss_ptol: f64,
    pub param_tol: f64,
    pub patience: usize,
    /// No stop before this many steps.
    pub min_steps: usize,
}

impl Default for Settle {
    fn default() -> Self {
        Settle {
            window: 100,
            loss_rtol: 1e-6,
            loss_ptol: 0.01,
            param_tol: 0.25,
            patience: 5,
            min_steps: 300,
        }
    }
}

impl Settle {
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::CoreError::arg("early_stopping", m.to_string()));
        if self.window < 2 {
            return bad("window must be at least 2 steps");
        }
        if !(self.loss_rtol >= 0.0) || !(self.loss_ptol >= 0.0) || !(self.param_tol > 0.0) {
            return bad("loss_rtol and loss_ptol must be >= 0 and param_tol > 0");
        }
        if self.patience == 0 {
            return bad("patience must be at least 1 window");
        }
        Ok(())
    }
}

/// A named group of parameter coordinates judged together.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub range: Range<usize>,
    /// Judge by the 99th percentile of its drifts instead of the maximum.
    pub robust: bool,
    /// Identified only jointly with other groups by the model's structure:
    /// its drift is reported but not waited for.
    pub ridge: bool,
}

/// Why a fit stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// The loss and every group settled.
    Converged,
    /// The loss settled for `patience` windows while these groups drifted.
    WeaklyIdentified(Vec<String>),
}

/// Running state of the rule over one fit.
#[derive(Debug, Clone)]
pub struct SettleTracker {
    cfg: Settle,
    groups: Vec<Group>,
    acc: Vec<f64>,
    /// Means of the latest windows (the newest last), at most [`JITTER_WINDOWS`].
    history: VecDeque<Vec<f64>>,
    loss: (f64, f64, usize),
    prev_loss: Option<(f64, f64)>,
    in_window: usize,
    flat_windows: usize,
    /// Consecutive judgements in which the loss and every group settled.
    settled_windows: usize,
    /// Per group: consecutive judgements in which it drifted.
    drifting_for: Vec<usize>,
    /// The latest drift of each group (in units of `param_tol`·scale; ≤ 1 is settled).
    pub drift: Vec<f64>,
}

impl SettleTracker {
    pub fn new(cfg: Settle, groups: Vec<Group>, dim: usize) -> Self {
        let n = groups.len();
        SettleTracker {
            cfg,
            groups,
            acc: vec![0.0; dim],
            history: VecDeque::new(),
            loss: (0.0, 0.0, 0),
            prev_loss: None,
            in_window: 0,
            flat_windows: 0,
            settled_windows: 0,
            drifting_for: vec![0; n],
            drift: vec![f64::NAN; n],
        }
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// `(group, drift)` of the latest judgement (empty before the first).
    pub fn drifts(&self) -> Vec<(String, f64)> {
        if self.drift.iter().any(|d| d.is_nan()) {
            return Vec::new();
        }
        self.groups
            .iter()
            .map(|g| g.name.clone())
            .zip(self.drift.iter().copied())
            .collect()
    }

    /// Adds 0-based step `t`'s loss and parameters; at the end of a window,
    /// judges them against the previous window (`scale` is read only then).
    pub fn push(
        &mut self,
        t: usize,
        loss: f64,
        theta: &[f64],
        scale: &dyn Fn() -> Vec<f64>,
    ) -> Verdict {
        for (a, v) in self.acc.iter_mut().zip(theta) {
            *a += v;
        }
        if loss.is_finite() {
            self.loss.0 += loss;
            self.loss.1 += loss * loss;
            self.loss.2 += 1;
        }
        self.in_window += 1;
        if self.in_window < self.cfg.window {
            return Verdict::Continue;
        }
        let w = self.in_window as f64;
        let mean: Vec<f64> = self.acc.iter().map(|a| a / w).collect();
        let (s, ss, n) = self.loss;
        let loss_now = if n > 1 {
            let m = s / n as f64;
            let var = ((ss / n as f64 - m * m) * n as f64 / (n - 1) as f64).max(0.0);
            Some((m, var / n as f64))
        } else {
            None
        };
        self.acc.iter_mut().for_each(|a| *a = 0.0);
        self.loss = (0.0, 0.0, 0);
        self.in_window = 0;
        let verdict = match (self.history.is_empty(), self.prev_loss, loss_now) {
            (false, Some((m0, v0)), Some((m1, v1))) => {
                let sc = scale();
                self.judge(t, &mean, &sc, m0 - m1, 2.0 * (v0 + v1).sqrt(), m1)
            }
            _ => Verdict::Continue,
        };
        self.history.push_back(mean);
        if self.history.len() > JITTER_WINDOWS {
            self.history.pop_front();
        }
        self.prev_loss = loss_now;
        verdict
    }

    /// Drift of coordinate `j` in units of `param_tol`·`scale` (≤ 1 is
    /// settled). Until [`JITTER_WINDOWS`] windows are at hand: its movement
    /// in the latest window. Then: its mean movement per window over them,
    /// unless that net movement is within the jitter of single windows.
    fn coordinate_drift(&self, j: usize, cur: &[f64], scale: f64) -> f64 {
        let h = &self.history;
        let unit = self.cfg.param_tol * scale.max(1e-12);
        let prev = h[h.len() - 1][j];
        if h.len() < JITTER_WINDOWS {
            return (cur[j] - prev).abs() / unit;
        }
        let net = (cur[j] - h[0][j]).abs();
        if net == 0.0 {
            return 0.0;
        }
        let mut ss = (cur[j] - prev).powi(2);
        for i in 1..h.len() {
            ss += (h[i][j] - h[i - 1][j]).powi(2);
        }
        let rms = (ss / h.len() as f64).sqrt();
        (net / h.len() as f64 / unit).min(net / (JITTER_Z * rms))
    }

    fn judge(
        &mut self,
        t: usize,
        cur: &[f64],
        scale: &[f64],
        improvement: f64,
        noise: f64,
        loss: f64,
    ) -> Verdict {
        for k in 0..self.groups.len() {
            let g = &self.groups[k];
            let mut d: Vec<f64> = g
                .range
                .clone()
                .map(|j| self.coordinate_drift(j, cur, scale[j]))
                .collect();
            self.drift[k] = if d.is_empty() {
                0.0
            } else if g.robust {
                let i = ((d.len() - 1) as f64 * 0.99).round() as usize;
                *d.select_nth_unstable_by(i, |a, b| a.total_cmp(b)).1
            } else {
                d.iter().copied().fold(0.0, f64::max)
            };
            self.drifting_for[k] = if self.drift[k] <= 1.0 {
                0
            } else {
                self.drifting_for[k] + 1
            };
        }
        if t + 1 < self.cfg.min_steps {
            return Verdict::Continue;
        }
        // Flat within its noise; or, more loosely, improving by less than
        // `loss_ptol` per parameter, enough to stop once the parameters
        // have settled, but not to call those still moving weakly identified.
        let flat = improvement <= noise + self.cfg.loss_rtol * loss.abs();
        let loss_settled = flat || improvement <= self.cfg.loss_ptol * cur.len() as f64;
        if !loss_settled {
            self.flat_windows = 0;
            self.settled_windows = 0;
            return Verdict::Continue;
        }
        let waited_for = |(g, d): (&Group, &f64)| !g.ridge && *d > 1.0;
        // Settled twice in a row, so that one window in which a drifting
        // parameter happened to stand still does not end the fit.
        if !self.groups.iter().zip(&self.drift).any(waited_for) {
            self.settled_windows += 1;
            return if self.settled_windows >= 2 {
                Verdict::Converged
            } else {
                Verdict::Continue
            };
        }
        self.settled_windows = 0;
        if !flat {
            self.flat_windows = 0;
            return Verdict::Continue;
        }
        self.flat_windows += 1;
        // A drift is named only once jitter can be told from it.
        if self.flat_windows < self.cfg.patience || self.history.len() < JITTER_WINDOWS {
            return Verdict::Continue;
        }
        // Named only if it drifted in every one of the flat windows: a group
        // that wanders in and out of its tolerance has settled for practical
        // purposes.
        let drifting: Vec<String> = self
            .groups
            .iter()
            .zip(&self.drifting_for)
            .filter(|(g, n)| !g.ridge && **n >= self.cfg.patience)
            .map(|(g, _)| g.name.clone())
            .collect();
        if drifting.is_empty() {
            Verdict::Converged
        } else {
            Verdict::WeaklyIdentified(drifting)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<Group> {
        vec![
            Group {
                name: "a".into(),
                range: 0..1,
                robust: false,
                ridge: false,
            },
            Group {
                name: "b".into(),
                range: 1..2,
                robust: false,
                ridge: false,
            },
        ]
    }

    /// Feeds `n` steps of (loss, θ) and returns the verdict and its step.
    fn run(
        cfg: Settle,
        n: usize,
        f: impl Fn(usize) -> (f64, [f64; 2]),
    ) -> Option<(usize, Verdict)> {
        let mut tr = SettleTracker::new(cfg, groups(), 2);
        for t in 0..n {
            let (l, th) = f(t);
            let v = tr.push(t, l, &th, &|| vec![1.0, 1.0]);
            if v != Verdict::Continue {
                return Some((t, v));
            }
        }
        None
    }

    #[test]
    fn converges_once_loss_and_parameters_stop_moving() {
        // Exponential approach: loss and both parameters settle by step ~800.
        let f = |t: usize| {
            let e = (-(t as f64) / 100.0).exp();
            (1000.0 + 500.0 * e, [2.0 - e, -1.0 + 3.0 * e])
        };
        let (at, v) = run(Settle::default(), 20_000, f).unwrap();
        assert_eq!(v, Verdict::Converged);
        assert!((500..2000).contains(&at), "stopped at {at}");
    }

    #[test]
    fn a_drift_along_a_flat_loss_is_named_weakly_identified() {
        // The loss is flat from the start; b walks steadily (0.005 per step).
        let f = |t: usize| (1000.0, [2.0, 0.005 * t as f64]);
        let (at, v) = run(Settle::default(), 20_000, f).unwrap();
        assert_eq!(v, Verdict::WeaklyIdentified(vec!["b".into()]));
        // Named once jitter can be told from drift: 10 windows before the
        // current one (step 1099).
        assert_eq!(at, 1099);
    }

    #[test]
    fn ridge_groups_are_not_waited_for_and_a_slow_loss_does_not_name_drifts() {
        // b walks along a flat loss; as a ridge group it does not hold the fit.
        let mut g = groups();
        g[1].ridge = true;
        let mut tr = SettleTracker::new(Settle::default(), g, 2);
        let mut verdict = Verdict::Continue;
        for t in 0..20_000 {
            verdict = tr.push(t, 1000.0, &[2.0, 0.005 * t as f64], &|| vec![1.0, 1.0]);
            if verdict != Verdict::Continue {
                break;
            }
        }
        assert_eq!(verdict, Verdict::Converged);
        // A loss falling clearly above its noise but by less than loss_ptol
        // per parameter: settled parameters stop the fit, a drifting one is
        // not called weakly identified (the loss is not flat), so it runs on.
        let cfg = Settle {
            loss_ptol: 1.0,
            ..Settle::default()
        };
        let falling = |t: usize| 1e4 - 0.01 * t as f64;
        assert_eq!(
            run(cfg.clone(), 20_000, |t| (falling(t), [2.0, 1.0])).map(|(_, v)| v),
            Some(Verdict::Converged)
        );
        assert_eq!(
            run(cfg, 20_000, |t| (falling(t), [2.0, 0.005 * t as f64])),
            None
        );
    }

    #[test]
    fn jitter_wider_than_the_tolerance_is_not_a_drift() {
        // b jitters around 0 with a window-mean spread of ~1 scale unit (4x
        // param_tol): no window is within tolerance of the one before, but
        // there is nothing to wait for.
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
        let jitter: Vec<f64> = (0..30_000)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                10.0 * z
            })
            .collect();
        let (at, v) = run(Settle::default(), 30_000, |t| (1000.0, [2.0, jitter[t]])).unwrap();
        assert_eq!(v, Verdict::Converged);
        assert!(at < 3000, "stopped at {at}");
        // The same jitter on top of a steady walk of 0.02 per step is a drift.
        let walk = |t: usize| (1000.0, [2.0, jitter[t] + 0.02 * t as f64]);
        let (_, v) = run(Settle::default(), 30_000, walk).unwrap();
        assert_eq!(v, Verdict::WeaklyIdentified(vec!["b".into()]));
    }

    #[test]
    fn noise_alone_does_not_keep_a_fit_running_and_a_trend_does() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
        let noise: Vec<f64> = (0..30_000).map(|_| rng.random_range(-50.0..50.0)).collect();
        let flat = |t: usize| (1000.0 + noise[t], [1.0 + noise[t] * 1e-4, 0.0]);
        let (_, v) = run(Settle::default(), 30_000, flat).unwrap();
        assert_eq!(v, Verdict::Converged);
        // A loss that keeps falling (20 per window, above its noise of ~8) never settles.
        let falling = |t: usize| (1e4 - 0.2 * t as f64 + noise[t], [1.0, 0.0]);
        assert!(run(Settle::default(), 30_000, falling).is_none());
    }
}
