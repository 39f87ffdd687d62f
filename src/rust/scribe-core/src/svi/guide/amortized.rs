//! Amortized capture (`amortize_capture = TRUE`): the guide of every cell's
//! capture coordinate is predicted from the cell's counts by a small network
//! instead of being two free parameters per cell, so capture is available for
//! cells the fit never saw. Every other coordinate stays mean-field.
//!
//! `q(x_c) = N(loc(s_c), exp(log_scale(s_c)))` with `s_c` the cell's library
//! size through `input` (`log1p` by default), standardised over the training
//! cells; the network is `hidden` dense layers (`[64, 32]`, leaky relu) and
//! one head `[loc | log_scale]`. This is the original's unconstrained form;
//! its Beta/BetaPrime heads (the constrained form) would need implicit
//! reparameterization gradients, as for the mean-field guide.
//!
//! The original zero-initialises both heads (every cell starts at `loc = 0`,
//! scale 1). Here the head is the least-squares fit of the mean-field
//! start's capture values (the data-driven point and its Laplace scales) on
//! the initial hidden features, so an amortized fit starts where a
//! mean-field fit does. Parameters `[loc (n) | log_scale (n) | network]`;
//! the capture block's own `loc`/`log_scale` entries are unused (kept so
//! that the layout of the other coordinates is the mean-field guide's).

use super::mean_field::{for_each_active, mf_term, KlCache};
use super::{BlockFields, FittedGuide, Guide, MeanFieldFit};
use crate::data::{Batch, CountMatrix};
use crate::error::{CoreError, Result};
use crate::laplace::woodbury::{chol_solve, cholesky};
use crate::models::{BlockKind, Layout, Model};
use crate::nn::{Activation, Dense, Mlp, MlpTape};
use crate::posterior::{Site, Source, Summary};
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::StandardNormal;

/// How a cell's library size `L` enters the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureInput {
    Log1p,
    Log,
    Sqrt,
    Identity,
}

impl CaptureInput {
    pub const NAMES: [&'static str; 4] = ["log1p", "log", "sqrt", "identity"];

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "log1p" => CaptureInput::Log1p,
            "log" => CaptureInput::Log,
            "sqrt" => CaptureInput::Sqrt,
            "identity" => CaptureInput::Identity,
            other => {
                return Err(CoreError::arg(
                    "capture_input_transformation",
                    format!("'{other}' is not one of {}", Self::NAMES.join(", ")),
                ))
            }
        })
    }

    fn apply(self, lib: f64) -> f64 {
        match self {
            CaptureInput::Log1p => lib.ln_1p(),
            CaptureInput::Log => (lib + 1e-8).ln(),
            CaptureInput::Sqrt => lib.sqrt(),
            CaptureInput::Identity => lib,
        }
    }

    fn code(self) -> f64 {
        Self::NAMES
            .iter()
            .position(|n| Self::parse(n).ok() == Some(self))
            .unwrap_or(0) as f64
    }
}

/// The amortizer network: its architecture and the standardisation of its
/// input.
#[derive(Debug, Clone, PartialEq)]
pub struct Amortizer {
    pub mlp: Mlp,
    pub head: Dense,
    pub input: CaptureInput,
    /// Mean and standard deviation of the transformed input over the
    /// training cells.
    pub shift: f64,
    pub spread: f64,
}

impl Amortizer {
    /// An amortizer with hidden widths `hidden`, standardised on `lib_size`.
    pub fn new(
        hidden: &[usize],
        activation: Activation,
        input: CaptureInput,
        lib_size: &[f64],
    ) -> Self {
        let mlp = Mlp {
            n_in: 1,
            hidden: hidden.to_vec(),
            activation,
            layer_norm: false,
            residual: false,
        };
        let head = Dense::new(mlp.n_out(), 2);
        let s: Vec<f64> = lib_size.iter().map(|&l| input.apply(l)).collect();
        let n = s.len().max(1) as f64;
        let shift = s.iter().sum::<f64>() / n;
        let var = s.iter().map(|v| (v - shift).powi(2)).sum::<f64>() / n;
        Amortizer {
            mlp,
            head,
            input,
            shift,
            spread: var.sqrt().max(1e-8),
        }
    }

