//! FlowChef (Patel et al. 2025, "Steering Rectified Flow Models in the Vector Field for
//! Controlled Image Generation", arXiv 2412.00100): with the velocity frozen, each guided
//! step moves x_t ← x_t − η·∇L(x̂0) for a cost L of the measurement (inpainting,
//! super-resolution, deblurring, or a class's −ln p), gradients through the cost only.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use steerdiff_guidance::strategy::{
    ClassifierCost, Cost, FlowChef, GaussianDeblur, GradientEstimate, MaskedSquare,
    SuperResolution,
};
use steerdiff_pipelines::toy::model::{self as toy_model, ToyClassifier};

use super::observe::{mask_and_target, observed, tensor};
use super::{Built, Def, EvalUse, Inputs, RewardUse};
use crate::error::input_error;

/// `--guidance flowchef`.
pub const DEF: Def = Def {
    name: "flowchef",
    about: "FlowChef: steer a rectified flow towards --task's measurement with the velocity frozen.",
    list: "gradient-skipping steering of rectified flows (Patel et al. 2025): --task \
           inpaint|superres|deblur|class --image PNG --mask PNG | --box X0,Y0,X1,Y1 --lr η \
           --inner-steps K --guided-steps N --zo-pairs M (zeroth order); no extra model rows",
    particles: false,
    reward: RewardUse::Unused,
    eval: EvalUse::Refused(
        "it needs an image and a mask; compare it with replacement in `steerdiff toy inpaint`",
    ),
    build,
};

/// FlowChef's own flags.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct Flags {
    /// FlowChef: the measurement to match.
    #[arg(long, value_enum, default_value_t = TaskArg::Inpaint)]
    pub task: TaskArg,
    /// FlowChef: step size η of x_t ← x_t − η·∇L(x̂0) (default: 0.2 for inpaint — 0.5 would
    /// land x̂0 on the known pixels every step, which measured less coherent fills —, 0.5 for
    /// deblur, f²/2 for superres, 0.1 for class).
    #[arg(long, value_name = "η", allow_negative_numbers = true)]
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
    #[arg(long, value_name = "μ", default_value_t = 0.05, allow_negative_numbers = true)]
    pub zo_mu: f64,
    /// FlowChef superres: down-sampling factor f.
    #[arg(long, value_name = "F", default_value_t = 2)]
    pub superres_factor: usize,
    /// FlowChef deblur: the blur's standard deviation in pixels.
    #[arg(long, value_name = "PX", default_value_t = 1.0, allow_negative_numbers = true)]
    pub blur_sigma: f64,
    /// FlowChef deblur: the blur kernel's (odd) size.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub blur_size: usize,
}

crate::run::clap_defaults::defaults_from_clap!(Flags);

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

/// The cost of `--task` and its default step size η.
fn cost(i: &Inputs) -> Result<(Box<dyn Cost>, f64)> {
    let (a, t) = (&i.args.per_step.flags.flowchef, i.target);
    Ok(match a.task {
        TaskArg::Inpaint => {
            let obs = observed(i, true)?;
            let (mask, target) = mask_and_target(&obs, i)?;
            // η = ½ would put x̂0 exactly on the known pixels each step; a partial step
            // (residual ×0.6 per step) leaves the model room to blend the fill with its
            // context. On held-out toy images (data seed 9100, 60 images, the toy U-Net at
            // 8,250 steps), η 0.1 / 0.2 / 0.3 / 0.5 gave fill errors 0.126 / 0.117 / 0.118 /
            // 0.138 with known-pixel errors 0.013 / 0.007 / 0.004 / 0.0002.
            (Box::new(MaskedSquare { mask, target }), 0.2)
        }
        TaskArg::Superres => {
            let obs = observed(i, false)?;
            let f = a.superres_factor;
            let [c, h, w] = [t.sample_shape[0], t.sample_shape[1], t.sample_shape[2]];
            if f == 0 || h % f != 0 || w % f != 0 {
                input_error!("--superres-factor {f} must divide the image size {w}×{h}");
            }
            let img = tensor(&obs.image, obs.dims, i)?;
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
            let obs = observed(i, false)?;
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
                GaussianDeblur::new(a.blur_sigma, a.blur_size, tensor(&obs.image, obs.dims, i)?)
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
            let p = &i.args.per_step;
            if p.image.is_some() || p.mask.is_some() || p.fill_box.is_some() {
                input_error!(
                    "--task class takes no --image / --mask / --box (it steers towards --class)"
                );
            }
            let class = i.class()?;
            let assets = toy_model::Assets::locate();
            let clf = ToyClassifier::load_on(&assets, toy_model::CLASSIFIER, &t.device)
                .context("loading the toy guidance classifier")?;
            (
                Box::new(ClassifierCost::new(Arc::new(clf), class, 1.0)),
                0.1,
            )
        }
    })
}

fn build(i: &Inputs) -> Result<Built> {
    let a = &i.args.per_step.flags.flowchef;
    if !i.target.flow {
        input_error!(
            "--guidance flowchef steers rectified-flow models only; `{}` is sampled on a VP \
             diffusion path (use --path flow, or --model toy)",
            i.target.model
        );
    }
    let (cost, default_lr) = cost(i)?;
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
    Ok(Built::Step(Box::new(FlowChef {
        cost,
        lr,
        iterations: a.inner_steps,
        max_steps: a.guided_steps,
        estimate,
    })))
}
