//! The per-step strategies on the command line — GFCG, autoguidance, dynamic CFG, FlowChef and
//! inpainting by replacement — their flags ([`PerStepArgs`]) and how they are built for the
//! loaded model ([`build`]). Unlike the particle strategies they need the model itself: its
//! guidance classifier (GFCG, dynamic CFG, FlowChef's class cost), its weaker twin
//! (autoguidance), its sample shape and path (FlowChef, replacement). Every check happens
//! here, before sampling, and fails with one line naming the problem and the fix.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use serde::Serialize;
use steerdiff_guidance::strategy::{
    Autoguidance, ClassifierCost, Cost, DynamicCfg, FlowChef, GaussianDeblur, Gfcg,
    GradientEstimate, MaskedSquare, ReferenceRule, Replacement, ScaleRule, SuperResolution,
};
use steerdiff_guidance::{ClassLogProb, Classifier, Condition, Guidance, Reward};
use steerdiff_pipelines::toy::model::{self as toy_model, ToyClassifier};
use steerdiff_pipelines::{GmmClassifier, GmmSpec};

use crate::error::input_error;
use crate::observation::{self, Observation};
use crate::strategy::StrategyKind;
use crate::toy_grad::ToyGradClassifier;

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
    #[arg(long, value_name = "LO,HI", value_parser = crate::cli::parse_interval, allow_hyphen_values = true)]
    pub gfcg_interval: Option<(f64, f64)>,
    /// GFCG: the model giving the reference-class prediction (weak = GFCG + autoguidance).
    #[arg(long, value_enum, default_value_t = GuideArg::Main)]
    pub gfcg_guide: GuideArg,
    /// Text-to-image GFCG / dynamic CFG: the competing prompts of the zero-shot CLIP
    /// classifier (`;`-separated, e.g. "a dog;a fox"); the prompt itself is class 0.
    #[arg(long, value_name = "TEXT;TEXT…", value_delimiter = ';', help_heading = crate::cli::TEXT_TO_IMAGE)]
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
    fn default() -> Self {
        PerStepArgs {
            gfcg_scale: 3.0,
            zero_shot: Vec::new(),
            gfcg_reference: ReferenceArg::Competitor,
            gfcg_scale_rule: ScaleRuleArg::Confusion,
            gfcg_interval: None,
            gfcg_guide: GuideArg::Main,
            autoguidance_scale: 2.0,
            cfg_candidates: vec![1.0, 2.0, 3.0, 5.0],
            task: TaskArg::Inpaint,
            image: None,
            mask: None,
            fill_box: None,
            lr: None,
            inner_steps: 1,
            guided_steps: None,
            zo_pairs: None,
            zo_mu: 0.05,
            superres_factor: 2,
            blur_sigma: 1.0,
            blur_size: 5,
        }
    }
}

/// What [`build`] needs to know about the loaded model.
pub struct Target<'a> {
    /// The model as named (`toy`, `gmm:…`), for messages.
    pub model: &'a str,
    /// The mixture, when the model is one (its Bayes classifier guides GFCG / dynamic CFG).
    pub gmm: Option<&'a GmmSpec>,
    /// True for the toy models.
    pub toy: bool,
    /// True when the model's path is a rectified flow.
    pub flow: bool,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// What every group is conditioned on.
    pub cond: Condition,
    /// The CFG scale of the run (1 = none).
    pub cfg: f64,
    /// The model's own guidance classifier, when the caller has one (a zero-shot CLIP
    /// classifier over prompts for text-to-image models); else the toy's or the mixture's.
    pub classifier: Option<Arc<dyn Classifier>>,
    /// The caller supplies a weaker guiding model as engine model 1 (`--guide-model`); the toy
    /// has its own twin.
    pub has_guide: bool,
}

/// A built per-step strategy.
pub struct PerStep {
    /// The strategy.
    pub guidance: Box<dyn Guidance>,
    /// It addresses the weaker twin as engine model 1 (autoguidance, GFCG on the weak model).
    pub needs_weak: bool,
}

fn finite(flag: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        input_error!("{flag} must be a finite number (got {v})");
    }
    Ok(())
}

