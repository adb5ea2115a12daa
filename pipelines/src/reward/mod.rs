//! Rewards: scores on `x̂0` that strategies steer towards.
//!
//! Each reward implements [`steerdiff_guidance::Reward`]: batched, one score per row, in order.

pub mod brightness;
pub mod ensemble;
pub mod many_sample;
pub mod plugin;
pub mod vector;

pub use brightness::Brightness;
pub use ensemble::{Ensemble, EnsembleMode};
pub use many_sample::ManySample;
pub use plugin::{OnError, PluginOptions, PluginReward, PluginTarget};
pub use vector::{Constant, Linear, Quadratic};

use std::sync::Arc;

use steerdiff_guidance::Reward;

use crate::{Error, Result};

/// Parses a reward for vector-valued samples (mixtures):
/// `quadratic:M1,M2,…` (`−‖x − m‖²/2`), `linear:W1,W2,…` (`w·x`), `constant:C`.
pub fn parse_vector_reward(text: &str, dim: usize) -> Result<Arc<dyn Reward>> {
    let (kind, args) = text.split_once(':').unwrap_or((text, ""));
    let numbers = || -> Result<Vec<f64>> {
        args.split(',')
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| Error::Spec(format!("reward `{text}`: `{v}` is not a number")))
            })
            .collect()
    };
    let vector = |what: &str| -> Result<Vec<f64>> {
        let v = numbers()?;
        if v.len() == 1 && dim > 1 {
            return Ok(vec![v[0]; dim]);
        }
        if v.len() != dim || v.iter().any(|x| !x.is_finite()) {
            return Err(Error::Spec(format!(
                "reward `{text}`: {what} needs {dim} finite numbers (or one for all), got {}",
                v.len()
            )));
        }
        Ok(v)
    };
    match kind {
        "quadratic" => Ok(Arc::new(Quadratic::new(vector("the target m")?))),
        "linear" => Ok(Arc::new(Linear::new(vector("the weights w")?))),
        "constant" => {
            let v = numbers()?;
            match v.as_slice() {
                [c] if c.is_finite() => Ok(Arc::new(Constant(*c))),
                _ => Err(Error::Spec(format!(
                    "reward `{text}`: constant needs one number"
                ))),
            }
        }
        _ => Err(Error::Spec(format!(
            "unknown reward `{kind}` (valid here: quadratic:M, linear:W, constant:C)"
        ))),
    }
}
