//! Stable Diffusion 1.x, 2.x and SDXL from one original-layout `.safetensors` file — the
//! CompVis/Stability layout that A1111, ComfyUI, stable-diffusion.cpp and most shared models
//! use — with the configs, tokenizers and scheduler of a diffusers repo or folder (diffusers'
//! `from_single_file(path, config=…)` does the same).
//!
//! The family is read from the tensor names ([`Layout::detect`]):
//!
//! | family | UNet | text encoder(s) |
//! |---|---|---|
//! | SD 1.x | `model.diffusion_model.` | `cond_stage_model.transformer.` (Hugging Face CLIP) |
//! | SD 2.x | `model.diffusion_model.` | `cond_stage_model.model.` (OpenCLIP) |
//! | SDXL | `model.diffusion_model.` | `conditioner.embedders.0.transformer.` and `conditioner.embedders.1.model.` |
//!
//! and the VAE is under `first_stage_model.`. Weights are read through [`backend::Renamed`],
//! which maps each diffusers name to its original tensor ([`names`]). SD 2.x files do not say
//! whether they predict ε (2.x-base, 512 px) or v (768 px): that comes from the config repo's
//! scheduler, or `--prediction`.

pub mod backend;
pub mod names;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use backend::{Part, Renamed};
pub use names::{Recipe, UNetShape};

use super::read_tensors::ReadTensors;
use crate::{Error, Result};

/// The family of an original-layout Stable Diffusion file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// SD 1.x: one Hugging Face CLIP text encoder.
    Sd1,
    /// SD 2.x: one OpenCLIP text encoder.
    Sd2,
    /// SDXL base: a Hugging Face CLIP and an OpenCLIP text encoder.
    Sdxl,
}

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const SD1_TEXT: &str = "cond_stage_model.transformer.";
const SD2_TEXT: &str = "cond_stage_model.model.";
const SDXL_TEXT_1: &str = "conditioner.embedders.0.transformer.";
const SDXL_TEXT_2: &str = "conditioner.embedders.1.model.";
const REFINER_TEXT: &str = "conditioner.embedders.0.model.";

impl Layout {
    /// Whether tensor names of this shape are an original-layout Stable Diffusion UNet.
    pub fn is_ldm_unet(names: &[String]) -> bool {
        names
            .iter()
            .any(|n| n.starts_with("model.diffusion_model.input_blocks."))
    }

    /// The family of a file from its tensor names; a refiner, a UNet without text encoders or
    /// without VAE is refused, naming what is missing.
    pub fn detect(names: &[String], path: &Path) -> Result<Layout> {
        let has = |p: &str| names.iter().any(|n| n.starts_with(p));
        let file = path.display();
        if !has(UNET) {
            return Err(Error::Spec(format!(
                "`{file}` has no `{UNET}*` tensors: not an original-layout Stable Diffusion file"
            )));
        }
        let layout = if has(SDXL_TEXT_1) && has(SDXL_TEXT_2) {
            Layout::Sdxl
        } else if has(REFINER_TEXT) {
            return Err(Error::Spec(format!(
                "`{file}` is an SDXL refiner (one OpenCLIP text encoder, aesthetic-score \
                 conditioning); steerdiff runs SDXL base-style models"
            )));
        } else if has(SD1_TEXT) {
            Layout::Sd1
        } else if has(SD2_TEXT) {
            Layout::Sd2
        } else {
            return Err(Error::Spec(format!(
                "`{file}` holds a Stable Diffusion UNet but no text encoder (no \
                 `cond_stage_model.*` or `conditioner.embedders.*`); use a full checkpoint, or \
                 the model's diffusers folder"
            )));
        };
        if !has(VAE) {
            return Err(Error::Spec(format!(
                "`{file}` has no VAE (`{VAE}*`); use a checkpoint with its VAE baked in, or the \
                 model's diffusers folder"
            )));
        }
        Ok(layout)
    }

    /// A name for messages (`SD 1.x`, `SD 2.x`, `SDXL`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Sd1 => "SD 1.x",
            Layout::Sd2 => "SD 2.x",
            Layout::Sdxl => "SDXL",
        }
    }

    /// The diffusers repo whose configs, tokenizers and scheduler a file of this family uses
    /// when none is given (diffusers' `from_single_file` picks the same ones).
    pub fn default_config_repo(self) -> &'static str {
        match self {
            Layout::Sd1 => "stable-diffusion-v1-5/stable-diffusion-v1-5",
            Layout::Sd2 => "stabilityai/stable-diffusion-2-1",
            Layout::Sdxl => "stabilityai/stable-diffusion-xl-base-1.0",
        }
    }

    /// The text encoders, in diffusers' order (`text_encoder`, `text_encoder_2`).
    pub fn text_parts(self) -> Vec<Part> {
        match self {
            Layout::Sd1 => vec![Part::HfClip { prefix: SD1_TEXT }],
            Layout::Sd2 => vec![Part::OpenClip { prefix: SD2_TEXT }],
            Layout::Sdxl => vec![
                Part::HfClip {
                    prefix: SDXL_TEXT_1,
                },
                Part::OpenClip {
                    prefix: SDXL_TEXT_2,
                },
            ],
        }
    }
}

/// An original-layout Stable Diffusion file, opened (checked and indexed) once.
pub struct LdmCheckpoint {
    /// Where it is.
    pub path: PathBuf,
    /// Its family.
    pub layout: Layout,
    file: Arc<ReadTensors>,
}

impl std::fmt::Debug for LdmCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdmCheckpoint")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl LdmCheckpoint {
    /// Opens `path` (a `.safetensors` file; pickles are refused by name) and detects its family.
    pub fn open(path: &Path) -> Result<LdmCheckpoint> {
        let file = ReadTensors::open(&[path.to_path_buf()])?;
        let names: Vec<String> = file.names().map(str::to_string).collect();
        let layout = Layout::detect(&names, path)?;
        Ok(LdmCheckpoint {
            path: path.to_path_buf(),
            layout,
            file: Arc::new(file),
        })
    }

    /// The diffusers-named view of one of its networks.
    pub fn part(&self, part: Part) -> Renamed {
        Renamed::new(self.file.clone(), part)
    }
}
