//! The combination the guidance-by-difference strategies share (CFG, autoguidance, GFCG,
//! dynamic CFG; diffusers' guiders share it the same way):
//!
//! ```text
//! guided ← guided + w·(cond − reference)        on x̂0 and on ε̂ alike
//! ```
//!
//! `cond` is the particle's conditional prediction, `reference` the prediction guided away from
//! (unconditional, a weaker model, a reference class) at the same `x_t`, and `w = scale − 1`.
//! Both halves get the same affine term, so `x_t = α·x̂0 + σ·ε̂` stays exact for the pair.
//!
//! The floating-point order is fixed: first the difference `cond − reference`, then its product
//! with `w`, then the sum with `guided`, each half on its own. A scalar weight multiplies with
//! `affine(w, 0)` in the tensor's dtype, a per-row weight with `broadcast_mul` — the forms the
//! strategies have always used, so their numbers are unchanged. (On the CPU a scalar weight's
//! whole term is one pass with those bits: `fused.rs`.)

use std::sync::Arc;

use candle_core::Tensor;

use crate::prediction::Prediction;
use crate::Result;

/// The weight `w` of a guidance term.
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    /// One weight for every row, applied as `affine(w, 0)`.
    Scalar(f64),
    /// One weight per row: a `[P, 1, …, 1]` tensor of the prediction's dtype and device (see
    /// [`row_weights`]), applied with `broadcast_mul`.
    PerRow(&'a Tensor),
}

impl Weight<'_> {
    /// `w·t`.
    fn scale(&self, t: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Weight::Scalar(w) => t.affine(*w, 0.0)?,
            Weight::PerRow(w) => t.broadcast_mul(w)?,
        })
    }
}

/// The difference `cond − reference` of two predictions at the same `x_t`, half by half.
pub fn difference(cond: &Prediction, reference: &Prediction) -> Result<Prediction> {
    Ok(Prediction::new(
        (cond.x0() - reference.x0())?,
        (cond.eps() - reference.eps())?,
    ))
}

/// `guided ← guided + w·delta` on both halves, for a `delta` already made by [`difference`]
/// (a strategy that also uses the difference itself, like dynamic CFG's scale search).
pub fn add_scaled(guided: &mut Prediction, delta: &Prediction, w: Weight) -> Result<()> {
    *guided = Prediction::new(
        (guided.x0() + w.scale(delta.x0())?)?,
        (guided.eps() + w.scale(delta.eps())?)?,
    );
    Ok(())
}

/// `guided ← guided + w·(cond − reference)` on both halves: the guidance term of CFG
/// (`reference` = unconditional), autoguidance (a weaker model), GFCG (a reference class) and
/// dynamic CFG.
pub fn add_guidance(
    guided: &mut Prediction,
    cond: &Prediction,
    reference: &Prediction,
    w: Weight,
) -> Result<()> {
    if let Weight::Scalar(w) = w {
        if let Some((x0, eps)) = velocity_guidance(guided, cond, reference, w) {
            *guided = Prediction::new(x0, eps);
            return Ok(());
        }
        if let Some((x0, eps)) = crate::fused::add_guidance(
            (guided.x0(), guided.eps()),
            (cond.x0(), cond.eps()),
            (reference.x0(), reference.eps()),
            w,
        ) {
            *guided = Prediction::new(x0, eps);
            return Ok(());
        }
    }
    add_scaled(guided, &difference(cond, reference)?, w)
}

/// The term in one pass from two unconverted velocity outputs (`fused.rs`), when `guided` is
/// still `cond` itself (no strategy has added a term yet) and `reference` was made at the same
/// `x` (the same tensor) and point: the common case of CFG on a flow model.
fn velocity_guidance(
    guided: &Prediction,
    cond: &Prediction,
    reference: &Prediction,
    w: f64,
) -> Option<(Tensor, Tensor)> {
    let (g, c, r) = (guided.velocity()?, cond.velocity()?, reference.velocity()?);
    let same_point = c.x.id() == r.x.id() && (c.alpha, c.sigma) == (r.alpha, r.sigma);
    if !Arc::ptr_eq(g, c) || !same_point {
        return None;
    }
    crate::fused::velocity_guidance(&c.x, &c.v, &r.v, (c.alpha, c.sigma), w)
}