    pub fn n_params(&self) -> usize {
        self.mlp.n_params() + self.head.n_params()
    }

    fn inputs(&self, lib: impl Iterator<Item = f64>) -> Vec<f64> {
        lib.map(|l| (self.input.apply(l) - self.shift) / self.spread)
            .collect()
    }

    /// `[loc, log_scale]` per row of `inputs`, and the tape of the pass.
    fn forward(&self, p: &[f64], inputs: &[f64], tape: &mut MlpTape, out: &mut Vec<f64>) {
        let pm = self.mlp.n_params();
        let rows = inputs.len();
        self.mlp.forward(&p[..pm], inputs, rows, tape);
        out.resize(2 * rows, 0.0);
        self.head.forward(&p[pm..], tape.output(), rows, out);
    }

    /// Predicted `(loc, scale)` of the capture coordinate of cells with
    /// library sizes `lib`.
    pub fn predict(&self, p: &[f64], lib: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut tape = MlpTape::default();
        let mut out = Vec::new();
        self.forward(p, &self.inputs(lib.iter().copied()), &mut tape, &mut out);
        out.chunks_exact(2).map(|o| (o[0], o[1].exp())).unzip()
    }

    /// Stored field: input code, shift, spread, activation code, hidden widths.
    fn to_field(&self) -> Vec<f64> {
        let act = Activation::NAMES
            .iter()
            .position(|n| Activation::parse(n, "").ok() == Some(self.mlp.activation))
            .unwrap_or(0);
        let mut v = vec![self.input.code(), self.shift, self.spread, act as f64];
        v.extend(self.mlp.hidden.iter().map(|&h| h as f64));
        v
    }

    fn from_field(v: &[f64]) -> Option<Self> {
        let whole = |x: f64| (x >= 0.0 && x == x.round() && x < 1e7).then_some(x as usize);
        if v.len() < 4 || !(v[2] > 0.0) || !v[1].is_finite() {
            return None;
        }
        let input = CaptureInput::parse(CaptureInput::NAMES.get(whole(v[0])?)?).ok()?;
        let activation = Activation::parse(Activation::NAMES.get(whole(v[3])?)?, "").ok()?;
        let hidden = v[4..]
            .iter()
            .map(|&h| whole(h))
            .collect::<Option<Vec<_>>>()?;
        let mut a = Amortizer::new(&hidden, activation, input, &[]);
        a.shift = v[1];
        a.spread = v[2];
        Some(a)
    }
}

/// The mean-field guide with an amortized capture block.
#[derive(Debug, Clone, PartialEq)]
pub struct AmortizedCapture {
    pub dim: usize,
    /// The capture block's offset and length (its cells).
    pub block: (usize, usize),
    pub net: Amortizer,
    /// Each training cell's library size.
    lib_size: Vec<f64>,
}

impl AmortizedCapture {
    /// Amortizes the cell block of `layout` (a VCP model's capture).
    pub fn new(
        layout: &Layout,
        data: &CountMatrix,
        hidden: &[usize],
        activation: Activation,
        input: CaptureInput,
    ) -> Result<Self> {
        let blk = layout
            .blocks
            .iter()
            .find(|b| b.kind == BlockKind::Cell)
            .ok_or_else(|| {
                CoreError::arg(
                    "amortize_capture",
                    "needs a model with per-cell capture (nbvcp, zinbvcp)",
                )
            })?;
        if hidden.is_empty() || hidden.contains(&0) {
            return Err(CoreError::arg(
                "capture_hidden_dims",
                "must be one or more positive widths",
            ));
        }
        Ok(AmortizedCapture {
            dim: layout.total,
            block: (blk.offset, blk.len),
            net: Amortizer::new(hidden, activation, input, &data.lib_size),
            lib_size: data.lib_size.clone(),
        })
    }

    fn in_block(&self, j: usize) -> bool {
        j >= self.block.0 && j < self.block.0 + self.block.1
    }
}

