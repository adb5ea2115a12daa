//! diffusers' `ResnetBlock2D` (He et al. 2016, with the group norms and time embedding of
//! Ho et al. 2020, *DDPM*, appendix B):
//!
//! ```text
//! h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]
//! y = (shortcut(x) + conv2(silu(norm2(h)))) / output_scale_factor
//! ```
//!
//! `shortcut` is a 1 × 1 convolution when the channel count changes, the identity otherwise.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

use super::Conv2d;
use crate::kernels::{Conv2dParams, GroupNorm, Linear};

/// The group norm settings shared by a block's layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NormSpec {
    pub groups: usize,
    pub eps: f64,
}

#[derive(Debug)]
pub(crate) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock {
    pub(crate) fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        temb: Option<usize>,
        norm: NormSpec,
        output_scale_factor: f64,
    ) -> Result<ResnetBlock> {
        let shortcut = if c_in != c_out {
            let p = Conv2dParams::default();
            Some(Conv2d::load(vb.pp("conv_shortcut"), c_in, c_out, 1, p)?)
        } else {
            None
        };
        Ok(ResnetBlock {
            norm1: GroupNorm::load(vb.pp("norm1"), norm.groups, c_in, norm.eps)?,
            conv1: Conv2d::same3(vb.pp("conv1"), c_in, c_out)?,
            time_emb_proj: match temb {
                Some(t) => Some(Linear::load(vb.pp("time_emb_proj"), t, c_out, true)?),
                None => None,
            },
            norm2: GroupNorm::load(vb.pp("norm2"), norm.groups, c_out, norm.eps)?,
            conv2: Conv2d::same3(vb.pp("conv2"), c_out, c_out)?,
            shortcut,
            output_scale_factor,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(x, true)?)?;
        if let (Some(temb), Some(proj)) = (temb, &self.time_emb_proj) {
            let t = proj.forward(&candle_nn::ops::silu(temb)?)?;
            h = h.broadcast_add(&t.unsqueeze(D::Minus1)?.unsqueeze(D::Minus1)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward(&h, true)?)?;
        let y = match &self.shortcut {
            Some(conv) => (conv.forward(x)? + h)?,
            None => (x + h)?,
        };
        if self.output_scale_factor == 1.0 {
            Ok(y)
        } else {
            y / self.output_scale_factor
        }
    }
}
