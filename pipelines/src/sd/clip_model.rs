//! CLIP as an image–text scorer (Radford et al. 2021, *Learning Transferable Visual Models
//! From Natural Language Supervision*): transformers' `CLIPModel` — the text tower
//! ([`ClipTextEncoder`] with `text_projection`), the vision tower (a ViT), `visual_projection`
//! and the learnt temperature — with `CLIPImageProcessor`'s preprocessing.
//!
//! ```text
//! e_img = normalize(W_v · ln_post(ViT(pixels))[class token])
//! e_txt = normalize(W_t · ln_final(T(ids))[end-of-text token])
//! logit = exp(logit_scale) · ⟨e_img, e_txt⟩
//! ```
//!
//! Loaded from a transformers-format folder or Hub repo (`config.json` with `text_config` and
//! `vision_config`, `model.safetensors`, the tokenizer files and `preprocessor_config.json` at
//! the root), e.g. `openai/clip-vit-large-patch14`. Always f32: it is small beside a UNet.

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Conv2d, LayerNorm, Linear, VarBuilder};
use serde_json::Value;

use super::clip::{ClipTextEncoder, ClipTokenizer, Layer};
use super::config::{Bounds, ClipActivation, ClipTextConfig, ConfigReader, TRANSFORMERS_GENERIC};
use super::hub::{ModelFiles, Source};
use super::weights::{component_weights, load_error, var_builder};
use crate::{Error, Result};

/// The CLIP model rewards use when none is named: ViT-L/14, the image tower of SD 1.x and the
/// embedding space of the LAION aesthetic predictor.
pub const DEFAULT_CLIP: &str = "openai/clip-vit-large-patch14";

/// A transformers `CLIPVisionConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// MLP activation.
    pub activation: ClipActivation,
    /// LayerNorm ε.
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// Reads a `vision_config`.
    pub fn read(mut c: ConfigReader) -> Result<ClipVisionConfig> {
        if let Some(t) = c.str_opt("model_type")? {
            if t != "clip_vision_model" {
                return Err(Error::Spec(format!(
                    "{}: model_type = {t}; a CLIP vision tower (clip_vision_model) is expected",
                    c.file
                )));
            }
        }
        let cfg = ClipVisionConfig {
            hidden_size: c.usize("hidden_size", Bounds::COUNT)?,
            intermediate_size: c.usize("intermediate_size", Bounds::COUNT)?,
            num_hidden_layers: c.usize("num_hidden_layers", Bounds::COUNT)?,
            num_attention_heads: c.usize("num_attention_heads", Bounds::COUNT)?,
            // (images are resized to this side; CLIPs use 224 to 448)
            image_size: c.usize("image_size", Bounds::COUNT.at_most(65_536.0))?,
            patch_size: c.usize("patch_size", Bounds::COUNT)?,
            activation: ClipActivation::read(&mut c)?,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-5, Bounds::POSITIVE)?,
        };
        c.must_be("num_channels", 3.into(), "image channels")?;
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(Error::Spec(format!(
                "{}: hidden_size {} is not divisible into {} heads",
                c.file, cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if cfg.image_size % cfg.patch_size != 0 {
            return Err(Error::Spec(format!(
                "{}: image_size {} is not a whole number of {}-pixel patches",
                c.file, cfg.image_size, cfg.patch_size
            )));
        }
        // The sub-config's own projection_dim is unused: CLIPModel's top-level one counts.
        c.ignore(&["projection_dim"]);
        c.ignore(TRANSFORMERS_GENERIC);
        c.finish()?;
        Ok(cfg)
    }
}

/// CLIP's vision tower: patch convolution, class token and positions, pre-LayerNorm,
/// transformer, post-LayerNorm of the class token.
#[derive(Debug, Clone)]
pub struct ClipVision {
    patch: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_ln: LayerNorm,
    layers: Vec<Layer>,
    post_ln: LayerNorm,
    /// The configuration.
    pub config: ClipVisionConfig,
}

impl ClipVision {
    /// Builds the tower from `vision_model.*`.
    pub fn new(vb: VarBuilder, config: ClipVisionConfig) -> candle_core::Result<ClipVision> {
        let c = &config;
        let d = c.hidden_size;
        let emb = vb.pp("embeddings");
        let patch = candle_nn::conv2d_no_bias(
            3,
            d,
            c.patch_size,
            candle_nn::Conv2dConfig {
                stride: c.patch_size,
                ..Default::default()
            },
            emb.pp("patch_embedding"),
        )?;
        let grid = c.image_size / c.patch_size;
        let class_embedding = emb.get(d, "class_embedding")?;
        let position_embedding = emb
            .pp("position_embedding")
            .get((grid * grid + 1, d), "weight")?;
        let ln = |name: &str| candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp(name));
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp("encoder").pp("layers").pp(i);
                Layer::new(l, d, c.intermediate_size, c.layer_norm_eps)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(ClipVision {
            patch,
            class_embedding,
            position_embedding,
            // transformers' spelling.
            pre_ln: ln("pre_layrnorm")?,
            layers,
            post_ln: ln("post_layernorm")?,
            config,
        })
    }

    /// The pooled output (post-LayerNorm class token) for `pixel_values` `[B, 3, S, S]`.
    pub fn forward(&self, pixel_values: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.patch.forward(pixel_values)?;
        let (b, d, _, _) = x.dims4()?;
        let x = x.flatten_from(2)?.transpose(1, 2)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?
            .contiguous()?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.position_embedding)?;
        let mut x = self.pre_ln.forward(&x)?;
        let c = &self.config;
        for layer in &self.layers {
            x = layer.forward(&x, None, c.num_attention_heads, c.activation)?;
        }
        self.post_ln.forward(&x.i((.., 0, ..))?)
    }
}

