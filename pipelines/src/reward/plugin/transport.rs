//! How the engine reaches a plugin ([`Transport`]: a child's stdio or HTTP) and how a call
//! can fail ([`Failure`]).

use std::time::Duration;

use super::protocol::Request;

/// A transport failure: its message, whether trying again can help, and whether the plugin is
/// unusable as given (which makes it the user's to fix: exit code 2 once retries are spent).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What went wrong, for the user.
    pub message: String,
    /// Whether a retry can help (a crash or timeout can; a missing program cannot).
    pub retryable: bool,
    /// Whether the plugin cannot be used as given: it cannot start, or its answer broke the
    /// protocol (garbage, an oversized answer, wrong ids).
    pub unusable: bool,
}

impl Failure {
    /// A failure worth retrying (a crash, a timeout, a dropped connection).
    pub fn retry(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retryable: true,
            unusable: false,
        }
    }
    /// A failure no retry can fix (a missing program, a refused URL).
    pub fn fatal(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retryable: false,
            unusable: true,
        }
    }
    /// An answer outside the protocol; retried, since a fresh child may answer well.
    pub fn protocol(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retryable: true,
            unusable: true,
        }
    }
}

/// One way of reaching a plugin: send a message, wait at most `timeout` for the answer.
pub trait Transport: Send {
    /// Sends `header` + `payload` and returns the answer's header and payload.
    fn call(
        &mut self,
        header: &Request,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(serde_json::Value, Vec<u8>), Failure>;
    /// Drops any connection or process, so the next call starts afresh.
    fn reset(&mut self);
    /// The command or URL, for messages.
    fn describe_target(&self) -> String;
}
