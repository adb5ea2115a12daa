//! A 3×3 convolution for channels-last images, as an explicit patch gather and one matrix
//! product: the toy U-Net's convolutions.
//!
//! ```text
//! y[b, i, j, :] = Σ_{dy, dx ∈ {−1, 0, 1}} W_{dy,dx} · x[b, i+dy, j+dx, :]   (zero padding)
//!               = im2col(x)[b, i, j, :] · Wᵀ,   im2col(x): [B, H, W, 9·C]
//! ```
//!
//! Why hand-written: on this CPU candle's `conv2d` (NCHW im2col, and a direct-loop
//! `conv_transpose2d` for the input gradient) measured 440 ms forward + backward for a
//! 32-channel 32×32 layer at batch 32. Gathering patches in channels-last layout copies whole
//! channel rows, and the product is one large matrix multiply whose backward is two more, so
//! the same layer measured 140 ms. The gather [`Im2Col`] and its adjoint, the scatter-add
//! [`Col2Im`], are each other's backward, so autograd differentiates the convolution exactly.
//! On other devices the convolution falls back to candle's `conv2d`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use candle_nn::Linear;

use crate::kernels::contiguous_f32;

/// Gathers the 3×3 neighbourhood of every pixel: `[B, H, W, C] → [B, H, W, 9·C]`, tap-major
/// (`(dy + 1)·3 + (dx + 1)` selects the block of `C`), zero outside the image.
#[derive(Debug, Clone, Copy)]
pub struct Im2Col;

/// The adjoint of [`Im2Col`]: scatter-adds `[B, H, W, 9·C]` back to `[B, H, W, C]`.
#[derive(Debug, Clone, Copy)]
pub struct Col2Im;

/// The in-image neighbours of pixel `(i, j)`: `(tap, source pixel index)`.
fn neighbours(i: usize, j: usize, h: usize, w: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..9).filter_map(move |tap| {
        let si = (i + tap / 3).checked_sub(1)?;
        let sj = (j + tap % 3).checked_sub(1)?;
        (si < h && sj < w).then_some((tap, si * w + sj))
    })
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = layout.shape().dims4()?;
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; b * h * w * 9 * c];
        for n in 0..b {
            let image = &x[n * h * w * c..(n + 1) * h * w * c];
            for i in 0..h {
                for j in 0..w {
                    let row = ((n * h + i) * w + j) * 9 * c;
                    for (tap, src) in neighbours(i, j, h, w) {
                        out[row + tap * c..row + (tap + 1) * c]
                            .copy_from_slice(&image[src * c..(src + 1) * c]);
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, 9 * c))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Col2Im)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, h, w, c9) = layout.shape().dims4()?;
        if c9 % 9 != 0 {
            candle_core::bail!("col2im3x3: last dimension {c9} is not 9·C");
        }
        let c = c9 / 9;
        let cols = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; b * h * w * c];
        for n in 0..b {
            let image = &mut out[n * h * w * c..(n + 1) * h * w * c];
            for i in 0..h {
                for j in 0..w {
                    let row = ((n * h + i) * w + j) * 9 * c;
                    for (tap, dst) in neighbours(i, j, h, w) {
                        let src = &cols[row + tap * c..row + (tap + 1) * c];
                        for (o, s) in image[dst * c..(dst + 1) * c].iter_mut().zip(src) {
                            *o += s;
                        }
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, c))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2Col)?))
    }
}

/// A 3×3, stride-1, zero-padded convolution of channels-last `x` (`[B, H, W, C]`) by `layer`,
/// a linear map from `9·C` (tap-major, then input channel) to the output channels.
pub fn conv3x3(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let c = x.dim(3)?;
    let weight = layer.weight();
    if weight.dim(1)? != 9 * c {
        candle_core::bail!(
            "conv3x3: weight {:?} does not take 9×{c} inputs",
            weight.dims()
        );
    }
    if x.device().is_cpu() {
        let cols = x.contiguous()?.apply_op1(Im2Col)?;
        return super::nn::rows(layer, &cols);
    }
    conv3x3_candle(layer, x)
}

