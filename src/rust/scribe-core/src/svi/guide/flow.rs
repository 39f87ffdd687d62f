//! Normalizing-flow guides (`guide_flow`): a group of unconstrained
//! coordinates is `x = loc + s ⊙ F⁻¹(z)`, `z ~ N(0, I_m)`, with `F` a
//! [`FlowChain`] of affine coupling layers run in its generative direction;
//! every other coordinate stays mean-field. Parameters
//! `[loc (n) | log_scale (n) | chain of every group]`.
//!
//! Groups follow the low-rank guide's rule ([`super::guide_groups`]): one
//! flow per row of the gene parameter's block (a mixture's components and
//! a dataset hierarchy's datasets are independent flows, the original's
//! `"independent"` axis), or with `joint_params` one flow over every
//! coordinate of the listed blocks. The original chains per-parameter flows
//! that condition on earlier parameters' draws; one flow over the joint
//! coordinates expresses the same dependence.
//!
//! The elementwise affine `loc + s ⊙ ·` sits *outside* the chain and starts
//! at the mean-field start (the data-driven point and its Laplace scales),
//! so a new flow guide is exactly the mean-field start and its coupling
//! layers work on standardised values. The original instead starts its
//! chain at `N(0, I)` and keeps the affine in the base space, where the
//! couplings must shift and shrink by orders of magnitude (posterior scales
//! of `log r` are often 0.01). Same family, a better start.
//!
//! ELBO: the group's prior at the draw, and its entropy
//! `H = m·½ ln(2πe) + Σ ln s + E[ln|det ∂u/∂z|]` from the chain's log-det
//! at the draw (single sample, as the original).
//!
//! Fitted, the point summary is, as in the original, the mean of 1000 draws
//! of each parameter (`flow_map_method = "mean"`); draws are exact.

use super::mean_field::{for_each_active, gaussian_sites, mf_term, KlCache};
use super::{guide_groups, BlockFields, FittedGuide, Guide};
use crate::data::Batch;
use crate::error::{CoreError, Result};
use crate::models::{Layout, Model};
use crate::nn::flows::{ChainTape, Direction, FlowChain, FlowConfig, FlowKind};
use crate::nn::Activation;
use crate::posterior::{Site, Source, Summary};
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::StandardNormal;

const HALF_LN_2PI_E: f64 = 1.418_938_533_204_672_7;

/// Draws averaged for the point summary.
const MAP_DRAWS: usize = 1000;

/// The flow family over `dim` coordinates: `groups[i]` lists the
/// coordinates of group `i` (global blocks only), in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub dim: usize,
    pub groups: Vec<Vec<usize>>,
    pub config: FlowConfig,
    chains: Vec<FlowChain>,
}

impl Flow {
    /// A flow guide with architecture `config` (its `final_affine` is
    /// replaced by the guide's own `loc`/`scale`): with `joint` empty one
    /// flow per row of the block `gene`, else one over the blocks in `joint`.
    pub fn new(layout: &Layout, gene: &str, joint: &[String], config: &FlowConfig) -> Result<Self> {
        let groups = guide_groups(layout, gene, joint, "guide_flow")?;
        let config = FlowConfig {
            final_affine: false,
            ..config.clone()
        };
        let chains = groups
            .iter()
            .map(|g| FlowChain::new(g.len(), &config))
            .collect::<Result<Vec<_>>>()?;
        if chains
            .iter()
            .any(|c| !c.differentiable(Direction::Generative))
        {
            return Err(CoreError::arg(
                "guide_flow",
                "'maf' draws one coordinate at a time (one network pass per coordinate, \
                 with no backward pass here); use 'iaf', the same family run the fast way \
                 for sampling, or a coupling flow",
            ));
        }
        let n: usize = chains.iter().map(FlowChain::n_params).sum();
        crate::limits::check_values("guide_flow_hidden_dims", n as f64)?;
        Ok(Flow {
            dim: layout.total,
            groups,
            config,
            chains,
        })
    }

    fn chain_offsets(&self) -> Vec<usize> {
        let mut offs = vec![2 * self.dim];
        for c in &self.chains {
            offs.push(offs.last().expect("start") + c.n_params());
        }
        offs
    }
}

