//! `--trace FILE`: one JSON line per step, written so that it is never half there — or, when
//! FILE is a device or a FIFO (`/dev/stdout`, a pipe), streamed into it as the run goes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;
use steerdiff_guidance::TraceSink;

use super::staged::{is_special, Staged, TempFile};
use crate::error::input_error;

/// A [`TraceSink`] writing one JSON line per step to a temporary next to its destination,
/// renamed into place by [`JsonlTrace::finish_into`] (and removed if the run fails).
#[derive(Debug)]
pub struct JsonlTrace {
    /// The temporary renamed into place at the end (`None` when streaming into a special file).
    temp: Option<TempFile>,
    dest: std::path::PathBuf,
    writer: Option<BufWriter<File>>,
    error: Option<std::io::Error>,
}

impl JsonlTrace {
    /// Opens the temporary for `dest`; its directory must exist. Errors name the path (exit
    /// code 2).
    pub fn create(dest: &Path) -> Result<JsonlTrace> {
        if dest.is_dir() {
            input_error!(
                "--trace `{}` is a folder; give a file name, e.g. {}/trace.jsonl",
                dest.display(),
                dest.display()
            );
        }
        let opened = if is_special(dest) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(dest)
                .map(|f| (None, f))
                .map_err(anyhow::Error::from)
        } else {
            TempFile::new(dest).map(|(t, f)| (Some(t), f))
        };
        match opened {
            Ok((temp, file)) => Ok(JsonlTrace {
                temp,
                dest: dest.to_path_buf(),
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
            anyhow::Error::new(e)
                .context(format!("cannot write trace file `{}`", self.dest.display()))
        })
    }

    /// Flushes the trace and hands it to `staged`, to be renamed into place with the run's
    /// other files.
    pub fn finish_into(mut self, staged: &mut Staged) -> Result<()> {
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        let streamed = self.temp.is_none();
        if let Some(mut w) = self.writer.take() {
            // A device or pipe has nothing to sync (fsync fails on them).
            w.flush()
                .and_then(|_| {
                    if streamed {
                        Ok(())
                    } else {
                        w.get_ref().sync_all()
                    }
                })
                .with_context(|| format!("cannot write trace file `{}`", self.dest.display()))?;
        }
        if let Some(temp) = self.temp.take() {
            staged.adopt(temp);
        }
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
                let message = format!("cannot write trace file `{}`: {e}", self.dest.display());
                self.error = Some(e);
                // The engine's error type has no I/O variant; the caller reports `take_error`.
                Err(steerdiff_guidance::Error::Sink(message))
            }
        }
    }
}
