//! A small class-conditional diffusion transformer (DiT, Peebles & Xie 2023) for 32×32 images.
//!
//! Patch-4 tokens (64 of them), fixed 2-D sine-cosine positions, `depth` pre-norm blocks with
//! multi-head self-attention and an MLP, conditioned by adaLN-Zero on `c = MLP(sinusoid(t)) +
//! table[y]`, where `y ∈ 0..=K` and label `K` is the null class (classifier-free guidance). The
//! modulation layers and the output layer start at zero, so the untrained network predicts 0.
//! LayerNorm and softmax are written from differentiable ops ([`super::nn`]).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::nn::{rows, silu, Ops};

/// Shape of a [`Dit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    /// Image side (32).
    pub image_size: usize,
    /// Image channels (3).
    pub in_channels: usize,
    /// Patch side (4 → 64 tokens).
    pub patch_size: usize,
    /// Token width `d`.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads (`d` must be divisible by it).
    pub num_heads: usize,
    /// MLP width as a multiple of `d`.
    pub mlp_ratio: usize,
    /// Number of real classes `K`; the table has `K + 1` rows, row `K` being the null class.
    pub num_classes: usize,
    /// Width of the sinusoidal timestep features.
    pub frequency_size: usize,
    /// Also add the class embedding to every token (besides adaLN), so attention and the MLPs
    /// see the label directly; absent in older configs (= false).
    #[serde(default)]
    pub class_in_tokens: bool,
}

impl DitConfig {
    /// The main toy model: d 128, depth 4, 4 heads.
    pub fn toy() -> Self {
        DitConfig {
            image_size: 32,
            in_channels: 3,
            patch_size: 4,
            hidden_size: 128,
            depth: 4,
            num_heads: 4,
            mlp_ratio: 4,
            num_classes: super::data::NUM_CLASSES,
            frequency_size: 128,
            class_in_tokens: false,
        }
    }

