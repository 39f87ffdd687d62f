//! Small neural networks with hand-written backward passes: the building
//! blocks of flow guides, amortizers and the VAE.
//!
//! Every network owns no state: its parameters are one flat `&[f64]` slice
//! (so the SVI optimizers update them like any other parameter vector) and
//! it describes the layout of that slice. Inputs and outputs are row-major
//! `rows × width` matrices: a batch of cells, or one draw of a guide. The
//! products run on faer's GEMM ([`crate::math::gemm`]) sequentially, so sums
//! group the same way on any number of threads.
//!
//! Forward passes record what their backward passes need in a tape; a
//! backward pass takes the gradient of a scalar with respect to the output
//! and *adds* the gradients with respect to the parameters (and, when asked,
//! writes those with respect to the input).

pub mod activation;
pub mod dense;
pub mod flows;
pub mod layer_norm;
pub mod mlp;

pub use activation::Activation;
pub use dense::Dense;
pub use layer_norm::LayerNorm;
pub use mlp::{Mlp, MlpTape};

use rand::{Rng, RngExt};
use rand_distr::StandardNormal;

/// A draw of the standard normal truncated to `(−2, 2)`, rescaled to unit
/// variance: the LeCun-normal initialiser of dense kernels (as in Flax).
pub(crate) fn truncated_normal<R: Rng>(rng: &mut R) -> f64 {
    // The variance of N(0,1) truncated to ±2 is 0.774; 1/sqrt = 1.137.
    loop {
        let z: f64 = rng.sample(StandardNormal);
        if z.abs() < 2.0 {
            return z * 1.137_438_8;
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use rand::rngs::ChaCha8Rng;
    use rand::{RngExt, SeedableRng};
    use rand_distr::StandardNormal;

    /// `n` fixed pseudo-random standard normal values.
    pub fn normals(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.sample(StandardNormal)).collect()
    }

    /// `Σ c ⊙ y`, a scalar that depends on every output (its gradient with
    /// respect to `y` is `c`).
    pub fn dot(c: &[f64], y: &[f64]) -> f64 {
        c.iter().zip(y).map(|(a, b)| a * b).sum()
    }
}
