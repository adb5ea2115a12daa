//! The one error type of the engine.

/// Everything that can go wrong inside the guidance engine.
///
/// Messages name the problem and, where there is one, the fix: they are shown to users as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch, device, dtype).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// An argument is out of its valid range (steps = 0, η < 0, K = 0, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The combination asked for cannot work (a strategy needs what the model or sampler lacks).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A trace or output sink could not take what it was given (e.g. a full disk).
    #[error("could not write: {0}")]
    Sink(String),
    /// A reward could not score its inputs.
    #[error("reward `{name}` failed: {message}")]
    Reward {
        /// The reward's name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A reward that cannot be used as given: a plugin that does not start or answers outside
    /// its protocol (not JSON, wrong ids, an oversized payload), a reward that returns the
    /// wrong number of scores. Retrying cannot help; the reward, or the command naming it,
    /// must change.
    #[error("reward `{name}` cannot be used: {message}")]
    RewardUnusable {
        /// The reward's name.
        name: String,
        /// What the reward did wrong.
        message: String,
    },
    /// A model produced NaN or ∞ (non-finite weights or inputs): the step and model say where.
    #[error("{0}")]
    NonFinite(String),
}

/// Result with the engine's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Returns `Err(Error::InvalidArgument)` built from a format string.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::Error::InvalidArgument(format!($($arg)*)))
    };
}
