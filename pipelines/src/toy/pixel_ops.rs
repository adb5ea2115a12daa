//! Per-pixel LayerNorm and SiLU for channels-last activations, each one pass forward and one
//! pass backward on the CPU.
//!
//! Why hand-written: composed from candle's basic ops, a LayerNorm is seven tensor passes
//! forward and about twelve backward, and SiLU four and five, each allocating a full-size
//! buffer. In the toy U-Net these passes over `[B, 32, 32, C]` activations cost more than its
//! convolutions. Here the forward is one [`CustomOp1`] and its backward one [`CustomOp2`] over
//! `(x, ∂L/∂y)`:
//!
//! ```text
//! LayerNorm (no affine) over the last dimension n:  x̂ = (x − μ)/σ,  σ = √(var + ε)
//!   ∂L/∂x = (g − mean(g) − x̂·mean(g·x̂)) / σ
//! SiLU:  y = x·s,  s = 1/(1 + e^(−x))
//!   ∂L/∂x = g·s·(1 + x·(1 − s))
//! ```
//!
//! Second derivatives are not provided (training needs first derivatives only). Other devices
//! use the differentiable compositions of [`super::nn`].

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use crate::kernels::contiguous_f32;

/// The LayerNorm ε.
const EPS: f32 = 1e-6;

fn last_dim(layout: &Layout) -> usize {
    layout.shape().dims().last().copied().unwrap_or(1).max(1)
}

/// Mean and `1/σ` of one row.
fn row_stats(row: &[f32]) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + EPS).sqrt())
}

struct Norm;
struct NormGrad;
struct Silu;
struct SiluGrad;

impl CustomOp1 for Norm {
    fn name(&self) -> &'static str {
        "pixel-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let n = last_dim(layout);
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(n) {
            let (mean, inv) = row_stats(row);
            out.extend(row.iter().map(|v| (v - mean) * inv));
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &NormGrad)?))
    }
}

impl CustomOp2 for NormGrad {
    fn name(&self) -> &'static str {
        "pixel-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, self.name())?;
        let g = contiguous_f32(gs, gl, self.name())?;
        let n = last_dim(xl);
        let mut out = Vec::with_capacity(x.len());
        for (row, grow) in x.chunks_exact(n).zip(g.chunks_exact(n)) {
            let (mean, inv) = row_stats(row);
            let nf = n as f32;
            let gmean = grow.iter().sum::<f32>() / nf;
            let gx = row
                .iter()
                .zip(grow)
                .map(|(v, g)| g * (v - mean) * inv)
                .sum::<f32>()
                / nf;
            out.extend(
                row.iter()
                    .zip(grow)
                    .map(|(v, g)| (g - gmean - (v - mean) * inv * gx) * inv),
            );
        }
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "pixel-silu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let out = x.iter().map(|&v| v * sigmoid(v)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &SiluGrad)?))
    }
}

impl CustomOp2 for SiluGrad {
    fn name(&self) -> &'static str {
        "pixel-silu-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, self.name())?;
        let g = contiguous_f32(gs, gl, self.name())?;
        let out = x
            .iter()
            .zip(g)
            .map(|(&v, &g)| {
                let s = sigmoid(v);
                g * s * (1.0 + v * (1.0 - s))
            })
            .collect();
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// LayerNorm without affine parameters over the last dimension (ε = 1e-6).
pub fn layer_norm(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Norm)
    } else {
        layer_norm_composed(x)
    }
}

/// SiLU `x·sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Silu)
    } else {
        silu_composed(x)
    }
}

/// [`layer_norm`] off the CPU (the custom ops above have CPU kernels only): the same function
/// from candle's differentiable basic ops, which every backend runs.
fn layer_norm_composed(x: &Tensor) -> Result<Tensor> {
    super::nn::layer_norm(x, EPS as f64)
}

/// [`silu`] off the CPU, from candle's basic ops.
fn silu_composed(x: &Tensor) -> Result<Tensor> {
    super::nn::silu(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::{Device, Var};

    /// Value and input gradient of `sum(f(x)·w)` for a fixed weighting `w`.
    fn value_and_grad(f: impl Fn(&Tensor) -> Tensor, x: &Tensor, w: &Tensor) -> (Tensor, Tensor) {
        let v = Var::from_tensor(x).unwrap();
        let y = f(v.as_tensor());
        let g = (&y * w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(v.as_tensor())
            .unwrap()
            .clone();
        (y, g)
    }

    /// The path a GPU tensor takes, forced on the CPU: the same values as the CPU kernels.
    #[test]
    fn the_device_fallback_equals_the_cpu_kernels() {
        let n = 2 * 3 * 4 * 16;
        let normals = |seed| {
            let v = steerdiff_guidance::rng::StreamKey {
                seed,
                lineage: 0,
                step: 0,
                domain: steerdiff_guidance::rng::Domain::Init,
            }
            .normals(n);
            Tensor::from_vec(v, (2, 3, 4, 16), &Device::Cpu).unwrap()
        };
        let x = (normals(11) * 3.0).unwrap();
        let w = normals(12);
        type Pair = (fn(&Tensor) -> Tensor, fn(&Tensor) -> Tensor);
        let pairs: [Pair; 2] = [
            (
                |x| layer_norm(x).unwrap(),
                |x| layer_norm_composed(x).unwrap(),
            ),
            (|x| silu(x).unwrap(), |x| silu_composed(x).unwrap()),
        ];
        for (kernel, fallback) in pairs {
            let (ya, ga) = value_and_grad(kernel, &x, &w);
            let (yb, gb) = value_and_grad(fallback, &x, &w);
            let (dy, dg) = (max_abs_diff(&ya, &yb), max_abs_diff(&ga, &gb));
            assert!(dy < 1e-5, "value differs by {dy}");
            assert!(dg < 1e-5, "gradient differs by {dg}");
        }
    }

    #[test]
    fn one_pass_kernels_equal_the_composed_ops_in_value_and_gradient() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1.0, (3, 4, 5, 12), &dev).unwrap() * 2.0).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 4, 5, 12), &dev).unwrap();
        type Pair = (fn(&Tensor) -> Tensor, fn(&Tensor) -> Tensor);
        let pairs: [Pair; 2] = [
            (
                |x| layer_norm(x).unwrap(),
                |x| super::super::nn::layer_norm(x, 1e-6).unwrap(),
            ),
            (|x| silu(x).unwrap(), |x| super::super::nn::silu(x).unwrap()),
        ];
        for (ours, composed) in pairs {
            let (ya, ga) = value_and_grad(ours, &x, &w);
            let (yb, gb) = value_and_grad(composed, &x, &w);
            assert!(max_abs_diff(&ya, &yb) < 1e-4);
            assert!(max_abs_diff(&ga, &gb) < 1e-3);
        }
    }
}
