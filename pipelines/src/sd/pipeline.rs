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

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use steerdiff_guidance::sampler::Sampler;
use steerdiff_guidance::{
    Condition, Denoiser, NoisePath, Parameterization, Schedule, SchedulerClass, SchedulerConfig,
    SetTimesteps, StepPoint,
};

use super::clip::{ClipTextEncoder, ClipTokenizer, TextOutput};
use super::component_weights::ComponentWeights;
use super::config::{ClipTextConfig, ConfigReader, UNetConfig};
use super::hub::{Family, ModelFiles, Source};
use super::ldm::{LdmCheckpoint, Part, UNetShape};
use super::lora::{LoraHook, LoraSpec, Loras, Naming, Target};
use super::unet::{AddedInputs, UNet};
use super::vae::Vae;
use super::weights::{component_weights, WeightDType};
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

/// One tokenizer + text encoder pair (SDXL has two).
#[derive(Debug, Clone)]
pub struct TextBranch {
    /// The tokenizer.
    pub tokenizer: ClipTokenizer,
    /// The text encoder.
    pub encoder: ClipTextEncoder,
}

impl TextBranch {
    /// Loads `tok_dir/` (tokenizer) and `enc_dir/` (config.json + weights) of a diffusers repo.
    pub fn load(
        files: &ModelFiles,
        tok_dir: &str,
        enc_dir: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<TextBranch> {
        let weights = ComponentWeights::Files(component_weights(files, enc_dir, "model")?);
        TextBranch::load_from(files, tok_dir, enc_dir, &weights, None, dtype, device)
    }

    /// Loads the tokenizer `tok_dir/` and the config `enc_dir/config.json` of a diffusers
    /// repo, with the encoder's weights from `weights` (and `lora`'s modules merged).
    pub fn load_from(
        files: &ModelFiles,
        tok_dir: &str,
        enc_dir: &str,
        weights: &ComponentWeights,
        lora: Option<&LoraHook>,
        dtype: DType,
        device: &Device,
    ) -> Result<TextBranch> {
        let config_path = format!("{enc_dir}/config.json");
        let cfg =
            ClipTextConfig::read(ConfigReader::open(&files.get(&config_path)?, &config_path)?)?;
        let tokenizer = ClipTokenizer::load(files, tok_dir, cfg.max_position_embeddings)?;
        let encoder = weights.build(
            &format!("the text encoder ({enc_dir})"),
            dtype,
            device,
            lora,
            |vb| ClipTextEncoder::new(vb, cfg),
        )?;
        Ok(TextBranch { tokenizer, encoder })
    }

    /// Encodes `texts` (padded to the tokenizer's length).
    pub fn encode(&self, texts: &[&str], device: &Device) -> Result<TextOutput> {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        self.encoder.encode_ids(&ids, device)
    }
}

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
                Family::StableDiffusion | Family::StableDiffusionXl => None,
                Family::StableDiffusion3 | Family::Flux => Some(
                    "it is not a Stable Diffusion UNet pipeline; load it with \
                     sd::text_to_image::load (the CLI's --model does), which reads its original \
                     single files and its diffusers repo's text encoders",
                ),
            };
            if let Some(why) = why {
                return Err(Error::Spec(format!("model `{model}` ({}): {why}", p.repo)));
            }
        }
        let source = Source::parse(model)?;
        if let Source::File(path) = &source {
            let checkpoint = Arc::new(LdmCheckpoint::open(path)?);
            return StableDiffusion::from_single_file(checkpoint, None, opts);
        }
        let mut sd = StableDiffusion::from_files(&ModelFiles::new(source), opts)?;
        sd.name = model.to_string();
        Ok(sd)
    }

    /// Loads from a folder or Hub repo: `model_index.json` names the components; each is read
    /// from its own folder and config.
    pub fn from_files(files: &ModelFiles, opts: &LoadOptions) -> Result<StableDiffusion> {
        StableDiffusion::from_parts(files, None, opts)
    }

    /// Loads an original-layout single file ([`super::ldm`]) with the configs, tokenizers and
    /// scheduler of `config` (a diffusers folder or Hub repo; `None`: the family's default
    /// repo, [`super::ldm::Layout::default_config_repo`], of which no weights are fetched).
    pub fn from_single_file(
        checkpoint: Arc<LdmCheckpoint>,
        config: Option<&str>,
        opts: &LoadOptions,
    ) -> Result<StableDiffusion> {
        let layout = checkpoint.layout;
        let hint = match config {
            Some(_) => String::new(),
            None => format!(
                " (the {} default; name a diffusers folder or repo of this family with \
                 --text-encoders FOLDER|ORG/NAME)",
                layout.name()
            ),
        };
        let config = config.unwrap_or(layout.default_config_repo());
        let files = ModelFiles::new(Source::parse_as(config, "--text-encoders")?);
        let mut sd = StableDiffusion::from_parts(&files, Some(&checkpoint), opts).map_err(|e| {
            Error::Spec(format!(
                "{} single file `{}` with the configs of {}{hint}: {e}",
                layout.name(),
                checkpoint.path.display(),
                files.source().describe()
            ))
        })?;
        sd.name = checkpoint.path.display().to_string();
        sd.source = Source::File(checkpoint.path.clone());
        Ok(sd)
    }

    /// Loads the configs, tokenizers and scheduler of `files`, with the weights of its
    /// component folders, or of `checkpoint` when given.
    fn from_parts(
        files: &ModelFiles,
        checkpoint: Option<&Arc<LdmCheckpoint>>,
        opts: &LoadOptions,
    ) -> Result<StableDiffusion> {
        let index = read_json(files, "model_index.json")?;
        let class = index
            .get("_class_name")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let has = |component: &str| {
            index
                .get(component)
                .and_then(|v| v.as_array())
                .is_some_and(|a| a.len() == 2 && !a[1].is_null())
        };
        let xl = match class {
            "StableDiffusionPipeline" | "StableDiffusionImg2ImgPipeline" => false,
            "StableDiffusionXLPipeline" | "StableDiffusionXLImg2ImgPipeline" => {
                if !has("text_encoder") {
                    return Err(Error::Spec(format!(
                        "{} is an SDXL refiner (no first text encoder; aesthetic-score ids); \
                         steerdiff runs SDXL base-style pipelines",
                        files.source().describe()
                    )));
                }
                true
            }
            other => {
                return Err(Error::Spec(format!(
                    "{}: model_index.json names pipeline class `{other}`; steerdiff loads \
                     StableDiffusionPipeline and StableDiffusionXLPipeline here",
                    files.source().describe()
                )))
            }
        };
        if let Some(c) = checkpoint {
            if xl != (c.layout == super::ldm::Layout::Sdxl) {
                return Err(Error::Spec(format!(
                    "`{}` is an {} file but {} is {} pipeline; name a config repo of its family \
                     with --text-encoders (e.g. {})",
                    c.path.display(),
                    c.layout.name(),
                    files.source().describe(),
                    if xl { "an SDXL" } else { "an SD 1.x/2.x" },
                    c.layout.default_config_repo()
                )));
            }
        }
        let mut components = vec!["tokenizer", "text_encoder", "unet", "vae", "scheduler"];
        if xl {
            components.extend(["tokenizer_2", "text_encoder_2"]);
        }
        for component in components {
            if !has(component) {
                return Err(Error::Spec(format!(
                    "model_index.json of {} has no `{component}` component",
                    files.source().describe()
                )));
            }
        }
        let force_zeros_for_empty_prompt = xl
            && index
                .get("force_zeros_for_empty_prompt")
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
        let dtype = opts.dtype.dtype();
        let device = &opts.device;
        if dtype == DType::BF16 && device.is_cpu() {
            return Err(Error::Spec(
                "bf16 weights run on GPUs only (candle has no bf16 matmul on the CPU); use \
                 --dtype f32 or f16 here"
                    .into(),
            ));
        }

        let branches: &[(&str, &str)] = if xl {
            &[
                ("tokenizer", "text_encoder"),
                ("tokenizer_2", "text_encoder_2"),
            ]
        } else {
            &[("tokenizer", "text_encoder")]
        };
        let loras = (!opts.loras.is_empty())
            .then(|| Loras::open(&opts.loras))
            .transpose()?;
        let hook = |target: Target, naming: Naming| {
            loras.as_ref().map(|l| LoraHook {
                loras: l.clone(),
                target,
                naming,
            })
        };
        let text_parts = checkpoint.map(|c| c.layout.text_parts());
        let text = branches
            .iter()
            .enumerate()
            .map(|(i, (tok_dir, enc_dir))| {
                let weights = match (checkpoint, &text_parts) {
                    (Some(c), Some(parts)) => ComponentWeights::Ldm(c.clone(), parts[i].clone()),
                    _ => ComponentWeights::Files(component_weights(files, enc_dir, "model")?),
                };
                let lora = hook(Target::TextEncoder(i), Naming::Diffusers(None));
                TextBranch::load_from(
                    files,
                    tok_dir,
                    enc_dir,
                    &weights,
                    lora.as_ref(),
                    dtype,
                    device,
                )
            })
            .collect::<Result<Vec<_>>>()?;

        let unet_config = UNetConfig::read(ConfigReader::open(
            &files.get("unet/config.json")?,
            "unet/config.json",
        )?)?;
        let context_dim: usize = text.iter().map(|t| t.encoder.config.hidden_size).sum();
        if unet_config.candle.cross_attention_dim != context_dim {
            return Err(Error::Spec(format!(
                "unet cross_attention_dim {} ≠ text encoder width {context_dim}",
                unet_config.candle.cross_attention_dim
            )));
        }
        match (xl, unet_config.added) {
            (false, None) => {}
            (true, Some(added)) => {
                let last = &text[text.len() - 1].encoder.config;
                let pooled = last.projection_dim.unwrap_or(last.hidden_size);
                if added.pooled_dim() != pooled {
                    return Err(Error::Spec(format!(
                        "unet/config.json: projection_class_embeddings_input_dim {} = pooled \
                         width + 6 × {} leaves {} for the pooled text embedding, but \
                         text_encoder_2 gives {pooled}",
                        added.input_dim,
                        added.time_embed_dim,
                        added.pooled_dim()
                    )));
                }
            }
            (false, Some(_)) => {
                return Err(Error::Spec(
                    "unet/config.json has SDXL added conditioning but model_index.json names a \
                     StableDiffusionPipeline (one text encoder)"
                        .into(),
                ))
            }
            (true, None) => {
                return Err(Error::Spec(
                    "an SDXL pipeline whose unet/config.json has no `addition_embed_type = \
                     \"text_time\"`"
                        .into(),
                ))
            }
        }
        let unet_shape = ldm_unet_shape(&unet_config);
        let unet_weights = match checkpoint {
            Some(c) => ComponentWeights::Ldm(c.clone(), Part::UNet(unet_shape.clone())),
            None => ComponentWeights::Files(component_weights(
                files,
                "unet",
                "diffusion_pytorch_model",
            )?),
        };
        let unet_lora = hook(Target::Denoiser, Naming::Diffusers(Some(unet_shape)));
        let unet = unet_weights.build("the UNet", dtype, device, unet_lora.as_ref(), |vb| {
            UNet::new(vb, unet_config.clone())
        })?;
        if let Some(l) = &loras {
            let mut targets = vec![Target::Denoiser];
            targets.extend((0..text.len()).map(Target::TextEncoder));
            l.check_all_used(&targets)?;
        }

        let vae = Arc::new(Vae::load(files, checkpoint, dtype, device)?);
        if vae.config.candle.latent_channels != unet_config.in_channels {
            return Err(Error::Spec(format!(
                "VAE latent_channels {} ≠ UNet in_channels {}",
                vae.config.candle.latent_channels, unet_config.in_channels
            )));
        }

        let sched_file = "scheduler/scheduler_config.json";
        let in_file = |e| Error::Spec(format!("{sched_file}: {e}"));
        let sched_value = read_json(files, sched_file)?;
        let mut scheduler = SchedulerConfig::from_value(None, &sched_value).map_err(in_file)?;
        if let Some(p) = opts.prediction {
            scheduler.prediction_type = Some(p);
        }
        let path = NoisePath::Vp(scheduler.vp_path().map_err(in_file)?);
        let parameterization = scheduler.prediction_type();
        if parameterization == Parameterization::Velocity {
            return Err(Error::Spec(
                "scheduler_config.json asks for flow prediction on a Stable Diffusion UNet".into(),
            ));
        }
        let latent_hw = unet_config.sample_size.unwrap_or((64, 64));
        Ok(StableDiffusion {
            name: files.source().describe(),
            source: files.source().clone(),
            text,
            unet,
            unet_config,
            force_zeros_for_empty_prompt,
            vae,
            scheduler,
            path,
            parameterization,
            dtype,
            device: device.clone(),
            max_batch: opts.max_batch.max(1),
            latent_hw,
            embeddings: None,
        })
    }

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
            SchedulerConfig::from_json_str(&text)
                .map_err(|e| Error::Spec(format!("scheduler config `{other}`: {e}")))?
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

/// What the original UNet names depend on: layers per block, and which up blocks (in
/// diffusers' order, the down blocks reversed) have transformers.
fn ldm_unet_shape(config: &UNetConfig) -> UNetShape {
    let blocks = &config.candle.blocks;
    UNetShape {
        layers_per_block: config.candle.layers_per_block,
        up_has_attention: blocks
            .iter()
            .rev()
            .map(|b| b.use_cross_attn.is_some())
            .collect(),
    }
}
