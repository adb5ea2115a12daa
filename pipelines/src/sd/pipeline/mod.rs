//! The Stable Diffusion 1.x/2.x/XL pipeline: a diffusers-format folder or Hub repo loaded into
//! tokenizer(s), CLIP text encoder(s), UNet, VAE and scheduler config, and a [`Denoiser`] over
//! the encoded prompts.
//!
//! Text conditioning follows diffusers' `encode_prompt`:
//! * SD 1.x/2.x: one encoder's `last_hidden_state`;
//! * SDXL: both encoders' penultimate hidden states (`hidden_states[-2]`) concatenated along
//!   the feature axis, plus the second encoder's projected pooled output and the size/crop ids
//!   `[h, w, 0, 0, h, w]` as the UNet's added conditioning ([`super::unet`]). With no negative
//!   prompt and `force_zeros_for_empty_prompt` (SDXL base's default), the unconditional row is
//!   all zeros, as in diffusers.
//!
//! Coordinates: the engine's state is the UNet's input `x = α·x0 + σ·ε` (diffusers' latents
//! for DDIM/DDPM/DPM-Solver; `x_ve·α` for Euler, whose latents are `x/α`), and the UNet is
//! called with the step's timestep, as diffusers does after `scale_model_input`.
//!
//! Conditions: [`Condition::Prompt`]`(i)` is the `i`-th prompt given to
//! [`StableDiffusion::set_prompts`], [`Condition::Null`] the negative prompt (empty by
//! default) — the unconditional row of classifier-free guidance. A batch may mix prompts.
//!
//! Split by concern: `load` (folders, single files, LoRA), `text` (tokenizer + encoder
//! pairs), `schedule` (scheduler names, img2img), and here the pipeline as a denoiser.

mod load;
mod schedule;
mod text;

pub use schedule::{img2img_schedule, noised, scheduler_for};
pub use text::TextBranch;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use steerdiff_guidance::sampler::Sampler;
use steerdiff_guidance::{
    Condition, Denoiser, NoisePath, Parameterization, SchedulerConfig, SetTimesteps, StepPoint,
};

use super::clip::TextOutput;
use super::config::UNetConfig;
use super::hub::Source;
use super::lora::LoraSpec;
use super::unet::{AddedInputs, UNet};
use super::vae::Vae;
use super::weights::WeightDType;
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
    /// What the UNet predicts, over the scheduler config's `prediction_type` (`None`: the
    /// config's own). SD 2.x single files need it when their config repo says otherwise.
    pub prediction: Option<Parameterization>,
    /// LoRA files merged into the weights at load ([`super::lora`]).
    pub loras: Vec<LoraSpec>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: WeightDType::F32,
            device: Device::Cpu,
            max_batch: 16,
            prediction: None,
            loras: Vec::new(),
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

/// Encoded texts, as the UNet reads them.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Cross-attention context `[N, L, D]`.
    pub context: Tensor,
    /// SDXL's pooled text embedding `[N, P]` (`None` for SD 1.x/2.x).
    pub pooled: Option<Tensor>,
}

impl Encoded {
    fn zeros_like(&self, rows: usize) -> Result<Encoded> {
        let zeros = |t: &Tensor| -> Result<Tensor> {
            let mut dims = t.dims().to_vec();
            dims[0] = rows;
            Ok(Tensor::zeros(dims, t.dtype(), t.device())?)
        };
        Ok(Encoded {
            context: zeros(&self.context)?,
            pooled: self.pooled.as_ref().map(zeros).transpose()?,
        })
    }

    fn cat(parts: &[Encoded]) -> Result<Encoded> {
        let ctx: Vec<&Tensor> = parts.iter().map(|p| &p.context).collect();
        let pooled: Option<Vec<&Tensor>> = parts.iter().map(|p| p.pooled.as_ref()).collect();
        Ok(Encoded {
            context: Tensor::cat(&ctx, 0)?,
            pooled: pooled.map(|p| Tensor::cat(&p, 0)).transpose()?,
        })
    }

    fn to_dtype(&self, dtype: DType) -> Result<Encoded> {
        Ok(Encoded {
            context: self.context.to_dtype(dtype)?,
            pooled: self
                .pooled
                .as_ref()
                .map(|p| p.to_dtype(dtype))
                .transpose()?,
        })
    }
}

/// A loaded Stable Diffusion 1.x/2.x/XL pipeline.
pub struct StableDiffusion {
    name: String,
    source: Source,
    /// The tokenizer(s) and text encoder(s): one for SD 1.x/2.x, two for SDXL.
    pub text: Vec<TextBranch>,
    unet: UNet,
    /// The UNet's configuration.
    pub unet_config: UNetConfig,
    /// `force_zeros_for_empty_prompt` (SDXL): no negative prompt → a zero unconditional row.
    pub force_zeros_for_empty_prompt: bool,
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
    /// `[1 + P, …]`: row 0 the negative prompt, row `i + 1` prompt `i`.
    embeddings: Option<Encoded>,
}

impl std::fmt::Debug for StableDiffusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableDiffusion")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("dtype", &self.dtype)
            .field("latent_hw", &self.latent_hw)
            .field("sdxl", &self.is_sdxl())
            .finish_non_exhaustive()
    }
}

impl StableDiffusion {
    /// Whether this is an SDXL pipeline (two text encoders, added conditioning).
    pub fn is_sdxl(&self) -> bool {
        self.unet_config.added.is_some()
    }

