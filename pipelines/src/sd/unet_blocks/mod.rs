//! The blocks of diffusers' `UNet2DConditionModel` (SD 1.x/2.x/XL) and of its VAE's decoder
//! ([`super::vae_decoder`]), written over
//! [`crate::kernels`] so that the convolutions, attention and group norms run on the fast CPU
//! kernels (and on candle's ops elsewhere). Weight names are diffusers'.
//!
//! ```text
//! DownBlock: (ResNet → Transformer?) × layers → Downsample?     (every output is a skip)
//! MidBlock:  ResNet → (Transformer → ResNet) × 1
//! UpBlock:   (concat skip → ResNet → Transformer?) × (layers + 1) → Upsample?
//! ```
//!
//! The same composition as candle-transformers' `unet_2d_blocks` (which it replaces), with two
//! differences that bring it closer to diffusers: GEGLU's GELU is the exact (erf) one, as in
//! diffusers' `GEGLU`, where candle uses the tanh approximation; and attention is computed in
//! blocks without materialising the score tensor.

mod attention;
mod blocks;
mod resnet;
mod transformer;

pub(crate) use blocks::{BlockSpec, DownBlock, MidBlock, UpBlock};
pub(crate) use resnet::{NormSpec, ResnetBlock};
pub(crate) use transformer::TransformerSpec;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::kernels::{self, Conv2dParams};

/// A convolution with bias (`weight` `[O, C, k, k]`, `bias` `[O]`).
#[derive(Debug, Clone)]
pub(crate) struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    params: Conv2dParams,
}

impl Conv2d {
    /// A `k × k` convolution from `c_in` to `c_out` channels.
    pub(crate) fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        params: Conv2dParams,
    ) -> Result<Conv2d> {
        Ok(Conv2d {
            weight: vb.get((c_out, c_in, k, k), "weight")?,
            bias: vb.get(c_out, "bias")?,
            params,
        })
    }

    /// A 3 × 3 convolution, padding 1.
    pub(crate) fn same3(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Conv2d> {
        let params = Conv2dParams {
            padding: 1,
            ..Default::default()
        };
        Conv2d::load(vb, c_in, c_out, 3, params)
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::conv2d(x, &self.weight, Some(&self.bias), self.params)
    }
}
