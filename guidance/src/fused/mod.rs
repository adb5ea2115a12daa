//! The engine's per-step element-wise arithmetic in one pass on the CPU, with the bits of the
//! candle op sequences it replaces.
//!
//! Why: on a small model every step's conversions and combinations are a dozen candle ops over
//! the population (each a fresh buffer and a pass), and on the toy model they were most of the
//! engine's own time. Each function here computes exactly the per-element expression of the
//! ops it replaces, in the same order and precision (tests compare bits), for contiguous f32
//! tensors on the CPU, and returns `None` for anything else, where the caller runs candle's
//! ops as before.
//!
//! candle's `affine(m, a)` computes `v·m′ + a′` with `m′, a′` the f64 arguments rounded to the
//! tensor's dtype; the expressions below keep that `+ 0.0` (it turns `−0` into `+0`).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Storage, StorageRef, Tensor};
use rayon::prelude::*;

use crate::simd_dispatch;

mod ddim;
mod pair_values;

pub(crate) use ddim::{ddim_rows, ddim_step, ddim_step_drawing};
pub(crate) use pair_values::{PairValues, VelocityMap};

/// A contiguous f32 CPU tensor's values, read in place.
pub(crate) struct Values<'a> {
    storage: StorageRef<'a>,
    range: std::ops::Range<usize>,
}

impl<'a> Values<'a> {
    pub(crate) fn of(t: &'a Tensor) -> Option<Self> {
        if t.dtype() != DType::F32 || !t.device().is_cpu() {
            return None;
        }
        let (storage, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))).then_some(Values {
            storage,
            range: start..end,
        })
    }

    pub(crate) fn get(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            // `of` admitted only f32 CPU storage.
            _ => &[],
        }
    }
}

/// Whether every value of `t` is finite; `None` when `t` is not a contiguous f32 CPU tensor.
pub(crate) fn all_finite(t: &Tensor) -> Option<bool> {
    Some(finite(Values::of(t)?.get()))
}

simd_dispatch!(
    /// Whether every value of `v` is finite.
    fn finite(v: &[f32]) -> bool = finite_generic
);

