//! What a run leaves behind, written so that it is never half there: every file of a run is
//! staged and committed together ([`Staged`]); a failure anywhere leaves the output folder as
//! it was. `samples.json` holds only deterministic data, so two identical commands write
//! byte-identical files; wall times go to `timing.json`.
//!
//! This module knows files, images and JSON, not runs: the run hands it plain records.

pub mod a1111;
pub mod canvas;
pub mod memory;
pub mod png_record;
pub mod samples;
pub mod scatter;
pub mod staged;
pub mod trace;

pub use canvas::{grid, Canvas};
pub use samples::{samples, samples_text, timing_json, SampleRecord};
pub use scatter::{scatter_png, SCATTER_SIZE};
pub use staged::{remove_stale, Staged};
pub use trace::JsonlTrace;

use std::fs;
use std::path::Path;

use anyhow::Result;

use crate::error::input_error;

/// An advisory lock on an output folder (flock on the folder itself, so no lock file is left
/// behind), held while a run writes into it; released when dropped.
#[derive(Debug)]
pub struct FolderLock(#[allow(dead_code)] fs::File);

/// Takes `dir`'s lock, or refuses when another steerdiff run holds it: two runs into one
/// folder would mix their files.
pub fn lock_dir(dir: &Path) -> Result<FolderLock> {
    let folder = match fs::File::open(dir) {
        Ok(f) => f,
        Err(e) => input_error!("cannot open output directory `{}`: {e}", dir.display()),
    };
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock(2) on a descriptor this function owns; the lock goes with the descriptor.
    let taken = unsafe { libc::flock(folder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if taken == 0 {
        return Ok(FolderLock(folder));
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EWOULDBLOCK) => input_error!(
            "another steerdiff run is writing into `{}`; wait for it to finish or choose \
             another -o DIR",
            dir.display()
        ),
        // A file system without locks: go on unlocked rather than refuse to run.
        _ => Ok(FolderLock(folder)),
    }
}

/// Creates `dir` if missing and checks that files can be written in it, before any work is
/// done. Errors name the path (exit code 2).
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if let Err(e) = fs::create_dir_all(dir) {
        input_error!(
            "cannot create output directory `{}`: {e}; choose a writable -o DIR",
            dir.display()
        );
    }
    // An unnamed temporary (O_EXCL, a random name, removed at once): nothing in the folder
    // is opened or followed.
    match tempfile::tempfile_in(dir) {
        Ok(_) => Ok(()),
        Err(e) => input_error!(
            "cannot write in output directory `{}`: {e}; choose a writable -o DIR",
            dir.display()
        ),
    }
}
