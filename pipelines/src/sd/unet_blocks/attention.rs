//! diffusers' `Attention` as the UNet uses it (Vaswani et al. 2017, eq. 1; multi-head):
//! `to_out(softmax(q kᵀ/√d) v)` with `q = to_q(x)`, `k = to_k(c)`, `v = to_v(c)`, `c` the text
//! context for cross-attention or `x` itself for self-attention.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::kernels::{self, Linear};

#[derive(Debug)]
pub(crate) struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    /// `heads` heads of `head_dim` channels over a query of `dim` channels and a context of
    /// `context_dim` (`dim` for self-attention).
    pub(crate) fn load(
        vb: VarBuilder,
        dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Attention> {
        let inner = heads * head_dim;
        Ok(Attention {
            to_q: Linear::load(vb.pp("to_q"), dim, inner, false)?,
            to_k: Linear::load(vb.pp("to_k"), context_dim, inner, false)?,
            to_v: Linear::load(vb.pp("to_v"), context_dim, inner, false)?,
            to_out: Linear::load(vb.pp("to_out.0"), inner, dim, true)?,
            heads,
            scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }

    /// `x` `[B, T, dim]` attending to `context` `[B, L, context_dim]` (or to itself).
    pub(crate) fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let c = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(c)?;
        let v = self.to_v.forward(c)?;
        let o = kernels::attention(&q, &k, &v, self.heads, self.scale)?;
        self.to_out.forward(&o)
    }
}
