//! The log-normal family: each cell has latent log-rates `x_c ~ N(μ, Σ)`
//! with `Σ = W Wᵀ + diag(d)`, and counts that depend on them through an
//! observation kernel ([`obs`]: Poisson for PLN, negative binomial for NBLN;
//! [`lnm`]: the logistic-normal multinomial with NB totals for LNM/LNMVCP).
//! A per-cell capture latent `η_c` (`ν_c = e^{−η_c}`) shifts the log-rates
//! to `x − η`. Engines (Laplace now, the VAE next) own how the latents are
//! inferred; this module owns what they mean.

pub mod lnm;
pub mod obs;

/// Lower bound of the capture latent `η` (ν = e^{−η} ≤ 1).
pub const ETA_MIN: f64 = 1e-3;

/// Which log-normal model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LnModel {
    /// `u ~ Poisson(e^ℓ)`.
    Pln,
    /// `u ~ NB(mean e^ℓ, r_g)`, with a global per-gene dispersion `r`.
    Nbln,
    /// Logistic-normal multinomial: compositions in log-ratio coordinates
    /// against a reference gene, with an NB model of the totals.
    Lnm,
}

impl LnModel {
    /// The model of a name (`lnmvcp` is `lnm` with capture).
    pub fn parse(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "pln" => LnModel::Pln,
            "nbln" => LnModel::Nbln,
            "lnm" | "lnmvcp" => LnModel::Lnm,
            other => {
                return Err(crate::CoreError::arg(
                    "model",
                    format!("unknown log-normal model '{other}'"),
                ))
            }
        })
    }
}

/// The capture block.
#[derive(Debug, Clone, PartialEq)]
pub enum Capture {
    None,
    /// `η_c ~ TruncN(ln M0 − ln L_c, σ, low = 0)`.
    Anchor {
        ln_m0: f64,
        sigma: f64,
    },
    /// Per-cell empirical prior `η_c ~ TruncN(loc_c, scale_c, low = 0)` (cascade).
    PerCell {
        loc: Vec<f64>,
        scale: Vec<f64>,
    },
    /// `η_c` frozen at these values (cascade): an offset, not a latent.
    Frozen(Vec<f64>),
}

/// Method-of-moments dispersion per gene, `r = m²/(v − m)` (1 for unexpressed genes).
pub fn mom_dispersion(data: &crate::data::CountMatrix) -> Vec<f64> {
    let (g, n) = (data.n_genes, data.n_cells as f64);
    let (mut s1, mut s2) = (vec![0.0; g], vec![0.0; g]);
    for (p, &gi) in data.gene_idx.iter().enumerate() {
        let u = data.counts[p] as f64;
        s1[gi as usize] += u;
        s2[gi as usize] += u * u;
    }
    (0..g)
        .map(|i| {
            let m = s1[i] / n;
            if m == 0.0 {
                return 1.0;
            }
            let v = (s2[i] - n * m * m) / (n - 1.0).max(1.0);
            (m * m / (v - m).max(1e-3)).max(1e-3)
        })
        .collect()
}

/// LNM's reference gene: the one with the most counts (the most stable ratios).
pub fn lnm_reference(data: &crate::data::CountMatrix) -> usize {
    let mut tot = vec![0.0; data.n_genes];
    for (p, &gi) in data.gene_idx.iter().enumerate() {
        tot[gi as usize] += data.counts[p] as f64;
    }
    (0..data.n_genes).fold(0, |b, i| if tot[i] > tot[b] { i } else { b })
}
