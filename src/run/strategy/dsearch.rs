//! DSearch (Li et al. 2025, "Dynamic Search for Inference-Time Alignment in Diffusion
//! Models", arXiv 2503.02039): a beam search over denoising steps whose beam shrinks on an exponential
//! schedule, with wide expansions and optional replacement of weak beams (DSearch-R).

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use steerdiff_guidance::strategy::{DSearch, SearchSchedule};

use super::{Built, Def, EvalUse, Inputs, RewardUse};
use crate::error::input_error;

/// `--guidance dsearch`.
pub const DEF: Def = Def {
    name: "dsearch",
    about: "DSearch: dynamic beam search with pruning.",
    list: "dynamic beam search (Li et al. 2025): --particles (initial beams) --beams b \
           --children M --dsearch-width w --replace ρ",
    particles: true,
    reward: RewardUse::Required,
    eval: EvalUse::AtEachCfg,
    build,
};

/// DSearch's own flags.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct Flags {
    /// DSearch: beams kept at the end (b).
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// DSearch: children per beam (M).
    #[arg(long, default_value_t = 2)]
    pub children: usize,
    /// DSearch: width multiplier of a wide expansion (w).
    #[arg(id = "dsearch_width", long = "dsearch-width", default_value_t = 2)]
    pub width: usize,
    /// DSearch-R replace rate ρ (0 = off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub replace: f64,
}

crate::run::clap_defaults::defaults_from_clap!(Flags);

fn build(i: &Inputs) -> Result<Built> {
    let a = &i.args.flags.dsearch;
    if a.beams > i.args.particles {
        input_error!(
            "--beams {} is more than --particles {} (the beams DSearch starts with): its beam \
             only shrinks; give --beams at most {}",
            a.beams,
            i.args.particles,
            i.args.particles
        );
    }
    Ok(Built::Step(Box::new(DSearch {
        reward: i.reward()?,
        beams: a.beams,
        children: a.children,
        width: a.width,
        search: SearchSchedule::Exponential,
        replace: a.replace,
    })))
}
