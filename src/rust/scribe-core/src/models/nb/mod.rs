//! The negative-binomial family: nbdm, nbvcp, zinb, zinbvcp and their
//! mixtures. This file holds what defines a model apart from the data (the
//! variant, the parameterization, the priors, the mixture); the likelihood
//! kernels are in [`kernels`], mixtures in [`mixture`] (and
//! `mixture_genewise` for mixtures with gene-specific `p` or BNB), the gene-by-gene
//! kernels of a gene-specific `p` in `gene_p` and of the beta-negative-binomial
//! in `bnb`, the gene-level hierarchical priors in `hierarchy`, the
//! data-driven start in [`init`], the derived quantities of fitted parameters
//! in [`sites`] and the simulator in [`simulate`].
//!
//! Code convention: `NB(u | r, p) = Γ(u+r)/(Γ(r) u!) p^u (1−p)^r`, mean `r p/(1−p)`.

mod bnb;
mod gene_p;
mod hierarchy;
mod init;
pub mod kernels;
mod mixture;
mod mixture_genewise;
pub mod simulate;
pub mod sites;

pub use bnb::{bnb_ratio, bnb_shape, bnb_variance};
pub use kernels::{nb_cell_loglik, NbModel, NbWorkspace};

use crate::dist::{Link, Prior};
use crate::error::{CoreError, Result};
use crate::models::{BlockKind, Layout};

/// How capture is parameterized in the unconstrained vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Capture {
    None,
    /// `ν = sigmoid(x)`.
    Nu,
    /// `φ_c = T(x)`, `ν = 1/(1+φ_c)`.
    Phi(Link),
    /// `η = softplus(x)`, `ν = e^{−η}`.
    Eta,
}

/// Where each site of an NB model sits in its layout.
pub(crate) struct NbBlocks {
    pub(crate) gene: usize,
    pub(crate) scalar: usize,
    pub(crate) cap: Option<usize>,
    pub(crate) gate: Option<usize>,
    pub(crate) mix: Option<usize>,
    pub(crate) bnb: Option<usize>,
    pub(crate) hier: Vec<HierBlocks>,
    pub(crate) capture: Capture,
}

/// Blocks of one hierarchy: its target, location and scale.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HierBlocks {
    pub(crate) target: usize,
    pub(crate) loc: usize,
    pub(crate) scale: usize,
    pub(crate) local: Option<usize>,
    pub(crate) slab: Option<usize>,
    pub(crate) family: Shrinkage,
    pub(crate) hyper: ShrinkageHyper,
}

/// Which NB model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Nbdm,
    Nbvcp,
    Zinb,
    Zinbvcp,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Nbdm,
        Variant::Nbvcp,
        Variant::Zinb,
        Variant::Zinbvcp,
    ];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "nbdm" => Variant::Nbdm,
            "nbvcp" => Variant::Nbvcp,
            "zinb" => Variant::Zinb,
            "zinbvcp" => Variant::Zinbvcp,
            _ => {
                return Err(CoreError::arg(
                    "model",
                    format!("unknown NB-family model '{s}'"),
                ))
            }
        })
    }
    pub fn has_capture(self) -> bool {
        matches!(self, Variant::Nbvcp | Variant::Zinbvcp)
    }
    pub fn has_gate(self) -> bool {
        matches!(self, Variant::Zinb | Variant::Zinbvcp)
    }
    pub fn name(self) -> &'static str {
        match self {
            Variant::Nbdm => "nbdm",
            Variant::Nbvcp => "nbvcp",
            Variant::Zinb => "zinb",
            Variant::Zinbvcp => "zinbvcp",
        }
    }
}

/// Which quantities are sampled (the rest are derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameterization {
    /// `p`, `r`.
    Canonical,
    /// `p`, `mu`; `r = mu (1−p)/p`.
    MeanProb,
    /// `phi`, `mu`; `r = mu·phi`, `p = 1/(1+phi)`.
    MeanOdds,
}

impl Parameterization {
    pub const ALL: [Parameterization; 3] = [
        Parameterization::Canonical,
        Parameterization::MeanProb,
        Parameterization::MeanOdds,
    ];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "canonical" | "standard" => Parameterization::Canonical,
            "mean_prob" | "linked" => Parameterization::MeanProb,
            "mean_odds" | "odds_ratio" => Parameterization::MeanOdds,
            _ => {
                return Err(CoreError::arg(
                    "parameterization",
                    format!("unknown parameterization '{s}'"),
                ))
            }
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Parameterization::Canonical => "canonical",
            Parameterization::MeanProb => "mean_prob",
            Parameterization::MeanOdds => "mean_odds",
        }
    }
    pub fn gene_param(self) -> &'static str {
        if self == Parameterization::Canonical {
            "r"
        } else {
            "mu"
        }
    }
    pub fn scalar_param(self) -> &'static str {
        if self == Parameterization::MeanOdds {
            "phi"
        } else {
            "p"
        }
    }
    pub fn capture_param(self) -> &'static str {
        if self == Parameterization::MeanOdds {
            "phi_capture"
        } else {
            "p_capture"
        }
    }
}

