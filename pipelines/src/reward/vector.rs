//! Closed-form rewards on flattened samples, with exact tilted targets for Gaussian mixtures.
//!
//! For `p0 = Σ π_k N(μ_k, s_k² I)` and `r(x) = −‖x − m‖²/2`, the tilted target
//! `p0·exp(λr)` is again a mixture: component precision `1/s_k² + λ`, mean
//! `(μ_k/s_k² + λm)/(1/s_k² + λ)`, weight `∝ π_k N(m; μ_k, (s_k² + 1/λ) I)` (ALGORITHMS §10.0).

use candle_core::{DType, Tensor};
use steerdiff_guidance::{Reward, RewardContext};

/// `r(x) = −‖x − m‖²/2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quadratic {
    /// The target `m`.
    pub target: Vec<f64>,
    name: String,
}

impl Quadratic {
    /// The quadratic reward towards `target`.
    pub fn new(target: Vec<f64>) -> Self {
        let name = format!(
            "quadratic:{}",
            target
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        Quadratic { target, name }
    }
}

/// `r(x) = w·x`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// The weights `w`.
    pub weights: Vec<f64>,
    name: String,
}

impl Linear {
    /// The linear reward with weights `w`.
    pub fn new(weights: Vec<f64>) -> Self {
        let name = format!(
            "linear:{}",
            weights
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        Linear { weights, name }
    }
}

/// `r(x) = c` for every sample: steering with it must change nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant(pub f64);

fn rows(x0: &Tensor) -> steerdiff_guidance::Result<Vec<Vec<f32>>> {
    Ok(x0.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2()?)
}

fn check_dim(name: &str, got: usize, want: usize) -> steerdiff_guidance::Result<()> {
    if got != want {
        return Err(steerdiff_guidance::Error::Reward {
            name: name.into(),
            message: format!("samples have {got} numbers but the reward has {want}"),
        });
    }
    Ok(())
}

impl Reward for Quadratic {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, x0: &Tensor, _: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let rows = rows(x0)?;
        rows.iter()
            .map(|r| {
                check_dim(&self.name, r.len(), self.target.len())?;
                Ok(-0.5
                    * r.iter()
                        .zip(&self.target)
                        .map(|(&x, m)| (x as f64 - m).powi(2))
                        .sum::<f64>())
            })
            .collect()
    }
}

impl Reward for Linear {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, x0: &Tensor, _: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let rows = rows(x0)?;
        rows.iter()
            .map(|r| {
                check_dim(&self.name, r.len(), self.weights.len())?;
                Ok(r.iter()
                    .zip(&self.weights)
                    .map(|(&x, w)| x as f64 * w)
                    .sum())
            })
            .collect()
    }
}

impl Reward for Constant {
    fn name(&self) -> &str {
        "constant"
    }

    fn score(&self, x0: &Tensor, _: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        Ok(vec![self.0; x0.dim(0)?])
    }
}
