//! What a network predicts, and its conversion to the pair `(x̂0, ε̂)` everything else speaks.
//!
//! At a point `x_t = α·x0 + σ·ε` every parameterisation is an invertible affine map of `(x0, ε)`:
//!
//! | parameterisation | output | `x̂0` | `ε̂` |
//! |---|---|---|---|
//! | ε (DDPM, SD 1.x) | `ε` | `(x − σ·ε̂)/α` | output |
//! | v (SD 2.x-v; Salimans & Ho 2022) | `α·ε − σ·x0` | `(α·x − σ·v)/(α²+σ²)` | `(σ·x + α·v)/(α²+σ²)` |
//! | velocity (rectified flow) | `ε − x0` | `(x − σ·v)/(α+σ)` | `(x + α·v)/(α+σ)` |
//! | x0 (EDM `D`, GMM) | `x0` | output | `(x − α·x̂0)/σ` |
//!
//! On the flow path (`α + σ = 1`) the velocity row reduces to `x̂0 = x − σ·v`, and on the VP path
//! (`α² + σ² = 1`) the v row to `x̂0 = α·x − σ·v`. Guidance combinations are affine with weights
//! summing to one, so they commute with these maps: the engine combines in `x̂0` space.

use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::path::StepPoint;
use crate::velocity::Velocity;
use crate::{Error, Result};

/// What a denoiser's raw output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameterization {
    /// Noise prediction ε̂ (diffusers `prediction_type = "epsilon"`).
    Epsilon,
    /// v-prediction `α·ε − σ·x0` (diffusers `"v_prediction"`).
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// Rectified-flow velocity `ε − x0` (SD3, FLUX, the toy model).
    Velocity,
    /// The clean sample itself (diffusers `"sample"`, EDM's `D(x; σ)`).
    #[serde(rename = "sample")]
    Sample,
}

/// The denoiser's estimate at one point, in the engine's common form: the pair `(x̂0, ε̂)`.
///
/// `x̂0` is the posterior-mean estimate of the clean sample, `x̂0 = E[x0 | x_t]` (Tweedie), and
/// `ε̂` the matching noise estimate, with `x_t = α·x̂0 + σ·ε̂` exactly.
///
/// A velocity model's output on the CPU is kept as it came, `(x_t, v)` — with CFG's term on
/// two such outputs too — and converted the first time [`x0`](Prediction::x0) or
/// [`eps`](Prediction::eps) is read (clones share the conversion), or by DDIM's step in its
/// own pass (`velocity.rs`): the conditional, unconditional and guided pairs are then never
/// separate passes. The values are the same either way, bit for bit.
#[derive(Debug, Clone)]
pub struct Prediction {
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    /// Both halves, computed.
    Pair { x0: Tensor, eps: Tensor },
    /// A velocity output (with CFG's term, if added), converted when first read.
    Velocity(Arc<Velocity>),
}

impl Prediction {
    /// The pair `(x̂0, ε̂)`.
    pub fn new(x0: Tensor, eps: Tensor) -> Self {
        Prediction {
            form: Form::Pair { x0, eps },
        }
    }

    /// A velocity output `v` at `x` (on the path's point `(α, σ)`) kept unconverted, when both
    /// are contiguous f32 CPU tensors of one shape (what the one-pass conversion reads); `None`
    /// otherwise.
    pub(crate) fn lazy_velocity(x: &Tensor, v: &Tensor, alpha: f64, sigma: f64) -> Option<Self> {
        Velocity::new(x, v, alpha, sigma).map(Prediction::from_velocity)
    }

    /// A prediction kept as the unconverted `velocity`.
    pub(crate) fn from_velocity(velocity: Velocity) -> Self {
        Prediction {
            form: Form::Velocity(Arc::new(velocity)),
        }
    }

    /// The unconverted velocity this prediction was made from, if it was kept so.
    pub(crate) fn velocity(&self) -> Option<&Arc<Velocity>> {
        match &self.form {
            Form::Velocity(v) => Some(v),
            Form::Pair { .. } => None,
        }
    }

    /// Posterior-mean estimate of the clean sample, `x̂0 = E[x0 | x_t]` (Tweedie).
    pub fn x0(&self) -> &Tensor {
        match &self.form {
            Form::Pair { x0, .. } => x0,
            Form::Velocity(v) => v.x0(),
        }
    }

    /// The matching noise estimate, with `x_t = α·x̂0 + σ·ε̂` exactly.
    pub fn eps(&self) -> &Tensor {
        match &self.form {
            Form::Pair { eps, .. } => eps,
            Form::Velocity(v) => v.eps(),
        }
    }

    /// The pair `(x̂0, ε̂)`, owned.
    pub fn into_parts(self) -> (Tensor, Tensor) {
        match self.form {
            Form::Pair { x0, eps } => (x0, eps),
            Form::Velocity(v) => (v.x0().clone(), v.eps().clone()),
        }
    }

    /// Number of rows (particles).
    pub fn rows(&self) -> Result<usize> {
        let t = match &self.form {
            Form::Pair { x0, .. } => x0,
            Form::Velocity(v) => &v.v,
        };
        Ok(t.dim(0)?)
    }

