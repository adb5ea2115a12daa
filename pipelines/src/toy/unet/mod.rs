//! A small class-conditional U-Net (Ronneberger et al. 2015, in the form of Ho et al. 2020,
//! "Denoising Diffusion Probabilistic Models", appendix B) for 32×32 images, predicting flow
//! velocity.
//!
//! ```text
//! stem: conv 3 → c0 at 32×32
//! down: level ℓ = 0 … L−1: ResBlock(→ c_ℓ), keep a skip, then 2×2 average pooling (ℓ < L−1)
//! mid:  self-attention over the (32 / 2^(L−1))² pixels of the coarsest level, ResBlock
//! up:   level ℓ = L−1 … 0: ResBlock([h, skip_ℓ] → c_ℓ), then nearest ×2 upsampling (ℓ > 0)
//! out:  LayerNorm, SiLU, conv c0 → 3
//! ResBlock(x, e): h = conv₁(SiLU(LN(x))); h = conv₂(SiLU(LN(h)·(1 + s) + b)) with
//!                 (s, b) = W·SiLU(e); out = skip(x) + h  (conv₁, conv₂ without bias: the
//!                 LayerNorm after conv₁ removes one, and the block's output needs none)
//! e = MLP(sinusoid(1000·t)) + table[y],  y ∈ 0..=K, row K = the null class (CFG)
//! ```
//!
//! The network works channels-last (`[B, H, W, C]`), so normalisation is a LayerNorm over the
//! channels of each pixel (as in ConvNeXt), every convolution is [`super::conv::conv3x3`], one
//! gathered matrix product, and LayerNorm and SiLU are the one-pass kernels of
//! [`super::pixel_ops`]. The modulation layers, each block's second convolution, the
//! attention output and the output convolution start at zero, so every block starts as its
//! skip path and the untrained network predicts 0. Why a U-Net beside the [`super::Dit`]: on the
//! toy data the patch-4 DiT learned colour and placement but not outlines within this CPU's
//! budget (README, "The embedded toy model"); convolutions carry the locality prior that
//! outlines need.
//!
//! This file's forward is the one training differentiates. Inference on the CPU runs the same
//! network through [`UnetInference`] (`inference/`): one image at a time on plain buffers,
//! equal within f32 rounding and about twice as fast.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::conv::conv3x3;
use super::dit::timestep_features;
use super::nn::{rows, self_attention, Ops};
use super::pixel_ops::{layer_norm, silu};

mod inference;
pub use inference::{UnetInference, Workspace};

/// Shape of a [`Unet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetConfig {
    /// Image side (32); divisible by `2^(levels − 1)`.
    pub image_size: usize,
    /// Image channels (3).
    pub in_channels: usize,
    /// Channels per resolution level, finest first (`[32, 64, 128]`: 32², 16², 8²).
    pub channels: Vec<usize>,
    /// Attention heads at the coarsest level (its channels must be divisible by it).
    pub num_heads: usize,
    /// Number of real classes `K`; the table has `K + 1` rows, row `K` being the null class.
    pub num_classes: usize,
    /// Width of the sinusoidal timestep features.
    pub frequency_size: usize,
    /// Width of the conditioning embedding `e`.
    pub embed_size: usize,
}

impl UnetConfig {
    /// The main toy U-Net: channels 32 / 64 / 128 at 32² / 16² / 8², 4 heads.
    pub fn toy() -> Self {
        UnetConfig {
            image_size: 32,
            in_channels: 3,
            channels: vec![32, 64, 128],
            num_heads: 4,
            num_classes: super::data::NUM_CLASSES,
            frequency_size: 128,
            embed_size: 128,
        }
    }

    /// Side of the coarsest level (8 for three levels at 32×32).
    pub fn bottleneck_side(&self) -> usize {
        self.image_size >> self.channels.len().saturating_sub(1)
    }

    /// Channels of the coarsest level (the width of [`Unet::forward_tapped`]'s features).
    pub fn bottleneck_channels(&self) -> usize {
        *self.channels.last().unwrap_or(&0)
    }
}

/// Whether a parameter of a [`Unet`] starts at zero (see the module docs).
pub fn zero_init(name: &str) -> bool {
    name.contains("modulation")
        || name.contains("conv2")
        || name.contains("attn.proj")
        || name.starts_with("out.conv")
}

#[derive(Debug, Clone)]
struct ResBlock {
    conv1: Linear,
    modulation: Linear,
    conv2: Linear,
    skip: Option<Linear>,
}

