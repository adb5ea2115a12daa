//! The toy U-Net's inference forward on the CPU: one image at a time, on plain f32 buffers.
//!
//! Why a second forward: the toy's layers are small (16–64 channels at 32² … 8² pixels), so
//! composed from candle's tensor ops its forward spent more time allocating, zero-filling and
//! passing over buffers, and in scalar `exp`, than in its products (`perf`: the matrix kernel
//! about a third of the CPU). Here every buffer lives in a [`Workspace`] reused from image to
//! image, each normalisation is one vectorised pass
//! ([`layer_norm_rows`](crate::kernels::vector_math::layer_norm_rows)), and a 3×3 convolution
//! gathers no patches:
//!
//! ```text
//! P: the input with a zero border, (H+2)·(W+2) pixels of C channels, row-major, W' = W + 2
//! y[p] = Σ_{dy=0..2} P[p + dy·W' .. p + dy·W' + 3] · W_dyᵀ    for p = i·W' + j
//! ```
//!
//! Pixels `p` and `p + 1` are adjacent in `P`, so the three taps of kernel row `dy` are `3·C`
//! consecutive values starting at pixel `p + dy·W'`: a matrix with rows `C` apart, which the
//! product reads in place. Three products of depth `3·C` give the output over the padded width
//! (the two extra columns of each row are never read).
//!
//! **Batch invariance.** Each image is computed alone with products of fixed shapes, and the
//! `gemm` crate's rounding depends on the shape, not on the thread count, so an image's
//! velocity is the same bits in any batch and on any number of threads. The arithmetic is the
//! network's (`toy/unet/mod.rs`) in another order, equal to it within f32 rounding (tested).

