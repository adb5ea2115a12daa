//! A linear layer `y = x Wᵀ + b` for f32 on the CPU, as one matrix product over all leading
//! dimensions with the bias read into it.
//!
//! Why hand-written: candle's `Linear` on a `[B, T, K]` input runs a batched product, one call
//! per batch row with `T` rows each (16 or 64 rows at a UNet's deepest levels, where the
//! product is least efficient), and adds the bias in a second pass over the output. Flattening
//! to `[B·T, K]` gives one product, and the bias is the output's initial value. Other devices
//! and dtypes use candle's `Linear`.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::{contiguous_f32, gemm_threads, product, View};

/// `weight` `[N, K]` and `bias` `[N]` (diffusers' and PyTorch's layout).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from its weight `[N, K]` and optional bias `[N]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias }
    }

    /// A layer from `in_dim` to `out_dim` features, read from `vb` (`weight`, and `bias` when
    /// `bias` is true).
    pub fn load(
        vb: candle_nn::VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Linear> {
        Ok(Linear {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: if bias {
                Some(vb.get(out_dim, "bias")?)
            } else {
                None
            },
        })
    }

    /// `x` `[…, K]` → `[…, N]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let on_kernel = x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && x.rank() >= 1;
        if !on_kernel {
            // Elsewhere: candle's ops, also flattened to one 2-D product (candle's `Linear`
            // would broadcast the weight into a batched product).
            let k = self.weight.dim(1)?;
            let mut dims = x.dims().to_vec();
            let flat = x.reshape((x.elem_count() / k.max(1), k))?;
            let y = flat.matmul(&self.weight.t()?)?;
            let y = match &self.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            };
            *dims.last_mut().expect("rank ≥ 1") = self.weight.dim(0)?;
            return y.reshape(dims);
        }
        let n = self.weight.dim(0)?;
        let bias = match &self.bias {
            Some(b) => b.clone(),
            None => Tensor::zeros(n, DType::F32, x.device())?,
        };
        let mut dims = x.dims().to_vec();
        let y = x
            .contiguous()?
            .apply_op3_no_bwd(&self.weight, &bias, &LinearOp)?;
        *dims.last_mut().expect("rank ≥ 1") = n;
        y.reshape(dims)
    }
}

struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear-flat"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(sx, lx, self.name())?;
        let b = contiguous_f32(sb, lb, self.name())?;
        let (n, k) = lw.shape().dims2()?;
        let CpuStorage::F32(w) = sw else {
            candle_core::bail!("linear: f32 weights only")
        };
        let w = &w[lw.start_offset()..];
        let [ws0, ws1] = lw.stride() else {
            candle_core::bail!("linear: the weight must be 2-D")
        };
        let kx = *lx.shape().dims().last().unwrap_or(&0);
        if kx != k || b.len() != n || w.len() < (n - 1) * ws0 + (k - 1) * ws1 + 1 {
            candle_core::bail!("linear: input {:?} against weight [{n}, {k}]", lx.shape());
        }
        let m = x.len() / k.max(1);
        let mut y = Vec::with_capacity(m * n);
        for _ in 0..m {
            y.extend_from_slice(b);
        }
        if m > 0 && n > 0 && k > 0 {
            // SAFETY: x is m × k, y is m × n, and w's strided n × k extent was checked above.
            unsafe {
                let x = View::rows(x.as_ptr(), k);
                let w = View {
                    ptr: w.as_ptr(),
                    rs: *ws1,
                    cs: *ws0,
                };
                product(
                    y.as_mut_ptr(),
                    n,
                    true,
                    x,
                    w,
                    (m, n, k),
                    1.0,
                    gemm_threads(),
                )
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn matches_candles_linear() {
        let dev = Device::Cpu;
        let vals = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 31 + s) % 17) as f32 / 8.0 - 1.0)
                .collect()
        };
        let x = Tensor::from_vec(vals(2 * 5 * 7, 1), (2, 5, 7), &dev).unwrap();
        let w = Tensor::from_vec(vals(3 * 7, 2), (3, 7), &dev).unwrap();
        let b = Tensor::from_vec(vals(3, 3), 3, &dev).unwrap();
        for bias in [Some(b), None] {
            let want = candle_nn::Linear::new(w.clone(), bias.clone())
                .forward(&x)
                .unwrap();
            let ours = Linear {
                weight: w.clone(),
                bias,
            };
            let got = ours.forward(&x).unwrap();
            assert_eq!(got.dims(), &[2, 5, 3]);
            let err = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(err.to_scalar::<f32>().unwrap() < 1e-5);
            // f64 takes the other devices' path (candle's ops, flattened).
            let ours64 = Linear {
                weight: ours.weight.to_dtype(DType::F64).unwrap(),
                bias: ours.bias.as_ref().map(|b| b.to_dtype(DType::F64).unwrap()),
            };
            let got64 = ours64.forward(&x.to_dtype(DType::F64).unwrap()).unwrap();
            assert_eq!(got64.dims(), &[2, 5, 3]);
            let want64 = candle_nn::Linear::new(ours64.weight.clone(), ours64.bias.clone())
                .forward(&x.to_dtype(DType::F64).unwrap())
                .unwrap();
            let err = (got64 - want64).unwrap().abs().unwrap().max_all().unwrap();
            assert!(err.to_scalar::<f64>().unwrap() < 1e-12);
        }
    }
}
