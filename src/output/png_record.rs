//! The run record inside every PNG (`steerdiff info` reads it back).
//!
//! Each sample PNG carries an iTXt chunk `parameters` (the keyword A1111 and sd.cpp use) whose
//! text is JSON: the steerdiff version, the `generate` arguments that reproduce exactly this
//! image, the file that run writes it to, and the resolved parameters of that run. For the
//! toy model the run is the one-image run (the flags with `--seed` set to the image's group
//! seed and `-n 1`); for text-to-image models it is the whole run, because their
//! batched forwards round differently at other batch sizes. Re-running the arguments writes a
//! byte-identical file, chunk included.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::error::input_error;

/// The PNG text keyword of the record.
pub const KEYWORD: &str = "parameters";

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

/// Encodes an RGB8 image as PNG with `record` in an iTXt chunk.
pub fn encode(rgb: &[u8], width: u32, height: u32, record: &ImageRecord) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_itxt_chunk(KEYWORD.into(), serde_json::to_string(record)?)
            .context("adding the PNG text chunk")?;
        let mut w = enc.write_header().context("writing the PNG header")?;
        w.write_image_data(rgb).context("encoding the PNG")?;
        w.finish().context("finishing the PNG")?;
    }
    Ok(out)
}

/// Reads the record (and the RGB8 pixels) of a PNG steerdiff wrote.
pub fn read(path: &Path) -> Result<(ImageRecord, Vec<u8>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut reader = match png::Decoder::new(std::io::BufReader::new(file)).read_info() {
        Ok(r) => r,
        Err(e) => input_error!("`{}` is not a PNG file: {e}", path.display()),
    };
    let mut pixels = vec![0; reader.output_buffer_size().unwrap_or(0)];
    reader
        .next_frame(&mut pixels)
        .with_context(|| format!("decoding `{}`", path.display()))?;
    let info = reader.info();
    let text = info
        .utf8_text
        .iter()
        .find(|c| c.keyword == KEYWORD)
        .and_then(|c| c.get_text().ok())
        .or_else(|| {
            info.uncompressed_latin1_text
                .iter()
                .find(|c| c.keyword == KEYWORD)
                .map(|c| c.text.clone())
        });
    let Some(text) = text else {
        input_error!(
            "`{}` has no steerdiff record (no `{KEYWORD}` text chunk); was it written by \
             `steerdiff generate`?",
            path.display()
        );
    };
    match serde_json::from_str(&text) {
        Ok(r) => Ok((r, pixels)),
        Err(e) => input_error!(
            "`{}`: its `{KEYWORD}` text is not a steerdiff record ({e})",
            path.display()
        ),
    }
}
