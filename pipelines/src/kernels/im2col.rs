//! The shape of a convolution ([`Conv2dParams`], the input and kernel dimensions) and the patch
//! gather of [`conv2d`](super::conv2d): each row of the patch matrix is one (input channel,
//! kernel tap) pair, holding the input pixels that tap sees for every output pixel, laid out as
//! the output (so a stride-1 row is a shifted copy of input rows).

use candle_core::{Layout, Result};
use rayon::prelude::*;

use super::MIN_TASK_FLOATS;

/// Stride, zero padding and dilation, the same along both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between output pixels, in input pixels.
    pub stride: usize,
    /// Zeros added on every side.
    pub padding: usize,
    /// Spacing of the kernel taps.
    pub dilation: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: 1,
            padding: 0,
            dilation: 1,
        }
    }
}

/// Input `[B, C, H, W]` and kernel `[O, C, kh, kw]` dimensions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
}

impl Dims {
    pub(super) fn new(x: &Layout, k: &Layout) -> Result<Dims> {
        let (b, c, h, w) = x.shape().dims4()?;
        let (o, kc, kh, kw) = k.shape().dims4()?;
        if kc != c {
            candle_core::bail!("conv2d: the input has {c} channels, the kernel takes {kc}");
        }
        Ok(Dims {
            b,
            c,
            h,
            w,
            o,
            kh,
            kw,
        })
    }

    /// Output height and width, or an error when the kernel does not fit.
    pub(super) fn out(&self, p: Conv2dParams) -> Result<(usize, usize)> {
        let size = |n: usize, k: usize| {
            let span = p.dilation * (k - 1) + 1;
            (n + 2 * p.padding)
                .checked_sub(span)
                .map(|v| v / p.stride + 1)
        };
        match (size(self.h, self.kh), size(self.w, self.kw)) {
            (Some(ho), Some(wo)) if p.stride > 0 => Ok((ho, wo)),
            _ => candle_core::bail!(
                "conv2d: a {}×{} kernel does not fit a {}×{} input with padding {}",
                self.kh,
                self.kw,
                self.h,
                self.w,
                p.padding
            ),
        }
    }
}

/// Fills `col[(c, dy, dx), col0 + (i − row0)·wo + j]` with
/// `x[c, i·s + dy·d − p, j·s + dx·d − p]` (0 outside the image) for output rows
/// `row0 .. row0 + rows`; `col`'s rows are `row_len` long. One task per input channel.
pub(super) fn gather(
    image: &[f32],
    col: &mut [f32],
    d: Dims,
    p: Conv2dParams,
    (row0, rows): (usize, usize),
    wo: usize,
    (row_len, col0): (usize, usize),
) {
    let cols = rows * wo;
    let taps = d.kh * d.kw;
    col.par_chunks_mut(taps * row_len)
        .with_min_len(MIN_TASK_FLOATS.div_ceil(taps * cols))
        .enumerate()
        .for_each(|(c, block)| {
            let plane = &image[c * d.h * d.w..(c + 1) * d.h * d.w];
            for (tap, dst) in block.chunks_exact_mut(row_len).enumerate() {
                let dst = &mut dst[col0..col0 + cols];
                let (dy, dx) = (tap / d.kw, tap % d.kw);
                // Output columns j whose input column j·s + dx·dil − pad is inside the image.
                let shift = (dx * p.dilation) as isize - p.padding as isize;
                let first = (0..wo)
                    .find(|&j| (j * p.stride) as isize + shift >= 0)
                    .unwrap_or(wo);
                let end = (first..wo)
                    .find(|&j| (j * p.stride) as isize + shift >= d.w as isize)
                    .unwrap_or(wo);
                for (r, out_row) in dst.chunks_exact_mut(wo).enumerate() {
                    let iy =
                        ((row0 + r) * p.stride + dy * p.dilation) as isize - p.padding as isize;
                    if iy < 0 || iy >= d.h as isize || first >= end {
                        out_row.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * d.w..(iy as usize + 1) * d.w];
                    out_row[..first].fill(0.0);
                    out_row[end..].fill(0.0);
                    let start = (first * p.stride) as isize + shift;
                    if p.stride == 1 {
                        let s = start as usize;
                        out_row[first..end].copy_from_slice(&src[s..s + (end - first)]);
                    } else {
                        for (j, v) in out_row[first..end].iter_mut().enumerate() {
                            *v = src[start as usize + j * p.stride];
                        }
                    }
                }
            }
        });
}
