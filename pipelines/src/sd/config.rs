//! diffusers / transformers `config.json` files, read strictly into candle's model configs.
//!
//! Policy, so any diffusers-format finetune loads without a preset but nothing is silently
//! misread:
//! * structural fields (channel lists, block types, layer counts) are **required**: a config
//!   missing one is refused, naming the file and the field;
//! * every numeric field is read checked (see [`Bounds`]): a field present with the wrong type
//!   or out of range (a zero channel count, a negative size, a non-finite or zero scale) is
//!   refused, naming the file and the field — never replaced by a default;
//! * fields with a harmless default take diffusers' default when absent;
//! * fields steerdiff knows but does not implement are refused when set to anything but their
//!   default, with what they are (e.g. LCM's `time_cond_proj_dim`);
//! * **unknown fields** are refused unless `null`/`false` (the value of every feature's "off"),
//!   since an unknown switch may change the numbers;
//! * bookkeeping fields (`_class_name`, `_diffusers_version`, the VAE's `sample_size`,
//!   transformers' generic `PretrainedConfig` fields) are accepted.

use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use serde_json::Value;

pub use super::config_fields::Bounds;
pub use super::config_reader::ConfigReader;
use crate::{Error, Result};

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
    /// `sample_size` in latent pixels, `(height, width)`, when given (an integer is a square).
    pub sample_size: Option<(usize, usize)>,
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
                let time_embed_dim = c.usize("addition_time_embed_dim", Bounds::COUNT)?;
                let input_dim = c.usize("projection_class_embeddings_input_dim", Bounds::COUNT)?;
                if input_dim <= time_embed_dim.saturating_mul(6) {
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
        let in_channels = c.usize("in_channels", Bounds::COUNT)?;
        let out_channels = c.usize("out_channels", Bounds::COUNT)?;
        let channels = c.usizes("block_out_channels", Bounds::COUNT)?;
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
        // (0 heads is refused below, with the block it leaves undivided.)
        let (heads_key, heads) = match c.one_or_list("num_attention_heads", n, Bounds::INDEX)? {
            Some(h) => ("num_attention_heads", h),
            None => (
                "attention_head_dim",
                c.one_or_list("attention_head_dim", n, Bounds::INDEX)?
                    .ok_or_else(|| c.missing("attention_head_dim"))?,
            ),
        };
        c.ignore(&["attention_head_dim"]);
        let layers = c.one_or_list("transformer_layers_per_block", n, Bounds::COUNT)?;
        let layers = layers.unwrap_or_else(|| vec![1; n]);
        c.must_be(
            "reverse_transformer_layers_per_block",
            Value::Null,
            "asymmetric transformer depth",
        )?;
        let layers_per_block = c.usize("layers_per_block", Bounds::COUNT)?;
        let cross_attention_dim = c.usize("cross_attention_dim", Bounds::COUNT)?;
        for (i, (&ch, &h)) in channels.iter().zip(&heads).enumerate() {
            if h == 0 || ch % h != 0 {
                return Err(Error::Spec(format!(
                    "{}: `{heads_key}`: block {i} has {ch} channels, not divisible into {h} \
                     attention heads",
                    c.file
                )));
            }
        }
        // (any count but 32 is refused below, naming it)
        let norm_num_groups = c.usize_or("norm_num_groups", 32, Bounds::INDEX)?;
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
            freq_shift: c.f64_or("freq_shift", 0.0, Bounds::FINITE)?,
            blocks: (0..n)
                .map(|i| BlockConfig {
                    out_channels: channels[i],
                    use_cross_attn: cross[i].then_some(layers[i]),
                    attention_head_dim: heads[i],
                })
                .collect(),
            layers_per_block,
            // (padding beyond the 3×3 kernel's 2 only pads the latents with zeros)
            downsample_padding: c.usize_or("downsample_padding", 1, Bounds::INDEX.at_most(2.0))?,
            mid_block_scale_factor: c.f64_or("mid_block_scale_factor", 1.0, Bounds::FINITE)?,
            norm_num_groups,
            norm_eps: c.f64_or("norm_eps", 1e-5, Bounds::POSITIVE)?,
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
        c.ignore(&["upcast_attention", "dropout"]);
        // A side, or diffusers' `(height, width)`.
        let sample_size = c.one_or_list("sample_size", 2, Bounds::COUNT)?;
        c.finish()?;
        Ok(UNetConfig {
            in_channels,
            out_channels,
            candle,
            sample_size: sample_size.map(|s| (s[0], s[1])),
            added,
        })
    }
}

/// Most blocks of a VAE (each but the last halves the image side; released VAEs have 4).
pub const MAX_VAE_BLOCKS: usize = 16;

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
        let block_out_channels = c.usizes("block_out_channels", Bounds::COUNT)?;
        if block_out_channels.is_empty() {
            return Err(c.bad("block_out_channels", "a non-empty list"));
        }
        let n = block_out_channels.len();
        if n > MAX_VAE_BLOCKS {
            // each block but the last halves the side: 2^(n − 1) pixels per latent
            return Err(c.bad(
                "block_out_channels",
                &format!("a list of at most {MAX_VAE_BLOCKS} blocks"),
            ));
        }
        let layers_per_block = c.usize("layers_per_block", Bounds::COUNT)?;
        let latent_channels = c.usize("latent_channels", Bounds::COUNT)?;
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
            norm_num_groups: c.usize_or("norm_num_groups", 32, Bounds::COUNT)?,
            use_quant_conv: c.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: c.bool_or("use_post_quant_conv", true)?,
        };
        let groups = candle.norm_num_groups;
        if let Some(&bad) = candle
            .block_out_channels
            .iter()
            .find(|&&ch| ch % groups != 0)
        {
            return Err(Error::Spec(format!(
                "{}: {bad} channels are not divisible into norm_num_groups = {groups}",
                c.file
            )));
        }
        // decoding divides by the scaling factor
        let scaling_factor = c.f64_or("scaling_factor", 0.18215, Bounds::POSITIVE)?;
        let shift_factor = c.f64_or("shift_factor", 0.0, Bounds::FINITE)?;
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
            vocab_size: c.usize("vocab_size", Bounds::COUNT)?,
            hidden_size: c.usize("hidden_size", Bounds::COUNT)?,
            intermediate_size: c.usize("intermediate_size", Bounds::COUNT)?,
            num_hidden_layers: c.usize("num_hidden_layers", Bounds::COUNT)?,
            num_attention_heads: c.usize("num_attention_heads", Bounds::COUNT)?,
            max_position_embeddings: c.usize("max_position_embeddings", Bounds::COUNT)?,
            activation,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-5, Bounds::POSITIVE)?,
            projection_dim: c
                .usize_or("projection_dim", 0, Bounds::INDEX)
                .map(|p| (p > 0).then_some(p))?,
            eos_token_id: {
                // transformers: an eos_token_id of 2 is the legacy default → pool at argmax.
                let e = c.usize_or("eos_token_id", 2, Bounds::INDEX.at_most(u32::MAX as f64))?;
                (e != 2).then_some(e as u32)
            },
        };
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
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
