//! Small classifiers of clean toy images, of different architectures.
//!
//! The two cnn families begin with a space-to-depth rearrangement (a differentiable reshape)
//! so the convolutions run at low resolution with many channels, which candle's CPU
//! convolution handles far better than few channels at full resolution. Every convolution is
//! followed by group normalisation (8 groups, fewer when the width is not a multiple of 8) and
//! ReLU.
//! - [`ClassifierArch::CnnA`] (both shipped classifiers: evaluation `w` = 40, guidance
//!   `w` = 48): 2×2 space-to-depth
//!   (16×16×12), two 3×3 convolutions of width `w`, 2×2 max pooling, two of width `2w`, max
//!   pooling, a 128-wide hidden layer.
//! - [`ClassifierArch::CnnB`] (`w` = 80; learns markedly slower on the toy data — loss 0.80
//!   after 800 steps against cnn-a's 0.37 — so it is not shipped): 4×4 space-to-depth
//!   (8×8×48), three 3×3 convolutions of widths `w, w, 1.5w`, 2×2 average pooling, one linear
//!   layer.
//! - [`ClassifierArch::Resnet8`] (the judge, `w` = 16): a residual network with batch
//!   normalisation on the full-resolution image, of another family than cnn-a
//!   ([`super::resnet`]).
//!
//! All take `[B, 3, 32, 32]` images in `[-1, 1]` and return logits `[B, K]`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::nn::log_softmax;
use super::resnet::ResNet;

/// Which classifier network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierArch {
    /// 2×2 space-to-depth, conv ×4 with two max pools, a two-layer MLP head.
    CnnA,
    /// 4×4 space-to-depth, conv ×3, average pooling, one linear layer.
    CnnB,
    /// A residual network with batch normalisation: a stem and one basic block per stage at
    /// 32², 16², 8² ([`ResNet`]).
    Resnet8,
}

/// Shape of a [`Classifier`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The network.
    pub arch: ClassifierArch,
    /// Base width `w`.
    pub width: usize,
    /// Number of classes.
    pub num_classes: usize,
}

/// A trained (or training) classifier.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Its shape.
    pub config: ClassifierConfig,
    body: Body,
}

/// The layers of each family.
#[derive(Debug, Clone)]
enum Body {
    /// cnn-a and cnn-b.
    Plain {
        convs: Vec<Conv2d>,
        norms: Vec<GroupNorm>,
        fcs: Vec<Linear>,
    },
    /// resnet8.
    Residual(ResNet),
}

fn conv(i: usize, o: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    candle_nn::conv2d(i, o, k, cfg, vb)
}

impl Classifier {
    /// Builds the network for inference, taking its weights from `vb` (a ResNet's batch
    /// statistics too).
    pub fn new(config: &ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(config, vb, true)
    }

    /// Builds the network for training: a ResNet normalises by each batch's statistics (see
    /// [`Classifier::calibrate`]); the other families are the same as [`Classifier::new`].
    pub fn for_training(config: &ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(config, vb, false)
    }

