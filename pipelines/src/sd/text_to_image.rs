//! [`TextToImage`]: what the text-to-image command line needs of a model beyond
//! [`Denoiser`] — image size, prompts, its scheduler, decoding — so Stable Diffusion 1.x/2.x/XL,
//! SD3 and FLUX run through one `generate`.

use std::sync::Arc;

use candle_core::Tensor;
use steerdiff_guidance::sampler::Sampler;
use steerdiff_guidance::Denoiser;

use super::dit_text::{FluxText, Sd3Text};
use super::flux::Flux;
use super::pipeline::StableDiffusion;
use super::preview::LatentPreview;
use super::sd3::Sd3;
use super::vae::Vae;
use crate::{Error, Result};

/// A text-conditioned latent model with its text encoders and decoder.
pub trait TextToImage: Denoiser + Send + Sync {
    /// The image size sampled, `(height, width)` in pixels.
    fn image_size(&self) -> (usize, usize);

    /// Where the default image size comes from (e.g. the config file), for messages.
    fn native_size_origin(&self) -> String {
        "the model's native size".into()
    }

    /// Sets the image size in pixels.
    fn set_image_size(&mut self, height: usize, width: usize) -> Result<()>;

    /// Encodes the run's prompts: `Condition::Prompt(i)` → `prompts[i]`, `Condition::Null` →
    /// `negative` (the family's convention when `None`).
    fn set_prompts(&mut self, prompts: &[&str], negative: Option<&str>) -> Result<()>;

    /// The sampler for a scheduler name (`None`: the model's own) and a description of it.
    fn sampler(
        &self,
        scheduler: Option<&str>,
        steps: usize,
        eta: Option<f64>,
    ) -> Result<(Sampler, String)>;

    /// Latents → images `[B, 3, H, W]` in `[0, 1]`.
    fn decode(&self, latents: &Tensor) -> Result<Tensor>;

    /// The KL VAE, when the family has one shared with rewards (Stable Diffusion).
    fn vae(&self) -> Option<Arc<Vae>> {
        None
    }

    /// Images `[B, 3, H, W]` in `[0, 1]` → clean latents (img2img).
    fn encode_image(&self, pixels: &Tensor) -> Result<Tensor>;

    /// The family's linear latent → RGB preview.
    fn latent_preview(&self) -> &'static LatentPreview;
}

impl TextToImage for StableDiffusion {
    fn image_size(&self) -> (usize, usize) {
        StableDiffusion::image_size(self)
    }

    fn native_size_origin(&self) -> String {
        StableDiffusion::native_size_origin(self)
    }

    fn set_image_size(&mut self, height: usize, width: usize) -> Result<()> {
        StableDiffusion::set_image_size(self, height, width)
    }

    fn set_prompts(&mut self, prompts: &[&str], negative: Option<&str>) -> Result<()> {
        StableDiffusion::set_prompts(self, prompts, negative)
    }

    fn sampler(
        &self,
        scheduler: Option<&str>,
        steps: usize,
        eta: Option<f64>,
    ) -> Result<(Sampler, String)> {
        StableDiffusion::sampler(self, scheduler, steps, eta)
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        StableDiffusion::decode(self, latents)
    }

    fn vae(&self) -> Option<Arc<Vae>> {
        Some(self.vae.clone())
    }

    fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vae.encode(pixels)
    }

    fn latent_preview(&self) -> &'static LatentPreview {
        StableDiffusion::latent_preview(self)
    }
}

/// What a DiT family's transformer + autoencoder gives [`DitPipeline`] (SD3, FLUX).
pub trait DitModel: Denoiser + Send + Sync {
    /// The family, for messages.
    const FAMILY: &'static str;

    /// The image size sampled, `(height, width)` in pixels.
    fn image_size(&self) -> (usize, usize);

    /// Sets the image size in pixels.
    fn set_image_size(&mut self, height: usize, width: usize) -> Result<()>;

    /// Sets the text table (row 0 the negative prompt, row `i + 1` prompt `i`).
    fn set_text_embeddings(&mut self, stream: &Tensor, pooled: &Tensor) -> Result<()>;

    /// The family's flow-match Euler sampler.
    fn flow_sampler(&self, steps: usize, eta: Option<f64>) -> Result<Sampler>;

    /// Latents → images in `[0, 1]`.
    fn decode(&self, latents: &Tensor) -> Result<Tensor>;

    /// Images in `[0, 1]` → clean latents (the posterior mean).
    fn encode(&self, images: &Tensor) -> Result<Tensor>;

    /// The family's linear latent → RGB preview.
    fn latent_preview(&self) -> &'static LatentPreview;
}

