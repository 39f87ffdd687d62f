//! The outer loop's divergence detector.

/// The outer loop's divergence detector (active from step 50): a
/// non-finite loss; a climb of more than half the initial |loss| above the
/// running minimum; a loss 1000 times the initial one in magnitude; and,
/// after 5000 steps, a smoothed loss (last 100) more than 1% above the
/// initial one for 500 steps in a row (checked every 100).
#[derive(Debug)]
pub(crate) struct Guards {
    pub(crate) init_signed: f64,
    running_min: f64,
    drift: usize,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            init_signed: f64::NAN,
            running_min: f64::INFINITY,
            drift: 0,
        }
    }
}

impl Guards {
    pub(crate) fn check(&mut self, step: usize, loss: f64, history: &[f64]) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!("the loss became {loss}"));
        }
        if self.init_signed.is_nan() {
            self.init_signed = loss;
        }
        let init = self.init_signed.abs();
        self.running_min = self.running_min.min(loss);
        if step < 50 {
            return None;
        }
        if loss - self.running_min > 0.5 * init {
            return Some(format!(
                "the loss climbed to {loss:.4e} from its minimum {:.4e}",
                self.running_min
            ));
        }
        if loss.abs() > 1000.0 * init {
            return Some(format!("the loss grew to {loss:.4e}"));
        }
        if step % 100 == 99 && step + 1 > 5000 && history.len() >= 100 {
            let last: Vec<f64> = history[history.len() - 100..]
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            let smoothed = last.iter().sum::<f64>() / last.len().max(1) as f64;
            if smoothed > self.init_signed + 0.01 * init {
                self.drift += 100;
            } else {
                self.drift = 0;
            }
            if self.drift >= 500 {
                return Some(format!(
                    "the smoothed loss {smoothed:.4e} stayed above its initial value for 500 steps"
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_stop_on_each_kind_of_divergence() {
        let run = |losses: &[f64]| {
            let mut g = Guards::default();
            let mut h = Vec::new();
            for (i, &l) in losses.iter().enumerate() {
                h.push(l);
                if let Some(w) = g.check(i, l, &h) {
                    return Some((i, w));
                }
            }
            None
        };
        let mut steady = vec![-100.0; 60];
        assert!(run(&steady).is_none());
        steady.push(f64::NAN);
        assert_eq!(run(&steady).unwrap().0, 60);
        let mut climb = vec![-100.0; 60];
        climb.push(-40.0); // 60 above the minimum > 0.5 · 100
        assert!(run(&climb).unwrap().1.contains("climbed"));
        let mut blow = vec![100.0; 60];
        blow.push(-200000.0); // far below: not a climb, but 1000× in magnitude
        assert!(run(&blow).unwrap().1.contains("grew"));
        // Early steps are exempt (except non-finite values).
        assert!(run(&[-100.0, 1e9, -100.0]).is_none());
        // Drift: slowly above the initial value for 500 steps after 5000.
        let mut drift = vec![-100.0; 5000];
        drift.extend(std::iter::repeat_n(-98.0, 700));
        let (at, why) = run(&drift).unwrap();
        assert!(
            why.contains("stayed above") && (5400..5700).contains(&at),
            "{at} {why}"
        );
    }
}
