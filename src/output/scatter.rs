//! `scatter.png`: a 2-D mixture's density with the samples drawn on it.

use std::io::Cursor;

use anyhow::{Context as _, Result};
use image::{ImageFormat, Rgb, RgbImage};
use steerdiff_guidance::Condition;
use steerdiff_pipelines::GmmSpec;

/// Side length of `scatter.png`, pixels.
pub const SCATTER_SIZE: u32 = 512;

/// A PNG (`size`×`size`) of a 2-D mixture's log-density under `cond` as a colour-mapped
/// background, with `points` as dots. The square window covers every component mean ± 4 std
/// and every finite point.
pub fn scatter_png(
    spec: &GmmSpec,
    cond: Condition,
    points: &[[f64; 2]],
    size: u32,
) -> Result<Vec<u8>> {
    if spec.dim != 2 {
        anyhow::bail!(
            "a scatter plot needs a 2-D mixture (this one has dim {})",
            spec.dim
        );
    }
    let size = size.max(16);
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    let mut cover = |p: [f64; 2]| {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    };
    for c in &spec.components {
        let r = 4.0 * c.std;
        cover([c.mean[0] - r, c.mean[1] - r]);
        cover([c.mean[0] + r, c.mean[1] + r]);
    }
    for p in points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite())
    {
        cover(*p);
    }
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    let half = ((hi[0] - lo[0]).max(hi[1] - lo[1]) / 2.0 * 1.05).max(1e-6);
    let n = size as usize;
    let scale = 2.0 * half / n as f64;
    let to_world = |px: usize, py: usize| {
        [
            centre[0] - half + (px as f64 + 0.5) * scale,
            centre[1] + half - (py as f64 + 0.5) * scale,
        ]
    };
    let mut logp = vec![0.0f64; n * n];
    for py in 0..n {
        for px in 0..n {
            logp[py * n + px] = spec.log_density(&to_world(px, py), 1.0, 0.0, cond);
        }
    }
    let max = logp
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    // Twelve nats of dynamic range below the mode.
    const RANGE: f64 = 12.0;
    let mut img = RgbImage::new(size, size);
    for (i, px) in img.pixels_mut().enumerate() {
        let t = if max.is_finite() && logp[i].is_finite() {
            ((logp[i] - max) / RANGE + 1.0).clamp(0.0, 1.0)
        } else {
            0.0
        };
        *px = colour_map(t);
    }
    for p in points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite())
    {
        let cx = (p[0] - (centre[0] - half)) / scale;
        let cy = ((centre[1] + half) - p[1]) / scale;
        dot(&mut img, cx, cy, 3.2, Rgb([0, 0, 0]));
        dot(&mut img, cx, cy, 2.2, Rgb([255, 96, 48]));
    }
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .context("encoding scatter.png")?;
    Ok(bytes.into_inner())
}

/// A dark-blue → teal → yellow ramp (viridis-like) for `t ∈ [0, 1]`.
fn colour_map(t: f64) -> Rgb<u8> {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let c = |k: usize| (STOPS[i][k] * (1.0 - f) + STOPS[i + 1][k] * f).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

/// A filled disc of radius `r` centred at pixel coordinates `(cx, cy)`, clipped to the image.
fn dot(img: &mut RgbImage, cx: f64, cy: f64, r: f64, colour: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, x1) = ((cx - r).floor() as i64, (cx + r).ceil() as i64);
    let (y0, y1) = ((cy - r).floor() as i64, (cy + r).ceil() as i64);
    for y in y0.max(0)..=y1.min(h - 1) {
        for x in x0.max(0)..=x1.min(w - 1) {
            let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
            if dx * dx + dy * dy <= r * r {
                img.put_pixel(x as u32, y as u32, colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_map_ends() {
        assert_eq!(colour_map(0.0), Rgb([68, 1, 84]));
        assert_eq!(colour_map(1.0), Rgb([253, 231, 37]));
    }
}
