//! # steerdiff-guidance
//!
//! The model-agnostic engine of steerdiff: the Gaussian path, prediction conversions, timestep
//! schedules, solvers, the particle population, and the guidance strategies that steer sampling
//! at inference time without a gradient through the model.

#![warn(missing_docs)]

pub mod condition;
pub mod denoiser;
pub mod engine;
pub mod error;
pub mod guidance;
pub mod ledger;
pub mod path;
pub mod population;
pub mod prediction;
pub mod resample;
pub mod reward;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod solver;
pub mod strategy;
pub mod trace;

pub use error::{Error, Result};
pub use path::{BetaSchedule, NoisePath, StepPoint, VpPath};
pub use prediction::{Parameterization, Prediction};
pub use schedule::{Schedule, TimestepSpacing};
pub use sampler::Sampler;
pub use schedule::{SchedulerClass, SchedulerConfig, SetTimesteps};
pub use solver::{Ddim, DpmSolverPp2M, Solver};
pub use condition::Condition;
pub use denoiser::Denoiser;
pub use engine::{Engine, Outcome};
pub use guidance::{Context, Guidance, Needs, Request, Step};
pub use ledger::{Ledger, Timing};
pub use population::{GroupSpec, Particle, Population};
pub use resample::Resampling;
pub use reward::{Reward, RewardContext};
pub use trace::TraceSink;
