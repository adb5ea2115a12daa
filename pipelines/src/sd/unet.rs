//! diffusers' `UNet2DConditionModel`, composed from candle-transformers' public blocks, with
//! SDXL's added conditioning.
//!
//! candle's own `UNet2DConditionModel` has no `add_embedding`, so an SDXL UNet run through it
//! silently ignores the pooled text embedding and the size/crop ids. This struct is the same
//! composition (conv in → time embedding → down blocks → mid block → up blocks → norm, SiLU,
//! conv out, with diffusers' weight names), plus SDXL's `addition_embed_type = "text_time"`
//! (Podell et al. 2023, *SDXL*, §2.2, "micro-conditioning"):
//!
//! ```text
//! emb      = time_embedding(sinusoid(t))
//! time_ids = [orig_h, orig_w, crop_top, crop_left, target_h, target_w]   (pixels)
//! aug      = add_embedding(concat(pooled_text, flatten(sinusoid_d(time_ids))))
//! emb      = emb + aug                                                    (diffusers' `emb + aug_emb`)
//! ```
//!
//! where `sinusoid_d` embeds each id separately in `addition_time_embed_dim` channels. The
//! timestep sinusoids are computed in f32 and cast to the weights' dtype after (diffusers
//! does the same; candle's UNet computes them in the weights' dtype).

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::BlockConfig;

use super::config::{AddedConditioning, UNetConfig};
use super::unet_blocks::{
    BlockSpec, Conv2d, DownBlock, MidBlock, NormSpec, TransformerSpec, UpBlock,
};
use crate::kernels::GroupNorm;

/// SDXL's added embedding: `add_time_proj` (per-id sinusoids) and `add_embedding` (MLP).
#[derive(Debug)]
struct Added {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
    spec: AddedConditioning,
}

/// The extra inputs of an SDXL UNet, one row per batch row.
#[derive(Debug, Clone)]
pub struct AddedInputs<'a> {
    /// Pooled (projected) text embedding of the last text encoder, `[B, P]`.
    pub text_embeds: &'a Tensor,
    /// `[B, 6]` ids `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]` (f32).
    pub time_ids: &'a Tensor,
}

/// A conditional UNet (SD 1.x/2.x, and SDXL with [`AddedInputs`]).
#[derive(Debug)]
pub struct UNet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    added: Option<Added>,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNetConfig,
}

