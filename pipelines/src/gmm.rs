//! The exact denoiser of a Gaussian mixture: ground truth for every sampler and strategy.
//!
//! Data `p0 = Σ_k π_k N(μ_k, s_k² I)` in `d` dimensions, noised as `x_t = a·x0 + σ·ε`. Then
//! `p_t = Σ_k π_k N(a·μ_k, (a²s_k² + σ²) I)` and the posterior mean is exact:
//!
//! ```text
//! w_k(x_t) ∝ π_k · N(x_t; a·μ_k, (a²s_k² + σ²) I)
//! E[x0 | x_t] = Σ_k w_k · (μ_k + a·s_k² / (a²s_k² + σ²) · (x_t − a·μ_k))
//! ```
//!
//! (ALGORITHMS §10.0). Conditioning on a class restricts the sum to that class's components, so
//! the conditional and unconditional denoisers are both exact and CFG/guidance effects can be
//! compared with theory. The model error is zero: every discrepancy a test sees is the
//! algorithm's or the discretisation's.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use steerdiff_guidance::{
    BetaSchedule, Condition, Denoiser, NoisePath, Parameterization, StepPoint, VpPath,
};

use crate::{Error, Result};

/// One mixture component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Mixture weight `π_k` (> 0; weights are normalised).
    pub weight: f64,
    /// Mean `μ_k`, `dim` numbers.
    pub mean: Vec<f64>,
    /// Isotropic standard deviation `s_k` (> 0).
    pub std: f64,
    /// Class label (default 0).
    #[serde(default)]
    pub class: u32,
}

/// A mixture as written in a spec file:
/// `{"dim": 2, "components": [{"weight": 0.8, "mean": [-2, 0], "std": 0.5, "class": 0}, …]}`,
/// optionally with `"class_names": ["left", "right"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmmSpec {
    /// Dimension `d`.
    pub dim: usize,
    /// The components.
    pub components: Vec<Component>,
    /// Optional names of the classes, indexed by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
}

