//! `--trace FILE`: one JSON line per step, written so that it is never half there.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;
use steerdiff_guidance::TraceSink;

use super::staged::{Staged, TempFile};
use crate::error::input_error;

/// A [`TraceSink`] writing one JSON line per step to a temporary next to its destination,
/// renamed into place by [`JsonlTrace::finish`] (and removed if the run fails).
#[derive(Debug)]
pub struct JsonlTrace {
    temp: TempFile,
    writer: Option<BufWriter<File>>,
    error: Option<std::io::Error>,
}

impl JsonlTrace {
    /// Opens the temporary for `dest`; its directory must exist. Errors name the path (exit
    /// code 2).
    pub fn create(dest: &Path) -> Result<JsonlTrace> {
        match TempFile::new(dest) {
            Ok((temp, file)) => Ok(JsonlTrace {
                temp,
                writer: Some(BufWriter::new(file)),
                error: None,
            }),
            Err(e) => input_error!(
                "cannot write trace file `{}`: {}; choose a writable --trace FILE",
                dest.display(),
                e.root_cause()
            ),
        }
    }

    /// The I/O error that stopped recording, if one did (the engine only sees that recording
    /// failed; this is the reason).
    pub fn take_error(&mut self) -> Option<anyhow::Error> {
        self.error.take().map(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot write trace file `{}`",
                self.temp.dest.display()
            ))
        })
    }

    /// Flushes the trace and hands it to `staged`, to be renamed into place with the run's
    /// other files.
    pub fn finish_into(mut self, staged: &mut Staged) -> Result<()> {
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        if let Some(mut w) = self.writer.take() {
            w.flush()
                .and_then(|_| w.get_ref().sync_all())
                .with_context(|| {
                    format!("cannot write trace file `{}`", self.temp.dest.display())
                })?;
        }
        staged.adopt(self.temp);
        Ok(())
    }
}

impl TraceSink for JsonlTrace {
    fn record(&mut self, line: Value) -> steerdiff_guidance::Result<()> {
        let result = match self.writer.as_mut() {
            Some(w) => serde_json::to_writer(&mut *w, &line)
                .map_err(std::io::Error::from)
                .and_then(|_| w.write_all(b"\n")),
            None => Err(std::io::Error::other("the trace is already finished")),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = format!(
                    "cannot write trace file `{}`: {e}",
                    self.temp.dest.display()
                );
                self.error = Some(e);
                // The engine's error type has no I/O variant; the caller reports `take_error`.
                Err(steerdiff_guidance::Error::Sink(message))
            }
        }
    }
}
