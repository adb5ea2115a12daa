//! CoDe — blockwise best-of-N (Singh et al. 2025, "CoDe: Blockwise Control for Denoising
//! Diffusion Models", arXiv 2502.00968), with best-of-N and SVDD-PM as presets.
//!
//! The KL-regularised optimal policy `π*(x_{t−1}|x_t) ∝ p(x_{t−1}|x_t)·exp(λ·V(x_{t−1}))` with
//! the Tweedie value `V(x) ≈ r(x̂0(x))` is approximated blockwise: N candidates of each group
//! roll through a block of B stochastic steps; at the block's end each candidate is valued by
//! the reward of its look-ahead `x̂0` (the guided prediction at the next step), the best one is
//! kept and replicated N times, and the next block starts. At the last step the final samples
//! are scored and the group is reduced to its winner.
//!
//! * `B = T` is best-of-N (selection only on final samples); `B = 1` is SVDD-PM (Li et al. 2024,
//!   arXiv 2408.08252, with α → 0).
//! * Selection is `argmax` or a draw from `softmax(τ·r)` (UniCoDe's multinomial mode; τ = λ
//!   makes the block step an importance-resampling step towards `p·exp(λV)`).
//! * The winner's look-ahead prediction *is* its next-step prediction: it is stored in
//!   `pop.pending` and reused, so CoDe costs N·T model rows — the same as best-of-N — instead of
//!   the reference code's N·T·(1 + 1/B).
//! * Unlike the reference, the N candidates start from independent `x_T` (each lineage draws
//!   its own), so `B = T` is exactly best-of-N.

use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::guidance::{Context, Guidance, Needs, Step};
use crate::path::StepPoint;
use crate::population::Population;
use crate::reward::Reward;
use crate::rng::{Domain, StreamKey};
use crate::{Error, Result};

/// How a group's winner is chosen from candidate values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The best value (CoDe, SVDD-PM, best-of-N).
    Argmax,
    /// A draw from `softmax(τ·value)`.
    Softmax {
        /// Inverse temperature τ > 0.
        tau: f64,
    },
}

/// Blockwise best-of-N.
#[derive(Clone)]
pub struct Code {
    /// The reward valuing each candidate's `x̂0`.
    pub reward: Arc<dyn Reward>,
    /// Block size B in steps (`None` = the whole schedule: best-of-N).
    pub block: Option<usize>,
    /// Winner rule.
    pub selection: Selection,
}

impl Code {
    /// CoDe with block size `block` and argmax selection.
    pub fn new(reward: Arc<dyn Reward>, block: usize) -> Self {
        Code {
            reward,
            block: Some(block),
            selection: Selection::Argmax,
        }
    }

    /// Best-of-N: N independent trajectories, the final sample with the best reward.
    pub fn best_of_n(reward: Arc<dyn Reward>) -> Self {
        Code {
            reward,
            block: None,
            selection: Selection::Argmax,
        }
    }

    /// SVDD-PM: every step, the best of N one-step children by their look-ahead value.
    pub fn svdd(reward: Arc<dyn Reward>) -> Self {
        Code::new(reward, 1)
    }

    fn pick(&self, values: &[f64], key: StreamKey) -> Result<usize> {
        let finite: Vec<usize> = (0..values.len())
            .filter(|&i| values[i].is_finite())
            .collect();
        if finite.is_empty() {
            return Err(Error::Reward {
                name: self.reward.name().into(),
                message: "every candidate of a group scored NaN or ±inf".into(),
            });
        }
        Ok(match self.selection {
            Selection::Argmax => *finite
                .iter()
                .max_by(|&&a, &&b| values[a].total_cmp(&values[b]))
                .expect("non-empty"),
            Selection::Softmax { tau } => {
                let log_w: Vec<f64> = values
                    .iter()
                    .map(|v| {
                        if v.is_finite() {
                            tau * v
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let w = crate::resample::normalize(&log_w)?;
                let u = key.uniforms(1)[0];
                crate::resample::Resampling::Multinomial.ancestors(&w, 1, &[u])[0]
            }
        })
    }
}

impl Guidance for Code {
    fn name(&self) -> String {
        match self.block {
            None => format!("best-of-n(reward={})", self.reward.name()),
            Some(b) => format!("code(block={b}, reward={})", self.reward.name()),
        }
    }

    fn needs(&self) -> Needs {
        Needs {
            stochastic_solver: true,
            ..Needs::default()
        }
    }

    fn validate(&self, steps: usize) -> Result<()> {
        if let Some(b) = self.block {
            if b == 0 || b > steps {
                return Err(Error::InvalidArgument(format!(
                    "CoDe: the block size must be between 1 and the number of steps ({steps}), got {b}"
                )));
            }
        }
        if let Selection::Softmax { tau } = self.selection {
            if !(tau.is_finite() && tau > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "CoDe: softmax temperature τ must be a positive number (got {tau})"
                )));
            }
        }
        Ok(())
    }

    fn select(&self, step: &Step, pop: &mut Population, cx: &mut Context) -> Result<()> {
        let last = step.is_last();
        let block_end = self.block.is_some_and(|b| (step.index + 1) % b == 0);
        if !last && !block_end {
            return Ok(());
        }
        // Values: final samples at the end, look-ahead x̂0 of each candidate otherwise.
        let (lookahead, x0, at) = if last {
            let clean = StepPoint::CLEAN;
            (None, pop.x.clone(), clean)
        } else {
            let next = cx.predict_guided(pop, step.index + 1)?;
            let x0 = next.x0().clone();
            (Some(next), x0, cx.step(step.index + 1)?.from)
        };
        let values = cx.score(self.reward.as_ref(), &x0, &pop.conds(), at)?;
        for (p, &v) in pop.particles.iter_mut().zip(&values) {
            p.reward = Some(v);
        }
        let mut ancestors = Vec::with_capacity(pop.len());
        let mut winners = Vec::new();
        for range in pop.groups() {
            let key = StreamKey {
                seed: pop.particles[range.start].seed,
                lineage: 0,
                step: step.index as u64,
                domain: Domain::Select,
            };
            let w = range.start + self.pick(&values[range.clone()], key)?;
            winners.push(w);
            // At the end the group shrinks to its winner; otherwise the winner is replicated.
            let copies = if last { 1 } else { range.len() };
            ancestors.extend(std::iter::repeat_n(w, copies));
        }
        cx.trace("code", json!({ "values": values, "winners": winners }));
        *pop = pop.gather(&ancestors, step.index)?;
        if let Some(next) = lookahead {
            let idx = Tensor::from_vec(
                ancestors.iter().map(|&a| a as u32).collect::<Vec<_>>(),
                ancestors.len(),
                pop.x.device(),
            )?;
            pop.pending = Some(next.gather(&idx)?);
        }
        Ok(())
    }
}
