//! Zero-order search over initial noise (Ma et al. 2025, arXiv 2501.09732): each round samples neighbours of
//! the best noise so far on its sphere (cosine ≥ c to the pivot) and moves to the best.

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use steerdiff_guidance::strategy::{NoiseSearch, SearchKind};

use super::{Built, Def, EvalUse, Inputs, RewardUse};

/// `--guidance zo-search`.
pub const DEF: Def = Def {
    name: "zo-search",
    about: "Zero-order search over initial noise (neighbours on the pivot's sphere).",
    list: "zero-order noise search (Ma et al. 2025): --neighbours N at cosine --threshold c \
           on the pivot's sphere, --rounds R",
    particles: false,
    reward: RewardUse::Required,
    eval: EvalUse::AtEachCfg,
    build,
};

/// The zero-order search's own flags.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct Flags {
    /// Zero-order search: neighbours per round.
    #[arg(long, default_value_t = 4)]
    pub neighbours: usize,
    /// Zero-order search: cosine of a neighbour to its pivot.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub threshold: f64,
}

crate::run::clap_defaults::defaults_from_clap!(Flags);

fn build(i: &Inputs) -> Result<Built> {
    let a = &i.args.flags.zo_search;
    Ok(Built::Search(NoiseSearch {
        reward: i.reward()?,
        rounds: i.args.rounds,
        kind: SearchKind::ZeroOrder {
            neighbours: a.neighbours,
            threshold: a.threshold,
        },
    }))
}