/// Buffers of one ELBO evaluation.
pub struct Scratch {
    x: Vec<f64>,
    eps: Vec<f64>,
    gx: Vec<f64>,
    s: Vec<f64>,
    inputs: Vec<f64>,
    out: Vec<f64>,
    g_out: Vec<f64>,
    tape: MlpTape,
    /// Row of each batch cell in the network's output.
    row: Vec<usize>,
}

/// Least-squares coefficients `[w (k) | b]` of `y ≈ H w + b` (ridge 1e-6).
fn least_squares(h: &[f64], k: usize, y: &[f64]) -> Vec<f64> {
    let m = k + 1;
    let mut a = vec![0.0; m * m];
    let mut rhs = vec![0.0; m];
    for (row, &yv) in h.chunks_exact(k).zip(y) {
        let feat = |i: usize| if i < k { row[i] } else { 1.0 };
        for i in 0..m {
            rhs[i] += feat(i) * yv;
            for j in 0..=i {
                a[i * m + j] += feat(i) * feat(j);
            }
        }
    }
    for i in 0..m {
        a[i * m + i] += 1e-6 * (1.0 + a[i * m + i]);
        for j in 0..i {
            a[j * m + i] = a[i * m + j];
        }
    }
    if !cholesky(&mut a, m) {
        let mut out = vec![0.0; m];
        out[k] = y.iter().sum::<f64>() / y.len().max(1) as f64;
        return out;
    }
    chol_solve(&a, m, &mut rhs);
    rhs
}

impl Guide for AmortizedCapture {
    type Scratch = Scratch;

