//! Inpainting by replacement — the standard unguided baseline (Song et al. 2021, "Score-Based
//! Generative Modeling through SDEs", §5 / app. I.2; Lugmayr et al. 2022, RePaint, without
//! resampling): after every transition the known pixels of `x` are replaced by the noised
//! source at the new noise level,
//!
//! ```text
//! x_s ← m ⊙ (α_s·y + σ_s·z) + (1 − m) ⊙ x_s,   z ~ N(0, I) fresh each step
//! ```
//!
//! with `m` the known-pixel mask and `y` the source. The model is only ever called as in
//! unguided sampling (no extra rows). At the end of the path (`α = 1`, `σ = 0`) the known
//! pixels equal `y` exactly; the fill comes from the model's own prediction given the noised
//! context. `z` is drawn per particle from the stream [`Stream::Replacement`],
//! `(seed, lineage, 2^40 + visit·2^20 + step, Search)` (`visit` is 0 unless
//! [time travel](super::time_travel) revisits the step).

use candle_core::Tensor;

use crate::guidance::{Context, Guidance, Step};
use crate::population::Population;
use crate::rng::Stream;
use crate::{Error, Result};

/// Replace known pixels with the noised source after every step.
pub struct Replacement {
    /// 1 where the value is known, 0 where it is to be generated; shaped like one sample.
    pub mask: Tensor,
    /// The source (ignored where the mask is 0); shaped like one sample.
    pub target: Tensor,
}

impl Guidance for Replacement {
    fn name(&self) -> String {
        "replacement".into()
    }

    fn select(&self, step: &Step, pop: &mut Population, cx: &mut Context) -> Result<()> {
        let dims = pop.x.dims().to_vec();
        if dims[1..] != *self.mask.dims() || self.mask.dims() != self.target.dims() {
            return Err(Error::InvalidArgument(format!(
                "replacement: mask {:?} and source {:?} must both match the sample shape {:?}",
                self.mask.dims(),
                self.target.dims(),
                &dims[1..]
            )));
        }
        let z = pop.stream_noise(Stream::Replacement {
            step: step.index,
            visit: step.visit,
        })?;
        let dtype = pop.x.dtype();
        let dev = pop.x.device().clone();
        let mask = self.mask.to_dtype(dtype)?.to_device(&dev)?;
        let target = self.target.to_dtype(dtype)?.to_device(&dev)?;
        let known = z
            .affine(step.to.sigma, 0.0)?
            .broadcast_add(&target.affine(step.to.alpha, 0.0)?)?;
        let keep = mask.affine(-1.0, 1.0)?;
        pop.x = (known.broadcast_mul(&mask)? + pop.x.broadcast_mul(&keep)?)?;
        cx.trace("replacement_sigma", step.to.sigma);
        Ok(())
    }
}
