//! Small training building blocks written from differentiable candle ops.
//!
//! candle's fused `layer_norm`, `rms_norm` and `softmax_last_dim` record no gradient
//! (`shared/CANDLE.md`), so the toy models use [`layer_norm`] and [`softmax`] below, built from
//! basic ops that backpropagate. Initialisation, the optimiser ([`AdamW`]) and the weight
//! average ([`Ema`]) are steerdiff's own, so training is reproducible from a seed: every random
//! number comes from [`steerdiff_guidance::rng::StreamKey`].

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use candle_nn::VarMap;
use steerdiff_guidance::rng::{splitmix64, Domain, StreamKey};

/// Layer normalisation over the last dimension without affine parameters, from basic ops.
pub fn layer_norm(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)
}

/// Softmax over the last dimension, from basic ops (max-shifted for stability).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Which LayerNorm and softmax kernels a network uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ops {
    /// `true` = candle's fused kernels (inference only: they record no gradient); `false` (the
    /// default) = the differentiable compositions above.
    pub fused: bool,
}

impl Ops {
    /// LayerNorm over the last dimension, without affine parameters.
    pub fn norm(&self, x: &Tensor) -> Result<Tensor> {
        if !self.fused {
            return layer_norm(x, 1e-6);
        }
        let d = x.dim(D::Minus1)?;
        let ones = Tensor::ones(d, DType::F32, x.device())?;
        let zeros = Tensor::zeros(d, DType::F32, x.device())?;
        candle_nn::ops::layer_norm(&x.contiguous()?, &ones, &zeros, 1e-6)
    }

    /// Softmax over the last dimension.
    pub fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        if self.fused {
            candle_nn::ops::softmax_last_dim(&x.contiguous()?)
        } else {
            softmax(x)
        }
    }
}

/// Multi-head self-attention of tokens `h` (`[B, T, d]`): `proj(softmax(q·kᵀ/√(d/heads))·v)`
/// per head, with `q, k, v` from the one linear layer `qkv` (`d → 3d`).
pub fn self_attention(
    qkv: &candle_nn::Linear,
    proj: &candle_nn::Linear,
    h: &Tensor,
    heads: usize,
    ops: &Ops,
) -> Result<Tensor> {
    let (b, t, d) = h.dims3()?;
    let dh = d / heads;
    let qkv = rows(qkv, h)?
        .reshape((b, t, 3, heads, dh))?
        .permute((2, 0, 3, 1, 4))?;
    let q = qkv.get(0)?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let att = (q.matmul(&k.t()?)? * (1.0 / (dh as f64).sqrt()))?;
    let att = ops.softmax(&att)?.matmul(&v)?;
    rows(proj, &att.transpose(1, 2)?.reshape((b, t, d))?)
}

/// A linear layer applied to the last dimension of a tensor of any rank, as one 2-D matmul.
///
/// candle's `Linear` broadcasts its weight over the batch of a 3-D input, and the backward pass
/// then forms one weight gradient per batch entry before summing them; flattening the leading
/// dimensions first makes forward and backward single large matrix products (measured 2–3×
/// faster training of the toy DiT on the CPU).
pub fn rows(layer: &candle_nn::Linear, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let dims = x.dims().to_vec();
    let last = *dims.last().expect("rank ≥ 1");
    let n = x.elem_count() / last.max(1);
    let y = layer.forward(&x.reshape((n, last))?)?;
    let mut out = dims;
    *out.last_mut().expect("rank ≥ 1") = y.dim(1)?;
    y.reshape(out)
}

/// SiLU `x·sigmoid(x)` from basic ops.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x / (x.neg()?.exp()? + 1.0)?
}

/// Log-softmax over the last dimension, from basic ops.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let z = x.broadcast_sub(&max)?;
    z.broadcast_sub(&z.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// A stable 64-bit hash of a parameter name (FNV-1a, then SplitMix64).
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix64(h)
}

/// Overwrites every variable of `varmap` from steerdiff's seeded generator.
///
/// Rule by name and shape: names for which `zero(name)` is true and every bias get zeros;
/// matrices `[out, in]` get `N(0, 1/in)`; convolution kernels `[out, in, k, k]` get
/// `N(0, 2/(in·k·k))` (He); embedding tables (names containing `table`) get `N(0, 1)`;
/// normalisation gains (1-D `weight`s) get ones.
/// Each tensor's stream is keyed by the seed and the hash of
/// its name, so the result does not depend on map order.
pub fn init_seeded(varmap: &VarMap, seed: u64, zero: impl Fn(&str) -> bool) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    for (name, var) in data.iter() {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let std = if zero(name) || name.ends_with("bias") || dims.len() < 2 {
            0.0
        } else if name.contains("table") && dims.len() == 2 {
            1.0
        } else if dims.len() == 4 {
            (2.0 / (dims[1] * dims[2] * dims[3]) as f64).sqrt()
        } else {
            (1.0 / dims[1] as f64).sqrt()
        };
        let values: Vec<f32> = if dims.len() == 1 && name.ends_with("weight") && !zero(name) {
            // Normalisation gains start at one.
            vec![1.0; n]
        } else if std == 0.0 {
            vec![0.0; n]
        } else {
            StreamKey {
                seed,
                lineage: name_hash(name),
                step: 0,
                domain: Domain::Init,
            }
            .normals(n)
            .into_iter()
            .map(|v| v * std as f32)
            .collect()
        };
        var.set(&Tensor::from_vec(values, dims.as_slice(), var.device())?)?;
    }
    Ok(())
}