impl GmmSpec {
    /// Parses and validates a JSON spec.
    pub fn from_json(text: &str) -> Result<Self> {
        let spec: GmmSpec = serde_json::from_str(text)
            .map_err(|e| Error::Spec(format!("malformed GMM spec: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks dimensions, weights and standard deviations.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::Spec("GMM spec: `dim` must be ≥ 1".into()));
        }
        if self.components.is_empty() {
            return Err(Error::Spec("GMM spec: `components` is empty".into()));
        }
        for (k, c) in self.components.iter().enumerate() {
            if c.mean.len() != self.dim {
                return Err(Error::Spec(format!(
                    "GMM spec: component {k} has a mean of length {} but dim is {}",
                    c.mean.len(),
                    self.dim
                )));
            }
            if !(c.weight.is_finite() && c.weight > 0.0) {
                return Err(Error::Spec(format!(
                    "GMM spec: component {k} weight must be a positive number, got {}",
                    c.weight
                )));
            }
            if !(c.std.is_finite() && c.std > 0.0) {
                return Err(Error::Spec(format!(
                    "GMM spec: component {k} std must be a positive number, got {}",
                    c.std
                )));
            }
            if c.mean.iter().any(|m| !m.is_finite()) {
                return Err(Error::Spec(format!(
                    "GMM spec: component {k} mean is not finite"
                )));
            }
        }
        let total: f64 = self.components.iter().map(|c| c.weight).sum();
        if !total.is_finite() {
            return Err(Error::Spec(format!(
                "GMM spec: the weights add up to {total}; give weights whose sum is a finite \
                 number (they are normalised, so 0.8 and 0.2 do as well as 8e300 and 2e300)"
            )));
        }
        if let Some(names) = &self.class_names {
            let max = self.components.iter().map(|c| c.class).max().unwrap_or(0) as usize;
            if names.len() <= max {
                return Err(Error::Spec(format!(
                    "GMM spec: {} class_names given but labels go up to {max}",
                    names.len()
                )));
            }
        }
        Ok(())
    }

    /// Class labels present, sorted.
    pub fn classes(&self) -> Vec<u32> {
        let mut c: Vec<u32> = self.components.iter().map(|c| c.class).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// Resolves a class given by label number or by name.
    pub fn class_by_name(&self, name: &str) -> Result<u32> {
        if let Some(names) = &self.class_names {
            if let Some(i) = names.iter().position(|n| n == name) {
                return Ok(i as u32);
            }
        }
        let classes = self.classes();
        match name.parse::<u32>() {
            Ok(c) if classes.contains(&c) => Ok(c),
            _ => Err(Error::Spec(format!(
                "unknown class `{name}`; this mixture has classes {}",
                self.class_list()
            ))),
        }
    }

    fn class_list(&self) -> String {
        self.classes()
            .iter()
            .map(|&c| match &self.class_names {
                Some(n) => format!("{c} ({})", n[c as usize]),
                None => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Normalised mixture weights of the components selected by `cond`.
    fn weights(&self, cond: Condition) -> Vec<f64> {
        let w: Vec<f64> = self
            .components
            .iter()
            .map(|c| match cond {
                Condition::Class(k) if c.class != k => 0.0,
                _ => c.weight,
            })
            .collect();
        let total: f64 = w.iter().sum();
        w.iter().map(|v| v / total).collect()
    }

    /// Log-posterior responsibilities `ln w_k(x_t)` of the components at `x_t = a·x0 + σ·ε`
    /// (`a = 1, σ = 0` gives the clean-data responsibilities used to classify samples).
    pub fn log_responsibilities(&self, x: &[f64], a: f64, sigma: f64, cond: Condition) -> Vec<f64> {
        let prior = self.weights(cond);
        let d = self.dim as f64;
        let logs: Vec<f64> = self
            .components
            .iter()
            .zip(&prior)
            .map(|(c, &pi)| {
                if pi == 0.0 {
                    return f64::NEG_INFINITY;
                }
                let var = a * a * c.std * c.std + sigma * sigma;
                let dist2: f64 = x
                    .iter()
                    .zip(&c.mean)
                    .map(|(xi, m)| (xi - a * m).powi(2))
                    .sum();
                pi.ln() - 0.5 * d * (2.0 * std::f64::consts::PI * var).ln() - 0.5 * dist2 / var
            })
            .collect();
        let lse = steerdiff_guidance::resample::log_sum_exp(&logs);
        logs.iter().map(|l| l - lse).collect()
    }

    /// `ln p_t(x)` of the (class-restricted) mixture at noise level `(a, σ)`.
    pub fn log_density(&self, x: &[f64], a: f64, sigma: f64, cond: Condition) -> f64 {
        let prior = self.weights(cond);
        let d = self.dim as f64;
        let logs: Vec<f64> = self
            .components
            .iter()
            .zip(&prior)
            .map(|(c, &pi)| {
                if pi == 0.0 {
                    return f64::NEG_INFINITY;
                }
                let var = a * a * c.std * c.std + sigma * sigma;
                let dist2: f64 = x
                    .iter()
                    .zip(&c.mean)
                    .map(|(xi, m)| (xi - a * m).powi(2))
                    .sum();
                pi.ln() - 0.5 * d * (2.0 * std::f64::consts::PI * var).ln() - 0.5 * dist2 / var
            })
            .collect();
        steerdiff_guidance::resample::log_sum_exp(&logs)
    }

    /// The exact posterior mean `E[x0 | x_t]`.
    pub fn posterior_mean(&self, x: &[f64], a: f64, sigma: f64, cond: Condition) -> Vec<f64> {
        let logw = self.log_responsibilities(x, a, sigma, cond);
        let mut out = vec![0.0; self.dim];
        for (c, lw) in self.components.iter().zip(logw) {
            let w = lw.exp();
            if w == 0.0 {
                continue;
            }
            let s2 = c.std * c.std;
            let gain = a * s2 / (a * a * s2 + sigma * sigma);
            for (o, (xi, m)) in out.iter_mut().zip(x.iter().zip(&c.mean)) {
                *o += w * (m + gain * (xi - a * m));
            }
        }
        out
    }

    /// The exact tilted target `p0(x)·exp(λ·r(x)) / Z` for `r(x) = −‖x − m‖²/2`, again a
    /// mixture (ALGORITHMS §10.0): component precision `1/s² + λ`, mean
    /// `(μ/s² + λm)/(1/s² + λ)`, weight `∝ π·N(m; μ, (s² + 1/λ) I)`. Class labels are kept.
    pub fn tilted_by_quadratic(&self, m: &[f64], lambda: f64) -> GmmSpec {
        if lambda == 0.0 {
            return self.clone();
        }
        let d = self.dim as f64;
        let logs: Vec<f64> = self
            .components
            .iter()
            .map(|c| {
                let v = c.std * c.std + 1.0 / lambda;
                let dist2: f64 = c.mean.iter().zip(m).map(|(a, b)| (a - b).powi(2)).sum();
                c.weight.ln() - 0.5 * d * v.ln() - 0.5 * dist2 / v
            })
            .collect();
        let lse = steerdiff_guidance::resample::log_sum_exp(&logs);
        let components = self
            .components
            .iter()
            .zip(&logs)
            .map(|(c, l)| {
                let prec = 1.0 / (c.std * c.std) + lambda;
                Component {
                    weight: (l - lse).exp(),
                    mean: c
                        .mean
                        .iter()
                        .zip(m)
                        .map(|(mu, mi)| (mu / (c.std * c.std) + lambda * mi) / prec)
                        .collect(),
                    std: (1.0 / prec).sqrt(),
                    class: c.class,
                }
            })
            .collect();
        GmmSpec {
            dim: self.dim,
            components,
            class_names: self.class_names.clone(),
        }
    }

    /// The component a clean sample most likely came from (max responsibility at σ = 0).
    pub fn component_of(&self, x: &[f64]) -> usize {
        let r = self.log_responsibilities(x, 1.0, 0.0, Condition::Null);
        (0..r.len())
            .max_by(|&i, &j| r[i].total_cmp(&r[j]))
            .unwrap_or(0)
    }

    /// The class a clean sample most likely belongs to (Bayes classifier on clean data).
    pub fn class_of(&self, x: &[f64]) -> u32 {
        let r = self.log_responsibilities(x, 1.0, 0.0, Condition::Null);
        let mut best = (f64::NEG_INFINITY, 0);
        for c in self.classes() {
            let logs: Vec<f64> = self
                .components
                .iter()
                .zip(&r)
                .filter(|(comp, _)| comp.class == c)
                .map(|(_, &l)| l)
                .collect();
            let l = steerdiff_guidance::resample::log_sum_exp(&logs);
            if l > best.0 {
                best = (l, c);
            }
        }
        best.1
    }
}

/// The exact mixture denoiser, predicting `x̂0` (parameterisation `sample`).
#[derive(Debug, Clone)]
pub struct GmmDenoiser {
    /// The mixture.
    pub spec: GmmSpec,
    path: NoisePath,
    name: String,
}

impl GmmDenoiser {
    /// The denoiser on a given path.
    pub fn new(spec: GmmSpec, path: NoisePath, name: impl Into<String>) -> Result<Self> {
        spec.validate()?;
        Ok(GmmDenoiser {
            spec,
            path,
            name: name.into(),
        })
    }

    /// The VP path used for mixtures: DDPM's linear betas 1e-4…0.02 over 1000 steps
    /// (Ho et al. 2020), whose `ᾱ_999 ≈ 4·10⁻⁵` makes `x_T = ε` an accurate start.
    pub fn vp_path() -> NoisePath {
        NoisePath::Vp(VpPath::new(BetaSchedule::Linear, 1e-4, 0.02, 1000, false))
    }
}

impl Denoiser for GmmDenoiser {
    fn name(&self) -> &str {
        &self.name
    }

    fn parameterization(&self) -> Parameterization {
        Parameterization::Sample
    }

    fn path(&self) -> &NoisePath {
        &self.path
    }

    fn sample_shape(&self) -> Vec<usize> {
        vec![self.spec.dim]
    }

    fn forward(
        &self,
        x: &Tensor,
        at: &StepPoint,
        conds: &[Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        let d = self.spec.dim;
        let rows: Vec<Vec<f32>> = x.to_dtype(candle_core::DType::F32)?.to_vec2()?;
        let mut out = Vec::with_capacity(rows.len() * d);
        for (row, &cond) in rows.iter().zip(conds) {
            if let Condition::Class(c) = cond {
                if !self.spec.components.iter().any(|k| k.class == c) {
                    return Err(steerdiff_guidance::Error::InvalidArgument(format!(
                        "class {c} is not in the mixture (classes: {})",
                        self.spec.class_list()
                    )));
                }
            }
            let xr: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            out.extend(
                self.spec
                    .posterior_mean(&xr, at.alpha, at.sigma, cond)
                    .into_iter()
                    .map(|v| v as f32),
            );
        }
        Ok(Tensor::from_vec(out, (rows.len(), d), &Device::Cpu)?.to_device(x.device())?)
    }
}

/// The exact Bayes classifier of a mixture on clean samples: `p(class | x)` from the
/// components' responsibilities at σ = 0. Class `k`'s probability sits at index `k`.
#[derive(Debug, Clone)]
pub struct GmmClassifier {
    /// The mixture.
    pub spec: GmmSpec,
}

impl steerdiff_guidance::Classifier for GmmClassifier {
    fn name(&self) -> &str {
        "gmm-bayes"
    }

    fn log_probs(&self, x0: &Tensor) -> steerdiff_guidance::Result<Vec<Vec<f64>>> {
        let rows: Vec<Vec<f32>> = x0
            .flatten_from(1)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?;
        let k = self
            .spec
            .classes()
            .last()
            .map(|&c| c as usize + 1)
            .unwrap_or(0);
        Ok(rows
            .iter()
            .map(|r| {
                let x: Vec<f64> = r.iter().map(|&v| v as f64).collect();
                let resp = self
                    .spec
                    .log_responsibilities(&x, 1.0, 0.0, Condition::Null);
                (0..k as u32)
                    .map(|c| {
                        let logs: Vec<f64> = self
                            .spec
                            .components
                            .iter()
                            .zip(&resp)
                            .filter(|(comp, _)| comp.class == c)
                            .map(|(_, &l)| l)
                            .collect();
                        steerdiff_guidance::resample::log_sum_exp(&logs)
                    })
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GmmSpec {
        GmmSpec::from_json(
            r#"{"dim": 1, "components": [
                {"weight": 0.8, "mean": [-2], "std": 0.5, "class": 0},
                {"weight": 0.2, "mean": [2], "std": 0.5, "class": 1}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn posterior_mean_matches_numerical_integration() {
        let s = spec();
        let (a, sigma, x) = (0.6, 0.8, 0.3);
        // E[x0|x] = ∫ x0 p0(x0) N(x; a x0, σ²) dx0 / ∫ p0(x0) N(x; a x0, σ²) dx0
        let (mut num, mut den) = (0.0, 0.0);
        let h = 1e-3;
        let mut x0 = -8.0;
        while x0 < 8.0 {
            let p0 = s.log_density(&[x0], 1.0, 0.0, Condition::Null).exp();
            let lik = (-(x - a * x0) * (x - a * x0) / (2.0 * sigma * sigma)).exp();
            num += x0 * p0 * lik * h;
            den += p0 * lik * h;
            x0 += h;
        }
        let exact = s.posterior_mean(&[x], a, sigma, Condition::Null)[0];
        assert!((exact - num / den).abs() < 1e-6, "{exact} vs {}", num / den);
    }

    #[test]
    fn conditioning_restricts_to_the_class() {
        let s = spec();
        let m = s.posterior_mean(&[-3.0], 1.0, 1e-6, Condition::Class(1))[0];
        assert!((m - (-3.0)).abs() < 1e-3);
        let far = s.posterior_mean(&[0.0], 0.0, 1.0, Condition::Class(1))[0];
        assert!((far - 2.0).abs() < 1e-12, "at α = 0 the class mean: {far}");
        assert_eq!(s.class_of(&[1.0]), 1);
        assert_eq!(s.class_of(&[-1.0]), 0);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        for (text, needle) in [
            (
                r#"{"dim": 2, "components": [{"weight": 1, "mean": [0], "std": 1}]}"#,
                "length 1",
            ),
            (
                r#"{"dim": 1, "components": [{"weight": -1, "mean": [0], "std": 1}]}"#,
                "weight",
            ),
            (
                r#"{"dim": 1, "components": [{"weight": 1, "mean": [0], "std": 0}]}"#,
                "std",
            ),
            (r#"{"dim": 1, "components": []}"#, "empty"),
            (
                r#"{"dim": 1, "components": [{"weight": 1e308, "mean": [0], "std": 1},
                    {"weight": 1e308, "mean": [1], "std": 1}]}"#,
                "add up to inf",
            ),
            (
                r#"{"dim": 1, "components": [{"weight": 1, "mean": [0], "std": 1, "colour": 2}]}"#,
                "unknown field",
            ),
            ("{not json", "malformed"),
        ] {
            let err = GmmSpec::from_json(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
