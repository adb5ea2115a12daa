//! Pretrained text-to-image pipelines through candle-transformers, loaded from diffusers-format
//! folders or the Hugging Face Hub (Stable Diffusion 1.x/2.x/XL), and SD3 / FLUX transformers
//! from their original single files.
//!
//! * [`hub`] — presets, sources (folder, Hub repo, single file), the hub cache and
//!   `HF_HUB_OFFLINE`, bounded network waits;
//! * [`weights`] — safetensors only, checked (truncation, dtypes, pickles refused);
//! * [`read_tensors`] — safetensors read tensor by tensor (no map held while a model is built);
//! * [`ldm`] — original-layout single files of SD 1.x/2.x/SDXL, read under diffusers names;
//! * [`lora`] — LoRA files (kohya and diffusers/peft layouts) merged into the weights at load;
//! * [`component_weights`] — a component's weights: its diffusers folder or its part of a
//!   single file;
//! * [`config`] — diffusers/transformers `config.json` read strictly into candle configs;
//! * [`config_reader`] — [`config_reader::ConfigReader`], a config read field by field;
//! * [`config_fields`] — its checked numeric fields, each within [`config_fields::Bounds`];
//! * [`clip`] — the CLIP tokenizer and text encoder;
//! * [`clip_model`] — CLIP's image–text model (vision tower, projections, preprocessing);
//! * [`clip_rewards`] — CLIP score, a LAION-style aesthetic MLP, zero-shot classification;
//! * [`unet`] — diffusers' conditional UNet, with SDXL's added conditioning, from blocks of
//!   ours over the CPU kernels of [`crate::kernels`];
//! * [`vae`] — the KL autoencoder, its decoder in [`vae_decoder`] (same blocks and kernels);
//! * [`preview`] — linear latent → RGB previews per family (SD, SDXL, SD3, FLUX);
//! * [`rewards`] — rewards on decoded (or previewed) images: JPEG compressibility;
//! * [`t5`] — the T5 tokenizer and encoder of SD3 and FLUX;
//! * [`dit_text`] — SD3's and FLUX's text conditioning, as diffusers builds it;
//! * [`flux`] — FLUX.1 transformer + autoencoder from the original single files;
//! * [`flux_transformer`] — FLUX's transformer with float or quantized weights;
//! * [`flux_gguf`] — FLUX transformers from GGUF (city96's layout), kept quantized;
//! * [`flux_tiny`] — tiny random FLUX checkpoints for tests and smoke runs;
//! * [`flux_load`] — which reader a FLUX transformer file takes (GGUF or safetensors + LoRA);
//! * [`gguf`], [`gguf_header`] — GGUF files checked before candle reads them;
//! * [`quantize`] — a FLUX transformer's safetensors quantized into GGUF;
//! * [`tensor_shapes`] — tensor names and shapes over safetensors and GGUF, for configs read
//!   off the shapes;
//! * [`ae_encoder`] — the SD3 / FLUX autoencoder's encoder (posterior mean), for img2img;
//! * [`mmdit`] — SD3 / SD3.5's MMDiT (MMDiT-X, QK-norm) from candle's parts, with a last
//!   block of ours that applies SD3.5's QK-norm to the context keys;
//! * [`sd3`] — SD3 / SD3.5 MMDiT + autoencoder from the original single file (tiny random
//!   checkpoints from [`sd3_tiny`]);
//! * [`text_to_image`] — [`text_to_image::TextToImage`], one interface over SD, SD3 and FLUX
//!   with their text encoders;
//! * [`pipeline`] — [`StableDiffusion`], a [`steerdiff_guidance::Denoiser`] over encoded
//!   prompts, with decode, scheduler selection and img2img helpers.
//!
//! Proven equal to diffusers on the tiny fixtures `tests/fixtures/tiny-sd` and
//! `tests/fixtures/tiny-sdxl` (see `tests/tiny_sd.rs`).

pub mod ae_encoder;
pub mod attention_memory;
pub mod clip;
pub mod clip_model;
pub mod clip_rewards;
pub mod component_weights;
pub mod config;
pub mod config_fields;
pub mod config_reader;
pub mod dit_text;
pub mod flux;
pub mod flux_gguf;
pub mod flux_load;
pub mod flux_tiny;
pub mod flux_transformer;
pub mod gguf;
pub mod gguf_header;
pub mod hub;
pub mod ldm;
pub mod lora;
pub mod mmdit;
pub mod pipeline;
pub mod preview;
pub mod quantize;
pub mod read_tensors;
pub mod rewards;
pub mod sd3;
pub mod sd3_tiny;
pub mod t5;
pub mod tensor_shapes;
pub mod text_to_image;
pub mod unet;
mod unet_blocks;
pub mod vae;
pub mod vae_decoder;
pub mod weights;

pub use hub::{preset, Family, HubSettings, ModelFiles, Preset, SingleFile, Source, PRESETS};
pub use pipeline::{Encoded, LoadOptions, StableDiffusion, TextBranch, SCHEDULER_NAMES};
pub use weights::WeightDType;

/// Row indices into a table of text embeddings laid out as `[negative, prompt 0, prompt 1, …]`
/// (`rows` in all): `Null` → 0 (the negative or empty prompt), `Prompt(i)` → `i + 1`.
/// Text-to-image families have no classes; a class condition is refused.
pub fn embedding_rows(
    conds: &[steerdiff_guidance::Condition],
    rows: usize,
    family: &str,
    device: &candle_core::Device,
) -> steerdiff_guidance::Result<candle_core::Tensor> {
    use steerdiff_guidance::{Condition, Error};
    let n = rows as u32;
    let idx = conds
        .iter()
        .map(|c| match c {
            Condition::Null => Ok(0u32),
            Condition::Prompt(i) if i + 1 < n => Ok(i + 1),
            Condition::Prompt(i) => Err(Error::InvalidArgument(format!(
                "prompt {i} requested but {} prompt(s) were set",
                n.saturating_sub(1)
            ))),
            Condition::Class(k) => Err(Error::Unsupported(format!(
                "{family} is text-conditioned; class {k} has no meaning (use prompts)"
            ))),
        })
        .collect::<steerdiff_guidance::Result<Vec<u32>>>()?;
    Ok(candle_core::Tensor::from_vec(idx, conds.len(), device)?)
}
