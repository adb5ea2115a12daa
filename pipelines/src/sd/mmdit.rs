//! The MMDiT transformer of SD3 and SD3.5, assembled from candle-transformers' own MMDiT parts
//! (patch, position and pooled-text embedders, joint blocks, MMDiT-X blocks, final layer) with
//! two parts of ours: the last joint block and the timestep embedding.
//!
//! Why ours: in candle-transformers 0.11.1 the last block's context stream
//! (`ContextQkvOnlyJointBlock` → `QkvOnlyAttnProjections`) reads only `qkv`, so in a QK-normed
//! checkpoint (SD3.5 medium and large: `ln_q` / `ln_k` on every attention) its context keys
//! enter the joint attention un-normalised; the tensors `joint_blocks.{last}.context_block.attn.
//! ln_{q,k}.weight` are silently ignored. Stability's reference (`mmditx.py`, where a `pre_only`
//! `SelfAttention` still applies `ln_q` / `ln_k`) and diffusers (`norm_added_q` / `norm_added_k`
//! of the `context_pre_only` block, applied by `JointAttnProcessor2_0`) both normalise them.
//! Every other attention of candle's MMDiT applies `ln_q` / `ln_k` when present, and its
//! MMDiT-X blocks (SD3.5 medium's `x_block.attn2.*`) are used as they are.
//!
//! The last block, per head of width `d`, with `c` the conditioning vector:
//! `(shift, scale) = Linear(silu(c))`, `h = LN(context)·(1 + scale) + shift`,
//! `[q, k, v] = Linear(h)`, `k ← RMSNorm(k)` (weight `ln_k`, ε = 1e-6) when the checkpoint has
//! one; the image stream's queries attend over `[k_context; k_image]` with
//! `softmax(q kᵀ/√d)·[v_context; v_image]`. The context queries (and `ln_q`) would only produce
//! the context stream's output, which the last block discards, so they are not computed.
//!
//! The timestep embedding is ours so that the model computes in the dtype of its weights:
//! candle's casts its sinusoids to f16, which makes its `MMDiT` f16-only. It is the same map
//! (diffusers' `Timesteps(256, flip_sin_to_cos = True, downscale_freq_shift = 0)`):
//! `[cos(t·ωᵢ), sin(t·ωᵢ)]` with `ωᵢ = 10000^(−i/half)`, `i < half`, computed in f32, then
//! `Linear → SiLU → Linear`.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, RmsNorm, VarBuilder};
use candle_transformers::models::mmdit::blocks::{
    DiTBlock, FinalLayer, JointBlock, LayerNormNoAffine, MMDiTJointBlock, MMDiTXJointBlock,
};
use candle_transformers::models::mmdit::embedding::{
    PatchEmbedder, PositionEmbedder, Unpatchifier, VectorEmbedder,
};
pub use candle_transformers::models::mmdit::model::Config;

/// The RMSNorm ε of SD3.5's QK-norm (Stability's `mmditx.py`, diffusers, candle).
const QK_NORM_EPS: f64 = 1e-6;

/// What a checkpoint's MMDiT has beyond [`Config`]'s sizes: the SD3 / SD3.5 variant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MmditVariant {
    /// Joint blocks whose image stream has a second, image-only self-attention
    /// (`x_block.attn2.*`, nine adaLN modulations instead of six): SD3.5 medium's MMDiT-X
    /// (blocks 0–12 of 24). Empty for SD3 and SD3.5 large.
    pub dual_attention_layers: Vec<usize>,
    /// RMSNorm of every attention's per-head queries and keys (`ln_q`, `ln_k`): SD3.5 medium
    /// and large (diffusers' `qk_norm = "rms_norm"`). False for SD3.
    pub qk_norm: bool,
}

