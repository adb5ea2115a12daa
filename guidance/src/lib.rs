//! # steerdiff-guidance
//!
//! The model-agnostic engine of steerdiff: the Gaussian path, prediction conversions, timestep
//! schedules, solvers, the particle population, and the guidance strategies that steer sampling
//! at inference time without a gradient through the model.
//!
//! Everything speaks one form: at a point `x_t = α·x0 + σ·ε` of the path, a model's output
//! (ε, v, velocity or x0) becomes the pair `(x̂0, ε̂)` ([`Prediction`]); guidance combines
//! predictions in that space; a [`Solver`] moves the [`Population`] to the next point of the
//! [`Schedule`]. A strategy is a [`Guidance`] with up to six hooks (requests, combine, steer,
//! expand, select, revisits), and strategies stack.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use steerdiff_guidance::{sampler, strategy::ClassifierFree, Condition, Denoiser, Engine,
//!     GroupSpec, NoisePath, Parameterization, Population, StepPoint};
//!
//! /// Data N(c, 0.1²) for class c: its posterior mean is closed-form.
//! struct Toy(NoisePath);
//! impl Denoiser for Toy {
//!     fn name(&self) -> &str { "toy" }
//!     fn parameterization(&self) -> Parameterization { Parameterization::Sample }
//!     fn path(&self) -> &NoisePath { &self.0 }
//!     fn sample_shape(&self) -> Vec<usize> { vec![1] }
//!     fn forward(&self, x: &Tensor, at: &StepPoint, conds: &[Condition])
//!         -> steerdiff_guidance::Result<Tensor> {
//!         let s2 = 0.01;
//!         let gain = at.alpha * s2 / (at.alpha * at.alpha * s2 + at.sigma * at.sigma);
//!         let mu: Vec<f32> = conds.iter()
//!             .map(|c| if let Condition::Class(k) = c { *k as f32 } else { 0.5 })
//!             .collect();
//!         let mu = Tensor::from_vec(mu, (conds.len(), 1), x.device())?;
//!         Ok((x.broadcast_sub(&mu.affine(at.alpha, 0.0)?)?.affine(gain, 0.0)? + &mu)?)
//!     }
//! }
//!
//! let model = Toy(NoisePath::flow());
//! let s = sampler::by_name("flow-euler", model.path(), 20, None)?;
//! let groups: Vec<GroupSpec> = (0..8)
//!     .map(|g| GroupSpec { seed: g, cond: Condition::Class(1), particles: 1 })
//!     .collect();
//! let pop = Population::new(&groups, &[1], s.schedule.init_noise_sigma, &Device::Cpu)?;
//! let engine = Engine {
//!     models: vec![&model],
//!     schedule: &s.schedule,
//!     solver: s.solver.as_ref(),
//!     guidance: vec![Box::new(ClassifierFree::new(2.0)?)],
//! };
//! let out = engine.run(pop, None)?;
//! let mean = out.population.x.mean_all()?.to_scalar::<f32>()?;
//! assert!(mean > 1.2, "CFG pushes class 1 away from the unconditional mean 0.5: {mean}");
//! assert_eq!(out.ledger.total_rows(), 8 * 20 * 2); // conditional + unconditional rows
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod chacha8;
pub mod classifier;
pub mod condition;
pub mod denoiser;
pub mod engine;
pub mod error;
mod fused;
pub mod guidance;
pub mod ledger;
pub mod noise;
mod normals;
pub mod path;
pub mod population;
pub mod prediction;
pub mod resample;
pub mod reward;
pub mod rng;
mod rows;
pub mod sampler;
pub mod schedule;
pub mod simd;
pub mod solver;
pub mod strategy;
#[cfg(test)]
mod test_support;
pub mod trace;
mod velocity;

pub use classifier::{ClassLogProb, Classifier};
pub use condition::Condition;
pub use denoiser::Denoiser;
pub use engine::{Engine, Outcome};
pub use error::{Error, Result};
pub use guidance::{Context, Guidance, Needs, Request, Step};
pub use ledger::{Ledger, Timing};
pub use noise::Noise;
pub use path::{BetaSchedule, NoisePath, StepPoint, VpPath};
pub use population::{GroupSpec, Particle, Population};
pub use prediction::{Parameterization, Prediction};
pub use resample::Resampling;
pub use reward::{Reward, RewardContext};
pub use sampler::Sampler;
pub use schedule::{Schedule, TimestepSpacing};
pub use schedule::{SchedulerClass, SchedulerConfig, SetTimesteps};
pub use solver::{Ddim, DpmSolverPp2M, Solver};
pub use trace::TraceSink;
