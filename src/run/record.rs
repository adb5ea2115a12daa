//! The run record: every resolved parameter of a run, one schema for every model family,
//! written into `samples.json` and every PNG (see `docs/samples-json.md`).

use serde::{Deserialize, Serialize};

use super::options::PathKind;
use super::strategy::StrategyArgs;

/// The version of the `samples.json` / PNG record schema. 2: one schema for every family
/// (text-to-image runs gained `x`, `particle`, `path`, …; every run gained `device`, `dtype`).
pub const SCHEMA_VERSION: u32 = 2;

/// The seeding rule, as recorded in every `samples.json` (see `steerdiff_guidance::rng`).
pub const SEEDING_RULE: &str =
    "group g uses seed S + g (S = --seed); particle i of a group starts \
     from lineage i; so -n 8 --seed S = -n 4 --seed S followed by -n 4 --seed S+4";

/// Every resolved parameter of a run. Holds only deterministic data (no output paths, no
/// times), so identical commands give identical records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameters {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The model as named (`toy`, `gmm:PATH`, `sd15`, a folder…).
    pub model: String,
    /// The model's own configuration and weight hashes.
    pub model_config: serde_json::Value,
    /// The steerdiff version that ran it.
    pub steerdiff_version: String,
    /// The device it ran on (`cpu`, `cuda:0`, `metal:0`).
    pub device: String,
    /// The weight dtype (`f32`, `f16`, `bf16`).
    pub dtype: String,
    /// `vp` or `flow`.
    pub path: PathKind,
    /// Class label, `null` when unconditional or text-conditioned.
    pub class: Option<u32>,
    /// The class's name, when the model names its classes.
    pub class_name: Option<String>,
    /// The prompt (text-to-image models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The negative prompt; absent: none given (the empty prompt, or SDXL's all-zero row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative: Option<String>,
    /// Sampler (scheduler) name, `default` for a text-to-image model's own.
    pub sampler: String,
    /// What the sampler resolved to (the diffusers scheduler class, for text-to-image
    /// models); absent when it is the sampler's own name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler_class: Option<String>,
    /// The update rule the sampler resolved to.
    pub solver: String,
    /// Whether the solver draws noise each step.
    pub stochastic: bool,
    /// Solver steps.
    pub steps: usize,
    /// Resolved η.
    pub eta: f64,
    /// CFG scale (1 = none).
    pub cfg: f64,
    /// CFG rescale φ.
    pub cfg_rescale: f64,
    /// CFG interval on `σ/α`, `null` = always.
    pub cfg_interval: Option<[f64; 2]>,
    /// Time travel's extra visits of every step but the last; absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub time_travel: usize,
    /// Image size `[height, width]` in pixels (text-to-image models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[usize; 2]>,
    /// The weaker guiding model (`--guide-model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guide_model: Option<String>,
    /// The initial-latents file, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_latents: Option<String>,
    /// The img2img source image, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_image: Option<String>,
    /// img2img strength (with an init image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// Number of groups.
    pub n: usize,
    /// Particles per group.
    pub particles_per_group: usize,
    /// Which final particles were kept (`best` of each group, or `all`).
    pub keep: super::keep::Keep,
    /// Groups sampled together in one batch (text-to-image models); absent when 1.
    #[serde(skip_serializing_if = "is_one")]
    pub batch_groups: usize,
    /// Seed of group 0.
    pub seed: u64,
    /// How seeds are assigned to groups.
    pub seeding: String,
    /// The steering strategy and its settings.
    pub strategy: StrategyArgs,
    /// The shard this run is, if it is one; absent from whole (or merged) runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRecord>,
}

/// `serde` helper: leaves the default of one out of a record.
pub(crate) fn is_one(v: &usize) -> bool {
    *v == 1
}

/// `serde` helper: leaves a zero count out of a record.
pub(crate) fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// The shard a run is, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// This shard, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
    /// The groups it ran, `[start, end)` of `0..n`.
    pub groups: [usize; 2],
}

/// A device as recorded (`cpu`, `cuda:0`, `metal:0`).
pub fn device_name(d: &candle_core::Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
