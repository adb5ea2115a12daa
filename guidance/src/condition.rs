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