impl UNet {
    /// Builds the UNet from diffusers-named weights.
    pub fn new(vb: VarBuilder, config: UNetConfig) -> candle_core::Result<UNet> {
        let c = &config.candle;
        let blocks = &c.blocks;
        let n = blocks.len();
        let base = blocks[0].out_channels;
        let last = blocks[n - 1];
        let temb = base * 4;
        let conv_in = Conv2d::same3(vb.pp("conv_in"), config.in_channels, base)?;
        let time_proj = Timesteps::new(base, c.flip_sin_to_cos, c.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), base, temb)?;
        let added = match config.added {
            Some(spec) => Some(Added {
                time_proj: Timesteps::new(spec.time_embed_dim, c.flip_sin_to_cos, c.freq_shift),
                embedding: TimestepEmbedding::new(vb.pp("add_embedding"), spec.input_dim, temb)?,
                spec,
            }),
            None => None,
        };
        let norm = NormSpec {
            groups: c.norm_num_groups,
            eps: c.norm_eps,
        };
        let spec = |b: &BlockConfig| BlockSpec {
            layers: c.layers_per_block,
            norm,
            temb,
            transformer: b.use_cross_attn.map(|depth| TransformerSpec {
                heads: b.attention_head_dim,
                depth,
                context_dim: c.cross_attention_dim,
                linear_projection: c.use_linear_projection,
            }),
        };
        let mut down = Vec::with_capacity(n);
        for (i, b) in blocks.iter().enumerate() {
            let in_ch = if i == 0 {
                base
            } else {
                blocks[i - 1].out_channels
            };
            let downsample = (i + 1 < n).then_some(c.downsample_padding);
            let vb = vb.pp("down_blocks").pp(i);
            down.push(DownBlock::load(
                vb,
                in_ch,
                b.out_channels,
                spec(b),
                downsample,
            )?);
        }
        // The mid block always cross-attends, with the last block's heads and depth.
        let mid_spec = BlockSpec {
            transformer: Some(TransformerSpec {
                heads: last.attention_head_dim,
                depth: last.use_cross_attn.unwrap_or(1),
                context_dim: c.cross_attention_dim,
                linear_projection: c.use_linear_projection,
            }),
            ..spec(&last)
        };
        let mid = MidBlock::load(
            vb.pp("mid_block"),
            last.out_channels,
            mid_spec,
            c.mid_block_scale_factor,
        )?;
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let b: BlockConfig = blocks[n - 1 - i];
            let prev = if i == 0 {
                last.out_channels
            } else {
                blocks[n - i].out_channels
            };
            let skip = blocks[if i + 1 == n { 0 } else { n - i - 2 }].out_channels;
            let vb = vb.pp("up_blocks").pp(i);
            up.push(UpBlock::load(
                vb,
                skip,
                prev,
                b.out_channels,
                spec(&b),
                i + 1 < n,
            )?);
        }
        let norm_out =
            GroupNorm::load(vb.pp("conv_norm_out"), c.norm_num_groups, base, c.norm_eps)?;
        let conv_out = Conv2d::same3(vb.pp("conv_out"), base, config.out_channels)?;
        Ok(UNet {
            conv_in,
            time_proj,
            time_embedding,
            added,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The added conditioning this UNet expects, if any (SDXL).
    pub fn added(&self) -> Option<AddedConditioning> {
        self.added.as_ref().map(|a| a.spec)
    }

    /// The time embedding (plus the added embedding) for `b` rows at `timestep`.
    fn embedding(
        &self,
        b: usize,
        timestep: f64,
        added: Option<&AddedInputs>,
        dtype: DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        let t = Tensor::full(timestep as f32, b, device)?;
        let emb = self.time_proj.forward(&t)?.to_dtype(dtype)?;
        let emb = self.time_embedding.forward(&emb)?;
        match (&self.added, added) {
            (None, None) => Ok(emb),
            (Some(a), Some(inputs)) => {
                let ids = inputs.time_ids.to_dtype(DType::F32)?.flatten_all()?;
                let time = a.time_proj.forward(&ids)?.reshape((b, ()))?;
                let text = inputs.text_embeds.to_dtype(DType::F32)?;
                let x = Tensor::cat(&[&text, &time], 1)?.to_dtype(dtype)?;
                if x.dim(1)? != a.spec.input_dim {
                    candle_core::bail!(
                        "added conditioning has {} features, the UNet's add_embedding takes {}",
                        x.dim(1)?,
                        a.spec.input_dim
                    );
                }
                emb + a.embedding.forward(&x)?
            }
            (Some(_), None) => candle_core::bail!(
                "this UNet has SDXL added conditioning: pooled text embeddings and time ids \
                 are required"
            ),
            (None, Some(_)) => {
                candle_core::bail!("this UNet has no added conditioning (it is not an SDXL UNet)")
            }
        }
    }

    /// ε (or v) for latents `x` `[B, C, H, W]` at `timestep`, cross-attending to `context`
    /// `[B, L, D]`; SDXL UNets also take `added`.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&AddedInputs>,
    ) -> candle_core::Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let c = &self.config.candle;
        let emb = self.embedding(b, timestep, added, x.dtype(), x.device())?;
        let x = if c.center_input_sample {
            x.affine(2.0, -1.0)?
        } else {
            x.clone()
        };
        let factor = 1usize << (c.blocks.len() - 1);
        let odd_size = h % factor != 0 || w % factor != 0;
        let mut x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for block in &self.down {
            let (y, res) = block.forward(&x, &emb, context)?;
            skips.extend(res);
            x = y;
        }
        let mut x = self.mid.forward(&x, &emb, context)?;
        let n = self.up.len();
        for (i, block) in self.up.iter().enumerate() {
            let res = skips.split_off(skips.len() - (c.layers_per_block + 1));
            let upsample_size = match skips.last() {
                Some(s) if i + 1 < n && odd_size => {
                    let (_, _, sh, sw) = s.dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            x = block.forward(&x, &res, &emb, upsample_size, context)?;
        }
        self.conv_out.forward(&self.norm_out.forward(&x, true)?)
    }
}
