//! diffusers / transformers `config.json` files, read strictly into candle's model configs.
//!
//! Policy, so any diffusers-format finetune loads without a preset but nothing is silently
//! misread:
//! * structural fields (channel lists, block types, layer counts) are **required**: a config
//!   missing one is refused, naming the file and the field;
//! * fields with a harmless default take diffusers' default when absent;
//! * fields steerdiff knows but does not implement are refused when set to anything but their
//!   default, with what they are (e.g. LCM's `time_cond_proj_dim`);
//! * **unknown fields** are refused unless `null`/`false` (the value of every feature's "off"),
//!   since an unknown switch may change the numbers;
//! * bookkeeping fields (`_class_name`, `_diffusers_version`, `sample_size`, transformers'
//!   generic `PretrainedConfig` fields) are accepted.

use std::collections::BTreeSet;
use std::path::Path;

use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// A JSON object being read field by field; remembers which fields were read.
#[derive(Debug)]
pub struct ConfigReader {
    /// The file (for messages).
    pub file: String,
    map: Map<String, Value>,
    seen: BTreeSet<String>,
}

impl ConfigReader {
    /// Reads and parses a JSON object file (Python's `NaN`/`Infinity` accepted).
    pub fn open(path: &Path, name: &str) -> Result<ConfigReader> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Spec(format!("cannot read {name} (`{}`): {e}", path.display())))?;
        ConfigReader::parse(&text, name)
    }

    /// Parses a JSON object.
    pub fn parse(text: &str, name: &str) -> Result<ConfigReader> {
        let v = steerdiff_guidance::schedule::diffusers::parse_python_json(text)
            .map_err(|e| Error::Spec(format!("{name}: {e}")))?;
        ConfigReader::from_value(v, name)
    }

    /// Reads an already-parsed JSON object (e.g. a nested `text_config`).
    pub fn from_value(v: Value, name: &str) -> Result<ConfigReader> {
        match v {
            Value::Object(map) => Ok(ConfigReader {
                file: name.into(),
                map,
                seen: BTreeSet::new(),
            }),
            _ => Err(Error::Spec(format!("{name} is not a JSON object"))),
        }
    }

    fn raw(&mut self, key: &str) -> Option<&Value> {
        self.seen.insert(key.into());
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, want: &str) -> Error {
        Error::Spec(format!(
            "{}: `{key}` must be {want} (got {})",
            self.file,
            self.map.get(key).map(|v| v.to_string()).unwrap_or_default()
        ))
    }

    fn missing(&self, key: &str) -> Error {
        Error::Spec(format!(
            "{}: required field `{key}` is missing (is this a complete diffusers config?)",
            self.file
        ))
    }

    /// A required non-negative integer.
    pub fn usize(&mut self, key: &str) -> Result<usize> {
        match self.raw(key).cloned() {
            None => Err(self.missing(key)),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.bad(key, "a non-negative integer")),
        }
    }

    /// An optional non-negative integer.
    pub fn usize_or(&mut self, key: &str, default: usize) -> Result<usize> {
        match self.raw(key).cloned() {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.bad(key, "a non-negative integer")),
        }
    }

    /// An optional number.
    pub fn f64_or(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.raw(key).cloned() {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.bad(key, "a number")),
        }
    }

    /// An optional number, `None` when absent or null.
    pub fn f64_opt(&mut self, key: &str) -> Result<Option<f64>> {
        match self.raw(key).cloned() {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, "a number")),
        }
    }

    /// An optional boolean.
    pub fn bool_or(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.raw(key).cloned() {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, "true or false")),
        }
    }

    /// An optional string.
    pub fn str_opt(&mut self, key: &str) -> Result<Option<String>> {
        match self.raw(key).cloned() {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }

    /// A required list of strings.
    pub fn strings(&mut self, key: &str) -> Result<Vec<String>> {
        match self.raw(key).cloned() {
            None => Err(self.missing(key)),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.bad(key, "a list of strings")),
            Some(_) => Err(self.bad(key, "a list of strings")),
        }
    }

    /// A required list of integers.
    pub fn usizes(&mut self, key: &str) -> Result<Vec<usize>> {
        match self.raw(key).cloned() {
            None => Err(self.missing(key)),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.bad(key, "a list of integers")),
            Some(_) => Err(self.bad(key, "a list of integers")),
        }
    }

    /// An integer or a list of `n` integers (diffusers' per-block fields), `None` if absent.
    pub fn per_block(&mut self, key: &str, n: usize) -> Result<Option<Vec<usize>>> {
        match self.raw(key).cloned() {
            None => Ok(None),
            Some(Value::Number(x)) => {
                let x = x
                    .as_u64()
                    .ok_or_else(|| self.bad(key, "an integer or a list of integers"))?;
                Ok(Some(vec![x as usize; n]))
            }
            Some(Value::Array(a)) => {
                let v = a
                    .iter()
                    .map(|v| v.as_u64().map(|x| x as usize))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| self.bad(key, "an integer or a list of integers"))?;
                if v.len() != n {
                    return Err(self.bad(key, &format!("one value per block ({n})")));
                }
                Ok(Some(v))
            }
            Some(_) => Err(self.bad(key, "an integer or a list of integers")),
        }
    }

    /// Refuses `key` unless it is absent or equal to `default` (or null / `false`).
    pub fn must_be(&mut self, key: &str, default: Value, what: &str) -> Result<()> {
        match self.raw(key).cloned() {
            None => Ok(()),
            Some(v)
                if v == default
                    || (v == Value::Bool(false) && default.is_null())
                    || matches!((v.as_f64(), default.as_f64()), (Some(a), Some(b)) if a == b) =>
            {
                Ok(())
            }
            Some(v) => Err(Error::Spec(format!(
                "{}: `{key}` = {v} is not supported ({what}); steerdiff supports {}",
                self.file,
                if default.is_null() {
                    "only null".to_string()
                } else {
                    default.to_string()
                }
            ))),
        }
    }

    /// A required nested object (e.g. CLIP's `vision_config`), as a reader of its own.
    pub fn object(&mut self, key: &str) -> Result<ConfigReader> {
        match self.raw(key).cloned() {
            None => Err(self.missing(key)),
            Some(v @ Value::Object(_)) => {
                ConfigReader::from_value(v, &format!("{}: {key}", self.file))
            }
            Some(_) => Err(self.bad(key, "an object")),
        }
    }

    /// Marks fields as read without using them (bookkeeping).
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.seen.insert((*k).into());
        }
    }

    /// Refuses every field not read, unless it is null, `false`, or starts with `_`.
    pub fn finish(&self) -> Result<()> {
        let unknown: Vec<String> = self
            .map
            .iter()
            .filter(|(k, v)| {
                !self.seen.contains(*k)
                    && !k.starts_with('_')
                    && !v.is_null()
                    && **v != Value::Bool(false)
            })
            .map(|(k, v)| format!("`{k}` = {v}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::Spec(format!(
                "{}: unknown field(s) {} — steerdiff does not know what they change, so it \
                 refuses rather than misread the model",
                self.file,
                unknown.join(", ")
            )))
        }
    }
}

