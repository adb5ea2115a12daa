//! Where a text-to-image run starts when not from seeded noise: `--init-latents FILE.json`
//! (the latents one would hand diffusers' pipeline as `latents=`) or `--init-image IMG`
//! (img2img).

use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::error::input_error;

/// Reads `--init-latents`: a flat list of numbers, or an object with `initial_latents` (a
/// tiny-sd fixture case file works as is); `n` samples need `n` times the latent size, or one
/// latent for all. Returns `[n, …shape]` on `device`.
pub fn read_latents(path: &Path, shape: &[usize], n: usize, device: &Device) -> Result<Tensor> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => input_error!("cannot read --init-latents `{}`: {e}", path.display()),
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => input_error!("--init-latents `{}` is not JSON: {e}", path.display()),
    };
    let list = match &v {
        Value::Array(_) => &v,
        Value::Object(o) if o.contains_key("initial_latents") => &o["initial_latents"],
        _ => input_error!(
            "--init-latents `{}`: expected a list of numbers or an object with `initial_latents`",
            path.display()
        ),
    };
    let Some(items) = list.as_array() else {
        input_error!(
            "--init-latents `{}`: `initial_latents` is not a list",
            path.display()
        );
    };
    let mut data = Vec::with_capacity(items.len());
    for x in items {
        match x.as_f64() {
            Some(f) if f.is_finite() => data.push(f as f32),
            _ => input_error!(
                "--init-latents `{}`: {x} is not a finite number",
                path.display()
            ),
        }
    }
    let numel: usize = shape.iter().product();
    if data.len() == numel && n > 1 {
        data = data.repeat(n);
    }
    if data.len() != numel * n {
        input_error!(
            "--init-latents `{}` holds {} numbers; {n} sample(s) of latent shape {shape:?} need {}",
            path.display(),
            data.len(),
            numel * n
        );
    }
    let mut dims = vec![n];
    dims.extend_from_slice(shape);
    Ok(Tensor::from_vec(data, dims, device)?)
}

/// Reads `--init-image`.
pub fn read_image(path: &Path) -> Result<image::RgbImage> {
    match image::open(path) {
        Ok(i) => Ok(i.to_rgb8()),
        Err(e) => input_error!("cannot read --init-image `{}`: {e}", path.display()),
    }
}

/// An image as `[1, 3, H, W]` in `[0, 1]` (on the CPU; the model moves it).
pub fn image_tensor(img: &image::RgbImage) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels: Vec<f32> = img.as_raw().iter().map(|&b| b as f32 / 255.0).collect();
    Ok(Tensor::from_vec(pixels, (1, h, w, 3), &Device::Cpu)?.permute((0, 3, 1, 2))?)
}
