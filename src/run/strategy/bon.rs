//! Best-of-N: N independent samples per group, the best by the reward on the final samples.

use anyhow::Result;
use steerdiff_guidance::strategy::Code;

use super::{Built, Def, EvalUse, Inputs, NoFlags, RewardUse};

/// `--guidance bon`.
pub const DEF: Def = Def {
    name: "bon",
    about: "Best-of-N on final samples.",
    list: "best-of-N on final samples (--particles N) [--tau τ for softmax selection]",
    particles: true,
    reward: RewardUse::Required,
    eval: EvalUse::AtEachCfg,
    build,
};

/// It has no flags of its own (`--particles`, `--tau`).
pub type Flags = NoFlags;

fn build(i: &Inputs) -> Result<Built> {
    Ok(Built::Step(Box::new(Code {
        selection: i.selection()?,
        ..Code::best_of_n(i.reward()?)
    })))
}
