//! What a strategy declares about itself ([`Def`]), and what its build function returns
//! ([`Built`]). Each strategy's file holds one `DEF`; the registry in [`super`] lists them.

use anyhow::Result;
use steerdiff_guidance::strategy::NoiseSearch;
use steerdiff_guidance::Guidance;

use super::inputs::Inputs;

/// A strategy as the command line, `steerdiff list`, `steerdiff eval` and the run records see
/// it, stated once, in the strategy's own file.
pub struct Def {
    /// The name `--guidance` takes (`dynamic-cfg`), also the record's `strategy.kind`.
    pub name: &'static str,
    /// One line for `--guidance`'s help.
    pub about: &'static str,
    /// Its `steerdiff list` line: the paper and the flags that tune it.
    pub list: &'static str,
    /// It runs `--particles` particles per group (every other strategy runs one).
    pub particles: bool,
    /// How it reads `--reward`.
    pub reward: RewardUse,
    /// How `steerdiff eval` runs it.
    pub eval: EvalUse,
    /// Builds it from the run's flags for the loaded model; [`super::build`] has checked
    /// `reward` and `particles` before.
    pub build: fn(&Inputs) -> Result<Built>,
}

/// How a strategy reads `--reward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardUse {
    /// It steers by other means; a `--reward` is refused.
    Unused,
    /// It steers towards the reward; one must be given.
    Required,
    /// It takes one if given (dynamic CFG scores its candidates with it).
    Optional,
}

/// How `steerdiff eval` runs a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalUse {
    /// Once at each `--cfg` scale of the grid.
    AtEachCfg,
    /// Once: it picks its own CFG scale each step.
    Once,
    /// Not at all, for the reason given (it needs inputs a grid does not have).
    Refused(&'static str),
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

impl Built {
    /// Whether the strategy addresses a weaker guiding model as engine model 1
    /// (autoguidance, GFCG on the weak model), from its own [`Guidance::needs`].
    pub fn needs_guide(&self) -> bool {
        matches!(self, Built::Step(g) if g.needs().models > 1)
    }

    /// Whether duplicated particles must diverge, so the sampler must be stochastic
    /// (from the strategy's own [`Guidance::needs`]).
    pub fn needs_noise(&self) -> bool {
        matches!(self, Built::Step(g) if g.needs().stochastic_solver)
    }
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