    /// The family's linear latent → RGB preview.
    pub fn latent_preview(&self) -> &'static super::preview::LatentPreview {
        if self.is_sdxl() {
            &super::preview::SDXL
        } else {
            &super::preview::SD15
        }
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
    /// `sample_size` × the VAE's scale; saturating, so an absurd config stays absurd).
    pub fn image_size(&self) -> (usize, usize) {
        let s = self.vae_scale();
        (
            self.latent_hw.0.saturating_mul(s),
            self.latent_hw.1.saturating_mul(s),
        )
    }

    /// Where the default image size comes from, for messages.
    pub fn native_size_origin(&self) -> String {
        let size = match self.unet_config.sample_size {
            Some((h, w)) if h == w => format!("has sample_size {h}"),
            Some((h, w)) => format!("has sample_size [{h}, {w}]"),
            None => "sets no sample_size (diffusers' default 64)".into(),
        };
        let scale = self.vae_scale();
        format!(
            "`unet/config.json` of {} {size} latent pixels × the VAE's scale {scale}",
            self.name
        )
    }

    /// Sets the image size in pixels (multiples of the VAE scale).
    pub fn set_image_size(&mut self, height: usize, width: usize) -> Result<()> {
        let s = self.vae_scale();
        if height == 0 || width == 0 || height % s != 0 || width % s != 0 {
            return Err(Error::Spec(format!(
                "image size {height}×{width} must be positive multiples of {s} (the VAE's scale)"
            )));
        }
        let latent_hw = (height / s, width / s);
        let scores = super::attention_memory::unet_scores(&self.unet_config.candle, latent_hw);
        super::attention_memory::check(&self.name, height, width, scores)?;
        self.latent_hw = latent_hw;
        Ok(())
    }

    /// Token ids of `text` under the first tokenizer, padded to its length.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.text[0].tokenizer.encode(text)
    }

    /// Token ids of `text` under each tokenizer (one row for SD 1.x/2.x, two for SDXL).
    pub fn tokenize_all(&self, text: &str) -> Result<Vec<Vec<u32>>> {
        self.text.iter().map(|t| t.tokenizer.encode(text)).collect()
    }

    /// Every encoder's output for `texts`, in the order of [`StableDiffusion::text`].
    pub fn encoder_outputs(&self, texts: &[&str]) -> Result<Vec<TextOutput>> {
        self.text
            .iter()
            .map(|branch| branch.encode(texts, &self.device))
            .collect()
    }

    /// `texts` encoded as the UNet reads them (f32): the context (SD: last hidden state; SDXL:
    /// both penultimate states concatenated) and, for SDXL, the pooled embedding.
    pub fn encode(&self, texts: &[&str]) -> Result<Encoded> {
        let outs = self.encoder_outputs(texts)?;
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        if !self.is_sdxl() {
            return Ok(Encoded {
                context: f32(&outs[0].last_hidden)?,
                pooled: None,
            });
        }
        let states = outs
            .iter()
            .map(|o| f32(&o.penultimate))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Encoded {
            context: Tensor::cat(&states, 2)?,
            pooled: Some(f32(&outs[outs.len() - 1].pooled)?),
        })
    }

    /// The cross-attention context for each text, `[N, L, D]` in f32 (see
    /// [`StableDiffusion::encode`]).
    pub fn encode_text(&self, texts: &[&str]) -> Result<Tensor> {
        Ok(self.encode(texts)?.context)
    }

    /// Encodes the prompts of a run: [`Condition::Prompt`]`(i)` → `prompts[i]`,
    /// [`Condition::Null`] → `negative`. No negative prompt means the empty prompt, or (SDXL
    /// with `force_zeros_for_empty_prompt`) an all-zero row, as in diffusers.
    pub fn set_prompts(&mut self, prompts: &[&str], negative: Option<&str>) -> Result<()> {
        let cond = self.encode(prompts)?;
        let uncond = match negative {
            None if self.force_zeros_for_empty_prompt => cond.zeros_like(1)?,
            _ => self.encode(&[negative.unwrap_or("")])?,
        };
        self.embeddings = Some(Encoded::cat(&[uncond, cond])?.to_dtype(self.dtype)?);
        Ok(())
    }

    /// The prompt table set by [`StableDiffusion::set_prompts`]: row 0 the negative prompt,
    /// row `i + 1` prompt `i`.
    pub fn prompt_table(&self) -> Option<&Encoded> {
        self.embeddings.as_ref()
    }

    /// SDXL's size/crop ids for the current image size: `[h, w, 0, 0, h, w]` (original size =
    /// target size, no crop — diffusers' defaults).
    pub fn time_ids(&self) -> [f32; 6] {
        let (h, w) = self.image_size();
        let (h, w) = (h as f32, w as f32);
        [h, w, 0.0, 0.0, h, w]
    }

    /// Number of prompts set.
    pub fn prompt_count(&self) -> usize {
        self.embeddings
            .as_ref()
            .map(|e| e.context.dim(0).unwrap_or(1) - 1)
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
        let rows = emb.context.dim(0)?;
        let idx = super::embedding_rows(conds, rows, "Stable Diffusion", &self.device)?;
        let ctx = emb.context.index_select(&idx, 0)?;
        let input = x.to_device(&self.device)?.to_dtype(self.dtype)?;
        let out = match &emb.pooled {
            None => self.unet.forward(&input, at.timestep, &ctx, None)?,
            Some(pooled) => {
                let text_embeds = pooled.index_select(&idx, 0)?;
                let ids = self.time_ids().repeat(conds.len());
                let time_ids = Tensor::from_vec(ids, (conds.len(), 6), &self.device)?;
                let added = AddedInputs {
                    text_embeds: &text_embeds,
                    time_ids: &time_ids,
                };
                self.unet.forward(&input, at.timestep, &ctx, Some(&added))?
            }
        };
        Ok(out.to_dtype(x.dtype())?.to_device(x.device())?)
    }
}
