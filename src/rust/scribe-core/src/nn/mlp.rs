//! A stack of hidden layers, `h ← act(LayerNorm(Dense(h)))`, with a
//! residual skip `h ← h + h_prev` between consecutive layers of equal width
//! (the conditioner of flows and the body of encoders and decoders). Output
//! heads are separate [`super::Dense`] layers owned by the caller.

use super::{Activation, Dense, LayerNorm};
use rand::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    pub n_in: usize,
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub layer_norm: bool,
    pub residual: bool,
}

/// What one forward pass leaves for the backward pass.
#[derive(Debug, Default, Clone)]
pub struct MlpTape {
    rows: usize,
    /// `h_0 = input, h_1, …, h_L`.
    h: Vec<Vec<f64>>,
    /// The activation's input of each layer.
    pre: Vec<Vec<f64>>,
    xhat: Vec<Vec<f64>>,
    inv_sd: Vec<Vec<f64>>,
}

impl MlpTape {
    /// The output of the last forward pass (`rows × width`).
    pub fn output(&self) -> &[f64] {
        self.h.last().map_or(&[], Vec::as_slice)
    }
}

impl Mlp {
    /// Width of the output (the input's when there is no hidden layer).
    pub fn n_out(&self) -> usize {
        self.hidden.last().copied().unwrap_or(self.n_in)
    }