/// SDXL's added conditioning (`addition_embed_type = "text_time"`): the pooled text embedding
/// and six size/crop ids, each embedded in `time_embed_dim` sinusoid channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedConditioning {
    /// `addition_time_embed_dim`: sinusoid channels per id.
    pub time_embed_dim: usize,
    /// `projection_class_embeddings_input_dim`: pooled width + 6 · `time_embed_dim`.
    pub input_dim: usize,
}

impl AddedConditioning {
    /// The pooled text width this conditioning expects.
    pub fn pooled_dim(&self) -> usize {
        self.input_dim - 6 * self.time_embed_dim
    }
}

/// A diffusers `UNet2DConditionModel` config, as candle needs it.
#[derive(Debug, Clone)]
pub struct UNetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// candle's config.
    pub candle: UNet2DConditionModelConfig,
    /// `sample_size` (latent side), when given.
    pub sample_size: Option<usize>,
    /// SDXL's added conditioning, when the UNet has it.
    pub added: Option<AddedConditioning>,
}

impl UNetConfig {
    /// Reads `unet/config.json`.
    pub fn read(mut c: ConfigReader) -> Result<UNetConfig> {
        if let Some(class) = c.str_opt("_class_name")? {
            if class != "UNet2DConditionModel" {
                return Err(Error::Spec(format!(
                    "{}: `_class_name` = {class}; expected UNet2DConditionModel",
                    c.file
                )));
            }
        }
        let added = match c.str_opt("addition_embed_type")?.as_deref() {
            None => None,
            Some("text_time") => {
                let time_embed_dim = c.usize("addition_time_embed_dim")?;
                let input_dim = c.usize("projection_class_embeddings_input_dim")?;
                if time_embed_dim == 0 || input_dim <= 6 * time_embed_dim {
                    return Err(Error::Spec(format!(
                        "{}: projection_class_embeddings_input_dim {input_dim} must exceed 6 × \
                         addition_time_embed_dim ({time_embed_dim}): it is the pooled text width \
                         plus six embedded size/crop ids",
                        c.file
                    )));
                }
                Some(AddedConditioning {
                    time_embed_dim,
                    input_dim,
                })
            }
            Some(kind) => {
                return Err(Error::Spec(format!(
                    "{}: addition_embed_type = \"{kind}\" is not supported (only SDXL's \
                     \"text_time\")",
                    c.file
                )))
            }
        };
        let in_channels = c.usize("in_channels")?;
        let out_channels = c.usize("out_channels")?;
        let channels = c.usizes("block_out_channels")?;
        let n = channels.len();
        if n == 0 {
            return Err(c.bad("block_out_channels", "a non-empty list"));
        }
        let down = c.strings("down_block_types")?;
        let up = c.strings("up_block_types")?;
        if down.len() != n || up.len() != n {
            return Err(Error::Spec(format!(
                "{}: down_block_types ({}) and up_block_types ({}) must have one entry per \
                 block_out_channels ({n})",
                c.file,
                down.len(),
                up.len()
            )));
        }
        let mut cross = Vec::with_capacity(n);
        for (i, d) in down.iter().enumerate() {
            let is_cross = match d.as_str() {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                other => {
                    return Err(Error::Spec(format!(
                        "{}: down block type `{other}` is not supported (CrossAttnDownBlock2D, \
                         DownBlock2D)",
                        c.file
                    )))
                }
            };
            let mirror = if is_cross {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            };
            if up[n - 1 - i] != mirror {
                return Err(Error::Spec(format!(
                    "{}: up_block_types must mirror down_block_types (up block {} is `{}`, \
                     expected `{mirror}`)",
                    c.file,
                    n - 1 - i,
                    up[n - 1 - i]
                )));
            }
            cross.push(is_cross);
        }
        let heads = match c.per_block("num_attention_heads", n)? {
            Some(h) => h,
            None => c
                .per_block("attention_head_dim", n)?
                .ok_or_else(|| c.missing("attention_head_dim"))?,
        };
        c.ignore(&["attention_head_dim"]);
        let layers = c.per_block("transformer_layers_per_block", n)?;
        let layers = layers.unwrap_or_else(|| vec![1; n]);
        c.must_be(
            "reverse_transformer_layers_per_block",
            Value::Null,
            "asymmetric transformer depth",
        )?;
        let layers_per_block = c.usize("layers_per_block")?;
        let cross_attention_dim = c.usize("cross_attention_dim")?;
        for (i, (&ch, &h)) in channels.iter().zip(&heads).enumerate() {
            if h == 0 || ch % h != 0 {
                return Err(Error::Spec(format!(
                    "{}: block {i} has {ch} channels, not divisible into {h} attention heads",
                    c.file
                )));
            }
        }
        let norm_num_groups = c.usize_or("norm_num_groups", 32)?;
        if norm_num_groups != 32 {
            // candle's plain DownBlock2D / UpBlock2D build their resnets with 32 groups
            // whatever the config says, so another count would load with wrong numbers.
            return Err(Error::Spec(format!(
                "{}: norm_num_groups = {norm_num_groups} is not supported (candle's UNet blocks \
                 use 32, as every released Stable Diffusion UNet does)",
                c.file
            )));
        }
        if let Some(&bad) = channels
            .iter()
            .find(|&&ch| ch % norm_num_groups.max(1) != 0)
        {
            return Err(Error::Spec(format!(
                "{}: {bad} channels are not divisible into norm_num_groups = {norm_num_groups}",
                c.file
            )));
        }
        let candle = UNet2DConditionModelConfig {
            center_input_sample: c.bool_or("center_input_sample", false)?,
            flip_sin_to_cos: c.bool_or("flip_sin_to_cos", true)?,
            freq_shift: c.f64_or("freq_shift", 0.0)?,
            blocks: (0..n)
                .map(|i| BlockConfig {
                    out_channels: channels[i],
                    use_cross_attn: cross[i].then_some(layers[i]),
                    attention_head_dim: heads[i],
                })
                .collect(),
            layers_per_block,
            downsample_padding: c.usize_or("downsample_padding", 1)?,
            mid_block_scale_factor: c.f64_or("mid_block_scale_factor", 1.0)?,
            norm_num_groups,
            norm_eps: c.f64_or("norm_eps", 1e-5)?,
            cross_attention_dim,
            sliced_attention_size: None,
            use_linear_projection: c.bool_or("use_linear_projection", false)?,
        };
        c.must_be("act_fn", "silu".into(), "activation")?;
        c.must_be(
            "mid_block_type",
            "UNetMidBlock2DCrossAttn".into(),
            "mid block type",
        )?;
        c.must_be(
            "time_embedding_type",
            "positional".into(),
            "timestep embedding",
        )?;
        c.must_be("conv_in_kernel", 3.into(), "input convolution size")?;
        c.must_be("conv_out_kernel", 3.into(), "output convolution size")?;
        c.must_be(
            "resnet_time_scale_shift",
            "default".into(),
            "resnet time conditioning",
        )?;
        c.must_be("resnet_out_scale_factor", 1.0.into(), "resnet output scale")?;
        c.must_be("attention_type", "default".into(), "attention type")?;
        c.must_be(
            "addition_embed_type_num_heads",
            64.into(),
            "added-conditioning heads",
        )?;
        for (key, what) in [
            ("class_embed_type", "class embeddings"),
            ("num_class_embeds", "class embeddings"),
            (
                "time_cond_proj_dim",
                "guidance-distilled timestep conditioning (LCM)",
            ),
            ("encoder_hid_dim", "encoder projection"),
            ("encoder_hid_dim_type", "encoder projection"),
            ("timestep_post_act", "timestep activation"),
            ("time_embedding_dim", "timestep embedding size"),
            ("time_embedding_act_fn", "timestep activation"),
            ("cross_attention_norm", "cross-attention normalisation"),
            (
                "mid_block_only_cross_attention",
                "cross-attention-only mid block",
            ),
            ("only_cross_attention", "cross-attention-only blocks"),
            ("dual_cross_attention", "dual cross-attention"),
            ("resnet_skip_time_act", "resnet time activation"),
            ("class_embeddings_concat", "class embeddings"),
        ] {
            c.must_be(key, Value::Null, what)?;
        }
        // `upcast_attention` only changes fp16 numerics; dropout is off at inference.
        c.ignore(&["upcast_attention", "dropout", "sample_size"]);
        let sample_size = c.map.get("sample_size").and_then(|v| v.as_u64());
        c.finish()?;
        Ok(UNetConfig {
            in_channels,
            out_channels,
            candle,
            sample_size: sample_size.map(|s| s as usize),
            added,
        })
    }
}

