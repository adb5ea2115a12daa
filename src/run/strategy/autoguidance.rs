//! Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of
//! Itself", arXiv 2406.02507): D = D_weak + w·(D − D_weak), with the toy's twin `toy-weak`
//! or `--guide-model` as the bad version.

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use steerdiff_guidance::strategy::Autoguidance;

use super::inputs::finite;
use super::{Built, Def, EvalUse, Inputs, RewardUse};
use crate::error::input_error;

/// `--guidance autoguidance`.
pub const DEF: Def = Def {
    name: "autoguidance",
    about: "Autoguidance: guide with the weaker twin toy-weak (--autoguidance-scale W).",
    list: "guide with a bad version of the model (Karras et al. 2024), toy-weak for the toy, \
           --guide-model MODEL for text-to-image models: --autoguidance-scale W",
    particles: false,
    reward: RewardUse::Unused,
    eval: EvalUse::AtEachCfg,
    build,
};

/// Autoguidance's own flags.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct Flags {
    /// Autoguidance weight w (1 = none): D = D_weak + w·(D − D_weak), D_weak = toy-weak.
    #[arg(
        long,
        value_name = "W",
        default_value_t = 2.0,
        allow_negative_numbers = true
    )]
    pub autoguidance_scale: f64,
}

crate::run::clap_defaults::defaults_from_clap!(Flags);

fn build(i: &Inputs) -> Result<Built> {
    let scale = i.args.per_step.flags.autoguidance.autoguidance_scale;
    finite("--autoguidance-scale", scale)?;
    if !i.target.toy && !i.target.has_guide {
        input_error!(
            "--guidance autoguidance needs a weaker version of the model: the toy has one \
             (toy-weak); for text-to-image models name it with --guide-model"
        );
    }
    Ok(Built::Step(Box::new(Autoguidance { scale, guide: 1 })))
}
