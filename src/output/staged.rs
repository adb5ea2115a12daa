//! All-or-nothing writing of a set of files ([`Staged`]).
//!
//! Each file is written to a hidden temporary next to its destination, created with
//! `O_EXCL` under an unpredictable name (the `tempfile` crate), so nothing planted in the
//! folder — a symlink, a file of a guessed name — is followed or overwritten.
//! [`Staged::commit`] renames them into place one by one, first moving any file it replaces
//! aside (to another fresh name); if any step fails, every file already moved is put back and
//! the temporaries are removed, so the folder is left exactly as it was. Only when all are in
//! place are the replaced files deleted.
//!
//! A destination that exists and is not a regular file — `/dev/null`, `/dev/stdout`, a FIFO —
//! is never renamed over: its bytes are written into it, in place, at commit.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tempfile::{Builder, NamedTempFile, TempPath};

/// A file being written next to its destination; removed on drop unless committed.
#[derive(Debug)]
pub(crate) struct TempFile {
    tmp: Option<TempPath>,
    pub(crate) dest: PathBuf,
}

/// The folder and file name of `dest`.
fn parts(dest: &Path) -> (PathBuf, String) {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    (dir, name)
}

/// A new hidden file `dir/.NAME.TAG-RANDOM`, created with `O_EXCL`.
fn fresh(dest: &Path, tag: &str) -> std::io::Result<NamedTempFile> {
    let (dir, name) = parts(dest);
    Builder::new()
        .prefix(&format!(".{name}.{tag}-"))
        .tempfile_in(dir)
}

/// Whether `dest` exists and is something other than a regular file or a folder (a device,
/// a FIFO, a socket; symlinks followed): such a target is written in place, never replaced.
pub(crate) fn is_special(dest: &Path) -> bool {
    fs::metadata(dest).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

impl TempFile {
    pub(crate) fn new(dest: &Path) -> Result<(TempFile, File)> {
        let (dir, name) = parts(dest);
        let file = fresh(dest, "tmp")
            .with_context(|| format!("cannot write `{}` (in `{}`)", name, dir.display()))?;
        let (file, tmp) = file.into_parts();
        Ok((
            TempFile {
                tmp: Some(tmp),
                dest: dest.to_path_buf(),
            },
            file,
        ))
    }

    /// Puts the finished file at its destination: renamed onto a new name or a regular file,
    /// copied into a special one.
    pub(crate) fn commit(&mut self) -> Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        if is_special(&self.dest) {
            let bytes = fs::read(&tmp).context("reading back a finished file")?;
            fs::OpenOptions::new()
                .write(true)
                .open(&self.dest)
                .and_then(|mut f| f.write_all(&bytes))
                .with_context(|| format!("cannot write `{}`", self.dest.display()))?;
            return Ok(()); // `tmp` is removed as it drops
        }
        if let Err(e) = tmp.persist(&self.dest) {
            let msg = format!(
                "cannot move the finished file into `{}`",
                self.dest.display()
            );
            self.tmp = Some(e.path);
            return Err(anyhow::Error::new(e.error).context(msg));
        }
        Ok(())
    }
}

/// A set of files written to temporaries and renamed into place together by
/// [`Staged::commit`]; dropping it uncommitted removes every temporary.
#[derive(Debug, Default)]
pub struct Staged {
    files: Vec<TempFile>,
}

/// One step of a commit, undone if a later one fails.
struct Moved {
    dest: PathBuf,
    /// Where the file it replaced was moved aside.
    backup: Option<PathBuf>,
    /// It was written into a special file, which is never removed.
    in_place: bool,
}

impl Staged {
    /// An empty set.
    pub fn new() -> Self {
        Staged::default()
    }

    /// Writes `bytes` to a temporary that will become `dest`.
    pub fn add(&mut self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let (tmp, mut file) = TempFile::new(dest)?;
        self.files.push(tmp);
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .with_context(|| format!("cannot write `{}`", dest.display()))
    }

