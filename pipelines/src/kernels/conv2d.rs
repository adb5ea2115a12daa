//! A 2-D convolution for `[B, C, H, W]` f32 tensors on the CPU: the input's patches gathered
//! row by row (im2col), then one matrix product per image straight into the output.
//!
//! ```text
//! y[b, o, i, j] = bias[o] + Σ_{c, dy, dx} W[o, c, dy, dx] · x[b, c, i·s + dy·d − p, j·s + dx·d − p]
//!        y[b]   = W[O, C·kh·kw] · col(x[b])[C·kh·kw, Ho·Wo]      (+ bias, read into the product)
//! ```
//!
//! Why hand-written: candle 0.11's CPU `conv2d` transposes the input to channels-last on one
//! thread, re-flattens the kernel on every call, scatters the patches column by column, runs one
//! small product per tile of 512 pixels and scatters the result back. With the patch matrix laid
//! out `[C·kh·kw, pixels]`, its rows are shifted copies of input rows (whole-slice copies for
//! stride 1), the kernel is used as stored (`[O, C·kh·kw]` is its memory layout) and the product
//! writes the NCHW output directly, so nothing but the gather and the product remains. The
//! product is the `gemm` crate's (candle's own matmul backend).
//!
//! A 3 × 3 convolution of stride 1 over enough pixels goes to [`super::winograd`] instead
//! (F(2×2, 3×3): 2.25× fewer multiply-adds in its products); the 1 × 1, strided and small ones
//! stay here. Other devices and dtypes use candle's `conv2d`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

pub use super::im2col::Conv2dParams;
use super::im2col::{gather, Dims};
use super::winograd;
use super::{contiguous_f32, gemm_threads, product as kernels_product, View};

/// `conv2d(x, weight) + bias`: `x` `[B, C, H, W]`, `weight` `[O, C, kh, kw]`, `bias` `[O]`.
/// Ungrouped. f32 on the CPU runs this module's kernel; anything else runs candle's.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: Conv2dParams,
) -> Result<Tensor> {
    let on_kernel = x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    if !on_kernel {
        let y = x.conv2d(weight, params.padding, params.stride, params.dilation, 1)?;
        return match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        };
    }
    let op = Conv2dOp(params);
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3_no_bwd(&weight, &b.to_dtype(DType::F32)?.contiguous()?, &op),
        None => x.apply_op2_no_bwd(&weight, &op),
    }
}

struct Conv2dOp(Conv2dParams);

impl Conv2dOp {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        k: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(x.1, k.1)?;
        let xs = contiguous_f32(x.0, x.1, "conv2d")?;
        let ks = contiguous_f32(k.0, k.1, "conv2d")?;
        let bias = match bias {
            Some((s, l)) => {
                let b = contiguous_f32(s, l, "conv2d")?;
                if b.len() != d.o {
                    candle_core::bail!("conv2d: {} bias values for {} channels", b.len(), d.o);
                }
                Some(b)
            }
            None => None,
        };
        let (ho, wo) = d.out(self.0)?;
        let y = forward(xs, ks, bias, d, self.0, (ho, wo));
        Ok((CpuStorage::F32(y), Shape::from((d.b, d.o, ho, wo))))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), Some((s3, l3)))
    }
}

/// The most patch-matrix floats gathered at once (64 MiB); larger images go in bands of rows.
const MAX_COLUMN_FLOATS: usize = 16 << 20;

/// Images with at most this many output pixels in all are convolved in one product (the
/// deepest levels of a UNet have 16–256 pixels per image, too few columns for an efficient
/// product per image).
const JOINT_PIXELS: usize = 2048;

/// `rows` rows of `len` values, row `r` filled with `bias[r % bias.len()]` (zeros without).
fn biased(rows: usize, len: usize, bias: Option<&[f32]>) -> Vec<f32> {
    match bias {
        Some(bias) => {
            let mut y = Vec::with_capacity(rows * len);
            for &b in bias.iter().cycle().take(rows) {
                y.resize(y.len() + len, b);
            }
            y
        }
        None => vec![0f32; rows * len],
    }
}

