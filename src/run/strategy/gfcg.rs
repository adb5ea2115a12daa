//! GFCG, gradient-free classifier guidance (Shenoy et al. 2024, arXiv 2411.15393): a
//! classifier reads x̂0 of the conditional prediction, picks a reference class and a scale,
//! and x̂0 = x̂0_c + (w_t − 1)(x̂0_c − x̂0_ref).

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;
use steerdiff_guidance::strategy::{Gfcg, ReferenceRule, ScaleRule};

use super::inputs::finite;
use super::interval::parse_interval;
use super::{Built, Def, EvalUse, Inputs, RewardUse};
use crate::error::input_error;

/// `--guidance gfcg`.
pub const DEF: Def = Def {
    name: "gfcg",
    about: "GFCG: extrapolate away from the classifier's most confusable class (--gfcg-scale W).",
    list: "gradient-free classifier guidance (Shenoy et al. 2024), needs --class (or, on \
           text-to-image models, --zero-shot \"TEXT;TEXT\": competitors of the prompt under a \
           zero-shot CLIP classifier): --gfcg-scale W --gfcg-reference competitor|top-if-wrong \
           --gfcg-scale-rule confusion|ratio|constant --gfcg-interval LO,HI --gfcg-guide \
           main|weak; stacks with --cfg",
    particles: false,
    reward: RewardUse::Unused,
    eval: EvalUse::AtEachCfg,
    build,
};

/// GFCG's own flags.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct Flags {
    /// GFCG: maximum scale w (1 = none); x̂0 = x̂0_c + (w_t − 1)(x̂0_c − x̂0_ref), the scale
    /// w_t following --gfcg-scale-rule.
    #[arg(
        long,
        value_name = "W",
        default_value_t = 3.0,
        allow_negative_numbers = true
    )]
    pub gfcg_scale: f64,
    /// GFCG: how the reference class is picked from the classifier's reading of x̂0_c.
    #[arg(long, value_enum, default_value_t = ReferenceArg::Competitor)]
    pub gfcg_reference: ReferenceArg,
    /// GFCG: how the scale follows the classifier's confidence in the target class.
    #[arg(long, value_enum, default_value_t = ScaleRuleArg::Confusion)]
    pub gfcg_scale_rule: ScaleRuleArg,
    /// GFCG: guide only while the noise level σ/α lies in [LO, HI] (default: every step).
    #[arg(long, value_name = "LO,HI", value_parser = parse_interval, allow_hyphen_values = true)]
    pub gfcg_interval: Option<(f64, f64)>,
    /// GFCG: the model giving the reference-class prediction (weak = GFCG + autoguidance).
    #[arg(long, value_enum, default_value_t = GuideArg::Main)]
    pub gfcg_guide: GuideArg,
}

crate::run::clap_defaults::defaults_from_clap!(Flags);

/// GFCG's reference class on the command line ([`ReferenceRule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceArg {
    /// The most probable class other than the target.
    #[default]
    Competitor,
    /// The classifier's top-1 when it is not the target, else the competitor.
    TopIfWrong,
}

/// GFCG's scale rule on the command line ([`ScaleRule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleRuleArg {
    /// w_t = 1 + (w − 1)(1 − p_target): no guidance once the classifier is sure.
    #[default]
    Confusion,
    /// w_t = 1 + (w − 1)·p_ref / (p_target + p_ref).
    Ratio,
    /// w_t = w.
    Constant,
}

/// Which model gives GFCG's reference-class prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GuideArg {
    /// The main model (one extra row per step).
    #[default]
    Main,
    /// The weaker twin toy-weak (GFCG + autoguidance: D_weak(c_ref) + w·(D(c) − D_weak(c_ref))).
    Weak,
}

fn build(i: &Inputs) -> Result<Built> {
    let a = &i.args.per_step.flags.gfcg;
    finite("--gfcg-scale", a.gfcg_scale)?;
    i.class()?;
    if let Some((lo, hi)) = a.gfcg_interval {
        if lo.is_nan() || hi.is_nan() || lo < 0.0 || lo > hi {
            input_error!("--gfcg-interval {lo},{hi}: need 0 ≤ LO ≤ HI (noise levels σ/α)");
        }
    }
    let mut g = Gfcg::new(i.classifier()?, a.gfcg_scale);
    g.reference = match a.gfcg_reference {
        ReferenceArg::Competitor => ReferenceRule::Competitor,
        ReferenceArg::TopIfWrong => ReferenceRule::TopIfWrong,
    };
    g.scale_rule = match a.gfcg_scale_rule {
        ScaleRuleArg::Confusion => ScaleRule::Confusion,
        ScaleRuleArg::Ratio => ScaleRule::Ratio,
        ScaleRuleArg::Constant => ScaleRule::Constant,
    };
    g.interval = a.gfcg_interval;
    if a.gfcg_guide == GuideArg::Weak {
        if !i.target.toy && !i.target.has_guide {
            input_error!(
                "--gfcg-guide weak needs a weaker model: the toy's twin (--model toy), or \
                 --guide-model for text-to-image models"
            );
        }
        g.model = 1;
    }
    Ok(Built::Step(Box::new(g)))
}
