//! Multi-head scaled dot-product attention for f32 on the CPU, in blocks of query rows, reading
//! the heads where the projections wrote them.
//!
//! ```text
//! out[b, i, h·D + e] = Σ_j softmax_j(scale · q[b, i, h·D:(h+1)·D] · k[b, j, h·D:(h+1)·D]) · v[b, j, h·D + e]
//! ```
//!
//! Why hand-written: candle's path (diffusers' `attention` as candle-transformers writes it)
//! copies q, k and v into `[B·H, T, D]`, materialises the whole `[B·H, Tq, Tk]` score tensor
//! (1 GiB at 512 px in SD 1.5's first block), scales it, soft-maxes it and copies the result
//! back to `[B, T, H·D]`. Here each task takes one head and a block of query rows, so its scores
//! (`block × Tk`) stay in the core's cache; the two products read q, k and v in place through
//! strides and write the output in place. The softmax is the exact one (the maximum of the whole
//! row, not an online estimate), over the [`super::vector_math`] `exp`.
//!
//! Other devices and dtypes use candle's ops, in the same layout.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, product, vector_math, SendPtr, View, MIN_TASK_FLOATS};

/// Attention of `q` `[B, Tq, H·D]` over `k`, `v` `[B, Tk, H·D]` with `heads` heads and
/// `scale` on the scores (`1/√D` usually); the output is `[B, Tq, H·D]`, in `q`'s dtype.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (b, tq, width) = q.dims3()?;
    let (bk, tk, kw) = k.dims3()?;
    if bk != b || kw != width || v.dims() != k.dims() || heads == 0 || width % heads != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if q.device().is_cpu() && [q, k, v].iter().all(|t| t.dtype() == DType::F32) {
        let op = AttentionOp { heads, scale };
        return q
            .contiguous()?
            .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op);
    }
    // Elsewhere: candle's ops, in f32 as diffusers' attention processor upcasts on the CPU.
    let dtype = q.dtype();
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        t.to_dtype(DType::F32)?
            .reshape((b, len, heads, width / heads))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q4, k4, v4) = (split(q, tq)?, split(k, tk)?, split(v, tk)?);
    let scores = (q4.matmul(&k4.t()?)? * scale)?;
    let p = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
    p.matmul(&v4)?
        .transpose(1, 2)?
        .reshape((b, tq, width))?
        .to_dtype(dtype)
}

struct AttentionOp {
    heads: usize,
    scale: f64,
}

/// Score floats one task holds at most (256 KiB, a quarter of a core's L2 here; measured at
/// 512 px on the SD-1.5-size UNet: 128 Ki floats as fast, 256 Ki twice as slow).
const BLOCK_FLOATS: usize = 64 << 10;

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "attention-blocked"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = contiguous_f32(sq, lq, self.name())?;
        let k = contiguous_f32(sk, lk, self.name())?;
        let v = contiguous_f32(sv, lv, self.name())?;
        let (b, tq, width) = lq.shape().dims3()?;
        let tk = lk.shape().dims3()?.1;
        let (h, dh) = (self.heads, width / self.heads);
        let block = (BLOCK_FLOATS / tk.max(1)).clamp(8, 256).min(tq.max(1));
        let blocks = tq.div_ceil(block);
        let mut out = vec![0f32; b * tq * width];
        let dst = SendPtr(out.as_mut_ptr());
        let scale = self.scale as f32;
        // Tasks of a small attention (a tiny model's) are grouped so that thread hand-offs do not
        // cost more than the work.
        let per_task = block * tk * dh;
        (0..b * h * blocks)
            .into_par_iter()
            .with_min_len((4 * MIN_TASK_FLOATS).div_ceil(per_task))
            .for_each_init(
                || (vec![0f32; block * tk], vec![0f32; block]),
                |(scores, norms), task| {
                    let (bh, blk) = (task / blocks, task % blocks);
                    let (n, head) = (bh / h, bh % h);
                    let row0 = blk * block;
                    let rows = block.min(tq - row0);
                    let q0 = (n * tq + row0) * width + head * dh;
                    let kv0 = n * tk * width + head * dh;
                    // SAFETY: q rows row0..row0+rows and k, v rows 0..tk of image n lie inside
                    // their buffers (checked by the layouts' shapes); each task writes its own
                    // rows × head columns of `out`, which no other task touches.
                    unsafe {
                        attend(
                            View::rows(q.as_ptr().add(q0), width),
                            View::rows(k.as_ptr().add(kv0), width),
                            View::rows(v.as_ptr().add(kv0), width),
                            (dst.get().add(q0), width),
                            (rows, tk, dh),
                            scale,
                            (scores, norms),
                            gemm::Parallelism::None,
                        );
                    }
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((b, tq, width))))
    }
}

