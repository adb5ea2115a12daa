//! Errors of the pipelines crate.

/// Everything that can go wrong loading or running a model, reward or spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the engine.
    #[error(transparent)]
    Engine(#[from] steerdiff_guidance::Error),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// A model spec or config is invalid.
    #[error("{0}")]
    Spec(String),
}

/// Result with the pipelines' [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
