//! diffusers' `Transformer2DModel` as the UNet uses it (Rombach et al. 2022, *LDM*, §3.3: a
//! spatial transformer over the pixels of a feature map), with its `BasicTransformerBlock`s:
//!
//! ```text
//! h = proj_in(norm(x))                       (1 × 1 conv, or linear after flattening)
//! per block:  h += attn1(norm1(h))           (self-attention over the H·W pixels)
//!             h += attn2(norm2(h), context)  (cross-attention to the text)
//!             h += ff(norm3(h)),  ff(u) = W₂ · (a ⊙ GELU(g)),  [a, g] = W₁ u   (GEGLU)
//! y = proj_out(h) + x
//! ```

use candle_core::{Result, Tensor};
use candle_nn::{LayerNorm, Module, VarBuilder};

use super::attention::Attention;
use super::resnet::NormSpec;
use super::Conv2d;
use crate::kernels::{self, Conv2dParams, GroupNorm, Linear};

/// The shape of a spatial transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransformerSpec {
    /// Attention heads (diffusers' `attention_head_dim` config, which SD uses as the count).
    pub heads: usize,
    /// Transformer blocks per spatial transformer (`transformer_layers_per_block`).
    pub depth: usize,
    /// Channels of the text context.
    pub context_dim: usize,
    /// Linear `proj_in`/`proj_out` (SD 2.x, SDXL) instead of 1 × 1 convolutions.
    pub linear_projection: bool,
}

#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

#[derive(Debug)]
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn load(vb: VarBuilder, dim: usize) -> Result<FeedForward> {
        let inner = 4 * dim;
        Ok(FeedForward {
            proj_in: Linear::load(vb.pp("net.0.proj"), dim, 2 * inner, true)?,
            proj_out: Linear::load(vb.pp("net.2"), inner, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj_out
            .forward(&kernels::geglu(&self.proj_in.forward(x)?)?)
    }
}

#[derive(Debug)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl TransformerBlock {
    fn load(vb: VarBuilder, dim: usize, spec: TransformerSpec) -> Result<TransformerBlock> {
        let head_dim = dim / spec.heads;
        Ok(TransformerBlock {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::load(vb.pp("attn1"), dim, dim, spec.heads, head_dim)?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::load(vb.pp("attn2"), dim, spec.context_dim, spec.heads, head_dim)?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::load(vb.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            + x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }
}

/// A spatial transformer over `[B, C, H, W]` feature maps.
#[derive(Debug)]
pub(crate) struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

impl SpatialTransformer {
    pub(crate) fn load(
        vb: VarBuilder,
        channels: usize,
        norm: NormSpec,
        spec: TransformerSpec,
    ) -> Result<SpatialTransformer> {
        if spec.heads == 0 || channels % spec.heads != 0 {
            candle_core::bail!("{channels} channels do not split into {} heads", spec.heads);
        }
        let projection = |name: &str| -> Result<Projection> {
            Ok(if spec.linear_projection {
                Projection::Linear(Linear::load(vb.pp(name), channels, channels, true)?)
            } else {
                let p = Conv2dParams::default();
                Projection::Conv(Conv2d::load(vb.pp(name), channels, channels, 1, p)?)
            })
        };
        let blocks = (0..spec.depth)
            .map(|i| TransformerBlock::load(vb.pp("transformer_blocks").pp(i), channels, spec))
            .collect::<Result<_>>()?;
        Ok(SpatialTransformer {
            // diffusers' Transformer2DModel normalises with ε = 1e-6 whatever the UNet's ε.
            norm: GroupNorm::load(vb.pp("norm"), norm.groups, channels, 1e-6)?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let to_tokens = |t: &Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let y = self.norm.forward(x, false)?;
        let mut y = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&y)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&y)?)?,
        };
        for block in &self.blocks {
            y = block.forward(&y, context)?;
        }
        let to_map = |t: &Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2));
        let y = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(&y)?.contiguous()?)?,
            Projection::Linear(lin) => to_map(&lin.forward(&y)?)?,
        };
        y + x
    }
}
