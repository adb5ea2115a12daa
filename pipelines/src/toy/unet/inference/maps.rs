//! The toy U-Net's per-pixel passes on channels-last maps: normalisation into a zero-bordered
//! map (a convolution's input), 2×2 pooling, and the skip concatenation with ×2 upsampling.

use crate::kernels::vector_math::{layer_norm_rows, Modulation};

/// The LayerNorm ε of the network (`pixel_ops`).
pub(super) const EPS: f32 = 1e-6;

/// `v` resized to `n` values (new ones zero, old ones kept: callers overwrite what they read).
pub(super) fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// Normalises the `h × w` pixels of `src` (rows of `c`, image rows `src_w` pixels apart) into
/// the interior of `padded`, whose border it zeroes: a convolution's input.
pub(super) fn norm_into_padded(
    src: &[f32],
    src_w: usize,
    (h, w, c): (usize, usize, usize),
    padded: &mut Vec<f32>,
    modulation: Modulation,
) {
    let wp = w + 2;
    let p = sized(padded, (h + 2) * wp * c);
    p[..(wp + 1) * c].fill(0.0);
    for i in 0..h {
        let dst = ((i + 1) * wp + 1) * c;
        let row = &src[i * src_w * c..(i * src_w + w) * c];
        layer_norm_rows(row, &mut p[dst..dst + w * c], c, EPS, modulation, true);
        // This row's right border and the next row's left one.
        p[dst + w * c..dst + (w + 2) * c].fill(0.0);
    }
    p[((h + 1) * wp + 1) * c..].fill(0.0);
}

/// 2×2 average pooling of an `s × s` map of `c` channels into `out`.
pub(super) fn average_pool(x: &[f32], s: usize, c: usize, out: &mut Vec<f32>) {
    let half = s / 2;
    let y = sized(out, half * half * c);
    for i in 0..half {
        for j in 0..half {
            let at = |di: usize, dj: usize| ((2 * i + di) * s + 2 * j + dj) * c;
            let (a, b, p, q) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
            let dst = &mut y[(i * half + j) * c..(i * half + j + 1) * c];
            for (k, v) in dst.iter_mut().enumerate() {
                *v = ((x[a + k] + x[b + k]) * 0.5 + (x[p + k] + x[q + k]) * 0.5) * 0.5;
            }
        }
    }
}

/// `[h, skip]` per pixel of an `s × s` map: `h` (`ch` channels) is at half the side and
/// repeated 2×2 when `upsample`, `skip` has `cs` channels.
pub(super) fn concat_upsampled(
    h: &[f32],
    ch: usize,
    upsample: bool,
    skip: &[f32],
    s: usize,
    cs: usize,
    out: &mut Vec<f32>,
) {
    let c = ch + cs;
    let y = sized(out, s * s * c);
    let hs = if upsample { s / 2 } else { s };
    for i in 0..s {
        for j in 0..s {
            let (si, sj) = if upsample { (i / 2, j / 2) } else { (i, j) };
            let p = i * s + j;
            let src = (si * hs + sj) * ch;
            y[p * c..p * c + ch].copy_from_slice(&h[src..src + ch]);
            y[p * c + ch..(p + 1) * c].copy_from_slice(&skip[p * cs..(p + 1) * cs]);
        }
    }
}
