//! The UNet's down, mid and up blocks (diffusers' `CrossAttnDownBlock2D`/`DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`): a plain block is the same as
//! a cross-attention one without transformers.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

use super::resnet::{NormSpec, ResnetBlock};
use super::transformer::{SpatialTransformer, TransformerSpec};
use super::Conv2d;
use crate::kernels::Conv2dParams;

/// What every block of one UNet shares, and what differs per block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BlockSpec {
    /// ResNet layers (down blocks; up blocks have one more).
    pub layers: usize,
    /// Group norm groups and ε of the ResNets.
    pub norm: NormSpec,
    /// Channels of the time embedding.
    pub temb: usize,
    /// The block's transformers, if it has any.
    pub transformer: Option<TransformerSpec>,
}

fn transformers(
    vb: &VarBuilder,
    spec: &BlockSpec,
    count: usize,
    channels: usize,
) -> Result<Vec<SpatialTransformer>> {
    match spec.transformer {
        Some(t) => (0..count)
            .map(|i| SpatialTransformer::load(vb.pp("attentions").pp(i), channels, spec.norm, t))
            .collect(),
        None => Ok(Vec::new()),
    }
}

/// `(ResNet → Transformer?) × layers → Downsample?`.
#[derive(Debug)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
    /// A stride-2 3 × 3 convolution; with padding 0 the input is first padded on the right and
    /// bottom only (diffusers' `Downsample2D`).
    downsample: Option<(Conv2d, usize)>,
}

impl DownBlock {
    pub(crate) fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        spec: BlockSpec,
        downsample_padding: Option<usize>,
    ) -> Result<DownBlock> {
        let resnets = (0..spec.layers)
            .map(|i| {
                let c = if i == 0 { c_in } else { c_out };
                ResnetBlock::load(
                    vb.pp("resnets").pp(i),
                    c,
                    c_out,
                    Some(spec.temb),
                    spec.norm,
                    1.0,
                )
            })
            .collect::<Result<_>>()?;
        let downsample = match downsample_padding {
            Some(padding) => {
                let p = Conv2dParams {
                    stride: 2,
                    padding,
                    dilation: 1,
                };
                let vb = vb.pp("downsamplers.0.conv");
                Some((Conv2d::load(vb, c_out, c_out, 3, p)?, padding))
            }
            None => None,
        };
        Ok(DownBlock {
            resnets,
            attentions: transformers(&vb, &spec, spec.layers, c_out)?,
            downsample,
        })
    }

    /// The block's output and its skip connections (one per layer, and the downsampled map).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context)?;
            }
            skips.push(x.clone());
        }
        if let Some((conv, padding)) = &self.downsample {
            if *padding == 0 {
                x = x
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
            }
            x = conv.forward(&x)?;
            skips.push(x.clone());
        }
        Ok((x, skips))
    }
}

/// `ResNet → (Transformer → ResNet)`.
#[derive(Debug)]
pub(crate) struct MidBlock {
    first: ResnetBlock,
    rest: Vec<(SpatialTransformer, ResnetBlock)>,
}

impl MidBlock {
    pub(crate) fn load(
        vb: VarBuilder,
        channels: usize,
        spec: BlockSpec,
        output_scale_factor: f64,
    ) -> Result<MidBlock> {
        let resnet = |i: usize| {
            let vb = vb.pp("resnets").pp(i);
            ResnetBlock::load(
                vb,
                channels,
                channels,
                Some(spec.temb),
                spec.norm,
                output_scale_factor,
            )
        };
        let attentions = transformers(&vb, &spec, 1, channels)?;
        let rest = attentions
            .into_iter()
            .enumerate()
            .map(|(i, a)| Ok((a, resnet(i + 1)?)))
            .collect::<Result<_>>()?;
        Ok(MidBlock {
            first: resnet(0)?,
            rest,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut x = self.first.forward(x, Some(temb))?;
        for (attn, resnet) in &self.rest {
            x = resnet.forward(&attn.forward(&x, context)?, Some(temb))?;
        }
        Ok(x)
    }
}

/// `(concat skip → ResNet → Transformer?) × (layers + 1) → Upsample?`.
#[derive(Debug)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
    /// Nearest-neighbour ×2 (or to the skip's size), then a 3 × 3 convolution.
    upsample: Option<Conv2d>,
}

impl UpBlock {
    /// `skip` channels come from the matching down block, `prev` from the block below.
    pub(crate) fn load(
        vb: VarBuilder,
        skip: usize,
        prev: usize,
        c_out: usize,
        spec: BlockSpec,
        add_upsample: bool,
    ) -> Result<UpBlock> {
        let layers = spec.layers + 1;
        let resnets = (0..layers)
            .map(|i| {
                let res_skip = if i + 1 == layers { skip } else { c_out };
                let c_in = if i == 0 { prev } else { c_out } + res_skip;
                ResnetBlock::load(
                    vb.pp("resnets").pp(i),
                    c_in,
                    c_out,
                    Some(spec.temb),
                    spec.norm,
                    1.0,
                )
            })
            .collect::<Result<_>>()?;
        let upsample = if add_upsample {
            Some(Conv2d::same3(vb.pp("upsamplers.0.conv"), c_out, c_out)?)
        } else {
            None
        };
        Ok(UpBlock {
            resnets,
            attentions: transformers(&vb, &spec, layers, c_out)?,
            upsample,
        })
    }

    /// `skips` are this block's skip connections, the last one first consumed.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        upsample_size: Option<(usize, usize)>,
        context: &Tensor,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - i - 1];
            x = resnet.forward(&Tensor::cat(&[&x, skip], 1)?, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context)?;
            }
        }
        match &self.upsample {
            Some(conv) => {
                let (_, _, h, w) = x.dims4()?;
                let (h, w) = upsample_size.unwrap_or((2 * h, 2 * w));
                conv.forward(&x.upsample_nearest2d(h, w)?)
            }
            None => Ok(x),
        }
    }
}
