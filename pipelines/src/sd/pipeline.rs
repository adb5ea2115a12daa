//! The Stable Diffusion 1.x/2.x pipeline: a diffusers-format folder or Hub repo loaded into
//! tokenizer, CLIP text encoder, UNet, VAE and scheduler config, and a [`Denoiser`] over the
//! encoded prompts.
//!
//! Coordinates: the engine's state is the UNet's input `x = α·x0 + σ·ε` (diffusers' latents
//! for DDIM/DDPM/DPM-Solver; `x_ve·α` for Euler, whose latents are `x/α`), and the UNet is
//! called with the step's timestep, as diffusers does after `scale_model_input`.
//!
//! Conditions: [`Condition::Prompt`]`(i)` is the `i`-th prompt given to
//! [`StableDiffusion::set_prompts`], [`Condition::Null`] the negative prompt (empty by
//! default) — the unconditional row of classifier-free guidance. A batch may mix prompts.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;
use steerdiff_guidance::sampler::Sampler;
use steerdiff_guidance::{
    Condition, Denoiser, NoisePath, Parameterization, Schedule, SchedulerClass, SchedulerConfig,
    SetTimesteps, StepPoint,
};

use super::clip::{ClipTextEncoder, ClipTokenizer};
use super::config::{ClipTextConfig, ConfigReader, UNetConfig};
use super::hub::{Family, ModelFiles, Source};
use super::vae::Vae;
use super::weights::{component_weights, load_error, var_builder, WeightDType};
use crate::{Error, Result};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Weight dtype (default f32).
    pub dtype: WeightDType,
    /// Device (default CPU).
    pub device: Device,
    /// Largest UNet batch per call (rows beyond it are split; default 16).
    pub max_batch: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: WeightDType::F32,
            device: Device::Cpu,
            max_batch: 16,
        }
    }
}

/// The scheduler names steerdiff maps onto a model's own scheduler config (diffusers'
/// `Class.from_config(pipe.scheduler.config)`, with Karras sigmas where named).
pub const SCHEDULER_NAMES: &[(&str, &str)] = &[
    (
        "default",
        "the model's own scheduler_config.json (DPM-Solver++ 2M in its place when its class is not reproduced, e.g. PNDM)",
    ),
    ("ddim", "DDIMScheduler on the model's config"),
    ("ddpm", "DDPMScheduler on the model's config (stochastic)"),
    ("euler", "EulerDiscreteScheduler on the model's config"),
    ("euler-karras", "EulerDiscreteScheduler with Karras sigmas"),
    ("euler-a", "EulerAncestralDiscreteScheduler (stochastic)"),
    ("dpmpp-2m", "DPMSolverMultistepScheduler (DPM-Solver++ 2M)"),
    ("dpmpp-2m-karras", "DPMSolverMultistepScheduler with Karras sigmas"),
];

/// A loaded Stable Diffusion 1.x/2.x pipeline.
pub struct StableDiffusion {
    name: String,
    source: Source,
    /// The tokenizer.
    pub tokenizer: ClipTokenizer,
    /// The text encoder.
    pub text_encoder: ClipTextEncoder,
    unet: UNet2DConditionModel,
    /// The UNet's configuration.
    pub unet_config: UNetConfig,
    /// The VAE (shared with image rewards).
    pub vae: Arc<Vae>,
    /// The model's own `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerConfig,
    path: NoisePath,
    parameterization: Parameterization,
    dtype: DType,
    device: Device,
    max_batch: usize,
    latent_hw: (usize, usize),
    /// `[1 + P, L, D]`: row 0 the negative prompt, row `i + 1` prompt `i`.
    embeddings: Option<Tensor>,
}

impl std::fmt::Debug for StableDiffusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableDiffusion")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("dtype", &self.dtype)
            .field("latent_hw", &self.latent_hw)
            .finish_non_exhaustive()
    }
}

fn read_json(files: &ModelFiles, path: &str) -> Result<serde_json::Value> {
    let p = files.get(path)?;
    let text = std::fs::read_to_string(&p)
        .map_err(|e| Error::Spec(format!("cannot read `{}`: {e}", p.display())))?;
    steerdiff_guidance::schedule::diffusers::parse_python_json(&text)
        .map_err(|e| Error::Spec(format!("{path}: {e}")))
}