/// Biology-informed capture prior `η_c ~ TruncN(ln M0 − ln L_c, σ_M, low = 0)`, `ν_c = e^{−η_c}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapturePrior {
    pub ln_m0: f64,
    pub sigma: f64,
}

/// Gene-level shrinkage family of a hierarchical prior
/// (`priors = list(probability = "gaussian")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shrinkage {
    /// `x_j ~ N(loc, softplus(s))`, `loc` and `s` sampled.
    Gaussian,
    /// Regularised horseshoe: `x_j ~ N(loc, τ c λ_j / sqrt(c² + τ²λ_j²))`,
    /// `τ ~ HalfCauchy(1)`, `λ_j ~ HalfCauchy(1)`, `c² ~ InvGamma(2, 8)`.
    Horseshoe,
    /// Normal–exponential–gamma: `x_j ~ N(loc, sqrt(ψ_j))`,
    /// `ψ_j ~ Gamma(1, rate ζ)`, `ζ ~ Gamma(1, rate 1)`.
    Neg,
}

impl Shrinkage {
    pub fn parse(s: &str, arg: &str) -> Result<Self> {
        match s {
            "gaussian" => Ok(Shrinkage::Gaussian),
            "horseshoe" => Ok(Shrinkage::Horseshoe),
            "neg" => Ok(Shrinkage::Neg),
            other => Err(CoreError::arg(
                arg,
                format!("unknown shrinkage family \"{other}\" (use \"gaussian\", \"horseshoe\" or \"neg\")"),
            )),
        }
    }
}

/// Hyper-parameters of the sparse families (the original's defaults): the
/// horseshoe's global scale `τ ~ HalfCauchy(tau0)` and slab
/// `c² ~ InvGamma(slab_df/2, slab_df·slab_scale²/2)`; NEG's
/// `ζ ~ Gamma(a, rate tau)`, `ψ_j ~ Gamma(u, rate ζ)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShrinkageHyper {
    pub tau0: f64,
    pub slab_df: f64,
    pub slab_scale: f64,
    pub u: f64,
    pub a: f64,
    pub tau: f64,
}

impl Default for ShrinkageHyper {
    fn default() -> Self {
        ShrinkageHyper {
            tau0: 1.0,
            slab_df: 4.0,
            slab_scale: 2.0,
            u: 1.0,
            a: 1.0,
            tau: 1.0,
        }
    }
}

impl ShrinkageHyper {
    /// `(shape, scale)` of the horseshoe slab's inverse gamma.
    pub fn slab(&self) -> (f64, f64) {
        (
            0.5 * self.slab_df,
            0.5 * self.slab_df * self.slab_scale * self.slab_scale,
        )
    }
}

/// A mixture over cells: every cell's whole gene vector comes from one of
/// `k` components; `gene`/`scalar`/`gate` say which parameters get a
/// component axis (capture is always shared).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixture {
    pub k: usize,
    pub gene: bool,
    pub scalar: bool,
    pub gate: bool,
    /// Symmetric Dirichlet concentration of the mixing weights.
    pub concentration: f64,
}

/// Everything that defines an NB-family model apart from the data.
#[derive(Debug, Clone, PartialEq)]
pub struct NbSpec {
    pub variant: Variant,
    pub param: Parameterization,
    pub unconstrained: bool,
    /// Link for positive parameters when `unconstrained` (constrained ones use Exp, i.e. LogNormal).
    pub positive_link: Link,
    /// Priors by sampled-site name: "r"/"mu", "p"/"phi", "p_capture"/"phi_capture", "gate".
    pub priors: Vec<(String, Prior)>,
    pub capture_prior: Option<CapturePrior>,
    pub mixture: Option<Mixture>,
    /// Gene-level hierarchical priors (see [`NbSpec::add_hierarchy`]).
    pub hierarchies: Vec<Hierarchy>,
    /// Beta-negative-binomial observations with per-gene excess dispersion
    /// `ω_g` (site `bnb_concentration`; see [`NbSpec::set_bnb`]).
    pub bnb: bool,
    /// Cells grouped into datasets (`dataset_key`; see [`NbSpec::set_datasets`]).
    pub datasets: Option<Datasets>,
}

