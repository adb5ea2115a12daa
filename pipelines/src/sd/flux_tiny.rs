//! Tiny random FLUX checkpoints in Black Forest Labs' original single-file layout, for tests
//! and smoke runs and the seeded filler the tiny SD3
//! writer shares.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::autoencoder::{AutoEncoder, Config as AeConfig};
use candle_transformers::models::flux::model::{Config as FluxConfig, Flux as FluxModel};

use super::flux::{AE_SCALE, AE_SHIFT};
use crate::Result;

/// A tiny FLUX configuration (transformer, autoencoder) for tests and smoke runs: width 32,
/// 2 heads, one double and one single block, 4 latent channels, a 2-level autoencoder.
pub fn tiny_config(guidance_embed: bool) -> (FluxConfig, AeConfig) {
    (
        FluxConfig {
            in_channels: 16,
            vec_in_dim: 8,
            context_in_dim: 12,
            hidden_size: 32,
            mlp_ratio: 2.0,
            num_heads: 2,
            depth: 1,
            depth_single_blocks: 1,
            axes_dim: vec![4, 6, 6],
            theta: 10_000,
            qkv_bias: true,
            guidance_embed,
        },
        tiny_ae_config(AE_SCALE, AE_SHIFT),
    )
}

/// The tiny autoencoder of the FLUX and SD3 test checkpoints (32 channels, 2 levels, one
/// block each, 4 latent channels) with a family's latent scale and shift.
pub fn tiny_ae_config(scale_factor: f64, shift_factor: f64) -> AeConfig {
    AeConfig {
        resolution: 32,
        in_channels: 3,
        ch: 32,
        out_ch: 3,
        ch_mult: vec![1, 1],
        num_res_blocks: 1,
        z_channels: 4,
        scale_factor,
        shift_factor,
    }
}

/// Fills every tensor of `vm` deterministically from `seed`: norm weights/scales 1, other
/// weights uniform in ±1/√fan-in, biases ±0.01.
pub(crate) fn fill(vm: &candle_nn::VarMap, seed: u64) -> Result<()> {
    let data = vm.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    for name in names {
        let var = &data[name];
        let shape = var.dims().to_vec();
        let numel: usize = shape.iter().product();
        let fan_in = (numel / shape.first().copied().unwrap_or(1).max(1)).max(1);
        let is_norm = name.contains("norm");
        let values: Vec<f32> = (0..numel)
            .map(|_| {
                let u = next();
                if is_norm && (name.ends_with("weight") || name.ends_with("scale")) {
                    1.0
                } else if name.ends_with("bias") {
                    (0.01 * u) as f32
                } else {
                    (u / (fan_in as f64).sqrt()) as f32
                }
            })
            .collect();
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

/// Writes random (deterministic in `seed`) FLUX checkpoints in the original single-file
/// layout: `dir/flux.safetensors` (top-level names) and `dir/ae.safetensors`. For tests.
pub fn write_random_checkpoints(
    dir: &Path,
    config: &FluxConfig,
    ae: &AeConfig,
    seed: u64,
) -> Result<(PathBuf, PathBuf)> {
    let dev = Device::Cpu;
    let vm = candle_nn::VarMap::new();
    FluxModel::new(config, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    fill(&vm, seed)?;
    let model = dir.join("flux.safetensors");
    vm.save(&model)?;
    let vm = candle_nn::VarMap::new();
    AutoEncoder::new(ae, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    fill(&vm, seed.wrapping_add(1))?;
    let ae_path = dir.join("ae.safetensors");
    vm.save(&ae_path)?;
    Ok((model, ae_path))
}
