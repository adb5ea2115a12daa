//! What a strategy's build function is given ([`Inputs`]): the run's flags, the loaded
//! model's facts ([`Target`]) and a way to build rewards, with the checks strategies share.

use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use steerdiff_guidance::strategy::Selection;
use steerdiff_guidance::{Classifier, Condition, Reward};

use super::args::StrategyArgs;
use super::StrategyKind;
use crate::error::input_error;
use crate::run::observation::Observation;

/// A model's guidance classifier on x̂0, loaded when a strategy asks for it.
pub type ClassifierFn<'a> = dyn Fn() -> Result<Option<Arc<dyn Classifier>>> + 'a;

/// What strategies need to know about the loaded model.
pub struct Target<'a> {
    /// The model as named (`toy`, `gmm:…`), for messages.
    pub model: &'a str,
    /// True for the toy models (3×32×32 images in `[-1, 1]`).
    pub toy: bool,
    /// True when the model's path is a rectified flow.
    pub flow: bool,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// What every group is conditioned on.
    pub cond: Condition,
    /// The CFG scale of the run (1 = none).
    pub cfg: f64,
    /// The guidance classifier on x̂0: the model's own (the toy's, a mixture's Bayes
    /// classifier), or a zero-shot CLIP classifier over `--zero-shot` prompts for
    /// text-to-image models; `None` when the model has none.
    pub classifier: &'a ClassifierFn<'a>,
    /// A weaker guiding model can be engine model 1 (the toy's twin, or `--guide-model`).
    pub has_guide: bool,
    /// The model is text-conditioned (its classes are prompts).
    pub text: bool,
    /// The model's device (observations are put there).
    pub device: Device,
}

/// Everything a strategy is built from.
pub struct Inputs<'a> {
    /// The strategy being built.
    pub kind: StrategyKind,
    /// The run's strategy flags.
    pub args: &'a StrategyArgs,
    /// Steps of the schedule.
    pub steps: usize,
    /// The loaded model.
    pub target: &'a Target<'a>,
    /// The observed image and known pixels given by the library (replaces --image / --mask).
    pub observation: Option<&'a Observation>,
    /// Builds a reward from a spec of the reward grammar.
    pub rewards: &'a dyn Fn(&str) -> Result<Arc<dyn Reward>>,
}

impl Inputs<'_> {
    /// The strategy's name on the command line, for messages.
    pub fn name(&self) -> &'static str {
        self.kind.def().name
    }

    /// The `--reward` to steer towards ([`super::build`] has checked that one is given).
    pub fn reward(&self) -> Result<Arc<dyn Reward>> {
        match &self.args.reward {
            Some(spec) => (self.rewards)(spec),
            None => input_error!(
                "--guidance {} needs --reward SPEC (see `steerdiff list`)",
                self.name()
            ),
        }
    }

    /// The `--reward`, if one is given.
    pub fn optional_reward(&self) -> Result<Option<Arc<dyn Reward>>> {
        self.args
            .reward
            .as_deref()
            .map(|spec| (self.rewards)(spec))
            .transpose()
    }

    /// The model's guidance classifier on x̂0.
    pub fn classifier(&self) -> Result<Arc<dyn Classifier>> {
        let t = self.target;
        match (t.classifier)()? {
            Some(c) => Ok(c),
            None if t.text => input_error!(
                "--guidance {} on a text-to-image model reads a zero-shot CLIP classifier: \
                 name the competing prompts with --zero-shot \"TEXT;TEXT\" (the prompt is \
                 class 0; the CLIP model is --clip-model)",
                self.name()
            ),
            None => input_error!(
                "--guidance {} needs a classifier of the model's samples; `{}` has none (use \
                 --model toy)",
                self.name(),
                t.model
            ),
        }
    }

    /// The class the run steers towards (for text-to-image models: prompt 0 of the
    /// zero-shot classifier).
    pub fn class(&self) -> Result<u32> {
        match self.target.cond {
            Condition::Class(c) => Ok(c),
            Condition::Prompt(i) if self.target.text => Ok(i),
            _ => input_error!(
                "--guidance {} needs --class NAME: it steers towards a class",
                self.name()
            ),
        }
    }

    /// How best-of-N-style strategies pick among candidates: the argmax, or softmax(τ·r)
    /// with `--tau τ`.
    pub fn selection(&self) -> Result<Selection> {
        Ok(match self.args.tau {
            None => Selection::Argmax,
            Some(tau) if tau.is_finite() && tau > 0.0 => Selection::Softmax { tau },
            Some(tau) => input_error!("--tau must be a positive number (got {tau})"),
        })
    }
}

/// Refuses a non-finite value of `flag`.
pub fn finite(flag: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        input_error!("{flag} must be a finite number (got {v})");
    }
    Ok(())
}
