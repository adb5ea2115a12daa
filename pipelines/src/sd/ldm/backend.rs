//! A candle weight backend that serves diffusers-named tensors out of an original-layout
//! single file, following [`super::names`]: the UNet, VAE and text encoders are built by the
//! same code as from a diffusers folder, and nothing is copied or converted ahead of time
//! (each tensor is read from the file when a layer asks for it).

use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;

use super::names::{self, Recipe, UNetShape};
use crate::sd::read_tensors::{expect_shape, ReadTensors};

/// One network inside a single file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The UNet under `model.diffusion_model.`.
    UNet(UNetShape),
    /// The VAE under `first_stage_model.`, with its decoder's number of up blocks.
    Vae {
        /// Number of up blocks.
        up_blocks: usize,
    },
    /// A CLIP text encoder in Hugging Face layout under `prefix` (which ends in `.`).
    HfClip {
        /// e.g. `cond_stage_model.transformer.`.
        prefix: &'static str,
    },
    /// A CLIP text encoder in OpenCLIP layout under `prefix` (which ends in `.`).
    OpenClip {
        /// e.g. `conditioner.embedders.1.model.`.
        prefix: &'static str,
    },
}

impl Part {
    /// How the diffusers tensor `name` of this network is read, or `None` when the original
    /// layout has no such tensor.
    pub fn recipe(&self, name: &str) -> Option<Recipe> {
        match self {
            Part::UNet(shape) => {
                names::unet(name, shape).map(|n| Recipe::Same(format!("model.diffusion_model.{n}")))
            }
            Part::Vae { up_blocks } => {
                names::vae(name, *up_blocks).map(|n| Recipe::Same(format!("first_stage_model.{n}")))
            }
            Part::HfClip { prefix } => Some(Recipe::Same(format!("{prefix}{name}"))),
            Part::OpenClip { prefix } => names::open_clip(name).map(|r| match r {
                Recipe::Same(n) => Recipe::Same(format!("{prefix}{n}")),
                Recipe::Transpose(n) => Recipe::Transpose(format!("{prefix}{n}")),
                Recipe::Chunk { name, index, parts } => Recipe::Chunk {
                    name: format!("{prefix}{name}"),
                    index,
                    parts,
                },
            }),
        }
    }

    /// A short name for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Part::UNet(_) => "UNet (model.diffusion_model.*)",
            Part::Vae { .. } => "VAE (first_stage_model.*)",
            Part::HfClip { prefix } | Part::OpenClip { prefix } => prefix,
        }
    }
}

/// The diffusers-named view of one [`Part`] of a single file.
pub struct Renamed {
    file: Arc<ReadTensors>,
    part: Part,
}

impl Renamed {
    /// A view of `part` in `file`.
    pub fn new(file: Arc<ReadTensors>, part: Part) -> Renamed {
        Renamed { file, part }
    }

    fn read(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(recipe) = self.part.recipe(name) else {
            candle_core::bail!(
                "the {} has no counterpart of diffusers' `{name}` in the original layout",
                self.part.describe()
            )
        };
        let stored = self.file.load(recipe.source(), dev).map_err(|_| {
            candle_core::Error::Msg(format!(
                "the single file has no tensor `{}` (diffusers' `{name}`)",
                recipe.source()
            ))
        })?;
        match recipe {
            Recipe::Same(_) => Ok(stored),
            Recipe::Transpose(_) => stored.t()?.contiguous(),
            Recipe::Chunk { index, parts, .. } => {
                let rows = stored.dim(0)?;
                if rows % parts != 0 {
                    candle_core::bail!(
                        "`{}` has {rows} rows, not {parts} equal parts",
                        recipe.source()
                    )
                }
                stored
                    .narrow(0, index * rows / parts, rows / parts)?
                    .contiguous()
            }
        }
    }
}

impl SimpleBackend for Renamed {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.read(name, dev)?;
        // A 1×1 convolution kernel `[o, i, 1, 1]` serves a linear weight `[o, i]` (the VAE's
        // mid attention); no other shape change is allowed.
        let t = if t.dims() != s.dims() && t.elem_count() == s.elem_count() && t.rank() == 4 {
            t.reshape(s.clone())?
        } else {
            t
        };
        expect_shape(name, t, s)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.part
            .recipe(name)
            .is_some_and(|r| self.file.shape(r.source()).is_some())
    }
}
