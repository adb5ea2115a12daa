//! The patch gather of [`conv2d`](super::conv2d): each row of the patch matrix is one
//! (input channel, kernel tap) pair, holding the input pixels that tap sees for every output
//! pixel, laid out as the output (so a stride-1 row is a shifted copy of input rows).

use rayon::prelude::*;

use super::conv2d::{Conv2dParams, Dims};
use super::MIN_TASK_FLOATS;

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
