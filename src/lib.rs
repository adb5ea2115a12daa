//! # steerdiff
//!
//! Steer pretrained diffusion and flow models at inference time, without gradients through the
//! model. This crate is the facade: it re-exports the engine ([`guidance`]) and the models
//! ([`pipelines`]), and holds what the `steerdiff` command line is made of — resolving
//! parameters into a run ([`run`]), writing outputs so they are never half there ([`output`]),
//! the command-line types ([`cli`]) and the tables `steerdiff list` prints ([`catalog`]).
//!
//! ## Example: sample a 1-D Gaussian mixture
//!
//! ```
//! use steerdiff::pipelines::GmmSpec;
//! use steerdiff::run::{Job, Model, Options};
//!
//! # fn main() -> anyhow::Result<()> {
//! let spec = GmmSpec::from_json(
//!     r#"{"dim": 1, "components": [{"weight": 0.5, "mean": [-2], "std": 0.3},
//!                                  {"weight": 0.5, "mean": [2], "std": 0.3}]}"#,
//! )?;
//! let job = Job::new(Model::gmm(spec), &Options { n: 8, steps: 20, ..Options::default() })?;
//! let outcome = job.run(None)?;
//! let samples = steerdiff::output::samples(&outcome.population)?;
//! assert_eq!(samples.len(), 8);
//! assert!(samples.iter().all(|s| (s.x[0].abs() - 2.0).abs() < 1.5)); // near a mode
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

pub mod catalog;
pub mod cli;
pub mod error;
pub mod eval;
pub mod inpaint_demo;
pub mod observation;
pub mod output;
pub mod per_step;
pub mod run;
pub mod strategy;
pub mod text2img;
pub mod toy;
pub mod toy_eval;
pub mod toy_grad;

pub use error::InputError;
pub use run::{Job, Model, Options, Parameters, PathKind};
