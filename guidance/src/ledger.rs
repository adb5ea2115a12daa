//! The cost ledger: what a run spent, so methods are compared at equal cost.
//!
//! Papers compare guidance methods at matched NFE (one NFE = one model row); reward calls and
//! decodes are separate cost classes (ALGORITHMS §0.2). Counts are exact and reproducible;
//! times are wall-clock and are reported apart from the counts so that records of two identical
//! runs stay byte-identical.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exact counts of what a run spent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Model rows (NFE) per model name.
    pub model_rows: BTreeMap<String, u64>,
    /// Batched model calls per model name.
    pub model_calls: BTreeMap<String, u64>,
    /// Reward calls (batches) per reward name.
    pub reward_calls: BTreeMap<String, u64>,
    /// Items scored per reward name.
    pub reward_items: BTreeMap<String, u64>,
    /// Items answered from a cache instead of the reward.
    pub reward_cached: u64,
    /// Latents turned into pixels (a VAE decode or a preview) inside reward calls; the final
    /// decode of a run's output images is not counted.
    pub decodes: u64,
}

impl Ledger {
    /// Total model rows over all models.
    pub fn total_rows(&self) -> u64 {
        self.model_rows.values().sum()
    }

    /// Adds another ledger's counts to this one.
    pub fn absorb(&mut self, other: &Ledger) {
        for (k, v) in &other.model_rows {
            *self.model_rows.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.model_calls {
            *self.model_calls.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.reward_calls {
            *self.reward_calls.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.reward_items {
            *self.reward_items.entry(k.clone()).or_default() += v;
        }
        self.reward_cached += other.reward_cached;
        self.decodes += other.decodes;
    }
}

/// Wall time spent, by cost class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Inside model forward passes, seconds.
    pub model_s: f64,
    /// Inside reward calls, seconds.
    pub reward_s: f64,
    /// Inside decodes, seconds.
    pub decode_s: f64,
    /// Whole run, seconds.
    pub total_s: f64,
}

impl Timing {
    /// Time outside model, reward and decode calls (solver, resampling, bookkeeping).
    pub fn other_s(&self) -> f64 {
        (self.total_s - self.model_s - self.reward_s - self.decode_s).max(0.0)
    }

    /// Adds a duration to a class.
    pub fn add(slot: &mut f64, d: Duration) {
        *slot += d.as_secs_f64();
    }
}
