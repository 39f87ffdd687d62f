//! Parameter draws of an NB-family model in one engine-independent form.
//!
//! Every downstream analysis (log-likelihoods, responsibilities, denoising,
//! normalization, predictive sampling) takes an [`NbDraws`]: one or more
//! settings of the canonical parameters `(r, p, ν, gate, w)`, whatever engine
//! produced them (a variational guide's draws or MAP, MCMC draws, …).

use crate::error::{CoreError, Result};
use crate::models::nb::{NbSpec, Variant};
use crate::posterior::Site;

/// `n_draws` settings of the canonical NB parameters, draw-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NbDraws {
    pub variant: Variant,
    pub n_draws: usize,
    pub n_comp: usize,
    pub n_genes: usize,
    pub n_cells: usize,
    /// `r[(s·K + k)·G + g]`
    pub r: Vec<f64>,
    /// `p[s·K + k]` (NaN when `p` is gene-specific).
    pub p: Vec<f64>,
    /// Gene-specific `p[(s·K + k)·G + g]` (`priors = list(probability = ...)`).
    pub p_gene: Option<Vec<f64>>,
    /// BNB excess dispersion `ω[s·G + g]` (`overdispersion = "bnb"`).
    pub omega: Option<Vec<f64>>,
    /// Capture probability `nu[s·C + c]` (capture models only).
    pub nu: Option<Vec<f64>>,
    /// `gate[(s·K + k)·G + g]` (zero-inflated models only).
    pub gate: Option<Vec<f64>>,
    /// Mixing weights `w[s·K + k]` (all 1 without a mixture; the datasets'
    /// shares of the cells with datasets).
    pub weights: Vec<f64>,
    /// With datasets (`dataset_key`), the "component" of every cell is known:
    /// its dataset, whose parameter rows sit where a mixture's components do.
    pub cell_comp: Option<Vec<u32>>,
}

impl NbDraws {
    /// Builds draws from the named sites of `posterior::nb_sites` (derived `r`,
    /// `p`, `p_capture`, `gate`, `mixing_weights`), broadcasting shared
    /// parameters over components.
    pub fn from_sites(spec: &NbSpec, sites: &[Site]) -> Result<Self> {
        let variant = spec.variant;
        let get = |n: &str| sites.iter().find(|s| s.name == n);
        let need =
            |n: &str| get(n).ok_or_else(|| CoreError::arg("params", format!("missing site '{n}'")));
        let r = need("r")?;
        let p = need("p")?;
        let n = r.n_draws;
        let mix = get("mixing_weights");
        let ds = spec.datasets.as_ref();
        let k_n = match ds {
            Some(ds) => ds.n,
            None => mix.map_or(1, |m| m.n_comp),
        };
        let g_n = r.len();
        let spread = |site: &Site| -> Vec<f64> {
            let len = site.len();
            let mut out = vec![0.0; n * k_n * len];
            for s in 0..n {
                for k in 0..k_n {
                    for j in 0..len {
                        out[(s * k_n + k) * len + j] = site.at(s, k, j);
                    }
                }
            }
            out
        };
        let nu = if variant.has_capture() {
            let cap = need("p_capture")?;
            let c_n = cap.len();
            let mut v = vec![0.0; n * c_n];
            for s in 0..n {
                for c in 0..c_n {
                    v[s * c_n + c] = cap.at(s, 0, c);
                }
            }
            Some(v)
        } else {
            None
        };
        let gate = if variant.has_gate() {
            Some(spread(need("gate")?))
        } else {
            None
        };
        let weights = match (mix, ds) {
            (Some(m), _) => spread(m),
            (None, Some(ds)) => {
                let mut share = vec![0.0; ds.n];
                for &d in &ds.cell {
                    share[d as usize] += 1.0 / ds.cell.len().max(1) as f64;
                }
                (0..n).flat_map(|_| share.iter().copied()).collect()
            }
            (None, None) => vec![1.0; n],
        };
        let n_cells = nu.as_ref().map_or(0, |v| v.len() / n.max(1));
        let p_gene = (p.kind == crate::models::BlockKind::Gene).then(|| spread(p));
        let omega = get("bnb_concentration").map(|o| {
            let mut v = vec![0.0; n * g_n];
            for s in 0..n {
                for g in 0..g_n {
                    v[s * g_n + g] = o.at(s, 0, g).max(1e-6);
                }
            }
            v
        });
        let p = if p_gene.is_some() {
            vec![f64::NAN; n * k_n]
        } else {
            spread(p)
        };
        Ok(NbDraws {
            variant,
            n_draws: n,
            n_comp: k_n,
            n_genes: g_n,
            n_cells,
            r: spread(r),
            p,
            p_gene,
            omega,
            nu,
            gate,
            weights,
            cell_comp: ds.map(|d| d.cell.clone()),
        })
    }

