//! CoDe (Singh et al. 2025, "CoDe: Blockwise Control for Denoising Diffusion Models", arXiv 2502.00968):
//! every B steps, N candidate continuations per group and the best by the reward of its
//! look-ahead x̂0 goes on.

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use steerdiff_guidance::strategy::Code;

use super::{Built, Def, EvalUse, Inputs, RewardUse};

/// `--guidance code`.
pub const DEF: Def = Def {
    name: "code",
    about: "CoDe: blockwise best-of-N with look-ahead values.",
    list: "CoDe blockwise best-of-N (Singh et al. 2025): --particles N --block B [--tau τ for \
           softmax selection]; the winner's look-ahead is reused (N·T rows)",
    particles: true,
    reward: RewardUse::Required,
    eval: EvalUse::AtEachCfg,
    build,
};

/// CoDe's own flags.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct Flags {
    /// CoDe block size B in steps.
    #[arg(long, default_value_t = 5)]
    pub block: usize,
}

crate::run::clap_defaults::defaults_from_clap!(Flags);

fn build(i: &Inputs) -> Result<Built> {
    Ok(Built::Step(Box::new(Code {
        selection: i.selection()?,
        ..Code::new(i.reward()?, i.args.flags.code.block)
    })))
}
