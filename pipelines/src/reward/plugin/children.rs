//! The plugin children alive in this process, each in its own process group, so that a
//! timeout, a failure or a signal to steerdiff stops the plugin *and everything it started*
//! (a Python plugin's worker processes, a shell's children).
//!
//! The list is process-wide because a signal handler must reach every group at once
//! ([`kill_all`]); each stdio child (`plugin::stdio`) registers on spawn and leaves when reaped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Process-group ids of live plugin children.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Set by [`kill_all`]: no plugin is started again (a retry would restart a killed one).
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether plugins are being stopped for good (a stop signal arrived).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Registers the group of a child just spawned with `process_group(0)` (its pid).
pub fn register(pgid: u32) {
    if let Ok(mut live) = LIVE.lock() {
        live.push(pgid as i32);
    }
}

/// Forgets a reaped child's group.
pub fn unregister(pgid: u32) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|&g| g != pgid as i32);
    }
}

/// Sends SIGKILL to the whole process group `pgid`.
pub fn kill_group(pgid: u32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
        unsafe {
            libc::kill(-(pgid as i32), libc::SIGKILL);
        }
    }
}

/// Kills every live plugin group (from a signal handler: it takes no lock it could wait on).
pub fn kill_all() {
    STOPPING.store(true, Ordering::SeqCst);
    if let Ok(live) = LIVE.try_lock() {
        for &g in live.iter() {
            kill_group(g as u32);
        }
    }
}