    /// The known component (dataset) of cell `c`, if the fit has datasets.
    #[inline]
    pub fn known_comp(&self, c: usize) -> Option<usize> {
        self.cell_comp.as_ref().map(|v| v[c] as usize)
    }

    #[inline]
    pub fn r_of(&self, s: usize, k: usize) -> &[f64] {
        let g = self.n_genes;
        &self.r[(s * self.n_comp + k) * g..(s * self.n_comp + k + 1) * g]
    }

    #[inline]
    pub fn gate_of(&self, s: usize, k: usize) -> Option<&[f64]> {
        let g = self.n_genes;
        self.gate
            .as_ref()
            .map(|v| &v[(s * self.n_comp + k) * g..(s * self.n_comp + k + 1) * g])
    }

    /// The shared `p` of draw `s`, component `k` (NaN when `p` is
    /// gene-specific: use [`Self::p_at`] where a gene is at hand).
    #[inline]
    pub fn p_of(&self, s: usize, k: usize) -> f64 {
        self.p[s * self.n_comp + k]
    }

    /// `p` of gene `g` (draw `s`, component `k`), shared or gene-specific.
    #[inline]
    pub fn p_at(&self, s: usize, k: usize, g: usize) -> f64 {
        match &self.p_gene {
            Some(v) => v[(s * self.n_comp + k) * self.n_genes + g],
            None => self.p[s * self.n_comp + k],
        }
    }

    /// BNB excess dispersion of gene `g` in draw `s` (`None` for the NB).
    #[inline]
    pub fn omega_at(&self, s: usize, g: usize) -> Option<f64> {
        self.omega.as_ref().map(|v| v[s * self.n_genes + g])
    }

    /// Whether `p` differs by gene.
    #[inline]
    pub fn gene_specific_p(&self) -> bool {
        self.p_gene.is_some()
    }

    #[inline]
    pub fn ln_w(&self, s: usize, k: usize) -> f64 {
        self.weights[s * self.n_comp + k].max(1e-300).ln()
    }

    /// Capture probability of cell `c` in draw `s` (1 without capture).
    #[inline]
    pub fn nu_of(&self, s: usize, c: usize) -> f64 {
        self.nu.as_ref().map_or(1.0, |v| v[s * self.n_cells + c])
    }

    /// `logit p̂_c = logit p + ln ν_c` for draw `s`, component `k`, cell `c`
    /// (shared `p` only).
    #[inline]
    pub fn ell(&self, s: usize, k: usize, c: usize) -> f64 {
        let p = self.p_of(s, k);
        (p / (1.0 - p)).ln() + self.nu_of(s, c).ln()
    }

    /// `logit p̂_cg = logit p_g + ln ν_c`, shared or gene-specific `p`.
    #[inline]
    pub fn ell_at(&self, s: usize, k: usize, c: usize, g: usize) -> f64 {
        let p = self.p_at(s, k, g);
        (p / (1.0 - p)).ln() + self.nu_of(s, c).ln()
    }

    /// The same single setting repeated `n` times (e.g. MAP predictive draws).
    pub fn replicate(&self, n: usize) -> Result<Self> {
        let per = (self.r.len() + self.nu.as_ref().map_or(0, Vec::len)) as f64;
        crate::limits::check_values("n_samples", 2.0 * per * n as f64)?;
        let rep = |v: &Vec<f64>| -> Vec<f64> { (0..n).flat_map(|_| v.iter().copied()).collect() };
        Ok(NbDraws {
            n_draws: self.n_draws * n,
            r: rep(&self.r),
            p: rep(&self.p),
            p_gene: self.p_gene.as_ref().map(rep),
            omega: self.omega.as_ref().map(rep),
            nu: self.nu.as_ref().map(rep),
            gate: self.gate.as_ref().map(rep),
            weights: rep(&self.weights),
            ..self.clone()
        })
    }

    /// Only the listed genes (in that order).
    pub fn subset_genes(&self, genes: &[usize]) -> Self {
        let g_n = self.n_genes;
        let pick = |v: &Vec<f64>| -> Vec<f64> {
            let rows = v.len() / g_n;
            let mut out = Vec::with_capacity(rows * genes.len());
            for row in 0..rows {
                out.extend(genes.iter().map(|&g| v[row * g_n + g]));
            }
            out
        };
        NbDraws {
            r: pick(&self.r),
            p_gene: self.p_gene.as_ref().map(pick),
            omega: self.omega.as_ref().map(pick),
            gate: self.gate.as_ref().map(pick),
            n_genes: genes.len(),
            ..self.clone()
        }
    }
}
