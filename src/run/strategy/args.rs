//! The steering strategy's flags ([`StrategyArgs`]), declared once: clap reads them on the
//! command line, serde writes them into every run record, and [`Default`] is clap's own.

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::kind::StrategyKind;

/// Flags of the steering strategies.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct StrategyArgs {
    /// Steering strategy (see `steerdiff list`).
    #[arg(long = "guidance", value_enum, default_value_t = StrategyKind::None)]
    pub kind: StrategyKind,
    /// Reward to steer towards (see `steerdiff list`): for mixtures quadratic:M | linear:W |
    /// constant:C; for the toy classifier | brightness; a plugin stdio:COMMAND or
    /// http://127.0.0.1:PORT; many:N:SPEC; ensemble:sum|z|rank:W1*SPEC1;W2*SPEC2.
    #[arg(long, value_name = "SPEC")]
    pub reward: Option<String>,
    /// A reward measured on the final samples and reported in samples.json (`eval_reward`),
    /// never used to steer; same SPEC syntax as --reward.
    #[arg(long, value_name = "SPEC")]
    pub eval_reward: Option<String>,
    /// Particles / candidates per group (FK's K, CoDe's and best-of-N's N, DSearch's initial beams).
    #[arg(long, default_value_t = 4)]
    pub particles: usize,
    /// FK tilt λ: the target is p(x)·exp(λ·r(x)).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub lambda: f64,
    /// FK potential.
    #[arg(long, value_enum, default_value_t = PotentialArg::Diff)]
    pub potential: PotentialArg,
    /// FK: resample every E steps (default: a fifth of the steps).
    #[arg(long, value_name = "E")]
    pub resample_every: Option<usize>,
    /// FK: first resampling step (default: a fifth of the steps).
    #[arg(long, value_name = "S")]
    pub resample_start: Option<usize>,
    /// FK: resample only when ESS < θ·K (default: at every resampling step).
    #[arg(long, value_name = "θ")]
    pub ess_threshold: Option<f64>,
    /// FK resampling scheme.
    #[arg(long, value_enum, default_value_t = ResamplingArg::Multinomial)]
    pub resampling: ResamplingArg,
    /// CoDe block size B in steps.
    #[arg(long, default_value_t = 5)]
    pub block: usize,
    /// CoDe / best-of-N / SVDD: pick from softmax(τ·r) instead of the argmax.
    #[arg(long, value_name = "τ")]
    pub tau: Option<f64>,
    /// DSearch: beams kept at the end (b).
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// DSearch: children per beam (M).
    #[arg(long, default_value_t = 2)]
    pub children: usize,
    /// DSearch: width multiplier of a wide expansion (w).
    #[arg(id = "dsearch_width", long = "dsearch-width", default_value_t = 2)]
    pub width: usize,
    /// DSearch-R replace rate ρ (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub replace: f64,
    /// Noise search: rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Zero-order search: neighbours per round.
    #[arg(long, default_value_t = 4)]
    pub neighbours: usize,
    /// Zero-order search: cosine of a neighbour to its pivot.
    #[arg(long, default_value_t = 0.95)]
    pub threshold: f64,
    /// Per-step guidance (GFCG, autoguidance, dynamic CFG, FlowChef, replacement) settings.
    #[command(flatten)]
    pub per_step: super::per_step_args::PerStepArgs,
    /// Reward plugin settings.
    #[command(flatten)]
    pub plugin: crate::run::plugin_args::PluginArgs,
}

impl Default for StrategyArgs {
    /// clap's defaults, as the `#[arg]` attributes above state them.
    fn default() -> Self {
        crate::run::clap_defaults::parse_defaults()
    }
}

/// FK potentials on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PotentialArg {
    /// exp(λ(r_t − r_prev)).
    Diff,
    /// exp(λ·max(r_t, r_prev)).
    Max,
    /// exp(λ(r_t + r_prev)).
    Add,
    /// exp(λ·r_t).
    Rt,
}

/// Resampling schemes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ResamplingArg {
    /// Independent categorical draws.
    Multinomial,
    /// One uniform, evenly spaced points.
    Systematic,
    /// One uniform per stratum.
    Stratified,
    /// Deterministic copies plus multinomial remainder.
    Residual,
}
