//! DDIM's transition `α_s·x̂0 + d·ε̂ (+ c·z)` in one pass on the CPU, from a prediction's
//! values in either form ([`PairValues`]) and with the step's noise drawn row by row inside
//! the pass.

use std::mem::MaybeUninit;

use candle_core::Tensor;
use rayon::prelude::*;

use super::{parallel_fill, PairValues, Values, CHUNK};
use crate::noise::Streams;
use crate::rng::StreamKey;
use crate::simd_dispatch;

/// The transition with the bits of
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

/// DDIM's transition `α_s·x̂0 + d·ε̂ (+ c·z)` from a prediction's values in any form (the
/// pair, or a velocity converted on the fly: [`PairValues`]), with the bits of [`ddim_step`] on
/// the pair. With noise `(streams, c)`, row `i`'s `z` is the first numbers of stream
/// `streams.keys[i]`, drawn into a scratch row by the task that uses it, so the noise is never
/// a tensor. Returns the new state, and `x̂0` when `keep_x0` (written by the same pass, for a
/// velocity whose pair was never made). One hand-off to the threads for the whole step; `None`
/// unless the values are `shape`'s and the streams (if any) are f32 CPU streams of `shape`.
pub(crate) fn ddim_rows(
    values: PairValues,
    shape: &[usize],
    (alpha, direction): (f64, f64),
    noise: Option<(&Streams, f64)>,
    keep_x0: bool,
) -> Option<(Tensor, Option<Tensor>)> {
    let n: usize = shape.iter().product();
    let fits = noise.is_none_or(|(s, _)| s.shape() == shape && s.is_f32_cpu());
    if !fits || values.len() != Some(n) || n == 0 {
        return None;
    }
    // A task per particle when drawing (each row is one stream's first numbers), else chunks.
    let unit = match noise {
        Some(_) => n / shape[0],
        None => CHUNK.min(n),
    };
    let (a, d) = (alpha as f32, direction as f32);
    let task = |scratch: &mut Scratch, k: usize, out: &mut [MaybeUninit<f32>], x0_out| {
        let at = k * unit..k * unit + out.len();
        let noise = noise.map(|(streams, c)| (&streams.keys[k], c as f32));
        ddim_task(values, at, (a, d), noise, scratch, out, x0_out)
    };
    let scratch = Scratch::default;
    let (mut next, mut x0) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let tasks = next.spare_capacity_mut()[..n]
        .par_chunks_mut(unit)
        .enumerate();
    if keep_x0 {
        tasks
            .zip(x0.spare_capacity_mut()[..n].par_chunks_mut(unit))
            .for_each_init(scratch, |s, ((k, out), x0)| task(s, k, out, Some(x0)));
    } else {
        tasks.for_each_init(scratch, |s, (k, out)| task(s, k, out, None));
    }
    // SAFETY: the chunks of `unit` values cover 0..n of `next` (and of `x0` when `keep_x0`),
    // and each task writes every value of its chunks (zips of the chunk with inputs of its
    // length).
    unsafe {
        next.set_len(n);
        if keep_x0 {
            x0.set_len(n);
        }
    }
    let tensor = |v: Vec<f32>| Tensor::from_vec(v, shape, &candle_core::Device::Cpu).ok();
    Some((
        tensor(next)?,
        if keep_x0 { Some(tensor(x0)?) } else { None },
    ))
}

/// [`ddim_rows`] from the pair `(x0, eps)` with the noise `(streams, c)` drawn inside the pass;
/// `None` unless both are contiguous f32 CPU tensors of the streams' shape.
pub(crate) fn ddim_step_drawing(
    x0: &Tensor,
    eps: &Tensor,
    alpha: f64,
    direction: f64,
    noise: (&Streams, f64),
) -> Option<Tensor> {
    let (x0v, epsv) = (Values::of(x0)?, Values::of(eps)?);
    let pair = PairValues::Pair {
        x0: x0v.get(),
        eps: epsv.get(),
    };
    ddim_rows(pair, x0.dims(), (alpha, direction), Some(noise), false).map(|(next, _)| next)
}

/// A task's scratch rows: the two halves of a converted velocity, and the noise.
#[derive(Default)]
struct Scratch {
    x0: Vec<f32>,
    eps: Vec<f32>,
    z: Vec<f32>,
}

simd_dispatch!(
    /// One task of [`ddim_rows`]: values `at` of the step, from `values`, with `noise`'s stream
    /// and scale if given (`at` is then the stream's row), written to `out`, and `x̂0` to
    /// `x0_out` if given.
    fn ddim_task(
        values: PairValues<'_>,
        at: std::ops::Range<usize>,
        step: (f32, f32),
        noise: Option<(&StreamKey, f32)>,
        scratch: &mut Scratch,
        out: &mut [MaybeUninit<f32>],
        x0_out: Option<&mut [MaybeUninit<f32>]>
    ) -> () = ddim_task_generic
);

