//! The steering of a run: its rewards (the reward grammar, or a library user's own Rust
//! reward) and its strategy, built against the loaded model.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use steerdiff_guidance::Reward;
use steerdiff_pipelines::model::{Family, Model, RewardBuilder, RewardSettings};

use super::options::Options;
use super::resolve::Conditioning;
use super::strategy::{self, Built, StrategyArgs, Target};
use crate::error::input_error;

/// A run's steering, built.
pub(super) struct Steering {
    /// The strategy's hooks (or noise search).
    pub strategy: Built,
    /// Its flags as recorded (a Rust reward named `rust:NAME`).
    pub args: StrategyArgs,
    /// The `--eval-reward`, measured on final samples only.
    pub eval_reward: Option<Arc<dyn Reward>>,
    /// What further rewards are built from.
    pub settings: RewardSettings,
}

/// Builds the rewards and the strategy of a run on `model` (conditioned as `c`, CFG
/// `cfg_scale`, `steps` steps); loads the weaker twin into `guide` when the strategy needs one
/// and the run named none.
pub(super) fn steering(
    model: &Model,
    opts: &Options,
    c: &Conditioning,
    cfg_scale: f64,
    steps: usize,
    guide: &mut Option<Model>,
) -> Result<Steering> {
    let text = model.family() == Family::TextToImage;
    let settings = RewardSettings {
        plugins: opts.strategy.plugin.options()?,
        prompt: c.texts.first().cloned(),
        clip_model: opts
            .clip_model
            .clone()
            .unwrap_or_else(|| RewardSettings::default().clip_model),
    };
    let rewards = RewardBuilder::new(model, settings.clone());
    // A library user's own reward stands in for `--reward` (recorded as `rust:NAME`).
    let custom = opts.custom_reward.as_ref().map(|c| c.0.clone());
    let custom_spec = custom.as_ref().map(|r| format!("rust:{}", r.name()));
    let mut strategy_args = opts.strategy.clone();
    if let Some(spec) = &custom_spec {
        if strategy_args.reward.is_some() {
            input_error!("give either a reward spec or a Rust reward, not both");
        }
        strategy_args.reward = Some(spec.clone());
    }
    let reward = |spec: &str| -> Result<Arc<dyn Reward>> {
        match (&custom, &custom_spec) {
            (Some(r), Some(s)) if s == spec => Ok(r.clone()),
            _ => Ok(rewards.build(spec)?),
        }
    };
    // The guidance classifier, loaded only when the strategy reads it: the model's own, or
    // for text-to-image models a zero-shot CLIP classifier over the prompt and --zero-shot.
    let classifier = || -> Result<_> {
        if !text {
            return Ok(model.classifier()?);
        }
        if opts.strategy.per_step.zero_shot.is_empty() {
            return Ok(None);
        }
        let texts: Vec<&str> = c.texts.iter().map(String::as_str).collect();
        Ok(Some(rewards.zero_shot(&texts)?))
    };
    let target = Target {
        model: model.source(),
        toy: model.family() == Family::Toy,
        flow: model.denoiser().path().is_flow(),
        sample_shape: model.denoiser().sample_shape(),
        cond: c.cond,
        cfg: cfg_scale,
        classifier: &classifier,
        has_guide: guide.is_some() || model.family() == Family::Toy,
        text,
        device: model.device().clone(),
    };
    let strategy = strategy::build(
        &strategy_args,
        steps,
        &target,
        opts.observation.as_ref(),
        &reward,
    )?;
    if guide.is_some() && !strategy.needs_guide() {
        input_error!("--guide-model is read by --guidance autoguidance and --gfcg-guide weak only");
    }
    if strategy.needs_guide() && guide.is_none() {
        *guide = model
            .weak_twin()
            .context("loading the guiding model `toy-weak`")?;
    }
    let eval_reward = match &opts.strategy.eval_reward {
        Some(spec) => Some(rewards.build(spec).context("--eval-reward")?),
        None => None,
    };
    Ok(Steering {
        strategy,
        args: strategy_args,
        eval_reward,
        settings,
    })
}
