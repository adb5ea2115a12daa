//! 3 × 3 convolutions of stride 1 by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray
//! 2016, "Fast Algorithms for Convolutional Neural Networks", §4, eq. 8–10): each 2 × 2 output
//! tile comes from the 4 × 4 input tile `d` under it (tiles 2 apart, overlapping by 2) as
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//!
//!      ⎡1  0 −1  0⎤        ⎡1   0   0⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢½   ½   ½⎥    Aᵀ = ⎡1  1  1  0⎤
//!      ⎢0 −1  1  0⎥        ⎢½  −½   ½⎥         ⎣0  1 −1 −1⎦
//!      ⎣0  1  0 −1⎦        ⎣0   0   1⎦
//! ```
//!
//! Summed over the input channels, the element-wise product becomes 16 matrix products, one
//! per position `ξ` of the 4 × 4 transformed tile (eq. 10):
//!
//! ```text
//! M_ξ[O, tiles] = U_ξ[O, C] · V_ξ[C, tiles],   U_ξ[o, c] = (G g_oc Gᵀ)_ξ,   V_ξ[c, t] = (Bᵀ d_ct B)_ξ
//! ```
//!
//! so 16 multiplications make 4 outputs where the direct convolution spends 36: the products
//! do 2.25× fewer multiply-adds than im2col's `[O, 9·C] · [9·C, pixels]`. The transforms are
//! additions and halvings (exact scalings), the most accurate of the Winograd family (the error
//! analysis of Lavin & Gray §5 and Barabasz et al. 2020: F(2×2, 3×3)'s error is within a small
//! factor of the direct sum's); the tests compare with candle's `conv2d` in value.
//!
//! Work is in bands of whole tile rows (all images' rows one after the other), so that the
//! transformed input and the products each stay within [`BAND_FLOATS`] however large the
//! image. The transformed filters (16/9 of the layer's weights) are made whole, once per call:
//! made block by block in every band instead, they cost 5 % of the 512 px UNet step (the
//! products' right-hand side is then packed once per block) and saved no peak memory that
//! `steerdiff bench` could see.

use rayon::prelude::*;

use super::im2col::{Conv2dParams, Dims};
use super::{gemm_threads, product, SendPtr, View, MIN_TASK_FLOATS};

/// Positions of a transformed tile.
const TILE: usize = 16;

/// The most floats of transformed input, and of products, held at once (each): 4 Mi floats,
/// 16 MiB.
pub(super) const BAND_FLOATS: usize = 4 << 20;

/// The fewest output pixels (all images together) for which this path is taken: below it the
/// filter transform, `16·O·C` values written per call, costs more than the products save.
const MIN_PIXELS: usize = 256;

/// The distance between the 16 blocks of a transformed buffer holding `len` values each: `len`
/// rounded up to a whole cache line, plus one more. The transforms write (or read) the 16
/// blocks together, and blocks a multiple of 4 KiB apart would all fall in the same cache set
/// (more streams than the L1 cache has ways: every access a miss).
fn spaced(len: usize) -> usize {
    len.next_multiple_of(16) + 16
}

/// Whether F(2×2, 3×3) computes this convolution: a 3 × 3 kernel, stride 1, no dilation,
/// padding at most 2, some channels in and out, and at least [`MIN_PIXELS`] output pixels.
pub(super) fn serves(d: &Dims, p: Conv2dParams, (ho, wo): (usize, usize)) -> bool {
    (d.kh, d.kw, p.stride, p.dilation) == (3, 3, 1, 1)
        && p.padding <= 2
        && d.c > 0
        && d.o > 0
        && d.b * ho * wo >= MIN_PIXELS
}

/// `y[b, o] = bias[o] + Σ_c x[b, c] ⋆ k[o, c]` (a 3 × 3 correlation, stride 1, padding
/// `p.padding`) by F(2×2, 3×3); `(ho, wo)` is the output size. The transformed inputs and the
/// products each hold at most about `band_floats` values at once.
pub(super) fn forward(
    x: &[f32],
    k: &[f32],
    bias: Option<&[f32]>,
    d: Dims,
    p: Conv2dParams,
    (ho, wo): (usize, usize),
    band_floats: usize,
) -> Vec<f32> {
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let tile_rows = d.b * th;
    let band = (band_floats / (TILE * d.c.max(d.o) * tw)).clamp(1, tile_rows);
    let (u, ub) = (filters(k, d.o, d.c), spaced(d.o * d.c));
    let mut y = vec![0f32; d.b * d.o * ho * wo];
    let mut v = vec![0f32; TILE * spaced(d.c * band * tw)];
    let mut m = vec![0f32; TILE * spaced(d.o * band * tw)];
    for first in (0..tile_rows).step_by(band) {
        let rows = band.min(tile_rows - first);
        let tiles = rows * tw;
        let (vb, mb) = (spaced(d.c * tiles), spaced(d.o * tiles));
        let (v, m) = (&mut v[..TILE * vb], &mut m[..TILE * mb]);
        inputs(x, v, d, p, (first, rows), (th, tw));
        for xi in 0..TILE {
            let lhs = View::rows(u[xi * ub..].as_ptr(), d.c);
            let rhs = View::rows(v[xi * vb..].as_ptr(), tiles);
            let dst = m[xi * mb..xi * mb + d.o * tiles].as_mut_ptr();
            // SAFETY: `u`'s block ξ is `O × C`, `v`'s `C × tiles` and `m`'s `O × tiles`, all
            // row-major and inside their buffers; nothing else touches `m` meanwhile.
            unsafe {
                product(
                    dst,
                    tiles,
                    false,
                    lhs,
                    rhs,
                    (d.o, tiles, d.c),
                    1.0,
                    gemm_threads(),
                )
            };
        }
        outputs(m, &mut y, bias, d.o, (first, rows), (th, tw), (ho, wo));
    }
    y
}