#[inline(always)]
fn ddim_task_generic(
    values: PairValues<'_>,
    at: std::ops::Range<usize>,
    (a, d): (f32, f32),
    noise: Option<(&StreamKey, f32)>,
    scratch: &mut Scratch,
    out: &mut [MaybeUninit<f32>],
    x0_out: Option<&mut [MaybeUninit<f32>]>,
) {
    let len = out.len();
    let (h0, h1): (&[f32], &[f32]) = match values {
        PairValues::Pair { x0, eps } => (&x0[at.clone()], &eps[at]),
        PairValues::Velocity { .. } => {
            let (s0, s1) = (room(&mut scratch.x0, len), room(&mut scratch.eps, len));
            values.write(at, s0, s1);
            (s0, s1)
        }
    };
    let halves = h0.iter().zip(h1);
    match noise {
        Some((key, c)) => {
            let z = room(&mut scratch.z, len);
            key.fill_normals(z);
            for (o, ((&x, &e), &z)) in out.iter_mut().zip(halves.zip(z.iter())) {
                o.write(((x * a + 0.0) + (e * d + 0.0)) + (z * c + 0.0));
            }
        }
        None => {
            for (o, (&x, &e)) in out.iter_mut().zip(halves) {
                o.write((x * a + 0.0) + (e * d + 0.0));
            }
        }
    }
    if let Some(x0_out) = x0_out {
        for (o, &v) in x0_out.iter_mut().zip(h0) {
            o.write(v);
        }
    }
}

/// The first `len` values of a scratch row, grown (zeroed) when shorter.
fn room(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

#[cfg(test)]
mod tests {
    use super::super::pair_values::tests::velocity_pair;
    use super::super::tests::tensor;
    use super::super::VelocityMap;
    use super::*;
    use crate::test_support::bits;
    use candle_core::{DType, Device};

    #[test]
    fn each_step_has_the_bits_of_candles_ops() {
        let (x, out, other) = (tensor(1, 200), tensor(2, 200), tensor(3, 200));
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
        // From a velocity (with CFG's term or without), converted inside the step's pass: the
        // bits of converting, combining, then stepping, and x̂0 written by the same pass.
        let reference = tensor(6, 200);
        let keep = |term: Option<(&Tensor, f64)>, noise: Option<(&Streams, f64)>| {
            let (xv, vv) = (Values::of(&x).unwrap(), Values::of(&out).unwrap());
            let rv = term.map(|(r, w)| (Values::of(r).unwrap(), w as f32));
            let values = PairValues::Velocity {
                x: xv.get(),
                v: vv.get(),
                map: VelocityMap::new(0.4, 0.6),
                term: rv.as_ref().map(|(r, w)| (r.get(), *w)),
            };
            let (next, x0) = ddim_rows(values, x.dims(), (0.6, 0.3), noise, true).unwrap();
            (next, x0.unwrap())
        };
        for term in [None, Some((&reference, 3.5))] {
            let (x0, eps) = velocity_pair(&x, &out, term, (0.4, 0.6)).unwrap();
            for noise in [None, Some((streams, 0.25))] {
                let (next, got_x0) = keep(term, noise);
                let z = noise.map(|(_, c)| (&z, c));
                assert_eq!(
                    bits(&next),
                    bits(&ddim_step(&x0, &eps, 0.6, 0.3, z).unwrap())
                );
                assert_eq!(bits(&got_x0), bits(&x0));
            }
        }
        // Deterministic steps in chunks (the last one short) rather than rows.
        let (big, other_big) = (tensor(7, 2 * CHUNK + 10), tensor(8, 2 * CHUNK + 10));
        let (bv, ov) = (Values::of(&big).unwrap(), Values::of(&other_big).unwrap());
        let pair = PairValues::Pair {
            x0: bv.get(),
            eps: ov.get(),
        };
        let (got, none) = ddim_rows(pair, big.dims(), (0.6, 0.3), None, false).unwrap();
        let want = ddim_step(&big, &other_big, 0.6, 0.3, None).unwrap();
        assert_eq!(bits(&got), bits(&want));
        assert!(none.is_none());
        // Rows that are not the streams' rows are left to the caller.
        let flat = x.reshape(200).unwrap();
        assert!(ddim_step_drawing(&flat, &flat, 0.6, 0.3, (streams, 0.25)).is_none());
    }
}
