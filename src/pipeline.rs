//! The high-level Rust API, in the spirit of diffusers' pipelines: load a model once by its
//! spec, ask for images with a [`Request`], get back [`Generated`] images with their records.
//!
//! ```
//! use std::sync::Arc;
//! use steerdiff::candle::Tensor;
//! use steerdiff::guidance::{Result, Reward, RewardContext};
//! use steerdiff::{LoadOptions, Pipeline, Request, StrategyKind};
//!
//! /// Prefers bright images: the mean pixel value of x̂0.
//! struct Bright;
//! impl Reward for Bright {
//!     fn name(&self) -> &str { "bright" }
//!     fn score(&self, x0: &Tensor, _cx: &RewardContext) -> Result<Vec<f64>> {
//!         let mean = x0.flatten_from(1)?.mean(1)?.to_dtype(steerdiff::candle::DType::F64)?;
//!         Ok(mean.to_vec1::<f64>()?)
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let mut toy = Pipeline::load("toy", &LoadOptions::default())?;
//! let request = Request::class("star")
//!     .steps(8)
//!     .cfg(3.0)
//!     .strategy(StrategyKind::Fk, 4)
//!     .reward(Arc::new(Bright));
//! let images = toy.generate(&request)?;
//! assert_eq!(images.len(), 1); // the best of FK's 4 particles (`.keep(Keep::All)`: all 4)
//! assert_eq!(images[0].image.as_ref().unwrap().dimensions(), (32, 32));
//! assert_eq!(images[0].record.seed, 0);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use anyhow::Result;
use image::RgbImage;
use steerdiff_guidance::Reward;
use steerdiff_pipelines::model::{LoadOptions, Model};

use crate::output::SampleRecord;
use crate::run::options::{CustomReward, Options};
use crate::run::strategy::StrategyKind;
use crate::run::Keep;
use crate::run::{results, Job, Parameters};

/// A loaded model, reused across requests.
#[derive(Debug)]
pub struct Pipeline {
    /// `None` only while a request runs.
    model: Option<Model>,
}

/// What to generate: a condition and any [`Options`] (steps, CFG, sampler, strategy,
/// reward, seeds…), built with chained calls.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The run's options; every builder method sets one of them.
    pub options: Options,
}

/// One generated sample.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The image (`None` for Gaussian mixtures, whose samples are vectors).
    pub image: Option<RgbImage>,
    /// Its record: group, particle, seed, the final sample, log-weight and reward.
    pub record: SampleRecord,
}

impl Request {
    /// Conditioned on a class (class-conditional models), by name or label.
    pub fn class(name: &str) -> Self {
        let mut r = Request::default();
        r.options.class = Some(name.to_string());
        r
    }

    /// Conditioned on a prompt (text-to-image models).
    pub fn prompt(text: &str) -> Self {
        let mut r = Request::default();
        r.options.prompt = Some(text.to_string());
        r
    }

    /// Unconditional.
    pub fn unconditional() -> Self {
        Request::default()
    }

    /// Solver steps.
    pub fn steps(mut self, steps: usize) -> Self {
        self.options.steps = Some(steps);
        self
    }

    /// Classifier-free guidance scale.
    pub fn cfg(mut self, scale: f64) -> Self {
        self.options.cfg = Some(scale);
        self
    }

    /// Sampler (or scheduler) name, see `steerdiff list`.
    pub fn sampler(mut self, name: &str) -> Self {
        self.options.sampler = Some(name.to_string());
        self
    }

    /// `n` independent samples (groups), group `g` seeded `seed + g`.
    pub fn samples(mut self, n: usize, seed: u64) -> Self {
        self.options.n = n;
        self.options.seed = seed;
        self
    }

    /// A steering strategy with `particles` particles (or candidates) per sample.
    pub fn strategy(mut self, kind: StrategyKind, particles: usize) -> Self {
        self.options.strategy.kind = kind;
        self.options.strategy.particles = particles;
        self
    }

    /// The reward the strategy steers towards: any Rust type implementing [`Reward`].
    pub fn reward(mut self, reward: Arc<dyn Reward>) -> Self {
        self.options.custom_reward = Some(CustomReward(reward));
        self
    }

    /// Which final particles come back: each sample's best (the default) or, with
    /// [`Keep::All`], a population strategy's every particle.
    pub fn keep(mut self, keep: Keep) -> Self {
        self.options.keep = keep;
        self
    }

    /// The reward by its command-line spec (`classifier`, `jpeg`, `stdio:python3 …`).
    pub fn reward_spec(mut self, spec: &str) -> Self {
        self.options.strategy.reward = Some(spec.to_string());
        self
    }
}

impl Pipeline {
    /// Loads the model `spec` names (`toy`, `gmm:SPEC.json`, `sd15`, a diffusers folder, …).
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Pipeline> {
        Ok(Pipeline::from_model(steerdiff_pipelines::model::load(
            spec, opts,
        )?))
    }

    /// A pipeline around a model already loaded.
    pub fn from_model(model: Model) -> Pipeline {
        Pipeline { model: Some(model) }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        self.model
            .as_ref()
            .expect("the model is back after every request")
    }

    /// Runs `request` and returns every final sample with its image, and the run record.
    pub fn generate_with_record(
        &mut self,
        request: &Request,
    ) -> Result<(Vec<Generated>, Parameters)> {
        let model = self.model.take().expect("no request is running");
        let mut opts = request.options.clone();
        opts.device = model.device().clone();
        let job = match Job::with_model(model, &opts) {
            Ok(job) => job,
            Err(rejected) => {
                let (e, model) = *rejected;
                self.model = Some(model);
                return Err(e);
            }
        };
        let outcome = job.run(None);
        let produced = outcome.and_then(|outcome| {
            let records = results::records(&job, &outcome)?;
            let images = job.model().images(&outcome.population.x)?;
            Ok((records, images))
        });
        let parameters = job.parameters().clone();
        self.model = Some(job.into_model());
        let (records, images) = produced?;
        let mut images = images.map(Vec::into_iter);
        let out = records
            .into_iter()
            .map(|record| Generated {
                image: images.as_mut().and_then(Iterator::next),
                record,
            })
            .collect();
        Ok((out, parameters))
    }

    /// Runs `request` and returns every final sample with its image.
    pub fn generate(&mut self, request: &Request) -> Result<Vec<Generated>> {
        Ok(self.generate_with_record(request)?.0)
    }
}
