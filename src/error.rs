//! How errors reach the user: one line, and an exit code saying whose fault it was.
//!
//! * **2** — the command as given cannot run: a bad flag value, an unreadable or malformed spec,
//!   an unknown model / sampler / class name, an output path that cannot be created, a reward
//!   plugin that cannot start or answers outside its protocol, a model whose weights or inputs
//!   give NaN or ∞. Fix the command (or what it names) and run it again. (clap's own parse
//!   errors also exit with 2.)
//! * **1** — something failed while running (an I/O error while writing results, a plugin
//!   that crashed or timed out after its retries, an internal error).

use std::fmt;

/// An error in what the user asked for (exit code 2). The message names the problem and, where
/// there is one, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Returns `Err(InputError)` wrapped in [`anyhow::Error`], built from a format string.
macro_rules! input_error {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::error::InputError(format!($($arg)*))))
    };
}
pub(crate) use input_error;

/// Reads the text file `path` the user named as `what` (`the config file`), up to `max`
/// bytes; a missing, unreadable, oversized or non-UTF-8 file is an input error naming it.
pub fn read_user_text(path: &std::path::Path, what: &str, max: u64) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(max + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        input_error!("cannot read {what} `{}`: {e}", path.display());
    }
    if bytes.len() as u64 > max {
        input_error!(
            "{what} `{}` is longer than {max} bytes; is it the right file?",
            path.display()
        );
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => input_error!("{what} `{}` is not UTF-8 text", path.display()),
    }
}

/// Exit code for usage and input errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for failures while running.
pub const EXIT_FAILURE: u8 = 1;

/// The process exit code for `err`: [`EXIT_USAGE`] when anything in its chain is an input error
/// ([`InputError`], the engine's `InvalidArgument`/`Unsupported`, a pipelines spec error),
/// [`EXIT_FAILURE`] otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use steerdiff_pipelines::Error as P;
    let usage = err.chain().any(|e| {
        if e.is::<InputError>() {
            return true;
        }
        if let Some(g) = e.downcast_ref::<steerdiff_guidance::Error>() {
            return is_usage(g);
        }
        match e.downcast_ref::<P>() {
            Some(P::Spec(_)) => true,
            Some(P::Engine(g)) => is_usage(g),
            _ => false,
        }
    });
    if usage {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// Whether an engine error is the command's (or what it names) to fix.
fn is_usage(g: &steerdiff_guidance::Error) -> bool {
    use steerdiff_guidance::Error as G;
    matches!(
        g,
        G::InvalidArgument(_) | G::Unsupported(_) | G::RewardUnusable { .. } | G::NonFinite(_)
    )
}

/// The whole error chain on one line (`outer: inner: root`), with any line breaks inside a
/// message folded into spaces.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_chain() {
        let e = anyhow::Error::new(InputError("bad".into())).context("outer");
        assert_eq!(exit_code(&e), EXIT_USAGE);
        assert_eq!(one_line(&e), "outer: bad");
        let e = anyhow::Error::new(steerdiff_guidance::Error::InvalidArgument("x".into()));
        assert_eq!(exit_code(&e), EXIT_USAGE);
        let e = anyhow::anyhow!("disk full\nreally");
        assert_eq!(exit_code(&e), EXIT_FAILURE);
        assert_eq!(one_line(&e), "disk full really");
    }
}
