//! One interface for every model family: the exact Gaussian mixtures (`gmm:SPEC.json`), the
//! embedded toy flow models (`toy`, `toy-weak`) and the text-to-image families (Stable
//! Diffusion 1.x/2.x/XL/Turbo presets, diffusers folders and Hub repos, SD3 / FLUX single
//! files).
//!
//! [`load`] takes a model spec and [`LoadOptions`] (device, dtype, …) and returns a [`Model`]
//! that answers the same questions whatever the family: its denoiser, how a condition is
//! named (a class name or a prompt), its samplers by name, samples → pixels, its guidance
//! classifier, its weaker twin, and a record of its configuration and weight hashes. Callers
//! never match on the family; this file is the one place that does.
//!
//! ```
//! use steerdiff_pipelines::model::{self, LoadOptions};
//! let toy = model::load("toy", &LoadOptions::default())?;
//! assert_eq!(toy.denoiser().sample_shape(), vec![3, 32, 32]);
//! assert_eq!(toy.class("star")?.0, 5);
//! # Ok::<(), steerdiff_pipelines::Error>(())
//! ```

mod load;
mod rewards;
pub mod weight_hashes;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde_json::Value;
use steerdiff_guidance::sampler::{self, Sampler};
use steerdiff_guidance::{Classifier, Denoiser, NoisePath};

use crate::sd::preview::LatentPreview;
use crate::sd::rewards::Pixels;
use crate::sd::text_to_image::TextToImage;
use crate::sd::WeightDType;
use crate::toy::{self, ToyFlow};
use crate::{Error, GmmClassifier, GmmDenoiser, GmmSpec, Result};

pub use load::{check_spec_path, default_dtype, is_text_to_image, load, CLASS_MODELS};
pub use rewards::{RewardBuilder, RewardSettings};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the model's tensors live (default: the CPU).
    pub device: Device,
    /// Weight dtype; `None` = the family's default on `device` ([`default_dtype`]).
    pub dtype: Option<WeightDType>,
    /// The Gaussian path a mixture is sampled on (`None` = VP with DDPM's betas); other
    /// families have their own.
    pub mixture_path: Option<NoisePath>,
    /// Single files: SD3 / FLUX's text encoders, SD 1.x/2.x/XL's configs, tokenizers and
    /// scheduler (a diffusers folder or Hub repo).
    pub text_encoders: Option<String>,
    /// Stable Diffusion: what the UNet predicts, over its scheduler config (`None`: the
    /// config's own).
    pub prediction: Option<steerdiff_guidance::Parameterization>,
    /// LoRA files merged into the weights at load (Stable Diffusion 1.x/2.x/XL, FLUX).
    pub loras: Vec<crate::sd::lora::LoraSpec>,
    /// FLUX single files: the autoencoder file.
    pub ae: Option<PathBuf>,
    /// Largest number of model rows per forward (`None` = the family's own).
    pub max_batch: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: None,
            mixture_path: None,
            text_encoders: None,
            prediction: None,
            loras: Vec::new(),
            ae: None,
            max_batch: None,
        }
    }
}

/// The families behind [`Model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// An exact Gaussian mixture: samples are vectors, conditions are its classes.
    Mixture,
    /// The embedded toy flow model: 3×32×32 images, ten shape classes.
    Toy,
    /// A text-to-image latent model: conditions are prompts, samples are latents.
    TextToImage,
}

enum Inner {
    Mixture(GmmDenoiser),
    Toy { flow: ToyFlow, weak: bool },
    Text(Arc<dyn TextToImage>),
}

/// A loaded model of any family (see the module docs).
pub struct Model {
    source: String,
    inner: Inner,
    record: Value,
    device: Device,
    dtype: WeightDType,
    /// The CFG scale a class-conditional run uses when none is given (the toy manifest's).
    recommended_cfg: Option<f64>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("source", &self.source)
            .field("family", &self.family())
            .field("device", &self.device)
            .finish()
    }
}

impl Model {
    /// The model as named.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The CFG scale a class-conditional run of this model uses when `--cfg` is not given
    /// (the toy's manifest says 3); `None` where the default is 1 or a preset says it.
    pub fn recommended_cfg(&self) -> Option<f64> {
        self.recommended_cfg
    }

    /// Its family.
    pub fn family(&self) -> Family {
        match &self.inner {
            Inner::Mixture(_) => Family::Mixture,
            Inner::Toy { .. } => Family::Toy,
            Inner::Text(_) => Family::TextToImage,
        }
    }

    /// The device its tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weight dtype it runs in.
    pub fn dtype(&self) -> WeightDType {
        self.dtype
    }

    /// The denoiser the engine samples.
    pub fn denoiser(&self) -> &dyn Denoiser {
        match &self.inner {
            Inner::Mixture(d) => d,
            Inner::Toy { flow, .. } => flow,
            Inner::Text(m) => m.as_ref(),
        }
    }

    /// Its configuration and weight hashes, as recorded in every run.
    pub fn record(&self) -> &Value {
        &self.record
    }

