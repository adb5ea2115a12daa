//! # steerdiff-pipelines
//!
//! Real things behind the engine's traits: models (the exact Gaussian-mixture denoiser today;
//! the toy models and the Stable Diffusion / SD3 / FLUX families through candle-transformers),
//! rewards, and loading.

#![warn(missing_docs)]

pub mod error;
pub mod gmm;

pub use error::{Error, Result};
pub use gmm::{GmmDenoiser, GmmSpec};
