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

use crate::noise::Streams;

/// A contiguous f32 CPU tensor's values, read in place.
struct Values<'a> {
    storage: StorageRef<'a>,
    range: std::ops::Range<usize>,
}

impl<'a> Values<'a> {
    fn of(t: &'a Tensor) -> Option<Self> {
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

    fn get(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            // `of` admitted only f32 CPU storage.
            _ => &[],
        }
    }
}

/// Whether every value of `t` is finite; `None` when `t` is not a contiguous f32 CPU tensor.
pub(crate) fn all_finite(t: &Tensor) -> Option<bool> {
    let v = Values::of(t)?;
    // Chunks of 64 with no early exit inside, so the test vectorises.
    Some(
        v.get()
            .chunks(64)
            .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite())),
    )
}

/// Whether [`velocity_to_prediction`] converts a velocity `out` at `x`: both contiguous f32
/// CPU tensors of one shape.
pub(crate) fn converts_velocity(x: &Tensor, out: &Tensor) -> bool {
    x.dims() == out.dims() && Values::of(x).is_some() && Values::of(out).is_some()
}

/// A velocity model's output as `(x̂0, ε̂)` (`n = α + σ`): `x/n − (σ/n)·out` and
/// `x/n + (α/n)·out`, with the bits of `scaled = x.affine(1/n, 0)`,
/// `scaled − out.affine(σ/n, 0)` and `scaled + out.affine(α/n, 0)`; `None` unless
/// [`converts_velocity`].
pub(crate) fn velocity_to_prediction(
    x: &Tensor,
    out: &Tensor,
    alpha: f64,
    sigma: f64,
) -> Option<(Tensor, Tensor)> {
    if x.dims() != out.dims() {
        return None;
    }
    let (xv, ov) = (Values::of(x)?, Values::of(out)?);
    let convert = VelocityMap::new(alpha, sigma);
    let (xs, os) = (xv.get(), ov.get());
    let (x0, eps) = parallel_fill_pair(xs.len(), |at, x0, eps| {
        let inputs = xs[at.clone()].iter().zip(&os[at]);
        for ((x0, eps), (&x, &v)) in x0.iter_mut().zip(eps).zip(inputs) {
            let (a, b) = convert.apply(x, v);
            x0.write(a);
            eps.write(b);
        }
    });
    let tensor = |v: Vec<f32>| Tensor::from_vec(v, x.shape(), x.device()).ok();
    Some((tensor(x0)?, tensor(eps)?))
}

/// CFG's term on two velocity outputs at the same `x`, without converting either first:
/// `(x̂0_c + w·(x̂0_c − x̂0_r), ε̂_c + w·(ε̂_c − ε̂_r))` with each `(x̂0, ε̂)` the conversion of
/// [`velocity_to_prediction`] — per value the same operations in the same order as converting
/// both and then [`add_guidance`] with `guided` = the conditional pair, so the same bits, in
/// one pass that reads `x` once and writes only the guided pair. `None` unless all three are
/// contiguous f32 CPU tensors of one shape.
pub(crate) fn velocity_guidance(
    x: &Tensor,
    cond: &Tensor,
    reference: &Tensor,
    (alpha, sigma): (f64, f64),
    w: f64,
) -> Option<(Tensor, Tensor)> {
    if x.dims() != cond.dims() || x.dims() != reference.dims() {
        return None;
    }
    let (xv, cv, rv) = (Values::of(x)?, Values::of(cond)?, Values::of(reference)?);
    let convert = VelocityMap::new(alpha, sigma);
    let w = w as f32;
    let (xs, cs, rs) = (xv.get(), cv.get(), rv.get());
    let (x0, eps) = parallel_fill_pair(xs.len(), |at, x0, eps| {
        let inputs = xs[at.clone()].iter().zip(&cs[at.clone()]).zip(&rs[at]);
        for ((x0, eps), ((&x, &c), &r)) in x0.iter_mut().zip(eps).zip(inputs) {
            let (c0, c1) = convert.apply(x, c);
            let (r0, r1) = convert.apply(x, r);
            x0.write(c0 + ((c0 - r0) * w + 0.0));
            eps.write(c1 + ((c1 - r1) * w + 0.0));
        }
    });
    let tensor = |v: Vec<f32>| Tensor::from_vec(v, x.shape(), x.device()).ok();
    Some((tensor(x0)?, tensor(eps)?))
}

/// The per-value conversion of a velocity `v` at `x` to `(x̂0, ε̂)`, its weights rounded to f32
/// as candle's `affine` rounds them.
#[derive(Clone, Copy)]
struct VelocityMap {
    /// `1/n`, `σ/n`, `α/n` with `n = α + σ`.
    inv: f32,
    s: f32,
    a: f32,
}

