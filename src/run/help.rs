//! The topics `steerdiff generate --help` groups its flags under, common flags first. A flag
//! under [`TEXT_TO_IMAGE`] is refused on other models rather than silently ignored.

/// The flags most runs use.
pub const COMMON: &str = "Common";
/// How the sampler runs: path, solver, η, CFG's variants, precision and batching.
pub const SAMPLING: &str = "Sampling";
/// Each steering strategy's own settings.
pub const STRATEGIES: &str = "Strategies";
/// Evaluation rewards and reward plugins.
pub const REWARDS: &str = "Rewards and plugins";
/// Where and how outputs are written, and how a run is split.
pub const OUTPUTS: &str = "Outputs and scale-out";
/// Flags only text-to-image models read.
pub const TEXT_TO_IMAGE: &str = "Text-to-image models";
