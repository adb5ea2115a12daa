//! The decoder half of diffusers' `AutoencoderKL` (Rombach et al. 2022, *LDM*, appendix G),
//! written over [`crate::kernels`] like the UNet:
//!
//! ```text
//! z → post_quant_conv? → conv_in → ResNet → Attention → ResNet
//!   → (ResNet × (layers + 1) → Upsample?) per block, widest first → GroupNorm → SiLU → conv_out
//! ```
//!
//! The mid-block attention is single-headed over the pixels, `softmax(q kᵀ/√C) v`, with a
//! group norm before it and the input added after (diffusers' `Attention` with
//! `residual_connection`). Its projections are read under diffusers' names (`to_q`…) or the
//! legacy ones (`query`, `key`, `value`, `proj_attn`), as `[C, C]` or `[C, C, 1, 1]` weights.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

use super::unet_blocks::{Conv2d, NormSpec, ResnetBlock};
use crate::kernels::{self, Conv2dParams, GroupNorm, Linear};

/// diffusers' VAE uses ε = 1e-6 in every norm.
const EPS: f64 = 1e-6;

#[derive(Debug)]
struct MidAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl MidAttention {
    fn load(vb: VarBuilder, channels: usize, groups: usize) -> Result<MidAttention> {
        let names = if vb.contains_tensor("to_q.weight") {
            ["to_q", "to_k", "to_v", "to_out.0"]
        } else {
            ["query", "key", "value", "proj_attn"]
        };
        let linear = |name: &str| -> Result<Linear> {
            let vb = vb.pp(name);
            let weight = match vb.get((channels, channels), "weight") {
                Ok(w) => w,
                Err(_) => vb
                    .get((channels, channels, 1, 1), "weight")?
                    .reshape((channels, channels))?,
            };
            Ok(Linear::new(weight, Some(vb.get(channels, "bias")?)))
        };
        Ok(MidAttention {
            norm: GroupNorm::load(vb.pp("group_norm"), groups, channels, EPS)?,
            q: linear(names[0])?,
            k: linear(names[1])?,
            v: linear(names[2])?,
            out: linear(names[3])?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self
            .norm
            .forward(x, false)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let (q, k, v) = (
            self.q.forward(&tokens)?,
            self.k.forward(&tokens)?,
            self.v.forward(&tokens)?,
        );
        let o = kernels::attention(&q, &k, &v, 1, 1.0 / (c as f64).sqrt())?;
        let o = self
            .out
            .forward(&o)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        o + x
    }
}

/// The VAE's decoder (with `post_quant_conv` when the VAE has one).
#[derive(Debug)]
pub struct VaeDecoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: (ResnetBlock, MidAttention, ResnetBlock),
    up: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    /// Reads `post_quant_conv.*` and `decoder.*` from `vb` (a diffusers `vae/` folder's names).
    pub fn load(vb: VarBuilder, config: &AutoEncoderKLConfig) -> Result<VaeDecoder> {
        let channels = &config.block_out_channels;
        let (Some(&widest), Some(&first)) = (channels.last(), channels.first()) else {
            candle_core::bail!("the VAE config has no blocks")
        };
        let latent = config.latent_channels;
        let groups = config.norm_num_groups;
        let norm = NormSpec { groups, eps: EPS };
        let post_quant_conv = if config.use_post_quant_conv {
            let p = Conv2dParams::default();
            Some(Conv2d::load(
                vb.pp("post_quant_conv"),
                latent,
                latent,
                1,
                p,
            )?)
        } else {
            None
        };
        let vb = vb.pp("decoder");
        let resnet =
            |vb: VarBuilder, c_in, c_out| ResnetBlock::load(vb, c_in, c_out, None, norm, 1.0);
        let mid = vb.pp("mid_block");
        let mid = (
            resnet(mid.pp("resnets.0"), widest, widest)?,
            MidAttention::load(mid.pp("attentions.0"), widest, groups)?,
            resnet(mid.pp("resnets.1"), widest, widest)?,
        );
        let mut up = Vec::with_capacity(channels.len());
        let mut c_in = widest;
        for (i, &c_out) in channels.iter().rev().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            let resnets = (0..config.layers_per_block + 1)
                .map(|j| {
                    resnet(
                        vb.pp("resnets").pp(j),
                        if j == 0 { c_in } else { c_out },
                        c_out,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let upsample = if i + 1 < channels.len() {
                Some(Conv2d::same3(vb.pp("upsamplers.0.conv"), c_out, c_out)?)
            } else {
                None
            };
            up.push((resnets, upsample));
            c_in = c_out;
        }
        Ok(VaeDecoder {
            post_quant_conv,
            conv_in: Conv2d::same3(vb.pp("conv_in"), latent, widest)?,
            mid,
            up,
            norm_out: GroupNorm::load(vb.pp("conv_norm_out"), groups, first, EPS)?,
            conv_out: Conv2d::same3(vb.pp("conv_out"), first, 3)?,
        })
    }

    /// Images in about `[-1, 1]` (`[B, 3, H, W]`) from raw latents `z` (`[B, C, h, w]`).
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z)?,
            None => z.clone(),
        };
        let x = self.conv_in.forward(&z)?;
        let x = self.mid.0.forward(&x, None)?;
        let x = self.mid.1.forward(&x)?;
        let mut x = self.mid.2.forward(&x, None)?;
        for (resnets, upsample) in &self.up {
            for r in resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(conv) = upsample {
                let (_, _, h, w) = x.dims4()?;
                x = conv.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&x, true)?)
    }
}