impl VelocityMap {
    fn new(alpha: f64, sigma: f64) -> Self {
        let n = alpha + sigma;
        VelocityMap {
            inv: (1.0 / n) as f32,
            s: (sigma / n) as f32,
            a: (alpha / n) as f32,
        }
    }

    /// `scaled ∓ (v·w + 0)` with `scaled = x·(1/n) + 0`, the sign applied exactly (negation is
    /// exact).
    #[inline(always)]
    fn apply(self, x: f32, v: f32) -> (f32, f32) {
        let scaled = x * self.inv + 0.0;
        (scaled - (v * self.s + 0.0), scaled + (v * self.a + 0.0))
    }
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

/// DDIM's transition `α_s·x̂0 + d·ε̂ (+ c·z)` with the bits of
/// `x0.affine(α_s, 0) + eps.affine(d, 0)` (`+ z.affine(c, 0)` when `noise` is `(z, c)`).
pub(crate) fn ddim_step(
    x0: &Tensor,
    eps: &Tensor,
    alpha: f64,
    direction: f64,
    noise: Option<(&Tensor, f64)>,
) -> Option<Tensor> {
    if x0.dims() != eps.dims() || noise.is_some_and(|(z, _)| z.dims() != x0.dims()) {
        return None;
    }
    let (xv, ev) = (Values::of(x0)?, Values::of(eps)?);
    let zv = match noise {
        Some((z, c)) => Some((Values::of(z)?, c as f32)),
        None => None,
    };
    let (a, d, xs, es) = (alpha as f32, direction as f32, xv.get(), ev.get());
    let out = parallel_fill(xs.len(), |at, out| {
        let inputs = xs[at.clone()].iter().zip(&es[at.clone()]);
        match &zv {
            Some((z, c)) => {
                for (o, ((&x, &e), &z)) in out.iter_mut().zip(inputs.zip(&z.get()[at])) {
                    o.write(((x * a + 0.0) + (e * d + 0.0)) + (z * c + 0.0));
                }
            }
            None => {
                for (o, (&x, &e)) in out.iter_mut().zip(inputs) {
                    o.write((x * a + 0.0) + (e * d + 0.0));
                }
            }
        }
    });
    Tensor::from_vec(out, x0.shape(), x0.device()).ok()
}

/// DDIM's stochastic transition with its noise drawn inside the pass: row `i` of the result is
/// row `i` of `ddim_step(x0, eps, α_s, d, Some((z, c)))` where `z`'s row `i` is the first
/// numbers of stream `streams.keys[i]` — each row's numbers are drawn into a scratch row by the
/// task that then uses them, so the noise is never a tensor (no buffer to fill and read back,
/// one hand-off to the threads instead of two). `None` unless `x0` and `eps` are contiguous
/// f32 CPU tensors of the streams' shape and the streams are f32 CPU.
pub(crate) fn ddim_step_drawing(
    x0: &Tensor,
    eps: &Tensor,
    alpha: f64,
    direction: f64,
    (streams, c): (&Streams, f64),
) -> Option<Tensor> {
    let (rows, row) = (streams.keys.len(), streams.row_len());
    let fits = x0.dims() == streams.shape() && eps.dims() == streams.shape();
    if !fits || !streams.is_f32_cpu() || row == 0 {
        return None;
    }
    let (xv, ev) = (Values::of(x0)?, Values::of(eps)?);
    let (a, d, c, xs, es) = (alpha as f32, direction as f32, c as f32, xv.get(), ev.get());
    let mut out = Vec::with_capacity(rows * row);
    out.spare_capacity_mut()[..rows * row]
        .par_chunks_mut(row)
        .zip(&streams.keys)
        .enumerate()
        .for_each_init(
            || vec![0f32; row],
            |z, (i, (o, key))| {
                key.fill_normals(z);
                let at = i * row..(i + 1) * row;
                let inputs = xs[at.clone()].iter().zip(&es[at]).zip(z.iter());
                for (o, ((&x, &e), &z)) in o.iter_mut().zip(inputs) {
                    o.write(((x * a + 0.0) + (e * d + 0.0)) + (z * c + 0.0));
                }
            },
        );
    // SAFETY: the chunks of `row` values cover 0..rows·row (`rows` chunks, one per key), and
    // each task writes every value of its chunk (a zip of the chunk with inputs of its length).
    unsafe { out.set_len(rows * row) };
    Tensor::from_vec(out, x0.shape(), x0.device()).ok()
}

/// Values per parallel task: below this, handing work to another thread costs more than it.
const CHUNK: usize = 16 << 10;

/// `n` values, written by `fill(range, out)` in parallel chunks of [`CHUNK`]; `fill` must
/// write every value of its chunk (the buffer is not zeroed first: a pass fewer).
fn parallel_fill(
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
fn parallel_fill_pair(
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
mod tests {
    use super::*;
    use crate::test_support::bits;
    use candle_core::Device;

    fn tensor(seed: u64, n: usize) -> Tensor {
        let mut v = crate::rng::StreamKey {
            seed,
            lineage: 0,
            step: 0,
            domain: crate::rng::Domain::Search,
        }
        .normals(n);
        // Zeros of both signs, where `+ 0.0` matters.
        v[0] = 0.0;
        v[1] = -0.0;
        Tensor::from_vec(v, (2, n / 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn each_pass_has_the_bits_of_the_ops_it_replaces() {
        let (x, out, other) = (tensor(1, 200), tensor(2, 200), tensor(3, 200));
        let zeros = Tensor::zeros((2, 100), DType::F32, &Device::Cpu).unwrap();
        for (a, s) in [(0.3, 0.7), (0.999, 0.001), (0.0, 1.0)] {
            for (x, out) in [(&x, &out), (&zeros, &zeros.neg().unwrap())] {
                let (x0, eps) = velocity_to_prediction(x, out, a, s).unwrap();
                let n = a + s;
                let scaled = x.affine(1.0 / n, 0.0).unwrap();
                let want_x0 = (&scaled - out.affine(s / n, 0.0).unwrap()).unwrap();
                let want_eps = (&scaled + out.affine(a / n, 0.0).unwrap()).unwrap();
                assert_eq!(bits(&x0), bits(&want_x0));
                assert_eq!(bits(&eps), bits(&want_eps));
            }
            // CFG from two velocities: the bits of converting both, then the guidance term.
            let reference = tensor(5, 200);
            let (c0, c1) = velocity_to_prediction(&x, &out, a, s).unwrap();
            let (r0, r1) = velocity_to_prediction(&x, &reference, a, s).unwrap();
            for w in [6.5, -1.0, 0.0] {
                let (x0, eps) = velocity_guidance(&x, &out, &reference, (a, s), w).unwrap();
                let (want_x0, want_eps) =
                    add_guidance((&c0, &c1), (&c0, &c1), (&r0, &r1), w).unwrap();
                assert_eq!(bits(&x0), bits(&want_x0));
                assert_eq!(bits(&eps), bits(&want_eps));
            }
        }
        for w in [5.5, -1.0, 0.0] {
            let (x0, eps) = add_guidance((&x, &other), (&out, &x), (&other, &out), w).unwrap();
            let want = (&x + (&out - &other).unwrap().affine(w, 0.0).unwrap()).unwrap();
            assert_eq!(bits(&x0), bits(&want));
            let want = (&other + (&x - &out).unwrap().affine(w, 0.0).unwrap()).unwrap();
            assert_eq!(bits(&eps), bits(&want));
        }
        for noise in [None, Some((&other, 0.25))] {
            let got = ddim_step(&x, &out, 0.6, 0.3, noise).unwrap();
            let mut want = (x.affine(0.6, 0.0).unwrap() + out.affine(0.3, 0.0).unwrap()).unwrap();
            if let Some((z, c)) = noise {
                want = (want + z.affine(c, 0.0).unwrap()).unwrap();
            }
            assert_eq!(bits(&got), bits(&want));
        }
        // Noise drawn inside DDIM's pass: the bits of drawing it first.
        let keys: Vec<_> = (0..2)
            .map(|lineage| crate::rng::StreamKey {
                seed: 3,
                lineage,
                step: 8,
                domain: crate::rng::Domain::Step,
            })
            .collect();
        let noise = crate::noise::Noise::from_streams(keys, vec![2, 100], DType::F32, &Device::Cpu);
        let streams = noise.streams().unwrap();
        let z = noise.tensor().unwrap();
        let got = ddim_step_drawing(&x, &out, 0.6, 0.3, (streams, 0.25)).unwrap();
        let want = ddim_step(&x, &out, 0.6, 0.3, Some((&z, 0.25))).unwrap();
        assert_eq!(bits(&got), bits(&want));
        // Rows that are not the streams' rows are left to the caller.
        let flat = x.reshape(200).unwrap();
        assert!(ddim_step_drawing(&flat, &flat, 0.6, 0.3, (streams, 0.25)).is_none());
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
        assert!(velocity_to_prediction(&f64s, &f64s, 0.5, 0.5).is_none());
        assert!(!converts_velocity(&f64s, &f64s) && converts_velocity(&x, &bad));
        assert!(!converts_velocity(&x, &x.reshape((4, 16)).unwrap()));
        assert!(velocity_guidance(&x, &x, &f64s, (0.5, 0.5), 2.0).is_none());
        let strided = x.t().unwrap();
        let s = (&strided, &strided);
        assert!(add_guidance(s, s, s, 1.0).is_none());
    }
}