/// How `p` varies across datasets (`prob_dataset_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetP {
    /// One `p` (or one per gene) for all datasets.
    Shared,
    /// One `p^(d)` per dataset.
    Scalar,
    /// One `p_g^(d)` per dataset and gene.
    GeneSpecific,
}

/// Cells grouped into `n` datasets (batches, samples, donors): the parameters
/// with a dataset hierarchy get one row per dataset, and a cell's likelihood
/// reads its own dataset's row, so each dataset is a known mixture component.
#[derive(Debug, Clone, PartialEq)]
pub struct Datasets {
    pub n: usize,
    /// Dataset of each cell, `0..n`.
    pub cell: Vec<u32>,
    /// The gene parameter (`mu`, or `r` under canonical) differs by dataset.
    pub mean: bool,
    pub p: DatasetP,
    /// The zero-inflation gate differs by dataset (and gene).
    pub gate: bool,
}

impl Datasets {
    /// Row of dataset `d` in the gene block (`d·G`, or 0 when shared).
    pub fn gene_row(&self, d: usize, n_genes: usize) -> usize {
        if self.mean {
            d * n_genes
        } else {
            0
        }
    }
}

/// A centred hierarchy `x_j ~ N(loc, softplus(s))` on the unconstrained
/// coordinates of a sampled site; `loc` and `s` are sampled sites too.
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    /// The site it shrinks: the scalar parameter (made gene-specific),
    /// `gate`, or the gene parameter of a mixture.
    pub target: String,
    pub family: Shrinkage,
    pub loc: String,
    /// The scale site (gaussian), the global scale `τ` (horseshoe) or the
    /// rate `ζ` (NEG).
    pub scale: String,
    /// Local scales `λ_j` (horseshoe) or variances `ψ_j` (NEG), one per
    /// target coordinate.
    pub local: Option<String>,
    /// The slab `c²` (horseshoe).
    pub slab: Option<String>,
    /// One location per gene (shared by the components) instead of one.
    pub loc_per_gene: bool,
    /// Shrinks the dataset rows of the target toward a common location.
    pub dataset: bool,
    pub hyper: ShrinkageHyper,
}

impl NbSpec {
    /// The spec's default priors for this variant and parameterization.
    pub fn new(
        variant: Variant,
        param: Parameterization,
        unconstrained: bool,
        positive_link: Link,
    ) -> Self {
        let mut priors = Vec::new();
        let n01 = Prior::Normal {
            loc: 0.0,
            scale: 1.0,
        };
        let gene = if unconstrained {
            n01
        } else {
            Prior::LogNormal {
                loc: 0.0,
                scale: 1.0,
            }
        };
        priors.push((param.gene_param().to_string(), gene));
        let scalar = match (param, unconstrained) {
            (_, true) => n01,
            (Parameterization::MeanOdds, false) => Prior::BetaPrime { a: 1.0, b: 1.0 },
            _ => Prior::Beta { a: 1.0, b: 1.0 },
        };
        priors.push((param.scalar_param().to_string(), scalar));
        if variant.has_capture() {
            let cap = match (param, unconstrained) {
                (_, true) => n01,
                (Parameterization::MeanOdds, false) => Prior::BetaPrime { a: 1.0, b: 1.0 },
                _ => Prior::Beta { a: 1.0, b: 1.0 },
            };
            priors.push((param.capture_param().to_string(), cap));
        }
        if variant.has_gate() {
            let gate = if unconstrained {
                Prior::Normal {
                    loc: -2.0,
                    scale: 1.0,
                }
            } else {
                Prior::Beta { a: 1.0, b: 9.0 }
            };
            priors.push(("gate".to_string(), gate));
        }
        NbSpec {
            variant,
            param,
            unconstrained,
            positive_link,
            priors,
            capture_prior: None,
            mixture: None,
            hierarchies: Vec::new(),
            bnb: false,
            datasets: None,
        }
    }

    /// Beta-negative-binomial observations (`overdispersion = "bnb"`): the
    /// success probability of each count is `Beta(α, κ_g)` around `p̂`,
    /// `κ_g = 2 + (r_g + 1)/ω_g`, `α = p̂(κ_g − 1)/(1 − p̂)`, which keeps the
    /// mean `r p̂/(1 − p̂)` and multiplies the NB variance by about `1 + ω_g`.
    /// `ω_g = softplus(x_g)` with a gene-level hierarchy on `x_g` (gaussian:
    /// location `~ N(0, 1)`, scale `softplus(N(0, 1))`; horseshoe and NEG:
    /// location `~ N(−5, 1)`, as in the original). In a mixture `ω_g` is
    /// shared by the components: it is what a gene's spread exceeds once
    /// the cell's component is known.
    pub fn set_bnb(&mut self, family: Shrinkage) -> Result<()> {
        if self.bnb {
            return Ok(());
        }
        self.bnb = true;
        self.priors
            .push(("bnb_concentration".to_string(), Prior::Flat));
        self.add_hierarchy("bnb_concentration", family)
    }