/// A diffusers `AutoencoderKL` config.
#[derive(Debug, Clone)]
pub struct VaeConfig {
    /// candle's config.
    pub candle: AutoEncoderKLConfig,
    /// `scaling_factor`: latents = scaling · (encoder mean − shift).
    pub scaling_factor: f64,
    /// `shift_factor` (SD3/FLUX VAEs; 0 for SD).
    pub shift_factor: f64,
    /// Pixels per latent along a side: `2^(blocks − 1)`.
    pub downscale: usize,
}

impl VaeConfig {
    /// Reads `vae/config.json`.
    pub fn read(mut c: ConfigReader) -> Result<VaeConfig> {
        if let Some(class) = c.str_opt("_class_name")? {
            if class != "AutoencoderKL" {
                return Err(Error::Spec(format!(
                    "{}: `_class_name` = {class}; expected AutoencoderKL",
                    c.file
                )));
            }
        }
        let block_out_channels = c.usizes("block_out_channels")?;
        if block_out_channels.is_empty() {
            return Err(c.bad("block_out_channels", "a non-empty list"));
        }
        let n = block_out_channels.len();
        let layers_per_block = c.usize("layers_per_block")?;
        let latent_channels = c.usize("latent_channels")?;
        for (key, want) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            let types = c.strings(key)?;
            if types.len() != n || types.iter().any(|t| t != want) {
                return Err(Error::Spec(format!(
                    "{}: `{key}` must be {n} × {want} (got {types:?})",
                    c.file
                )));
            }
        }
        c.must_be("in_channels", 3.into(), "image channels")?;
        c.must_be("out_channels", 3.into(), "image channels")?;
        c.must_be("act_fn", "silu".into(), "activation")?;
        c.must_be(
            "mid_block_add_attention",
            true.into(),
            "mid-block attention",
        )?;
        c.must_be("latents_mean", Value::Null, "per-channel latent statistics")?;
        c.must_be("latents_std", Value::Null, "per-channel latent statistics")?;
        let candle = AutoEncoderKLConfig {
            block_out_channels,
            layers_per_block,
            latent_channels,
            norm_num_groups: c.usize_or("norm_num_groups", 32)?,
            use_quant_conv: c.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: c.bool_or("use_post_quant_conv", true)?,
        };
        let scaling_factor = c.f64_or("scaling_factor", 0.18215)?;
        let shift_factor = c.f64_opt("shift_factor")?.unwrap_or(0.0);
        c.ignore(&["force_upcast", "sample_size"]);
        c.finish()?;
        Ok(VaeConfig {
            candle,
            scaling_factor,
            shift_factor,
            downscale: 1 << (n - 1),
        })
    }
}

