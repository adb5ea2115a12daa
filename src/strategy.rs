//! Choosing a steering strategy on the command line: `--guidance NAME` and its flags.
//!
//! Per-step guidance (CFG) composes with every strategy here: FK runs CFG inside every
//! particle, CoDe values candidates by their guided look-ahead, and so on. The per-step
//! strategies (`gfcg`, `autoguidance`, `dynamic-cfg`, `flowchef`, `replace`) need the loaded
//! model (its classifier, its weaker twin, its sample shape) and are built by
//! [`crate::per_step`].

use std::sync::Arc;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;
use steerdiff_guidance::strategy::{
    Code, DSearch, FkSteering, NoiseSearch, Potential, ResampleSchedule, SearchKind,
    SearchSchedule, Selection,
};
use steerdiff_guidance::{Guidance, Resampling, Reward};

use crate::error::input_error;

/// The strategies `--guidance` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Plain sampling (with CFG if asked).
    #[default]
    None,
    /// Feynman–Kac steering: K particles, potentials on r(x̂0), resampling.
    Fk,
    /// CoDe: blockwise best-of-N with look-ahead values.
    Code,
    /// Best-of-N on final samples.
    Bon,
    /// SVDD-PM: best of N one-step children every step.
    Svdd,
    /// DSearch: dynamic beam search with pruning.
    Dsearch,
    /// Random search over initial noise (rounds with 2^r fresh noises).
    RandomSearch,
    /// Zero-order search over initial noise (neighbours on the pivot's sphere).
    ZoSearch,
    /// GFCG: extrapolate away from the classifier's most confusable class (--gfcg-scale W).
    Gfcg,
    /// Autoguidance: guide with the weaker twin toy-weak (--autoguidance-scale W).
    Autoguidance,
    /// Dynamic CFG: each step picks the CFG scale of --cfg-candidates the classifier likes best.
    DynamicCfg,
    /// FlowChef: steer a rectified flow towards --task's measurement with the velocity frozen.
    Flowchef,
    /// Inpainting by replacement (baseline): known pixels reset to the noised --image each step.
    Replace,
}

impl StrategyKind {
    /// Whether the strategy branches or resamples particles (and so needs a stochastic sampler).
    pub fn needs_noise(self) -> bool {
        matches!(
            self,
            StrategyKind::Fk
                | StrategyKind::Code
                | StrategyKind::Bon
                | StrategyKind::Svdd
                | StrategyKind::Dsearch
        )
    }

    /// Whether it searches over whole trajectories (rounds) instead of hooking into steps.
    pub fn is_search(self) -> bool {
        matches!(self, StrategyKind::RandomSearch | StrategyKind::ZoSearch)
    }

    /// Whether it changes each step's prediction or state of a single particle (built from
    /// the loaded model by [`crate::per_step`], not from a reward).
    pub fn is_per_step(self) -> bool {
        matches!(
            self,
            StrategyKind::Gfcg
                | StrategyKind::Autoguidance
                | StrategyKind::DynamicCfg
                | StrategyKind::Flowchef
                | StrategyKind::Replace
        )
    }

    /// The name as written on the command line (`dynamic-cfg`).
    pub fn cli_name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

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
    pub per_step: crate::per_step::PerStepArgs,
    /// Reward plugin settings.
    #[command(flatten)]
    pub plugin: crate::plugin_args::PluginArgs,
}

impl Default for StrategyArgs {
    fn default() -> Self {
        StrategyArgs {
            kind: StrategyKind::None,
            reward: None,
            eval_reward: None,
            particles: 4,
            lambda: 1.0,
            potential: PotentialArg::Diff,
            resample_every: None,
            resample_start: None,
            ess_threshold: None,
            resampling: ResamplingArg::Multinomial,
            block: 5,
            tau: None,
            beams: 1,
            children: 2,
            width: 2,
            replace: 0.0,
            rounds: 3,
            neighbours: 4,
            threshold: 0.95,
            per_step: crate::per_step::PerStepArgs::default(),
            plugin: crate::plugin_args::PluginArgs::default(),
        }
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

/// A built strategy: per-step hooks for the engine, or a search over whole trajectories.
pub enum Built {
    /// No strategy.
    None,
    /// A per-step strategy.
    Step(Box<dyn Guidance>),
    /// A search over initial noise.
    Search(NoiseSearch),
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Built::None => write!(f, "None"),
            Built::Step(g) => write!(f, "Step({})", g.name()),
            Built::Search(s) => write!(f, "Search({:?}, rounds={})", s.kind, s.rounds),
        }
    }
}