    fn require_gate(&self) -> Result<()> {
        if self.variant.has_gate() {
            return Ok(());
        }
        Err(CoreError::arg(
            "priors",
            format!(
                "a `zero_inflation` hierarchy needs a zero-inflated model, not '{}'",
                self.variant.name()
            ),
        ))
    }

    /// Whether `p` (`φ` under mean_odds) differs by gene.
    pub fn gene_specific_p(&self) -> bool {
        let sp = self.param.scalar_param();
        self.hierarchies
            .iter()
            .any(|h| h.target == sp && !h.dataset)
            || self
                .datasets
                .as_ref()
                .is_some_and(|d| d.p == DatasetP::GeneSpecific)
    }

    /// Groups the cells into `n` datasets (`cell[c]` in `0..n`), before any
    /// dataset hierarchy is added. Not with mixtures (yet). With BNB, the
    /// excess dispersion `ω_g` is the gene's in every dataset.
    pub fn set_datasets(&mut self, cell: Vec<u32>, n: usize) -> Result<()> {
        if n == 0 || cell.iter().any(|&d| d as usize >= n) {
            return Err(CoreError::arg(
                "dataset_key",
                format!("dataset codes must lie in 1..{n}"),
            ));
        }
        if self.mixture.is_some() {
            return Err(CoreError::arg(
                "dataset_key",
                "dataset hierarchies with a mixture model are not available yet",
            ));
        }
        self.datasets = Some(Datasets {
            n,
            cell,
            mean: false,
            p: DatasetP::Shared,
            gate: false,
        });
        Ok(())
    }

    /// Gives a parameter one row per dataset with a hierarchy that shrinks
    /// the rows toward a common location (family `family` on the
    /// unconstrained coordinates, as in [`NbSpec::add_hierarchy`]):
    /// - the gene parameter (`mu`, or `r` under canonical) gets `mu_g^(d)`,
    ///   `log mu_g^(d) ~ N(loc_g, s)`, `loc_g ~ N(0, 1)`, `s ~ N(−2, 0.5)`
    ///   through softplus; the link is `exp` whatever `positive_transform`
    ///   says, so dataset effects are multiplicative, as in the original;
    /// - the scalar parameter (`p`, or `φ` under mean_odds) gets `p^(d)`
    ///   (`mode` Scalar, one location) or `p_g^(d)` (GeneSpecific, one
    ///   location per gene), `loc ~ N(0, 1)`, `s ~ N(0, 0.5)`;
    /// - the gate (zero-inflated models) gets `gate_g^(d)` around one
    ///   location `~ N(−5, 0.01)` with scale `softplus(N(−2, 0.5))`.
    pub fn add_dataset_hierarchy(
        &mut self,
        site: &str,
        family: Shrinkage,
        mode: DatasetP,
    ) -> Result<()> {
        if self.datasets.is_none() {
            return Err(CoreError::arg(
                "priors",
                "a dataset-level prior needs `dataset_key`",
            ));
        }
        let n01 = |loc: f64, scale: f64| Prior::Normal { loc, scale };
        let (loc, scale, loc_prior, scale_prior, per_gene) = if site == self.param.gene_param() {
            let (l, s) = if self.param == Parameterization::Canonical {
                ("log_r_dataset_loc", "log_r_dataset_scale")
            } else {
                ("log_mu_dataset_loc", "log_mu_dataset_scale")
            };
            (l, s, n01(0.0, 1.0), n01(-2.0, 0.5), true)
        } else if site == self.param.scalar_param() {
            if mode == DatasetP::Shared {
                return Err(CoreError::arg(
                    "prob_dataset_mode",
                    "must be \"scalar\" or \"gene_specific\"",
                ));
            }
            let (l, s) = if self.param == Parameterization::MeanOdds {
                ("log_phi_dataset_loc", "log_phi_dataset_scale")
            } else {
                ("logit_p_dataset_loc", "logit_p_dataset_scale")
            };
            (
                l,
                s,
                n01(0.0, 1.0),
                n01(0.0, 0.5),
                mode == DatasetP::GeneSpecific,
            )
        } else if site == "gate" {
            self.require_gate()?;
            // The original's: one location for every dataset and gene, held
            // near -5 (N(-5, 0.01)).
            (
                "logit_gate_dataset_loc",
                "logit_gate_dataset_scale",
                n01(-5.0, 0.01),
                n01(-2.0, 0.5),
                false,
            )
        } else {
            return Err(CoreError::arg(
                "priors",
                format!(
                    "no dataset-level prior is available for '{site}' (only the mean, the probability and the gate)"
                ),
            ));
        };
        self.push_hierarchy(
            site,
            family,
            (loc, scale, loc_prior, scale_prior),
            per_gene,
            true,
        )?;
        // Only once the hierarchy is in: a refused one leaves the spec as it was.
        let (gene, scalar) = (
            site == self.param.gene_param(),
            site == self.param.scalar_param(),
        );
        let ds = self.datasets.as_mut().expect("checked above");
        if gene {
            ds.mean = true;
        } else if scalar {
            ds.p = mode;
        } else {
            ds.gate = true;
        }
        Ok(())
    }