impl StableDiffusion {
    /// Loads a model named as on the command line: a preset (`sd15`), a diffusers folder, or a
    /// Hub repo id (hub settings from the environment: `HF_HOME`, `HF_HUB_OFFLINE`, …).
    pub fn load(model: &str, opts: &LoadOptions) -> Result<StableDiffusion> {
        if let Some(p) = super::hub::preset(model) {
            let why = match p.family {
                Family::StableDiffusion => None,
                Family::StableDiffusionXl => Some(
                    "SDXL (two text encoders and added time/size conditioning) is not supported \
                     yet",
                ),
                Family::StableDiffusion3 | Family::Flux => Some(
                    "its transformer and autoencoder load from the original single files through \
                     the library (steerdiff_pipelines::sd::{sd3::Sd3, flux::Flux}), but its T5 / \
                     CLIP text encoders are not wired yet, so it cannot run from a prompt",
                ),
            };
            if let Some(why) = why {
                return Err(Error::Spec(format!("model `{model}` ({}): {why}", p.repo)));
            }
        }
        let source = Source::parse(model)?;
        if let Source::File(path) = &source {
            super::weights::refuse_pickle(path)?;
            return Err(Error::Spec(format!(
                "`{}` is a single-file checkpoint; Stable Diffusion loads from a diffusers-format                  folder or Hub repo (model_index.json + components)",
                path.display()
            )));
        }
        let mut sd = StableDiffusion::from_files(&ModelFiles::new(source), opts)?;
        sd.name = model.to_string();
        Ok(sd)
    }

    /// Loads from a folder or Hub repo: `model_index.json` names the components; each is read
    /// from its own folder and config.
    pub fn from_files(files: &ModelFiles, opts: &LoadOptions) -> Result<StableDiffusion> {
        let index = read_json(files, "model_index.json")?;
        let class = index
            .get("_class_name")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        match class {
            "StableDiffusionPipeline" | "StableDiffusionImg2ImgPipeline" => {}
            "StableDiffusionXLPipeline" | "StableDiffusionXLImg2ImgPipeline" => {
                return Err(Error::Spec(format!(
                    "{} is an SDXL pipeline ({class}); SDXL (two text encoders, added \
                     conditioning) is not supported yet",
                    files.source().describe()
                )))
            }
            other => {
                return Err(Error::Spec(format!(
                    "{}: model_index.json names pipeline class `{other}`; steerdiff loads \
                     StableDiffusionPipeline here",
                    files.source().describe()
                )))
            }
        }
        for component in ["tokenizer", "text_encoder", "unet", "vae", "scheduler"] {
            let ok = index
                .get(component)
                .and_then(|v| v.as_array())
                .is_some_and(|a| a.len() == 2 && !a[1].is_null());
            if !ok {
                return Err(Error::Spec(format!(
                    "model_index.json of {} has no `{component}` component",
                    files.source().describe()
                )));
            }
        }
        let dtype = opts.dtype.dtype();
        let device = &opts.device;
        if dtype == DType::BF16 && device.is_cpu() {
            return Err(Error::Spec(
                "bf16 weights run on GPUs only (candle has no bf16 matmul on the CPU); use \
                 --dtype f32 or f16 here"
                    .into(),
            ));
        }

        let text_cfg = ClipTextConfig::read(ConfigReader::open(
            &files.get("text_encoder/config.json")?,
            "text_encoder/config.json",
        )?)?;
        let tokenizer = ClipTokenizer::load(files, "tokenizer", text_cfg.max_position_embeddings)?;
        let text_weights = component_weights(files, "text_encoder", "model")?;
        let text_encoder =
            ClipTextEncoder::new(var_builder(&text_weights, dtype, device)?, text_cfg)
                .map_err(|e| load_error("the text encoder", &text_weights, e))?;

        let unet_config = UNetConfig::read(ConfigReader::open(
            &files.get("unet/config.json")?,
            "unet/config.json",
        )?)?;
        if unet_config.candle.cross_attention_dim != text_encoder.config.hidden_size {
            return Err(Error::Spec(format!(
                "unet cross_attention_dim {} ≠ text encoder hidden_size {}",
                unet_config.candle.cross_attention_dim, text_encoder.config.hidden_size
            )));
        }
        let unet_weights = component_weights(files, "unet", "diffusion_pytorch_model")?;
        let unet = UNet2DConditionModel::new(
            var_builder(&unet_weights, dtype, device)?,
            unet_config.in_channels,
            unet_config.out_channels,
            false,
            unet_config.candle.clone(),
        )
        .map_err(|e| load_error("the UNet", &unet_weights, e))?;

        let vae = Arc::new(Vae::load(files, dtype, device)?);
        if vae.config.candle.latent_channels != unet_config.in_channels {
            return Err(Error::Spec(format!(
                "VAE latent_channels {} ≠ UNet in_channels {}",
                vae.config.candle.latent_channels, unet_config.in_channels
            )));
        }

        let sched_value = read_json(files, "scheduler/scheduler_config.json")?;
        let scheduler = SchedulerConfig::from_value(None, &sched_value)?;
        let path = NoisePath::Vp(scheduler.vp_path()?);
        let parameterization = scheduler.prediction_type();
        if parameterization == Parameterization::Velocity {
            return Err(Error::Spec(
                "scheduler_config.json asks for flow prediction on a Stable Diffusion UNet".into(),
            ));
        }
        let side = unet_config.sample_size.unwrap_or(64);
        Ok(StableDiffusion {
            name: files.source().describe(),
            source: files.source().clone(),
            tokenizer,
            text_encoder,
            unet,
            unet_config,
            vae,
            scheduler,
            path,
            parameterization,
            dtype,
            device: device.clone(),
            max_batch: opts.max_batch.max(1),
            latent_hw: (side, side),
            embeddings: None,
        })
    }