/// The activation of a CLIP text encoder's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x·σ(1.702x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU (OpenCLIP, SD 2.x).
    Gelu,
}

impl ClipActivation {
    /// `hidden_act` of a CLIP config (default `quick_gelu`).
    pub fn read(c: &mut ConfigReader) -> Result<ClipActivation> {
        match c.str_opt("hidden_act")?.as_deref() {
            None | Some("quick_gelu") => Ok(ClipActivation::QuickGelu),
            Some("gelu") => Ok(ClipActivation::Gelu),
            Some(other) => Err(Error::Spec(format!(
                "{}: hidden_act = {other} is not supported (quick_gelu, gelu)",
                c.file
            ))),
        }
    }
}

/// A transformers `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Positions.
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub activation: ClipActivation,
    /// LayerNorm ε.
    pub layer_norm_eps: f64,
    /// Width of the pooled projection (`CLIPTextModelWithProjection`).
    pub projection_dim: Option<usize>,
    /// The end-of-text id; `None` = legacy pooling at the largest id.
    pub eos_token_id: Option<u32>,
}

/// transformers' generic `PretrainedConfig` fields that do not affect a text encoder.
pub(crate) const TRANSFORMERS_GENERIC: &[&str] = &[
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "initializer_range",
    "initializer_factor",
    "attention_dropout",
    "dropout",
    "bos_token_id",
    "pad_token_id",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "use_bfloat16",
    "tie_word_embeddings",
    "is_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "tie_encoder_decoder",
    "chunk_size_feed_forward",
    "prefix",
    "problem_type",
    "finetuning_task",
    "tokenizer_class",
    "id2label",
    "label2id",
    "task_specific_params",
    "pruned_heads",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "sep_token_id",
    "decoder_start_token_id",
    "cross_attention_hidden_size",
    "gradient_checkpointing",
];