    /// Puts a gene-level hierarchical prior on a sampled site, on its
    /// unconstrained coordinates `x_j ~ N(loc, s_j)` (`s_j` by family, see
    /// [`Shrinkage`]; the scale priors below are the gaussian family's):
    /// - the scalar parameter (`p`, or `φ` under mean_odds) becomes
    ///   gene-specific, `loc ~ N(0, 1)`, `s ~ N(0, 0.5)` (in a mixture one
    ///   value per component and gene when `p` is component-specific, else
    ///   one per gene);
    /// - `gate` (zero-inflated models): `loc ~ N(−5, 1)`, `s ~ N(−2, 0.5)`,
    ///   shared by all genes (and components);
    /// - the gene parameter (`r` or `mu`) of a mixture in which it is
    ///   component-specific: one location per gene, `loc_g ~ N(0, 1)`,
    ///   `s ~ N(−2, 0.5)`, so components share strength gene by gene.
    ///
    /// The hierarchy lives on the unconstrained scale, so the model becomes
    /// unconstrained (every other parameter takes its unconstrained default
    /// prior).
    pub fn add_hierarchy(&mut self, site: &str, family: Shrinkage) -> Result<()> {
        let n01 = |loc: f64, scale: f64| Prior::Normal { loc, scale };
        let (loc, scale, loc_prior, scale_prior, per_gene) = if site == self.param.scalar_param() {
            let (l, s) = if self.param == Parameterization::MeanOdds {
                ("log_phi_loc", "log_phi_scale")
            } else {
                ("logit_p_loc", "logit_p_scale")
            };
            (l, s, n01(0.0, 1.0), n01(0.0, 0.5), false)
        } else if site == "gate" {
            self.require_gate()?;
            (
                "logit_gate_loc",
                "logit_gate_scale",
                n01(-5.0, 1.0),
                n01(-2.0, 0.5),
                false,
            )
        } else if site == "bnb_concentration" {
            if !self.bnb {
                return Err(CoreError::arg("priors", "`overdispersion` needs \"bnb\""));
            }
            // The original names and centres the sparse families differently.
            if family == Shrinkage::Gaussian {
                (
                    "bnb_omega_hyper_loc",
                    "bnb_omega_hyper_scale",
                    n01(0.0, 1.0),
                    n01(0.0, 1.0),
                    false,
                )
            } else {
                (
                    "bnb_concentration_loc",
                    "bnb_concentration_scale",
                    n01(-5.0, 1.0),
                    n01(0.0, 1.0),
                    false,
                )
            }
        } else if site == self.param.gene_param() {
            if !self.mixture.is_some_and(|m| m.gene) {
                return Err(CoreError::arg(
                    "priors",
                    "a `mean_expression` hierarchy shares a gene's value across mixture \
                     components: it needs n_components >= 2 with the gene parameter \
                     component-specific",
                ));
            }
            let (l, s) = if self.param == Parameterization::Canonical {
                ("log_r_loc", "log_r_scale")
            } else {
                ("log_mu_loc", "log_mu_scale")
            };
            (l, s, n01(0.0, 1.0), n01(-2.0, 0.5), true)
        } else {
            return Err(CoreError::arg(
                "priors",
                format!("no hierarchical prior is available for '{site}'"),
            ));
        };
        if site == self.param.scalar_param()
            && self
                .datasets
                .as_ref()
                .is_some_and(|d| d.p != DatasetP::Shared)
        {
            return Err(CoreError::arg(
                "priors",
                "a gene-level and a dataset-level `probability` family cannot be set simultaneously",
            ));
        }
        self.push_hierarchy(
            site,
            family,
            (loc, scale, loc_prior, scale_prior),
            per_gene,
            false,
        )
    }

