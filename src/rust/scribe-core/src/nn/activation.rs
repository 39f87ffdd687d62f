//! Elementwise activations and their derivatives.

use crate::error::{CoreError, Result};

/// An elementwise nonlinearity. `gelu` is the tanh approximation (Flax's
/// default); `leaky_relu` has slope 0.01 below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Gelu,
    Silu,
    Tanh,
    Softplus,
    Elu,
    LeakyRelu,
    Identity,
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // sqrt(2/π)

impl Activation {
    pub const NAMES: [&'static str; 7] = [
        "relu",
        "gelu",
        "silu",
        "tanh",
        "softplus",
        "elu",
        "leaky_relu",
    ];

    /// Parses a user-facing name; `arg` names the argument in the error.
    pub fn parse(name: &str, arg: &str) -> Result<Self> {
        Ok(match name {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "silu" | "swish" => Activation::Silu,
            "tanh" => Activation::Tanh,
            "softplus" => Activation::Softplus,
            "elu" => Activation::Elu,
            "leaky_relu" => Activation::LeakyRelu,
            other => {
                return Err(CoreError::arg(
                    arg,
                    format!("'{other}' is not one of {}", Self::NAMES.join(", ")),
                ))
            }
        })
    }

    /// `act(x)`.
    #[inline]
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Gelu => 0.5 * x * (1.0 + (GELU_C * (x + 0.044_715 * x * x * x)).tanh()),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Softplus => crate::math::softplus(x),
            Activation::Elu => {
                if x > 0.0 {
                    x
                } else {
                    x.exp_m1()
                }
            }
            Activation::LeakyRelu => {
                if x > 0.0 {
                    x
                } else {
                    0.01 * x
                }
            }
            Activation::Identity => x,
        }
    }

    /// `act'(x)`.
    #[inline]
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Gelu => {
                let u = GELU_C * (x + 0.044_715 * x * x * x);
                let t = u.tanh();
                let du = GELU_C * (1.0 + 3.0 * 0.044_715 * x * x);
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
            }
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 + x * (1.0 - s))
            }
            Activation::Tanh => {
                let t = x.tanh();
                1.0 - t * t
            }
            Activation::Softplus => 1.0 / (1.0 + (-x).exp()),
            Activation::Elu => {
                if x > 0.0 {
                    1.0
                } else {
                    x.exp()
                }
            }
            Activation::LeakyRelu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.01
                }
            }
            Activation::Identity => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        let all = [
            Activation::Relu,
            Activation::Gelu,
            Activation::Silu,
            Activation::Tanh,
            Activation::Softplus,
            Activation::Elu,
            Activation::LeakyRelu,
            Activation::Identity,
        ];
        for act in all {
            // Points away from the kinks of relu, elu and leaky relu at 0.
            for &x in &[-3.1, -0.7, -0.05, 0.05, 0.4, 2.3, 8.0] {
                let h = 1e-6;
                let fd = (act.apply(x + h) - act.apply(x - h)) / (2.0 * h);
                assert!(
                    (fd - act.derivative(x)).abs() < 1e-7,
                    "{act:?} at {x}: {fd} vs {}",
                    act.derivative(x)
                );
            }
        }
        for name in Activation::NAMES {
            assert!(Activation::parse(name, "a").is_ok());
        }
        let e = Activation::parse("sigmoidish", "vae_activation").unwrap_err();
        assert!(e.to_string().contains("vae_activation"));
    }
}