impl StrategyArgs {
    /// Particles per group the strategy runs with (1 for plain sampling and searches).
    pub fn particles_per_group(&self) -> usize {
        match self.kind {
            StrategyKind::None | StrategyKind::RandomSearch | StrategyKind::ZoSearch => 1,
            k if k.is_per_step() => 1,
            _ => self.particles,
        }
    }

    /// Builds the strategy for a schedule of `steps` steps; `reward` parses `--reward`.
    pub fn build(
        &self,
        steps: usize,
        reward: impl Fn(&str) -> Result<Arc<dyn Reward>>,
    ) -> Result<Built> {
        if self.kind.is_per_step() {
            input_error!(
                "--guidance {} is a per-step strategy: it is built against the loaded model \
                 (crate::per_step::build), not from a reward",
                self.kind.cli_name()
            );
        }
        if self.kind == StrategyKind::None {
            if self.reward.is_some() {
                input_error!(
                    "--reward is given but no --guidance strategy uses it (e.g. --guidance fk)"
                );
            }
            return Ok(Built::None);
        }
        let Some(spec) = &self.reward else {
            input_error!(
                "--guidance {} needs --reward SPEC (see `steerdiff list`)",
                self.kind.cli_name()
            );
        };
        if self.particles == 0 {
            input_error!("--particles must be at least 1");
        }
        let r = reward(spec)?;
        let selection = match self.tau {
            None => Selection::Argmax,
            Some(tau) if tau.is_finite() && tau > 0.0 => Selection::Softmax { tau },
            Some(tau) => input_error!("--tau must be a positive number (got {tau})"),
        };
        let built: Box<dyn Guidance> = match self.kind {
            StrategyKind::None
            | StrategyKind::Gfcg
            | StrategyKind::Autoguidance
            | StrategyKind::DynamicCfg
            | StrategyKind::Flowchef
            | StrategyKind::Replace => unreachable!("handled above"),
            StrategyKind::Fk => {
                if !(self.lambda.is_finite() && self.lambda >= 0.0) {
                    input_error!("--lambda must be a finite number ≥ 0 (got {})", self.lambda);
                }
                let mut schedule = ResampleSchedule::for_steps(steps);
                if let Some(e) = self.resample_every {
                    schedule.every = e;
                }
                if let Some(s) = self.resample_start {
                    schedule.start = s;
                }
                Box::new(FkSteering {
                    reward: r,
                    lambda: self.lambda,
                    potential: match self.potential {
                        PotentialArg::Diff => Potential::Diff,
                        PotentialArg::Max => Potential::Max,
                        PotentialArg::Add => Potential::Add,
                        PotentialArg::Rt => Potential::Rt,
                    },
                    schedule,
                    adaptive: self.ess_threshold,
                    resampling: match self.resampling {
                        ResamplingArg::Multinomial => Resampling::Multinomial,
                        ResamplingArg::Systematic => Resampling::Systematic,
                        ResamplingArg::Stratified => Resampling::Stratified,
                        ResamplingArg::Residual => Resampling::Residual,
                    },
                })
            }
            StrategyKind::Code => Box::new(Code {
                selection,
                ..Code::new(r, self.block)
            }),
            StrategyKind::Bon => Box::new(Code {
                selection,
                ..Code::best_of_n(r)
            }),
            StrategyKind::Svdd => Box::new(Code {
                selection,
                ..Code::svdd(r)
            }),
            StrategyKind::Dsearch => Box::new(DSearch {
                reward: r,
                beams: self.beams,
                children: self.children,
                width: self.width,
                search: SearchSchedule::Exponential,
                replace: self.replace,
            }),
            StrategyKind::RandomSearch => {
                return Ok(Built::Search(NoiseSearch {
                    reward: r,
                    rounds: self.rounds,
                    kind: SearchKind::Random,
                }))
            }
            StrategyKind::ZoSearch => {
                return Ok(Built::Search(NoiseSearch {
                    reward: r,
                    rounds: self.rounds,
                    kind: SearchKind::ZeroOrder {
                        neighbours: self.neighbours,
                        threshold: self.threshold,
                    },
                }))
            }
        };
        Ok(Built::Step(built))
    }
}
