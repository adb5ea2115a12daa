//! Group normalisation of `[B, C, …]` f32 tensors on the CPU, optionally followed by SiLU, in
//! one pass per group (Wu & He 2018, *Group Normalization*, eq. 1–2):
//!
//! ```text
//! μ_g = mean(x[b, g]),  σ²_g = mean((x[b, g] − μ_g)²)
//! y[b, c, …] = (x[b, c, …] − μ_g) / √(σ²_g + ε) · γ_c + β_c        (c in group g)
//! y ← y · sigmoid(y)                                               (with SiLU)
//! ```
//!
//! Why hand-written: candle's `GroupNorm` is nine tensor ops (each a pass over memory and a
//! fresh buffer) and the SiLU after it two more; every ResNet block of a UNet runs two of them.
//! Statistics are accumulated in f64, as two passes (mean, then squared deviations), like
//! candle's. Other devices and dtypes use candle's `GroupNorm` and `silu`.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, vector_math, MIN_TASK_FLOATS};

/// `GroupNorm(groups, eps)` with per-channel `weight` (γ) and `bias` (β), diffusers' names.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Reads `weight` and `bias` (`[channels]` each) from `vb`.
    pub fn load(
        vb: candle_nn::VarBuilder,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<GroupNorm> {
        if groups == 0 || channels % groups != 0 {
            candle_core::bail!("group norm: {channels} channels do not split into {groups} groups");
        }
        Ok(GroupNorm {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }

    /// The normalised `x` `[B, C, …]`, then SiLU if `silu`.
    pub fn forward(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() >= 3 {
            let op = GroupNormOp {
                groups: self.groups,
                eps: self.eps,
                silu,
            };
            let w = self.weight.to_dtype(DType::F32)?;
            let b = self.bias.to_dtype(DType::F32)?;
            return x.contiguous()?.apply_op3_no_bwd(&w, &b, &op);
        }
        let c = self.weight.dim(0)?;
        let norm = candle_nn::GroupNorm::new(
            self.weight.clone(),
            self.bias.clone(),
            c,
            self.groups,
            self.eps,
        )?;
        let y = norm.forward(x)?;
        if silu {
            candle_nn::ops::silu(&y)
        } else {
            Ok(y)
        }
    }
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "group-norm-silu"
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
        let gamma = contiguous_f32(sw, lw, self.name())?;
        let beta = contiguous_f32(sb, lb, self.name())?;
        let dims = lx.shape().dims();
        let c = dims[1];
        let g = self.groups;
        if g == 0 || c % g != 0 || gamma.len() != c || beta.len() != c {
            candle_core::bail!(
                "group norm: {c} channels, {g} groups, {} weights, {} biases",
                gamma.len(),
                beta.len()
            );
        }
        let plane = dims[2..].iter().product::<usize>();
        let per_group = c / g;
        let mut y = vec![0f32; x.len()];
        if plane > 0 {
            y.par_chunks_mut(per_group * plane)
                .zip(x.par_chunks(per_group * plane))
                .with_min_len(MIN_TASK_FLOATS.div_ceil(per_group * plane))
                .enumerate()
                .for_each(|(i, (yg, xg))| {
                    let group = i % g;
                    let (mean, var) = vector_math::mean_and_variance(xg);
                    let rstd = 1.0 / (var + self.eps).sqrt();
                    for (ch, (yc, xc)) in yg
                        .chunks_exact_mut(plane)
                        .zip(xg.chunks_exact(plane))
                        .enumerate()
                    {
                        let ch = group * per_group + ch;
                        let a = (rstd * gamma[ch] as f64) as f32;
                        let s = (beta[ch] as f64 - mean * rstd * gamma[ch] as f64) as f32;
                        for (o, &v) in yc.iter_mut().zip(xc) {
                            *o = v * a + s;
                        }
                        if self.silu {
                            vector_math::silu_in_place(yc);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_group_norm_and_silu() {
        let dev = Device::Cpu;
        let (b, c, h, w, g) = (2, 12, 5, 7, 4);
        let n = b * c * h * w;
        let vals: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 101) as f32 / 10.0) - 3.0)
            .collect();
        let x = Tensor::from_vec(vals, (b, c, h, w), &dev).unwrap();
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..c).map(|i| i as f32 * 0.05 - 0.3).collect();
        let (gamma, beta) = (
            Tensor::new(gamma, &dev).unwrap(),
            Tensor::new(beta, &dev).unwrap(),
        );
        let candle = candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), c, g, 1e-6).unwrap();
        let ours = GroupNorm {
            weight: gamma,
            bias: beta,
            groups: g,
            eps: 1e-6,
        };
        for silu in [false, true] {
            let mut want = candle.forward(&x).unwrap();
            if silu {
                want = candle_nn::ops::silu(&want).unwrap();
            }
            let got = ours.forward(&x, silu).unwrap();
            let err = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            let err = err.to_scalar::<f32>().unwrap();
            assert!(err < 2e-6, "silu {silu}: {err}");
        }
    }
}