/// Buffers of one ELBO evaluation.
pub struct Scratch {
    x: Vec<f64>,
    eps: Vec<f64>,
    gx: Vec<f64>,
    s: Vec<f64>,
    /// For each coordinate: `(group, position)` of a group member.
    member: Vec<Option<(usize, usize)>>,
    /// Each group's standardised draw `u = F⁻¹(z)` and `∂elbo/∂u`.
    u: Vec<Vec<f64>>,
    gu: Vec<Vec<f64>>,
    tapes: Vec<ChainTape>,
}

fn members(dim: usize, groups: &[Vec<usize>]) -> Vec<Option<(usize, usize)>> {
    let mut out = vec![None; dim];
    for (gi, g) in groups.iter().enumerate() {
        for (k, &j) in g.iter().enumerate() {
            out[j] = Some((gi, k));
        }
    }
    out
}

impl Guide for Flow {
    type Scratch = Scratch;

    fn n_params(&self) -> usize {
        *self.chain_offsets().last().expect("offsets")
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            x: vec![0.0; self.dim],
            eps: vec![0.0; self.dim],
            gx: vec![0.0; self.dim],
            s: vec![0.0; self.dim],
            member: members(self.dim, &self.groups),
            u: self.groups.iter().map(|g| vec![0.0; g.len()]).collect(),
            gu: self.groups.iter().map(|g| vec![0.0; g.len()]).collect(),
            tapes: vec![ChainTape::default(); self.groups.len()],
        }
    }

    fn initial_params(&self, x0: &[f64], ln_scale0: &[f64]) -> Vec<f64> {
        let mut p: Vec<f64> = x0.iter().chain(ln_scale0).copied().collect();
        p.resize(self.n_params(), 0.0);
        let offs = self.chain_offsets();
        let mut rng = ChaCha8Rng::seed_from_u64(0x666c_6f77);
        for (c, w) in self.chains.iter().zip(offs.windows(2)) {
            c.init(&mut rng, &mut p[w[0]..w[1]]);
        }
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
        let log_scale = &rest[..n];
        let offs = self.chain_offsets();
        grad.iter_mut().for_each(|g| *g = 0.0);
        // Noise in a fixed order: one value per active coordinate; a group's
        // values are its base draw z.
        {
            let (x, eps, sc) = (&mut buf.x, &mut buf.eps, &mut buf.s);
            for_each_active(model, batch, |_, _, j, _| {
                let e: f64 = rng.sample(StandardNormal);
                eps[j] = e;
                sc[j] = log_scale[j].exp();
                x[j] = loc[j] + sc[j] * e;
            });
        }
        for (gi, g) in self.groups.iter().enumerate() {
            let z: Vec<f64> = g.iter().map(|&j| buf.eps[j]).collect();
            let p = &v[offs[gi]..offs[gi + 1]];
            self.chains[gi].apply(p, Direction::Generative, &z, 1, &mut buf.tapes[gi]);
            buf.u[gi].copy_from_slice(buf.tapes[gi].output());
            for (k, &j) in g.iter().enumerate() {
                buf.x[j] = loc[j] + buf.s[j] * buf.u[gi][k];
            }
        }
        buf.gx.iter_mut().for_each(|g| *g = 0.0);
        let ll = model.log_lik_grad(&buf.x, batch, &mut buf.gx, ws);
        let mut elbo = ll + model.joint_prior_grad(&buf.x, &mut buf.gx);
        let (g_loc, rest) = grad.split_at_mut(n);
        let (g_ls, g_chain) = rest.split_at_mut(n);
        let (x, eps, gx, sc, member, u, gu) = (
            &buf.x,
            &buf.eps,
            &buf.gx,
            &buf.s,
            &buf.member,
            &buf.u,
            &mut buf.gu,
        );
        let blocks = &model.layout().blocks;
        let mut cache = KlCache::default();
        for_each_active(model, batch, |b, j, i, w| {
            let link = blocks[b].link;
            let prior = model.prior(b, j);
            let Some((gi, k)) = member[i] else {
                let (de, gl, gs) = mf_term(
                    prior,
                    link,
                    (loc[i], log_scale[i], sc[i], eps[i], x[i], gx[i], w),
                    &mut cache,
                );
                elbo += de;
                g_loc[i] = gl;
                g_ls[i] = gs;
                return;
            };
            // A group member: the prior at the draw, and the entropy's
            // `ln s + ½ ln(2πe)`; the chain's log-det follows below.
            let (lp, dlp) = prior.ln_density_x(x[i], link);
            elbo += w * lp + log_scale[i] + HALF_LN_2PI_E;
            let gt = gx[i] + w * dlp;
            g_loc[i] = -gt;
            g_ls[i] = -(gt * sc[i] * u[gi][k] + 1.0);
            gu[gi][k] = gt * sc[i];
        });
        for (gi, ch) in self.chains.iter().enumerate() {
            let tape = &buf.tapes[gi];
            elbo += tape.logdet()[0];
            // Loss gradients: −∂elbo/∂u, and −1 per unit of log-det.
            let g_out: Vec<f64> = buf.gu[gi].iter().map(|g| -g).collect();
            let mut g_in = vec![0.0; g_out.len()];
            let p = &v[offs[gi]..offs[gi + 1]];
            let gp = &mut g_chain[offs[gi] - 2 * n..offs[gi + 1] - 2 * n];
            ch.backward(p, tape, &g_out, &[-1.0], &mut g_in, gp);
        }
        -elbo
    }

    fn location(&self, params: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&params[..self.dim]);
    }

    fn spread(&self, params: &[f64], out: &mut [f64]) {
        // The affine's scale: the chain's layers stay close to unit scale
        // (each expands by at most e^{0.1}).
        for (o, ls) in out.iter_mut().zip(&params[self.dim..2 * self.dim]) {
            *o = ls.exp();
        }
    }

    fn fitted(&self, params: &[f64]) -> Box<dyn FittedGuide> {
        let offs = self.chain_offsets();
        let (loc, rest) = params.split_at(self.dim);
        let scale: Vec<f64> = rest[..self.dim].iter().map(|v| v.exp()).collect();
        let groups = self
            .groups
            .iter()
            .zip(offs.windows(2))
            .map(|(g, w)| FlowGroup {
                loc: g.iter().map(|&j| loc[j]).collect(),
                scale: g.iter().map(|&j| scale[j]).collect(),
                params: params[w[0]..w[1]].to_vec(),
                target: g.iter().map(|&j| Some(j)).collect(),
            })
            .collect();
        Box::new(FlowFit {
            loc: loc.to_vec(),
            scale,
            config: self.config.clone(),
            groups,
        })
    }
}

