//! The toy judge's network: a small residual network with batch normalisation.
//!
//! A different family from the cnn-a classifiers that steer and used to judge (plain
//! convolution stacks on a 2×2 space-to-depth input, group normalisation, max pooling, an MLP
//! head), so that its errors are not the guidance classifier's errors:
//! - it convolves the full-resolution 32×32 image (no space-to-depth);
//! - residual basic blocks (He et al. 2016, "Deep Residual Learning", fig. 2):
//!   `y = ReLU(BN(conv(ReLU(BN(conv(x))))) + s(x))`, with `s` the identity, or a 1×1
//!   convolution and BN where the width changes;
//! - batch normalisation (Ioffe & Szegedy 2015): `BN(x) = γ·(x − μ)/√(σ² + ε) + β`, per
//!   channel, with `μ, σ²` the batch's statistics while training and fixed statistics at
//!   inference;
//! - 2×2 average pooling between stages, global average pooling and one linear layer.
//!
//! Stages at 32², 16² and 8² of widths `w`, `2w`, `4w`, each of `blocks` basic blocks, after a
//! 3×3 stem of width `w`.
//!
//! **Statistics.** Training normalises by each batch's statistics and keeps no running
//! averages: the exported weights are an average over steps, and averages of statistics
//! gathered under other weights would not match them. Instead the export measures the
//! statistics once, for the final weights, on a large batch of fresh training images
//! ([`ResNet::calibrate`]; "BN recalibration", as in SWA, Izmailov et al. 2018 §3.2), and
//! stores them as `running_mean` / `running_var` beside each BN's `weight` and `bias`. A judge
//! loaded for inference requires them, so its answer for an image never depends on the batch.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

/// BN's ε.
const EPS: f64 = 1e-5;

/// Batch normalisation of `[B, C, H, W]` per channel.
#[derive(Debug, Clone)]
struct BatchNorm {
    prefix: String,
    gamma: Tensor,
    beta: Tensor,
    /// Fixed `(μ, σ²)` `[C]`; `None` while training (the batch's own).
    statistics: Option<(Tensor, Tensor)>,
}

impl BatchNorm {
    fn new(channels: usize, vb: VarBuilder, with_statistics: bool) -> Result<Self> {
        let statistics = if with_statistics {
            Some((
                vb.get(channels, "running_mean")?,
                vb.get(channels, "running_var")?,
            ))
        } else {
            None
        };
        Ok(BatchNorm {
            prefix: vb.prefix(),
            gamma: vb.get(channels, "weight")?,
            beta: vb.get(channels, "bias")?,
            statistics,
        })
    }

    /// `(μ, σ²)` `[C]` of `x` over batch and pixels (σ² biased, as BN normalises by it).
    fn batch_statistics(x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, c, h, w) = x.dims4()?;
        let per_channel = x.transpose(0, 1)?.reshape((c, b * h * w))?;
        let mean = per_channel.mean(D::Minus1)?;
        let var = per_channel
            .broadcast_sub(&mean.unsqueeze(1)?)?
            .sqr()?
            .mean(D::Minus1)?;
        Ok((mean, var))
    }

    /// Normalises `x`; where `record` is given, pushes the statistics used onto it.
    fn forward(
        &self,
        x: &Tensor,
        record: &mut Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (mean, var) = match &self.statistics {
            Some(s) => s.clone(),
            None => Self::batch_statistics(x)?,
        };
        if let Some(r) = record.as_deref_mut() {
            r.push((mean.clone(), var.clone()));
        }
        let shape = |t: &Tensor| t.reshape((1, t.dim(0)?, 1, 1));
        let scale = (&self.gamma / (var + EPS)?.sqrt()?)?;
        let shift = (&self.beta - (&mean * &scale)?)?;
        x.broadcast_mul(&shape(&scale)?)?
            .broadcast_add(&shape(&shift)?)
    }
}

