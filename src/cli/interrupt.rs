//! SIGINT, SIGTERM and SIGHUP: the first stops every reward plugin's process group at once
//! and lets the run stop at its next step, so that the output folder is left as it was
//! (staged temporaries removed as they drop) and the exit code is 130; a second one quits at
//! once.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether a stop signal has arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Installs the handler (once, from `main`); an error is reported and otherwise ignored,
/// since the run works without it.
pub fn install() {
    let result = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        steerdiff_pipelines::reward::plugin::children::kill_all();
        eprintln!(
            "\nsteerdiff: stopping (the output folder is left as it was; again to quit at once)"
        );
    });
    if let Err(e) = result {
        eprintln!("steerdiff: cannot handle stop signals ({e}); an interrupted run may leave plugins running");
    }
}

/// The exit code of an interrupted process.
pub const EXIT_INTERRUPTED: u8 = 130;