    fn n_params(&self) -> usize {
        2 * self.dim + self.net.n_params()
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            x: vec![0.0; self.dim],
            eps: vec![0.0; self.dim],
            gx: vec![0.0; self.dim],
            s: vec![0.0; self.dim],
            inputs: Vec::new(),
            out: Vec::new(),
            g_out: Vec::new(),
            tape: MlpTape::default(),
            row: vec![usize::MAX; self.block.1],
        }
    }

    fn initial_params(&self, x0: &[f64], ln_scale0: &[f64]) -> Vec<f64> {
        let mut p: Vec<f64> = x0.iter().chain(ln_scale0).copied().collect();
        let start = p.len();
        p.resize(self.n_params(), 0.0);
        let net = &self.net;
        let mut rng = ChaCha8Rng::seed_from_u64(0x616d_6f72);
        let pm = net.mlp.n_params();
        net.mlp.init(&mut rng, &mut p[start..start + pm]);
        // With zero biases every first-layer unit of a one-dimensional input
        // has its kink at the mean; spread the kinks over ±2.5 standard
        // deviations so the features can follow a curved start.
        let h0 = net.mlp.hidden[0];
        for i in 0..h0 {
            let knot = -2.5 + 5.0 * (i as f64 + 0.5) / h0 as f64;
            p[start + h0 + i] = -p[start + i] * knot;
        }
        // The head: least squares of the start's capture loc and log-scale
        // on the initial hidden features of every training cell.
        let mut tape = MlpTape::default();
        let inputs = net.inputs(self.lib_size.iter().copied());
        net.mlp
            .forward(&p[start..start + pm], &inputs, inputs.len(), &mut tape);
        let k = net.mlp.n_out();
        let (off, len) = self.block;
        let loc = least_squares(tape.output(), k, &x0[off..off + len]);
        let ls = least_squares(tape.output(), k, &ln_scale0[off..off + len]);
        let head = &mut p[start + pm..];
        for i in 0..k {
            head[2 * i] = loc[i];
            head[2 * i + 1] = ls[i];
        }
        head[2 * k] = loc[k];
        head[2 * k + 1] = ls[k];
        p
    }

    fn loss_and_grad<M: Model, R: Rng>(
        &self,
        model: &M,
        v: &[f64],
        batch: &Batch,
        rng: &mut R,
        buf: &mut Scratch,
        ws: &mut M::Workspace,
        grad: &mut [f64],
    ) -> f64 {
        let n = self.dim;
        let (loc, rest) = v.split_at(n);
        let (log_scale, net_p) = rest.split_at(n);
        grad.iter_mut().for_each(|g| *g = 0.0);
        // The network's (loc, log_scale) for the batch cells, in batch order.
        let (off, _) = self.block;
        buf.inputs = self
            .net
            .inputs(batch.cells.iter().map(|&c| self.lib_size[c as usize]));
        self.net
            .forward(net_p, &buf.inputs, &mut buf.tape, &mut buf.out);
        for (r, &c) in batch.cells.iter().enumerate() {
            buf.row[c as usize] = r;
        }
        let (row, out) = (&buf.row, &buf.out);
        let guide_of = |j: usize| -> (f64, f64) {
            if self.in_block(j) {
                let r = row[j - off];
                (out[2 * r], out[2 * r + 1])
            } else {
                (loc[j], log_scale[j])
            }
        };
        {
            let (x, eps, sc) = (&mut buf.x, &mut buf.eps, &mut buf.s);
            for_each_active(model, batch, |_, _, j, _| {
                let e: f64 = rng.sample(StandardNormal);
                let (l, ls) = guide_of(j);
                eps[j] = e;
                sc[j] = ls.exp();
                x[j] = l + sc[j] * e;
            });
        }
        buf.gx.iter_mut().for_each(|g| *g = 0.0);
        let ll = model.log_lik_grad(&buf.x, batch, &mut buf.gx, ws);
        let mut elbo = ll + model.joint_prior_grad(&buf.x, &mut buf.gx);
        let (g_loc, rest) = grad.split_at_mut(n);
        let (g_ls, g_net) = rest.split_at_mut(n);
        buf.g_out.clear();
        buf.g_out.resize(buf.out.len(), 0.0);
        let (x, eps, gx, sc, g_out) = (&buf.x, &buf.eps, &buf.gx, &buf.s, &mut buf.g_out);
        let blocks = &model.layout().blocks;
        let mut cache = KlCache::default();
        for_each_active(model, batch, |b, j, i, w| {
            let (l, ls) = guide_of(i);
            let (de, gl, gs) = mf_term(
                model.prior(b, j),
                blocks[b].link,
                (l, ls, sc[i], eps[i], x[i], gx[i], w),
                &mut cache,
            );
            elbo += de;
            if self.in_block(i) {
                let r = row[i - off];
                g_out[2 * r] = gl;
                g_out[2 * r + 1] = gs;
            } else {
                g_loc[i] = gl;
                g_ls[i] = gs;
            }
        });
        let pm = self.net.mlp.n_params();
        let rows = batch.cells.len();
        let mut gh = vec![0.0; rows * self.net.head.n_in];
        self.net.head.backward(
            &net_p[pm..],
            buf.tape.output(),
            &buf.g_out,
            rows,
            &mut g_net[pm..],
            Some(&mut gh),
        );
        self.net
            .mlp
            .backward(&net_p[..pm], &buf.tape, &mut gh, &mut g_net[..pm], None);
        -elbo
    }

    fn location(&self, params: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&params[..self.dim]);
        let (loc, _) = self.predicted(params);
        out[self.block.0..self.block.0 + self.block.1].copy_from_slice(&loc);
    }

    fn spread(&self, params: &[f64], out: &mut [f64]) {
        for (o, ls) in out.iter_mut().zip(&params[self.dim..2 * self.dim]) {
            *o = ls.exp();
        }
        let (_, scale) = self.predicted(params);
        out[self.block.0..self.block.0 + self.block.1].copy_from_slice(&scale);
    }

    fn fitted(&self, params: &[f64]) -> Box<dyn FittedGuide> {
        let (loc, rest) = params.split_at(self.dim);
        let mut mf = MeanFieldFit {
            loc: loc.to_vec(),
            scale: rest[..self.dim].iter().map(|v| v.exp()).collect(),
        };
        let (l, s) = self.predicted(params);
        let (off, len) = self.block;
        mf.loc[off..off + len].copy_from_slice(&l);
        mf.scale[off..off + len].copy_from_slice(&s);
        Box::new(AmortizedFit {
            mf,
            net: self.net.clone(),
            params: params[2 * self.dim..].to_vec(),
        })
    }
}

