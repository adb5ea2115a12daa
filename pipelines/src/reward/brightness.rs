//! Brightness: the mean value of an image, the simplest pixel reward.

use candle_core::{DType, Tensor};
use steerdiff_guidance::{Reward, RewardContext};

/// `r(x̂0) = mean(x̂0)` over every channel and pixel (the toy's pixels lie in `[-1, 1]`).
///
/// Summed left to right in `f64` over the `f32` values, so a plugin that sums the same way
/// (`examples/plugins/brightness_stdio.py`) reproduces it bit for bit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Brightness;

impl Reward for Brightness {
    fn name(&self) -> &str {
        "brightness"
    }

    fn score(&self, x0: &Tensor, _cx: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let rows = x0.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2::<f32>()?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut s = 0.0f64;
                for &v in r {
                    s += v as f64;
                }
                s / r.len().max(1) as f64
            })
            .collect())
    }
}
