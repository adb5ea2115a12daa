//! Rewards and a classifier on CLIP embeddings of decoded images:
//!
//! * [`ClipScore`] — text–image agreement, `100 · cos(e_img, e_txt)` (the CLIPScore of Hessel
//!   et al. 2021, *CLIPScore: A Reference-free Evaluation Metric for Image Captioning*, in the
//!   ×100 convention of torchmetrics and without its clamp at 0, which would flatten the signal
//!   a steering method climbs); each row is scored against its own prompt.
//! * [`Aesthetic`] — a LAION-style aesthetic predictor: an MLP on the unit-norm CLIP image
//!   embedding (Schuhmann et al., LAION-Aesthetics; the "improved aesthetic predictor" is
//!   Linear 768→1024→128→64→16→1 with dropout and no activations, trained on ViT-L/14
//!   embeddings). Loads any such chain from safetensors named `layers.{k}.weight/bias`.
//! * [`ClipZeroShot`] — a zero-shot classifier over texts, `softmax(logits)` over prompt
//!   variants: the classifier GFCG reads on text-to-image models.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use steerdiff_guidance::{Classifier, Condition, Reward, RewardContext};

use super::clip_model::ClipModel;
use super::rewards::{DecodeCount, Pixels};
use super::weights::load_error;
use crate::{Error, Result};

fn reward_error(name: &str, e: Error) -> steerdiff_guidance::Error {
    steerdiff_guidance::Error::Reward {
        name: name.to_string(),
        message: e.to_string(),
    }
}

/// Row `i`'s prompt index: [`Condition::Prompt`]`(i)`; other conditions have none.
fn prompt_of(c: &Condition) -> Option<usize> {
    match c {
        Condition::Prompt(i) => Some(*i as usize),
        _ => None,
    }
}

/// `100 · cos(e_img, e_txt)` against each row's own prompt.
pub struct ClipScore {
    clip: Arc<ClipModel>,
    pixels: Pixels,
    /// `[P, D]` unit-norm embeddings of the run's prompts.
    prompts: Tensor,
    name: String,
    decodes: DecodeCount,
}

impl ClipScore {
    /// A CLIP score for the run's `prompts` (row condition `Prompt(i)` → `prompts[i]`).
    pub fn new(clip: Arc<ClipModel>, pixels: Pixels, prompts: &[&str]) -> Result<ClipScore> {
        if prompts.is_empty() {
            return Err(Error::Spec("the CLIP score needs a prompt".into()));
        }
        let embeds = clip.text_embeds(prompts)?;
        let name = format!("clip({})", clip.name());
        Ok(ClipScore {
            clip,
            pixels,
            prompts: embeds,
            name,
            decodes: DecodeCount::default(),
        })
    }

    /// The score of each image `[B, 3, H, W]` in `[0, 1]` against prompt `prompt[b]`
    /// (`None` → NaN).
    pub fn score_images(&self, images: &Tensor, prompt: &[Option<usize>]) -> Result<Vec<f64>> {
        let img = self.clip.image_embeds(images)?;
        let cos = img
            .matmul(&self.prompts.t()?)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        let n = self.prompts.dim(0)?;
        cos.iter()
            .zip(prompt)
            .map(|(row, p)| match p {
                Some(i) if *i < n => Ok(100.0 * row[*i]),
                Some(i) => Err(Error::Spec(format!(
                    "prompt {i} requested but the CLIP score knows {n} prompt(s)"
                ))),
                None => Ok(f64::NAN),
            })
            .collect()
    }
}

impl Reward for ClipScore {
    fn name(&self) -> &str {
        &self.name
    }

    fn take_decodes(&self) -> u64 {
        self.decodes.take()
    }

    fn score(&self, x0: &Tensor, cx: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let prompts: Vec<Option<usize>> = cx.conds.iter().map(prompt_of).collect();
        self.pixels
            .images_counted(x0, &self.decodes)
            .and_then(|images| self.score_images(&images, &prompts))
            .map_err(|e| reward_error(&self.name, e))
    }
}

/// A chain of linear layers, `layers.{k}` in increasing `k` (LAION's aesthetic MLP).
#[derive(Debug, Clone)]
pub struct LinearChain {
    layers: Vec<Linear>,
}

impl LinearChain {
    /// Loads `layers.{k}.weight` / `.bias` from a safetensors file; shapes come from the file
    /// and must chain (each layer's input = the previous one's output), ending in one output.
    pub fn load(path: &Path) -> Result<LinearChain> {
        LinearChain::load_on(path, &candle_core::Device::Cpu)
    }