impl AmortizedCapture {
    /// The network's `(loc, scale)` for every training cell.
    fn predicted(&self, params: &[f64]) -> (Vec<f64>, Vec<f64>) {
        self.net.predict(&params[2 * self.dim..], &self.lib_size)
    }
}

/// A fitted amortized-capture guide: the mean-field guide with every
/// training cell's predicted capture guide filled in, and the network
/// (which predicts the capture of new cells from their library sizes).
#[derive(Debug, Clone, PartialEq)]
pub struct AmortizedFit {
    pub mf: MeanFieldFit,
    pub net: Amortizer,
    pub params: Vec<f64>,
}

impl AmortizedFit {
    /// The capture guide `(loc, scale)` of cells with library sizes `lib`.
    pub fn predict(&self, lib: &[f64]) -> (Vec<f64>, Vec<f64>) {
        self.net.predict(&self.params, lib)
    }

    /// Quantiles `probs` of the capture probability `ν` of cells with
    /// library sizes `lib` (row-major, cells × probs), through the capture
    /// block of `layout` (`p_capture = ν`, `phi_capture = (1 − ν)/ν`,
    /// `eta_capture = −ln ν`). Monotone maps carry the Gaussian's quantiles.
    pub fn capture_quantiles(
        &self,
        layout: &Layout,
        lib: &[f64],
        probs: &[f64],
    ) -> Result<Vec<f64>> {
        let blk = layout
            .blocks
            .iter()
            .find(|b| b.kind == BlockKind::Cell)
            .ok_or_else(|| CoreError::arg("fit", "has no capture block"))?;
        let link = blk.link;
        let nu = |x: f64| -> f64 {
            let t = link.forward(x);
            match blk.name.as_str() {
                "phi_capture" => 1.0 / (1.0 + t),
                "eta_capture" => (-t).exp(),
                _ => t,
            }
        };
        let increasing = !matches!(blk.name.as_str(), "phi_capture" | "eta_capture");
        let z: Vec<f64> = probs
            .iter()
            .map(|&q| {
                let z = crate::math::normal_quantile(q);
                if increasing {
                    z
                } else {
                    -z
                }
            })
            .collect();
        let (loc, scale) = self.predict(lib);
        Ok(loc
            .iter()
            .zip(&scale)
            .flat_map(|(l, s)| z.iter().map(move |zq| (l, s, zq)))
            .map(|(l, s, zq)| nu(l + s * zq))
            .collect())
    }

    /// From the stored fields: every block's `loc` and `scale` and the
    /// `amortizer` entry (`config` and `params`).
    pub fn from_fields(layout: &Layout, fields: &[BlockFields]) -> Result<Self> {
        let mf = MeanFieldFit::from_fields(layout, fields)?;
        let bad = |what: &str| CoreError::arg("fit", format!("its capture amortizer {what}"));
        let f = fields
            .iter()
            .find(|f| f.block == "amortizer")
            .ok_or_else(|| bad("is missing"))?;
        let net = f
            .get("config")
            .and_then(Amortizer::from_field)
            .ok_or_else(|| bad("has an invalid `config`"))?;
        let params = f.get("params").ok_or_else(|| bad("has no `params`"))?;
        if params.len() != net.n_params() || params.iter().any(|v| !v.is_finite()) {
            return Err(bad("has parameters of the wrong length"));
        }
        Ok(AmortizedFit {
            mf,
            net,
            params: params.to_vec(),
        })
    }
}

impl Source for AmortizedFit {
    fn sampled_sites(&self, layout: &Layout, summary: Summary, ctl: Ctl<'_>) -> Result<Vec<Site>> {
        self.mf.sampled_sites(layout, summary, ctl)
    }

    fn scales(&self) -> Option<Vec<f64>> {
        self.mf.scales()
    }
}

