//! The `steerdiff` command line; the work is done by the library (`steerdiff::cli`).

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use steerdiff::cli::invocation;
use steerdiff::cli::{self, Cli, Command};
use steerdiff::error::{exit_code, one_line, EXIT_FAILURE};

/// candle allocates a fresh buffer for every tensor op; glibc's malloc hands large ones back to
/// the kernel immediately, so each op page-faults its output in again. mimalloc keeps freed
/// pages for reuse (measured on the toy DiT: see docs/toy-training.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the 16th entry of `mi_option_e` in the vendored
/// `mimalloc.h`, v2 and v3 alike; libmimalloc-sys exposes no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc (v3, which libmimalloc-sys builds) returns freed pages to the kernel a
/// second after they were freed; a training step of seconds frees and re-allocates the same
/// large buffers, so it keeps page-faulting them in again. Never purging measured 10 % faster on a toy U-Net step (3.05 → 2.75 s). Same as
/// running with `MIMALLOC_PURGE_DELAY=-1`, which still overrides this.
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called once at the start of `main`, before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> ExitCode {
    keep_freed_pages();
    steerdiff::cli::interrupt::install();
    // `generate --config FILE` becomes the flags it holds, before clap sees the arguments.
    let argv = match invocation::expand_config(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return ExitCode::from(exit_code(&e));
        }
    };
    // clap's own parse errors (and --help / --version) keep clap's behaviour and exit codes.
    let matches = Cli::command().get_matches_from(argv);
    let mut args = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let pool = match args.thread_pool() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return ExitCode::from(exit_code(&e));
        }
    };
    if let (Command::Generate(g), Some(m)) =
        (&mut args.command, matches.subcommand_matches("generate"))
    {
        g.flags = invocation::explicit_flags(m, &invocation::NOT_RECORDED);
    }
    // A panic is a bug; report it on one line like any other error.
    panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("{what}{at}");
        eprintln!(
            "error: internal error (a bug; please report it): {}",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }));
    match panic::catch_unwind(AssertUnwindSafe(|| pool.install(|| cli::execute(args)))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) if steerdiff::cli::interrupt::interrupted() => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(steerdiff::cli::interrupt::EXIT_INTERRUPTED)
        }
        Ok(Err(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
        Err(_) => ExitCode::from(EXIT_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_index_is_the_one_whose_default_is_1000_ms() {
        // (Run without MIMALLOC_PURGE_DELAY in the environment, which would override it.)
        // SAFETY: reads an option; the test harness's threads do not set options.
        let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            value, 1000,
            "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
        );
    }
}
