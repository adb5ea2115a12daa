//! The encoder half of the SD3 / FLUX autoencoder, for img2img: the posterior **mean** of
//! `q(z | x)`, scaled as the transformer sees latents,
//!
//! ```text
//! latents = scale · (mean(E(2x − 1)) − shift)        (x in [0, 1])
//! ```
//!
//! candle's `AutoEncoder::encode` draws a sample from the posterior with its own unseeded RNG;
//! the mean is deterministic (diffusers' img2img pipelines take `latent_dist.sample(generator)`,
//! whose mean this is).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::autoencoder::{Config as AeConfig, Encoder};

use super::weights::{candle_message, open_checked};
use crate::{Error, Result};

/// The autoencoder's encoder and its latent scaling.
#[derive(Debug)]
pub struct AeEncoder {
    encoder: Encoder,
    z_channels: usize,
    scale: f64,
    shift: f64,
    dtype: DType,
    device: Device,
}

impl AeEncoder {
    /// Loads `{prefix}encoder.*` from `file`.
    pub fn load(
        file: &Path,
        prefix: &str,
        config: &AeConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<AeEncoder> {
        let st = open_checked(&[file.to_path_buf()])?;
        let vb = VarBuilder::from_backend(Box::new(st), dtype, device.clone());
        let vb = if prefix.is_empty() { vb } else { vb.pp(prefix) };
        let encoder = Encoder::new(config, vb.pp("encoder")).map_err(|e| {
            Error::Spec(format!(
                "loading the autoencoder's encoder from `{}`: {}",
                file.display(),
                candle_message(&e)
            ))
        })?;
        Ok(AeEncoder {
            encoder,
            z_channels: config.z_channels,
            scale: config.scale_factor,
            shift: config.shift_factor,
            dtype,
            device: device.clone(),
        })
    }

    /// Latents `[B, z, h, w]` (f32) of images `[B, 3, H, W]` in `[0, 1]`.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let x = images
            .to_device(&self.device)?
            .to_dtype(self.dtype)?
            .affine(2.0, -1.0)?;
        let moments = self.encoder.forward(&x)?;
        let mean = moments.narrow(1, 0, self.z_channels)?;
        Ok(mean
            .to_dtype(DType::F32)?
            .affine(self.scale, -self.shift * self.scale)?)
    }
}

/// An [`AeEncoder`] read from its checkpoint on first use (img2img is rare; the encoder's
/// weights stay unloaded otherwise).
#[derive(Debug)]
pub struct LazyAeEncoder {
    file: std::path::PathBuf,
    prefix: &'static str,
    config: AeConfig,
    dtype: DType,
    device: Device,
    cell: std::sync::OnceLock<AeEncoder>,
}

impl LazyAeEncoder {
    /// The encoder at `{prefix}encoder.*` of `file`, loaded when first asked.
    pub fn new(
        file: &Path,
        prefix: &'static str,
        config: &AeConfig,
        dtype: DType,
        device: &Device,
    ) -> LazyAeEncoder {
        LazyAeEncoder {
            file: file.to_path_buf(),
            prefix,
            config: config.clone(),
            dtype,
            device: device.clone(),
            cell: std::sync::OnceLock::new(),
        }
    }

    /// [`AeEncoder::encode`], loading the encoder first if needed.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        if self.cell.get().is_none() {
            let e = AeEncoder::load(
                &self.file,
                self.prefix,
                &self.config,
                self.dtype,
                &self.device,
            )?;
            // A concurrent first call may have set it meanwhile; either copy is the same.
            let _ = self.cell.set(e);
        }
        match self.cell.get() {
            Some(e) => e.encode(images),
            None => Err(Error::Spec("the autoencoder's encoder did not load".into())),
        }
    }
}
