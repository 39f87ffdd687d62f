//! Draws of the log-ratio difference `Δ = CLR(ρ_A) − CLR(ρ_B)`.
//!
//! NB-family fits: with `p` shared by the genes of a component, the
//! composition of the NB means is `ρ ~ Dirichlet(r)` given a parameter
//! draw (the Dirichlet–multinomial factorisation; `p` and capture cancel).
//! Each of a fit's parameter draws gives `n_dir` compositions per side.
//! Log-normal fits: a side is the population `ρ = softmax(μ + W z + √d ε)`
//! of its cells, so `Δ` mixes cell-to-cell variability into the draws
//! (its lfsr measures how much the two populations overlap).
//!
//! Logarithms of compositions are formed without leaving log space (the
//! log of a Gamma draw of shape `a < 1` as `ln Γ(a+1) + ln U / a`), so tiny
//! concentrations do not underflow to zero; the floor `ρ ≥ 1e-30` of the
//! log-ratio is then applied on the log scale.
//!
//! Genes outside a `keep` mask are pooled into one "other" part of the
//! composition (exact for a Dirichlet by its aggregation property); that
//! part enters the CLR reference and is dropped from `Δ`.

use super::LN_FLOOR;
use crate::error::{CoreError, Result};
use crate::posterior::nb::draws::NbDraws;
use crate::progress::Ctl;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Gamma, StandardNormal};
use rayon::prelude::*;

/// Which composition of an NB-family fit a side of the comparison uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Component {
    /// Component `k` (0 without a mixture).
    One(usize),
    /// The mixture's composition `Σ_k w_k ρ_k`, with the draw's weights.
    Weighted,
}

/// One side of an NB-family comparison.
pub struct NbSide<'a> {
    pub draws: &'a NbDraws,
    pub component: Component,
}

/// A log-normal population: `η = μ + W z + √d ε`, `ρ = softmax(η)`; `w`
/// row-major `D × k`. For additive log-ratio fits the reference gene has
/// `μ = 0`, a zero row of `W` and `d = 0`.
pub struct GaussianSide<'a> {
    pub mu: &'a [f64],
    pub w: &'a [f64],
    pub d: &'a [f64],
    pub k: usize,
}

/// Which genes keep their own coordinate (`None`: all of them).
fn kept(keep: Option<&[bool]>, n_genes: usize) -> Result<Vec<usize>> {
    match keep {
        None => Ok((0..n_genes).collect()),
        Some(m) if m.len() != n_genes => Err(CoreError::arg(
            "gene_mask",
            format!("has {} entries for {} genes", m.len(), n_genes),
        )),
        Some(m) => {
            let idx: Vec<usize> = (0..n_genes).filter(|&g| m[g]).collect();
            if idx.is_empty() {
                return Err(CoreError::arg("gene_mask", "keeps no gene"));
            }
            Ok(idx)
        }
    }
}

/// `ln x` of one Gamma(`a`, 1) draw, accurate for small shapes.
fn ln_gamma_draw(a: f64, rng: &mut ChaCha8Rng) -> f64 {
    if a >= 1.0 {
        Gamma::new(a, 1.0).map_or(f64::NEG_INFINITY, |g| g.sample(rng).ln())
    } else {
        let a = a.max(1e-300);
        let big = Gamma::new(a + 1.0, 1.0).map_or(f64::NEG_INFINITY, |g| g.sample(rng).ln());
        let u: f64 = rng.random();
        big + u.max(f64::MIN_POSITIVE).ln() / a
    }
}

fn log_sum_exp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// CLR of a log-composition `ln_rho` (normalised or not: the CLR does not
/// care) over the kept genes plus, when some genes are pooled, the "other"
/// part; writes the kept genes' values into `out`.
fn clr(ln_rho: &[f64], kept: &[usize], pooled: &[usize], out: &mut [f64]) {
    let total = log_sum_exp(ln_rho.iter().copied());
    let floor = |x: f64| (x - total).max(LN_FLOOR);
    let mut sum = 0.0;
    for (o, &g) in out.iter_mut().zip(kept) {
        *o = floor(ln_rho[g]);
        sum += *o;
    }
    let mut parts = kept.len();
    if !pooled.is_empty() {
        sum += floor(log_sum_exp(pooled.iter().map(|&g| ln_rho[g])));
        parts += 1;
    }
    let mean = sum / parts as f64;
    out.iter_mut().for_each(|o| *o -= mean);
}