#[inline(always)]
fn finite_generic(v: &[f32]) -> bool {
    // Chunks of 64 with no early exit inside, so the test vectorises.
    v.chunks(64)
        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

/// Whether a velocity `out` at `x` can be read as [`PairValues::Velocity`]: both contiguous f32
/// CPU tensors of one shape.
pub(crate) fn converts_velocity(x: &Tensor, out: &Tensor) -> bool {
    x.dims() == out.dims() && Values::of(x).is_some() && Values::of(out).is_some()
}

/// `guided + w·(cond − reference)` on both halves of a prediction, each with the bits of
/// `guided + (cond − reference).affine(w, 0)`; `None` unless all six are contiguous f32 CPU
/// tensors of one shape.
pub(crate) fn add_guidance(
    guided: (&Tensor, &Tensor),
    cond: (&Tensor, &Tensor),
    reference: (&Tensor, &Tensor),
    w: f64,
) -> Option<(Tensor, Tensor)> {
    let dims = guided.0.dims();
    let all = [guided.0, guided.1, cond.0, cond.1, reference.0, reference.1];
    if all.iter().any(|t| t.dims() != dims) {
        return None;
    }
    let [g0, g1, c0, c1, r0, r1] = all.map(Values::of);
    let (g0, g1, c0, c1, r0, r1) = (g0?, g1?, c0?, c1?, r0?, r1?);
    let w = w as f32;
    let halves = [
        (g0.get(), c0.get(), r0.get()),
        (g1.get(), c1.get(), r1.get()),
    ];
    let (x0, eps) = parallel_fill_pair(g0.get().len(), |at, x0, eps| {
        for (out, (g, c, r)) in [x0, eps].into_iter().zip(halves) {
            let inputs = g[at.clone()].iter().zip(&c[at.clone()]).zip(&r[at.clone()]);
            for (o, ((&g, &c), &r)) in out.iter_mut().zip(inputs) {
                o.write(g + ((c - r) * w + 0.0));
            }
        }
    });
    let tensor = |v: Vec<f32>| Tensor::from_vec(v, guided.0.shape(), guided.0.device()).ok();
    Some((tensor(x0)?, tensor(eps)?))
}

/// Wakes the thread pool's threads, so that the parallel pass that follows a model call finds
/// them awake. Between a model's last parallel op and the step's pass a thread has often gone
/// to sleep, and waking it from there took 20–45 µs on a 2-vCPU VM (measured: the median delay
/// before the other thread's first row of DDIM's pass; 3–8 µs when woken here first), most of a
/// pass of 50–100 µs at `-n 1`. A no-op job does it: the waking thread runs it and looks for
/// work for a while before sleeping again.
pub(crate) fn wake_threads() {
    if rayon::current_num_threads() > 1 {
        rayon::spawn(|| {});
    }
}

/// Values per parallel task: below this, handing work to another thread costs more than it.
pub(super) const CHUNK: usize = 16 << 10;

/// `n` values, written by `fill(range, out)` in parallel chunks of [`CHUNK`]; `fill` must
/// write every value of its chunk (the buffer is not zeroed first: a pass fewer).
pub(super) fn parallel_fill(
    n: usize,
    fill: impl Fn(std::ops::Range<usize>, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(k, o)| fill(k * CHUNK..k * CHUNK + o.len(), o));
    // SAFETY: the chunks cover 0..n and every caller's `fill` writes each value of its chunk
    // (a zip over the chunk and inputs of the chunk's length).
    unsafe { out.set_len(n) };
    out
}

/// Two buffers of `n` values, written together by `fill(range, first, second)` in parallel
/// chunks of [`CHUNK`] (one pass, one hand-off to the threads, for the two halves of a
/// prediction); `fill` must write every value of both chunks.
pub(super) fn parallel_fill_pair(
    n: usize,
    fill: impl Fn(std::ops::Range<usize>, &mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let (mut first, mut second) = (Vec::with_capacity(n), Vec::with_capacity(n));
    first.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(second.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(k, (a, b))| fill(k * CHUNK..k * CHUNK + a.len(), a, b));
    // SAFETY: the chunks cover 0..n of both buffers and every caller's `fill` writes each
    // value of both (zips over the chunks and inputs of the chunk's length).
    unsafe {
        first.set_len(n);
        second.set_len(n);
    }
    (first, second)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::bits;
    use candle_core::Device;

    /// `n` normal numbers as a `[2, n/2]` tensor, with zeros of both signs (where `+ 0.0`
    /// matters) first.
    pub(crate) fn tensor(seed: u64, n: usize) -> Tensor {
        let mut v = crate::rng::StreamKey {
            seed,
            lineage: 0,
            step: 0,
            domain: crate::rng::Domain::Search,
        }
        .normals(n);
        v[0] = 0.0;
        v[1] = -0.0;
        Tensor::from_vec(v, (2, n / 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn the_guidance_term_has_the_bits_of_candles_ops() {
        let (x, out, other) = (tensor(1, 200), tensor(2, 200), tensor(3, 200));
        for w in [5.5, -1.0, 0.0] {
            let (x0, eps) = add_guidance((&x, &other), (&out, &x), (&other, &out), w).unwrap();
            let want = (&x + (&out - &other).unwrap().affine(w, 0.0).unwrap()).unwrap();
            assert_eq!(bits(&x0), bits(&want));
            let want = (&other + (&x - &out).unwrap().affine(w, 0.0).unwrap()).unwrap();
            assert_eq!(bits(&eps), bits(&want));
        }
        // Views with an offset read their own rows.
        let (a, b) = (x.narrow(0, 1, 1).unwrap(), out.narrow(0, 1, 1).unwrap());
        let (got, _) = add_guidance((&a, &a), (&b, &b), (&b, &b), 2.0).unwrap();
        assert_eq!(bits(&got), bits(&a));
    }

    #[test]
    fn other_tensors_are_left_to_candle_and_non_finite_values_are_found() {
        let x = tensor(4, 64);
        assert_eq!(all_finite(&x), Some(true));
        let mut v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[63] = f32::NAN;
        let bad = Tensor::from_vec(v, (2, 32), &Device::Cpu).unwrap();
        assert_eq!(all_finite(&bad), Some(false));
        assert_eq!(
            all_finite(&bad.affine(0.0, f64::INFINITY).unwrap()),
            Some(false)
        );
        let f64s = x.to_dtype(DType::F64).unwrap();
        assert!(all_finite(&f64s).is_none());
        assert!(!converts_velocity(&f64s, &f64s) && converts_velocity(&x, &bad));
        assert!(!converts_velocity(&x, &x.reshape((4, 16)).unwrap()));
        let strided = x.t().unwrap();
        let s = (&strided, &strided);
        assert!(add_guidance(s, s, s, 1.0).is_none());
    }
}
