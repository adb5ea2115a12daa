//! Classifiers run in inference mode on clean-sample estimates (GFCG, class rewards).

use candle_core::Tensor;

use crate::reward::{Reward, RewardContext};
use crate::Result;

/// Class probabilities of clean-sample estimates. Never differentiated by the engine.
pub trait Classifier: Send + Sync {
    /// Name for records.
    fn name(&self) -> &str;

    /// `ln p(k | x0)` for every row of `x0` (`[B, …]`) and class `k`, one vector per row.
    fn log_probs(&self, x0: &Tensor) -> Result<Vec<Vec<f64>>>;
}

/// The reward `ln p(c | x̂0)` of each particle's own class `c` (its class label, or its prompt
/// index for a zero-shot classifier over prompts; NaN for unconditional rows).
pub struct ClassLogProb<C: Classifier + ?Sized> {
    name: String,
    /// The classifier.
    pub classifier: std::sync::Arc<C>,
}

impl<C: Classifier + ?Sized> ClassLogProb<C> {
    /// The class log-probability reward of `classifier`.
    pub fn new(classifier: std::sync::Arc<C>) -> Self {
        ClassLogProb {
            name: format!("class-logprob({})", classifier.name()),
            classifier,
        }
    }
}

impl<C: Classifier + ?Sized> Reward for ClassLogProb<C> {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, x0: &Tensor, cx: &RewardContext) -> Result<Vec<f64>> {
        let lp = self.classifier.log_probs(x0)?;
        Ok(lp
            .iter()
            .zip(cx.conds)
            .map(|(row, c)| match c.class_index() {
                Some(k) => row.get(k as usize).copied().unwrap_or(f64::NAN),
                None => f64::NAN,
            })
            .collect())
    }
}