    /// Records a hierarchy: names its sites, makes the model unconstrained
    /// and flattens the target's own prior (the hierarchy replaces it).
    fn push_hierarchy(
        &mut self,
        site: &str,
        family: Shrinkage,
        (loc, scale, loc_prior, scale_prior): (&str, &str, Prior, Prior),
        per_gene: bool,
        dataset: bool,
    ) -> Result<()> {
        if let Some(h) = self.hierarchies.iter().find(|h| h.target == site) {
            return Err(CoreError::arg(
                "priors",
                if h.dataset != dataset {
                    format!("a gene-level and a dataset-level family on '{site}' cannot be set simultaneously")
                } else {
                    format!("'{site}' already has a hierarchical prior")
                },
            ));
        }
        if !self.unconstrained {
            self.unconstrained = true;
            let fresh = NbSpec::new(self.variant, self.param, true, self.positive_link).priors;
            for (n, p) in self.priors.iter_mut() {
                if let Some((_, q)) = fresh.iter().find(|(m, _)| m == n) {
                    *p = *q;
                }
            }
        }
        for (n, p) in self.priors.iter_mut() {
            if n == site {
                *p = Prior::Flat;
            }
        }
        // Sparse families: the global scale, the local scales and the slab
        // (horseshoe) have joint priors; they are named after the location.
        let base = loc.trim_end_matches("_loc");
        let (scale, local, slab) = match family {
            Shrinkage::Gaussian => (scale.to_string(), None, None),
            Shrinkage::Horseshoe => (
                format!("{base}_tau"),
                Some(format!("{base}_lambda")),
                Some(format!("{base}_c2")),
            ),
            Shrinkage::Neg => (format!("{base}_zeta"), Some(format!("{base}_psi")), None),
        };
        self.priors.push((loc.to_string(), loc_prior));
        if family == Shrinkage::Gaussian {
            self.priors.push((scale.clone(), scale_prior));
        } else {
            for n in [Some(&scale), local.as_ref(), slab.as_ref()]
                .into_iter()
                .flatten()
            {
                self.priors.push((n.clone(), Prior::Flat));
            }
        }
        self.hierarchies.push(Hierarchy {
            target: site.to_string(),
            family,
            loc: loc.to_string(),
            scale,
            local,
            slab,
            loc_per_gene: per_gene,
            dataset,
            hyper: ShrinkageHyper::default(),
        });
        Ok(())
    }

    /// Sets one hyper-parameter (`tau0`, `slab_df`, `slab_scale` of the
    /// horseshoe; `u`, `a`, `tau` of NEG) of the hierarchy on `site`.
    pub fn set_hierarchy_hyper(&mut self, site: &str, name: &str, value: f64) -> Result<()> {
        let h = self
            .hierarchies
            .iter_mut()
            .find(|h| h.target == site)
            .ok_or_else(|| CoreError::arg("priors", format!("'{site}' has no hierarchy")))?;
        if !(value > 0.0 && value.is_finite()) {
            return Err(CoreError::arg(
                "priors",
                format!("`{name}` must be a positive number, not {value}"),
            ));
        }
        let slot = match (h.family, name) {
            (Shrinkage::Horseshoe, "tau0") => &mut h.hyper.tau0,
            (Shrinkage::Horseshoe, "slab_df") => &mut h.hyper.slab_df,
            (Shrinkage::Horseshoe, "slab_scale") => &mut h.hyper.slab_scale,
            (Shrinkage::Neg, "u") => &mut h.hyper.u,
            (Shrinkage::Neg, "a") => &mut h.hyper.a,
            (Shrinkage::Neg, "tau") => &mut h.hyper.tau,
            _ => {
                return Err(CoreError::arg(
                    "priors",
                    format!("the {:?} family has no hyper-parameter `{name}`", h.family),
                ))
            }
        };
        *slot = value;
        Ok(())
    }

