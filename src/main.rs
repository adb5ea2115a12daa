//! The `steerdiff` command line; the work is done by the library (`steerdiff::cli`).

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use steerdiff::cli::{self, Cli, Command};
use steerdiff::error::{exit_code, one_line, EXIT_FAILURE};
use steerdiff::invocation;

/// candle allocates a fresh buffer for every tensor op; glibc's malloc hands large ones back to
/// the kernel immediately, so each op page-faults its output in again. mimalloc keeps freed
/// pages for reuse (measured on the toy DiT: see README, "Speed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
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
    match panic::catch_unwind(AssertUnwindSafe(|| cli::execute(args))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
        Err(_) => ExitCode::from(EXIT_FAILURE),
    }
}
