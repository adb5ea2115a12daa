//! What a model row is conditioned on.

use serde::{Deserialize, Serialize};

/// The conditioning of one model row. Pipelines give the indices their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// No condition: the unconditional prediction (the null class, the empty or negative prompt).
    Null,
    /// A class label of a class-conditional model.
    Class(u32),
    /// The `i`-th prompt of the run (the pipeline holds the encoded prompts).
    Prompt(u32),
}

impl Condition {
    /// The class index a classifier reads for this condition: the label of
    /// [`Condition::Class`], or the index of [`Condition::Prompt`] (text-to-image models steered
    /// by a zero-shot classifier whose class `i` is the run's prompt `i`). `None` for `Null`.
    pub fn class_index(self) -> Option<u32> {
        match self {
            Condition::Null => None,
            Condition::Class(k) | Condition::Prompt(k) => Some(k),
        }
    }

    /// The condition of the same kind with index `k` (`Class(k)` or `Prompt(k)`); `Null` stays
    /// `Null`.
    pub fn with_index(self, k: u32) -> Condition {
        match self {
            Condition::Null => Condition::Null,
            Condition::Class(_) => Condition::Class(k),
            Condition::Prompt(_) => Condition::Prompt(k),
        }
    }
}
