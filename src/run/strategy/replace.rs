//! Inpainting by replacement, the classic baseline (the imputation of Song et al. 2021,
//! "Score-Based Generative Modeling through Stochastic Differential Equations"): each step
//! the known pixels are reset to the observed image noised to the step's level.

use anyhow::Result;
use steerdiff_guidance::strategy::Replacement;

use super::observe::{mask_and_target, observed};
use super::{Built, Def, EvalUse, Inputs, NoFlags, RewardUse};

/// `--guidance replace`.
pub const DEF: Def = Def {
    name: "replace",
    about: "Inpainting by replacement (baseline): known pixels reset to the noised --image each step.",
    list: "inpainting by replacement (baseline): --image PNG --mask PNG | --box X0,Y0,X1,Y1",
    particles: false,
    reward: RewardUse::Unused,
    eval: EvalUse::Refused(
        "it needs an image and a mask; compare it with FlowChef in `steerdiff toy inpaint`",
    ),
    build,
};

/// It has no flags of its own (`--image`, `--mask`, `--box`).
pub type Flags = NoFlags;

fn build(i: &Inputs) -> Result<Built> {
    let obs = observed(i, true)?;
    let (mask, target) = mask_and_target(&obs, i)?;
    Ok(Built::Step(Box::new(Replacement { mask, target })))
}