/// One fitted flow: the affine `loc`/`scale` and chain parameters over its
/// full group, and where each group coordinate lands in the fit's layout
/// (`None` once a subset dropped it: the flow still draws it, so that the
/// kept coordinates keep their joint distribution).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowGroup {
    pub loc: Vec<f64>,
    pub scale: Vec<f64>,
    pub params: Vec<f64>,
    pub target: Vec<Option<usize>>,
}

/// A fitted flow guide: mean-field `loc`/`scale` of every coordinate (for
/// group members the flow's affine), and the flows.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFit {
    pub loc: Vec<f64>,
    pub scale: Vec<f64>,
    pub config: FlowConfig,
    pub groups: Vec<FlowGroup>,
}

/// The stored field of the architecture: kind (0 affine, 1 spline
/// coupling, 2 MAF, 3 IAF), layers, activation, layer norm, residual, soft clamp, LOFT τ
/// (0: none), spline bins, then the hidden widths.
fn config_to_field(c: &FlowConfig) -> Vec<f64> {
    let act = Activation::NAMES
        .iter()
        .position(|n| Activation::parse(n, "").ok() == Some(c.activation))
        .unwrap_or(0);
    let kind = match c.kind {
        FlowKind::AffineCoupling => 0.0,
        FlowKind::SplineCoupling => 1.0,
        FlowKind::Maf => 2.0,
        FlowKind::Iaf => 3.0,
    };
    let mut v = vec![
        kind,
        c.num_layers as f64,
        act as f64,
        c.layer_norm as u8 as f64,
        c.residual as u8 as f64,
        c.soft_clamp as u8 as f64,
        c.loft_tau.unwrap_or(0.0),
        c.n_bins as f64,
    ];
    v.extend(c.hidden.iter().map(|&h| h as f64));
    v
}

