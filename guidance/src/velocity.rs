//! A rectified-flow model's velocity output kept as it came, `(x_t, v)`, and converted to
//! `(x̂0, ε̂)` only when read (see [`Prediction`](crate::prediction::Prediction)).
//!
//! The conversion (`n = α + σ`): `x̂0 = x/n − (σ/n)·v`, `ε̂ = x/n + (α/n)·v`. CFG's term on two
//! such outputs at the same `x_t`, `guided = c + w·(c − r)` on both halves, is kept unconverted
//! too: [`Velocity::guided`] records `(r, w)` and does no arithmetic. Whoever reads the
//! prediction first converts it in one pass over `x`, `v` (and `r`): a read of `x̂0` or `ε̂`
//! writes both halves; DDIM's transition ([`Velocity::ddim_step`]) writes the new state and
//! `x̂0` (what the population keeps) in the same pass as the step's noise, so the guided pair
//! is never a separate pass and `ε̂` never a buffer. Per value the operations are those of
//! converting each prediction and then combining and stepping (`fused.rs`): the same bits on
//! every path.

use std::sync::OnceLock;

use candle_core::Tensor;

use crate::fused::{PairValues, Values, VelocityMap};
use crate::noise::Streams;

/// A velocity `v` at `x` (contiguous f32 CPU tensors of one shape, checked when made), with
/// CFG's term if one was added, and its conversion once made.
#[derive(Debug)]
pub(crate) struct Velocity {
    pub(crate) x: Tensor,
    pub(crate) v: Tensor,
    pub(crate) alpha: f64,
    pub(crate) sigma: f64,
    /// CFG's term `w·(pair(v) − pair(r))`, as `(r, w)`: `r` a velocity at the same `x`.
    pub(crate) term: Option<(Tensor, f64)>,
    x0: OnceLock<Tensor>,
    eps: OnceLock<Tensor>,
}

impl Velocity {
    /// `v` at `x` on the path's point `(α, σ)`, when both are contiguous f32 CPU tensors of
    /// one shape (what the one-pass conversion reads).
    pub(crate) fn new(x: &Tensor, v: &Tensor, alpha: f64, sigma: f64) -> Option<Self> {
        crate::fused::converts_velocity(x, v).then(|| Velocity {
            x: x.clone(),
            v: v.clone(),
            alpha,
            sigma,
            term: None,
            x0: OnceLock::new(),
            eps: OnceLock::new(),
        })
    }

    /// `cond + w·(cond − reference)`, unconverted: when both are plain velocities (no term)
    /// made at the same `x` (the same tensor) and point; `None` otherwise.
    pub(crate) fn guided(cond: &Velocity, reference: &Velocity, w: f64) -> Option<Self> {
        let same_point = cond.x.id() == reference.x.id()
            && (cond.alpha, cond.sigma) == (reference.alpha, reference.sigma);
        if !same_point || cond.term.is_some() || reference.term.is_some() {
            return None;
        }
        let mut guided = Velocity::new(&cond.x, &cond.v, cond.alpha, cond.sigma)?;
        guided.term = Some((reference.v.clone(), w));
        Some(guided)
    }

    /// Whether a pass has written `x̂0` (and so reading it costs nothing).
    pub(crate) fn is_converted(&self) -> bool {
        self.x0.get().is_some()
    }

    /// `x̂0`, converted now if no pass has written it.
    pub(crate) fn x0(&self) -> &Tensor {
        match self.x0.get() {
            Some(x0) => x0,
            None => self.convert().0,
        }
    }

    /// `ε̂`, converted now if no pass has written it.
    pub(crate) fn eps(&self) -> &Tensor {
        match self.eps.get() {
            Some(eps) => eps,
            None => self.convert().1,
        }
    }

    /// Both halves, written by one pass (a half already written keeps its tensor: the same
    /// values).
    fn convert(&self) -> (&Tensor, &Tensor) {
        let (x0, eps) = self
            .read(|values| values.pair(self.x.dims()))
            .flatten()
            .expect("a lazy velocity holds contiguous f32 CPU tensors of one shape");
        let x0 = self.x0.get_or_init(|| x0);
        (x0, self.eps.get_or_init(|| eps))
    }