/// `U_ξ[o, c] = (G g Gᵀ)_ξ` for every kernel `g = k[o, c]` (`k`: `[O, C, 3, 3]`), as 16 blocks
/// `[O, C]` [`spaced`] apart. One task per group of output channels; each transforms a row of
/// kernels into a small buffer and copies its 16 rows out whole.
fn filters(k: &[f32], o: usize, c: usize) -> Vec<f32> {
    let block = spaced(o * c);
    let mut u = Vec::with_capacity(TILE * block);
    let out = SendPtr(u.spare_capacity_mut().as_mut_ptr().cast());
    (0..o)
        .into_par_iter()
        .with_min_len(MIN_TASK_FLOATS.div_ceil(TILE * c))
        .for_each_init(
            || vec![0f32; TILE * c],
            |row, oc| {
                for (ci, g) in k[oc * c * 9..(oc + 1) * c * 9].chunks_exact(9).enumerate() {
                    // G g: 4 rows of 3.
                    let mut gg = [[0f32; 3]; 4];
                    for j in 0..3 {
                        let (a, b, e) = (g[j], g[3 + j], g[6 + j]);
                        gg[0][j] = a;
                        gg[1][j] = ((a + b) + e) * 0.5;
                        gg[2][j] = ((a - b) + e) * 0.5;
                        gg[3][j] = e;
                    }
                    // (G g) Gᵀ.
                    for (i, [a, b, e]) in gg.into_iter().enumerate() {
                        row[(i * 4) * c + ci] = a;
                        row[(i * 4 + 1) * c + ci] = ((a + b) + e) * 0.5;
                        row[(i * 4 + 2) * c + ci] = ((a - b) + e) * 0.5;
                        row[(i * 4 + 3) * c + ci] = e;
                    }
                }
                for (xi, values) in row.chunks_exact(c).enumerate() {
                    // SAFETY: row `oc` of block ξ is inside `u`'s capacity, and only this task
                    // writes it.
                    unsafe {
                        let dst = out.get().add(xi * block + oc * c);
                        std::ptr::copy_nonoverlapping(values.as_ptr(), dst, c);
                    }
                }
            },
        );
    // SAFETY: every row of every block was written above; the gaps between blocks (the
    // spacing) are never read, but are counted in the length, so give them values too.
    unsafe {
        for xi in 0..TILE {
            let gap = out.get().add(xi * block + o * c);
            std::ptr::write_bytes(gap, 0, block - o * c);
        }
        u.set_len(TILE * block);
    }
    u
}