fn config_from_field(v: &[f64]) -> Option<FlowConfig> {
    let whole = |x: f64| (x >= 0.0 && x == x.round() && x < 1e7).then_some(x as usize);
    if v.len() < 8 {
        return None;
    }
    let kind = match whole(v[0])? {
        0 => FlowKind::AffineCoupling,
        1 => FlowKind::SplineCoupling,
        2 => FlowKind::Maf,
        3 => FlowKind::Iaf,
        _ => return None,
    };
    let activation = Activation::parse(Activation::NAMES.get(whole(v[2])?)?, "").ok()?;
    let hidden = v[8..]
        .iter()
        .map(|&h| whole(h))
        .collect::<Option<Vec<_>>>()?;
    Some(FlowConfig {
        kind,
        num_layers: whole(v[1])?,
        hidden,
        activation,
        layer_norm: v[3] != 0.0,
        residual: v[4] != 0.0,
        soft_clamp: v[5] != 0.0,
        loft_tau: (v[6] > 0.0).then_some(v[6]),
        n_bins: whole(v[7])?,
        final_affine: false,
    })
}

impl FlowFit {
    /// One draw of every coordinate: the flows first (so that a subset's
    /// flow coordinates draw what the full fit draws for them), then the
    /// mean-field coordinates in layout order.
    fn draw<R: Rng>(&self, chains: &[FlowChain], rng: &mut R, x: &mut [f64], tape: &mut ChainTape) {
        let mut in_flow = vec![false; x.len()];
        for (g, ch) in self.groups.iter().zip(chains) {
            let z: Vec<f64> = (0..g.loc.len())
                .map(|_| rng.sample(StandardNormal))
                .collect();
            ch.apply(&g.params, Direction::Generative, &z, 1, tape);
            for (k, t) in g.target.iter().enumerate() {
                if let Some(j) = *t {
                    x[j] = g.loc[k] + g.scale[k] * tape.output()[k];
                    in_flow[j] = true;
                }
            }
        }
        for (j, xj) in x.iter_mut().enumerate() {
            if !in_flow[j] {
                let e: f64 = rng.sample(StandardNormal);
                *xj = self.loc[j] + self.scale[j] * e;
            }
        }
    }

    fn chains(&self) -> Result<Vec<FlowChain>> {
        self.groups
            .iter()
            .map(|g| FlowChain::new(g.loc.len(), &self.config))
            .collect()
    }

    /// Draws of `x` (every coordinate) from a fixed seed, `n` rows.
    fn x_draws(&self, n: usize, seed: u64) -> Result<Vec<Vec<f64>>> {
        let chains = self.chains()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tape = ChainTape::default();
        Ok((0..n)
            .map(|_| {
                let mut x = vec![0.0; self.loc.len()];
                self.draw(&chains, &mut rng, &mut x, &mut tape);
                x
            })
            .collect())
    }

    /// From the stored fields: `loc` and `scale` of every block, and the
    /// `flow` entry (architecture and every group's affine, chain and
    /// targets).
    pub fn from_fields(layout: &Layout, fields: &[BlockFields]) -> Result<Self> {
        let mf = super::MeanFieldFit::from_fields(layout, fields)?;
        let bad = |what: &str| CoreError::arg("fit", format!("its flow guide {what}"));
        let f = fields
            .iter()
            .find(|f| f.block == "flow")
            .ok_or_else(|| bad("has no `flow` entry"))?;
        let config = f
            .get("config")
            .and_then(config_from_field)
            .ok_or_else(|| bad("has an invalid `config`"))?;
        let mut groups = Vec::new();
        for gi in 0.. {
            let get = |name: &str| f.get(&format!("{name}_{gi}"));
            let (Some(loc), Some(scale), Some(params), Some(target)) =
                (get("loc"), get("scale"), get("params"), get("target"))
            else {
                break;
            };
            let m = loc.len();
            let ch = FlowChain::new(m, &config)?;
            let ok_target = target
                .iter()
                .all(|&t| t == -1.0 || (t >= 0.0 && t == t.round() && (t as usize) < layout.total));
            if scale.len() != m || target.len() != m || params.len() != ch.n_params() || !ok_target
            {
                return Err(bad(&format!("group {gi} has fields of the wrong length")));
            }
            groups.push(FlowGroup {
                loc: loc.to_vec(),
                scale: scale.to_vec(),
                params: params.to_vec(),
                target: target
                    .iter()
                    .map(|&t| (t >= 0.0).then_some(t as usize))
                    .collect(),
            });
        }
        Ok(FlowFit {
            loc: mf.loc,
            scale: mf.scale,
            config,
            groups,
        })
    }

