//! Rewards: batched, order-preserving scores of clean-sample estimates.

use candle_core::Tensor;

use crate::condition::Condition;
use crate::path::StepPoint;
use crate::Result;

/// What a reward is told about the items it scores.
#[derive(Debug, Clone, Copy)]
pub struct RewardContext<'a> {
    /// Condition of each row.
    pub conds: &'a [Condition],
    /// The point of the path the `x̂0` estimates were made at (σ = 0 for final samples).
    pub at: StepPoint,
}

/// A score to maximise, computed on `x̂0` (model space: latents for latent models).
///
/// Implementations return exactly one score per row, in row order. NaN or `-∞` marks an item
/// that could not be scored; strategies give such items zero weight.
pub trait Reward: Send + Sync {
    /// Name used in the ledger, traces and records.
    fn name(&self) -> &str;

    /// Scores rows of `x0` (`[B, …]`).
    fn score(&self, x0: &Tensor, cx: &RewardContext) -> Result<Vec<f64>>;

    /// How many items of the calls since the last `take_cached` were answered from a cache
    /// instead of being computed, resetting the count (the engine adds it to the ledger's
    /// `reward_cached` after each call). Rewards without a cache keep the default, 0.
    fn take_cached(&self) -> u64 {
        0
    }

    /// How many latents the calls since the last `take_decodes` turned into pixels (a VAE
    /// decode or a preview), resetting the count (the engine adds it to the ledger's
    /// `decodes` after each call). Rewards that read `x̂0` directly keep the default, 0.
    fn take_decodes(&self) -> u64 {
        0
    }
}
