//! Hostile inputs: LoRA files (`--lora`) and original-layout single-file checkpoints, crafted
//! from the tiny fixtures.

use super::setup::*;
use super::{case, Case, Untouched};

const SD_KOHYA: &str = "tests/fixtures/tiny-lora/sd-kohya.safetensors";
const SD_SINGLE: &str = "tests/fixtures/single-file/tiny-sd.safetensors";
const SD2_SINGLE: &str = "tests/fixtures/single-file/tiny-sd2.safetensors";

/// The tiny SD pipeline with `DIR/lora.safetensors` (the kohya fixture, its bytes passed
/// through `f`) at `spec_suffix`.
fn lora_bytes(d: &std::path::Path, f: fn(Vec<u8>) -> Vec<u8>, suffix: &str) -> Vec<String> {
    let bytes = std::fs::read(manifest(SD_KOHYA)).unwrap();
    let lora = write(&d.join("lora.safetensors"), f(bytes));
    sd_gen(d, &fixture_sd(), &["--lora", &format!("{lora}{suffix}")])
}

type Tensors = std::collections::HashMap<String, candle_core::Tensor>;

/// A copy of the fixture `src` at `DIR/name` with its tensors edited by `f`.
fn edited(d: &std::path::Path, src: &str, name: &str, f: fn(&mut Tensors)) -> String {
    let dev = candle_core::Device::Cpu;
    let mut t = candle_core::safetensors::load(manifest(src), &dev).unwrap();
    f(&mut t);
    let path = d.join(name);
    candle_core::safetensors::save(&t, &path).unwrap();
    s(&path)
}

fn lora_tensors(d: &std::path::Path, f: fn(&mut Tensors)) -> Vec<String> {
    let lora = edited(d, SD_KOHYA, "lora.safetensors", f);
    sd_gen(d, &fixture_sd(), &["--lora", &lora])
}

const MODULE: &str = "lora_unet_down_blocks_0_attentions_0_proj_in";
const MODULE_NAME: &str = "down_blocks_0_attentions_0_proj_in";

/// The cases of this category.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        case(
            "lora_header_length_huge",
            2,
            &["header too large", "lora.safetensors"],
            Untouched,
            |d| {
                lora_bytes(
                    d,
                    |mut b| {
                        b[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
                        b
                    },
                    "",
                )
            },
        ),
        case(
            "lora_truncated",
            2,
            &["not fully covered||truncated", "lora.safetensors"],
            Untouched,
            |d| lora_bytes(d, |b| b[..b.len() * 2 / 3].to_vec(), ""),
        ),
        case(
            "lora_scale_not_finite",
            2,
            &["--lora", "scale"],
            Untouched,
            |d| lora_bytes(d, |b| b, ":nan"),
        ),
        case(
            "lora_down_without_up",
            2,
            &["lora_down.weight` has no", "lora_up.weight"],
            Untouched,
            |d| {
                lora_tensors(d, |t| {
                    t.remove(&format!("{MODULE}.lora_up.weight"));
                })
            },
        ),
        case(
            "lora_alpha_two_numbers",
            2,
            &[".alpha", "one finite number"],
            Untouched,
            |d| {
                lora_tensors(d, |t| {
                    let two = candle_core::Tensor::new(&[8f32, 8.0], &candle_core::Device::Cpu);
                    t.insert(format!("{MODULE}.alpha"), two.unwrap());
                })
            },
        ),
        case(
            "lora_rank_mismatch",
            2,
            &[MODULE_NAME, "rank"],
            Untouched,
            |d| {
                lora_tensors(d, |t| {
                    let up = &t[&format!("{MODULE}.lora_up.weight")];
                    let out = up.dim(0).unwrap();
                    let three = candle_core::Tensor::zeros((out, 3), up.dtype(), up.device());
                    t.insert(format!("{MODULE}.lora_up.weight"), three.unwrap());
                })
            },
        ),
        case(
            "single_file_qkv_not_in_three",
            2,
            &["in_proj_bias", "not 3 equal parts"],
            Untouched,
            |d| {
                let file = edited(d, SD2_SINGLE, "model.safetensors", |t| {
                    let k = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias";
                    let b = t[k].narrow(0, 0, 95).unwrap();
                    t.insert(k.to_string(), b);
                });
                sd_gen(d, &file, &["--text-encoders", &fixture_sd()])
            },
        ),
        case(
            "single_file_pickle_zip_renamed",
            2,
            &["pickle", "renamed .safetensors"],
            Untouched,
            |d| {
                let file = write(&d.join("model.safetensors"), b"PK\x03\x04torch-zip-archive");
                sd_gen(d, &file, &[])
            },
        ),
        case(
            "single_file_unet_only",
            2,
            &["no text encoder"],
            Untouched,
            |d| {
                let file = edited(d, SD_SINGLE, "unet.safetensors", |t| {
                    t.retain(|k, _| k.starts_with("model.diffusion_model."));
                });
                sd_gen(d, &file, &[])
            },
        ),
    ]
}
