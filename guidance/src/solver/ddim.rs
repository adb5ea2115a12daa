//! The DDIM family: one rule for DDIM, DDPM, Euler, Euler ancestral and flow-matching Euler.
//!
//! From `x_t = α_t·x0 + σ_t·ε` with the prediction `(x̂0, ε̂)`, DDIM (Song et al. 2021, eq. 12)
//! moves to the point `(α_s, σ_s)` by
//!
//! ```text
//! x_s = α_s·x̂0 + √(σ_s² − c²)·ε̂ + c·z,     z ~ N(0, I)
//! c   = η·σ_s·√(1 − (α_t·σ_s / (α_s·σ_t))²)        (eq. 16: c² = η²·(σ_s²/σ_t²)·(1 − ᾱ_t/ᾱ_s))
//! ```
//!
//! * `η = 0` is deterministic DDIM; in variance-exploding coordinates `x/α` it is exactly the
//!   Euler step of Karras et al. 2022 (`x_ve' = x_ve + (σ'_ve − σ_ve)·(x_ve − x̂0)/σ_ve`), and on
//!   the flow path (`α = 1 − σ`) it is the flow-matching Euler step `x' = x + (σ' − σ)·v`.
//! * `η = 1` samples the DDPM posterior `q(x_s | x_t, x̂0)` (Ho et al. 2020, eqs. 6–7): mean
//!   `α_s·β̃·x̂0/σ_t² + (α_t/α_s)·σ_s²·x_t/σ_t²`, variance `(σ_s²/σ_t²)·(1 − ᾱ_t/ᾱ_s)`; in VE
//!   coordinates this is Euler ancestral's `σ_up = σ_s·√(1 − σ_s²/σ_t²)`, `σ_down = √(σ_s² − σ_up²)`.
//!
//! `c = 0` when `σ_t = 0` or `σ_s = 0`; at `α_t = 0` (zero terminal SNR, flow `σ = 1`) the ratio is 0
//! and `c = η·σ_s`.

use candle_core::Tensor;

use crate::noise::Noise;
use crate::path::StepPoint;
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use crate::solver::Solver;
use crate::{Error, Result};

/// DDIM with noise scale `η` (Song et al. 2021, eq. 12): `η = 0` deterministic (DDIM, Euler,
/// flow Euler), `η = 1` ancestral (DDPM posterior, Euler ancestral). Stochastic iff `η > 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ddim {
    /// Noise scale η ≥ 0.
    pub eta: f64,
}

impl Ddim {
    /// The standard deviation `c` of the fresh noise added when moving from `t` to `s`.
    pub fn noise_std(&self, t: &StepPoint, s: &StepPoint) -> Result<f64> {
        if self.eta == 0.0 || t.sigma == 0.0 || s.sigma == 0.0 {
            return Ok(0.0);
        }
        let ratio = if t.alpha == 0.0 {
            0.0
        } else if s.alpha == 0.0 {
            return Err(Error::InvalidArgument(format!(
                "a DDIM step cannot land on pure noise (α = 0) from α = {}",
                t.alpha
            )));
        } else {
            (t.alpha * s.sigma) / (s.alpha * t.sigma)
        };
        Ok(self.eta * s.sigma * (1.0 - ratio * ratio).max(0.0).sqrt())
    }

    /// The step from `t` to `s` with an explicit prediction (see the module docs).
    pub fn transition(
        &self,
        t: &StepPoint,
        s: &StepPoint,
        pred: &Prediction,
        noise: Option<&Noise>,
    ) -> Result<Tensor> {
        let c = self.noise_std(t, s)?;
        let direction = (s.sigma * s.sigma - c * c).max(0.0).sqrt();
        let noise = if c == 0.0 {
            None
        } else {
            Some(noise.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "DDIM with η = {} needs noise for this step",
                    self.eta
                ))
            })?)
        };
        // In one pass with the noise drawn row by row inside it, when it can be: from an
        // unconverted velocity (writing its x̂0 as it goes), else from the pair.
        let streams = match noise {
            None => Some(None),
            Some(n) => n.streams().map(|s| Some((s, c))),
        };
        if let (Some(streams), Some(v)) = (streams, pred.velocity()) {
            if let Some(out) = v.ddim_step((s.alpha, direction), streams) {
                return Ok(out);
            }
        }
        let (x0, eps) = (pred.x0(), pred.eps());
        if let Some(streams) = streams.flatten() {
            if let Some(out) = crate::fused::ddim_step_drawing(x0, eps, s.alpha, direction, streams)
            {
                return Ok(out);
            }
        }
        let z = noise.map(Noise::tensor).transpose()?;
        if let Some(out) =
            crate::fused::ddim_step(x0, eps, s.alpha, direction, z.as_ref().map(|z| (z, c)))
        {
            return Ok(out);
        }
        let out = (x0.affine(s.alpha, 0.0)? + eps.affine(direction, 0.0)?)?;
        Ok(match z {
            Some(z) => (out + z.affine(c, 0.0)?)?,
            None => out,
        })
    }
}