impl MmditVariant {
    /// Reads the variant off the tensor names under `vb` (the MMDiT's root): MMDiT-X blocks by
    /// `joint_blocks.{i}.x_block.attn2.qkv.weight`, QK-norm by the last block's image-stream
    /// `ln_k` (present on every attention of a QK-normed checkpoint).
    pub fn detect(vb: &VarBuilder, depth: usize) -> MmditVariant {
        let has = |i: usize, rest: &str| vb.contains_tensor(&format!("joint_blocks.{i}.{rest}"));
        MmditVariant {
            dual_attention_layers: (0..depth)
                .filter(|&i| has(i, "x_block.attn2.qkv.weight"))
                .collect(),
            qk_norm: depth > 0 && has(depth - 1, "x_block.attn.ln_k.weight"),
        }
    }

    /// A short name: "SD3 MMDiT", "MMDiT with QK-norm (SD3.5 large)", "MMDiT-X … (SD3.5 medium)".
    pub fn describe(&self) -> String {
        match (self.dual_attention_layers.len(), self.qk_norm) {
            (0, false) => "SD3 MMDiT".into(),
            (0, true) => "MMDiT with QK-norm (SD3.5 large)".into(),
            (n, q) => format!(
                "MMDiT-X, {n} dual-attention block(s){} (SD3.5 medium)",
                if q { ", QK-norm" } else { "" }
            ),
        }
    }

