//! The VAE's training loop: Adam (or another optimizer of `optim`) on
//! mini-batches of cells, KL annealing, skipped non-finite updates,
//! progress and cancellation as for SVI. Early stopping is off, as in the
//! original's VAE.

use super::{kl_weight, Vae};
use crate::data::{check_batch_size, Batch, BatchSampler, CountMatrix};
use crate::error::{CoreError, Partial, Result};
use crate::optim::Optimizer;
use crate::progress::{Cancel, Progress};
use crate::svi::SviConfig;
use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;

/// A trained VAE's parameters and its loss per step.
#[derive(Debug, Clone)]
pub struct VaeFit {
    pub params: Vec<f64>,
    pub loss_history: Vec<f64>,
}

/// What the training loop needs of a VAE, whatever its decoder and
/// likelihood: the data, the annealing schedule, a start and the
/// single-sample loss with its gradient.
pub trait Objective: Sync {
    fn data(&self) -> &CountMatrix;
    fn kl_warmup(&self) -> usize;
    fn initial_params(&self, rng: &mut ChaCha8Rng) -> Vec<f64>;
    fn loss_and_grad(
        &self,
        v: &[f64],
        batch: &Batch,
        beta: f64,
        rng: &mut ChaCha8Rng,
        grad: &mut [f64],
    ) -> f64;
}

impl Objective for Vae<'_> {
    fn data(&self) -> &CountMatrix {
        crate::models::Model::data(self.model)
    }
    fn kl_warmup(&self) -> usize {
        self.cfg.kl_warmup
    }
    fn initial_params(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        Vae::initial_params(self, rng)
    }
    fn loss_and_grad(
        &self,
        v: &[f64],
        batch: &Batch,
        beta: f64,
        rng: &mut ChaCha8Rng,
        grad: &mut [f64],
    ) -> f64 {
        Vae::loss_and_grad(self, v, batch, beta, rng, grad)
    }
}

/// Trains `vae` for `cfg.n_steps` steps (`cfg`'s stopping rules are not
/// used); the noise, batch and initialisation streams derive from
/// `cfg.seed`, so results do not depend on the number of threads.
pub fn fit<V: Objective>(
    vae: &V,
    cfg: &SviConfig,
    progress: &dyn Progress,
    cancel: &dyn Cancel,
) -> Result<VaeFit> {
    cfg.optimizer.validate()?;
    if cfg.n_steps < 1 {
        return Err(CoreError::arg("n_steps", "must be at least 1"));
    }
    let data = vae.data();
    check_batch_size(cfg.batch_size, data.n_cells)?;
    crate::limits::check_values("n_steps", cfg.n_steps as f64)?;
    let mut rng_init = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng_init.set_stream(3);
    let mut v = vae.initial_params(&mut rng_init);
    let n = v.len();
    let mut opt = Optimizer::new(cfg.optimizer.clone(), n);
    let mut grad = vec![0.0; n];
    let mut rng_noise = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng_noise.set_stream(1);
    let mut rng_batch = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng_batch.set_stream(2);
    let mut batch = Batch::full(data);
    let mut sampler = match cfg.batch_size {
        Some(b) if b < data.n_cells => Some(BatchSampler::new(data.n_cells, b)),
        _ => None,
    };
    let mut losses = Vec::with_capacity(crate::limits::history_capacity(cfg.n_steps));
    let every = (cfg.n_steps / cfg.n_reports.max(1)).max(1);
    let mut nonfinite_run = 0;
    for t in 0..cfg.n_steps {
        if cancel.cancelled() {
            return Err(CoreError::cancelled().with_partial(Partial {
                step: t,
                loss_history: losses,
            }));
        }
        if let Some(s) = sampler.as_mut() {
            let cells = s.draw(&mut rng_batch);
            batch.set_cells(data, cells);
        }
        let beta = kl_weight(t, vae.kl_warmup());
        let loss = vae.loss_and_grad(&v, &batch, beta, &mut rng_noise, &mut grad);
        if loss.is_finite() && grad.iter().all(|g| g.is_finite()) {
            nonfinite_run = 0;
            opt.step(&mut v, &grad);
            losses.push(loss);
        } else {
            nonfinite_run += 1;
            losses.push(f64::NAN);
            if !cfg.stable_update || nonfinite_run >= crate::svi::MAX_NONFINITE_RUN {
                return Err(CoreError::non_finite(
                    t + 1,
                    "the VAE's loss or gradient is not finite; try a smaller step_size",
                )
                .with_partial(Partial {
                    step: t + 1,
                    loss_history: losses,
                }));
            }
        }
        if (t + 1) % every == 0 || t + 1 == cfg.n_steps {
            let tail = &losses[losses.len().saturating_sub(every)..];
            let fin: Vec<f64> = tail.iter().copied().filter(|x| x.is_finite()).collect();
            let mean = if fin.is_empty() {
                f64::NAN
            } else {
                fin.iter().sum::<f64>() / fin.len() as f64
            };
            progress.report(t + 1, cfg.n_steps, mean);
        }
    }
    Ok(VaeFit {
        params: v,
        loss_history: losses,
    })
}
