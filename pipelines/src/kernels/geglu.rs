//! GEGLU, the feed-forward gate of SD's transformer blocks (Shazeer 2020, *GLU Variants Improve
//! Transformer*, eq. 6; diffusers' `GEGLU`): `[a | g] = h`, `y = a ⊙ GELU(g)` with the exact
//! (erf) GELU, in one pass for f32 on the CPU.
//!
//! Why hand-written: with candle ops the two halves are strided views, so the GELU and the
//! product each make a pass over strided memory into a fresh buffer, and candle's `erf` is
//! scalar; here each row is read once and the `erf` vectorises. Other devices and dtypes use
//! candle's `gelu_erf` and product.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{contiguous_f32, vector_math, MIN_TASK_FLOATS};

/// `h` `[…, 2·N]` → `h[…, :N] ⊙ GELU(h[…, N:])`, `[…, N]`.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let width = h.dim(D::Minus1)?;
    if width % 2 != 0 {
        candle_core::bail!("geglu: the last dimension ({width}) must be even");
    }
    if h.device().is_cpu() && h.dtype() == DType::F32 {
        return h.contiguous()?.apply_op1_no_bwd(&Geglu);
    }
    let n = width / 2;
    h.narrow(D::Minus1, 0, n)? * h.narrow(D::Minus1, n, n)?.gelu_erf()?
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = contiguous_f32(storage, layout, self.name())?;
        let mut dims = layout.shape().dims().to_vec();
        let width = *dims.last().unwrap_or(&0);
        let n = width / 2;
        let mut y = vec![0f32; h.len() / 2];
        if n > 0 {
            y.par_chunks_mut(n)
                .zip(h.par_chunks(width))
                .with_min_len(MIN_TASK_FLOATS.div_ceil(width))
                .for_each(|(out, row)| vector_math::geglu_row(row, out));
        }
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_gelu_erf_product() {
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..2 * 3 * 10)
            .map(|i| (i as f32 * 0.37).sin() * 4.0)
            .collect();
        let h = Tensor::from_vec(vals, (2, 3, 10), &dev).unwrap();
        let want =
            (h.narrow(2, 0, 5).unwrap() * h.narrow(2, 5, 5).unwrap().gelu_erf().unwrap()).unwrap();
        let got = geglu(&h).unwrap();
        assert_eq!(got.dims(), &[2, 3, 5]);
        let err = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(err.to_scalar::<f32>().unwrap() < 2e-6);
    }
}