    fn tokens_side(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// Whether a parameter of a [`Dit`] starts at zero (adaLN-Zero and the output layer).
pub fn zero_init(name: &str) -> bool {
    name.contains("adaln") || name.starts_with("final.linear")
}

#[derive(Debug, Clone)]
struct Block {
    adaln: Linear,
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

impl Block {
    fn new(d: usize, heads: usize, mlp: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            adaln: candle_nn::linear(d, 6 * d, vb.pp("adaln"))?,
            qkv: candle_nn::linear(d, 3 * d, vb.pp("qkv"))?,
            proj: candle_nn::linear(d, d, vb.pp("proj"))?,
            fc1: candle_nn::linear(d, mlp * d, vb.pp("fc1"))?,
            fc2: candle_nn::linear(mlp * d, d, vb.pp("fc2"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, c: &Tensor, ops: &Ops) -> Result<Tensor> {
        let m = self.adaln.forward(c)?.chunk(6, 1)?;
        let h = modulate(&ops.norm(x)?, &m[0], &m[1])?;
        let att = super::nn::self_attention(&self.qkv, &self.proj, &h, self.heads, ops)?;
        let x = (x + att.broadcast_mul(&m[2].unsqueeze(1)?)?)?;
        let h = modulate(&ops.norm(&x)?, &m[3], &m[4])?;
        let h = rows(&self.fc2, &silu(&rows(&self.fc1, &h)?)?)?;
        x + h.broadcast_mul(&m[5].unsqueeze(1)?)?
    }
}

/// The class-conditional DiT, predicting flow velocity `ε − x0`.
#[derive(Debug, Clone)]
pub struct Dit {
    /// Its shape.
    pub config: DitConfig,
    x_embed: Linear,
    pos: Tensor,
    t_fc1: Linear,
    t_fc2: Linear,
    y_table: Embedding,
    blocks: Vec<Block>,
    final_adaln: Linear,
    final_linear: Linear,
    ops: Ops,
}

/// Fixed 2-D sine-cosine position table `[side², d]`.
fn position_table(side: usize, d: usize, dev: &Device) -> Result<Tensor> {
    let quarter = d / 4;
    let mut out = vec![0f32; side * side * d];
    for i in 0..side {
        for j in 0..side {
            let row = &mut out[(i * side + j) * d..(i * side + j + 1) * d];
            for k in 0..quarter {
                let w = 1.0 / 10000f64.powf(k as f64 / quarter as f64);
                row[k] = (j as f64 * w).sin() as f32;
                row[quarter + k] = (j as f64 * w).cos() as f32;
                row[2 * quarter + k] = (i as f64 * w).sin() as f32;
                row[3 * quarter + k] = (i as f64 * w).cos() as f32;
            }
        }
    }
    Tensor::from_vec(out, (side * side, d), dev)
}

/// The `half` frequencies of [`timestep_features`]: `exp(−ln(10⁴)·i/half)`.
pub fn timestep_frequencies(half: usize) -> Vec<f32> {
    (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect()
}

/// Sinusoidal features `[B, n]` of timesteps `t` (`[B]`, in `0..1000`): the cosines, then the
/// sines, of `t` times each of [`timestep_frequencies`].
pub fn timestep_features(t: &Tensor, n: usize) -> Result<Tensor> {
    let half = n / 2;
    let freqs = Tensor::from_vec(timestep_frequencies(half), (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], 1)
}

impl Dit {
    /// Builds the network, taking its weights from `vb` (a `VarMap` for training, a
    /// safetensors file for inference).
    pub fn new(config: &DitConfig, vb: VarBuilder) -> Result<Self> {
        let c = config;
        let d = c.hidden_size;
        if c.num_heads == 0
            || d % c.num_heads != 0
            || d % 4 != 0
            || c.image_size % c.patch_size != 0
        {
            candle_core::bail!(
                "invalid DiT config {c:?}: need d divisible by heads and 4, size by patch"
            );
        }
        let pdim = c.patch_size * c.patch_size * c.in_channels;
        let blocks = (0..c.depth)
            .map(|i| Block::new(d, c.num_heads, c.mlp_ratio, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Dit {
            config: c.clone(),
            x_embed: candle_nn::linear(pdim, d, vb.pp("x_embed"))?,
            pos: position_table(c.tokens_side(), d, vb.device())?,
            t_fc1: candle_nn::linear(c.frequency_size, d, vb.pp("t_embed.fc1"))?,
            t_fc2: candle_nn::linear(d, d, vb.pp("t_embed.fc2"))?,
            y_table: candle_nn::embedding(c.num_classes + 1, d, vb.pp("y_table"))?,
            blocks,
            final_adaln: candle_nn::linear(d, 2 * d, vb.pp("final.adaln"))?,
            final_linear: candle_nn::linear(d, pdim, vb.pp("final.linear"))?,
            ops: Ops::default(),
        })
    }

    /// Uses candle's fused LayerNorm and softmax kernels (faster, but they record no gradient:
    /// for inference only) when `fused`, else the differentiable compositions (the default).
    pub fn set_fused_ops(&mut self, fused: bool) {
        self.ops.fused = fused;
    }

    /// Velocity for images `x` (`[B, C, H, W]`, data scale `[-1, 1]`), timesteps `t` (`[B]`,
    /// `σ·1000`) and labels `y` (`[B]` u32, `K` = null).
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Result<Tensor> {
        Ok(self.forward_tapped(x, t, y, None)?.0)
    }

    /// [`Dit::forward`], also returning the tokens `[B, T, d]` after the first `tap` blocks
    /// (row-major over the patch grid) when `tap` is given: what representation alignment
    /// ([`super::repa`]) trains.
    pub fn forward_tapped(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        tap: Option<usize>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let c = &self.config;
        let (b, ch, hh, ww) = x.dims4()?;
        let p = c.patch_size;
        let (gh, gw) = (hh / p, ww / p);
        let tokens = x
            .reshape((b, ch, gh, p, gw, p))?
            .permute((0, 2, 4, 3, 5, 1))?
            .contiguous()?
            .reshape((b, gh * gw, p * p * ch))?;
        let mut h = rows(&self.x_embed, &tokens)?.broadcast_add(&self.pos)?;
        let temb = timestep_features(t, c.frequency_size)?;
        let temb = self.t_fc2.forward(&silu(&self.t_fc1.forward(&temb)?)?)?;
        let yemb = self.y_table.forward(y)?;
        if c.class_in_tokens {
            h = h.broadcast_add(&yemb.unsqueeze(1)?)?;
        }
        let cond = silu(&(temb + yemb)?)?;
        let mut tapped = None;
        for (i, blk) in self.blocks.iter().enumerate() {
            h = blk.forward(&h, &cond, &self.ops)?;
            if tap == Some(i + 1) {
                tapped = Some(h.clone());
            }
        }
        let m = self.final_adaln.forward(&cond)?.chunk(2, 1)?;
        let h = modulate(&self.ops.norm(&h)?, &m[0], &m[1])?;
        let out = rows(&self.final_linear, &h)?;
        let out = out
            .reshape((b, gh, gw, p, p, ch))?
            .permute((0, 5, 1, 3, 2, 4))?
            .contiguous()?
            .reshape((b, ch, hh, ww))?;
        Ok((out, tapped))
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        let c = &self.config;
        let d = c.hidden_size;
        let pdim = c.patch_size * c.patch_size * c.in_channels;
        let lin = |i: usize, o: usize| i * o + o;
        let block = lin(d, 6 * d)
            + lin(d, 3 * d)
            + lin(d, d)
            + lin(d, c.mlp_ratio * d)
            + lin(c.mlp_ratio * d, d);
        lin(pdim, d)
            + lin(c.frequency_size, d)
            + lin(d, d)
            + (c.num_classes + 1) * d
            + c.depth * block
            + lin(d, 2 * d)
            + lin(d, pdim)
    }
}

/// The mean over the last dimension of squared differences, averaged over everything.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_nn::VarMap;

    #[test]
    fn fused_inference_ops_match_the_differentiable_ones() {
        let mut c = DitConfig::toy();
        c.hidden_size = 32;
        c.depth = 2;
        c.num_heads = 2;
        let vm = VarMap::new();
        let mut dit = Dit::new(&c, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        super::super::nn::init_seeded(&vm, 5, |_| false).unwrap();
        let x = Tensor::from_vec(
            steerdiff_guidance::rng::StreamKey {
                seed: 1,
                lineage: 0,
                step: 0,
                domain: steerdiff_guidance::rng::Domain::Init,
            }
            .normals(2 * 3 * 32 * 32),
            (2, 3, 32, 32),
            &Device::Cpu,
        )
        .unwrap();
        let t = Tensor::new(&[500f32, 20.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[3u32, 10], &Device::Cpu).unwrap();
        let a = dit.forward(&x, &t, &y).unwrap();
        dit.set_fused_ops(true);
        let b = dit.forward(&x, &t, &y).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-3, "{d}");
    }
}