fn toy_classifier() -> Result<ToyClassifier> {
    ToyClassifier::load(&toy_model::assets_dir(), toy_model::CLASSIFIER)
        .context("loading the toy guidance classifier")
}

/// The guidance classifier of the model: the toy's `toy-classifier`, or a mixture's exact
/// Bayes classifier.
fn classifier(kind: StrategyKind, t: &Target) -> Result<Arc<dyn Classifier>> {
    if let Some(c) = &t.classifier {
        return Ok(c.clone());
    }
    if t.toy {
        return Ok(Arc::new(toy_classifier()?));
    }
    match t.gmm {
        Some(spec) => Ok(Arc::new(GmmClassifier { spec: spec.clone() })),
        None => input_error!(
            "--guidance {} needs a classifier of the model's samples; `{}` has none (use --model toy)",
            kind.cli_name(),
            t.model
        ),
    }
}

fn class_of(kind: StrategyKind, t: &Target) -> Result<u32> {
    match t.cond {
        Condition::Class(c) => Ok(c),
        Condition::Prompt(i) if t.classifier.is_some() => Ok(i),
        _ => input_error!(
            "--guidance {} needs --class NAME: it steers towards a class",
            kind.cli_name()
        ),
    }
}

/// The observed image and its known pixels, from `observation` (given by the library) or
/// from --image / --mask / --box, checked against the model's sample shape.
fn observed(
    kind: StrategyKind,
    a: &PerStepArgs,
    t: &Target,
    given: Option<&Observation>,
    need_mask: bool,
) -> Result<Observation> {
    let dims: [usize; 3] = match t.sample_shape.as_slice() {
        [c, h, w] if t.toy => [*c, *h, *w],
        _ => input_error!(
            "--guidance {} works on images; `{}` samples {:?}-vectors (use --model toy)",
            kind.cli_name(),
            t.model,
            t.sample_shape
        ),
    };
    let mut obs = match given {
        Some(o) => o.clone(),
        None => {
            let Some(path) = &a.image else {
                input_error!(
                    "--guidance {} needs --image PNG (the observed {}×{} image)",
                    kind.cli_name(),
                    dims[2],
                    dims[1]
                );
            };
            let (image, d) = observation::read_rgb(path, "--image")?;
            Observation {
                image,
                dims: d,
                known: None,
            }
        }
    };
    if need_mask && obs.dims != dims {
        input_error!(
            "--image is {}×{} but `{}` makes {}×{} images; give a {}×{} PNG",
            obs.dims[2],
            obs.dims[1],
            t.model,
            dims[2],
            dims[1],
            dims[2],
            dims[1]
        );
    }
    if !need_mask {
        if a.mask.is_some() || a.fill_box.is_some() {
            input_error!(
                "--mask / --box are for inpainting only (--task inpaint or --guidance replace)"
            );
        }
        return Ok(obs);
    }
    if obs.known.is_none() {
        obs.known = Some(match (&a.mask, a.fill_box) {
            (Some(_), Some(_)) => {
                input_error!("give either --mask PNG or --box X0,Y0,X1,Y1, not both")
            }
            (Some(m), None) => observation::read_mask(m, obs.dims)?,
            (None, Some(b)) => observation::box_mask(b, obs.dims)?,
            (None, None) => input_error!(
                "inpainting needs the known pixels: --mask PNG (white = known) or --box \
                 X0,Y0,X1,Y1 (the rectangle to fill, e.g. 8,8,24,24)"
            ),
        });
    }
    Ok(obs)
}

fn tensor(v: &[f32], dims: [usize; 3]) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), dims.as_slice(), &Device::Cpu)?)
}

/// The inpainting pair `(mask, target)` as tensors shaped like one sample.
fn mask_and_target(obs: &Observation) -> Result<(Tensor, Tensor)> {
    let known = obs.known.as_deref().unwrap_or(&[]);
    if known.len() != obs.image.len() {
        input_error!(
            "the known-pixel mask has {} values for an image of {}; give a mask of the image's size",
            known.len(),
            obs.image.len()
        );
    }
    Ok((tensor(known, obs.dims)?, tensor(&obs.image, obs.dims)?))
}

