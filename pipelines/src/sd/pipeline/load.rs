//! Loading a Stable Diffusion pipeline: from a diffusers folder or Hub repo (each component
//! from its folder), or from an original-layout single file ([`crate::sd::ldm`]) with the
//! configs of a diffusers repo; LoRA files ([`crate::sd::lora`]) merged into the UNet and text
//! encoders as they are built.

use std::sync::Arc;

use candle_core::DType;
use steerdiff_guidance::{NoisePath, Parameterization, SchedulerConfig};

use super::{LoadOptions, StableDiffusion, TextBranch};
use crate::sd::component_weights::ComponentWeights;
use crate::sd::config::{ConfigReader, UNetConfig};
use crate::sd::hub::{Family, ModelFiles, Source};
use crate::sd::ldm::{LdmCheckpoint, Part, UNetShape};
use crate::sd::lora::{LoraHook, Loras, Naming, Target};
use crate::sd::unet::UNet;
use crate::sd::vae::Vae;
use crate::sd::weights::component_weights;
use crate::{Error, Result};

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
        if let Some(p) = crate::sd::hub::preset(model) {
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

    /// Loads an original-layout single file ([`crate::sd::ldm`]) with the configs, tokenizers and
    /// scheduler of `config` (a diffusers folder or Hub repo; `None`: the family's default
    /// repo, [`crate::sd::ldm::Layout::default_config_repo`], of which no weights are fetched).
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
            if xl != (c.layout == crate::sd::ldm::Layout::Sdxl) {
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