/// A side that can fill one draw's log-composition.
trait LogComposition: Sync {
    fn n_genes(&self) -> usize;
    /// `ln ρ` (up to a constant) of draw `t`.
    fn fill(&self, t: usize, rng: &mut ChaCha8Rng, ln_rho: &mut [f64]);
}

struct NbFill<'a> {
    side: &'a NbSide<'a>,
    n_dir: usize,
    /// The expected composition `r / Σr` instead of Dirichlet draws.
    mean: bool,
}

impl LogComposition for NbFill<'_> {
    fn n_genes(&self) -> usize {
        self.side.draws.n_genes
    }
    fn fill(&self, t: usize, rng: &mut ChaCha8Rng, ln_rho: &mut [f64]) {
        let d = self.side.draws;
        let s = t / self.n_dir;
        let mean = self.mean;
        let dirichlet = |k: usize, rng: &mut ChaCha8Rng, out: &mut [f64]| {
            for (g, (o, &r)) in out.iter_mut().zip(d.r_of(s, k)).enumerate() {
                *o = if mean {
                    r.max(1e-300).ln()
                } else {
                    ln_gamma_draw(r, rng)
                };
                // Gene-specific p: the Gamma route, λ_g = γ_g p_g/(1−p_g).
                if d.gene_specific_p() {
                    let p = d.p_at(s, k, g);
                    *o += (p / (1.0 - p)).ln();
                }
            }
            let tot = log_sum_exp(out.iter().copied());
            out.iter_mut().for_each(|o| *o -= tot);
        };
        match self.side.component {
            Component::One(k) => dirichlet(k, rng, ln_rho),
            Component::Weighted => {
                let mut acc = vec![0.0; ln_rho.len()];
                for k in 0..d.n_comp {
                    dirichlet(k, rng, ln_rho);
                    let w = d.weights[s * d.n_comp + k];
                    acc.iter_mut()
                        .zip(ln_rho.iter())
                        .for_each(|(a, &l)| *a += w * l.exp());
                }
                ln_rho
                    .iter_mut()
                    .zip(&acc)
                    .for_each(|(l, &a)| *l = a.max(1e-300).ln());
            }
        }
    }
}

impl LogComposition for GaussianSide<'_> {
    fn n_genes(&self) -> usize {
        self.mu.len()
    }
    fn fill(&self, _t: usize, rng: &mut ChaCha8Rng, ln_rho: &mut [f64]) {
        let z: Vec<f64> = (0..self.k).map(|_| rng.sample(StandardNormal)).collect();
        for (g, l) in ln_rho.iter_mut().enumerate() {
            let row = &self.w[g * self.k..(g + 1) * self.k];
            let wz: f64 = row.iter().zip(&z).map(|(a, b)| a * b).sum();
            let e: f64 = rng.sample(StandardNormal);
            *l = self.mu[g] + wz + self.d[g].max(0.0).sqrt() * e;
        }
    }
}

/// Draws per block: rows are formed in parallel, then scattered gene-major.
const BLOCK: usize = 64;

/// `n` draws of `Δ` for the kept genes, gene-major (`Δ[j·n + t]`). Draw `t`
/// of each side uses its own random stream of `seed`, so results do not
/// depend on the number of threads.
fn differences(
    a: &dyn LogComposition,
    b: &dyn LogComposition,
    n: usize,
    keep: Option<&[bool]>,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    let g_n = a.n_genes();
    if b.n_genes() != g_n {
        return Err(CoreError::arg(
            "fit_b",
            format!("has {} genes; fit_a has {}", b.n_genes(), g_n),
        ));
    }
    let kept = kept(keep, g_n)?;
    let is_kept = {
        let mut v = vec![false; g_n];
        kept.iter().for_each(|&g| v[g] = true);
        v
    };
    let pooled: Vec<usize> = (0..g_n).filter(|&g| !is_kept[g]).collect();
    let j_n = kept.len();
    crate::limits::check_values("n_samples", (j_n as f64) * (n as f64 + BLOCK as f64))?;
    let mut out = vec![0.0; j_n * n];
    let mut rows = vec![0.0; j_n * BLOCK.min(n.max(1))];
    let work = ctl.work(n);
    for start in (0..n).step_by(BLOCK) {
        if work.stopped() {
            break;
        }
        let len = BLOCK.min(n - start);
        rows[..len * j_n]
            .par_chunks_mut(j_n.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                let t = start + i;
                let side = |src: &dyn LogComposition, stream: u64, out: &mut [f64]| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(stream);
                    let mut ln_rho = vec![0.0; g_n];
                    src.fill(t, &mut rng, &mut ln_rho);
                    clr(&ln_rho, &kept, &pooled, out);
                };
                let mut cb = vec![0.0; j_n];
                side(a, 2 * t as u64 + 1, row);
                side(b, 2 * t as u64 + 2, &mut cb);
                row.iter_mut().zip(&cb).for_each(|(x, y)| *x -= y);
                work.tick();
            });
        out.par_chunks_mut(n.max(1))
            .enumerate()
            .for_each(|(j, col)| {
                for i in 0..len {
                    col[start + i] = rows[i * j_n + j];
                }
            });
    }
    work.finish(out)
}

