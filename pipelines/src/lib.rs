//! # steerdiff-pipelines
//!
//! Real things behind the engine's traits: models (the exact Gaussian-mixture denoiser today;
//! the toy models and the Stable Diffusion / SD3 / FLUX families through candle-transformers),
//! rewards, and loading.

#![warn(missing_docs)]

pub mod error;
pub mod gaussian;
pub mod gmm;
pub mod reward;
pub mod sd;
pub mod toy;

pub use error::{Error, Result};
pub use gaussian::GaussianDenoiser;
pub use gmm::{GmmClassifier, GmmDenoiser, GmmSpec};
pub use sd::StableDiffusion;