/// [`conv3x3`] off the CPU ([`Im2Col`] and [`Col2Im`] have CPU kernels only): candle's
/// `conv2d`, which every backend runs. `layer`'s weight is checked by the caller.
fn conv3x3_candle(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let c = x.dim(3)?;
    let weight = layer.weight();
    let o = weight.dim(0)?;
    // [O, 9C] (tap-major) → [O, C, 3, 3] for candle's NCHW convolution.
    let kernel = weight.reshape((o, 3, 3, c))?.permute((0, 3, 1, 2))?;
    let y = x
        .permute((0, 3, 1, 2))?
        .conv2d(&kernel.contiguous()?, 1, 1, 1, 1)?
        .permute((0, 2, 3, 1))?;
    match layer.bias() {
        Some(bias) => y.broadcast_add(bias),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::{Device, Var};
    use steerdiff_guidance::rng::{Domain, StreamKey};

    fn normals(seed: u64, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v = StreamKey {
            seed,
            lineage: 0,
            step: 0,
            domain: Domain::Init,
        }
        .normals(n);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_candles_convolution() {
        let x = normals(1, &[2, 5, 6, 4]);
        let kernel = normals(2, &[7, 4, 3, 3]); // [O, C, kh, kw]
        let bias = normals(3, &[7]);
        let reference = x
            .permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(&kernel, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, 7, 1, 1)).unwrap())
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        let weight = kernel
            .permute((0, 2, 3, 1))
            .unwrap()
            .reshape((7, 36))
            .unwrap();
        let y = conv3x3(&Linear::new(weight, Some(bias)), &x).unwrap();
        assert!(max_abs_diff(&y, &reference) < 1e-4);
    }

    /// The path a GPU tensor takes, forced on the CPU: the same convolution and input gradient.
    #[test]
    fn the_device_fallback_equals_the_cpu_gather() {
        let x = normals(7, &[2, 5, 6, 4]);
        let weight = normals(8, &[7, 36]);
        let layer = Linear::new(weight, Some(normals(9, &[7])));
        let run = |f: fn(&Linear, &Tensor) -> Result<Tensor>| {
            let v = Var::from_tensor(&x).unwrap();
            let y = f(&layer, v.as_tensor()).unwrap();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            (y, g.get(v.as_tensor()).unwrap().clone())
        };
        let (ya, ga) = run(conv3x3);
        let (yb, gb) = run(conv3x3_candle);
        let (dy, dg) = (max_abs_diff(&ya, &yb), max_abs_diff(&ga, &gb));
        assert!(dy < 1e-4, "value differs by {dy}");
        assert!(dg < 1e-3, "gradient differs by {dg}");
    }

    #[test]
    fn the_gather_and_the_scatter_are_adjoint_so_the_input_gradient_is_exact() {
        // ⟨im2col(x), g⟩ = ⟨x, col2im(g)⟩ for all x, g.
        let x = normals(4, &[2, 4, 5, 3]);
        let g = normals(5, &[2, 4, 5, 27]);
        let lhs = (x.apply_op1(Im2Col).unwrap() * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let rhs = (&x * g.apply_op1(Col2Im).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        // And autograd through the convolution equals candle's conv2d gradient.
        let xv = Var::from_tensor(&x).unwrap();
        let kernel = normals(6, &[2, 3, 3, 3]);
        let weight = kernel
            .permute((0, 2, 3, 1))
            .unwrap()
            .reshape((2, 27))
            .unwrap();
        let ours = conv3x3(&Linear::new(weight, None), xv.as_tensor())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let xr = Var::from_tensor(&x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()).unwrap();
        let theirs = xr
            .as_tensor()
            .conv2d(&kernel, 1, 1, 1, 1)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let a = ours.get(xv.as_tensor()).unwrap();
        let b = theirs
            .get(xr.as_tensor())
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        assert!(max_abs_diff(a, &b) < 1e-3);
    }
}