    /// Replaces the hyper-parameters of a sampled site's default prior family.
    pub fn set_prior(&mut self, site: &str, a: f64, b: f64) -> Result<()> {
        if site == "eta_capture" {
            if !self.variant.has_capture() {
                return Err(CoreError::arg(
                    "priors",
                    format!(
                        "a capture prior needs a variable-capture model (nbvcp, zinbvcp), not '{}'",
                        self.variant.name()
                    ),
                ));
            }
            if !(b > 0.0) || !a.is_finite() {
                return Err(CoreError::arg(
                    "priors",
                    "capture_efficiency must be c(log(M0), sigma) with sigma > 0",
                ));
            }
            self.capture_prior = Some(CapturePrior { ln_m0: a, sigma: b });
            return Ok(());
        }
        let known: Vec<String> = self.priors.iter().map(|(n, _)| n.clone()).collect();
        let (variant, param) = (self.variant, self.param);
        let entry = self
            .priors
            .iter_mut()
            .find(|(n, _)| n == site)
            .ok_or_else(|| {
                CoreError::arg(
                    "priors",
                    format!(
                        "'{site}' is not a sampled parameter of {} ({}); sampled: {}",
                        variant.name(),
                        param.name(),
                        known.join(", ")
                    ),
                )
            })?;
        if entry.1 == Prior::Flat {
            return Err(CoreError::arg(
                "priors",
                format!("'{site}' has a hierarchical prior here; set its hyper-priors instead"),
            ));
        }
        let new = match entry.1 {
            Prior::Normal { .. } => Prior::Normal { loc: a, scale: b },
            Prior::LogNormal { .. } => Prior::LogNormal { loc: a, scale: b },
            Prior::Beta { .. } => Prior::Beta { a, b },
            Prior::BetaPrime { .. } => Prior::BetaPrime { a, b },
            Prior::TruncNormal0 { .. } => Prior::TruncNormal0 { loc: a, scale: b },
            Prior::Flat => Prior::Flat,
        };
        let ok = match new {
            Prior::Normal { loc, scale } | Prior::LogNormal { loc, scale } => {
                loc.is_finite() && scale > 0.0
            }
            Prior::Beta { a, b } | Prior::BetaPrime { a, b } => a > 0.0 && b > 0.0,
            Prior::TruncNormal0 { .. } | Prior::Flat => true,
        };
        if !ok || !b.is_finite() {
            return Err(CoreError::arg(
                "priors",
                format!("invalid hyper-parameters c({a}, {b}) for '{site}'"),
            ));
        }
        entry.1 = new;
        Ok(())
    }

    pub(crate) fn prior_of(&self, site: &str) -> Prior {
        self.priors
            .iter()
            .find(|(n, _)| n == site)
            .map(|(_, p)| *p)
            .expect("prior for every sampled site")
    }

    /// Makes this a `k`-component mixture over the named sampled sites
    /// (gene param, scalar param, "gate").
    pub fn set_mixture(&mut self, k: usize, sites: &[&str], concentration: f64) -> Result<()> {
        if !self.hierarchies.is_empty() {
            return Err(CoreError::arg(
                "priors",
                "set the mixture before any hierarchical prior",
            ));
        }
        if self.datasets.is_some() {
            return Err(CoreError::arg(
                "n_components",
                "mixtures with dataset hierarchies are not available yet",
            ));
        }
        if k < 2 {
            return Err(CoreError::arg(
                "n_components",
                "must be at least 2 for a mixture model",
            ));
        }
        if !(concentration > 0.0) {
            return Err(CoreError::arg(
                "priors",
                "the mixing concentration must be positive",
            ));
        }
        let mut m = Mixture {
            k,
            gene: false,
            scalar: false,
            gate: false,
            concentration,
        };
        for &site in sites {
            if site == self.param.gene_param() {
                m.gene = true;
            } else if site == self.param.scalar_param() {
                m.scalar = true;
            } else if site == "gate" && self.variant.has_gate() {
                m.gate = true;
            } else {
                return Err(CoreError::arg(
                    "mixture_params",
                    format!(
                        "'{site}' cannot be component-specific in {} ({})",
                        self.variant.name(),
                        self.param.name()
                    ),
                ));
            }
        }
        if !(m.gene || m.scalar || m.gate) {
            return Err(CoreError::arg(
                "mixture_params",
                "at least one parameter must be component-specific",
            ));
        }
        self.mixture = Some(m);
        Ok(())
    }

    /// Number of mixture components (1 without a mixture).
    pub fn n_components(&self) -> usize {
        self.mixture.map_or(1, |m| m.k)
    }

    /// Link of the sampled positive parameters.
    pub fn pos_link(&self) -> Link {
        if self.unconstrained {
            self.positive_link
        } else {
            Link::Exp
        }
    }
}

impl NbSpec {
    /// The unconstrained layout of this model for `n_genes` genes and `n_cells`
    /// cells (what every engine samples or optimises).
    pub fn layout(&self, n_genes: usize, n_cells: usize) -> Layout {
        self.build_layout(n_genes, n_cells).0
    }

