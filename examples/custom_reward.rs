//! Steer the embedded toy model with a reward written in Rust: FK steering (4 particles) on
//! class `star`, towards bright images.
//!
//! ```text
//! cargo run --release --example custom_reward -- OUT_DIR
//! ```

use std::sync::Arc;

use steerdiff::candle::{DType, Tensor};
use steerdiff::guidance::{Result, Reward, RewardContext};
use steerdiff::{LoadOptions, Pipeline, Request, StrategyKind};

/// Prefers bright images: the mean pixel value of x̂0 (pixels in [-1, 1]).
struct Bright;

impl Reward for Bright {
    fn name(&self) -> &str {
        "bright"
    }

    fn score(&self, x0: &Tensor, _cx: &RewardContext) -> Result<Vec<f64>> {
        let mean = x0.flatten_from(1)?.mean(1)?.to_dtype(DType::F64)?;
        Ok(mean.to_vec1::<f64>()?)
    }
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "custom-reward-out".into());
    std::fs::create_dir_all(&out)?;
    let mut toy = Pipeline::load("toy", &LoadOptions::default())?;
    let request = Request::class("star")
        .steps(30)
        .cfg(3.0)
        .samples(2, 0)
        .strategy(StrategyKind::Fk, 4)
        .reward(Arc::new(Bright));
    for g in toy.generate(&request)? {
        let name = format!("{out}/star-{}-{}.png", g.record.group, g.record.particle);
        if let Some(image) = &g.image {
            image.save(&name)?;
        }
        println!("{name}: reward {:?}", g.record.reward);
    }
    Ok(())
}