impl ResBlock {
    fn new(cin: usize, cout: usize, embed: usize, vb: VarBuilder) -> Result<Self> {
        Ok(ResBlock {
            conv1: candle_nn::linear_no_bias(9 * cin, cout, vb.pp("conv1"))?,
            modulation: candle_nn::linear(embed, 2 * cout, vb.pp("modulation"))?,
            conv2: candle_nn::linear_no_bias(9 * cout, cout, vb.pp("conv2"))?,
            skip: if cin == cout {
                None
            } else {
                Some(candle_nn::linear(cin, cout, vb.pp("skip"))?)
            },
        })
    }

    /// `x`: `[B, H, W, C]`; `e`: `SiLU(embedding)`, `[B, E]`.
    fn forward(&self, x: &Tensor, e: &Tensor) -> Result<Tensor> {
        let h = conv3x3(&self.conv1, &silu(&layer_norm(x)?)?)?;
        let m = self.modulation.forward(e)?.unsqueeze(1)?.unsqueeze(1)?;
        let m = m.chunk(2, D::Minus1)?;
        let h = layer_norm(&h)?
            .broadcast_mul(&(&m[0] + 1.0)?)?
            .broadcast_add(&m[1])?;
        let h = conv3x3(&self.conv2, &silu(&h)?)?;
        let skip = match &self.skip {
            Some(s) => rows(s, x)?,
            None => x.clone(),
        };
        skip + h
    }
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn forward(&self, x: &Tensor, ops: &Ops) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let tokens = x.reshape((b, h * w, c))?;
        let att = self_attention(
            &self.qkv,
            &self.proj,
            &layer_norm(&tokens)?,
            self.heads,
            ops,
        )?;
        (tokens + att)?.reshape((b, h, w, c))
    }
}

/// 2×2 average pooling of `[B, H, W, C]`.
fn downsample(x: &Tensor) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h / 2, 2, w / 2, 2, c))?.mean(4)?.mean(2)
}

/// Nearest-neighbour ×2 upsampling of `[B, H, W, C]`.
fn upsample(x: &Tensor) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h, 1, w, 1, c))?
        .broadcast_as((b, h, 2, w, 2, c))?
        .contiguous()?
        .reshape((b, 2 * h, 2 * w, c))
}

/// The class-conditional U-Net, predicting flow velocity `ε − x0`.
#[derive(Debug, Clone)]
pub struct Unet {
    /// Its shape.
    pub config: UnetConfig,
    t_fc1: Linear,
    t_fc2: Linear,
    y_table: Embedding,
    stem: Linear,
    down: Vec<ResBlock>,
    attn: Attention,
    mid: ResBlock,
    up: Vec<ResBlock>,
    out: Linear,
    ops: Ops,
}

impl Unet {
    /// Builds the network, taking its weights from `vb` (a `VarMap` for training, a
    /// safetensors file for inference).
    pub fn new(config: &UnetConfig, vb: VarBuilder) -> Result<Self> {
        let c = config;
        let levels = c.channels.len();
        let coarsest = c.bottleneck_channels();
        if levels == 0
            || c.channels.contains(&0)
            || c.image_size % (1 << (levels - 1)) != 0
            || c.num_heads == 0
            || coarsest % c.num_heads != 0
            || c.frequency_size % 2 != 0
        {
            candle_core::bail!(
                "invalid U-Net config {c:?}: need channels at every level, the image side \
                 divisible by 2^(levels − 1), the coarsest channels divisible by the heads and \
                 an even frequency size"
            );
        }
        let e = c.embed_size;
        let mut down = Vec::with_capacity(levels);
        let mut prev = c.channels[0];
        for (l, &ch) in c.channels.iter().enumerate() {
            down.push(ResBlock::new(prev, ch, e, vb.pp(format!("down.{l}")))?);
            prev = ch;
        }
        let mut up = Vec::with_capacity(levels);
        for l in (0..levels).rev() {
            let ch = c.channels[l];
            up.push(ResBlock::new(prev + ch, ch, e, vb.pp(format!("up.{l}")))?);
            prev = ch;
        }
        Ok(Unet {
            config: c.clone(),
            t_fc1: candle_nn::linear(c.frequency_size, e, vb.pp("t_embed.fc1"))?,
            t_fc2: candle_nn::linear(e, e, vb.pp("t_embed.fc2"))?,
            y_table: candle_nn::embedding(c.num_classes + 1, e, vb.pp("y_table"))?,
            stem: candle_nn::linear(9 * c.in_channels, c.channels[0], vb.pp("stem"))?,
            down,
            attn: Attention {
                qkv: candle_nn::linear(coarsest, 3 * coarsest, vb.pp("mid.attn.qkv"))?,
                proj: candle_nn::linear(coarsest, coarsest, vb.pp("mid.attn.proj"))?,
                heads: c.num_heads,
            },
            mid: ResBlock::new(coarsest, coarsest, e, vb.pp("mid.block"))?,
            up,
            out: candle_nn::linear(9 * c.channels[0], c.in_channels, vb.pp("out.conv"))?,
            ops: Ops::default(),
        })
    }