    /// Each coordinate's standard deviation over `n` draws (mean-field
    /// scale outside the flows).
    fn sampled_scales(&self, n: usize) -> Result<Vec<f64>> {
        let draws = self.x_draws(n, 0x7363_616c)?;
        let mut out = self.scale.clone();
        for g in &self.groups {
            for j in g.target.iter().flatten() {
                let m = draws.iter().map(|x| x[*j]).sum::<f64>() / n as f64;
                let v = draws.iter().map(|x| (x[*j] - m).powi(2)).sum::<f64>() / (n - 1) as f64;
                out[*j] = v.sqrt();
            }
        }
        Ok(out)
    }
}

impl Source for FlowFit {
    fn sampled_sites(&self, layout: &Layout, summary: Summary, ctl: Ctl<'_>) -> Result<Vec<Site>> {
        if let Summary::Point = summary {
            // The mean of MAP_DRAWS draws of each value.
            let mut sites = self.sampled_sites(
                layout,
                Summary::Draws {
                    n: MAP_DRAWS,
                    seed: 0x006d_6170,
                },
                ctl,
            )?;
            for s in &mut sites {
                let n = s.n_draws;
                s.values = s
                    .values
                    .chunks_exact(n)
                    .map(|c| c.iter().sum::<f64>() / n as f64)
                    .collect();
                s.n_draws = 1;
            }
            return Ok(sites);
        }
        let chains = self.chains()?;
        let mut tape = ChainTape::default();
        gaussian_sites(layout, summary, ctl, &self.loc, &self.scale, |rng, x| {
            self.draw(&chains, rng, x, &mut tape)
        })
    }

    fn scales(&self) -> Option<Vec<f64>> {
        self.sampled_scales(200).ok()
    }
}