    /// Declares, in a [`candle_nn::VarMap`]-backed `vb`, the tensors by which the variant is
    /// detected (`x_block.attn2.qkv.weight` of each dual block; `ln_q` / `ln_k` of every
    /// attention, the last block's context attention included, as Stability's files have
    /// them), so that [`Mmdit::new`] on the same `vb` then creates the whole variant. For
    /// writing random checkpoints.
    pub fn declare(&self, vb: &VarBuilder, config: &Config) -> Result<()> {
        let hidden = config.head_size * config.depth;
        for i in 0..config.depth {
            let block = vb.pp(format!("joint_blocks.{i}"));
            let dual = self.dual_attention_layers.contains(&i);
            if dual {
                block.get((3 * hidden, hidden), "x_block.attn2.qkv.weight")?;
            }
            if self.qk_norm {
                let mut attentions = vec!["x_block.attn", "context_block.attn"];
                if dual {
                    attentions.push("x_block.attn2");
                }
                for a in attentions {
                    for n in ["ln_q", "ln_k"] {
                        block.get(config.head_size, &format!("{a}.{n}.weight"))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The last joint block: candle's image-stream [`DiTBlock`], and a context stream that only
/// supplies (QK-normed) keys and values (see the module doc).
struct LastJointBlock {
    x_block: DiTBlock,
    context_modulation: Linear,
    context_norm: LayerNormNoAffine,
    context_qkv: Linear,
    context_ln_k: Option<RmsNorm>,
    heads: usize,
    head_dim: usize,
}

impl LastJointBlock {
    fn new(hidden: usize, heads: usize, vb: VarBuilder) -> Result<LastJointBlock> {
        let head_dim = hidden / heads;
        let ctx = vb.pp("context_block");
        let context_ln_k = if ctx.contains_tensor("attn.ln_k.weight") {
            Some(candle_nn::rms_norm(
                head_dim,
                QK_NORM_EPS,
                ctx.pp("attn").pp("ln_k"),
            )?)
        } else {
            None
        };
        Ok(LastJointBlock {
            x_block: DiTBlock::new(hidden, heads, vb.pp("x_block"))?,
            context_modulation: candle_nn::linear(
                hidden,
                2 * hidden,
                ctx.pp("adaLN_modulation.1"),
            )?,
            context_norm: LayerNormNoAffine::new(1e-6),
            context_qkv: candle_nn::linear(hidden, 3 * hidden, ctx.pp("attn").pp("qkv"))?,
            context_ln_k,
            heads,
            head_dim,
        })
    }

    /// The image stream after the last block (`context` `[B, L, hidden]`, `x` `[B, N, hidden]`,
    /// `c` `[B, hidden]`).
    fn forward(&self, context: &Tensor, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let (x_qkv, x_mod) = self.x_block.pre_attention(x, c)?;
        let m = self
            .context_modulation
            .forward(&c.silu()?)?
            .chunk(2, D::Minus1)?;
        let h = modulate(&self.context_norm.forward(context)?, &m[0], &m[1])?;
        let (b, l, _) = h.dims3()?;
        let qkv = self
            .context_qkv
            .forward(&h)?
            .reshape((b, l, 3, self.heads, self.head_dim))?;
        let k = qkv.get_on_dim(2, 1)?;
        let k = match &self.context_ln_k {
            Some(norm) => norm.forward(&k.contiguous()?)?,
            None => k,
        };
        let v = qkv.get_on_dim(2, 2)?;
        let n = x.dim(1)?;
        let heads = (b, n, self.heads, self.head_dim);
        let keys = Tensor::cat(&[&k, &x_qkv.k.reshape(heads)?], 1)?;
        let values = Tensor::cat(&[&v, &x_qkv.v.reshape(heads)?], 1)?;
        let attn = attention(&x_qkv.q.reshape(heads)?, &keys, &values)?;
        self.x_block.post_attention(&attn, x, &x_mod)
    }
}

/// The timestep embedding (see the module doc), weights `t_embedder.mlp.{0,2}`.
struct TimestepEmbedding {
    frequencies: usize,
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    fn new(hidden: usize, frequencies: usize, vb: VarBuilder) -> Result<TimestepEmbedding> {
        if frequencies % 2 != 0 {
            candle_core::bail!("the timestep embedding width {frequencies} is odd");
        }
        Ok(TimestepEmbedding {
            frequencies,
            linear_1: candle_nn::linear(frequencies, hidden, vb.pp("mlp.0"))?,
            linear_2: candle_nn::linear(hidden, hidden, vb.pp("mlp.2"))?,
        })
    }

    /// `[B, hidden]` in `dtype` for timesteps `t` `[B]`.
    fn forward(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        let half = self.frequencies / 2;
        let omega = Tensor::arange(0u32, half as u32, t.device())?
            .to_dtype(DType::F32)?
            .affine(-(10000f64.ln()) / half as f64, 0.0)?
            .exp()?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&omega.unsqueeze(0)?)?;
        let sinusoids = Tensor::cat(&[args.cos()?, args.sin()?], 1)?.to_dtype(dtype)?;
        self.linear_2
            .forward(&self.linear_1.forward(&sinusoids)?.silu()?)
    }
}

/// `x·(1 + scale) + shift`, with `shift`, `scale` `[B, hidden]` broadcast over tokens.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

/// Multi-head attention `softmax(q kᵀ/√d)·v` of `q` `[B, Lq, H, d]` over `k`, `v`
/// `[B, Lk, H, d]`; `[B, Lq, H·d]`.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, lq, _, d) = q.dims4()?;
    let t = |x: &Tensor| x.transpose(1, 2)?.contiguous();
    let (q, k, v) = (t(q)?, t(k)?, t(v)?);
    let w = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    candle_nn::ops::softmax_last_dim(&w)?
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((b, lq, ()))
}

/// SD3 / SD3.5's MMDiT (see the module doc); predicts the flow velocity.
pub struct Mmdit {
    patch: PatchEmbedder,
    position: PositionEmbedder,
    time: TimestepEmbedding,
    pooled: VectorEmbedder,
    context_embedder: Linear,
    blocks: Vec<Box<dyn JointBlock>>,
    last: LastJointBlock,
    final_layer: FinalLayer,
    unpatchify: Unpatchifier,
    dtype: DType,
    /// The variant, read off the weights.
    pub variant: MmditVariant,
}

// SAFETY: the boxed trait objects in an `Mmdit` are candle's `MMDiTJointBlock` and
// `MMDiTXJointBlock`, and its embedders and blocks hold `candle_nn::Sequential`s of `Linear`s
// and activation closures over tensors: plain data and `Tensor`s (themselves `Send + Sync`),
// with no interior mutability; `forward` takes `&self`. Sharing or moving it across threads is
// as safe as for any other candle model. (Rewards that decode through the model need it:
// `Reward: Send + Sync`.)
unsafe impl Send for Mmdit {}
// SAFETY: see the `Send` impl above.
unsafe impl Sync for Mmdit {}

impl Mmdit {
    /// Builds the MMDiT of `config` from `vb` (the root holding `x_embedder`, `joint_blocks`, …),
    /// computing in `vb`'s dtype, reading the variant off the tensor names. A last block with a second attention is
    /// refused (no SD3 / SD3.5 checkpoint has one; it would be ignored).
    pub fn new(config: &Config, vb: VarBuilder) -> Result<Mmdit> {
        let (depth, heads) = (config.depth, config.depth);
        let hidden = config.head_size * depth;
        if depth == 0 {
            candle_core::bail!("an MMDiT needs at least one joint block");
        }
        let variant = MmditVariant::detect(&vb, depth);
        if variant.dual_attention_layers.contains(&(depth - 1)) {
            candle_core::bail!(
                "joint block {} (the last) has a second attention (x_block.attn2): no SD3 / \
                 SD3.5 layout has one",
                depth - 1
            );
        }
        let mut blocks: Vec<Box<dyn JointBlock>> = Vec::with_capacity(depth - 1);
        for i in 0..depth - 1 {
            let b = vb.pp(format!("joint_blocks.{i}"));
            blocks.push(if variant.dual_attention_layers.contains(&i) {
                Box::new(MMDiTXJointBlock::new(hidden, heads, false, b)?)
            } else {
                Box::new(MMDiTJointBlock::new(hidden, heads, false, b)?)
            });
        }
        Ok(Mmdit {
            patch: PatchEmbedder::new(
                config.patch_size,
                config.in_channels,
                hidden,
                vb.pp("x_embedder"),
            )?,
            position: PositionEmbedder::new(
                hidden,
                config.patch_size,
                config.pos_embed_max_size,
                vb.clone(),
            )?,
            time: TimestepEmbedding::new(
                hidden,
                config.frequency_embedding_size,
                vb.pp("t_embedder"),
            )?,
            pooled: VectorEmbedder::new(config.adm_in_channels, hidden, vb.pp("y_embedder"))?,
            context_embedder: candle_nn::linear(
                config.context_embed_size,
                hidden,
                vb.pp("context_embedder"),
            )?,
            blocks,
            last: LastJointBlock::new(hidden, heads, vb.pp(format!("joint_blocks.{}", depth - 1)))?,
            final_layer: FinalLayer::new(
                hidden,
                config.patch_size,
                config.out_channels,
                vb.pp("final_layer"),
            )?,
            unpatchify: Unpatchifier::new(config.patch_size, config.out_channels)?,
            dtype: vb.dtype(),
            variant,
        })
    }

    /// The dtype the model computes in (its weights').
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The velocity `[B, C, H, W]` (in [`Mmdit::dtype`]) for latents `x` `[B, C, H, W]` at
    /// timesteps `t` `[B]` (σ·1000), pooled text `y` `[B, adm]` and text `context`
    /// `[B, L, ctx]` (each cast to the model's dtype; `t`'s sinusoids are computed in f32): as
    /// candle's `MMDiT::forward` (cropped position embedding, `c = t_emb + y_emb`, the joint
    /// blocks, the final adaLN layer, unpatchify), with this module's last block.
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (h, w) = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
        let pos = self.position.get_cropped_pos_embed(h, w)?;
        let mut x = self
            .patch
            .forward(&x.to_dtype(self.dtype)?)?
            .broadcast_add(&pos)?;
        let c =
            (self.time.forward(t, self.dtype)? + self.pooled.forward(&y.to_dtype(self.dtype)?)?)?;
        let mut context = self
            .context_embedder
            .forward(&context.to_dtype(self.dtype)?)?;
        for block in &self.blocks {
            (context, x) = block.forward(&context, &x, &c)?;
        }
        let x = self.last.forward(&context, &x, &c)?;
        let x = self.final_layer.forward(&x, &c)?;
        self.unpatchify
            .unpatchify(&x, h, w)?
            .narrow(2, 0, h)?
            .narrow(3, 0, w)
    }
}
