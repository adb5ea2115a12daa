//! Classifier-free guidance (Ho & Salimans 2022), with a guidance interval and CFG rescale.
//!
//! `x̂0 = x̂0_u + s·(x̂0_c − x̂0_u)`, i.e. the term `(s − 1)·(x̂0_c − x̂0_u)` added to the
//! conditional prediction (same for `ε̂`); `s = 1` is plain conditional sampling and costs no
//! extra row. The unconditional row is the particle's [`Condition::Null`] row (the null class,
//! or the negative prompt of a text model).
//!
//! * **Interval** (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval"): guide
//!   only while the VE noise level `σ/α` of the step lies in `[lo, hi]`.
//! * **Rescale** φ (Lin et al. 2024, "Common Diffusion Noise Schedules…", eq. 15–16): in the
//!   model's own parameterisation, `out_r = out_cfg · std(out_c)/std(out_cfg)` per row, then
//!   `φ·out_r + (1 − φ)·out_cfg` (diffusers' `guidance_rescale`).

use candle_core::{Tensor, D};

use crate::condition::Condition;
use crate::guidance::{Context, Guidance, Request, Step};
use crate::population::Population;
use crate::prediction::Prediction;
use crate::strategy::combine::{add_guidance, Weight};
use crate::{Error, Result};

/// Classifier-free guidance.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierFree {
    /// Guidance scale `s` (1 = none).
    pub scale: f64,
    /// Guide only for `σ/α` in this closed interval.
    pub interval: Option<(f64, f64)>,
    /// Rescale factor φ in `[0, 1]` (0 = off).
    pub rescale: f64,
}

impl ClassifierFree {
    /// CFG with scale `s`, always on, no rescale. Errors on a non-finite scale.
    pub fn new(scale: f64) -> Result<Self> {
        if !scale.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "CFG scale must be a finite number, got {scale}"
            )));
        }
        Ok(ClassifierFree {
            scale,
            interval: None,
            rescale: 0.0,
        })
    }

    /// Whether guidance applies at this step.
    fn active(&self, step: &Step, pop: &Population) -> bool {
        if self.scale == 1.0 || pop.particles.iter().all(|p| p.cond == Condition::Null) {
            return false;
        }
        match self.interval {
            None => true,
            Some((lo, hi)) => {
                let s = step.from.sigma_ve();
                lo <= s && s <= hi
            }
        }
    }
}

impl Guidance for ClassifierFree {
    fn name(&self) -> String {
        format!("cfg(scale={})", self.scale)
    }

    fn requests(
        &self,
        step: &Step,
        pop: &Population,
        _cond: Option<&Prediction>,
    ) -> Result<Vec<Request>> {
        if !self.active(step, pop) {
            return Ok(Vec::new());
        }
        Ok(Request::unconditional(pop))
    }

    fn combine(
        &self,
        step: &Step,
        pop: &Population,
        cond: &Prediction,
        extra: &[Prediction],
        guided: &mut Prediction,
        cx: &mut Context,
    ) -> Result<()> {
        let Some(uncond) = extra.first() else {
            cx.trace("cfg_scale", 1.0);
            return Ok(());
        };
        add_guidance(guided, cond, uncond, Weight::Scalar(self.scale - 1.0))?;
        if self.rescale > 0.0 {
            let p = step.parameterization;
            let out_cfg = p.from_prediction(guided, &step.from)?;
            let out_c = p.from_prediction(cond, &step.from)?;
            let ratio = (row_std(&out_c)? / row_std(&out_cfg)?)?;
            let rescaled = out_cfg.broadcast_mul(&ratio)?;
            let mixed =
                (rescaled.affine(self.rescale, 0.0)? + out_cfg.affine(1.0 - self.rescale, 0.0)?)?;
            *guided = p.to_prediction(&mixed, &pop.x, &step.from)?;
        }
        cx.trace("cfg_scale", self.scale);
        Ok(())
    }
}

/// Per-row unbiased standard deviation over all non-batch dimensions, shaped `[B, 1, …, 1]`.
fn row_std(t: &Tensor) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let flat = t.flatten_from(1)?;
    let n = flat.dim(1)? as f64;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let var = (flat.broadcast_sub(&mean)?.sqr()?.sum_keepdim(D::Minus1)? / (n - 1.0).max(1.0))?;
    let mut shape = vec![dims[0]];
    shape.extend(std::iter::repeat_n(1, dims.len() - 1));
    Ok(var.sqrt()?.reshape(shape)?)
}