    /// Where the model came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Pixels per latent along a side.
    pub fn vae_scale(&self) -> usize {
        self.vae.config.downscale
    }

    /// The image size sampled, `(height, width)` in pixels (default: the UNet's
    /// `sample_size` × the VAE's scale).
    pub fn image_size(&self) -> (usize, usize) {
        let s = self.vae_scale();
        (self.latent_hw.0 * s, self.latent_hw.1 * s)
    }

    /// Sets the image size in pixels (multiples of the VAE scale).
    pub fn set_image_size(&mut self, height: usize, width: usize) -> Result<()> {
        let s = self.vae_scale();
        if height == 0 || width == 0 || height % s != 0 || width % s != 0 {
            return Err(Error::Spec(format!(
                "image size {height}×{width} must be positive multiples of {s} (the VAE's scale)"
            )));
        }
        self.latent_hw = (height / s, width / s);
        Ok(())
    }

    /// Token ids of `text`, padded to the tokenizer's length.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The text encoder's last hidden state for each text, `[N, L, D]` in f32.
    pub fn encode_text(&self, texts: &[&str]) -> Result<Tensor> {
        let ids = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let out = self.text_encoder.encode_ids(&ids, &self.device)?;
        Ok(out.last_hidden.to_dtype(DType::F32)?)
    }

    /// Encodes the prompts of a run: [`Condition::Prompt`]`(i)` → `prompts[i]`,
    /// [`Condition::Null`] → `negative` (`""` for plain CFG).
    pub fn set_prompts(&mut self, prompts: &[&str], negative: &str) -> Result<()> {
        let mut all = vec![negative];
        all.extend_from_slice(prompts);
        let emb = self.encode_text(&all)?.to_dtype(self.dtype)?;
        self.embeddings = Some(emb);
        Ok(())
    }

    /// Number of prompts set.
    pub fn prompt_count(&self) -> usize {
        self.embeddings
            .as_ref()
            .map(|e| e.dim(0).unwrap_or(1) - 1)
            .unwrap_or(0)
    }

    /// Decodes pipeline latents to images `[B, 3, H, W]` in `[0, 1]`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.vae.decode(latents)
    }

    /// The sampler for `name` (see [`SCHEDULER_NAMES`]; also a diffusers class name or a path to
    /// a `scheduler_config.json`), `None` = the model's own. Returns it and a description of
    /// the scheduler actually used.
    pub fn sampler(
        &self,
        name: Option<&str>,
        steps: usize,
        eta: Option<f64>,
    ) -> Result<(Sampler, String)> {
        let (cfg, about) = scheduler_for(&self.scheduler, name)?;
        let sampler = cfg.sampler(steps, &SetTimesteps::default(), eta)?;
        Ok((sampler, about))
    }
}