/// A residual basic block.
#[derive(Debug, Clone)]
struct Block {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    /// The 1×1 projection where the width changes.
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl Block {
    fn new(i: usize, o: usize, vb: VarBuilder, stats: bool) -> Result<Self> {
        Ok(Block {
            conv1: conv(i, o, 3, vb.pp("conv1"))?,
            bn1: BatchNorm::new(o, vb.pp("bn1"), stats)?,
            conv2: conv(o, o, 3, vb.pp("conv2"))?,
            bn2: BatchNorm::new(o, vb.pp("bn2"), stats)?,
            shortcut: if i == o {
                None
            } else {
                Some((
                    conv(i, o, 1, vb.pp("shortcut"))?,
                    BatchNorm::new(o, vb.pp("shortcut_bn"), stats)?,
                ))
            },
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        record: &mut Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let h = self.bn1.forward(&self.conv1.forward(x)?, record)?.relu()?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?, record)?;
        let s = match &self.shortcut {
            Some((c, bn)) => bn.forward(&c.forward(x)?, record)?,
            None => x.clone(),
        };
        (h + s)?.relu()
    }

    fn norms_mut(&mut self) -> impl Iterator<Item = &mut BatchNorm> {
        [&mut self.bn1, &mut self.bn2]
            .into_iter()
            .chain(self.shortcut.as_mut().map(|(_, bn)| bn))
    }
}

fn conv(i: usize, o: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    candle_nn::conv2d(i, o, k, cfg, vb)
}

/// The residual network (see the module docs).
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: Conv2d,
    stem_bn: BatchNorm,
    /// Stages of blocks; every stage after the first starts with 2×2 average pooling.
    stages: Vec<Vec<Block>>,
    fc: Linear,
}

impl ResNet {
    /// Builds the network of base width `width`, `blocks` blocks per stage, `classes` outputs.
    /// `with_statistics`: read each BN's fixed statistics from `vb` (inference), or normalise
    /// by each batch's (training).
    pub fn new(
        width: usize,
        blocks: usize,
        classes: usize,
        vb: VarBuilder,
        with_statistics: bool,
    ) -> Result<Self> {
        let widths = [width, 2 * width, 4 * width];
        let mut stages = Vec::new();
        let mut prev = width;
        for (s, &w) in widths.iter().enumerate() {
            let stage = (0..blocks.max(1))
                .map(|b| {
                    let i = if b == 0 { prev } else { w };
                    Block::new(i, w, vb.pp(format!("stage{s}.block{b}")), with_statistics)
                })
                .collect::<Result<Vec<_>>>()?;
            stages.push(stage);
            prev = w;
        }
        Ok(ResNet {
            stem: conv(3, width, 3, vb.pp("stem"))?,
            stem_bn: BatchNorm::new(width, vb.pp("stem_bn"), with_statistics)?,
            stages,
            fc: candle_nn::linear(prev, classes, vb.pp("fc"))?,
        })
    }

    /// Logits `[B, K]` of images `[B, 3, 32, 32]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x, &mut None)
    }

    fn forward(
        &self,
        x: &Tensor,
        record: &mut Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let mut h = self
            .stem_bn
            .forward(&self.stem.forward(x)?, record)?
            .relu()?;
        for (s, stage) in self.stages.iter().enumerate() {
            if s > 0 {
                h = h.avg_pool2d(2)?;
            }
            for block in stage {
                h = block.forward(&h, record)?;
            }
        }
        let pooled = h.flatten_from(2)?.mean(D::Minus1)?;
        self.fc.forward(&pooled)
    }

    fn norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut norms = vec![&mut self.stem_bn];
        for stage in &mut self.stages {
            for block in stage {
                norms.extend(block.norms_mut());
            }
        }
        norms
    }

    /// Fixes every BN's statistics to those of the batch `x` under the current weights: the
    /// forward pass in training mode, recording each layer's batch statistics in order. After
    /// it, [`ResNet::logits`] of `x` as one batch equals the training-mode logits of `x`.
    pub fn calibrate(&mut self, x: &Tensor) -> Result<()> {
        for bn in self.norms_mut() {
            bn.statistics = None;
        }
        let mut recorded = Vec::new();
        self.forward(x, &mut Some(&mut recorded))?;
        for (bn, stats) in self.norms_mut().into_iter().zip(recorded) {
            bn.statistics = Some(stats);
        }
        Ok(())
    }

    /// The fixed statistics as named tensors (`…running_mean`, `…running_var`), to be saved
    /// beside the weights; empty before [`ResNet::calibrate`].
    pub fn statistics(&self) -> Vec<(String, Tensor)> {
        let mut norms = vec![&self.stem_bn];
        for stage in &self.stages {
            for block in stage {
                norms.extend([&block.bn1, &block.bn2]);
                norms.extend(block.shortcut.as_ref().map(|(_, bn)| bn));
            }
        }
        norms
            .into_iter()
            .filter_map(|bn| {
                let (m, v) = bn.statistics.as_ref()?;
                Some([
                    (format!("{}.running_mean", bn.prefix), m.clone()),
                    (format!("{}.running_var", bn.prefix), v.clone()),
                ])
            })
            .flatten()
            .collect()
    }
}
