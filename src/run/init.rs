//! Where a text-to-image run starts when not from seeded noise: `--init-latents FILE.json`
//! (the latents one would hand diffusers' pipeline as `latents=`) or `--init-image IMG`
//! (img2img).

use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::error::input_error;

/// Longest `--init-latents` file read (1 GiB: some 50 million numbers as JSON).
const MAX_LATENTS_FILE: u64 = 1 << 30;

/// Reads `--init-latents`: a flat list of numbers, or an object with `initial_latents` (a
/// tiny-sd fixture case file works as is); `n` samples need `n` times the latent size, or one
/// latent for all. Returns `[n, …shape]` on `device`.
pub fn read_latents(path: &Path, shape: &[usize], n: usize, device: &Device) -> Result<Tensor> {
    let text = crate::error::read_user_text(path, "--init-latents", MAX_LATENTS_FILE)?;
    let data = parse_latents(&text, shape, n).map_err(|why| {
        crate::error::InputError(format!("--init-latents `{}`{why}", path.display()))
    })?;
    let mut dims = vec![n];
    dims.extend_from_slice(shape);
    Ok(Tensor::from_vec(data, dims, device)?)
}

/// The `n × shape` numbers of an `--init-latents` file's `text` (see [`read_latents`]); the
/// error is the rest of a message that starts with the file's name (`: …` or ` holds …`).
pub fn parse_latents(
    text: &str,
    shape: &[usize],
    n: usize,
) -> std::result::Result<Vec<f32>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!(" is not JSON: {e}"))?;
    let list = match &v {
        Value::Array(_) => &v,
        Value::Object(o) if o.contains_key("initial_latents") => &o["initial_latents"],
        _ => return Err(": expected a list of numbers or an object with `initial_latents`".into()),
    };
    let (data, dims) = flatten(list).map_err(|why| format!(": {why}"))?;
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let mut with_n = vec![n];
    with_n.extend_from_slice(shape);
    // A nested array must have the latents' own shape, with or without the sample axis.
    if dims.len() > 1 && dims != with_n && dims != shape {
        return Err(format!(
            " is an array of shape {dims:?}; {n} sample(s) of latent shape {shape:?} need \
             {with_n:?} (or {shape:?}, one latent for all, or a flat list)"
        ));
    }
    let Some(numel) = numel else {
        return Err(format!(": the latent shape {shape:?} is too large"));
    };
    let data = if data.len() == numel && n > 1 {
        data.repeat(n)
    } else {
        data
    };
    if Some(data.len()) != numel.checked_mul(n) {
        return Err(format!(
            " holds {} numbers; {n} sample(s) of latent shape {shape:?} need {}",
            data.len(),
            numel.saturating_mul(n)
        ));
    }
    Ok(data)
}

/// Reads `--init-image`.
pub fn read_image(path: &Path) -> Result<image::RgbImage> {
    match image::open(path) {
        Ok(i) => Ok(i.to_rgb8()),
        Err(e) => input_error!("cannot read --init-image `{}`: {e}", path.display()),
    }
}

/// The numbers of a JSON list, nested lists flattened in row-major order, with the nested
/// shape (`[len]` for a flat list); errors name the first non-number or ragged list.
fn flatten(list: &Value) -> std::result::Result<(Vec<f32>, Vec<usize>), String> {
    fn walk(
        v: &Value,
        depth: usize,
        dims: &mut Vec<usize>,
        out: &mut Vec<f32>,
    ) -> std::result::Result<(), String> {
        let Some(items) = v.as_array() else {
            if depth < dims.len() {
                return Err(format!(
                    "entry {} sits where the other entries are lists; the nesting must be \
                     rectangular",
                    out.len() + 1
                ));
            }
            // Finite as the f32 the latents are (1e308 is a finite f64 but ∞ in f32).
            return match v.as_f64().map(|f| f as f32).filter(|f| f.is_finite()) {
                Some(f) => {
                    out.push(f);
                    Ok(())
                }
                None => {
                    let mut text = v.to_string();
                    if text.len() > 40 {
                        text = format!("{}…", text.chars().take(40).collect::<String>());
                    }
                    Err(format!(
                        "entry {} ({text}) is not a finite number of f32's range (±3.4e38)",
                        out.len() + 1
                    ))
                }
            };
        };
        if depth == dims.len() {
            if !out.is_empty() {
                return Err(format!(
                    "a list sits after entry {} where the other entries are numbers; the \
                     nesting must be rectangular",
                    out.len()
                ));
            }
            dims.push(items.len());
        } else if dims[depth] != items.len() {
            return Err(format!(
                "lists at depth {depth} hold {} and {} entries; the nesting must be \
                 rectangular",
                dims[depth],
                items.len()
            ));
        }
        items.iter().try_for_each(|x| walk(x, depth + 1, dims, out))
    }
    if !list.is_array() {
        return Err("`initial_latents` is not a list".into());
    }
    let (mut dims, mut out) = (vec![], vec![]);
    walk(list, 0, &mut dims, &mut out)?;
    Ok((out, dims))
}

/// An image as `[1, 3, H, W]` in `[0, 1]` (on the CPU; the model moves it).
pub fn image_tensor(img: &image::RgbImage) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels: Vec<f32> = img.as_raw().iter().map(|&b| b as f32 / 255.0).collect();
    Ok(Tensor::from_vec(pixels, (1, h, w, 3), &Device::Cpu)?.permute((0, 3, 1, 2))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latents(json: &str, shape: &[usize], n: usize) -> std::result::Result<Vec<usize>, String> {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), json).unwrap();
        read_latents(tmp.path(), shape, n, &Device::Cpu)
            .map(|t| t.dims().to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn nested_latents_are_read_in_their_shape_and_wrong_shapes_named() {
        let one = "[[[1, 2], [3, 4]]]"; // [1, 2, 2]
        assert_eq!(latents(one, &[1, 2, 2], 1).unwrap(), [1, 1, 2, 2]);
        assert_eq!(latents(one, &[1, 2, 2], 3).unwrap(), [3, 1, 2, 2]);
        assert_eq!(
            latents("[1, 2, 3, 4]", &[1, 2, 2], 1).unwrap(),
            [1, 1, 2, 2]
        );
        let e = latents("[[1, 2, 3, 4]]", &[1, 2, 2], 1).unwrap_err();
        assert!(
            e.contains("shape [1, 4]") && e.contains("[1, 1, 2, 2]"),
            "{e}"
        );
        let e = latents("[[1, 2], [3]]", &[1, 2, 2], 1).unwrap_err();
        assert!(e.contains("hold 2 and 1 entries"), "{e}");
        let e = latents("[[1, 2], 3]", &[1, 2, 2], 1).unwrap_err();
        assert!(
            e.contains("entry 3 sits where the other entries are lists"),
            "{e}"
        );
        let e = latents("[1, [2, 3]]", &[1, 2, 2], 1).unwrap_err();
        assert!(e.contains("a list sits after entry 1"), "{e}");
        let e = latents("[1, 1e308, 3, 4]", &[1, 2, 2], 1).unwrap_err();
        assert!(
            e.contains("entry 2 (1e") && e.contains("of f32's range"),
            "{e}"
        );
        let e = latents(r#"[1, "x", 3, 4]"#, &[1, 2, 2], 1).unwrap_err();
        assert!(e.contains(r#"entry 2 ("x") is not a finite number"#), "{e}");
        let e = latents("[1, 2, 3]", &[1, 2, 2], 1).unwrap_err();
        assert!(e.contains("holds 3 numbers"), "{e}");
    }
}
