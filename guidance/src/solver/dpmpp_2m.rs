//! DPM-Solver++(2M): the second-order multistep data-prediction solver of Lu et al. 2022
//! ("DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Alg. 2),
//! midpoint variant, as diffusers' `DPMSolverMultistepScheduler` (`solver_order = 2`,
//! `algorithm_type = "dpmsolver++"`, `solver_type = "midpoint"`) runs it.
//!
//! With `λ = ln(α/σ)`, `h = λ_s − λ_t` and the previous step's `h₀ = λ_t − λ_{t−1}`:
//!
//! ```text
//! D    = x̂0_t + (1/(2·r₀))·(x̂0_t − x̂0_{t−1}),   r₀ = h₀/h
//! x_s  = (σ_s/σ_t)·x_t + α_s·(1 − e^{−h})·D
//! ```
//!
//! First order (`D = x̂0_t`, which equals DDIM η = 0) at the first step (no history) and at the
//! last step exactly when diffusers drops the order there with its defaults
//! (`lower_order_final = true`, `euler_at_final = false`): when the step lands on `σ = 0`
//! (`final_sigmas_type = "zero"`) or when there are fewer than 15 steps.

use candle_core::Tensor;

use crate::noise::Noise;
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use crate::solver::Solver;
use crate::{Error, Result};

/// DPM-Solver++(2M), data prediction, midpoint (Lu et al. 2022, Alg. 2). Deterministic; reads
/// the previous step's guided `x̂0` (history length 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DpmSolverPp2M;

impl Solver for DpmSolverPp2M {
    fn name(&self) -> String {
        "dpm-solver++(2m)".into()
    }

    fn is_stochastic(&self) -> bool {
        false
    }

    fn history_len(&self) -> usize {
        1
    }

    fn step(
        &self,
        schedule: &Schedule,
        index: usize,
        x: &Tensor,
        pred: &Prediction,
        history: &[Tensor],
        _noise: Option<&Noise>,
    ) -> Result<Tensor> {
        let t = schedule.points[index];
        let s = schedule.target(index);
        if s.sigma == 0.0 {
            // e^{−h} = 0: the step lands on the clean sample.
            return Ok(pred.x0().affine(s.alpha, 0.0)?);
        }
        if t.sigma == 0.0 {
            return Err(Error::InvalidArgument(
                "DPM-Solver++ cannot step away from a noise-free point (σ = 0)".into(),
            ));
        }
        // e^{−h} = (α_t·σ_s)/(α_s·σ_t), finite also where α_t = 0 (λ_t = −∞).
        let exp_neg_h = (t.alpha * s.sigma) / (s.alpha * t.sigma);
        let is_last = index + 1 == schedule.steps();
        let lower_order_final = is_last && schedule.steps() < 15;
        let second_order = match history.first() {
            Some(prev_x0) if index > 0 && !lower_order_final => {
                let h = s.lambda() - t.lambda();
                let h0 = t.lambda() - schedule.points[index - 1].lambda();
                (h.is_finite() && h0.is_finite() && h0 != 0.0).then_some((prev_x0, h0 / h))
            }
            _ => None,
        };
        let d = match second_order {
            None => pred.x0().clone(),
            Some((prev_x0, r0)) => {
                let k = 0.5 / r0;
                (pred.x0().affine(1.0 + k, 0.0)? - prev_x0.affine(k, 0.0)?)?
            }
        };
        Ok((x.affine(s.sigma / t.sigma, 0.0)? + d.affine(s.alpha * (1.0 - exp_neg_h), 0.0)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::StepPoint;
    use crate::solver::ddim::Ddim;
    use crate::test_support::max_abs_diff;
    use candle_core::Device;

    fn vp(ab: f64) -> StepPoint {
        StepPoint {
            timestep: 0.0,
            alpha: ab.sqrt(),
            sigma: (1.0 - ab).sqrt(),
        }
    }

    #[test]
    fn first_step_equals_ddim_eta0() {
        let dev = Device::Cpu;
        let sched = Schedule::new(vec![vp(0.1), vp(0.5), vp(0.9), vp(1.0)], 1.0);
        let x = Tensor::new(&[0.3f32, -1.2, 2.0], &dev).unwrap();
        let x0 = Tensor::new(&[0.1f32, 0.4, -0.8], &dev).unwrap();
        let pred = Prediction::from_x0(&x, x0, &sched.points[0]).unwrap();
        let a = DpmSolverPp2M.step(&sched, 0, &x, &pred, &[], None).unwrap();
        let b = Ddim { eta: 0.0 }
            .step(&sched, 0, &x, &pred, &[], None)
            .unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-6);
    }

    #[test]
    fn constant_x0_history_reduces_to_first_order() {
        // With x̂0_t = x̂0_{t−1} the correction D1 vanishes.
        let dev = Device::Cpu;
        let pts: Vec<StepPoint> = (0..20).map(|i| vp(0.05 + 0.045 * i as f64)).collect();
        let sched = Schedule::new(pts, 1.0);
        let x = Tensor::new(&[0.3f32, -1.2], &dev).unwrap();
        let x0 = Tensor::new(&[0.1f32, 0.4], &dev).unwrap();
        let pred = Prediction::from_x0(&x, x0.clone(), &sched.points[3]).unwrap();
        let a = DpmSolverPp2M
            .step(&sched, 3, &x, &pred, std::slice::from_ref(&x0), None)
            .unwrap();
        let b = Ddim { eta: 0.0 }
            .step(&sched, 3, &x, &pred, &[], None)
            .unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-6);
    }
}
