//! The toy flow model's network: a [`Dit`] or a [`Unet`], chosen by its `config.json`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::{Dit, ToyConfig, Unet};

/// A class-conditional velocity network of the toy flow model.
#[derive(Debug, Clone)]
pub enum FlowNet {
    /// The patch-4 diffusion transformer.
    Dit(Box<Dit>),
    /// The convolutional U-Net.
    Unet(Box<Unet>),
}

impl FlowNet {
    /// Builds the network a config describes, with weights from `vb`; `None` for configs that
    /// are not flow models.
    pub fn new(config: &ToyConfig, vb: VarBuilder) -> Result<Option<Self>> {
        Ok(match config {
            ToyConfig::Dit(c) => Some(FlowNet::Dit(Box::new(Dit::new(c, vb)?))),
            ToyConfig::Unet(c) => Some(FlowNet::Unet(Box::new(Unet::new(c, vb)?))),
            ToyConfig::Classifier(_) => None,
        })
    }

    /// Velocity for images `x` (`[B, C, H, W]`), timesteps `t` (`[B]`, `σ·1000`) and labels
    /// `y` (`[B]` u32, `K` = null).
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Result<Tensor> {
        Ok(self.forward_tapped(x, t, y, None)?.0)
    }

    /// The velocity and, when `tap` is given, the features representation alignment trains:
    /// the DiT's tokens after `tap` blocks, or the U-Net's coarsest level after its middle
    /// stage (`tap` must then be 1). See [`FlowNet::tap_width`].
    pub fn forward_tapped(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        tap: Option<usize>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match self {
            FlowNet::Dit(d) => d.forward_tapped(x, t, y, tap),
            FlowNet::Unet(u) => u.forward_tapped(x, t, y, tap.is_some()),
        }
    }

    /// The width of the features at tap `tap`, or why there is no such tap.
    pub fn tap_width(&self, tap: usize) -> std::result::Result<usize, String> {
        match self {
            FlowNet::Dit(d) if (1..=d.config.depth).contains(&tap) => Ok(d.config.hidden_size),
            FlowNet::Dit(d) => Err(format!(
                "the REPA block must be between 1 and the DiT's depth {} (got {tap})",
                d.config.depth
            )),
            FlowNet::Unet(u) if tap != 1 => Err(format!(
                "the U-Net has one REPA tap, its middle stage: use --repa-block 1 (got {tap})"
            )),
            FlowNet::Unet(u) if u.config.bottleneck_side() != 8 => Err(format!(
                "REPA aligns to the teacher's 8×8 map, but this U-Net's coarsest level is {0}×{0}: \
                 use three levels for 32×32 images",
                u.config.bottleneck_side()
            )),
            FlowNet::Unet(u) => Ok(u.config.bottleneck_channels()),
        }
    }

    /// Uses candle's fused LayerNorm and softmax kernels (inference only) when `fused`.
    pub fn set_fused_ops(&mut self, fused: bool) {
        match self {
            FlowNet::Dit(d) => d.set_fused_ops(fused),
            FlowNet::Unet(u) => u.set_fused_ops(fused),
        }
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        match self {
            FlowNet::Dit(d) => d.num_parameters(),
            FlowNet::Unet(u) => u.num_parameters(),
        }
    }

    /// Whether parameter `name` of this architecture starts at zero.
    pub fn zero_init(config: &ToyConfig) -> fn(&str) -> bool {
        match config {
            ToyConfig::Dit(_) => super::dit::zero_init,
            ToyConfig::Unet(_) => super::unet::zero_init,
            ToyConfig::Classifier(_) => |_| false,
        }
    }
}