fn flowchef(a: &PerStepArgs, t: &Target, given: Option<&Observation>) -> Result<FlowChef> {
    let kind = StrategyKind::Flowchef;
    if !t.flow {
        input_error!(
            "--guidance flowchef steers rectified-flow models only; `{}` is sampled on a VP \
             diffusion path (use --path flow, or --model toy)",
            t.model
        );
    }
    let (cost, default_lr): (Box<dyn Cost>, f64) = match a.task {
        TaskArg::Inpaint => {
            let obs = observed(kind, a, t, given, true)?;
            let (mask, target) = mask_and_target(&obs)?;
            // η = ½ would put x̂0 exactly on the known pixels each step; a partial step
            // (residual ×0.6 per step) leaves the model room to blend the fill with its
            // context. On held-out toy images (data seed 9100, 60 images, the toy U-Net at
            // 8,250 steps), η 0.1 / 0.2 / 0.3 / 0.5 gave fill errors 0.126 / 0.117 / 0.118 /
            // 0.138 with known-pixel errors 0.013 / 0.007 / 0.004 / 0.0002.
            (Box::new(MaskedSquare { mask, target }), 0.2)
        }
        TaskArg::Superres => {
            let obs = observed(kind, a, t, given, false)?;
            let f = a.superres_factor;
            let [c, h, w] = [t.sample_shape[0], t.sample_shape[1], t.sample_shape[2]];
            if f == 0 || h % f != 0 || w % f != 0 {
                input_error!("--superres-factor {f} must divide the image size {w}×{h}");
            }
            let img = tensor(&obs.image, obs.dims)?;
            let target = if obs.dims == [c, h, w] {
                img.unsqueeze(0)?.avg_pool2d(f)?.squeeze(0)?
            } else if obs.dims == [c, h / f, w / f] {
                img
            } else {
                input_error!(
                    "--image is {}×{}; superres ×{f} takes the {w}×{h} image or its {}×{} \
                     down-sampling",
                    obs.dims[2],
                    obs.dims[1],
                    w / f,
                    h / f
                );
            };
            let cost = SuperResolution { factor: f, target };
            (Box::new(cost), (f * f) as f64 / 2.0)
        }
        TaskArg::Deblur => {
            let obs = observed(kind, a, t, given, false)?;
            if obs.dims != [t.sample_shape[0], t.sample_shape[1], t.sample_shape[2]] {
                input_error!(
                    "--image is {}×{} but `{}` makes {}×{} images; give the observed (blurred) \
                     image at that size",
                    obs.dims[2],
                    obs.dims[1],
                    t.model,
                    t.sample_shape[2],
                    t.sample_shape[1]
                );
            }
            let cost =
                GaussianDeblur::new(a.blur_sigma, a.blur_size, tensor(&obs.image, obs.dims)?)
                    .context("--blur-sigma / --blur-size")?;
            (Box::new(cost), 0.5)
        }
        TaskArg::Class => {
            if !t.toy {
                input_error!(
                    "--task class differentiates the toy guidance classifier; `{}` has none \
                     (use --model toy)",
                    t.model
                );
            }
            if a.image.is_some() || a.mask.is_some() || a.fill_box.is_some() {
                input_error!(
                    "--task class takes no --image / --mask / --box (it steers towards --class)"
                );
            }
            let class = class_of(kind, t)?;
            let clf = Arc::new(ToyGradClassifier(toy_classifier()?));
            (Box::new(ClassifierCost::new(clf, class, 1.0)), 0.1)
        }
    };
    let lr = a.lr.unwrap_or(default_lr);
    if !(lr.is_finite() && lr > 0.0) {
        input_error!("--lr must be a positive number (got {lr})");
    }
    if a.inner_steps == 0 {
        input_error!("--inner-steps must be at least 1");
    }
    let estimate = match a.zo_pairs {
        None => GradientEstimate::Exact,
        Some(0) => input_error!("--zo-pairs must be at least 1"),
        Some(pairs) => {
            if !(a.zo_mu.is_finite() && a.zo_mu > 0.0) {
                input_error!("--zo-mu must be a positive number (got {})", a.zo_mu);
            }
            GradientEstimate::ZerothOrder { pairs, mu: a.zo_mu }
        }
    };
    Ok(FlowChef {
        cost,
        lr,
        iterations: a.inner_steps,
        max_steps: a.guided_steps,
        estimate,
    })
}