/// The variables of a map, sorted by name (deterministic order).
pub fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap lock");
    let sorted: BTreeMap<String, Var> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    sorted.into_iter().collect()
}

/// AdamW (Loshchilov & Hutter 2019) over named variables, with state that can be saved.
#[derive(Debug)]
pub struct AdamW {
    /// The parameters, sorted by name.
    pub vars: Vec<(String, Var)>,
    /// First moments.
    pub m: Vec<Tensor>,
    /// Second moments.
    pub v: Vec<Tensor>,
    /// Steps taken.
    pub t: u64,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (applied to matrices and kernels only).
    pub weight_decay: f64,
}

impl AdamW {
    /// A fresh optimiser over every variable of `varmap`.
    pub fn new(varmap: &VarMap, weight_decay: f64) -> Result<Self> {
        let vars = sorted_vars(varmap);
        let m = vars
            .iter()
            .map(|(_, v)| v.as_tensor().detach().zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(AdamW {
            vars,
            m,
            v,
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// One update at learning rate `lr` from the gradients of `loss`, clipping the global
    /// gradient norm to `clip` (if positive). Returns the gradient norm before clipping.
    pub fn step(&mut self, loss: &Tensor, lr: f64, clip: f64) -> Result<f64> {
        let grads = loss.backward()?;
        let mut gs = Vec::with_capacity(self.vars.len());
        let mut sq = 0f64;
        for (_, var) in &self.vars {
            // Detached throughout: optimiser state must not keep the autograd graph alive.
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.detach(),
                None => var.as_tensor().detach().zeros_like()?,
            };
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            gs.push(g);
        }
        let norm = sq.sqrt();
        let scale = if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        };
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let g = (&gs[i] * scale)?;
            self.m[i] = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let mhat = (&self.m[i] / bc1)?;
            let vhat = (&self.v[i] / bc2)?;
            let upd = (mhat / (vhat.sqrt()? + self.eps)?)?;
            let mut w = var.as_tensor().detach();
            if self.weight_decay > 0.0 && var.rank() >= 2 {
                w = (w * (1.0 - lr * self.weight_decay))?;
            }
            var.set(&(w - (upd * lr)?)?)?;
        }
        Ok(norm)
    }
}

/// Exponential moving average of weights, `ema ← d·ema + (1 − d)·w` with the warm-up
/// `d = min(decay, (1 + t)/(10 + t))`.
#[derive(Debug)]
pub struct Ema {
    /// Averages, in the order of the optimiser's variables.
    pub values: Vec<Tensor>,
    /// Target decay.
    pub decay: f64,
}

impl Ema {
    /// Starts from the current weights.
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let values = vars
            .iter()
            .map(|(_, v)| v.as_tensor().detach().copy())
            .collect::<Result<Vec<_>>>()?;
        Ok(Ema { values, decay })
    }

    /// Folds in the current weights after step `t`.
    pub fn update(&mut self, vars: &[(String, Var)], t: u64) -> Result<()> {
        let d = self.decay.min((1.0 + t as f64) / (10.0 + t as f64));
        for (e, (_, v)) in self.values.iter_mut().zip(vars) {
            *e = ((&*e * d)? + (v.as_tensor().detach() * (1.0 - d))?)?;
        }
        Ok(())
    }
}

/// Learning rate at step `t` (0-based): linear warm-up over `warmup` steps to `lr`, then a
/// cosine down to `lr·final_frac` at `total`.
pub fn lr_at(t: u64, total: u64, warmup: u64, lr: f64, final_frac: f64) -> f64 {
    if t < warmup {
        return lr * (t + 1) as f64 / warmup as f64;
    }
    let p = ((t - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64).min(1.0);
    let c = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
    lr * (final_frac + (1.0 - final_frac) * c)
}

/// A `[B, C, H, W]` f32 tensor from flat CPU data.
pub fn images_tensor(data: Vec<f32>, b: usize, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(data, (b, 3, 32, 32), dev)?.to_dtype(DType::F32)
}