    /// [`LinearChain::load`] with the weights on `device`.
    pub fn load_on(path: &Path, device: &candle_core::Device) -> Result<LinearChain> {
        let files = [path.to_path_buf()];
        let st = super::weights::open_checked(&files)?;
        // (k, shape of layers.k.weight), in increasing k.
        let mut shapes: Vec<(usize, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .filter_map(|(name, view)| {
                let k = name
                    .strip_prefix("layers.")?
                    .strip_suffix(".weight")?
                    .parse()
                    .ok()?;
                Some((k, view.shape().to_vec()))
            })
            .collect();
        shapes.sort_unstable();
        if shapes.is_empty() {
            return Err(Error::Spec(format!(
                "`{}` has no `layers.K.weight` tensors (an aesthetic MLP as LAION's improved \
                 aesthetic predictor stores it, converted to safetensors)",
                path.display()
            )));
        }
        let vb = VarBuilder::from_backend(Box::new(st), DType::F32, device.clone());
        let mut layers = Vec::with_capacity(shapes.len());
        let mut width: Option<usize> = None;
        for (k, shape) in shapes {
            let [out, inp] = shape[..] else {
                return Err(Error::Spec(format!(
                    "`{}`: layers.{k}.weight has shape {shape:?}; a matrix is expected",
                    path.display()
                )));
            };
            if let Some(w) = width {
                if w != inp {
                    return Err(Error::Spec(format!(
                        "`{}`: layers.{k} takes {inp} inputs but the layer before gives {w}",
                        path.display()
                    )));
                }
            }
            width = Some(out);
            layers.push(
                candle_nn::linear(inp, out, vb.pp("layers").pp(k))
                    .map_err(|e| load_error("the aesthetic MLP", &files, e))?,
            );
        }
        if width != Some(1) {
            return Err(Error::Spec(format!(
                "`{}`: the last layer gives {} outputs; an aesthetic score is one number",
                path.display(),
                width.unwrap_or(0)
            )));
        }
        Ok(LinearChain { layers })
    }

    /// Input width.
    pub fn input_dim(&self) -> usize {
        self.layers[0].weight().dim(1).unwrap_or(0)
    }

    /// `[B, in]` → `[B]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for l in &self.layers {
            x = l.forward(&x)?;
        }
        Ok(x.squeeze(1)?)
    }
}

/// A LAION-style aesthetic score: [`LinearChain`] on the unit-norm CLIP image embedding.
pub struct Aesthetic {
    clip: Arc<ClipModel>,
    mlp: LinearChain,
    pixels: Pixels,
    name: String,
    decodes: DecodeCount,
}

impl Aesthetic {
    /// The aesthetic reward of the MLP at `path` on `clip`'s embeddings.
    pub fn new(clip: Arc<ClipModel>, path: &Path, pixels: Pixels) -> Result<Aesthetic> {
        let mlp = LinearChain::load_on(path, clip.device())?;
        let dim = clip.vision_projection_dim();
        if mlp.input_dim() != dim {
            return Err(Error::Spec(format!(
                "aesthetic MLP `{}` takes {}-wide embeddings but CLIP `{}` gives {dim} (LAION's \
                 predictor is for ViT-L/14: --clip-model openai/clip-vit-large-patch14)",
                path.display(),
                mlp.input_dim(),
                clip.name()
            )));
        }
        let name = format!("aesthetic({})", path.display());
        Ok(Aesthetic {
            clip,
            mlp,
            pixels,
            name,
            decodes: DecodeCount::default(),
        })
    }

    /// Scores images `[B, 3, H, W]` in `[0, 1]`.
    pub fn score_images(&self, images: &Tensor) -> Result<Vec<f64>> {
        let e = self.clip.image_embeds(images)?;
        Ok(self
            .mlp
            .forward(&e)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?)
    }
}

impl Reward for Aesthetic {
    fn name(&self) -> &str {
        &self.name
    }

    fn take_decodes(&self) -> u64 {
        self.decodes.take()
    }

    fn score(&self, x0: &Tensor, _cx: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        self.pixels
            .images_counted(x0, &self.decodes)
            .and_then(|images| self.score_images(&images))
            .map_err(|e| reward_error(&self.name, e))
    }
}

/// Zero-shot classification over `texts` (class `k` = `texts[k]`): `ln softmax(logits)`.
pub struct ClipZeroShot {
    clip: Arc<ClipModel>,
    pixels: Pixels,
    texts: Tensor,
    name: String,
}

impl ClipZeroShot {
    /// A classifier whose classes are `texts`.
    pub fn new(clip: Arc<ClipModel>, pixels: Pixels, texts: &[&str]) -> Result<ClipZeroShot> {
        if texts.len() < 2 {
            return Err(Error::Spec(
                "a zero-shot classifier needs at least two texts (the prompt and a competitor)"
                    .into(),
            ));
        }
        let name = format!("clip-zero-shot({})", clip.name());
        Ok(ClipZeroShot {
            texts: clip.text_embeds(texts)?,
            clip,
            pixels,
            name,
        })
    }

    /// `ln p(k | image)` for images `[B, 3, H, W]` in `[0, 1]`.
    pub fn log_probs_images(&self, images: &Tensor) -> Result<Vec<Vec<f64>>> {
        let logits = self
            .clip
            .logits(&self.clip.image_embeds(images)?, &self.texts)?;
        let lp = candle_nn::ops::log_softmax(&logits, 1)?;
        Ok(lp.to_dtype(DType::F64)?.to_vec2::<f64>()?)
    }
}

impl Classifier for ClipZeroShot {
    fn name(&self) -> &str {
        &self.name
    }

    fn log_probs(&self, x0: &Tensor) -> steerdiff_guidance::Result<Vec<Vec<f64>>> {
        self.pixels
            .images(x0)
            .and_then(|images| self.log_probs_images(&images))
            .map_err(|e| reward_error(&self.name, e))
    }
}
