//! Dynamic CFG via online feedback (Papalampidi et al. 2025, arXiv 2509.16131; ALGORITHMS §7).
//!
//! Each step, for every candidate scale `s` in a set `S`, the guided estimate
//! `x̂0(s) = x̂0_u + s·(x̂0_c − x̂0_u)` is formed — a linear combination of the two rows CFG
//! computes anyway, so candidates cost **no model rows** — and scored by evaluators (a
//! weighted sum of rewards on `x̂0(s)`); each particle takes its best scale for this step.
//! The chosen schedule is sample- and step-specific and appears in the trace.

use std::sync::Arc;

use crate::guidance::{Context, Guidance, Request, Step};
use crate::population::Population;
use crate::prediction::Prediction;
use crate::reward::Reward;
use crate::strategy::combine::{add_scaled, difference, row_weights, Weight};
use crate::{Error, Result};

/// Greedy per-step choice of the CFG scale.
#[derive(Clone)]
pub struct DynamicCfg {
    /// Candidate scales.
    pub scales: Vec<f64>,
    /// Evaluators and their weights; a candidate's score is `Σ weight·reward`.
    pub evaluators: Vec<(Arc<dyn Reward>, f64)>,
}

impl Guidance for DynamicCfg {
    fn name(&self) -> String {
        format!("dynamic-cfg(scales={:?})", self.scales)
    }

    fn validate(&self, _steps: usize) -> Result<()> {
        if self.scales.is_empty() || self.scales.iter().any(|s| !s.is_finite()) {
            return Err(Error::InvalidArgument(
                "dynamic CFG needs a non-empty list of finite candidate scales".into(),
            ));
        }
        if self.evaluators.is_empty() {
            return Err(Error::InvalidArgument(
                "dynamic CFG needs at least one evaluator".into(),
            ));
        }
        Ok(())
    }

    fn requests(&self, _: &Step, pop: &Population, _: Option<&Prediction>) -> Result<Vec<Request>> {
        Ok(Request::unconditional(pop))
    }

    fn combine(
        &self,
        step: &Step,
        pop: &Population,
        cond: &Prediction,
        extra: &[Prediction],
        guided: &mut Prediction,
        cx: &mut Context,
    ) -> Result<()> {
        let Some(uncond) = extra.first() else {
            return Ok(());
        };
        let delta = difference(cond, uncond)?;
        let conds = pop.conds();
        let n = pop.len();
        let mut best = vec![(f64::NEG_INFINITY, 1.0f64); n];
        for &s in &self.scales {
            let x0 = (guided.x0() + delta.x0().affine(s - 1.0, 0.0)?)?;
            let mut total = vec![0.0; n];
            for (r, w) in &self.evaluators {
                for (t, v) in total
                    .iter_mut()
                    .zip(cx.score(r.as_ref(), &x0, &conds, step.from)?)
                {
                    *t += w * v;
                }
            }
            for (b, t) in best.iter_mut().zip(total) {
                if t > b.0 {
                    *b = (t, s);
                }
            }
        }
        let w = row_weights(
            best.iter().map(|b| (b.1 - 1.0) as f32).collect(),
            delta.x0(),
        )?;
        add_scaled(guided, &delta, Weight::PerRow(&w))?;
        cx.trace(
            "dynamic_cfg_scale",
            best.iter().map(|b| b.1).collect::<Vec<_>>(),
        );
        Ok(())
    }
}
