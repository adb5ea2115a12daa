//! What an image-space task observes: the `--image` (as the model's pixels, `[C, H, W]` in
//! `[-1, 1]`) and which of its pixels are known (`--mask PNG`, white = known, or `--box`, the
//! rectangle to fill). Every size problem is a one-line error naming both sizes and the fix.

use std::path::Path;

use anyhow::Result;

use crate::error::input_error;

/// An observed image and, for inpainting, its known pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Pixels, channel-first `[C, H, W]`, in `[-1, 1]`.
    pub image: Vec<f32>,
    /// `[C, H, W]` of `image`.
    pub dims: [usize; 3],
    /// 1 where a pixel is known, 0 where it is to be generated (same layout as `image`).
    pub known: Option<Vec<f32>>,
}

/// Reads a PNG (any colour type) as RGB pixels in `[-1, 1]`, channel-first; returns `(pixels,
/// [3, H, W])`. `flag` names the option in errors.
pub fn read_rgb(path: &Path, flag: &str) -> Result<(Vec<f32>, [usize; 3])> {
    let img = match image::open(path) {
        Ok(i) => i.to_rgb8(),
        Err(e) => input_error!(
            "{flag} {}: cannot read it as an image ({e}); give a PNG file",
            path.display()
        ),
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            out[c * h * w + y as usize * w + x as usize] = p[c] as f32 / 127.5 - 1.0;
        }
    }
    Ok((out, [3, h, w]))
}

/// Reads a mask PNG of size `H×W` (white = known): a pixel is known when its mean channel
/// value is at least half of full scale; the mask is repeated over the `C` channels.
pub fn read_mask(path: &Path, dims: [usize; 3]) -> Result<Vec<f32>> {
    let img = match image::open(path) {
        Ok(i) => i.to_rgb8(),
        Err(e) => input_error!(
            "--mask {}: cannot read it as an image ({e}); give a PNG (white = known pixels)",
            path.display()
        ),
    };
    let [c, h, w] = dims;
    if (img.width() as usize, img.height() as usize) != (w, h) {
        input_error!(
            "--mask {} is {}×{} but the image is {w}×{h}; give a {w}×{h} mask (white = known pixels)",
            path.display(),
            img.width(),
            img.height()
        );
    }
    let mut plane = vec![0f32; h * w];
    for (x, y, p) in img.enumerate_pixels() {
        let mean = (p[0] as u32 + p[1] as u32 + p[2] as u32) as f32 / 3.0;
        plane[y as usize * w + x as usize] = if mean >= 127.5 { 1.0 } else { 0.0 };
    }
    Ok(plane.repeat(c))
}

/// The known-pixel mask of `dims` with the box `[x0, y0, x1, y1)` unknown (to be filled) and
/// everything else known.
pub fn box_mask(b: [usize; 4], dims: [usize; 3]) -> Result<Vec<f32>> {
    let [x0, y0, x1, y1] = b;
    let [c, h, w] = dims;
    if !(x0 < x1 && y0 < y1 && x1 <= w && y1 <= h) {
        input_error!(
            "--box {x0},{y0},{x1},{y1}: need X0 < X1 ≤ {w} and Y0 < Y1 ≤ {h} (the rectangle to \
             fill, in pixels, end exclusive; e.g. 8,8,24,24 for the centre of a 32×32 image)"
        );
    }
    let mut plane = vec![1f32; h * w];
    for y in y0..y1 {
        for x in x0..x1 {
            plane[y * w + x] = 0.0;
        }
    }
    Ok(plane.repeat(c))
}

/// The centred square box of side `side` in an `h×w` image.
pub fn centre_box(side: usize, h: usize, w: usize) -> [usize; 4] {
    let side = side.min(h).min(w);
    let (x0, y0) = ((w - side) / 2, (h - side) / 2);
    [x0, y0, x0 + side, y0 + side]
}

/// Parses `X0,Y0,X1,Y1`.
pub fn parse_box(s: &str) -> std::result::Result<[usize; 4], String> {
    let bad =
        || format!("expected X0,Y0,X1,Y1 (four pixel coordinates, e.g. 8,8,24,24), got `{s}`");
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    match v.as_slice() {
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_mark_the_fill_region_unknown() {
        let m = box_mask([1, 2, 3, 4], [2, 5, 4]).unwrap();
        assert_eq!(m.len(), 40);
        let unknown: Vec<usize> = (0..20).filter(|&i| m[i] == 0.0).collect();
        // rows 2..4, columns 1..3 of a 5×4 plane
        assert_eq!(unknown, vec![9, 10, 13, 14]);
        assert_eq!(&m[..20], &m[20..]);
        assert!(box_mask([3, 0, 3, 1], [3, 8, 8]).is_err());
        assert!(box_mask([0, 0, 9, 1], [3, 8, 8]).is_err());
        assert_eq!(centre_box(16, 32, 32), [8, 8, 24, 24]);
        assert_eq!(parse_box("8, 8,24,24"), Ok([8, 8, 24, 24]));
        assert!(parse_box("1,2,3").is_err());
    }
}