    /// Builds the consistent pair from `x̂0` at `x_t` (`ε̂ = (x − α·x̂0)/σ`; zero where σ = 0).
    pub fn from_x0(x: &Tensor, x0: Tensor, at: &StepPoint) -> Result<Self> {
        let eps = if at.sigma == 0.0 {
            x0.zeros_like()?
        } else {
            ((x - x0.affine(at.alpha, 0.0)?)? / at.sigma)?
        };
        Ok(Prediction::new(x0, eps))
    }

    /// Selects rows (particles) by index, in order.
    pub fn gather(&self, idx: &Tensor) -> Result<Self> {
        Ok(Prediction::new(
            self.x0().index_select(idx, 0)?,
            self.eps().index_select(idx, 0)?,
        ))
    }

    /// Row-wise concatenation of predictions.
    pub fn cat(parts: &[&Prediction]) -> Result<Self> {
        let x0: Vec<&Tensor> = parts.iter().map(|p| p.x0()).collect();
        let eps: Vec<&Tensor> = parts.iter().map(|p| p.eps()).collect();
        Ok(Prediction::new(Tensor::cat(&x0, 0)?, Tensor::cat(&eps, 0)?))
    }

    /// Rows `start..start+len` (an unconverted velocity stays unconverted).
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        if let Some(part) = self.velocity().and_then(|v| v.narrow(start, len)) {
            return Ok(Prediction::from_velocity(part));
        }
        Ok(Prediction::new(
            self.x0().narrow(0, start, len)?,
            self.eps().narrow(0, start, len)?,
        ))
    }
}

impl Parameterization {
    /// Converts a raw network output at `x_t` to `(x̂0, ε̂)`.
    pub fn to_prediction(self, output: &Tensor, x: &Tensor, at: &StepPoint) -> Result<Prediction> {
        let (a, s) = (at.alpha, at.sigma);
        match self {
            Parameterization::Epsilon => {
                if a == 0.0 {
                    return Err(Error::Unsupported(
                        "an ε-prediction model cannot estimate x0 at α = 0 (zero terminal SNR); \
                         use a v-prediction model or a schedule that stops short of t = T"
                            .into(),
                    ));
                }
                let x0 = ((x - output.affine(s, 0.0)?)? / a)?;
                Ok(Prediction::new(x0, output.clone()))
            }
            Parameterization::VPrediction => {
                let n = a * a + s * s;
                let x0 = (x.affine(a / n, 0.0)? - output.affine(s / n, 0.0)?)?;
                let eps = (x.affine(s / n, 0.0)? + output.affine(a / n, 0.0)?)?;
                Ok(Prediction::new(x0, eps))
            }
            Parameterization::Velocity => {
                if let Some(p) = Prediction::lazy_velocity(x, output, a, s) {
                    return Ok(p);
                }
                // `x / n` once for both (the same values as computing it twice).
                let n = a + s;
                let scaled = x.affine(1.0 / n, 0.0)?;
                let x0 = (&scaled - output.affine(s / n, 0.0)?)?;
                let eps = (scaled + output.affine(a / n, 0.0)?)?;
                Ok(Prediction::new(x0, eps))
            }
            Parameterization::Sample => Prediction::from_x0(x, output.clone(), at),
        }
    }

    /// Converts `(x̂0, ε̂)` back to this parameterisation's raw output (the inverse map).
    pub fn from_prediction(self, pred: &Prediction, at: &StepPoint) -> Result<Tensor> {
        let (a, s) = (at.alpha, at.sigma);
        Ok(match self {
            Parameterization::Epsilon => pred.eps().clone(),
            Parameterization::VPrediction => {
                (pred.eps().affine(a, 0.0)? - pred.x0().affine(s, 0.0)?)?
            }
            Parameterization::Velocity => (pred.eps() - pred.x0())?,
            Parameterization::Sample => pred.x0().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff as close;
    use candle_core::Device;

    #[test]
    fn every_parameterisation_round_trips_on_both_paths() {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[0.3f32, -1.2, 2.0]], &dev).unwrap();
        let eps = Tensor::new(&[[-0.7f32, 0.4, 1.1]], &dev).unwrap();
        let vp = StepPoint {
            timestep: 500.0,
            alpha: 0.6,
            sigma: 0.8,
        };
        let flow = StepPoint {
            timestep: 300.0,
            alpha: 0.7,
            sigma: 0.3,
        };
        for at in [vp, flow] {
            let x =
                (x0.affine(at.alpha, 0.0).unwrap() + eps.affine(at.sigma, 0.0).unwrap()).unwrap();
            let truth = Prediction::new(x0.clone(), eps.clone());
            for p in [
                Parameterization::Epsilon,
                Parameterization::VPrediction,
                Parameterization::Velocity,
                Parameterization::Sample,
            ] {
                let out = p.from_prediction(&truth, &at).unwrap();
                let back = p.to_prediction(&out, &x, &at).unwrap();
                assert!(close(back.x0(), &x0) < 1e-5, "{p:?} x0 at {at:?}");
                assert!(close(back.eps(), &eps) < 1e-5, "{p:?} eps at {at:?}");
            }
        }
    }
}
