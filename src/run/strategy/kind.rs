//! The strategies `--guidance` can name, and what each one needs of the engine.

use clap::ValueEnum;
use serde::Serialize;

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
    /// the loaded model by [`super::per_step`], not from a reward).
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