/// Per-row weights `values` as a `[P, 1, …, 1]` tensor broadcasting against `like` (`P` rows),
/// made in f32 and then converted to `like`'s dtype, on `like`'s device.
pub fn row_weights(values: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![values.len()];
    shape.extend(std::iter::repeat_n(1, like.rank() - 1));
    Ok(Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn pred(seed: u64, dtype: DType) -> Prediction {
        let normals = |lineage| {
            let v = crate::rng::StreamKey {
                seed,
                lineage,
                step: 0,
                domain: crate::rng::Domain::Search,
            }
            .normals(2 * 3 * 4);
            Tensor::from_vec(v, (2, 3, 4), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        Prediction::new(normals(0), normals(1))
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(f64::to_bits)
            .collect()
    }

    /// The helper computes exactly the expressions the strategies wrote out before it.
    #[test]
    fn matches_the_written_out_combinations_bit_for_bit() {
        for dtype in [DType::F32, DType::F64] {
            let (cond, reference, start) = (pred(1, dtype), pred(2, dtype), pred(3, dtype));
            let w = 6.5 - 1.0;
            let mut guided = start.clone();
            add_guidance(&mut guided, &cond, &reference, Weight::Scalar(w)).unwrap();
            let x0 = (start.x0()
                + (cond.x0() - reference.x0())
                    .unwrap()
                    .affine(w, 0.0)
                    .unwrap())
            .unwrap();
            let eps = (start.eps()
                + (cond.eps() - reference.eps())
                    .unwrap()
                    .affine(w, 0.0)
                    .unwrap())
            .unwrap();
            assert_eq!(bits(guided.x0()), bits(&x0));
            assert_eq!(bits(guided.eps()), bits(&eps));

            let rows = row_weights(vec![0.25, 3.0], cond.x0()).unwrap();
            assert_eq!(rows.dims(), &[2, 1, 1]);
            let mut guided = start.clone();
            add_guidance(&mut guided, &cond, &reference, Weight::PerRow(&rows)).unwrap();
            let x0 = (start.x0()
                + (cond.x0() - reference.x0())
                    .unwrap()
                    .broadcast_mul(&rows)
                    .unwrap())
            .unwrap();
            assert_eq!(bits(guided.x0()), bits(&x0));
        }
    }

    /// CFG on a velocity model's unconverted outputs (one pass from the velocities) has the
    /// bits of converting both and combining the pairs, and is taken only where it applies.
    #[test]
    fn velocity_outputs_combine_with_the_bits_of_their_pairs() {
        use crate::path::StepPoint;
        use crate::prediction::Parameterization::Velocity;
        let at = StepPoint {
            timestep: 400.0,
            alpha: 0.6,
            sigma: 0.4,
        };
        let [x, vc, vr] = [4, 5, 6].map(|s| pred(s, DType::F32).x0().clone());
        let cond = Velocity.to_prediction(&vc, &x, &at).unwrap();
        let reference = Velocity.to_prediction(&vr, &x, &at).unwrap();
        assert!(cond.velocity().is_some() && reference.velocity().is_some());
        let pair = |p: &Prediction| Prediction::new(p.x0().clone(), p.eps().clone());
        let w = Weight::Scalar(4.5);
        let mut want = pair(&cond);
        add_guidance(&mut want, &pair(&cond), &pair(&reference), w).unwrap();
        // Fresh predictions, so that the fused pass is what computes the guided pair.
        let cond = Velocity.to_prediction(&vc, &x, &at).unwrap();
        let reference = Velocity.to_prediction(&vr, &x, &at).unwrap();
        let mut guided = cond.clone();
        assert!(velocity_guidance(&guided, &cond, &reference, 4.5).is_some());
        add_guidance(&mut guided, &cond, &reference, w).unwrap();
        assert_eq!(bits(guided.x0()), bits(want.x0()));
        assert_eq!(bits(guided.eps()), bits(want.eps()));
        // Not taken: a reference at another `x` (even with equal values), a `guided` that is
        // no longer `cond`; the general path then gives the same bits.
        let copy = x.copy().unwrap();
        let elsewhere = Velocity.to_prediction(&vr, &copy, &at).unwrap();
        assert!(velocity_guidance(&cond, &cond, &elsewhere, 4.5).is_none());
        let mut guided = cond.clone();
        add_guidance(&mut guided, &cond, &elsewhere, w).unwrap();
        assert_eq!(bits(guided.x0()), bits(want.x0()));
        assert!(velocity_guidance(&pair(&cond), &cond, &reference, 4.5).is_none());
    }
}