/// `Δ` draws between two NB-family posteriors: `n_dir` compositions per
/// parameter draw and side, or with `n_dir = 0` the expected composition
/// `r / Σr` of each draw (then `Δ` carries parameter uncertainty only). The sides are paired draw by draw (draw `s` of
/// A with draw `s` of B), so both must hold the same number of draws; two
/// components of one fit are compared on the same parameter draws.
pub fn nb_differences(
    a: &NbSide<'_>,
    b: &NbSide<'_>,
    n_dir: usize,
    keep: Option<&[bool]>,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    for (side, arg) in [(a, "component_a"), (b, "component_b")] {
        if let Component::One(k) = side.component {
            if k >= side.draws.n_comp {
                return Err(CoreError::arg(
                    arg,
                    format!(
                        "is {} but the fit has {} component(s)",
                        k + 1,
                        side.draws.n_comp
                    ),
                ));
            }
        }
    }
    if a.draws.n_draws != b.draws.n_draws {
        return Err(CoreError::arg(
            "n_samples",
            "the two sides hold different numbers of draws",
        ));
    }
    let (per, mean) = (n_dir.max(1), n_dir == 0);
    let n = a.draws.n_draws * per;
    let (fa, fb) = (
        NbFill {
            side: a,
            n_dir: per,
            mean,
        },
        NbFill {
            side: b,
            n_dir: per,
            mean,
        },
    );
    differences(&fa, &fb, n, keep, seed, ctl)
}

/// A paired design: `Δ = Σ_d w_d Δ_d`, the weighted sum over pairs `d`
/// (e.g. donors seen in both conditions) of each pair's `Δ` draws (drawn
/// with [`nb_differences`] from its own seed), so between-pair differences
/// in baseline cancel within each pair. Every side must hold the same number
/// of draws and genes; the weights must sum to 1.
pub fn paired_differences(
    pairs: &[(NbSide<'_>, NbSide<'_>)],
    weights: &[f64],
    n_dir: usize,
    keep: Option<&[bool]>,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    if pairs.is_empty() || weights.len() != pairs.len() {
        return Err(CoreError::arg("fit_a", "needs one weight per pair of fits"));
    }
    if weights.iter().any(|w| !(*w >= 0.0)) || (weights.iter().sum::<f64>() - 1.0).abs() > 1e-9 {
        return Err(CoreError::arg(
            "pair_weighting",
            "weights must be non-negative and sum to 1",
        ));
    }
    let mut acc: Vec<f64> = Vec::new();
    for (i, ((a, b), &w)) in pairs.iter().zip(weights).enumerate() {
        let d = nb_differences(a, b, n_dir, keep, seed.wrapping_add(1 + i as u64), ctl)?;
        if acc.is_empty() {
            acc = d.iter().map(|x| w * x).collect();
        } else if acc.len() != d.len() {
            return Err(CoreError::arg(
                "fit_a",
                "the pairs differ in genes or draws",
            ));
        } else {
            acc.iter_mut().zip(&d).for_each(|(x, y)| *x += w * y);
        }
    }
    Ok(acc)
}

/// `n` draws of `Δ` between two log-normal populations (one imaginary cell
/// per side and draw).
pub fn gaussian_differences(
    a: &GaussianSide<'_>,
    b: &GaussianSide<'_>,
    n: usize,
    keep: Option<&[bool]>,
    seed: u64,
    ctl: Ctl<'_>,
) -> Result<Vec<f64>> {
    for (s, arg) in [(a, "fit_a"), (b, "fit_b")] {
        let g = s.mu.len();
        if s.d.len() != g || s.w.len() != g * s.k {
            return Err(CoreError::arg(arg, "mu, W and d disagree in size"));
        }
    }
    differences(a, b, n, keep, seed, ctl)
}

