//! SVDD-PM (Li et al. 2024, "Derivative-Free Guidance in Continuous and Discrete Diffusion
//! Models with Soft Value-Based Decoding", arXiv 2408.08252): every step, N one-step children per group and
//! the best by the reward of its x̂0 goes on.

use anyhow::Result;
use steerdiff_guidance::strategy::Code;

use super::{Built, Def, EvalUse, Inputs, NoFlags, RewardUse};

/// `--guidance svdd`.
pub const DEF: Def = Def {
    name: "svdd",
    about: "SVDD-PM: best of N one-step children every step.",
    list: "SVDD-PM (Li et al. 2024), best of N one-step children every step (--particles N) \
           [--tau τ for softmax selection]",
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
        ..Code::svdd(i.reward()?)
    })))
}
