//! The steering flags every strategy shares ([`StrategyArgs`]): which strategy, its reward,
//! the particle count. Each strategy's own flags are in its file, gathered here through
//! [`super::SteeringFlags`] and [`super::PerStepArgs`]. clap reads them on the command line,
//! serde writes them into every run record, and [`Default`] is clap's own.

use clap::Args;
use serde::Serialize;

use super::StrategyKind;
use crate::run::help::{COMMON, REWARDS, STRATEGIES};

/// Flags of the steering strategies.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct StrategyArgs {
    /// Steering strategy (see `steerdiff list`).
    #[arg(long = "guidance", value_enum, default_value_t = StrategyKind::None, help_heading = COMMON)]
    pub kind: StrategyKind,
    /// Reward to steer towards (see `steerdiff list`): for mixtures quadratic:M | linear:W |
    /// constant:C; for the toy classifier | brightness; a plugin stdio:COMMAND or
    /// http://127.0.0.1:PORT; many:N:SPEC; ensemble:sum|z|rank:W1*SPEC1;W2*SPEC2.
    #[arg(long, value_name = "SPEC", help_heading = COMMON)]
    pub reward: Option<String>,
    /// A reward measured on the final samples and reported in samples.json (`eval_reward`),
    /// never used to steer; same SPEC syntax as --reward.
    #[arg(long, value_name = "SPEC", help_heading = REWARDS)]
    pub eval_reward: Option<String>,
    /// Particles / candidates per group (FK's K, CoDe's and best-of-N's N, DSearch's initial beams).
    #[arg(long, default_value_t = 4, help_heading = COMMON)]
    pub particles: usize,
    /// CoDe / best-of-N / SVDD: pick from softmax(τ·r) instead of the argmax.
    #[arg(long, value_name = "τ", help_heading = STRATEGIES, allow_negative_numbers = true)]
    pub tau: Option<f64>,
    /// Noise searches: rounds.
    #[arg(long, default_value_t = 3, help_heading = STRATEGIES)]
    pub rounds: usize,
    /// Each particle strategy's and noise search's own flags.
    #[command(flatten)]
    #[serde(flatten)]
    pub flags: super::SteeringFlags,
    /// Per-step guidance (GFCG, autoguidance, dynamic CFG, FlowChef, replacement) settings.
    #[command(flatten)]
    pub per_step: super::per_step_args::PerStepArgs,
    /// Reward plugin settings.
    #[command(flatten)]
    pub plugin: crate::run::plugin_args::PluginArgs,
}

crate::run::clap_defaults::defaults_from_clap!(StrategyArgs);