    /// Uses candle's fused LayerNorm and softmax kernels (inference only: they record no
    /// gradient) when `fused`, else the differentiable compositions (the default).
    pub fn set_fused_ops(&mut self, fused: bool) {
        self.ops.fused = fused;
    }

    /// Velocity for images `x` (`[B, C, H, W]`, data scale `[-1, 1]`), timesteps `t` (`[B]`,
    /// `σ·1000`) and labels `y` (`[B]` u32, `K` = null).
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Result<Tensor> {
        Ok(self.forward_tapped(x, t, y, false)?.0)
    }

    /// [`Unet::forward`], also returning, when `tap`, the coarsest level's features after the
    /// middle stage as tokens `[B, side², C]` (row-major): what representation alignment
    /// ([`super::repa`]) trains.
    pub fn forward_tapped(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        tap: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let c = &self.config;
        let temb = timestep_features(t, c.frequency_size)?;
        let temb = self.t_fc2.forward(&silu(&self.t_fc1.forward(&temb)?)?)?;
        let e = silu(&(temb + self.y_table.forward(y)?)?)?;
        let mut h = conv3x3(&self.stem, &x.permute((0, 2, 3, 1))?)?;
        let levels = self.down.len();
        let mut skips = Vec::with_capacity(levels);
        for (l, block) in self.down.iter().enumerate() {
            h = block.forward(&h, &e)?;
            skips.push(h.clone());
            if l + 1 < levels {
                h = downsample(&h)?;
            }
        }
        h = self.mid.forward(&self.attn.forward(&h, &self.ops)?, &e)?;
        let tapped = if tap {
            let (b, hh, ww, ch) = h.dims4()?;
            Some(h.reshape((b, hh * ww, ch))?)
        } else {
            None
        };
        for (i, block) in self.up.iter().enumerate() {
            let l = levels - 1 - i;
            h = block.forward(&Tensor::cat(&[&h, &skips[l]], 3)?, &e)?;
            if l > 0 {
                h = upsample(&h)?;
            }
        }
        let out = conv3x3(&self.out, &silu(&layer_norm(&h)?)?)?;
        out.permute((0, 3, 1, 2))?.contiguous().map(|o| (o, tapped))
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        let c = &self.config;
        let lin = |i: usize, o: usize| i * o + o;
        let e = c.embed_size;
        let block = |i: usize, o: usize| {
            9 * i * o + lin(e, 2 * o) + 9 * o * o + if i == o { 0 } else { lin(i, o) }
        };
        let mut n = lin(c.frequency_size, e) + lin(e, e) + (c.num_classes + 1) * e;
        n += lin(9 * c.in_channels, c.channels[0]) + lin(9 * c.channels[0], c.in_channels);
        let mut prev = c.channels[0];
        for &ch in &c.channels {
            n += block(prev, ch);
            prev = ch;
        }
        let k = c.bottleneck_channels();
        n += lin(k, 3 * k) + lin(k, k) + block(k, k);
        for &ch in c.channels.iter().rev() {
            n += block(prev + ch, ch);
            prev = ch;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn fused_inference_ops_match_the_differentiable_ones_and_the_parameter_count_is_exact() {
        let mut c = UnetConfig::toy();
        c.channels = vec![8, 16];
        c.num_heads = 2;
        c.embed_size = 16;
        c.frequency_size = 16;
        let vm = VarMap::new();
        let mut net =
            Unet::new(&c, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        // Every weight random (not the zero initialisation), so every path is exercised.
        super::super::nn::init_seeded(&vm, 5, |_| false).unwrap();
        let counted: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(counted, net.num_parameters());
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
        let t = Tensor::new(&[500f32, 20.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[3u32, 10], &Device::Cpu).unwrap();
        let a = net.forward(&x, &t, &y).unwrap();
        assert_eq!(a.dims(), &[2, 3, 32, 32]);
        net.set_fused_ops(true);
        let b = net.forward(&x, &t, &y).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-3, "{d}");
    }
}
