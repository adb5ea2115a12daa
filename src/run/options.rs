//! What a run asks for, resolved from the command line (or built by a library user) and free
//! of clap: [`Options`].

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use serde::Serialize;
use steerdiff_guidance::{NoisePath, Parameterization, Reward};
use steerdiff_pipelines::model::LoadOptions;
use steerdiff_pipelines::sd::lora::LoraSpec;
use steerdiff_pipelines::sd::WeightDType;
use steerdiff_pipelines::GmmDenoiser;

use super::observation::Observation;
use super::shard::Shard;
use super::strategy::StrategyArgs;

/// Solver steps when neither `--steps` nor a preset names them.
pub const DEFAULT_STEPS: usize = 50;

/// img2img strength when `--strength` is not given.
pub const DEFAULT_STRENGTH: f64 = 0.8;

/// Which Gaussian path a mixture is sampled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// VP diffusion with DDPM's linear betas ([`GmmDenoiser::vp_path`]).
    #[default]
    #[value(help = "VP diffusion (DDPM linear betas 1e-4…0.02, 1000 steps)")]
    Vp,
    /// Rectified flow ([`NoisePath::flow`]).
    #[value(help = "rectified flow, x = (1 − σ)·x0 + σ·ε")]
    Flow,
}

impl PathKind {
    /// The noise path.
    pub fn noise_path(self) -> NoisePath {
        match self {
            PathKind::Vp => GmmDenoiser::vp_path(),
            PathKind::Flow => NoisePath::flow(),
        }
    }

    /// `"vp"` or `"flow"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Vp => "vp",
            PathKind::Flow => "flow",
        }
    }
}

/// Everything about a run except the model; [`Default`] gives the command line's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// The device the model runs on (default: the CPU; the command line's `auto` resolves
    /// before this).
    pub device: Device,
    /// Weight dtype; `None` = the family's default on the device.
    pub dtype: Option<WeightDType>,
    /// The Gaussian path of a mixture (default VP).
    pub path: PathKind,
    /// Class by name or label (class-conditional models); `None` = unconditional.
    pub class: Option<String>,
    /// The prompt (text-to-image models).
    pub prompt: Option<String>,
    /// The negative prompt (the unconditional row of CFG; `None`: the family's convention).
    pub negative: Option<String>,
    /// Sampler or scheduler name; `None` = the model's default.
    pub sampler: Option<String>,
    /// Solver steps; `None` = a preset's recommendation, else [`DEFAULT_STEPS`].
    pub steps: Option<usize>,
    /// η; `None` = the sampler's own (1 for particle strategies where it is free).
    pub eta: Option<f64>,
    /// Classifier-free guidance scale; `None` = a preset's recommendation, else 1 (none).
    pub cfg: Option<f64>,
    /// CFG rescale φ in `[0, 1]`.
    pub cfg_rescale: f64,
    /// Guide only while `σ/α ∈ [lo, hi]`.
    pub cfg_interval: Option<(f64, f64)>,
    /// Extra visits of every step but the last (time travel; 0 = none).
    pub time_travel: usize,
    /// Number of groups (independent samples).
    pub n: usize,
    /// Seed of group 0; group `g` uses `seed + g`.
    pub seed: u64,
    /// The steering strategy and its settings.
    pub strategy: StrategyArgs,
    /// Run only this shard's block of the groups; `None` = all.
    pub shard: Option<Shard>,
    /// Pixels for FlowChef / replacement given directly (instead of `--image`, `--mask`,
    /// `--box`), as the inpainting demo does; not recorded.
    pub observation: Option<Observation>,
    /// Text-to-image models: image height in pixels (`None`: native, or the init image's).
    pub height: Option<usize>,
    /// Text-to-image models: image width in pixels.
    pub width: Option<usize>,
    /// The weaker guiding model of autoguidance for text-to-image models.
    pub guide_model: Option<String>,
    /// Single files: SD3 / FLUX's text encoders; SD 1.x/2.x/XL's configs and tokenizers.
    pub text_encoders: Option<String>,
    /// Stable Diffusion: what the UNet predicts, over its scheduler config.
    pub prediction: Option<Parameterization>,
    /// LoRA files merged into the weights at load.
    pub loras: Vec<LoraSpec>,
    /// FLUX single files: the autoencoder file.
    pub ae: Option<PathBuf>,
    /// The CLIP model of `clip`, `aesthetic:` and zero-shot classifiers (`None`: the default).
    pub clip_model: Option<String>,
    /// Start from these latents (a JSON file; plain sampling only).
    pub init_latents: Option<PathBuf>,
    /// img2img from this image.
    pub init_image: Option<PathBuf>,
    /// img2img strength in `(0, 1]` (`None`: [`DEFAULT_STRENGTH`]).
    pub strength: Option<f64>,
    /// Largest number of model rows per forward (`None`: the model's own).
    pub max_batch: Option<usize>,
    /// Text-to-image models: groups sampled together in one batch (default 1: every image
    /// independent of the others; more is faster on a GPU, and a group's images then depend
    /// on the block of groups it was sampled with).
    pub batch_groups: usize,
    /// Which final particles are kept: each group's best (default) or all.
    pub keep: super::keep::Keep,
    /// A reward written in Rust, used in place of `strategy.reward` (the library's way to
    /// steer with one's own type; recorded as `rust:NAME`).
    pub custom_reward: Option<CustomReward>,
}

/// A library user's own [`Reward`].
#[derive(Clone)]
pub struct CustomReward(pub Arc<dyn Reward>);

impl std::fmt::Debug for CustomReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomReward({})", self.0.name())
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            device: Device::Cpu,
            dtype: None,
            path: PathKind::Vp,
            class: None,
            prompt: None,
            negative: None,
            sampler: None,
            steps: None,
            eta: None,
            cfg: None,
            cfg_rescale: 0.0,
            cfg_interval: None,
            time_travel: 0,
            n: 1,
            seed: 0,
            strategy: StrategyArgs::default(),
            shard: None,
            observation: None,
            height: None,
            width: None,
            guide_model: None,
            text_encoders: None,
            prediction: None,
            loras: Vec::new(),
            ae: None,
            clip_model: None,
            init_latents: None,
            init_image: None,
            strength: None,
            max_batch: None,
            batch_groups: 1,
            keep: super::keep::Keep::Best,
            custom_reward: None,
        }
    }
}

impl Options {
    /// How the model of this run is loaded.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            device: self.device.clone(),
            dtype: self.dtype,
            mixture_path: Some(self.path.noise_path()),
            text_encoders: self.text_encoders.clone(),
            prediction: self.prediction,
            loras: self.loras.clone(),
            ae: self.ae.clone(),
            max_batch: self.max_batch,
        }
    }
}