impl FittedGuide for AmortizedFit {
    fn family(&self) -> &'static str {
        "amortized_capture"
    }

    fn fields(&self, layout: &Layout) -> Vec<BlockFields> {
        let mut out = self.mf.fields(layout);
        out.push(BlockFields {
            block: "amortizer".into(),
            fields: vec![
                ("config".into(), self.net.to_field()),
                ("params".into(), self.params.clone()),
            ],
        });
        out
    }

    fn select(&self, keep: &[usize]) -> Box<dyn FittedGuide> {
        Box::new(AmortizedFit {
            mf: MeanFieldFit {
                loc: keep.iter().map(|&j| self.mf.loc[j]).collect(),
                scale: keep.iter().map(|&j| self.mf.scale[j]).collect(),
            },
            net: self.net.clone(),
            params: self.params.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::Variant;
    use crate::svi::guide::{check_guide_gradient, test_model};

    #[test]
    fn reparameterized_gradient_matches_finite_differences() {
        for case in ["joint", "datasets"] {
            let truth = NbTruth::random(Variant::Nbvcp, 9, 12, 4);
            let data = simulate_nb(&truth, 5);
            let (model, _) = test_model(case, &data);
            let guide = AmortizedCapture::new(
                model.layout(),
                &data,
                &[5, 4],
                Activation::Tanh,
                CaptureInput::Log1p,
            )
            .unwrap();
            let x0 = model.initial_point();
            let mut v = guide.initial_params(&x0, &vec![-1.0; x0.len()]);
            let n = 2 * x0.len();
            for (j, w) in v[n..].iter_mut().enumerate() {
                *w += 0.1 * ((j * 7 % 11) as f64 - 5.0) / 5.0;
            }
            let mut batch = Batch::full(&data);
            batch.set_cells(&data, &[1, 4, 6, 9]);
            check_guide_gradient(&guide, &model, &batch, &v, case);
        }
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn starts_at_the_mean_field_start_and_round_trips() {
        let truth = NbTruth::random(Variant::Nbvcp, 20, 60, 2);
        let data = simulate_nb(&truth, 3);
        let (model, _) = test_model("joint", &data);
        let guide = AmortizedCapture::new(
            model.layout(),
            &data,
            &[64, 32],
            Activation::LeakyRelu,
            CaptureInput::Log1p,
        )
        .unwrap();
        let x0 = model.initial_point();
        let ls0 = crate::svi::initial_log_scales(&model, &x0);
        let v = guide.initial_params(&x0, &ls0);
        let (off, len) = guide.block;
        let (loc, _) = guide.predicted(&v);
        // The start's capture values are a steep function of the library
        // size (logit-like at both ends); the fit follows them closely.
        let want = &x0[off..off + len];
        let mut err: Vec<f64> = loc.iter().zip(want).map(|(a, b)| (a - b).abs()).collect();
        err.sort_by(f64::total_cmp);
        let (ma, mb) = (mean(&loc), mean(want));
        let cov: f64 = loc.iter().zip(want).map(|(a, b)| (a - ma) * (b - mb)).sum();
        let var = |v: &[f64], m: f64| v.iter().map(|a| (a - m).powi(2)).sum::<f64>();
        let cor = cov / (var(&loc, ma) * var(want, mb)).sqrt();
        // Measured: cor 0.99996, median error 0.014.
        assert!(
            cor > 0.999 && err[len / 2] < 0.1,
            "start: cor {cor}, median error {}",
            err[len / 2]
        );
        let fit = guide.fitted(&v);
        let layout = model.layout();
        let back = AmortizedFit::from_fields(layout, &fit.fields(layout)).unwrap();
        let (l, _) = back.predict(&data.lib_size[..3]);
        assert_eq!(l, loc[..3].to_vec());
        // A model without capture cannot amortize it.
        let (plain, _) = test_model("plain", &data);
        let e = AmortizedCapture::new(
            plain.layout(),
            &data,
            &[8],
            Activation::Relu,
            CaptureInput::Log1p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("amortize_capture"));
    }
}