/// The CLR mean and per-gene standard deviation of `ln ρ` for a log-normal
/// population: `C μ` and `sqrt(‖(C W)_g‖² + d_g(1 − 2/D) + Σd/D²)` with
/// `C = I − 11ᵀ/D` (exact marginals of `C (W Wᵀ + diag d) Cᵀ`).
pub fn gaussian_clr(side: &GaussianSide<'_>) -> (Vec<f64>, Vec<f64>) {
    let (g_n, k) = (side.mu.len(), side.k);
    let dn = g_n as f64;
    let mu_bar = side.mu.iter().sum::<f64>() / dn;
    let mut w_bar = vec![0.0; k];
    for g in 0..g_n {
        for j in 0..k {
            w_bar[j] += side.w[g * k + j] / dn;
        }
    }
    let d_sum: f64 = side.d.iter().sum();
    let mean = side.mu.iter().map(|m| m - mu_bar).collect();
    let var = (0..g_n)
        .map(|g| {
            let ww: f64 = (0..k).map(|j| (side.w[g * k + j] - w_bar[j]).powi(2)).sum();
            (ww + side.d[g] * (1.0 - 2.0 / dn) + d_sum / (dn * dn)).max(0.0)
        })
        .collect();
    (mean, var)
}

/// Mean and variance of the contrast `cᵀ ln ρ` of a log-normal population
/// for a centred `c` (`Σ c = 0`, so the CLR centring drops out exactly):
/// `cᵀ μ` and `‖Wᵀ c‖² + Σ c_g² d_g`.
pub fn gaussian_contrast(side: &GaussianSide<'_>, c: &[f64]) -> (f64, f64) {
    let k = side.k;
    let mean = c.iter().zip(side.mu).map(|(a, b)| a * b).sum();
    let mut wc = vec![0.0; k];
    let mut var = 0.0;
    for (g, &cg) in c.iter().enumerate() {
        for j in 0..k {
            wc[j] += side.w[g * k + j] * cg;
        }
        var += cg * cg * side.d[g];
    }
    (mean, var + wc.iter().map(|v| v * v).sum::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nb::Variant;

    fn nb(r: Vec<Vec<f64>>, n_comp: usize) -> NbDraws {
        let g = r[0].len();
        let n = r.len() / n_comp;
        NbDraws {
            variant: Variant::Nbdm,
            n_draws: n,
            n_comp,
            n_genes: g,
            n_cells: 0,
            r: r.concat(),
            p: vec![0.5; n * n_comp],
            p_gene: None,
            omega: None,
            nu: None,
            gate: None,
            weights: vec![1.0 / n_comp as f64; n * n_comp],
            cell_comp: None,
        }
    }

    #[test]
    fn clr_sums_to_zero_and_matches_log_ratios() {
        let ln_rho = [0.1f64.ln(), 0.2f64.ln(), 0.7f64.ln()];
        let mut out = [0.0; 3];
        clr(&ln_rho, &[0, 1, 2], &[], &mut out);
        assert!(out.iter().sum::<f64>().abs() < 1e-12);
        assert!((out[1] - out[0] - 2f64.ln()).abs() < 1e-12);
        // Pooling gene 2 into "other": reference over {0, 1, other}.
        let mut two = [0.0; 2];
        clr(&ln_rho, &[0, 1], &[2], &mut two);
        let mean = (0.1f64.ln() + 0.2f64.ln() + 0.7f64.ln()) / 3.0;
        assert!((two[0] - (0.1f64.ln() - mean)).abs() < 1e-12);
    }

    #[test]
    fn dirichlet_differences_centre_on_the_log_ratio_of_concentrations() {
        // A: r = (50, 100, 200); B: r = (100, 100, 100). E[ln ρ_g] ≈ ln r_g − ln Σr
        // for large r, so Δ ≈ CLR(ln r_A) − CLR(ln r_B).
        let a = nb(vec![vec![50.0, 100.0, 200.0]; 400], 1);
        let b = nb(vec![vec![100.0, 100.0, 100.0]; 400], 1);
        let sa = NbSide {
            draws: &a,
            component: Component::One(0),
        };
        let sb = NbSide {
            draws: &b,
            component: Component::One(0),
        };
        let d = nb_differences(&sa, &sb, 2, None, 7, Ctl::none()).unwrap();
        let n = 800;
        let lr = [50f64.ln(), 100f64.ln(), 200f64.ln()];
        let m = lr.iter().sum::<f64>() / 3.0;
        for g in 0..3 {
            let mean = d[g * n..(g + 1) * n].iter().sum::<f64>() / n as f64;
            assert!((mean - (lr[g] - m)).abs() < 0.02, "gene {g}: {mean}");
        }
        // The expected composition: exactly the CLR of r, no noise.
        let m = nb_differences(&sa, &sb, 0, None, 7, Ctl::none()).unwrap();
        assert_eq!(m.len(), 3 * 400);
        assert!((m[0] - (lr[0] - lr.iter().sum::<f64>() / 3.0)).abs() < 1e-12);
        // Deterministic in the seed.
        let again = nb_differences(&sa, &sb, 2, None, 7, Ctl::none()).unwrap();
        assert_eq!(d, again);
    }

    #[test]
    fn thread_count_does_not_change_draws() {
        let a = nb(vec![vec![0.05, 2.0, 30.0, 0.5]; 150], 1);
        let b = nb(vec![vec![0.5, 1.0, 3.0, 0.01]; 150], 1);
        let sa = NbSide {
            draws: &a,
            component: Component::One(0),
        };
        let sb = NbSide {
            draws: &b,
            component: Component::One(0),
        };
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| nb_differences(&sa, &sb, 1, None, 3, Ctl::none()).unwrap())
        };
        let one = run(1);
        assert_eq!(one, run(3));
        // Tiny concentrations stay finite and respect the floor.
        assert!(one.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn paired_differences_are_the_weighted_sum_of_the_pairs() {
        let a1 = nb(vec![vec![10.0, 20.0, 40.0]; 50], 1);
        let b1 = nb(vec![vec![10.0, 10.0, 10.0]; 50], 1);
        let a2 = nb(vec![vec![5.0, 50.0, 5.0]; 50], 1);
        let b2 = nb(vec![vec![5.0, 5.0, 5.0]; 50], 1);
        let side = |d| NbSide {
            draws: d,
            component: Component::One(0),
        };
        let pairs = [(side(&a1), side(&b1)), (side(&a2), side(&b2))];
        let w = [0.25, 0.75];
        let got = paired_differences(&pairs, &w, 0, None, 4, Ctl::none()).unwrap();
        let d1 = nb_differences(&pairs[0].0, &pairs[0].1, 0, None, 5, Ctl::none()).unwrap();
        let d2 = nb_differences(&pairs[1].0, &pairs[1].1, 0, None, 6, Ctl::none()).unwrap();
        for i in 0..got.len() {
            assert!((got[i] - (0.25 * d1[i] + 0.75 * d2[i])).abs() < 1e-12);
        }
        assert!(paired_differences(&pairs, &[0.5, 0.6], 0, None, 4, Ctl::none()).is_err());
    }

    #[test]
    fn weighted_mixture_composition_and_bad_components() {
        let a = nb(vec![vec![10.0, 10.0], vec![10.0, 10.0]], 2);
        let sa = NbSide {
            draws: &a,
            component: Component::Weighted,
        };
        let sb = NbSide {
            draws: &a,
            component: Component::One(1),
        };
        assert!(nb_differences(&sa, &sb, 1, None, 1, Ctl::none()).is_ok());
        let bad = NbSide {
            draws: &a,
            component: Component::One(2),
        };
        let e = nb_differences(&sa, &bad, 1, None, 1, Ctl::none()).unwrap_err();
        assert_eq!(e.argument(), Some("component_b"));
        let e = nb_differences(&sa, &sb, 1, Some(&[false, false]), 1, Ctl::none()).unwrap_err();
        assert_eq!(e.argument(), Some("gene_mask"));
    }

    #[test]
    fn gaussian_draws_agree_with_the_exact_clr_moments() {
        let (mu, d) = (vec![0.0, 1.0, -0.5, 2.0], vec![0.2, 0.1, 0.4, 0.05]);
        let w = vec![0.3, -0.1, 0.0, 0.5, 0.2, 0.2, -0.4, 0.1];
        let a = GaussianSide {
            mu: &mu,
            w: &w,
            d: &d,
            k: 2,
        };
        let zero = vec![0.0; 4];
        let w0 = vec![0.0; 8];
        let b = GaussianSide {
            mu: &zero,
            w: &w0,
            d: &zero,
            k: 2,
        };
        let n = 20000;
        let dr = gaussian_differences(&a, &b, n, None, 11, Ctl::none()).unwrap();
        let (m, v) = gaussian_clr(&a);
        for g in 0..4 {
            let x = &dr[g * n..(g + 1) * n];
            let mean = x.iter().sum::<f64>() / n as f64;
            let var = x.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            assert!((mean - m[g]).abs() < 0.02, "mean {g}: {mean} vs {}", m[g]);
            assert!(
                (var / v[g] - 1.0).abs() < 0.05,
                "var {g}: {var} vs {}",
                v[g]
            );
        }
    }
}