/// Resolves a scheduler name against a model's own scheduler config.
pub fn scheduler_for(
    own: &SchedulerConfig,
    name: Option<&str>,
) -> Result<(SchedulerConfig, String)> {
    let with = |class: SchedulerClass, karras: bool| {
        let mut c = own.with_class(class);
        if karras {
            c.use_karras_sigmas = Some(true);
        }
        c
    };
    let name = name.unwrap_or("default");
    let cfg = match name {
        "default" => match own.class() {
            Ok(_) => own.clone(),
            Err(_) => {
                let c = with(SchedulerClass::DpmSolverMultistep, false);
                return Ok((
                    c,
                    format!(
                        "DPMSolverMultistepScheduler (the model's {} is not reproduced)",
                        own.class_name.as_deref().unwrap_or("scheduler")
                    ),
                ));
            }
        },
        "ddim" => with(SchedulerClass::Ddim, false),
        "ddpm" => with(SchedulerClass::Ddpm, false),
        "euler" => with(SchedulerClass::EulerDiscrete, false),
        "euler-karras" => with(SchedulerClass::EulerDiscrete, true),
        "euler-a" => with(SchedulerClass::EulerAncestralDiscrete, false),
        "dpmpp-2m" => with(SchedulerClass::DpmSolverMultistep, false),
        "dpmpp-2m-karras" => with(SchedulerClass::DpmSolverMultistep, true),
        other if other.ends_with(".json") => {
            let text = std::fs::read_to_string(other)
                .map_err(|e| Error::Spec(format!("cannot read scheduler config `{other}`: {e}")))?;
            SchedulerConfig::from_json_str(&text)?
        }
        other => match SchedulerClass::from_diffusers_name(other) {
            Ok(class) => with(class, false),
            Err(_) => {
                let names: Vec<&str> = SCHEDULER_NAMES.iter().map(|(n, _)| *n).collect();
                return Err(Error::Spec(format!(
                    "unknown scheduler `{other}` (valid: {}, a diffusers class name, or a \
                     scheduler_config.json path)",
                    names.join(", ")
                )));
            }
        },
    };
    let about = cfg.class_name.clone().unwrap_or_else(|| "scheduler".into());
    Ok((cfg, about))
}

/// diffusers' img2img start: with `strength` s, the last `⌊steps·s⌋` steps of `schedule` are
/// run. Returns the shortened schedule; start it from [`noised`] at its first point.
pub fn img2img_schedule(schedule: &Schedule, strength: f64) -> Result<Schedule> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::Spec(format!(
            "img2img strength must be in (0, 1] (got {strength})"
        )));
    }
    let steps = schedule.steps();
    let init = ((steps as f64 * strength) as usize).min(steps);
    if init == 0 {
        return Err(Error::Spec(format!(
            "strength {strength} with {steps} steps leaves no step to run"
        )));
    }
    let start = steps - init;
    Ok(Schedule {
        points: schedule.points[start..].to_vec(),
        init_noise_sigma: schedule.init_noise_sigma,
        targets: schedule.targets.as_ref().map(|t| t[start..].to_vec()),
    })
}

/// `α·x0 + σ·ε` at `at`: clean latents noised to a schedule point (engine coordinates).
pub fn noised(x0: &Tensor, noise: &Tensor, at: &StepPoint) -> Result<Tensor> {
    Ok((x0.affine(at.alpha, 0.0)? + noise.affine(at.sigma, 0.0)?)?)
}

impl Denoiser for StableDiffusion {
    fn name(&self) -> &str {
        &self.name
    }

    fn parameterization(&self) -> Parameterization {
        self.parameterization
    }

    fn path(&self) -> &NoisePath {
        &self.path
    }

    fn sample_shape(&self) -> Vec<usize> {
        vec![
            self.unet_config.in_channels,
            self.latent_hw.0,
            self.latent_hw.1,
        ]
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn forward(
        &self,
        x: &Tensor,
        at: &StepPoint,
        conds: &[Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        let emb = self.embeddings.as_ref().ok_or_else(|| {
            steerdiff_guidance::Error::InvalidArgument(
                "no prompts set: call StableDiffusion::set_prompts before sampling".into(),
            )
        })?;
        let idx = super::embedding_rows(conds, emb.dim(0)?, "Stable Diffusion", &self.device)?;
        let ctx = emb.index_select(&idx, 0)?;
        let input = x.to_device(&self.device)?.to_dtype(self.dtype)?;
        let out = self.unet.forward(&input, at.timestep, &ctx)?;
        Ok(out.to_dtype(x.dtype())?.to_device(x.device())?)
    }
}
