//! The run record inside every PNG (`steerdiff info` reads it back), in two text chunks:
//!
//! - `parameters`: the A1111 web UI's text format ([`super::a1111`]) — prompt, negative
//!   prompt, steps, sampler, CFG scale, seed, size, model, model hash and a `steerdiff` field
//!   naming the strategy and reward — which sd.cpp, civitai, image viewers and PNG-info tools
//!   read;
//! - `steerdiff`: the full record as JSON — the steerdiff version, the `generate` arguments
//!   that reproduce exactly this image, the file that run writes it to, and the resolved
//!   parameters of that run. For the toy model the run is the one-image run (the flags with
//!   `--seed` set to the image's group seed and `-n 1`); for text-to-image models it is the
//!   whole run, because their batched forwards round differently at other batch sizes.
//!
//! Re-running the arguments writes a byte-identical file, chunks included. [`read`] also
//! reads PNGs of earlier steerdiff versions (JSON under `parameters`) and of other tools (an
//! A1111-format `parameters` alone).

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::a1111::{self, A1111};
use crate::error::input_error;

/// The PNG text keyword of the A1111-format summary.
pub const A1111_KEYWORD: &str = "parameters";

/// The PNG text keyword of the full JSON record.
pub const KEYWORD: &str = "steerdiff";

/// Largest image [`read`] decodes, in pixels (8192 × 8192).
pub const MAX_PIXELS: u64 = 1 << 26;

/// Most bytes the PNG decoder may allocate while reading one file.
const MAX_PNG_BYTES: usize = 256 << 20;

/// Longest text chunk [`read`] inflates (16 MiB; a record is a few kB).
const MAX_TEXT_BYTES: usize = 16 << 20;

/// What a sample PNG says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The steerdiff version that wrote it.
    pub steerdiff: String,
    /// `generate` arguments that reproduce the image (without `-o`).
    pub argv: Vec<String>,
    /// The file name the reproducing run gives the image.
    pub file: String,
    /// The particle within its group.
    pub particle: usize,
    /// The image's final reward, if one was measured.
    pub reward: Option<f64>,
    /// The particle's importance log-weight.
    pub log_weight: Option<f64>,
    /// The resolved parameters of the reproducing run (as in its `samples.json`).
    pub parameters: serde_json::Value,
}

/// Encodes an RGB8 image as PNG with `record` (JSON) and its A1111 summary (`seed` is the
/// image's own seed) in two iTXt chunks.
pub fn encode(
    rgb: &[u8],
    width: u32,
    height: u32,
    record: &ImageRecord,
    seed: u64,
) -> Result<Vec<u8>> {
    let summary = a1111::format(&a1111::from_record(&record.parameters, seed, width, height));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_itxt_chunk(A1111_KEYWORD.into(), summary)
            .context("adding the PNG text chunk")?;
        enc.add_itxt_chunk(KEYWORD.into(), serde_json::to_string(record)?)
            .context("adding the PNG text chunk")?;
        let mut w = enc.write_header().context("writing the PNG header")?;
        w.write_image_data(rgb).context("encoding the PNG")?;
        w.finish().context("finishing the PNG")?;
    }
    Ok(out)
}

/// What a PNG says about itself.
#[derive(Debug, Clone, PartialEq)]
pub enum PngInfo {
    /// Written by steerdiff: the full record, and its A1111 summary when it has one.
    Steerdiff {
        /// The record.
        record: Box<ImageRecord>,
        /// The `parameters` summary (absent from PNGs of earlier versions).
        a1111: Option<A1111>,
    },
    /// Written by another tool in the A1111 format (the web UI, sd.cpp, ComfyUI exports…).
    A1111(A1111),
}

/// Reads what a PNG says about itself (and its RGB8 pixels): a steerdiff record, or another
/// tool's A1111-format `parameters`.
pub fn read(path: &Path) -> Result<(PngInfo, Vec<u8>)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => input_error!("cannot open `{}`: {e}", path.display()),
    };
    read_from(std::io::BufReader::new(file), path)
}

/// [`read`] of a PNG in memory (the fuzzing entry point).
pub fn read_bytes(bytes: &[u8]) -> Result<(PngInfo, Vec<u8>)> {
    read_from(std::io::Cursor::new(bytes), Path::new("(memory)"))
}

/// [`read`] from `input`, named `path` in messages.
fn read_from(
    input: impl std::io::BufRead + std::io::Seek,
    path: &Path,
) -> Result<(PngInfo, Vec<u8>)> {
    let limits = png::Limits {
        bytes: MAX_PNG_BYTES,
    };
    let decoder = png::Decoder::new_with_limits(input, limits);
    let mut reader = match decoder.read_info() {
        Ok(r) => r,
        Err(e) => input_error!("`{}` is not a PNG file: {e}", path.display()),
    };
    let (w, h) = (reader.info().width as u64, reader.info().height as u64);
    if w * h > MAX_PIXELS {
        input_error!(
            "`{}` is {w}×{h}; steerdiff reads PNGs of up to {MAX_PIXELS} pixels",
            path.display()
        );
    }
    let mut pixels = vec![0; reader.output_buffer_size().unwrap_or(0)];
    if let Err(e) = reader.next_frame(&mut pixels) {
        input_error!(
            "`{}` is a damaged PNG: its image data cannot be decoded ({e})",
            path.display()
        );
    }
    let info = reader.info();
    // Compressed text is inflated up to a cap, so a small file cannot expand into gigabytes.
    let chunk = |keyword: &str| {
        info.utf8_text
            .iter()
            .find(|c| c.keyword == keyword)
            .and_then(|c| {
                let mut c = c.clone();
                c.decompress_text_with_limit(MAX_TEXT_BYTES).ok()?;
                c.get_text().ok()
            })
            .or_else(|| {
                info.uncompressed_latin1_text
                    .iter()
                    .find(|c| c.keyword == keyword)
                    .map(|c| c.text.clone())
            })
    };
    let parameters = chunk(A1111_KEYWORD);
    let summary = parameters.as_deref().and_then(a1111::parse);
    // The JSON record: under `steerdiff`, or under `parameters` in earlier versions.
    let json = chunk(KEYWORD).or_else(|| {
        parameters
            .clone()
            .filter(|t| t.trim_start().starts_with('{'))
    });
    match (json, summary) {
        (Some(text), summary) => match serde_json::from_str(&text) {
            Ok(r) => Ok((
                PngInfo::Steerdiff {
                    record: Box::new(r),
                    a1111: summary,
                },
                pixels,
            )),
            Err(e) => input_error!(
                "`{}`: its `{KEYWORD}` text is not a steerdiff record ({e})",
                path.display()
            ),
        },
        (None, Some(summary)) => Ok((PngInfo::A1111(summary), pixels)),
        (None, None) => input_error!(
            "`{}` has no generation record (no `{KEYWORD}` or A1111 `{A1111_KEYWORD}` text \
             chunk); was it written by `steerdiff generate`?",
            path.display()
        ),
    }
}
