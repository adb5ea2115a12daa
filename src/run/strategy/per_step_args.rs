//! Flags of the per-step strategies — GFCG, autoguidance, dynamic CFG, FlowChef and
//! inpainting by replacement ([`PerStepArgs`]); [`super::per_step`] builds them.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::interval::parse_interval;
use crate::run::observation;

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

/// FlowChef's measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TaskArg {
    /// Fill the unknown pixels of --image (--mask PNG, white = known, or --box X0,Y0,X1,Y1).
    #[default]
    Inpaint,
    /// Match --image after average pooling by --superres-factor (--image full size, or already
    /// downsampled).
    Superres,
    /// Match --image, the observed blur of a Gaussian of --blur-sigma pixels.
    Deblur,
    /// Minimise −ln p(--class | x̂0) under the toy guidance classifier (autograd through the
    /// classifier only).
    Class,
}

/// Flags of the per-step strategies.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct PerStepArgs {
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
    /// Text-to-image GFCG / dynamic CFG: the competing prompts of the zero-shot CLIP
    /// classifier (`;`-separated, e.g. "a dog;a fox"); the prompt itself is class 0.
    #[arg(long, value_name = "TEXT;TEXT…", value_delimiter = ';', help_heading = super::TEXT_TO_IMAGE)]
    pub zero_shot: Vec<String>,
    /// Autoguidance weight w (1 = none): D = D_weak + w·(D − D_weak), D_weak = toy-weak.
    #[arg(
        long,
        value_name = "W",
        default_value_t = 2.0,
        allow_negative_numbers = true
    )]
    pub autoguidance_scale: f64,
    /// Dynamic CFG: candidate CFG scales scored every step (comma-separated); the evaluator is
    /// ln p(class | x̂0(s)) under the guidance classifier (or --reward if given).
    #[arg(long, value_name = "S,S,…", value_delimiter = ',', default_values_t = [1.0, 2.0, 3.0, 5.0], allow_negative_numbers = true)]
    pub cfg_candidates: Vec<f64>,
    /// FlowChef: the measurement to match.
    #[arg(long, value_enum, default_value_t = TaskArg::Inpaint)]
    pub task: TaskArg,
    /// FlowChef / replacement: the observed image (PNG; 32×32 RGB for the toy model).
    #[arg(long, value_name = "PNG")]
    pub image: Option<PathBuf>,
    /// Inpainting: the known pixels, a PNG of the image's size (white = known, black = fill).
    #[arg(long, value_name = "PNG")]
    pub mask: Option<PathBuf>,
    /// Inpainting: fill the rectangle X0,Y0,X1,Y1 (pixels, end exclusive; everything else is
    /// known), instead of --mask; e.g. 8,8,24,24 is the centre box of a 32×32 image.
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = observation::parse_box)]
    pub fill_box: Option<[usize; 4]>,
    /// FlowChef: step size η of x_t ← x_t − η·∇L(x̂0) (default: 0.2 for inpaint — 0.5 would
    /// land x̂0 on the known pixels every step, which measured less coherent fills —, 0.5 for
    /// deblur, f²/2 for superres, 0.1 for class).
    #[arg(long, value_name = "η")]
    pub lr: Option<f64>,
    /// FlowChef: inner updates K per guided step (the velocity stays frozen).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub inner_steps: usize,
    /// FlowChef: guide only the first N steps (default: all but the last).
    #[arg(long, value_name = "N")]
    pub guided_steps: Option<usize>,
    /// FlowChef: zeroth-order variant with M antithetic pairs (cost values only; default: the
    /// exact gradient).
    #[arg(long, value_name = "M")]
    pub zo_pairs: Option<usize>,
    /// FlowChef zeroth-order: smoothing radius μ.
    #[arg(long, value_name = "μ", default_value_t = 0.05)]
    pub zo_mu: f64,
    /// FlowChef superres: down-sampling factor f.
    #[arg(long, value_name = "F", default_value_t = 2)]
    pub superres_factor: usize,
    /// FlowChef deblur: the blur's standard deviation in pixels.
    #[arg(long, value_name = "PX", default_value_t = 1.0)]
    pub blur_sigma: f64,
    /// FlowChef deblur: the blur kernel's (odd) size.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub blur_size: usize,
}

impl Default for PerStepArgs {
    /// clap's defaults, as the `#[arg]` attributes above state them.
    fn default() -> Self {
        crate::run::clap_defaults::parse_defaults()
    }
}
