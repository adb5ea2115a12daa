//! Where one component of a Stable Diffusion pipeline (a text encoder, the UNet, the VAE)
//! reads its weights: the safetensors files of its diffusers folder, or its part of an
//! original-layout single file. Both give a [`VarBuilder`] over diffusers names, so the
//! networks are built by the same code either way.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::ldm::{LdmCheckpoint, Part};
use super::lora::LoraHook;
use super::read_tensors::ReadTensors;
use super::weights::load_error;
use crate::Result;

/// The weights of one pipeline component.
#[derive(Debug, Clone)]
pub enum ComponentWeights {
    /// diffusers-named safetensors files (a component folder, possibly sharded).
    Files(Vec<PathBuf>),
    /// One network of an original-layout single file.
    Ldm(Arc<LdmCheckpoint>, Part),
}

impl ComponentWeights {
    /// The files read (for messages and weight hashes).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            ComponentWeights::Files(f) => f.clone(),
            ComponentWeights::Ldm(c, _) => vec![c.path.clone()],
        }
    }

    /// A fresh backend over the weights, diffusers-named.
    pub fn backend(&self) -> Result<Box<dyn SimpleBackend>> {
        Ok(match self {
            ComponentWeights::Files(f) => Box::new(ReadTensors::open(f)?),
            ComponentWeights::Ldm(c, part) => Box::new(c.part(part.clone())),
        })
    }

    /// A [`VarBuilder`] converting to `dtype` on `device`, with `lora`'s modules merged.
    pub fn var_builder(
        &self,
        dtype: DType,
        device: &Device,
        lora: Option<&LoraHook>,
    ) -> Result<VarBuilder<'static>> {
        let backend = self.backend()?;
        let backend = match lora {
            Some(hook) => hook.wrap(backend),
            None => backend,
        };
        Ok(VarBuilder::from_backend(backend, dtype, device.clone()))
    }

    /// Builds `what` with `build` from these weights (and `lora`'s modules), turning a candle
    /// error into a load error that names the files (and, for a single file, which network of
    /// it).
    pub fn build<T>(
        &self,
        what: &str,
        dtype: DType,
        device: &Device,
        lora: Option<&LoraHook>,
        build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
    ) -> Result<T> {
        let what = match self {
            ComponentWeights::Files(_) => what.to_string(),
            ComponentWeights::Ldm(c, part) => {
                format!(
                    "{what} ({} of an {} file)",
                    part.describe(),
                    c.layout.name()
                )
            }
        };
        build(self.var_builder(dtype, device, lora)?)
            .map_err(|e| load_error(&what, &self.files(), e))
    }
}
