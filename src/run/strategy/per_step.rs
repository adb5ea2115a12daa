//! Building the per-step strategies — GFCG, autoguidance, dynamic CFG, FlowChef and
//! inpainting by replacement — for the loaded model ([`build`]). Unlike the particle
//! strategies they need the model itself: its guidance classifier (GFCG, dynamic CFG,
//! FlowChef's class cost), its weaker twin (autoguidance), its sample shape and path
//! (FlowChef, replacement). Every check happens here, before sampling, and fails with one line
//! naming the problem and the fix.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use candle_core::{Device, Tensor};
use steerdiff_guidance::strategy::{
    Autoguidance, ClassifierCost, Cost, DynamicCfg, FlowChef, GaussianDeblur, Gfcg,
    GradientEstimate, MaskedSquare, ReferenceRule, Replacement, ScaleRule, SuperResolution,
};
use steerdiff_guidance::{ClassLogProb, Classifier, Condition, Guidance, Reward};
use steerdiff_pipelines::toy::model::{self as toy_model, ToyClassifier};

use super::kind::StrategyKind;
use super::per_step_args::{GuideArg, PerStepArgs, ReferenceArg, ScaleRuleArg, TaskArg};
use crate::error::input_error;
use crate::run::observation::{self, Observation};

/// What [`build`] needs to know about the loaded model.
pub struct Target<'a> {
    /// The model as named (`toy`, `gmm:…`), for messages.
    pub model: &'a str,
    /// True for the toy models (3×32×32 images in `[-1, 1]`).
    pub toy: bool,
    /// True when the model's path is a rectified flow.
    pub flow: bool,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// What every group is conditioned on.
    pub cond: Condition,
    /// The CFG scale of the run (1 = none).
    pub cfg: f64,
    /// The guidance classifier on x̂0: the model's own (the toy's, a mixture's Bayes
    /// classifier), or a zero-shot CLIP classifier over prompts for text-to-image models.
    pub classifier: Option<Arc<dyn Classifier>>,
    /// A weaker guiding model is engine model 1 (the toy's twin, or `--guide-model`).
    pub has_guide: bool,
    /// The model is text-conditioned (its classes are prompts).
    pub text: bool,
    /// The model's device (observations are put there).
    pub device: Device,
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

/// The guidance classifier of the model.
fn classifier(kind: StrategyKind, t: &Target) -> Result<Arc<dyn Classifier>> {
    match &t.classifier {
        Some(c) => Ok(c.clone()),
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
        Condition::Prompt(i) if t.text && t.classifier.is_some() => Ok(i),
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

/// An observed image (or mask) as a tensor on the model's device.
fn tensor(v: &[f32], dims: [usize; 3], t: &Target) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), dims.as_slice(), &t.device)?)
}

/// The inpainting pair `(mask, target)` as tensors shaped like one sample.
fn mask_and_target(obs: &Observation, t: &Target) -> Result<(Tensor, Tensor)> {
    let known = obs.known.as_deref().unwrap_or(&[]);
    if known.len() != obs.image.len() {
        input_error!(
            "the known-pixel mask has {} values for an image of {}; give a mask of the image's size",
            known.len(),
            obs.image.len()
        );
    }
    Ok((
        tensor(known, obs.dims, t)?,
        tensor(&obs.image, obs.dims, t)?,
    ))
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
            let (mask, target) = mask_and_target(&obs, t)?;
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
            let img = tensor(&obs.image, obs.dims, t)?;
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
                GaussianDeblur::new(a.blur_sigma, a.blur_size, tensor(&obs.image, obs.dims, t)?)
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
            let clf = Arc::new(toy_classifier()?);
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
    if !a.zero_shot.is_empty() && !t.text {
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
            let (mask, target) = mask_and_target(&obs, t)?;
            Box::new(Replacement { mask, target })
        }
        _ => input_error!("--guidance {} is not a per-step strategy", kind.cli_name()),
    };
    Ok(PerStep {
        guidance,
        needs_weak,
    })
}
