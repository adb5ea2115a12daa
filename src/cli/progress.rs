//! A progress bar on stderr for long runs (indicatif; drawn only when stderr is a terminal,
//! so logs and pipes stay clean).

use serde_json::Value;
use steerdiff_guidance::TraceSink;

/// Ticks a bar for every finished step, passing the step on to an inner trace, if any.
pub struct Progress<'a> {
    bar: indicatif::ProgressBar,
    inner: Option<&'a mut dyn TraceSink>,
}

impl<'a> Progress<'a> {
    /// A bar of `steps` steps (runs that repeat the schedule, such as searches, extend it).
    pub fn new(steps: usize, inner: Option<&'a mut dyn TraceSink>) -> Progress<'a> {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(steps as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, ~{eta} left",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix("steerdiff");
        Progress { bar, inner }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl TraceSink for Progress<'_> {
    fn record(&mut self, line: Value) -> steerdiff_guidance::Result<()> {
        if super::interrupt::interrupted() {
            return Err(steerdiff_guidance::Error::Sink(
                "interrupted by a stop signal".into(),
            ));
        }
        if self.bar.position() + 1 > self.bar.length().unwrap_or(0) {
            self.bar.inc_length(self.bar.length().unwrap_or(1).max(1));
        }
        self.bar.inc(1);
        match self.inner.as_mut() {
            Some(t) => t.record(line),
            None => Ok(()),
        }
    }
}
