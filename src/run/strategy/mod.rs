//! Steering strategies as the command line, `steerdiff list`, `steerdiff eval` and the run
//! records see them. A strategy is **one file plus one line** in the list below: its file
//! holds its `DEF` ([`Def`]: name, help, `list` line, whether it runs particles, how it
//! reads `--reward`, how `eval` runs it, its build function) and its own `Flags` (clap's
//! `#[arg]`s, whose defaults are the only statement of them); the list's macro makes
//! [`StrategyKind`], declares each file as a public module (`strategy::fk`), and gathers the
//! flags into [`SteeringFlags`] and [`PerStepFlags`].
//!
//! Per-step guidance (CFG) composes with every strategy here: FK runs CFG inside every
//! particle, CoDe values candidates by their guided look-ahead, and so on.
//!
//! ```
//! use steerdiff::run::strategy::StrategyKind;
//!
//! let fk = StrategyKind::from_name("fk").unwrap();
//! assert!(fk.def().particles);
//! assert_eq!(StrategyKind::ALL[0], StrategyKind::default()); // plain sampling
//! ```

mod args;
mod build;
mod def;
mod inputs;
pub mod interval;
mod kind;
mod observe;
mod per_step_args;
mod registry;

registry::strategies! {
    steering: {
        None => none,
        Fk => fk,
        Code => code,
        Bon => bon,
        Svdd => svdd,
        Dsearch => dsearch,
        RandomSearch => random_search,
        ZoSearch => zo_search,
    }
    per_step: {
        Gfcg => gfcg,
        Autoguidance => autoguidance,
        DynamicCfg => dynamic_cfg,
        Flowchef => flowchef,
        Replace => replace,
    }
}

pub use args::StrategyArgs;
pub use build::{build, names};
pub use def::{Built, Def, EvalUse, RewardUse};
pub use fk::{PotentialArg, ResamplingArg};
pub use flowchef::TaskArg;
pub use gfcg::{GuideArg, ReferenceArg, ScaleRuleArg};
pub use inputs::{ClassifierFn, Inputs, Target};
pub use per_step_args::PerStepArgs;

pub use crate::run::help::TEXT_TO_IMAGE;

/// The flag group of a strategy with no flags of its own.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Serialize)]
pub struct NoFlags {}

impl StrategyArgs {
    /// Particles per group the strategy runs with (1 unless its `DEF` says it runs
    /// `--particles`).
    pub fn particles_per_group(&self) -> usize {
        if self.kind.def().particles {
            self.particles
        } else {
            1
        }
    }
}
