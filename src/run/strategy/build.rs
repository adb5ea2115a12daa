//! Building the run's strategy: the checks every strategy shares, read off its [`Def`],
//! then the strategy's own `build`.

use std::sync::Arc;

use anyhow::Result;
use steerdiff_guidance::Reward;

use super::{Built, Inputs, RewardUse, StrategyArgs, StrategyKind, Target};
use crate::error::input_error;
use crate::run::observation::Observation;

/// Builds `args.kind` for the model `target` over `steps` steps; `observation` replaces
/// --image / --mask / --box when given (the library's way to pass pixels); `rewards` parses
/// reward specs.
pub fn build(
    args: &StrategyArgs,
    steps: usize,
    target: &Target,
    observation: Option<&Observation>,
    rewards: &dyn Fn(&str) -> Result<Arc<dyn Reward>>,
) -> Result<Built> {
    let def = args.kind.def();
    match (def.reward, &args.reward) {
        (RewardUse::Unused, Some(_)) if args.kind == StrategyKind::None => input_error!(
            "--reward is given but no --guidance strategy uses it (e.g. --guidance fk)"
        ),
        (RewardUse::Unused, Some(_)) => input_error!(
            "--reward is not used by --guidance {} (only {} take an evaluator reward)",
            def.name,
            names(|k| k.def().reward == RewardUse::Optional)
        ),
        (RewardUse::Required, None) => input_error!(
            "--guidance {} needs --reward SPEC (see `steerdiff list`)",
            def.name
        ),
        _ => {}
    }
    if def.particles && args.particles == 0 {
        input_error!("--particles must be at least 1");
    }
    if !args.per_step.zero_shot.is_empty() && !target.text {
        input_error!(
            "--zero-shot names the competing prompts of a text-to-image model's zero-shot CLIP \
             classifier; `{}` has its own classes",
            target.model
        );
    }
    (def.build)(&Inputs {
        kind: args.kind,
        args,
        steps,
        target,
        observation,
        rewards,
    })
}

/// The names of the strategies `keep` selects, for messages (`dynamic-cfg`, `a, b`).
pub fn names(keep: impl Fn(StrategyKind) -> bool) -> String {
    StrategyKind::ALL
        .iter()
        .copied()
        .filter(|&k| keep(k))
        .map(StrategyKind::cli_name)
        .collect::<Vec<_>>()
        .join(", ")
}
