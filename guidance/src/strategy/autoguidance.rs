//! Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself",
//! NeurIPS 2024): `D_w = D_bad + w·(D_good − D_bad)`, with `D_bad` a smaller or less-trained
//! version of the same model under the *same* condition. As a term on the conditional
//! prediction: `(w − 1)·(x̂0_good − x̂0_bad)`. One extra row per particle, of the guiding model.

use crate::guidance::{Context, Guidance, Needs, Request, Step};
use crate::population::Population;
use crate::prediction::Prediction;
use crate::strategy::combine::{add_guidance, Weight};
use crate::{Error, Result};

/// Autoguidance with a guiding model.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoguidance {
    /// Guidance weight `w` (1 = none).
    pub scale: f64,
    /// Engine index of the guiding ("bad") model.
    pub guide: usize,
}

impl Guidance for Autoguidance {
    fn name(&self) -> String {
        format!("autoguidance(w={})", self.scale)
    }

    fn needs(&self) -> Needs {
        Needs {
            models: self.guide + 1,
            ..Needs::default()
        }
    }

    fn validate(&self, _steps: usize) -> Result<()> {
        if !self.scale.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "autoguidance weight must be a finite number, got {}",
                self.scale
            )));
        }
        if self.guide == 0 {
            return Err(Error::InvalidArgument(
                "autoguidance needs a guiding model other than the main model".into(),
            ));
        }
        Ok(())
    }

    fn requests(&self, _: &Step, pop: &Population, _: Option<&Prediction>) -> Result<Vec<Request>> {
        if self.scale == 1.0 {
            return Ok(Vec::new());
        }
        Ok(vec![Request {
            model: self.guide,
            conds: pop.conds(),
        }])
    }

    fn combine(
        &self,
        _: &Step,
        _: &Population,
        cond: &Prediction,
        extra: &[Prediction],
        guided: &mut Prediction,
        cx: &mut Context,
    ) -> Result<()> {
        if let Some(bad) = extra.first() {
            add_guidance(guided, cond, bad, Weight::Scalar(self.scale - 1.0))?;
        }
        cx.trace("autoguidance_scale", self.scale);
        Ok(())
    }
}
