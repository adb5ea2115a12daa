//! Building a particle strategy or a noise search from its flags and a reward.

use std::sync::Arc;

use anyhow::Result;
use steerdiff_guidance::strategy::{
    Code, DSearch, FkSteering, NoiseSearch, Potential, ResampleSchedule, SearchKind,
    SearchSchedule, Selection,
};
use steerdiff_guidance::{Guidance, Resampling, Reward};

use super::args::{PotentialArg, ResamplingArg, StrategyArgs};
use super::kind::StrategyKind;
use crate::error::input_error;

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
                 (per_step::build), not from a reward",
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