/// Builds the per-step strategy `kind` for the model `t`; `observation` replaces --image /
/// --mask / --box when given (the library's way to pass pixels); `reward` parses --reward.
pub fn build(
    kind: StrategyKind,
    a: &PerStepArgs,
    reward_spec: Option<&str>,
    t: &Target,
    observation: Option<&Observation>,
    reward: &dyn Fn(&str) -> Result<Arc<dyn Reward>>,
) -> Result<PerStep> {
    if reward_spec.is_some() && kind != StrategyKind::DynamicCfg {
        input_error!(
            "--reward is not used by --guidance {} (only dynamic-cfg takes an evaluator reward)",
            kind.cli_name()
        );
    }
    if !a.zero_shot.is_empty() && t.classifier.is_none() {
        input_error!(
            "--zero-shot names the competing prompts of a text-to-image model's zero-shot CLIP \
             classifier; `{}` has its own classes",
            t.model
        );
    }
    let mut needs_weak = false;
    let guidance: Box<dyn Guidance> = match kind {
        StrategyKind::Gfcg => {
            finite("--gfcg-scale", a.gfcg_scale)?;
            class_of(kind, t)?;
            if let Some((lo, hi)) = a.gfcg_interval {
                if lo.is_nan() || hi.is_nan() || lo < 0.0 || lo > hi {
                    input_error!("--gfcg-interval {lo},{hi}: need 0 ≤ LO ≤ HI (noise levels σ/α)");
                }
            }
            let mut g = Gfcg::new(classifier(kind, t)?, a.gfcg_scale);
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
                if !t.toy && !t.has_guide {
                    input_error!(
                        "--gfcg-guide weak needs a weaker model: the toy's twin (--model toy), or \
                         --guide-model for text-to-image models"
                    );
                }
                g.model = 1;
                needs_weak = true;
            }
            Box::new(g)
        }
        StrategyKind::Autoguidance => {
            finite("--autoguidance-scale", a.autoguidance_scale)?;
            if !t.toy && !t.has_guide {
                input_error!(
                    "--guidance autoguidance needs a weaker version of the model: the toy has one \
                     (toy-weak); for text-to-image models name it with --guide-model"
                );
            }
            needs_weak = true;
            Box::new(Autoguidance {
                scale: a.autoguidance_scale,
                guide: 1,
            })
        }
        StrategyKind::DynamicCfg => {
            class_of(kind, t)?;
            if t.cfg != 1.0 {
                input_error!(
                    "--guidance dynamic-cfg picks the CFG scale itself from --cfg-candidates; \
                     drop --cfg {}",
                    t.cfg
                );
            }
            if a.cfg_candidates.is_empty() {
                input_error!("--cfg-candidates is empty; give scales such as 1,2,3,5");
            }
            for &s in &a.cfg_candidates {
                finite("every --cfg-candidates scale", s)?;
            }
            let evaluator: Arc<dyn Reward> = match reward_spec {
                Some(spec) => reward(spec)?,
                None => Arc::new(ClassLogProb::new(classifier(kind, t)?)),
            };
            Box::new(DynamicCfg {
                scales: a.cfg_candidates.clone(),
                evaluators: vec![(evaluator, 1.0)],
            })
        }
        StrategyKind::Flowchef => Box::new(flowchef(a, t, observation)?),
        StrategyKind::Replace => {
            let obs = observed(kind, a, t, observation, true)?;
            let (mask, target) = mask_and_target(&obs)?;
            Box::new(Replacement { mask, target })
        }
        _ => input_error!("--guidance {} is not a per-step strategy", kind.cli_name()),
    };
    Ok(PerStep {
        guidance,
        needs_weak,
    })
}