impl FittedGuide for FlowFit {
    fn family(&self) -> &'static str {
        "flow"
    }

    fn fields(&self, layout: &Layout) -> Vec<BlockFields> {
        let mut out: Vec<BlockFields> = layout
            .blocks
            .iter()
            .map(|b| BlockFields {
                block: b.name.clone(),
                fields: vec![
                    ("loc".into(), self.loc[b.range()].to_vec()),
                    ("scale".into(), self.scale[b.range()].to_vec()),
                ],
            })
            .collect();
        let mut flow = vec![("config".to_string(), config_to_field(&self.config))];
        for (gi, g) in self.groups.iter().enumerate() {
            let target = g
                .target
                .iter()
                .map(|t| t.map_or(-1.0, |j| j as f64))
                .collect();
            flow.push((format!("loc_{gi}"), g.loc.clone()));
            flow.push((format!("scale_{gi}"), g.scale.clone()));
            flow.push((format!("params_{gi}"), g.params.clone()));
            flow.push((format!("target_{gi}"), target));
        }
        out.push(BlockFields {
            block: "flow".into(),
            fields: flow,
        });
        out
    }

    fn select(&self, keep: &[usize]) -> Box<dyn FittedGuide> {
        let mut new_index = vec![None; self.loc.len()];
        for (n, &j) in keep.iter().enumerate() {
            new_index[j] = Some(n);
        }
        let groups = self
            .groups
            .iter()
            .map(|g| FlowGroup {
                target: g
                    .target
                    .iter()
                    .map(|t| t.and_then(|j| new_index[j]))
                    .collect(),
                ..g.clone()
            })
            .filter(|g| g.target.iter().any(Option::is_some))
            .collect();
        Box::new(FlowFit {
            loc: keep.iter().map(|&j| self.loc[j]).collect(),
            scale: keep.iter().map(|&j| self.scale[j]).collect(),
            config: self.config.clone(),
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Batch;
    use crate::models::nb::simulate::{simulate_nb, NbTruth};
    use crate::models::nb::Variant;
    use crate::svi::guide::{check_guide_gradient, test_model};

    fn small() -> FlowConfig {
        FlowConfig {
            num_layers: 2,
            hidden: vec![4, 4],
            activation: Activation::Tanh,
            ..FlowConfig::default()
        }
    }

    /// Guide parameters with chains away from the identity, so every term
    /// of the backward pass matters.
    fn perturbed(guide: &Flow, x0: &[f64]) -> Vec<f64> {
        let n = x0.len();
        let mut v = guide.initial_params(x0, &vec![-1.0; n]);
        for (j, w) in v[2 * n..].iter_mut().enumerate() {
            *w += 0.2 * ((j * 7 % 11) as f64 - 5.0) / 5.0;
        }
        v
    }

    #[test]
    fn reparameterized_gradient_matches_finite_differences() {
        for case in ["plain", "joint", "mixture", "datasets", "spline", "iaf"] {
            let (case, cfg) = match case {
                "spline" => (
                    "joint",
                    FlowConfig {
                        kind: FlowKind::SplineCoupling,
                        n_bins: 4,
                        ..small()
                    },
                ),
                "iaf" => (
                    "mixture",
                    FlowConfig {
                        kind: FlowKind::Iaf,
                        ..small()
                    },
                ),
                _ => (case, small()),
            };
            let truth = NbTruth::random(Variant::Nbvcp, 9, 12, 4);
            let data = simulate_nb(&truth, 5);
            let (model, joint) = test_model(case, &data);
            let gene = model.spec.param.gene_param();
            let guide = Flow::new(model.layout(), gene, &joint, &cfg).unwrap();
            let v = perturbed(&guide, &model.initial_point());
            let mut batch = Batch::full(&data);
            batch.set_cells(&data, &[1, 4, 6, 9]);
            check_guide_gradient(&guide, &model, &batch, &v, case);
        }
    }

    #[test]
    fn fields_round_trip_and_subsets_keep_the_joint_draws() {
        let truth = NbTruth::random(Variant::Nbvcp, 6, 5, 1);
        let data = simulate_nb(&truth, 2);
        let (model, joint) = test_model("joint", &data);
        let guide = Flow::new(model.layout(), "mu", &joint, &small()).unwrap();
        let v = perturbed(&guide, &model.initial_point());
        let fit = guide.fitted(&v);
        let layout = model.layout();
        let back = super::super::import("flow", layout, &fit.fields(layout)).unwrap();
        let draws = |f: &dyn FittedGuide, l: &Layout| {
            f.sampled_sites(l, Summary::Draws { n: 5, seed: 9 }, Ctl::none())
                .unwrap()
        };
        assert_eq!(draws(fit.as_ref(), layout), draws(back.as_ref(), layout));
        // Keep genes 1 and 4: their draws are the full fit's draws of them.
        let (sub_layout, keep) = layout.select(6, Some(&[1, 4]), None).unwrap();
        let sub = fit.select(&keep);
        let sub_back = super::super::import("flow", &sub_layout, &sub.fields(&sub_layout)).unwrap();
        let full = draws(fit.as_ref(), layout);
        let part = draws(sub_back.as_ref(), &sub_layout);
        let mu_full = full.iter().find(|s| s.name == "mu").unwrap();
        let mu_part = part.iter().find(|s| s.name == "mu").unwrap();
        for (k, g) in [1usize, 4].iter().enumerate() {
            assert_eq!(
                mu_part.values[k * 5..(k + 1) * 5],
                mu_full.values[g * 5..(g + 1) * 5]
            );
        }
        // The point summary is the mean of draws.
        let point = fit
            .sampled_sites(layout, Summary::Point, Ctl::none())
            .unwrap();
        let many = fit
            .sampled_sites(
                layout,
                Summary::Draws {
                    n: MAP_DRAWS,
                    seed: 0x006d_6170,
                },
                Ctl::none(),
            )
            .unwrap();
        let phi = many.iter().position(|s| s.name == "phi").unwrap();
        let mean = many[phi].values.iter().sum::<f64>() / MAP_DRAWS as f64;
        assert!((point[phi].values[0] - mean).abs() < 1e-12);
        assert!(FlowFit::from_fields(layout, &fit.fields(layout)[..layout.blocks.len()]).is_err());
        let maf = FlowConfig {
            kind: FlowKind::Maf,
            ..small()
        };
        let e = Flow::new(layout, "mu", &joint, &maf).unwrap_err();
        assert!(e.to_string().contains("iaf"), "{e}");
    }
}
