//! Tiny random SD3 / SD3.5 checkpoints in Stability's original single-file layout, for tests
//! and smoke runs.
//!
//! Weights come from steerdiff's seeded generator (`fill`: biases ±0.01, other tensors uniform
//! in ±1/√fan-in, tensors named `*norm*` one), so a file is a function of its config, variant
//! and seed. The variant's extra tensors (SD3.5 medium's `x_block.attn2.*`, SD3.5's
//! `ln_q` / `ln_k`) are declared by [`MmditVariant::declare`] and then built by [`Mmdit::new`],
//! so the file holds exactly what the loader reads, plus the last block's context `ln_q` that
//! Stability's files (and diffusers' converter) have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::autoencoder::{AutoEncoder, Config as AeConfig};
use candle_transformers::models::mmdit::model::Config as MmditConfig;

use super::flux_tiny::{fill, tiny_ae_config};
use super::mmdit::{Mmdit, MmditVariant};
use super::sd3::{AE_SCALE, AE_SHIFT};
use crate::{Error, Result};

/// A tiny SD3 configuration (MMDiT, autoencoder) for tests and smoke runs.
pub fn tiny_config() -> (MmditConfig, AeConfig) {
    (
        MmditConfig {
            patch_size: 2,
            in_channels: 4,
            out_channels: 4,
            depth: 2,
            head_size: 16,
            adm_in_channels: 8,
            pos_embed_max_size: 16,
            context_embed_size: 12,
            frequency_embedding_size: 32,
        },
        tiny_ae_config(AE_SCALE, AE_SHIFT),
    )
}

/// Writes a random (deterministic in `seed`) SD3 checkpoint in the original single-file
/// layout (`model.diffusion_model.*` + `first_stage_model.*`) to `dir/sd3.safetensors`.
/// For tests.
pub fn write_random_checkpoint(
    dir: &Path,
    config: &MmditConfig,
    ae: &AeConfig,
    seed: u64,
) -> Result<PathBuf> {
    write_random_variant_checkpoint(dir, config, &MmditVariant::default(), ae, seed)
}

/// As [`write_random_checkpoint`], for any [`MmditVariant`] (SD3.5 medium's MMDiT-X blocks,
/// SD3.5's QK-norm): `dir/sd3.safetensors` with the autoencoder. For tests.
pub fn write_random_variant_checkpoint(
    dir: &Path,
    config: &MmditConfig,
    variant: &MmditVariant,
    ae: &AeConfig,
    seed: u64,
) -> Result<PathBuf> {
    let vm = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    declare_mmdit(&vb.pp("model").pp("diffusion_model"), config, variant)?;
    AutoEncoder::new(ae, vb.pp("first_stage_model"))?;
    fill(&vm, seed)?;
    let path = dir.join("sd3.safetensors");
    vm.save(&path)?;
    Ok(path)
}

/// Writes the MMDiT alone (`model.diffusion_model.*`, no autoencoder), random and
/// deterministic in `seed`, stored in f16 (the dtype candle's MMDiT computes in, so a
/// reference reading the file in f32 sees the very weights steerdiff uses), to `path`.
/// Small enough for fixtures (`tests/fixtures/tiny-dit/sd3.5-*.safetensors`).
pub fn write_random_transformer(
    path: &Path,
    config: &MmditConfig,
    variant: &MmditVariant,
    seed: u64,
) -> Result<()> {
    let vm = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    declare_mmdit(&vb.pp("model").pp("diffusion_model"), config, variant)?;
    fill(&vm, seed)?;
    let tensors = vm
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(DType::F16)?)))
        .collect::<Result<HashMap<String, Tensor>>>()?;
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

/// Creates every tensor of the MMDiT of `config` / `variant` under `vb` (a VarMap's); refuses
/// a variant that would not read back as itself (dual-attention blocks past the depth).
fn declare_mmdit(vb: &VarBuilder, config: &MmditConfig, variant: &MmditVariant) -> Result<()> {
    variant.declare(vb, config)?;
    let model = Mmdit::new(config, vb.clone())?;
    if &model.variant != variant {
        return Err(Error::Spec(format!(
            "MMDiT variant {variant:?} of depth {} would read back as {:?}",
            config.depth, model.variant
        )));
    }
    Ok(())
}