    pub(crate) fn build_layout(&self, n_genes: usize, n_cells: usize) -> (Layout, NbBlocks) {
        let mut layout = Layout::default();
        let pos = self.pos_link();
        let mix = self.mixture;
        let kk = |on: bool| mix.filter(|_| on).map_or(1, |m| m.k);
        let (k_gene, k_scalar, k_gate) = (
            kk(mix.is_some_and(|m| m.gene)),
            kk(mix.is_some_and(|m| m.scalar)),
            kk(mix.is_some_and(|m| m.gate)),
        );
        let ds = self.datasets.as_ref();
        // Dataset rows play the part of components (each cell's is known).
        let (k_gene, gene_link) = match ds {
            Some(d) if d.mean => (d.n, Link::Exp),
            _ => (k_gene, pos),
        };
        let gene = layout.push(
            self.param.gene_param(),
            BlockKind::Gene,
            k_gene * n_genes,
            gene_link,
            k_gene,
        );
        let scalar_link = if self.param == Parameterization::MeanOdds {
            pos
        } else {
            Link::Sigmoid
        };
        let d_p = ds.map_or((1, DatasetP::Shared), |d| (d.n, d.p));
        let scalar = if d_p.1 == DatasetP::Scalar {
            layout.push(
                self.param.scalar_param(),
                BlockKind::Scalar,
                d_p.0,
                scalar_link,
                d_p.0,
            )
        } else if self.gene_specific_p() {
            let rows = if d_p.1 == DatasetP::GeneSpecific {
                d_p.0
            } else {
                k_scalar
            };
            layout.push(
                self.param.scalar_param(),
                BlockKind::Gene,
                rows * n_genes,
                scalar_link,
                rows,
            )
        } else {
            layout.push(
                self.param.scalar_param(),
                BlockKind::Scalar,
                k_scalar,
                scalar_link,
                k_scalar,
            )
        };
        let (cap, capture) = if !self.variant.has_capture() {
            (None, Capture::None)
        } else if self.capture_prior.is_some() {
            let b = layout.push("eta_capture", BlockKind::Cell, n_cells, Link::Softplus, 1);
            (Some(b), Capture::Eta)
        } else if self.param == Parameterization::MeanOdds {
            let b = layout.push("phi_capture", BlockKind::Cell, n_cells, pos, 1);
            (Some(b), Capture::Phi(pos))
        } else {
            let b = layout.push("p_capture", BlockKind::Cell, n_cells, Link::Sigmoid, 1);
            (Some(b), Capture::Nu)
        };
        let k_gate = match ds {
            Some(d) if d.gate => d.n,
            _ => k_gate,
        };
        let gate = self.variant.has_gate().then(|| {
            layout.push(
                "gate",
                BlockKind::Gene,
                k_gate * n_genes,
                Link::Sigmoid,
                k_gate,
            )
        });
        // Mixing weights w = softmax([z, 0]) over K − 1 free coordinates.
        let mix = mix.map(|m| {
            layout.push(
                "mixing_weights",
                BlockKind::Simplex,
                m.k - 1,
                Link::Identity,
                m.k,
            )
        });
        let bnb = self.bnb.then(|| {
            layout.push(
                "bnb_concentration",
                BlockKind::Gene,
                n_genes,
                Link::Softplus,
                1,
            )
        });
        // Hyper-parameters of the hierarchies, after every other block.
        let hier = self
            .hierarchies
            .iter()
            .map(|h| {
                let target = match h.target.as_str() {
                    "gate" => gate.expect("gate hierarchies need a gate"),
                    "bnb_concentration" => bnb.expect("a bnb hierarchy needs bnb"),
                    t if t == self.param.scalar_param() => scalar,
                    _ => gene,
                };
                let n_loc = if h.loc_per_gene { n_genes } else { 1 };
                let kind = if h.loc_per_gene {
                    BlockKind::Gene
                } else {
                    BlockKind::Scalar
                };
                let loc = layout.push(&h.loc, kind, n_loc, Link::Identity, 1);
                // Gaussian scales are softplus-linked as in the original; the
                // heavy-tailed scales of the sparse families are log-linked.
                let scale_link = if h.family == Shrinkage::Gaussian {
                    Link::Softplus
                } else {
                    Link::Exp
                };
                let scale = layout.push(&h.scale, BlockKind::Scalar, 1, scale_link, 1);
                let tb = layout.blocks[target].clone();
                let local = h
                    .local
                    .as_ref()
                    .map(|n| layout.push(n, BlockKind::Gene, tb.len, Link::Exp, tb.n_comp));
                let slab = h
                    .slab
                    .as_ref()
                    .map(|n| layout.push(n, BlockKind::Scalar, 1, Link::Exp, 1));
                HierBlocks {
                    target,
                    loc,
                    scale,
                    local,
                    slab,
                    family: h.family,
                    hyper: h.hyper,
                }
            })
            .collect();
        (
            layout,
            NbBlocks {
                gene,
                scalar,
                cap,
                gate,
                mix,
                bnb,
                hier,
                capture,
            },
        )
    }
}