impl Solver for Ddim {
    fn name(&self) -> String {
        format!("ddim(eta={})", self.eta)
    }

    fn is_stochastic(&self) -> bool {
        self.eta > 0.0
    }

    fn eta(&self) -> Option<f64> {
        Some(self.eta)
    }

    fn step(
        &self,
        schedule: &Schedule,
        index: usize,
        _x: &Tensor,
        pred: &Prediction,
        _history: &[Tensor],
        noise: Option<&Noise>,
    ) -> Result<Tensor> {
        let t = schedule.points[index];
        let s = schedule.target(index);
        self.transition(&t, &s, pred, noise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prediction::Parameterization;
    use crate::test_support::max_abs_diff;
    use candle_core::Device;

    fn flow_point(s: f64) -> StepPoint {
        StepPoint {
            timestep: s * 1000.0,
            alpha: 1.0 - s,
            sigma: s,
        }
    }

    #[test]
    fn eta0_on_flow_is_flow_euler() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[0.3f32, -1.2, 2.0, 0.7], &dev).unwrap();
        let v = Tensor::new(&[-0.5f32, 0.9, 1.4, -2.2], &dev).unwrap();
        for (a, b) in [(1.0, 0.75), (0.6, 0.3), (0.2, 0.0)] {
            let sched = Schedule::new(vec![flow_point(a), flow_point(b)], 1.0);
            let pred = Parameterization::Velocity
                .to_prediction(&v, &x, &sched.points[0])
                .unwrap();
            let got = Ddim { eta: 0.0 }
                .step(&sched, 0, &x, &pred, &[], None)
                .unwrap();
            let want = (&x + v.affine(b - a, 0.0).unwrap()).unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-6, "{a} → {b}");
        }
    }

    #[test]
    fn eta1_is_the_ddpm_posterior() {
        let dev = Device::Cpu;
        let (ab_t, ab_s) = (0.3f64, 0.7f64);
        let t = StepPoint {
            timestep: 600.0,
            alpha: ab_t.sqrt(),
            sigma: (1.0 - ab_t).sqrt(),
        };
        let s = StepPoint {
            timestep: 300.0,
            alpha: ab_s.sqrt(),
            sigma: (1.0 - ab_s).sqrt(),
        };
        let x = Tensor::new(&[0.3f32, -1.2, 2.0], &dev).unwrap();
        let x0 = Tensor::new(&[0.1f32, 0.4, -0.8], &dev).unwrap();
        let z = Tensor::new(&[1.0f32, -0.5, 0.25], &dev).unwrap();
        let pred = Prediction::from_x0(&x, x0.clone(), &t).unwrap();
        let got = Ddim { eta: 1.0 }
            .transition(&t, &s, &pred, Some(&Noise::from_tensor(z.clone())))
            .unwrap();
        // Ho et al. 2020 eq. 7: μ̃ = √ᾱ_s β_t/(1−ᾱ_t)·x0 + √α_t (1−ᾱ_s)/(1−ᾱ_t)·x_t,
        // β̃ = (1−ᾱ_s)/(1−ᾱ_t)·β_t with α_t = ᾱ_t/ᾱ_s, β_t = 1 − α_t.
        let alpha_step = ab_t / ab_s;
        let beta_step = 1.0 - alpha_step;
        let mean = (x0
            .affine(ab_s.sqrt() * beta_step / (1.0 - ab_t), 0.0)
            .unwrap()
            + x.affine(alpha_step.sqrt() * (1.0 - ab_s) / (1.0 - ab_t), 0.0)
                .unwrap())
        .unwrap();
        let var = (1.0 - ab_s) / (1.0 - ab_t) * beta_step;
        let want = (mean + z.affine(var.sqrt(), 0.0).unwrap()).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);
    }

    #[test]
    fn stochastic_step_without_noise_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[0.3f32], &dev).unwrap();
        let sched = Schedule::new(vec![flow_point(0.8), flow_point(0.4)], 1.0);
        let pred = Prediction::from_x0(&x, x.zeros_like().unwrap(), &sched.points[0]).unwrap();
        assert!(Ddim { eta: 1.0 }
            .step(&sched, 0, &x, &pred, &[], None)
            .is_err());
    }
}
