//! Dynamic CFG via online feedback (Papalampidi et al. 2025, arXiv 2509.16131): each step,
//! every candidate CFG scale's x̂0 is scored and the step takes the best scale.

use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use steerdiff_guidance::strategy::DynamicCfg;
use steerdiff_guidance::{ClassLogProb, Reward};

use super::inputs::finite;
use super::{Built, Def, EvalUse, Inputs, RewardUse};
use crate::error::input_error;

/// `--guidance dynamic-cfg`.
pub const DEF: Def = Def {
    name: "dynamic-cfg",
    about: "Dynamic CFG: each step picks the CFG scale of --cfg-candidates the classifier likes best.",
    list: "per-step greedy CFG scale (Papalampidi et al. 2025), needs --class (or --zero-shot \
           on text-to-image models): --cfg-candidates 1,2,3,5 scored by ln p(class | x̂0) (or \
           --reward); CFG's rows",
    particles: false,
    reward: RewardUse::Optional,
    eval: EvalUse::Once,
    build,
};

/// Dynamic CFG's own flags.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct Flags {
    /// Dynamic CFG: candidate CFG scales scored every step (comma-separated); the evaluator is
    /// ln p(class | x̂0(s)) under the guidance classifier (or --reward if given).
    #[arg(long, value_name = "S,S,…", value_delimiter = ',', default_values_t = [1.0, 2.0, 3.0, 5.0], allow_negative_numbers = true)]
    pub cfg_candidates: Vec<f64>,
}

crate::run::clap_defaults::defaults_from_clap!(Flags);

fn build(i: &Inputs) -> Result<Built> {
    let scales = &i.args.per_step.flags.dynamic_cfg.cfg_candidates;
    i.class()?;
    if i.target.cfg != 1.0 {
        input_error!(
            "--guidance dynamic-cfg picks the CFG scale itself from --cfg-candidates; drop --cfg {}",
            i.target.cfg
        );
    }
    if scales.is_empty() {
        input_error!("--cfg-candidates is empty; give scales such as 1,2,3,5");
    }
    for &s in scales {
        finite("every --cfg-candidates scale", s)?;
    }
    let evaluator: Arc<dyn Reward> = match i.optional_reward()? {
        Some(r) => r,
        None => Arc::new(ClassLogProb::new(i.classifier()?)),
    };
    Ok(Built::Step(Box::new(DynamicCfg {
        scales: scales.clone(),
        evaluators: vec![(evaluator, 1.0)],
    })))
}