use candle_core::{DType, Result, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::{ResBlock, Unet, UnetConfig};
use crate::kernels::attention::attend;
use crate::kernels::vector_math::{layer_norm_rows, silu_in_place};
use crate::kernels::{gemm_threads, View};
use crate::toy::dit::timestep_frequencies;

mod dense;
mod maps;
#[cfg(test)]
mod tests;

use dense::Dense;
use maps::{average_pool, concat_upsampled, norm_into_padded, sized, EPS};

/// A residual block's weights (see `ResBlock` in `toy/unet/mod.rs`).
#[derive(Debug, Clone)]
struct BlockWeights {
    conv1: Dense,
    modulation: Dense,
    conv2: Dense,
    skip: Option<Dense>,
    cin: usize,
    cout: usize,
}

impl BlockWeights {
    fn new(block: &ResBlock) -> Result<Self> {
        let conv1 = Dense::new(&block.conv1)?;
        Ok(BlockWeights {
            cin: conv1.k / 9,
            cout: conv1.n,
            conv1,
            modulation: Dense::new(&block.modulation)?,
            conv2: Dense::new(&block.conv2)?,
            skip: block.skip.as_ref().map(Dense::new).transpose()?,
        })
    }
}

/// Buffers one image's forward writes, kept from image to image (one per worker thread).
#[derive(Debug, Default)]
pub struct Workspace {
    /// The current activation (channels-last rows), and the next one.
    h: Vec<f32>,
    next: Vec<f32>,
    /// Each level's skip: the down block's output.
    skips: Vec<Vec<f32>>,
    /// What the layers use inside.
    scratch: Scratch,
}

/// The buffers inside a block or the attention.
#[derive(Debug, Default)]
struct Scratch {
    /// A normalised activation with its zero border (a convolution's input).
    padded: Vec<f32>,
    /// A convolution's output over the padded width; the attention's normalised tokens, then
    /// its projected output.
    wide: Vec<f32>,
    /// A block's modulation `[gain | shift]`.
    modulation: Vec<f32>,
    /// The attention's `[q | k | v]` rows, one head's scores and their normalisers, and the
    /// heads' outputs.
    qkv: Vec<f32>,
    scores: Vec<f32>,
    norms: Vec<f32>,
    heads: Vec<f32>,
}

/// The network's weights as plain f32, with the one-image forward of the module docs.
#[derive(Debug, Clone)]
pub struct UnetInference {
    config: UnetConfig,
    /// The sinusoid's frequencies ([`timestep_frequencies`]).
    freqs: Vec<f32>,
    t_fc1: Dense,
    t_fc2: Dense,
    y_table: Vec<f32>,
    stem: Dense,
    down: Vec<BlockWeights>,
    qkv: Dense,
    proj: Dense,
    mid: BlockWeights,
    up: Vec<BlockWeights>,
    out: Dense,
}

impl UnetInference {
    /// Copies `unet`'s weights out of its tensors.
    pub fn new(unet: &Unet) -> Result<Self> {
        let c = &unet.config;
        let half = c.frequency_size / 2;
        Ok(UnetInference {
            config: c.clone(),
            freqs: timestep_frequencies(half),
            t_fc1: Dense::new(&unet.t_fc1)?,
            t_fc2: Dense::new(&unet.t_fc2)?,
            y_table: unet
                .y_table
                .embeddings()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?,
            stem: Dense::new(&unet.stem)?,
            down: unet
                .down
                .iter()
                .map(BlockWeights::new)
                .collect::<Result<_>>()?,
            qkv: Dense::new(&unet.attn.qkv)?,
            proj: Dense::new(&unet.attn.proj)?,
            mid: BlockWeights::new(&unet.mid)?,
            up: unet
                .up
                .iter()
                .map(BlockWeights::new)
                .collect::<Result<_>>()?,
            out: Dense::new(&unet.out)?,
        })
    }

    /// Velocity `[B, C, H, W]` for images `x` (`[B, C, H, W]`), one timestep `t` (`σ·1000`)
    /// and a label per image (`K` = null): each image on its own, images in parallel.
    pub fn forward(&self, x: &Tensor, t: f32, labels: &[u32]) -> Result<Tensor> {
        self.forward_copies(x, 1, t, labels)
    }

    /// [`UnetInference::forward`] of `copies` copies of `x` stacked (`[copies·B, C, H, W]`),
    /// label `labels[k·B + i]` for copy `k` of image `i`, without stacking them: each output
    /// image reads its input image in place.
    pub fn forward_copies(
        &self,
        x: &Tensor,
        copies: usize,
        t: f32,
        labels: &[u32],
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, ch, hh, ww) = x.dims4()?;
        if (ch, hh, ww) != (c.in_channels, c.image_size, c.image_size) || labels.len() != b * copies
        {
            candle_core::bail!(
                "toy U-Net: input {:?} × {copies} with {} labels (it takes [B, {}, {s}, {s}] \
                 and B labels per copy)",
                x.dims(),
                labels.len(),
                c.in_channels,
                s = c.image_size
            );
        }
        if let Some(&y) = labels.iter().find(|&&y| y as usize > c.num_classes) {
            candle_core::bail!(
                "toy U-Net: label {y} is past the null label {}",
                c.num_classes
            );
        }
        let input = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let per = ch * hh * ww;
        let mut out = vec![0f32; labels.len() * per];
        // Fewer images than threads: the products take the threads instead.
        let par = if labels.len() < rayon::current_num_threads() {
            gemm_threads()
        } else {
            Parallelism::None
        };
        out.par_chunks_mut(per)
            .zip(labels.par_iter())
            .enumerate()
            .for_each_init(Workspace::default, |ws, (j, (out, &y))| {
                let x = &input[(j % b) * per..(j % b + 1) * per];
                self.forward_image(x, t, y, out, ws, par)
            });
        let mut shape = x.dims().to_vec();
        shape[0] = labels.len();
        Tensor::from_vec(out, shape, x.device())
    }

    /// One image (`[C, H, W]`) → its velocity (`[C, H, W]`).
    pub fn forward_image(
        &self,
        x: &[f32],
        t: f32,
        label: u32,
        out: &mut [f32],
        ws: &mut Workspace,
        par: Parallelism,
    ) {
        let c = &self.config;
        let e = self.embedding(t, label, par);
        let side = c.image_size;
        let levels = c.channels.len();
        ws.skips.resize_with(levels, Vec::new);

        // The stem: the image (channels-last, zero border) through a 3×3 convolution.
        let (cin, wp) = (c.in_channels, side + 2);
        let sc = &mut ws.scratch;
        let p = sized(&mut sc.padded, (side + 2) * wp * cin);
        p.fill(0.0);
        for (k, plane) in x.chunks_exact(side * side).enumerate() {
            for (i, row) in plane.chunks_exact(side).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    p[((i + 1) * wp + j + 1) * cin + k] = v;
                }
            }
        }
        let c0 = self.stem.n;
        let wide = sized(&mut sc.wide, side * wp * c0);
        self.stem.conv3x3(&sc.padded, (side, side, cin), wide, par);
        let h = sized(&mut ws.h, side * side * c0);
        for (i, row) in h.chunks_exact_mut(side * c0).enumerate() {
            row.copy_from_slice(&wide[i * wp * c0..(i * wp + side) * c0]);
        }

        // Down: a block per level, its output kept as the level's skip, then 2×2 pooling.
        for (l, block) in self.down.iter().enumerate() {
            let s = side >> l;
            let skip = &mut ws.skips[l];
            self.block(block, &ws.h, s, &e, skip, &mut ws.scratch, par);
            if l + 1 < levels {
                average_pool(skip, s, block.cout, &mut ws.h);
            } else {
                ws.h.clone_from(skip);
            }
        }

        // Middle: self-attention over the coarsest level, then a block.
        let s = side >> (levels - 1);
        self.attention(&mut ws.h, s * s, &mut ws.scratch, par);
        self.block(&self.mid, &ws.h, s, &e, &mut ws.next, &mut ws.scratch, par);
        std::mem::swap(&mut ws.h, &mut ws.next);

        // Up: [h, skip] (h upsampled ×2 past the coarsest level) through a block per level.
        for (i, block) in self.up.iter().enumerate() {
            let l = levels - 1 - i;
            let s = side >> l;
            let (ch, cs) = (block.cin - c.channels[l], c.channels[l]);
            concat_upsampled(&ws.h, ch, i > 0, &ws.skips[l], s, cs, &mut ws.next);
            self.block(block, &ws.next, s, &e, &mut ws.h, &mut ws.scratch, par);
        }

        // Out: LayerNorm, SiLU, a 3×3 convolution, back to channels-first.
        let sc = &mut ws.scratch;
        norm_into_padded(&ws.h, side, (side, side, c0), &mut sc.padded, None);
        let o = self.out.n;
        let wide = sized(&mut sc.wide, side * wp * o);
        self.out.conv3x3(&sc.padded, (side, side, c0), wide, par);
        for (k, plane) in out.chunks_exact_mut(side * side).enumerate() {
            for (i, row) in plane.chunks_exact_mut(side).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = wide[(i * wp + j) * o + k];
                }
            }
        }
    }

    /// `SiLU(MLP(sinusoid(t)) + table[label])`, the conditioning every block is modulated by.
    fn embedding(&self, t: f32, label: u32, par: Parallelism) -> Vec<f32> {
        let args: Vec<f32> = self.freqs.iter().map(|&f| t * f).collect();
        let features: Vec<f32> = args
            .iter()
            .map(|a| a.cos())
            .chain(args.iter().map(|a| a.sin()))
            .collect();
        let e = self.t_fc2.n;
        let mut hidden = vec![0f32; self.t_fc1.n];
        self.t_fc1.apply(&features, 1, &mut hidden, par);
        silu_in_place(&mut hidden);
        let mut out = vec![0f32; e];
        self.t_fc2.apply(&hidden, 1, &mut out, par);
        let row = &self.y_table[label as usize * e..(label as usize + 1) * e];
        out.iter_mut().zip(row).for_each(|(o, &r)| *o += r);
        silu_in_place(&mut out);
        out
    }

    /// A residual block on an `s × s` map: `out = skip(x) + conv₂(SiLU(LN(conv₁(SiLU(LN(x))))
    /// ·(1 + gain) + shift))`, `[gain | shift] = W·e + b`.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        b: &BlockWeights,
        x: &[f32],
        s: usize,
        e: &[f32],
        out: &mut Vec<f32>,
        sc: &mut Scratch,
        par: Parallelism,
    ) {
        let (cin, cout, wp) = (b.cin, b.cout, s + 2);
        let m = sized(&mut sc.modulation, 2 * cout);
        b.modulation.apply(e, 1, m, par);
        m[..cout].iter_mut().for_each(|g| *g += 1.0);
        let (gain, shift) = sc.modulation.split_at(cout);

        norm_into_padded(x, s, (s, s, cin), &mut sc.padded, None);
        let wide = sized(&mut sc.wide, s * wp * cout);
        b.conv1.conv3x3(&sc.padded, (s, s, cin), wide, par);
        norm_into_padded(wide, wp, (s, s, cout), &mut sc.padded, Some((gain, shift)));
        b.conv2.conv3x3(&sc.padded, (s, s, cout), wide, par);

        let y = sized(out, s * s * cout);
        match &b.skip {
            Some(skip) => skip.apply(x, s * s, y, par),
            None => y.copy_from_slice(&x[..s * s * cout]),
        }
        for i in 0..s {
            let h = &wide[i * wp * cout..(i * wp + s) * cout];
            y[i * s * cout..(i + 1) * s * cout]
                .iter_mut()
                .zip(h)
                .for_each(|(y, &h)| *y += h);
        }
    }

    /// `h ← h + proj(attention(LN(h)))` over `t` tokens (rows of `h`): multi-head scaled dot
    /// products with an exact softmax.
    fn attention(&self, h: &mut [f32], t: usize, sc: &mut Scratch, par: Parallelism) {
        let d = self.proj.n;
        let heads = self.config.num_heads;
        let dh = d / heads;
        let normed = sized(&mut sc.wide, t * d);
        layer_norm_rows(&h[..t * d], normed, d, EPS, None, false);
        let qkv = sized(&mut sc.qkv, t * 3 * d);
        self.qkv.apply(normed, t, qkv, par);
        let scores = sized(&mut sc.scores, t * t);
        let norms = sized(&mut sc.norms, t);
        let att = sized(&mut sc.heads, t * d);
        let scale = 1.0 / (dh as f32).sqrt();
        for head in 0..heads {
            let q = qkv[head * dh..].as_ptr();
            let (k, v) = (q.wrapping_add(d), q.wrapping_add(2 * d));
            // SAFETY: q, k and v are t rows of dh at a stride of 3d inside `qkv`; this head's
            // output is t rows of dh at a stride of d inside `att`; the scratch holds t × t
            // scores and t normalisers.
            unsafe {
                attend(
                    View::rows(q, 3 * d),
                    View::rows(k, 3 * d),
                    View::rows(v, 3 * d),
                    (att.as_mut_ptr().add(head * dh), d),
                    (t, t, dh),
                    scale,
                    (&mut *scores, &mut *norms),
                    par,
                );
            }
        }
        let projected = sized(&mut sc.wide, t * d);
        self.proj.apply(att, t, projected, par);
        h[..t * d]
            .iter_mut()
            .zip(projected.iter())
            .for_each(|(h, &p)| *h += p);
    }
}
