//! GFCG — gradient-free classifier guidance (Shenoy et al. 2024, arXiv 2411.15393).
//!
//! Each step a classifier, in inference mode only, reads the conditional `x̂0_c` of every
//! particle and picks a **reference class** and a **scale**; the guided prediction
//! extrapolates away from the reference-class prediction:
//!
//! ```text
//! x̂0 = x̂0_c + (w_t − 1)·(x̂0_c − x̂0_ref),   x̂0_ref = D(x_t; c_ref)
//! ```
//!
//! The paper's exact rules are not public (ALGORITHMS §1.1), so each choice is an option:
//!
//! * reference: the most confusable competitor `argmax_{k≠c*} p_k` (default), or the
//!   classifier's top-1 when it is wrong;
//! * scale: `Confusion` — `w_t = 1 + (w − 1)·(1 − p_{c*})`, so a sample the classifier is sure
//!   of gets almost no guidance (default); `Ratio` — `(w − 1)·p_ref/(p_{c*} + p_ref)`;
//!   `Constant` — `w_t = w`;
//! * an active noise interval on `σ/α` (the classifier is unreliable on blurry `x̂0`);
//! * the model giving the reference row: the main model (1 extra row) or a weaker twin
//!   (GFCG + autoguidance at 2 rows per step: `x̂0 = D_bad(c_ref) + w·(D_good(c*) − D_bad(c_ref))`).
//!
//! On text-to-image models the classes are the run's prompts (a zero-shot classifier over
//! prompt variants): a particle on `Prompt(i)` is class `i`, its reference row `Prompt(ref)`.
//!
//! The reference class depends on this step's conditional prediction, so the engine
//! evaluates the conditional rows first and the reference rows in a second batch; the
//! classifier is run again in `combine` on the same input (deterministic) rather than
//! keeping hidden state between hooks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::classifier::Classifier;
use crate::condition::Condition;
use crate::guidance::{Context, Guidance, Needs, Request, Step};
use crate::population::Population;
use crate::prediction::Prediction;
use crate::strategy::combine::{add_guidance, row_weights, Weight};
use crate::{Error, Result};

/// How the reference class is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceRule {
    /// The most probable class other than the target.
    #[default]
    Competitor,
    /// The classifier's top-1 if it is not the target, else the competitor.
    TopIfWrong,
}

/// How the per-particle scale follows the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleRule {
    /// `w_t = 1 + (w − 1)(1 − p_{c*})`.
    #[default]
    Confusion,
    /// `w_t = 1 + (w − 1)·p_ref/(p_{c*} + p_ref)`.
    Ratio,
    /// `w_t = w`.
    Constant,
}

/// Gradient-free classifier guidance.
#[derive(Clone)]
pub struct Gfcg {
    /// The classifier (inference only).
    pub classifier: Arc<dyn Classifier>,
    /// Maximum scale `w` (1 = none).
    pub scale: f64,
    /// Reference rule.
    pub reference: ReferenceRule,
    /// Scale rule.
    pub scale_rule: ScaleRule,
    /// Active interval on `σ/α` (None = every step).
    pub interval: Option<(f64, f64)>,
    /// Engine index of the model giving the reference prediction (0 = the main model).
    pub model: usize,
}

impl Gfcg {
    /// GFCG with the default rules on the main model.
    pub fn new(classifier: Arc<dyn Classifier>, scale: f64) -> Self {
        Gfcg {
            classifier,
            scale,
            reference: ReferenceRule::Competitor,
            scale_rule: ScaleRule::Confusion,
            interval: None,
            model: 0,
        }
    }

    fn active(&self, step: &Step) -> bool {
        match self.interval {
            None => true,
            Some((lo, hi)) => (lo..=hi).contains(&step.from.sigma_ve()),
        }
    }

    /// Per particle: (reference class, w_t − 1). Unconditional particles get no guidance.
    fn choose(&self, pop: &Population, cond: &Prediction) -> Result<Vec<(u32, f64)>> {
        let lp = self.classifier.log_probs(cond.x0())?;
        pop.particles
            .iter()
            .zip(lp)
            .map(|(p, row)| {
                let Some(target) = p.cond.class_index() else {
                    return Ok((0, 0.0));
                };
                let t = target as usize;
                if t >= row.len() {
                    return Err(Error::InvalidArgument(format!(
                        "GFCG: class {target} is outside the classifier's {} classes",
                        row.len()
                    )));
                }
                let competitor = (0..row.len())
                    .filter(|&k| k != t)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(t);
                let top = (0..row.len())
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(t);
                let reference = match self.reference {
                    ReferenceRule::TopIfWrong if top != t => top,
                    _ => competitor,
                };
                let (pt, pr) = (row[t].exp(), row[reference].exp());
                let w = self.scale - 1.0;
                let extra = match self.scale_rule {
                    ScaleRule::Confusion => w * (1.0 - pt),
                    ScaleRule::Ratio => w * pr / (pt + pr).max(f64::MIN_POSITIVE),
                    ScaleRule::Constant => w,
                };
                Ok((reference as u32, extra))
            })
            .collect()
    }
}

impl Guidance for Gfcg {
    fn name(&self) -> String {
        format!(
            "gfcg(w={}, classifier={})",
            self.scale,
            self.classifier.name()
        )
    }

    fn needs(&self) -> Needs {
        Needs {
            models: self.model + 1,
            cond_before_requests: true,
            ..Needs::default()
        }
    }

    fn validate(&self, _steps: usize) -> Result<()> {
        if !self.scale.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "GFCG scale must be a finite number, got {}",
                self.scale
            )));
        }
        Ok(())
    }

    fn requests(
        &self,
        step: &Step,
        pop: &Population,
        cond: Option<&Prediction>,
    ) -> Result<Vec<Request>> {
        let Some(cond) = cond else {
            return Ok(Vec::new());
        };
        if self.scale == 1.0
            || !self.active(step)
            || pop.particles.iter().all(|p| p.cond == Condition::Null)
        {
            return Ok(Vec::new());
        }
        let chosen = self.choose(pop, cond)?;
        Ok(vec![Request {
            model: self.model,
            conds: chosen
                .iter()
                .zip(&pop.particles)
                .map(|((r, _), p)| p.cond.with_index(*r))
                .collect(),
        }])
    }

    fn combine(
        &self,
        _: &Step,
        pop: &Population,
        cond: &Prediction,
        extra: &[Prediction],
        guided: &mut Prediction,
        cx: &mut Context,
    ) -> Result<()> {
        let Some(reference) = extra.first() else {
            return Ok(());
        };
        let chosen = self.choose(pop, cond)?;
        let w = row_weights(chosen.iter().map(|(_, e)| *e as f32).collect(), cond.x0())?;
        add_guidance(guided, cond, reference, Weight::PerRow(&w))?;
        cx.trace(
            "gfcg",
            serde_json::json!({
                "reference": chosen.iter().map(|c| c.0).collect::<Vec<_>>(),
                "scale": chosen.iter().map(|c| 1.0 + c.1).collect::<Vec<_>>(),
            }),
        );
        Ok(())
    }
}