    /// The mixture, for a Gaussian-mixture model.
    pub fn mixture_spec(&self) -> Option<&GmmSpec> {
        match &self.inner {
            Inner::Mixture(d) => Some(&d.spec),
            _ => None,
        }
    }

    /// Whether one sample's computation is independent of the batch it shares (the toy
    /// predicts image by image; a mixture is exact). Text-to-image forwards are batched, so
    /// their rows round differently with the batch size.
    pub fn batch_stable(&self) -> bool {
        !matches!(self.inner, Inner::Text(_))
    }

    /// A class by name or label: `(label, name)`; refused by text-to-image models.
    pub fn class(&self, name: &str) -> Result<(u32, Option<String>)> {
        match &self.inner {
            Inner::Mixture(d) => {
                let label = d.spec.class_by_name(name)?;
                let cname = d
                    .spec
                    .class_names
                    .as_ref()
                    .and_then(|n| n.get(label as usize).cloned());
                Ok((label, cname))
            }
            Inner::Toy { .. } => {
                let label = toy::class_by_name(name).or_else(|| {
                    name.parse::<u32>()
                        .ok()
                        .filter(|&k| (k as usize) < toy::NUM_CLASSES)
                });
                match label {
                    Some(k) => Ok((k, Some(toy::CLASS_NAMES[k as usize].to_string()))),
                    None => Err(Error::Spec(format!(
                        "unknown toy class `{name}`; valid: {}",
                        toy::CLASS_NAMES.join(", ")
                    ))),
                }
            }
            Inner::Text(_) => Err(Error::Spec(format!(
                "--class is for class-conditional models; {} takes --prompt",
                self.source
            ))),
        }
    }

    /// The sampler `name` names (`None`: the family's default) for `steps` steps, and a
    /// description of what it resolved to (for text-to-image models, the diffusers scheduler
    /// class).
    pub fn sampler(
        &self,
        name: Option<&str>,
        steps: usize,
        eta: Option<f64>,
    ) -> Result<(Sampler, String)> {
        match &self.inner {
            Inner::Text(m) => m.sampler(name, steps, eta),
            _ => {
                let path = self.denoiser().path();
                let name = name.unwrap_or(if path.is_flow() { "flow-euler" } else { "ddim" });
                Ok((sampler::by_name(name, path, steps, eta)?, name.to_string()))
            }
        }
    }

