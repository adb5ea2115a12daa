//! # steerdiff-pipelines
//!
//! Real things behind the engine's traits: exact denoisers (Gaussian mixtures and Gaussians,
//! the ground truth of every test), the embedded toy models, the Stable Diffusion / SD3 / FLUX
//! families through candle-transformers with diffusers-format and hub loading, and rewards.
//! [`kernels`] holds the CPU kernels (convolution, attention, norms) the UNet and VAE run on.
//!
//! ```
//! use steerdiff_guidance::{Condition, Denoiser, NoisePath};
//! use steerdiff_pipelines::{GmmDenoiser, GmmSpec};
//!
//! let spec = GmmSpec::from_json(
//!     r#"{"dim": 1, "components": [{"weight": 1, "mean": [2.0], "std": 0.5}]}"#,
//! )?;
//! let model = GmmDenoiser::new(spec, NoisePath::flow(), "gmm")?;
//! assert_eq!(model.sample_shape(), vec![1]);
//! // At pure noise (α = 0, σ = 1) the exact posterior mean is the data mean.
//! let m = model.spec.posterior_mean(&[0.3], 0.0, 1.0, Condition::Null);
//! assert!((m[0] - 2.0).abs() < 1e-12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod fs;
pub mod gaussian;
pub mod gmm;
pub mod kernels;
pub mod model;
pub mod reward;
pub mod sd;
#[cfg(test)]
mod test_support;
pub mod toy;

pub use error::{Error, Result};
pub use gaussian::GaussianDenoiser;
pub use gmm::{GmmClassifier, GmmDenoiser, GmmSpec};
pub use sd::StableDiffusion;
