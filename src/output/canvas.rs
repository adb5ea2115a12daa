//! Drawing: an RGB canvas with a 3×5 bitmap font, and labelled grids of images
//! (`grid.png`, `top.png`, the demos' pictures). Hand-written: a few dozen lines of pixel
//! pushing need no font-rendering dependency.

use anyhow::{Context as _, Result};
use image::RgbImage;
use steerdiff_pipelines::toy::data;

/// A 3×5 bitmap font: each glyph is five rows of three bits (most significant = left).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
        'C' => [0b011, 0b100, 0b100, 0b100, 0b011],
        'D' => [0b110, 0b101, 0b101, 0b101, 0b110],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
        'G' => [0b011, 0b100, 0b101, 0b101, 0b011],
        'H' => [0b101, 0b101, 0b111, 0b101, 0b101],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'J' => [0b001, 0b001, 0b001, 0b101, 0b010],
        'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'M' => [0b101, 0b111, 0b111, 0b101, 0b101],
        'N' => [0b110, 0b101, 0b101, 0b101, 0b101],
        'O' => [0b010, 0b101, 0b101, 0b101, 0b010],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'Q' => [0b010, 0b101, 0b101, 0b110, 0b011],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        'U' => [0b101, 0b101, 0b101, 0b101, 0b111],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        'W' => [0b101, 0b101, 0b111, 0b111, 0b101],
        'X' => [0b101, 0b101, 0b010, 0b101, 0b101],
        'Y' => [0b101, 0b101, 0b010, 0b010, 0b010],
        'Z' => [0b111, 0b001, 0b010, 0b100, 0b111],
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b110, 0b001, 0b010, 0b100, 0b111],
        '3' => [0b110, 0b001, 0b010, 0b001, 0b110],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b110, 0b001, 0b110],
        '6' => [0b011, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b110],
        '-' => [0, 0, 0b111, 0, 0],
        '.' => [0, 0, 0, 0, 0b010],
        '=' => [0, 0b111, 0, 0b111, 0],
        '#' => [0b101, 0b111, 0b101, 0b111, 0b101],
        _ => [0; 5],
    }
}

/// An RGB canvas for grids.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
    /// RGB8, row-major.
    pub rgb: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `bg`.
    pub fn new(w: usize, h: usize, bg: [u8; 3]) -> Self {
        let mut rgb = vec![0u8; w * h * 3];
        for p in rgb.chunks_mut(3) {
            p.copy_from_slice(&bg);
        }
        Canvas { w, h, rgb }
    }

    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Pastes a toy image (32×32, channel-first, `[-1, 1]`) scaled by `s` (nearest) at
    /// `(x, y)`.
    pub fn paste(&mut self, pixels: &[f32], x: usize, y: usize, s: usize) {
        let rgb = data::to_rgb8(pixels);
        let size = data::SIZE as u32;
        let img = RgbImage::from_raw(size, size, rgb).expect("a toy image is 32×32×3");
        self.paste_image(&img, x, y, s);
    }

    /// Pastes an RGB image scaled by `s` (nearest) at `(x, y)`.
    pub fn paste_image(&mut self, img: &RgbImage, x: usize, y: usize, s: usize) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        for py in 0..h * s {
            for px in 0..w * s {
                let p = img.get_pixel((px / s) as u32, (py / s) as u32).0;
                self.put(x + px, y + py, p);
            }
        }
    }

    /// Writes `text` (3×5 font, upper case) at `(x, y)` with pixel size `s`.
    pub fn text(&mut self, text: &str, x: usize, y: usize, s: usize, c: [u8; 3]) {
        for (k, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            for (r, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for dy in 0..s {
                            for dx in 0..s {
                                self.put(x + (k * 4 + col) * s + dx, y + r * s + dy, c);
                            }
                        }
                    }
                }
            }
        }
    }

    /// PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>> {
        let img = image::RgbImage::from_raw(self.w as u32, self.h as u32, self.rgb.clone())
            .context("canvas size")?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .context("encoding PNG")?;
        Ok(out.into_inner())
    }
}

/// A labelled grid of images of one size: `cols` per row, each scaled ×`scale` with its label
/// beneath.
pub fn grid(images: &[(RgbImage, String)], cols: usize, scale: usize) -> Canvas {
    let cell_w = images.first().map(|(i, _)| i.width() as usize).unwrap_or(0) * scale;
    let cell_h = images
        .first()
        .map(|(i, _)| i.height() as usize)
        .unwrap_or(0)
        * scale;
    let label_h = 14;
    let pad = 4;
    let cols = cols.max(1).min(images.len().max(1));
    let rows = images.len().div_ceil(cols);
    let mut c = Canvas::new(
        cols * (cell_w + pad) + pad,
        rows * (cell_h + label_h + pad) + pad,
        [255, 255, 255],
    );
    for (i, (pix, label)) in images.iter().enumerate() {
        let x = pad + (i % cols) * (cell_w + pad);
        let y = pad + (i / cols) * (cell_h + label_h + pad);
        c.paste_image(pix, x, y, scale);
        c.text(label, x, y + cell_h + 2, 2, [0, 0, 0]);
    }
    c
}
