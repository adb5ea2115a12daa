//! A prediction's values as the one-pass kernels read them: the pair `(x̂0, ε̂)` itself, or a
//! velocity output converted value by value (with CFG's term), in the operations and order of
//! the candle ops they replace.

use std::mem::MaybeUninit;

use candle_core::Tensor;

use super::parallel_fill_pair;

/// A prediction's values as a pass reads them: the pair itself, or a velocity output `v` at
/// `x` converted value by value — with CFG's term from a second velocity `r` at the same `x`
/// when given: `(x̂0_c + w·(x̂0_c − x̂0_r), ε̂_c + w·(ε̂_c − ε̂_r))`, per value the same
/// operations in the same order as converting both and then [`add_guidance`] with `guided` =
/// the conditional pair, so the same bits.
#[derive(Clone, Copy)]
pub(crate) enum PairValues<'a> {
    /// `(x̂0, ε̂)` as they are.
    Pair { x0: &'a [f32], eps: &'a [f32] },
    /// A velocity `v` at `x`, with CFG's `(r, w)` if given.
    Velocity {
        x: &'a [f32],
        v: &'a [f32],
        map: VelocityMap,
        term: Option<(&'a [f32], f32)>,
    },
}

impl PairValues<'_> {
    /// Number of values of each half; `None` if the inputs' lengths differ.
    pub(super) fn len(&self) -> Option<usize> {
        let (n, others) = match self {
            PairValues::Pair { x0, eps } => (x0.len(), [eps.len(), x0.len()]),
            PairValues::Velocity { x, v, term, .. } => {
                (x.len(), [v.len(), term.map_or(x.len(), |(r, _)| r.len())])
            }
        };
        others.iter().all(|&m| m == n).then_some(n)
    }

    /// Writes values `at` of both halves to `x0` and `eps` (slices of `at`'s length).
    #[inline(always)]
    pub(super) fn write<S: Slot>(&self, at: std::ops::Range<usize>, x0: &mut [S], eps: &mut [S]) {
        let halves = x0.iter_mut().zip(eps);
        match *self {
            PairValues::Pair { x0: a, eps: b } => {
                for ((o0, o1), (&a, &b)) in halves.zip(a[at.clone()].iter().zip(&b[at])) {
                    o0.put(a);
                    o1.put(b);
                }
            }
            PairValues::Velocity {
                x,
                v,
                map,
                term: None,
            } => {
                for ((o0, o1), (&x, &v)) in halves.zip(x[at.clone()].iter().zip(&v[at])) {
                    let (a, b) = map.apply(x, v);
                    o0.put(a);
                    o1.put(b);
                }
            }
            PairValues::Velocity {
                x,
                v,
                map,
                term: Some((r, w)),
            } => {
                let inputs = x[at.clone()].iter().zip(&v[at.clone()]).zip(&r[at]);
                for ((o0, o1), ((&x, &c), &r)) in halves.zip(inputs) {
                    let (c0, c1) = map.apply(x, c);
                    let (r0, r1) = map.apply(x, r);
                    o0.put(c0 + ((c0 - r0) * w + 0.0));
                    o1.put(c1 + ((c1 - r1) * w + 0.0));
                }
            }
        }
    }

    /// Both halves as tensors of `shape` on the CPU, in one parallel pass.
    pub(crate) fn pair(&self, shape: &[usize]) -> Option<(Tensor, Tensor)> {
        let (x0, eps) = parallel_fill_pair(self.len()?, |at, x0, eps| self.write(at, x0, eps));
        let tensor = |v: Vec<f32>| Tensor::from_vec(v, shape, &candle_core::Device::Cpu).ok();
        Some((tensor(x0)?, tensor(eps)?))
    }
}

/// Somewhere a pass writes one value: a plain `f32` (a scratch row) or an uninitialised slot
/// of a buffer being filled.
pub(super) trait Slot {
    fn put(&mut self, v: f32);
}

impl Slot for f32 {
    #[inline(always)]
    fn put(&mut self, v: f32) {
        *self = v;
    }
}

impl Slot for MaybeUninit<f32> {
    #[inline(always)]
    fn put(&mut self, v: f32) {
        self.write(v);
    }
}

/// The per-value conversion of a velocity `v` at `x` to `(x̂0, ε̂)`, its weights rounded to f32
/// as candle's `affine` rounds them.
#[derive(Clone, Copy)]
pub(crate) struct VelocityMap {
    /// `1/n`, `σ/n`, `α/n` with `n = α + σ`.
    inv: f32,
    s: f32,
    a: f32,
}

impl VelocityMap {
    pub(crate) fn new(alpha: f64, sigma: f64) -> Self {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::super::tests::tensor;
    use super::super::{add_guidance, Values};
    use super::*;
    use crate::test_support::bits;
    use candle_core::{DType, Device};

    /// The pair of a velocity `v` at `x` on `(α, σ)`, with CFG's term `(r, w)` if given, by
    /// [`PairValues::pair`].
    pub(crate) fn velocity_pair(
        x: &Tensor,
        v: &Tensor,
        term: Option<(&Tensor, f64)>,
        (a, s): (f64, f64),
    ) -> Option<(Tensor, Tensor)> {
        let (xv, vv) = (Values::of(x)?, Values::of(v)?);
        let rv = match term {
            Some((r, w)) => Some((Values::of(r)?, w as f32)),
            None => None,
        };
        PairValues::Velocity {
            x: xv.get(),
            v: vv.get(),
            map: VelocityMap::new(a, s),
            term: rv.as_ref().map(|(r, w)| (r.get(), *w)),
        }
        .pair(x.dims())
    }

    #[test]
    fn conversions_have_the_bits_of_candles_ops() {
        let (x, out) = (tensor(1, 200), tensor(2, 200));
        let zeros = Tensor::zeros((2, 100), DType::F32, &Device::Cpu).unwrap();
        for (a, s) in [(0.3, 0.7), (0.999, 0.001), (0.0, 1.0)] {
            for (x, out) in [(&x, &out), (&zeros, &zeros.neg().unwrap())] {
                let (x0, eps) = velocity_pair(x, out, None, (a, s)).unwrap();
                let n = a + s;
                let scaled = x.affine(1.0 / n, 0.0).unwrap();
                let want_x0 = (&scaled - out.affine(s / n, 0.0).unwrap()).unwrap();
                let want_eps = (&scaled + out.affine(a / n, 0.0).unwrap()).unwrap();
                assert_eq!(bits(&x0), bits(&want_x0));
                assert_eq!(bits(&eps), bits(&want_eps));
            }
            // CFG from two velocities: the bits of converting both, then the guidance term.
            let reference = tensor(5, 200);
            let (c0, c1) = velocity_pair(&x, &out, None, (a, s)).unwrap();
            let (r0, r1) = velocity_pair(&x, &reference, None, (a, s)).unwrap();
            for w in [6.5, -1.0, 0.0] {
                let (x0, eps) = velocity_pair(&x, &out, Some((&reference, w)), (a, s)).unwrap();
                let (want_x0, want_eps) =
                    add_guidance((&c0, &c1), (&c0, &c1), (&r0, &r1), w).unwrap();
                assert_eq!(bits(&x0), bits(&want_x0));
                assert_eq!(bits(&eps), bits(&want_eps));
            }
        }
        let f64s = x.to_dtype(DType::F64).unwrap();
        assert!(velocity_pair(&f64s, &f64s, None, (0.5, 0.5)).is_none());
        assert!(velocity_pair(&x, &x, Some((&f64s, 2.0)), (0.5, 0.5)).is_none());
    }
}