    fn build(config: &ClassifierConfig, vb: VarBuilder, inference: bool) -> Result<Self> {
        let w = config.width;
        let k = config.num_classes;
        let (convs, fcs) = match config.arch {
            ClassifierArch::Resnet8 => {
                return Ok(Classifier {
                    config: config.clone(),
                    body: Body::Residual(ResNet::new(w, 1, k, vb, inference)?),
                })
            }
            ClassifierArch::CnnA => (
                vec![
                    conv(12, w, 3, vb.pp("conv0"))?,
                    conv(w, w, 3, vb.pp("conv1"))?,
                    conv(w, 2 * w, 3, vb.pp("conv2"))?,
                    conv(2 * w, 2 * w, 3, vb.pp("conv3"))?,
                ],
                vec![
                    candle_nn::linear(2 * w * 16, 128, vb.pp("fc0"))?,
                    candle_nn::linear(128, k, vb.pp("fc1"))?,
                ],
            ),
            ClassifierArch::CnnB => (
                vec![
                    conv(48, w, 3, vb.pp("conv0"))?,
                    conv(w, w, 3, vb.pp("conv1"))?,
                    conv(w, w * 3 / 2, 3, vb.pp("conv2"))?,
                ],
                vec![candle_nn::linear(w * 3 / 2 * 16, k, vb.pp("fc"))?],
            ),
        };
        let norms = convs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ch = c.weight().dim(0)?;
                let groups = [8, 4, 2, 1].into_iter().find(|g| ch % g == 0).unwrap_or(1);
                candle_nn::group_norm(groups, ch, 1e-5, vb.pp(format!("norm{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Classifier {
            config: config.clone(),
            body: Body::Plain { convs, norms, fcs },
        })
    }

    /// Logits `[B, K]` of images `[B, 3, 32, 32]` in `[-1, 1]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        match (&self.body, self.config.arch) {
            (Body::Residual(r), _) => r.logits(x),
            (Body::Plain { fcs, .. }, ClassifierArch::CnnA) => {
                let mut h = space_to_depth(x, 2)?;
                h = self.layer(0, &h)?;
                h = self.layer(1, &h)?.max_pool2d(2)?;
                h = self.layer(2, &h)?;
                h = self.layer(3, &h)?.max_pool2d(2)?;
                let h = fcs[0].forward(&h.flatten_from(1)?)?.relu()?;
                fcs[1].forward(&h)
            }
            // cnn-b (a plain body is built for the cnn families only).
            (Body::Plain { fcs, .. }, _) => {
                let mut h = space_to_depth(x, 4)?;
                h = self.layer(0, &h)?;
                h = self.layer(1, &h)?;
                h = self.layer(2, &h)?.avg_pool2d(2)?;
                fcs[0].forward(&h.flatten_from(1)?)
            }
        }
    }

    /// A ResNet's batch statistics fixed to those of the batch `x` under the current weights
    /// ([`ResNet::calibrate`]), returned as the named tensors an export stores; nothing for
    /// the families without batch normalisation.
    pub fn calibrate(&mut self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        match &mut self.body {
            Body::Residual(r) => {
                r.calibrate(x)?;
                Ok(r.statistics())
            }
            Body::Plain { .. } => Ok(Vec::new()),
        }
    }

    /// Convolution `i`, group normalisation, ReLU.
    /// The last convolution's feature map before its pooling, as tokens `[B, 64, C]` of the
    /// 8×8 grid (row-major, each covering the 4×4 pixels of a DiT patch): the target of
    /// representation alignment ([`super::repa`]). cnn-a only (its map is 8×8).
    pub fn grid_features(&self, x: &Tensor) -> Result<Tensor> {
        if self.config.arch != ClassifierArch::CnnA {
            candle_core::bail!("grid features are defined for cnn-a classifiers only");
        }
        let mut h = space_to_depth(x, 2)?;
        h = self.layer(0, &h)?;
        h = self.layer(1, &h)?.max_pool2d(2)?;
        h = self.layer(2, &h)?;
        let h = self.layer(3, &h)?;
        let (b, c, gh, gw) = h.dims4()?;
        h.permute((0, 2, 3, 1))?.reshape((b, gh * gw, c))
    }

    fn layer(&self, i: usize, h: &Tensor) -> Result<Tensor> {
        let Body::Plain { convs, norms, .. } = &self.body else {
            candle_core::bail!("layer {i} of a plain CNN asked of a residual network");
        };
        norms[i].forward(&convs[i].forward(h)?)?.relu()
    }

    /// Log-probabilities `[B, K]`.
    pub fn log_probs(&self, x: &Tensor) -> Result<Tensor> {
        log_softmax(&self.logits(x)?)
    }
}

/// `[B, C, H, W]` → `[B, C·f², H/f, W/f]`: each `f×f` block becomes channels.
pub fn space_to_depth(x: &Tensor, f: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h / f, f, w / f, f))?
        .permute((0, 1, 3, 5, 2, 4))?
        .contiguous()?
        .reshape((b, c * f * f, h / f, w / f))
}

/// Mean cross-entropy of `logits` `[B, K]` against `labels` `[B]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let lp = log_softmax(logits)?;
    let picked = lp.gather(&labels.unsqueeze(1)?, 1)?;
    picked.mean_all()?.neg()
}