/// One head's attention for `rows` query rows over `tk` keys of width `dh`, on raw buffers:
/// `out[i, :] = Σ_j softmax_j(scale · q[i, :] · k[j, :]) · v[j, :]`, with `q`, `k`, `v` as
/// row-major views and `out` rows `out.1` apart. The softmax is exact (the whole row's maximum);
/// its normaliser divides the output, which is narrower than the scores. `scratch` holds at
/// least `rows × tk` scores and `rows` normalisers.
///
/// # Safety
/// The views must cover `rows` (q) or `tk` (k, v) rows of `dh` values, and `out` `rows` rows of
/// `dh` values that no other thread touches meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attend(
    q: View,
    k: View,
    v: View,
    (out, out_rs): (*mut f32, usize),
    (rows, tk, dh): (usize, usize, usize),
    scale: f32,
    (scores, norms): (&mut [f32], &mut [f32]),
    par: gemm::Parallelism,
) {
    let s = &mut scores[..rows * tk];
    // s[i, j] = scale · q[i, :] · k[j, :]
    let k_transposed = View::transposed(k.ptr, k.rs);
    product(
        s.as_mut_ptr(),
        tk,
        false,
        q,
        k_transposed,
        (rows, tk, dh),
        scale,
        par,
    );
    for (row, z) in s.chunks_exact_mut(tk).zip(norms.iter_mut()) {
        *z = 1.0 / vector_math::softmax_numerator(row);
    }
    // out[i, :] = Σ_j s[i, j] · v[j, :] / z_i
    let p = View::rows(s.as_ptr(), tk);
    product(out, out_rs, false, p, v, (rows, dh, tk), 1.0, par);
    for (i, &z) in norms[..rows].iter().enumerate() {
        let o = out.add(i * out_rs);
        for e in 0..dh {
            *o.add(e) *= z;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Tensor {
        let (b, tq, width) = q.dims3().unwrap();
        let tk = k.dim(1).unwrap();
        let split = |t: &Tensor, len| {
            t.reshape((b, len, heads, width / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(q, tq), split(k, tk), split(v, tk));
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, tq, width))
            .unwrap()
    }

    fn check(b: usize, tq: usize, tk: usize, heads: usize, dh: usize) {
        let dev = Device::Cpu;
        let t = |len: usize, seed: u64| {
            let n = b * len * heads * dh;
            let vals: Vec<f32> = (0..n)
                .map(|i| (((i as u64 + seed) * 2654435761 % 1000) as f32 / 500.0 - 1.0) * 2.0)
                .collect();
            Tensor::from_vec(vals, (b, len, heads * dh), &dev).unwrap()
        };
        let (q, k, v) = (t(tq, 1), t(tk, 7), t(tk, 13));
        let scale = 1.0 / (dh as f64).sqrt();
        let want = reference(&q, &k, &v, heads, scale);
        let got = attention(&q, &k, &v, heads, scale).unwrap();
        let err = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        let err = err.to_scalar::<f32>().unwrap();
        assert!(err < 2e-5, "b {b} tq {tq} tk {tk} heads {heads}: {err}");
    }

    #[test]
    fn matches_candles_attention() {
        check(2, 37, 37, 3, 8);
        check(1, 300, 300, 2, 16); // several query blocks, a short last one
        check(3, 50, 7, 4, 5); // cross-attention: few keys
        check(1, 1, 1, 1, 1);
    }
}
