//! Flags of the per-step strategies ([`PerStepArgs`]): the ones several share — the
//! zero-shot classifier's prompts, the observed image and its mask — and each one's own,
//! gathered through [`super::PerStepFlags`].

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::run::observation;

/// Flags of the per-step strategies.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
#[command(next_help_heading = crate::run::help::STRATEGIES)]
pub struct PerStepArgs {
    /// Text-to-image GFCG / dynamic CFG: the competing prompts of the zero-shot CLIP
    /// classifier (`;`-separated, e.g. "a dog;a fox"); the prompt itself is class 0.
    #[arg(long, value_name = "TEXT;TEXT…", value_delimiter = ';', help_heading = super::TEXT_TO_IMAGE)]
    pub zero_shot: Vec<String>,
    /// FlowChef / replacement: the observed image (PNG; 32×32 RGB for the toy model).
    #[arg(long, value_name = "PNG")]
    pub image: Option<PathBuf>,
    /// Inpainting: the known pixels, a PNG of the image's size (white = known, black = fill).
    #[arg(long, value_name = "PNG")]
    pub mask: Option<PathBuf>,
    /// Inpainting: fill the rectangle X0,Y0,X1,Y1 (pixels, end exclusive; everything else is
    /// known), instead of --mask; e.g. 8,8,24,24 is the centre box of a 32×32 image.
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = observation::parse_box)]
    pub fill_box: Option<[usize; 4]>,
    /// Each per-step strategy's own flags.
    #[command(flatten)]
    #[serde(flatten)]
    pub flags: super::PerStepFlags,
}

crate::run::clap_defaults::defaults_from_clap!(PerStepArgs);
