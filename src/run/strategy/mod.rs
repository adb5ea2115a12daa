//! Steering strategies as the command line and the run records see them: each strategy's
//! flags and defaults, declared once ([`StrategyArgs`], [`PerStepArgs`]), and how they are
//! built into the engine's hooks for a loaded model ([`build`], [`per_step::build`]).
//!
//! Per-step guidance (CFG) composes with every strategy here: FK runs CFG inside every
//! particle, CoDe values candidates by their guided look-ahead, and so on.

mod args;
mod build;
pub mod interval;
mod kind;
pub mod per_step;
mod per_step_args;

pub use args::{PotentialArg, ResamplingArg, StrategyArgs};
pub use build::Built;
pub use kind::StrategyKind;
pub use per_step_args::{GuideArg, PerStepArgs, ReferenceArg, ScaleRuleArg, TaskArg};

/// The `--help` heading of the flags only text-to-image models read; elsewhere they are
/// refused rather than silently ignored.
pub const TEXT_TO_IMAGE: &str = "Text-to-image models";