fn forward(
    x: &[f32],
    k: &[f32],
    bias: Option<&[f32]>,
    d: Dims,
    p: Conv2dParams,
    (ho, wo): (usize, usize),
) -> Vec<f32> {
    if winograd::serves(&d, p, (ho, wo)) {
        return winograd::forward(x, k, bias, d, p, (ho, wo), winograd::BAND_FLOATS);
    }
    let pixels = ho * wo;
    let depth = d.c * d.kh * d.kw;
    let image = |n: usize| &x[n * d.c * d.h * d.w..(n + 1) * d.c * d.h * d.w];
    if d.b > 1 && d.b * pixels <= JOINT_PIXELS {
        // All images side by side: col [depth, B·P], one product into [O, B·P], then each
        // image's columns moved to its place in [B, O, P].
        let row = d.b * pixels;
        let mut col = vec![0f32; depth * row];
        for n in 0..d.b {
            gather(image(n), &mut col, d, p, (0, ho), wo, (row, n * pixels));
        }
        let mut joint = biased(d.o, row, bias);
        product(&mut joint, row, k, &col, (d.o, row, depth), row);
        let mut y = vec![0f32; d.b * d.o * pixels];
        for (o, r) in joint.chunks_exact(row).enumerate() {
            for (n, src) in r.chunks_exact(pixels).enumerate() {
                y[(n * d.o + o) * pixels..(n * d.o + o + 1) * pixels].copy_from_slice(src);
            }
        }
        return y;
    }
    let mut y = biased(d.b * d.o, pixels, bias);
    let pointwise = d.kh == 1 && d.kw == 1 && p.stride == 1 && p.padding == 0;
    let band = (MAX_COLUMN_FLOATS / (depth * wo).max(1)).clamp(1, ho);
    let mut col = if pointwise {
        Vec::new()
    } else {
        vec![0f32; depth * band * wo]
    };
    for n in 0..d.b {
        let out = &mut y[n * d.o * pixels..(n + 1) * d.o * pixels];
        if pointwise {
            // A 1×1 convolution is the product itself: W[O, C] · x[C, H·W].
            product(out, pixels, k, image(n), (d.o, pixels, depth), pixels);
            continue;
        }
        for row0 in (0..ho).step_by(band) {
            let rows = band.min(ho - row0);
            let cols = rows * wo;
            gather(
                image(n),
                &mut col[..depth * cols],
                d,
                p,
                (row0, rows),
                wo,
                (cols, 0),
            );
            product(
                &mut out[row0 * wo..],
                pixels,
                k,
                &col,
                (d.o, cols, depth),
                cols,
            );
        }
    }
    y
}

/// `dst[m, n] += lhs[m, k] · rhs[k, n]`, row-major, `dst`'s rows `dst_stride` apart (the
/// bias, or zeros, is already in `dst`).
fn product(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: &[f32],
    rhs: &[f32],
    (m, n, k): (usize, usize, usize),
    rhs_stride: usize,
) {
    assert!(dst.len() >= (m - 1) * dst_stride + n && lhs.len() >= m * k);
    assert!(rhs.len() >= (k - 1) * rhs_stride + n);
    let lhs = View::rows(lhs.as_ptr(), k);
    let rhs = View::rows(rhs.as_ptr(), rhs_stride);
    // SAFETY: the asserts above keep every index the product touches inside the slices.
    unsafe {
        kernels_product(
            dst.as_mut_ptr(),
            dst_stride,
            true,
            lhs,
            rhs,
            (m, n, k),
            1.0,
            gemm_threads(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{max_abs, max_abs_diff};
    use candle_core::Device;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn check(b: usize, c: usize, hw: (usize, usize), o: usize, k: usize, p: Conv2dParams) {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(values(b * c * hw.0 * hw.1, 1), (b, c, hw.0, hw.1), &dev).unwrap();
        let w = Tensor::from_vec(values(o * c * k * k, 2), (o, c, k, k), &dev).unwrap();
        let bias = Tensor::from_vec(values(o, 3), o, &dev).unwrap();
        let want = x
            .conv2d(&w, p.padding, p.stride, p.dilation, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        let got = conv2d(&x, &w, Some(&bias), p).unwrap();
        assert_eq!(got.dims(), want.dims(), "{p:?}");
        let err = max_abs_diff(&got, &want);
        let scale = max_abs(&want);
        assert!(err <= 1e-5 * scale, "{p:?}: {err} against {scale}");
        let plain = conv2d(&x, &w, None, p).unwrap();
        let with_bias = plain
            .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        let diff = max_abs_diff(&got, &with_bias);
        assert!(diff <= 1e-6 * scale, "{p:?}: bias {diff}");
    }

    #[test]
    fn matches_candles_conv2d() {
        let p = |stride, padding, dilation| Conv2dParams {
            stride,
            padding,
            dilation,
        };
        check(2, 5, (9, 7), 6, 3, p(1, 1, 1));
        check(1, 3, (8, 8), 4, 3, p(2, 1, 1));
        check(3, 4, (7, 9), 5, 3, p(2, 0, 1));
        check(2, 6, (10, 11), 3, 3, p(1, 2, 2));
        check(2, 8, (5, 6), 7, 1, p(1, 0, 1));
        check(1, 4, (6, 6), 2, 1, p(2, 1, 1));
        check(1, 2, (3, 3), 2, 3, p(1, 0, 1));
        // Larger images, one product per image (the joint product is for small ones).
        check(2, 3, (40, 36), 4, 3, p(1, 1, 1));
        check(2, 5, (40, 36), 4, 1, p(1, 0, 1));
        const { assert!(2 * 40 * 36 > JOINT_PIXELS) };
    }

    #[test]
    fn large_images_go_in_bands() {
        // 300 channels × 9 taps × 81 columns × 700 rows passes MAX_COLUMN_FLOATS, so the rows
        // are gathered in bands.
        let (c, h, w) = (300, 700, 81);
        assert!(c * 9 * h * w > MAX_COLUMN_FLOATS);
        check(
            1,
            c,
            (h, w),
            2,
            3,
            Conv2dParams {
                padding: 1,
                ..Default::default()
            },
        );
    }
}