    /// DDIM's transition to `(α_s, d)` with noise `(streams, c)` if any, from this velocity
    /// in one pass that also writes `x̂0` (kept here, so reading it next costs nothing);
    /// `None` when `x̂0` was already written (then the pair is there to step from) or the
    /// streams do not fit (see [`crate::fused::ddim_rows`]).
    pub(crate) fn ddim_step(
        &self,
        (alpha, direction): (f64, f64),
        noise: Option<(&Streams, f64)>,
    ) -> Option<Tensor> {
        if self.is_converted() {
            return None;
        }
        let (next, x0) = self
            .read(|values| {
                crate::fused::ddim_rows(values, self.x.dims(), (alpha, direction), noise, true)
            })
            .flatten()?;
        let _ = self.x0.set(x0?);
        Some(next)
    }

    /// Rows `start..start+len`, unconverted; `None` once converted (the pair is then narrowed).
    pub(crate) fn narrow(&self, start: usize, len: usize) -> Option<Self> {
        if self.is_converted() {
            return None;
        }
        let (x, v) = (
            self.x.narrow(0, start, len).ok()?,
            self.v.narrow(0, start, len).ok()?,
        );
        let mut part = Velocity::new(&x, &v, self.alpha, self.sigma)?;
        if let Some((r, w)) = &self.term {
            let r = r.narrow(0, start, len).ok()?;
            crate::fused::converts_velocity(&x, &r).then_some(())?;
            part.term = Some((r, *w));
        }
        Some(part)
    }

    /// Calls `f` with this velocity's values as a pass reads them; `None` if a tensor is not
    /// a contiguous f32 CPU tensor (never, for one made by [`Velocity::new`]).
    fn read<R>(&self, f: impl FnOnce(PairValues) -> R) -> Option<R> {
        let (x, v) = (Values::of(&self.x)?, Values::of(&self.v)?);
        let r = match &self.term {
            Some((r, w)) => Some((Values::of(r)?, *w as f32)),
            None => None,
        };
        Some(f(PairValues::Velocity {
            x: x.get(),
            v: v.get(),
            map: VelocityMap::new(self.alpha, self.sigma),
            term: r.as_ref().map(|(r, w)| (r.get(), *w)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::bits;
    use candle_core::Device;

    #[test]
    fn the_step_writes_x0_once_and_defers_to_the_pair_after() {
        let t = |seed: u64| {
            let v = crate::rng::StreamKey {
                seed,
                lineage: 0,
                step: 0,
                domain: crate::rng::Domain::Search,
            }
            .normals(24);
            Tensor::from_vec(v, (2, 12), &Device::Cpu).unwrap()
        };
        let (x, vc, vr) = (t(1), t(2), t(3));
        let cond = Velocity::new(&x, &vc, 0.3, 0.7).unwrap();
        let reference = Velocity::new(&x, &vr, 0.3, 0.7).unwrap();
        let guided = Velocity::guided(&cond, &reference, 2.5).unwrap();
        let fresh = Velocity::guided(&cond, &reference, 2.5).unwrap();
        let (x0, eps) = (fresh.x0().clone(), fresh.eps().clone());
        let next = guided.ddim_step((0.5, 0.4), None).unwrap();
        assert!(guided.is_converted() && guided.eps.get().is_none());
        assert_eq!(bits(guided.x0()), bits(&x0));
        let want = crate::fused::ddim_step(&x0, &eps, 0.5, 0.4, None).unwrap();
        assert_eq!(bits(&next), bits(&want));
        // Converted: the pair is there to step from, and rows are narrowed from it.
        assert!(guided.ddim_step((0.5, 0.4), None).is_none());
        assert!(guided.narrow(0, 1).is_none());
        assert_eq!(bits(guided.eps()), bits(&eps));
        // Another point or another `x`: no lazy term.
        let elsewhere = Velocity::new(&x.copy().unwrap(), &vr, 0.3, 0.7).unwrap();
        assert!(Velocity::guided(&cond, &elsewhere, 2.5).is_none());
        let later = Velocity::new(&x, &vr, 0.2, 0.8).unwrap();
        assert!(Velocity::guided(&cond, &later, 2.5).is_none());
    }
}