/// What a DiT family's text encoders give [`DitPipeline`]: `(stream [N, L, D], pooled [N, P])`.
pub trait DitText: Send + Sync {
    /// Encodes `texts`, T5 at `max_sequence_length` tokens.
    fn encode(&self, texts: &[&str], max_sequence_length: usize) -> Result<(Tensor, Tensor)>;
}

macro_rules! dit_model {
    ($model:ty, $family:literal) => {
        impl DitModel for $model {
            const FAMILY: &'static str = $family;
            fn image_size(&self) -> (usize, usize) {
                <$model>::image_size(self)
            }
            fn set_image_size(&mut self, height: usize, width: usize) -> Result<()> {
                <$model>::set_image_size(self, height, width)
            }
            fn set_text_embeddings(&mut self, stream: &Tensor, pooled: &Tensor) -> Result<()> {
                <$model>::set_text_embeddings(self, stream, pooled)
            }
            fn flow_sampler(&self, steps: usize, eta: Option<f64>) -> Result<Sampler> {
                <$model>::sampler(self, steps, eta)
            }
            fn decode(&self, latents: &Tensor) -> Result<Tensor> {
                <$model>::decode(self, latents)
            }
            fn encode(&self, images: &Tensor) -> Result<Tensor> {
                <$model>::encode(self, images)
            }
            fn latent_preview(&self) -> &'static LatentPreview {
                <$model>::latent_preview(self)
            }
        }
    };
}

dit_model!(Sd3, "SD3");
dit_model!(Flux, "FLUX");

impl DitText for Sd3Text {
    fn encode(&self, texts: &[&str], max_sequence_length: usize) -> Result<(Tensor, Tensor)> {
        Sd3Text::encode(self, texts, max_sequence_length)
    }
}

impl DitText for FluxText {
    fn encode(&self, texts: &[&str], max_sequence_length: usize) -> Result<(Tensor, Tensor)> {
        FluxText::encode(self, texts, max_sequence_length)
    }
}

/// A DiT transformer with its text encoders: the text-to-image pipeline of SD3 and FLUX.
pub struct DitPipeline<M, T> {
    /// The transformer and autoencoder.
    pub model: M,
    /// The text encoders.
    pub text: T,
    /// T5 tokens per prompt (diffusers' defaults: SD3 256, FLUX schnell 256, dev 512).
    pub max_sequence_length: usize,
}

/// SD3 with CLIP-L, CLIP-G and T5.
pub type Sd3Pipeline = DitPipeline<Sd3, Sd3Text>;
/// FLUX with CLIP-L and T5.
pub type FluxPipeline = DitPipeline<Flux, FluxText>;

impl<M: DitModel, T: DitText> Denoiser for DitPipeline<M, T> {
    fn name(&self) -> &str {
        self.model.name()
    }

    fn parameterization(&self) -> steerdiff_guidance::Parameterization {
        self.model.parameterization()
    }

    fn path(&self) -> &steerdiff_guidance::NoisePath {
        self.model.path()
    }

    fn sample_shape(&self) -> Vec<usize> {
        self.model.sample_shape()
    }

    fn device(&self) -> &candle_core::Device {
        self.model.device()
    }

    fn max_batch(&self) -> usize {
        self.model.max_batch()
    }

    fn forward(
        &self,
        x: &Tensor,
        at: &steerdiff_guidance::StepPoint,
        conds: &[steerdiff_guidance::Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        self.model.forward(x, at, conds)
    }
}

impl<M: DitModel, T: DitText> TextToImage for DitPipeline<M, T> {
    fn image_size(&self) -> (usize, usize) {
        self.model.image_size()
    }

    fn set_image_size(&mut self, height: usize, width: usize) -> Result<()> {
        self.model.set_image_size(height, width)
    }

    fn set_prompts(&mut self, prompts: &[&str], negative: Option<&str>) -> Result<()> {
        let mut texts = vec![negative.unwrap_or("")];
        texts.extend_from_slice(prompts);
        let (stream, pooled) = self.text.encode(&texts, self.max_sequence_length)?;
        self.model.set_text_embeddings(&stream, &pooled)
    }

    fn sampler(
        &self,
        scheduler: Option<&str>,
        steps: usize,
        eta: Option<f64>,
    ) -> Result<(Sampler, String)> {
        match scheduler {
            None | Some("default") | Some("FlowMatchEulerDiscreteScheduler") => {}
            Some(other) => {
                return Err(Error::Spec(format!(
                    "{} samples with its own flow-match Euler scheduler; `--scheduler {other}` \
                     does not apply (drop it; --eta > 0 makes it stochastic)",
                    M::FAMILY
                )))
            }
        }
        let sampler = self.model.flow_sampler(steps, eta)?;
        Ok((sampler, "FlowMatchEulerDiscreteScheduler".into()))
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.model.decode(latents)
    }

    fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        self.model.encode(pixels)
    }

    fn latent_preview(&self) -> &'static LatentPreview {
        self.model.latent_preview()
    }
}

/// Which single-file transformer a checkpoint holds, from its tensor names.
fn single_file_family(path: &std::path::Path) -> Result<&'static str> {
    let st = super::weights::open_checked(&[path.to_path_buf()])?;
    let names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    let has = |p: &str| names.iter().any(|n| n.starts_with(p));
    if has("model.diffusion_model.joint_blocks.") {
        Ok("sd3")
    } else if has("double_blocks.") || has("model.diffusion_model.double_blocks.") {
        Ok("flux")
    } else if super::ldm::Layout::is_ldm_unet(&names) {
        Ok("sd")
    } else {
        Err(Error::Spec(format!(
            "`{}` is neither a Stable Diffusion 1.x/2.x/XL \
             (model.diffusion_model.input_blocks.*), an SD3 (model.diffusion_model.joint_blocks.*) \
             nor a FLUX (double_blocks.*) single-file checkpoint",
            path.display()
        )))
    }
}

/// Loads the model named on the command line: a Stable Diffusion preset, folder or Hub repo;
/// an SD3 / FLUX preset (its original single files from the Hub, the text encoders from its
/// diffusers repo); or an SD3 / FLUX single-file transformer (`model` is a `.safetensors`
/// file) with the text encoders of a diffusers-layout folder or repo (`text_encoders`) and,
/// for FLUX, its autoencoder file (`ae`).
pub fn load(
    model: &str,
    text_encoders: Option<&str>,
    ae: Option<&std::path::Path>,
    opts: &super::LoadOptions,
) -> Result<Loaded> {
    if let Some(p) = super::preset(model) {
        if let Some(single) = p.single_file {
            if ae.is_some() {
                return Err(Error::Spec(format!(
                    "`{model}` names its own autoencoder file; drop --ae"
                )));
            }
            let hub = super::ModelFiles::new(super::Source::Hub {
                repo: single.repo.into(),
                revision: "main".into(),
            });
            let transformer = hub.get(single.transformer)?;
            let ae = single.ae.map(|f| hub.get(f)).transpose()?;
            let family = single_file_family(&transformer)?;
            let mut loaded = load_single(
                &transformer,
                family,
                text_encoders.unwrap_or(p.repo),
                ae.as_deref(),
                opts,
            )?;
            loaded.root = hub.root();
            return Ok(loaded);
        }
    }
    let path = std::path::Path::new(model);
    let gguf = super::flux_gguf::is_gguf(path);
    let single = path.is_file() && (gguf || path.extension().is_some_and(|e| e == "safetensors"));
    if !single {
        if text_encoders.is_some() || ae.is_some() {
            return Err(Error::Spec(
                "--text-encoders / --ae go with an SD3 or FLUX single-file --model; a Stable \
                 Diffusion repo or folder brings its own"
                    .into(),
            ));
        }
        let sd = StableDiffusion::load(model, opts)?;
        let files = super::ModelFiles::new(sd.source().clone());
        let mut weights = Vec::new();
        for (folder, stem) in [
            ("unet", "diffusion_pytorch_model"),
            ("vae", "diffusion_pytorch_model"),
        ] {
            weights.extend(super::weights::component_weights(&files, folder, stem)?);
        }
        let encoders = ["text_encoder", "text_encoder_2"];
        weights.extend(text_encoder_weights(&files, &encoders[..sd.text.len()])?);
        return Ok(Loaded {
            root: files.root(),
            model: Box::new(sd),
            weights,
        });
    }
    let family = if gguf {
        super::flux_gguf::family(path)?
    } else {
        single_file_family(path)?
    };
    if family == "sd" {
        if ae.is_some() {
            return Err(Error::Spec(format!(
                "`{model}` is a Stable Diffusion file with its VAE inside; drop --ae"
            )));
        }
        let checkpoint = std::sync::Arc::new(super::ldm::LdmCheckpoint::open(path)?);
        let sd = StableDiffusion::from_single_file(checkpoint, text_encoders, opts)?;
        return Ok(Loaded {
            root: None,
            model: Box::new(sd),
            weights: vec![path.to_path_buf()],
        });
    }
    let Some(spec) = text_encoders else {
        return Err(Error::Spec(format!(
            "`{model}` is a {} transformer without text encoders: add --text-encoders \
             FOLDER|ORG/NAME (a diffusers-layout repo with {} folders, e.g. {})",
            family.to_uppercase(),
            if family == "sd3" {
                "tokenizer[_2,_3]/ and text_encoder[_2,_3]/"
            } else {
                "tokenizer[_2]/ and text_encoder[_2]/"
            },
            if family == "sd3" {
                "stabilityai/stable-diffusion-3-medium-diffusers"
            } else {
                "black-forest-labs/FLUX.1-schnell"
            }
        )));
    };
    load_single(path, family, spec, ae, opts)
}

