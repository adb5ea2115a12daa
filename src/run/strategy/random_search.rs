//! Random search over initial noise (Ma et al. 2025, "Inference-Time Scaling for Diffusion
//! Models beyond Scaling Denoising Steps", arXiv 2501.09732): round r samples 2^r fresh noises whole and keeps
//! the best final sample by the reward.

use anyhow::Result;
use steerdiff_guidance::strategy::{NoiseSearch, SearchKind};

use super::{Built, Def, EvalUse, Inputs, NoFlags, RewardUse};

/// `--guidance random-search`.
pub const DEF: Def = Def {
    name: "random-search",
    about: "Random search over initial noise (rounds with 2^r fresh noises).",
    list: "noise search (Ma et al. 2025), 2^r fresh noises in round r, --rounds R",
    particles: false,
    reward: RewardUse::Required,
    eval: EvalUse::AtEachCfg,
    build,
};

/// It has no flags of its own (`--rounds`).
pub type Flags = NoFlags;

fn build(i: &Inputs) -> Result<Built> {
    Ok(Built::Search(NoiseSearch {
        reward: i.reward()?,
        rounds: i.args.rounds,
        kind: SearchKind::Random,
    }))
}
