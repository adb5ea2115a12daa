//! Progress on stderr for long runs: a bar (indicatif) when stderr is a terminal, and
//! otherwise a plain line every [`DEFAULT_LINE_SECONDS`] seconds (`STEERDIFF_PROGRESS_SECONDS`
//! sets another interval), so that logs of long runs show they are alive without filling up.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use steerdiff_guidance::TraceSink;

/// Seconds between progress lines when stderr is not a terminal.
pub const DEFAULT_LINE_SECONDS: f64 = 10.0;

/// Ticks a bar for every finished step, passing the step on to an inner trace, if any.
pub struct Progress<'a> {
    bar: indicatif::ProgressBar,
    /// Plain lines instead of the bar: the interval, and when the last line was printed.
    lines: Option<(Duration, Instant)>,
    inner: Option<&'a mut dyn TraceSink>,
}

/// The interval of plain progress lines: `STEERDIFF_PROGRESS_SECONDS` when it is a positive
/// number, else [`DEFAULT_LINE_SECONDS`].
fn line_interval() -> Duration {
    let seconds = std::env::var("STEERDIFF_PROGRESS_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(DEFAULT_LINE_SECONDS);
    Duration::from_secs_f64(seconds)
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
        let lines = (!std::io::stderr().is_terminal()).then(|| (line_interval(), Instant::now()));
        Progress { bar, lines, inner }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Prints a plain progress line when stderr is not a terminal and the interval has passed.
    fn line(&mut self) {
        let Some((every, last)) = &mut self.lines else {
            return;
        };
        if last.elapsed() < *every {
            return;
        }
        *last = Instant::now();
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        eprintln!(
            "steerdiff: step {pos}/{len}, {:.0} s elapsed, ~{:.0} s left",
            self.bar.elapsed().as_secs_f64(),
            self.bar.eta().as_secs_f64()
        );
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
        self.line();
        match self.inner.as_mut() {
            Some(t) => t.record(line),
            None => Ok(()),
        }
    }
}