    /// Takes a temporary written elsewhere (the trace) into the set.
    pub(crate) fn adopt(&mut self, file: TempFile) {
        self.files.push(file);
    }

    /// The destinations, in the order they were added.
    pub fn destinations(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.dest.as_path())
    }

    /// Renames every temporary into place, all or nothing (see the module docs).
    pub fn commit(mut self) -> Result<()> {
        let mut moved: Vec<Moved> = Vec::with_capacity(self.files.len());
        let mut result = Ok(());
        for f in &mut self.files {
            match Self::put(f) {
                Ok(m) => moved.push(m),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            // Undo in reverse: remove what was put in place, restore what it replaced.
            for m in moved.iter().rev().filter(|m| !m.in_place) {
                let _ = fs::remove_file(&m.dest);
                if let Some(b) = &m.backup {
                    let _ = fs::rename(b, &m.dest);
                }
            }
            return Err(e);
        }
        for m in moved {
            if let Some(b) = m.backup {
                let _ = fs::remove_file(b);
            }
        }
        Ok(())
    }

    /// Moves an existing file at `f.dest` aside (a special file stays: it is written in
    /// place), then `f` into place.
    fn put(f: &mut TempFile) -> Result<Moved> {
        let in_place = is_special(&f.dest);
        let backup = match fs::symlink_metadata(&f.dest) {
            Ok(meta) if meta.is_dir() => {
                return Err(anyhow::Error::new(crate::error::InputError(format!(
                    "cannot write `{}`: a directory of that name is in the way (move it, or \
                     write into another -o folder)",
                    f.dest.display()
                ))))
            }
            Ok(_) if in_place => None,
            Ok(_) => {
                // A fresh name of our own, then the old file renamed onto it.
                let b = fresh(&f.dest, "old")
                    .and_then(|t| t.into_temp_path().keep().map_err(|e| e.error))
                    .with_context(|| format!("cannot replace `{}`", f.dest.display()))?;
                if let Err(e) = fs::rename(&f.dest, &b) {
                    let _ = fs::remove_file(&b);
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot replace `{}`", f.dest.display())));
                }
                Some(b)
            }
            Err(_) => None,
        };
        if let Err(e) = f.commit() {
            if let Some(b) = &backup {
                let _ = fs::rename(b, &f.dest);
            }
            return Err(e);
        }
        Ok(Moved {
            dest: f.dest.clone(),
            backup,
            in_place,
        })
    }
}

/// The file names a `generate` run writes into its folder (besides `samples.json`): a
/// later run into the same folder removes those of them it does not write itself.
pub fn is_run_output(name: &str) -> bool {
    matches!(name, "timing.json" | "grid.png" | "top.png" | "scatter.png")
        || ((name.starts_with("sample-") || name.starts_with("image-")) && name.ends_with(".png"))
}

/// After a run's files are committed into `dir`: removes the files an earlier run left there
/// (names [`is_run_output`] matches) that this run did not write (`written`), so the folder
/// holds one run, never stale images beside a smaller record. Other files are kept.
pub fn remove_stale(dir: &Path, written: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut removed = vec![];
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && is_run_output(&name) && !written.iter().any(|w| w == &path) {
            fs::remove_file(&path)
                .with_context(|| format!("cannot remove the stale `{}`", path.display()))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_appear_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let mut s = Staged::new();
        s.add(&a, b"hello").unwrap();
        assert!(!a.exists());
        drop(s);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporaries removed"
        );
        let mut s = Staged::new();
        s.add(&a, b"hello").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_commit_puts_every_replaced_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.txt"),
            dir.path().join("b.txt"),
            dir.path().join("c"),
        );
        fs::write(&a, b"old a").unwrap();
        fs::create_dir(&c).unwrap(); // in the way of the third file
        let mut s = Staged::new();
        s.add(&a, b"new a").unwrap();
        s.add(&b, b"new b").unwrap();
        s.add(&c, b"new c").unwrap();
        let e = s.commit().unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        assert!(!b.exists());
        assert!(c.is_dir());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 2, "no temporaries or backups left: {names:?}");
    }
}