    /// The sampler used when none is named (`None` for text-to-image models: their own
    /// scheduler config).
    pub fn default_sampler(&self) -> Option<&'static str> {
        match &self.inner {
            Inner::Text(_) => None,
            _ if self.denoiser().path().is_flow() => Some("flow-euler"),
            _ => Some("ddim"),
        }
    }

    /// Text-to-image models: the image size `(height, width)` in pixels.
    pub fn image_size(&self) -> Option<(usize, usize)> {
        match &self.inner {
            Inner::Text(m) => Some(m.image_size()),
            _ => None,
        }
    }

    /// Text-to-image models: where the default image size comes from, for messages.
    pub fn native_size_origin(&self) -> Option<String> {
        match &self.inner {
            Inner::Text(m) => Some(m.native_size_origin()),
            _ => None,
        }
    }

    fn text_mut(&mut self) -> Result<&mut (dyn TextToImage + 'static)> {
        let source = self.source.clone();
        match &mut self.inner {
            Inner::Text(m) => Arc::get_mut(m).ok_or_else(|| {
                Error::Spec(format!("`{source}` is shared: set its prompts before using it"))
            }),
            _ => Err(Error::Spec(format!(
                "--prompt is for text-to-image models; `{source}` is class-conditional (use --class)"
            ))),
        }
    }

    /// Text-to-image models: sets the image size and encodes the prompts
    /// (`Condition::Prompt(i)` → `prompts[i]`, `Condition::Null` → `negative`). Call before
    /// building rewards, which share the model.
    pub fn set_text(
        &mut self,
        (height, width): (usize, usize),
        prompts: &[&str],
        negative: Option<&str>,
    ) -> Result<()> {
        let m = self.text_mut()?;
        m.set_image_size(height, width)?;
        m.set_prompts(prompts, negative)
    }

    /// How latents (or samples) become pixels for image rewards: the VAE decode, or the
    /// family's own decoder; `None` for mixtures and the toy (their samples are the pixels).
    pub fn pixels(&self) -> Option<Pixels> {
        match &self.inner {
            Inner::Text(m) => Some(match m.vae() {
                Some(vae) => Pixels::Decode(vae),
                None => {
                    let model = m.clone();
                    Pixels::Custom(Arc::new(move |x: &Tensor| model.decode(x)))
                }
            }),
            _ => None,
        }
    }

    /// The family's linear latent preview (text-to-image models).
    pub fn latent_preview(&self) -> Option<&'static LatentPreview> {
        match &self.inner {
            Inner::Text(m) => Some(m.latent_preview()),
            _ => None,
        }
    }

    /// Final samples `[B, …]` → RGB images, `None` for mixtures (their samples are vectors).
    pub fn images(&self, x: &Tensor) -> Result<Option<Vec<image::RgbImage>>> {
        let to_images = |pixels: &Tensor, scale: fn(f32) -> f32| -> Result<Vec<image::RgbImage>> {
            let (b, _, h, w) = pixels.dims4()?;
            let mut out = Vec::with_capacity(b);
            for i in 0..b {
                let hwc = pixels.get(i)?.permute((1, 2, 0))?.flatten_all()?;
                let rgb: Vec<u8> = hwc
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|&v| (scale(v) * 255.0).round().clamp(0.0, 255.0) as u8)
                    .collect();
                out.push(
                    image::RgbImage::from_raw(w as u32, h as u32, rgb)
                        .ok_or_else(|| Error::Spec("image buffer size".into()))?,
                );
            }
            Ok(out)
        };
        match &self.inner {
            Inner::Mixture(_) => Ok(None),
            // Toy pixels are in [-1, 1].
            Inner::Toy { .. } => Ok(Some(to_images(x, |v| ((v + 1.0) * 0.5).clamp(0.0, 1.0))?)),
            // One image at a time: the decoder's convolutions round differently with the
            // batch, and an image must not depend on which others share its run.
            Inner::Text(m) => {
                let mut out = Vec::with_capacity(x.dim(0)?);
                for i in 0..x.dim(0)? {
                    out.extend(to_images(&m.decode(&x.narrow(0, i, 1)?)?, |v| v)?);
                }
                Ok(Some(out))
            }
        }
    }

    /// Images `[B, 3, H, W]` in `[0, 1]` → clean latents (img2img; text-to-image models).
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        match &self.inner {
            Inner::Text(m) => m.encode_image(&pixels.to_device(&self.device)?),
            _ => Err(Error::Spec(format!(
                "--init-image is for text-to-image models; `{}` is not one",
                self.source
            ))),
        }
    }

    /// The model's own guidance classifier on x̂0: the toy's `toy-classifier`, a mixture's
    /// exact Bayes classifier; `None` for text-to-image models (they take a zero-shot CLIP
    /// classifier, [`RewardBuilder::zero_shot`]).
    pub fn classifier(&self) -> Result<Option<Arc<dyn Classifier>>> {
        match &self.inner {
            Inner::Mixture(d) => Ok(Some(Arc::new(GmmClassifier {
                spec: d.spec.clone(),
            }))),
            Inner::Toy { .. } => Ok(Some(Arc::new(toy_classifier(
                toy::model::CLASSIFIER,
                &self.device,
            )?))),
            Inner::Text(_) => Ok(None),
        }
    }

    /// The weaker twin autoguidance guides with, when the family ships one (the toy's
    /// `toy-weak`), on the same device.
    pub fn weak_twin(&self) -> Result<Option<Model>> {
        match &self.inner {
            Inner::Toy { weak: false, .. } => Ok(Some(load::load_toy(
                true,
                &LoadOptions {
                    device: self.device.clone(),
                    ..LoadOptions::default()
                },
            )?)),
            _ => Ok(None),
        }
    }

    /// The judges of this family: classifiers that never steer and measure where samples
    /// land. The first is the default. A mixture has its exact Bayes classifier
    /// ([`BAYES_JUDGE`]); the toy its judge and its first evaluation classifier
    /// ([`toy::model::JUDGE`], [`toy::model::EVAL_CLASSIFIER`]); text-to-image models none
    /// (they are judged by a held-out reward instead).
    pub fn judges(&self) -> &'static [&'static str] {
        match &self.inner {
            Inner::Mixture(_) => &[BAYES_JUDGE],
            Inner::Toy { .. } => &[toy::model::JUDGE, toy::model::EVAL_CLASSIFIER],
            Inner::Text(_) => &[],
        }
    }

    /// The class judge `judge` (one of [`Model::judges`]) assigns to each of the samples `xs`.
    pub fn judge_classes(&self, judge: &str, xs: &[Vec<f64>]) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Mixture(d) if judge == BAYES_JUDGE => {
                Ok(xs.iter().map(|x| d.spec.class_of(x)).collect())
            }
            Inner::Toy { flow, .. } if self.judges().contains(&judge) => {
                let mut dims = vec![xs.len()];
                dims.extend(flow.sample_shape());
                let flat: Vec<f32> = xs.iter().flatten().map(|&v| v as f32).collect();
                let x = Tensor::from_vec(flat, dims, &self.device)?;
                toy_classifier(judge, &self.device)?.predict(&x)
            }
            _ => Err(Error::Spec(format!(
                "no judge `{judge}` for this model; its judges: {}",
                if self.judges().is_empty() {
                    "none (judge text-to-image samples by a held-out reward)".to_string()
                } else {
                    self.judges().join(", ")
                }
            ))),
        }
    }
}

/// The name of a mixture's judge: its exact Bayes classifier on clean data.
pub const BAYES_JUDGE: &str = "bayes";

/// Loads a toy classifier from the shipped assets, its sha256 checked, onto `device`.
fn toy_classifier(entry: &str, device: &Device) -> Result<toy::ToyClassifier> {
    toy::ToyClassifier::load_on(&toy::Assets::locate(), entry, device)
        .map_err(|e| Error::Spec(format!("loading the toy classifier `{entry}`: {e}")))
}