impl ClipTextConfig {
    /// Reads `text_encoder/config.json`.
    pub fn read(mut c: ConfigReader) -> Result<ClipTextConfig> {
        if let Some(t) = c.str_opt("model_type")? {
            if t != "clip_text_model" && t != "clip" {
                return Err(Error::Spec(format!(
                    "{}: model_type = {t}; a CLIP text encoder (clip_text_model) is expected",
                    c.file
                )));
            }
        }
        let activation = ClipActivation::read(&mut c)?;
        let cfg = ClipTextConfig {
            vocab_size: c.usize("vocab_size")?,
            hidden_size: c.usize("hidden_size")?,
            intermediate_size: c.usize("intermediate_size")?,
            num_hidden_layers: c.usize("num_hidden_layers")?,
            num_attention_heads: c.usize("num_attention_heads")?,
            max_position_embeddings: c.usize("max_position_embeddings")?,
            activation,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-5)?,
            projection_dim: c
                .usize_or("projection_dim", 0)
                .map(|p| (p > 0).then_some(p))?,
            eos_token_id: {
                // transformers: an eos_token_id of 2 is the legacy default → pool at argmax.
                let e = c.usize_or("eos_token_id", 2)?;
                (e != 2).then_some(e as u32)
            },
        };
        if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(Error::Spec(format!(
                "{}: hidden_size {} is not divisible into {} heads",
                c.file, cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        c.ignore(TRANSFORMERS_GENERIC);
        c.finish()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNET: &str = r#"{"_class_name": "UNet2DConditionModel", "in_channels": 4,
        "out_channels": 4, "block_out_channels": [32, 64], "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 8,
        "cross_attention_dim": 32, "class_embed_type": null, "only_cross_attention": false}"#;

    #[test]
    fn unet_config_reads_and_refuses() {
        let cfg = UNetConfig::read(ConfigReader::parse(UNET, "unet/config.json").unwrap()).unwrap();
        assert_eq!(cfg.candle.blocks.len(), 2);
        assert_eq!(cfg.candle.blocks[0].use_cross_attn, Some(1));
        assert_eq!(cfg.candle.blocks[1].use_cross_attn, None);
        let unknown = UNET.replace(
            "\"in_channels\": 4",
            "\"in_channels\": 4, \"warp_drive\": 3",
        );
        let e = UNetConfig::read(ConfigReader::parse(&unknown, "unet/config.json").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("warp_drive") && e.contains("unet/config.json"),
            "{e}"
        );
        let missing = UNET.replace("\"block_out_channels\": [32, 64],", "");
        let e = UNetConfig::read(ConfigReader::parse(&missing, "unet/config.json").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("block_out_channels") && e.contains("missing"),
            "{e}"
        );
        let lcm = UNET.replace("\"class_embed_type\": null", "\"time_cond_proj_dim\": 256");
        let e = UNetConfig::read(ConfigReader::parse(&lcm, "unet/config.json").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("time_cond_proj_dim"), "{e}");
    }
}
