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

/// A velocity model's output as `(x̂0, ε̂)` (`n = α + σ`): `x/n − (σ/n)·out` and
/// `x/n + (α/n)·out`, with the bits of `scaled = x.affine(1/n, 0)`,
/// `scaled − out.affine(σ/n, 0)` and `scaled + out.affine(α/n, 0)`.
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
    let n = alpha + sigma;
    let (inv, s, a) = ((1.0 / n) as f32, (sigma / n) as f32, (alpha / n) as f32);
    let (xs, os) = (xv.get(), ov.get());
    let fill = |sign: f32, weight: f32| {
        parallel_fill(xs.len(), |at, out| {
            for (o, (&x, &v)) in out.iter_mut().zip(xs[at.clone()].iter().zip(&os[at])) {
                // `scaled ∓ (v·w + 0)`, the sign applied exactly (negation is exact).
                o.write((x * inv + 0.0) + sign * (v * weight + 0.0));
            }
        })
    };
    let (x0, eps) = (fill(-1.0, s), fill(1.0, a));
    let tensor = |v: Vec<f32>| Tensor::from_vec(v, x.shape(), x.device()).ok();
    Some((tensor(x0)?, tensor(eps)?))
}

/// `guided + w·(cond − reference)` with the bits of
/// `guided + (cond − reference).affine(w, 0)`; `None` unless all three are contiguous f32 CPU
/// tensors of one shape.
pub(crate) fn add_guidance(
    guided: &Tensor,
    cond: &Tensor,
    reference: &Tensor,
    w: f64,
) -> Option<Tensor> {
    if guided.dims() != cond.dims() || cond.dims() != reference.dims() {
        return None;
    }
    let (g, c, r) = (
        Values::of(guided)?,
        Values::of(cond)?,
        Values::of(reference)?,
    );
    let (w, g, c, r) = (w as f32, g.get(), c.get(), r.get());
    let out = parallel_fill(g.len(), |at, out| {
        let inputs = g[at.clone()].iter().zip(&c[at.clone()]).zip(&r[at]);
        for (o, ((&g, &c), &r)) in out.iter_mut().zip(inputs) {
            o.write(g + ((c - r) * w + 0.0));
        }
    });
    Tensor::from_vec(out, guided.shape(), guided.device()).ok()
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

#[cfg(test)]
mod tests {
    use super::*;
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

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
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
        }
        for w in [5.5, -1.0, 0.0] {
            let got = add_guidance(&x, &out, &other, w).unwrap();
            let want = (&x + (&out - &other).unwrap().affine(w, 0.0).unwrap()).unwrap();
            assert_eq!(bits(&got), bits(&want));
        }
        for noise in [None, Some((&other, 0.25))] {
            let got = ddim_step(&x, &out, 0.6, 0.3, noise).unwrap();
            let mut want = (x.affine(0.6, 0.0).unwrap() + out.affine(0.3, 0.0).unwrap()).unwrap();
            if let Some((z, c)) = noise {
                want = (want + z.affine(c, 0.0).unwrap()).unwrap();
            }
            assert_eq!(bits(&got), bits(&want));
        }
        // Views with an offset read their own rows.
        let (a, b) = (x.narrow(0, 1, 1).unwrap(), out.narrow(0, 1, 1).unwrap());
        let got = add_guidance(&a, &b, &b, 2.0).unwrap();
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
        let strided = x.t().unwrap();
        assert!(add_guidance(&strided, &strided, &strided, 1.0).is_none());
    }
}
