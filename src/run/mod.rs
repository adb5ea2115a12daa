//! A run, free of the command line: resolved [`Options`] and a loaded model become one
//! [`Job`] — the same path for every model family and device — which the engine runs; its
//! [`Parameters`] are the run record.
//!
//! ```text
//! Options ──► Job::new(model, &options) ──► Job::run ──► Outcome ──► crate::output
//!               │ conditions, sampler, CFG, strategy (flags in strategy/), rewards
//! ```

pub mod bench;
pub mod clap_defaults;
pub mod device;
mod execute;
pub mod help;
pub mod init;
pub mod job;
pub mod keep;
pub mod limits;
pub mod observation;
pub mod options;
pub mod plugin_args;
pub mod record;
mod resolve;
pub mod results;
pub mod shard;
mod steering;
pub mod strategy;

pub use job::{load_model, score_final, Job};
pub use keep::Keep;
pub use options::{Options, PathKind, DEFAULT_STEPS};
pub use record::{Parameters, ShardRecord, SCHEMA_VERSION, SEEDING_RULE};