/// `CLIPImageProcessor`: resize the shortest edge (bicubic), centre-crop, rescale to [0, 1],
/// normalise per channel.
///
/// Resizing uses the `image` crate's Catmull–Rom filter on 8-bit pixels, the same cubic
/// (a = −0.5) as PIL's bicubic; the two differ by rounding at the edges of the kernel, so
/// pixel values agree with transformers' to a few 8-bit levels, exactly when no resize is
/// needed (`tests/clip.rs` measures both).
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePreprocess {
    /// Target of the shortest edge (`None`: no resize).
    pub shortest_edge: Option<usize>,
    /// `(height, width)` of the centre crop (`None`: no crop).
    pub crop: Option<(usize, usize)>,
    /// Per-channel mean (after rescaling to [0, 1]).
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

fn size_field(v: Option<&Value>, key: &str) -> Option<(usize, usize)> {
    match v? {
        Value::Number(n) => n.as_u64().map(|s| (s as usize, s as usize)),
        Value::Object(o) => match (o.get(key), o.get("height"), o.get("width")) {
            (Some(s), _, _) => s.as_u64().map(|s| (s as usize, s as usize)),
            (None, Some(h), Some(w)) => Some((h.as_u64()? as usize, w.as_u64()? as usize)),
            _ => None,
        },
        _ => None,
    }
}

impl ImagePreprocess {
    /// Reads `preprocessor_config.json` (a preprocessing recipe, not model weights: unknown
    /// fields are ignored, but a resampling filter other than bicubic is refused).
    pub fn read(text: &str, name: &str) -> Result<ImagePreprocess> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::Spec(format!("{name} is not valid JSON: {e}")))?;
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(true);
        let triple = |k: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or_else(|| {
                            Error::Spec(format!("{name}: `{k}` must be three numbers"))
                        })? as f32;
                    }
                    Ok(out)
                }
                Some(_) => Err(Error::Spec(format!("{name}: `{k}` must be three numbers"))),
            }
        };
        if let Some(r) = v.get("resample").and_then(Value::as_u64) {
            if r != 3 {
                return Err(Error::Spec(format!(
                    "{name}: resample = {r} is not supported (3, bicubic, as CLIP uses)"
                )));
            }
        }
        let rescale = v
            .get("rescale_factor")
            .and_then(Value::as_f64)
            .unwrap_or(1.0 / 255.0);
        if flag("do_rescale") && (rescale * 255.0 - 1.0).abs() > 1e-6 {
            return Err(Error::Spec(format!(
                "{name}: rescale_factor = {rescale} is not supported (1/255)"
            )));
        }
        let shortest_edge = if flag("do_resize") {
            Some(
                size_field(v.get("size"), "shortest_edge")
                    .ok_or_else(|| Error::Spec(format!("{name}: `size` is missing or malformed")))?
                    .0,
            )
        } else {
            None
        };
        let crop = if flag("do_center_crop") {
            Some(size_field(v.get("crop_size"), "height").ok_or_else(|| {
                Error::Spec(format!("{name}: `crop_size` is missing or malformed"))
            })?)
        } else {
            None
        };
        let (mean, std) = if flag("do_normalize") {
            (
                triple("image_mean", [0.481_454_66, 0.457_827_5, 0.408_210_73])?,
                triple("image_std", [0.268_629_54, 0.261_302_6, 0.275_777_1])?,
            )
        } else {
            ([0.0; 3], [1.0; 3])
        };
        Ok(ImagePreprocess {
            shortest_edge,
            crop,
            mean,
            std,
        })
    }

    /// The processed `[3, h, w]` values of one 8-bit RGB image (`rgb`: `w·h·3` bytes, HWC).
    pub fn rgb8(&self, rgb: &[u8], w: u32, h: u32) -> Result<(Vec<f32>, usize, usize)> {
        let mut img = image::RgbImage::from_raw(w, h, rgb.to_vec())
            .ok_or_else(|| Error::Spec(format!("{w}×{h} image needs {} bytes", w * h * 3)))?;
        if let Some(s) = self.shortest_edge {
            // transformers' get_resize_output_image_size(default_to_square=False).
            let (short, long) = (w.min(h) as usize, w.max(h) as usize);
            let new_long = s * long / short;
            let (nw, nh) = if w <= h { (s, new_long) } else { (new_long, s) };
            if (nw as u32, nh as u32) != (w, h) {
                img = image::imageops::resize(
                    &img,
                    nw as u32,
                    nh as u32,
                    image::imageops::FilterType::CatmullRom,
                );
            }
        }
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let (ch, cw) = self.crop.unwrap_or((ih, iw));
        if ch > ih || cw > iw {
            return Err(Error::Spec(format!(
                "a {iw}×{ih} image (after resizing) is smaller than the {cw}×{ch} crop"
            )));
        }
        let (top, left) = ((ih - ch) / 2, (iw - cw) / 2);
        let mut out = vec![0f32; 3 * ch * cw];
        for y in 0..ch {
            for x in 0..cw {
                let p = img.get_pixel((left + x) as u32, (top + y) as u32);
                for c in 0..3 {
                    let v = p[c] as f32 / 255.0;
                    out[(c * ch + y) * cw + x] = (v - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok((out, ch, cw))
    }

    /// `pixel_values` `[B, 3, h, w]` for images `[B, 3, H, W]` in `[0, 1]` (quantised to 8
    /// bits first, as the processor sees a saved image).
    pub fn pixel_values(&self, images: &Tensor) -> Result<Tensor> {
        let b = images.dim(0)?;
        let mut rows = Vec::with_capacity(b);
        let mut hw = (0, 0);
        for i in 0..b {
            let (rgb, w, h) = super::rewards::to_rgb8(&images.get(i)?)?;
            let (v, ch, cw) = self.rgb8(&rgb, w, h)?;
            hw = (ch, cw);
            rows.extend(v);
        }
        Ok(Tensor::from_vec(rows, (b, 3, hw.0, hw.1), images.device())?)
    }
}

/// transformers' `CLIPModel` with its tokenizer and image processor.
#[derive(Debug, Clone)]
pub struct ClipModel {
    name: String,
    /// The tokenizer.
    pub tokenizer: ClipTokenizer,
    /// The text tower (with `text_projection`).
    pub text: ClipTextEncoder,
    /// The vision tower.
    pub vision: ClipVision,
    visual_projection: Linear,
    /// `exp(logit_scale)`, the inverse temperature of the logits (100 for OpenAI's models).
    pub logit_scale: f64,
    /// The image preprocessing.
    pub preprocess: ImagePreprocess,
    device: Device,
}

fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(1)?.sqrt()?)
}

impl ClipModel {
    /// Loads a CLIP model named as on the command line: a folder or a Hub repo id.
    pub fn load(spec: &str, device: &Device) -> Result<ClipModel> {
        let mut m = ClipModel::from_files(&ModelFiles::new(Source::parse(spec)?), device)?;
        m.name = spec.to_string();
        Ok(m)
    }

    /// The device its weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Loads from a folder or Hub repo in the transformers layout.
    pub fn from_files(files: &ModelFiles, device: &Device) -> Result<ClipModel> {
        let mut c = ConfigReader::open(&files.get("config.json")?, "config.json")?;
        if let Some(t) = c.str_opt("model_type")? {
            if t != "clip" {
                return Err(Error::Spec(format!(
                    "{}: config.json has model_type = {t}; a CLIPModel (model_type clip) is \
                     expected",
                    files.source().describe()
                )));
            }
        }
        let projection = c.usize("projection_dim", Bounds::COUNT)?;
        let mut text_cfg = ClipTextConfig::read(c.object("text_config")?)?;
        text_cfg.projection_dim = Some(projection);
        let vision_cfg = ClipVisionConfig::read(c.object("vision_config")?)?;
        c.ignore(&["logit_scale_init_value"]);
        c.ignore(TRANSFORMERS_GENERIC);
        c.finish()?;
        let tokenizer = ClipTokenizer::load(files, "", text_cfg.max_position_embeddings)?;
        let pre_path = files.get("preprocessor_config.json")?;
        let pre_text = std::fs::read_to_string(&pre_path)
            .map_err(|e| Error::Spec(format!("cannot read `{}`: {e}", pre_path.display())))?;
        let preprocess = ImagePreprocess::read(&pre_text, "preprocessor_config.json")?;

        let weights = component_weights(files, "", "model")?;
        let vb = var_builder(&weights, DType::F32, device)?;
        let build = || -> candle_core::Result<(ClipTextEncoder, ClipVision, Linear, f64)> {
            let dv = vision_cfg.hidden_size;
            if !vb.contains_tensor("text_projection.weight") {
                candle_core::bail!("cannot find tensor text_projection.weight");
            }
            let text = ClipTextEncoder::new(vb.clone(), text_cfg.clone())?;
            let vision = ClipVision::new(vb.pp("vision_model"), vision_cfg.clone())?;
            let visual_projection =
                candle_nn::linear_no_bias(dv, projection, vb.pp("visual_projection"))?;
            let scale = vb.get((), "logit_scale")?.to_scalar::<f32>()? as f64;
            Ok((text, vision, visual_projection, scale.exp()))
        };
        let (text, vision, visual_projection, logit_scale) =
            build().map_err(|e| load_error("the CLIP model", &weights, e))?;
        Ok(ClipModel {
            name: files.source().describe(),
            tokenizer,
            text,
            vision,
            visual_projection,
            logit_scale,
            preprocess,
            device: device.clone(),
        })
    }

    /// Where it came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Width of the joint embedding.
    pub fn vision_projection_dim(&self) -> usize {
        self.visual_projection.weight().dim(0).unwrap_or(0)
    }

    /// Unit-norm text embeddings `[N, P]`.
    pub fn text_embeds(&self, texts: &[&str]) -> Result<Tensor> {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let pooled = self.text.encode_ids(&ids, &self.device)?.pooled;
        Ok(l2_normalize(&pooled)?)
    }

    /// Unit-norm image embeddings `[B, P]` of processed `pixel_values` `[B, 3, S, S]`.
    pub fn pixel_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pv = pixel_values.to_device(&self.device)?.to_dtype(DType::F32)?;
        let pooled = self.vision.forward(&pv)?;
        Ok(l2_normalize(&self.visual_projection.forward(&pooled)?)?)
    }

    /// Unit-norm image embeddings `[B, P]` of images `[B, 3, H, W]` in `[0, 1]`.
    pub fn image_embeds(&self, images: &Tensor) -> Result<Tensor> {
        self.pixel_embeds(&self.preprocess.pixel_values(images)?)
    }

    /// `logits_per_image` `[B, N]`: `exp(logit_scale) · ⟨e_img, e_txt⟩`.
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let cos = image_embeds.matmul(&text_embeds.t()?)?;
        Ok(cos.affine(self.logit_scale, 0.0)?)
    }
}