/// `V_ξ[c, t] = (Bᵀ d B)_ξ` for the tiles of tile rows `first .. first + rows` (numbered over
/// all images: row `r` is image `r / th`, tile row `r % th`), as 16 blocks `[C, rows·tw]`
/// [`spaced`] apart. One task per group of input channels.
///
/// The four input rows under a tile row are read zero-padded and split into even and odd
/// columns (tile `t` starts at even column `2t`), so every step below is a contiguous pass:
/// first `Bᵀ d` over whole rows, then each of the 16 outputs for all the row's tiles at once.
fn inputs(
    x: &[f32],
    v: &mut [f32],
    d: Dims,
    p: Conv2dParams,
    (first, rows): (usize, usize),
    (th, tw): (usize, usize),
) {
    let tiles = rows * tw;
    let block = spaced(d.c * tiles);
    let plane = d.h * d.w;
    let out = SendPtr(v.as_mut_ptr());
    // Padded column `j` (input column `j − padding`) is `even[j / 2]` or `odd[j / 2]`.
    let half = tw + 1;
    (0..d.c)
        .into_par_iter()
        .with_min_len(MIN_TASK_FLOATS.div_ceil(TILE * tiles))
        .for_each_init(
            || vec![0f32; 8 * half],
            |padded, ci| {
                for r in 0..rows {
                    let (n, ty) = ((first + r) / th, (first + r) % th);
                    let src = &x[(n * d.c + ci) * plane..(n * d.c + ci + 1) * plane];
                    let mut e = four_rows(padded, half);
                    for (i, (even, odd)) in e.iter_mut().enumerate() {
                        even.fill(0.0);
                        odd.fill(0.0);
                        let iy = (2 * ty + i) as isize - p.padding as isize;
                        if iy < 0 || iy as usize >= d.h {
                            continue;
                        }
                        let line = &src[iy as usize * d.w..(iy as usize + 1) * d.w];
                        let line = &line[..d.w.min(2 * half - p.padding)];
                        // Input column ix is padded column ix + padding: even columns of the
                        // input land in `even` when the padding is even, in `odd` when not.
                        let (to_even, to_odd) = if p.padding % 2 == 0 {
                            (&mut **even, &mut **odd)
                        } else {
                            (&mut **odd, &mut **even)
                        };
                        let skip = p.padding / 2;
                        for (dst, &value) in to_even[skip..].iter_mut().zip(line.iter().step_by(2))
                        {
                            *dst = value;
                        }
                        let skip = p.padding.div_ceil(2);
                        for (dst, &value) in to_odd[skip..]
                            .iter_mut()
                            .zip(line.iter().skip(1).step_by(2))
                        {
                            *dst = value;
                        }
                    }
                    // Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3), over whole rows.
                    let [(e0, o0), (e1, o1), (e2, o2), (e3, o3)] = &mut e;
                    for (r0, r1, r2, r3) in [(e0, e1, e2, e3), (o0, o1, o2, o3)] {
                        for j in 0..half {
                            let (a, b, c, f) = (r0[j], r1[j], r2[j], r3[j]);
                            r0[j] = a - c;
                            r1[j] = b + c;
                            r2[j] = c - b;
                            r3[j] = b - f;
                        }
                    }
                    // · B: per tile, (w0 − w2, w1 + w2, w2 − w1, w1 − w3) of its columns
                    // 2t .. 2t + 3, i.e. of even[t], odd[t], even[t + 1], odd[t + 1].
                    for (i, (even, odd)) in e.iter().enumerate() {
                        for j in 0..4 {
                            // SAFETY: row `ci` of block 4i + j, columns r·tw .. (r + 1)·tw, lies
                            // inside `v`; each task writes only its own rows `ci`.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out.get().add((i * 4 + j) * block + ci * tiles + r * tw),
                                    tw,
                                )
                            };
                            let (w0, w1) = (&even[..tw], &odd[..tw]);
                            let (w2, w3) = (&even[1..], &odd[1..]);
                            let columns =
                                dst.iter_mut().zip(w0.iter().zip(w1).zip(w2.iter().zip(w3)));
                            match j {
                                0 => columns.for_each(|(v, ((a, _), (c, _)))| *v = a - c),
                                1 => columns.for_each(|(v, ((_, b), (c, _)))| *v = b + c),
                                2 => columns.for_each(|(v, ((_, b), (c, _)))| *v = c - b),
                                _ => columns.for_each(|(v, ((_, b), (_, f)))| *v = b - f),
                            }
                        }
                    }
                }
            },
        );
}

/// The four padded rows of [`inputs`]' buffer (`8·half` values), each split into its even and
/// odd columns (`half` values each).
fn four_rows(padded: &mut [f32], half: usize) -> [(&mut [f32], &mut [f32]); 4] {
    let (a, rest) = padded.split_at_mut(2 * half);
    let (b, rest) = rest.split_at_mut(2 * half);
    let (c, d) = rest.split_at_mut(2 * half);
    [a, b, c, d].map(|row| row.split_at_mut(half))
}