    fn layers(&self) -> impl Iterator<Item = (Dense, Option<LayerNorm>)> + '_ {
        let ins = std::iter::once(self.n_in).chain(self.hidden.iter().copied());
        ins.zip(self.hidden.iter().copied()).map(|(i, o)| {
            (
                Dense::new(i, o),
                self.layer_norm.then_some(LayerNorm { n: o }),
            )
        })
    }

    fn layer_params(d: &Dense, ln: &Option<LayerNorm>) -> usize {
        d.n_params() + ln.map_or(0, |l| l.n_params())
    }

    pub fn n_params(&self) -> usize {
        self.layers()
            .map(|(d, ln)| Self::layer_params(&d, &ln))
            .sum()
    }

    pub fn init<R: Rng>(&self, rng: &mut R, p: &mut [f64]) {
        let mut off = 0;
        for (d, ln) in self.layers() {
            d.init(rng, &mut p[off..off + d.n_params()]);
            off += d.n_params();
            if let Some(ln) = ln {
                ln.init(&mut p[off..off + ln.n_params()]);
                off += ln.n_params();
            }
        }
    }

    /// Runs `rows` rows of `x` through the stack; the output is
    /// [`MlpTape::output`].
    pub fn forward(&self, p: &[f64], x: &[f64], rows: usize, tape: &mut MlpTape) {
        let n_layers = self.hidden.len();
        tape.rows = rows;
        tape.h.resize(n_layers + 1, Vec::new());
        tape.pre.resize(n_layers, Vec::new());
        tape.xhat.resize(n_layers, Vec::new());
        tape.inv_sd.resize(n_layers, Vec::new());
        tape.h[0].clear();
        tape.h[0].extend_from_slice(&x[..rows * self.n_in]);
        let mut off = 0;
        for (l, (d, ln)) in self.layers().enumerate() {
            let w = d.n_out;
            let (before, after) = tape.h.split_at_mut(l + 1);
            let (hin, hout) = (&before[l], &mut after[0]);
            hout.resize(rows * w, 0.0);
            let pre = &mut tape.pre[l];
            pre.resize(rows * w, 0.0);
            d.forward(&p[off..], hin, rows, pre);
            off += d.n_params();
            if let Some(ln) = ln {
                let a = pre.clone();
                tape.xhat[l].resize(rows * w, 0.0);
                tape.inv_sd[l].resize(rows, 0.0);
                ln.forward(
                    &p[off..],
                    &a,
                    rows,
                    pre,
                    &mut tape.xhat[l],
                    &mut tape.inv_sd[l],
                );
                off += ln.n_params();
            }
            let skip = self.residual && d.n_in == w;
            for (j, (o, &v)) in hout.iter_mut().zip(pre.iter()).enumerate() {
                *o = self.activation.apply(v) + if skip { hin[j] } else { 0.0 };
            }
        }
    }

    /// From `gy = ∂f/∂output` (overwritten as scratch): adds the parameter
    /// gradients into `gp` and writes `∂f/∂input` into `gx` when given.
    pub fn backward(
        &self,
        p: &[f64],
        tape: &MlpTape,
        gy: &mut Vec<f64>,
        gp: &mut [f64],
        gx: Option<&mut [f64]>,
    ) {
        let rows = tape.rows;
        let layers: Vec<_> = self.layers().collect();
        let mut offs = Vec::with_capacity(layers.len());
        let mut off = 0;
        for (d, ln) in &layers {
            offs.push(off);
            off += Self::layer_params(d, ln);
        }
        let mut ga = Vec::new();
        let mut gin = Vec::new();
        for l in (0..layers.len()).rev() {
            let (d, ln) = &layers[l];
            let w = d.n_out;
            // Through the activation (and the residual skip, which passes gy on).
            ga.resize(rows * w, 0.0);
            for ((g, &v), &dy) in ga.iter_mut().zip(&tape.pre[l]).zip(gy.iter()) {
                *g = dy * self.activation.derivative(v);
            }
            let skip = self.residual && d.n_in == w;
            if let Some(ln) = ln {
                let mut gd = vec![0.0; rows * w];
                let lo = offs[l] + d.n_params();
                ln.backward(
                    &p[lo..],
                    &tape.xhat[l],
                    &tape.inv_sd[l],
                    &ga,
                    rows,
                    &mut gp[lo..],
                    &mut gd,
                );
                ga = gd;
            }
            let first = l == 0;
            if first && gx.is_none() {
                d.backward(
                    &p[offs[l]..],
                    &tape.h[l],
                    &ga,
                    rows,
                    &mut gp[offs[l]..],
                    None,
                );
                return;
            }
            gin.resize(rows * d.n_in, 0.0);
            d.backward(
                &p[offs[l]..],
                &tape.h[l],
                &ga,
                rows,
                &mut gp[offs[l]..],
                Some(&mut gin),
            );
            if skip {
                gin.iter_mut().zip(gy.iter()).for_each(|(a, b)| *a += b);
            }
            std::mem::swap(gy, &mut gin);
        }
        if let Some(gx) = gx {
            gx[..rows * self.n_in].copy_from_slice(&gy[..rows * self.n_in]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_support::{dot, normals};
    use crate::testutil::check_gradient;

    fn check(mlp: &Mlp, label: &str) {
        let rows = 3;
        let p = normals(mlp.n_params(), 7);
        let x = normals(rows * mlp.n_in, 8);
        let c = normals(rows * mlp.n_out(), 9);
        let mut tape = MlpTape::default();
        check_gradient(
            |p, g| {
                mlp.forward(p, &x, rows, &mut tape);
                let mut gy = c.clone();
                mlp.backward(p, &tape, &mut gy, g, None);
                dot(&c, tape.output())
            },
            &p,
            1e-5,
            &format!("{label}: parameters"),
        );
        check_gradient(
            |x, g| {
                mlp.forward(&p, x, rows, &mut tape);
                let mut gy = c.clone();
                let mut gp = vec![0.0; p.len()];
                let mut gx = vec![0.0; x.len()];
                mlp.backward(&p, &tape, &mut gy, &mut gp, Some(&mut gx));
                g.iter_mut().zip(&gx).for_each(|(a, b)| *a += b);
                dot(&c, tape.output())
            },
            &x,
            1e-5,
            &format!("{label}: input"),
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        for act in [
            Activation::Gelu,
            Activation::Tanh,
            Activation::Silu,
            Activation::Elu,
        ] {
            for (ln, res) in [(true, true), (false, true), (true, false)] {
                let mlp = Mlp {
                    n_in: 4,
                    hidden: vec![5, 5, 3],
                    activation: act,
                    layer_norm: ln,
                    residual: res,
                };
                check(&mlp, &format!("{act:?} ln={ln} residual={res}"));
            }
        }
        // No hidden layer: the identity.
        let id = Mlp {
            n_in: 3,
            hidden: vec![],
            activation: Activation::Relu,
            layer_norm: true,
            residual: true,
        };
        assert_eq!(id.n_params(), 0);
        check(&id, "identity");
    }
}