/// An SD3 / FLUX transformer file (`family` from [`single_file_family`]) with its text
/// encoders (`text_encoders`: folder or repo).
fn load_single(
    path: &std::path::Path,
    family: &str,
    text_encoders: &str,
    ae: Option<&std::path::Path>,
    opts: &super::LoadOptions,
) -> Result<Loaded> {
    let files = super::ModelFiles::new(super::Source::parse_as(text_encoders, "--text-encoders")?);
    let mut weights = vec![path.to_path_buf()];
    weights.extend(ae.map(std::path::Path::to_path_buf));
    let mut loaded = |model: Box<dyn TextToImage>, encoders: &[&str]| -> Result<Loaded> {
        weights.extend(text_encoder_weights(&files, encoders)?);
        Ok(Loaded {
            model,
            weights: std::mem::take(&mut weights),
            root: None,
        })
    };
    let text_dtype = opts.dtype.dtype();
    if family == "sd3" {
        if ae.is_some() {
            return Err(Error::Spec(
                "--ae is for FLUX; an SD3 single file holds its autoencoder".into(),
            ));
        }
        if !opts.loras.is_empty() {
            return Err(Error::Spec(
                "--lora is not supported on SD3 / SD3.5 yet (Stable Diffusion 1.x/2.x/XL and \
                 FLUX are)"
                    .into(),
            ));
        }
        let model = Sd3::load(path, opts)?;
        let text = Sd3Text::from_files(
            &files,
            model.config.context_embed_size,
            text_dtype,
            &opts.device,
        )?;
        let encoders = ["text_encoder", "text_encoder_2", "text_encoder_3"];
        let n = if text.t5.is_some() { 3 } else { 2 };
        let pipeline = Sd3Pipeline {
            model,
            text,
            max_sequence_length: 256,
        };
        return loaded(Box::new(pipeline), &encoders[..n]);
    }
    let Some(ae) = ae else {
        return Err(Error::Spec(format!(
            "`{}` is a FLUX transformer: add --ae ae.safetensors (its autoencoder file)",
            path.display()
        )));
    };
    let loras = (!opts.loras.is_empty())
        .then(|| super::lora::Loras::open(&opts.loras))
        .transpose()?;
    let model = Flux::load_with_loras(path, ae, opts, loras.as_ref())?;
    let max_sequence_length = if model.config.guidance_embed {
        512
    } else {
        256
    };
    let pipeline = FluxPipeline {
        model,
        text: FluxText::from_files_with_lora(
            &files,
            text_dtype,
            &opts.device,
            loras
                .as_ref()
                .map(|l| super::lora::LoraHook {
                    loras: l.clone(),
                    target: super::lora::Target::TextEncoder(0),
                    naming: super::lora::Naming::Diffusers(None),
                })
                .as_ref(),
        )?,
        max_sequence_length,
    };
    if let Some(l) = &loras {
        l.check_all_used(&[
            super::lora::Target::Denoiser,
            super::lora::Target::TextEncoder(0),
        ])?;
    }
    loaded(Box::new(pipeline), &["text_encoder", "text_encoder_2"])
}

/// A loaded text-to-image model and the weight files it was read from.
pub struct Loaded {
    /// The model.
    pub model: Box<dyn TextToImage>,
    /// Every safetensors file its weights came from (transformer or UNet, autoencoder, text
    /// encoders), for the run record's hashes.
    pub weights: Vec<std::path::PathBuf>,
    /// The folder or Hub snapshot the model was read from, when it has one (records name
    /// weight files relative to it).
    pub root: Option<std::path::PathBuf>,
}

/// The weight files of the text encoders `folders` of `files`, resolved as their loaders
/// resolve them.
fn text_encoder_weights(
    files: &super::ModelFiles,
    folders: &[&str],
) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for folder in folders {
        out.extend(super::weights::component_weights(files, folder, "model")?);
    }
    Ok(out)
}
