//! # steerdiff
//!
//! Steer pretrained diffusion and flow models at inference time, without gradients through the
//! model, on the CPU or a GPU. This crate is the facade: a high-level API ([`Pipeline`],
//! [`Request`]), the engine ([`guidance`]) and the models ([`pipelines`], every family behind
//! one [`Model`]) re-exported, candle too ([`candle`]), and what the `steerdiff` command line
//! is made of, layered one way: [`cli`] (clap types) → [`run`] (clap-free [`Options`] → one
//! [`Job`] for every model and device) → [`output`] (files that are never half there).
//!
//! ## Example: steer the toy model with your own Rust reward
//!
//! ```
//! use std::sync::Arc;
//! use steerdiff::candle::{DType, Tensor};
//! use steerdiff::guidance::{Result, Reward, RewardContext};
//! use steerdiff::{LoadOptions, Pipeline, Request, StrategyKind};
//!
//! struct Bright; // prefers bright images: the mean pixel of x̂0
//! impl Reward for Bright {
//!     fn name(&self) -> &str { "bright" }
//!     fn score(&self, x0: &Tensor, _cx: &RewardContext) -> Result<Vec<f64>> {
//!         Ok(x0.flatten_from(1)?.mean(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let mut toy = Pipeline::load("toy", &LoadOptions::default())?; // `LoadOptions { device, .. }`
//! let request = Request::class("star").steps(8).cfg(3.0)
//!     .strategy(StrategyKind::Fk, 4).reward(Arc::new(Bright));
//! let images = toy.generate(&request)?;
//! assert_eq!(images.len(), 1); // the best of the 4 particles
//! assert!(images.iter().all(|g| g.image.is_some() && g.record.reward.is_some()));
//! # Ok(())
//! # }
//! ```
//!
//! ## Example: sample a 1-D Gaussian mixture
//!
//! ```
//! use steerdiff::pipelines::GmmSpec;
//! use steerdiff::{Job, LoadOptions, Model, Options};
//!
//! # fn main() -> anyhow::Result<()> {
//! let spec = GmmSpec::from_json(
//!     r#"{"dim": 1, "components": [{"weight": 0.5, "mean": [-2], "std": 0.3},
//!                                  {"weight": 0.5, "mean": [2], "std": 0.3}]}"#,
//! )?;
//! let model = Model::from_mixture("gmm:<inline>", spec, &LoadOptions::default())?;
//! let job = Job::new(model, &Options { n: 8, steps: Some(20), ..Options::default() })?;
//! let outcome = job.run(None)?;
//! let samples = steerdiff::output::samples(&outcome.population, 0)?;
//! assert_eq!(samples.len(), 8);
//! assert!(samples.iter().all(|s| (s.x[0].abs() - 2.0).abs() < 1.5)); // near a mode
//! # Ok(())
//! # }
//! ```
//!
//! ## Example: your own reward, in process
//!
//! A reward is any type implementing [`guidance::Reward`]: batched, one score per row, in
//! order. Here FK steering tilts a two-mode mixture towards `x > 0` with a hand-written reward
//! (a plugin in another language would instead be a `stdio:`/`http://` reward spec, see
//! `docs/reward-plugins.md`).
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::{Device, Tensor};
//! use steerdiff::guidance::strategy::{FkSteering, ResampleSchedule};
//! use steerdiff::guidance::{sampler, Condition, Engine, GroupSpec, NoisePath, Population};
//! use steerdiff::guidance::{Reward, RewardContext, Result};
//! use steerdiff::pipelines::{GmmDenoiser, GmmSpec};
//!
//! /// r(x) = 4·x: prefers the right-hand mode.
//! struct Rightwards;
//! impl Reward for Rightwards {
//!     fn name(&self) -> &str { "rightwards" }
//!     fn score(&self, x0: &Tensor, _cx: &RewardContext) -> Result<Vec<f64>> {
//!         Ok(x0.flatten_all()?.to_vec1::<f32>()?.iter().map(|&x| 4.0 * x as f64).collect())
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let spec = GmmSpec::from_json(
//!     r#"{"dim": 1, "components": [{"weight": 0.5, "mean": [-2], "std": 0.3},
//!                                  {"weight": 0.5, "mean": [2], "std": 0.3}]}"#,
//! )?;
//! let path = NoisePath::flow();
//! let model = GmmDenoiser::new(spec, path.clone(), "gmm")?;
//! let s = sampler::by_name("flow-euler", &path, 20, Some(1.0))?;
//! let fk = FkSteering::new(Arc::new(Rightwards), 1.0, ResampleSchedule { start: 4, end: None, every: 4 });
//! let groups = [GroupSpec { seed: 0, cond: Condition::Null, particles: 8 }];
//! let pop = Population::new(&groups, &[1], s.schedule.init_noise_sigma, &Device::Cpu)?;
//! let engine = Engine {
//!     models: vec![&model],
//!     schedule: &s.schedule,
//!     solver: s.solver.as_ref(),
//!     guidance: vec![Box::new(fk)],
//! };
//! let out = engine.run(pop, None)?;
//! let xs = out.population.x.flatten_all()?.to_vec1::<f32>()?;
//! assert!(xs.iter().filter(|&&x| x > 0.0).count() >= 6, "{xs:?}"); // mostly the right mode
//! # Ok(())
//! # }
//! ```
//!
//! ## Command line
//!
//! ```text
//! steerdiff generate --model gmm:SPEC.json [--path vp|flow] [--class C] [--sampler NAME]
//!                    [--steps N] [--eta E] [--cfg S [--cfg-rescale PHI] [--cfg-interval LO,HI]]
//!                    [-n N] [--seed S] -o DIR [--trace FILE]
//! steerdiff list
//! ```
//!
//! Group `g` of a run uses seed `S + g`, so `-n 8 --seed 0` gives exactly the samples of
//! `-n 4 --seed 0` followed by those of `-n 4 --seed 4`; identical commands write
//! byte-identical `samples.json`. Errors are one line on stderr; exit code 2 means the command
//! as given cannot run, 1 that something failed while running ([`error`]).

#![warn(missing_docs)]

pub use steerdiff_guidance as guidance;
pub use steerdiff_pipelines as pipelines;

pub mod cli;
pub mod error;
pub mod output;
pub mod pipeline;
pub mod run;

pub use candle_core as candle;
pub use error::InputError;
pub use pipeline::{Generated, Pipeline, Request};
pub use run::strategy::StrategyKind;
pub use run::{Job, Keep, Options, Parameters, PathKind};
pub use steerdiff_pipelines::model::{load as load_model, LoadOptions, Model};