/// `y = Aᵀ M A + bias` for the tiles of tile rows `first .. first + rows`, each 2 × 2 tile
/// written where it lies in `y` (`[B, O, ho, wo]`; a tile's row or column past the image's
/// edge is dropped). One task per group of output channels; each makes `Aᵀ M` for a whole
/// tile row in contiguous passes, then interleaves each output row's even and odd pixels.
fn outputs(
    m: &[f32],
    y: &mut [f32],
    bias: Option<&[f32]>,
    o: usize,
    (first, rows): (usize, usize),
    (th, tw): (usize, usize),
    (ho, wo): (usize, usize),
) {
    let tiles = rows * tw;
    let block = spaced(o * tiles);
    let out = SendPtr(y.as_mut_ptr());
    (0..o)
        .into_par_iter()
        .with_min_len(MIN_TASK_FLOATS.div_ceil(TILE * tiles))
        .for_each_init(
            || vec![0f32; 8 * tw],
            |f, oc| {
                let b = bias.map_or(0.0, |b| b[oc]);
                for r in 0..rows {
                    let (n, ty) = ((first + r) / th, (first + r) % th);
                    let row = |xi: usize| {
                        let at = xi * block + oc * tiles + r * tw;
                        &m[at..at + tw]
                    };
                    // Aᵀ M: f[i][j] = (m0j + m1j + m2j, m1j − m2j − m3j)[i], each over the row.
                    for j in 0..4 {
                        let (a, bb, c, e) = (row(j), row(4 + j), row(8 + j), row(12 + j));
                        let (top, bottom) = f.split_at_mut(4 * tw);
                        let top = &mut top[j * tw..(j + 1) * tw];
                        let bottom = &mut bottom[j * tw..(j + 1) * tw];
                        for t in 0..tw {
                            top[t] = (a[t] + bb[t]) + c[t];
                            bottom[t] = (bb[t] - c[t]) - e[t];
                        }
                    }
                    // · A: pixels (f0 + f1 + f2, f1 − f2 − f3) + bias.
                    for (i, g) in f.chunks_exact(4 * tw).enumerate() {
                        let iy = 2 * ty + i;
                        if iy >= ho {
                            continue;
                        }
                        // SAFETY: row iy of channel oc of image n lies inside `y`; each task
                        // writes only channel oc.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                out.get().add((n * o + oc) * ho * wo + iy * wo),
                                wo,
                            )
                        };
                        let (g0, g1, g2, g3) =
                            (&g[..tw], &g[tw..2 * tw], &g[2 * tw..3 * tw], &g[3 * tw..]);
                        for (t, pair) in dst.chunks_mut(2).enumerate() {
                            pair[0] = ((g0[t] + g1[t]) + g2[t]) + b;
                            if let Some(odd) = pair.get_mut(1) {
                                *odd = ((g1[t] - g2[t]) - g3[t]) + b;
                            }
                        }
                    }
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{max_abs, max_abs_diff};
    use candle_core::{Device, Tensor};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// F(2×2, 3×3) against candle's `conv2d` (+ bias) on `b` images of `c` channels.
    fn check(b: usize, c: usize, (h, w): (usize, usize), o: usize, padding: usize, band: usize) {
        let dev = Device::Cpu;
        let (xs, ks, bs) = (values(b * c * h * w, 1), values(o * c * 9, 2), values(o, 3));
        let x = Tensor::from_vec(xs.clone(), (b, c, h, w), &dev).unwrap();
        let k = Tensor::from_vec(ks.clone(), (o, c, 3, 3), &dev).unwrap();
        let bias = Tensor::from_vec(bs.clone(), o, &dev).unwrap();
        let want = x
            .conv2d(&k, padding, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        let p = Conv2dParams {
            padding,
            ..Default::default()
        };
        let (kh, kw) = (3, 3);
        let d = Dims {
            b,
            c,
            h,
            w,
            o,
            kh,
            kw,
        };
        let (ho, wo) = d.out(p).unwrap();
        let got = forward(&xs, &ks, Some(&bs), d, p, (ho, wo), band);
        let got = Tensor::from_vec(got, (b, o, ho, wo), &dev).unwrap();
        let (err, scale) = (max_abs_diff(&got, &want), max_abs(&want));
        assert!(
            err <= 4e-7 * scale * (c as f32).sqrt(),
            "{b}×{c}×{h}×{w} → {o}, padding {padding}, band {band}: {err} against {scale}"
        );
    }

    #[test]
    fn matches_candles_conv2d() {
        // Odd and even sizes (a last tile cut by the edge), each padding, several images.
        check(2, 5, (9, 7), 6, 1, BAND_FLOATS);
        check(1, 3, (8, 8), 4, 1, BAND_FLOATS);
        check(3, 4, (7, 9), 5, 0, BAND_FLOATS);
        check(2, 6, (10, 11), 3, 2, BAND_FLOATS);
        check(1, 2, (3, 3), 2, 0, BAND_FLOATS);
        check(1, 1, (1, 1), 1, 1, BAND_FLOATS);
        // Wide channels, as in a UNet's levels (the bound grows as √C, as a sum's rounding does).
        check(2, 64, (16, 16), 48, 1, BAND_FLOATS);
        check(1, 1280, (8, 8), 4, 1, BAND_FLOATS);
    }

    #[test]
    fn bands_split_images_and_rows_alike() {
        // Bands of one tile row, and of three (which cross from one image into the next).
        let one_row = TILE * 6 * 5;
        check(2, 5, (9, 9), 6, 1, one_row);
        check(2, 5, (9, 9), 6, 1, 3 * one_row);
        check(3, 4, (6, 10), 4, 1, 2 * TILE * 4 * 5);
    }
}
