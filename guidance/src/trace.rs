//! The per-step trace: one JSON object per step (written as JSONL by the CLI's `--trace`).
//!
//! The engine records the step index, timestep, α and σ; strategies add their own fields
//! (guidance scales, ESS, weights, ancestors, rewards, chosen candidates) under their name.

use serde_json::{Map, Value};

/// Where trace lines go. The engine has no file I/O; the CLI writes JSONL.
pub trait TraceSink {
    /// Receives one finished step line.
    fn record(&mut self, line: Value) -> crate::Result<()>;
}

impl TraceSink for Vec<Value> {
    fn record(&mut self, line: Value) -> crate::Result<()> {
        self.push(line);
        Ok(())
    }
}

/// The line under construction for the current step.
pub type TraceLine = Map<String, Value>;
