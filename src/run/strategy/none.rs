//! Plain sampling: no strategy (CFG, set with `--cfg`, still applies).

use anyhow::Result;

use super::{Built, Def, EvalUse, Inputs, NoFlags, RewardUse};

/// `--guidance none`.
pub const DEF: Def = Def {
    name: "none",
    about: "Plain sampling (with CFG if asked).",
    list: "plain sampling, one particle per group (the default); --cfg S still applies",
    particles: false,
    reward: RewardUse::Unused,
    eval: EvalUse::AtEachCfg,
    build,
};

/// It has no flags of its own.
pub type Flags = NoFlags;

fn build(_: &Inputs) -> Result<Built> {
    Ok(Built::None)
}
