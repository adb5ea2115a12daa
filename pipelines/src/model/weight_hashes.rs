//! The sha256 of each weight file a model loaded, for its run record, with a cache keyed by
//! the file's path, size and modification time so that a multi-gigabyte UNet is read once,
//! not at every run.
//!
//! The cache is one JSON file, `weight-sha256.json`, in `$STEERDIFF_CACHE`, else
//! `$XDG_CACHE_HOME/steerdiff`, else `~/.cache/steerdiff`. It only saves time: a cache that
//! cannot be read or written is ignored (the hash is computed), and an entry whose size or
//! modification time differs from the file's is recomputed. It is replaced whole through a
//! temporary file and a rename, so a reader never sees half of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::toy::model::sha256_file;
use crate::Result;

/// One weight file of a model, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightFile {
    /// The file, relative to the model's folder when it lies inside it.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Hex sha256 of its contents.
    pub sha256: String,
}

/// A cache entry: the hash of a file while it has this size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    bytes: u64,
    modified_ns: u128,
    sha256: String,
}

/// The default cache folder (see the module docs), `None` when no home is known.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("STEERDIFF_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("steerdiff")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("steerdiff")))
}

/// The cache file in `dir`.
fn cache_file(dir: &Path) -> PathBuf {
    dir.join("weight-sha256.json")
}

fn read_cache(dir: Option<&Path>) -> BTreeMap<String, Entry> {
    dir.and_then(|d| std::fs::read(cache_file(d)).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_cache(dir: &Path, cache: &BTreeMap<String, Entry>) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&serde_json::to_vec_pretty(cache).map_err(std::io::Error::other)?)?;
    tmp.persist(cache_file(dir)).map_err(|e| e.error)?;
    Ok(())
}

/// The hashes of `files` (each named relative to `root` when inside it), read from the
/// cache in `dir` where size and modification time still match, computed and cached
/// otherwise.
pub fn hash_files(
    files: &[PathBuf],
    root: Option<&Path>,
    dir: Option<&Path>,
) -> Result<Vec<WeightFile>> {
    let mut cache = read_cache(dir);
    let mut changed = false;
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let meta = std::fs::metadata(&key).map_err(|e| {
            crate::Error::Spec(format!("cannot read weight file {}: {e}", path.display()))
        })?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let key_text = key.display().to_string();
        let sha256 = match cache.get(&key_text) {
            Some(e) if e.bytes == meta.len() && e.modified_ns == modified_ns => e.sha256.clone(),
            _ => {
                if meta.len() > 1 << 30 {
                    eprintln!(
                        "steerdiff: hashing {} ({:.1} GB) for the run record, once (cached by \
                         size and modification time)",
                        path.display(),
                        meta.len() as f64 / 1e9
                    );
                }
                let sha256 = sha256_file(&key)?;
                cache.insert(
                    key_text,
                    Entry {
                        bytes: meta.len(),
                        modified_ns,
                        sha256: sha256.clone(),
                    },
                );
                changed = true;
                sha256
            }
        };
        // Relative to the root as the path was given (a Hub snapshot's files are links
        // into its blobs), else as both resolve.
        let file = root
            .and_then(|r| {
                path.strip_prefix(r)
                    .ok()
                    .map(Path::to_path_buf)
                    .or_else(|| {
                        let r = std::fs::canonicalize(r).ok()?;
                        key.strip_prefix(r).ok().map(Path::to_path_buf)
                    })
            })
            .unwrap_or_else(|| path.clone());
        out.push(WeightFile {
            file: file.display().to_string(),
            bytes: meta.len(),
            sha256,
        });
    }
    if let (true, Some(d)) = (changed, dir) {
        // The cache only saves time; a run must not fail because it cannot be written.
        let _ = write_cache(d, &cache);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::model::sha256_hex;

    #[test]
    fn hashes_are_cached_by_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let model = dir.path().join("model");
        std::fs::create_dir_all(model.join("unet")).unwrap();
        let file = model.join("unet").join("w.safetensors");
        std::fs::write(&file, b"first").unwrap();
        let files = [file.clone()];

        let got = hash_files(&files, Some(&model), Some(&cache)).unwrap();
        assert_eq!(got[0].sha256, sha256_hex(b"first"));
        assert_eq!(
            got[0].file,
            Path::new("unet")
                .join("w.safetensors")
                .display()
                .to_string()
        );
        assert_eq!(got[0].bytes, 5);
        assert!(cache_file(&cache).is_file(), "the cache is written");

        // Same size and modification time: the cached hash is used, not the contents.
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, b"other").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let cached = hash_files(&files, Some(&model), Some(&cache)).unwrap();
        assert_eq!(cached[0].sha256, sha256_hex(b"first"));

        // A new modification time: recomputed.
        let later = mtime + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let fresh = hash_files(&files, Some(&model), Some(&cache)).unwrap();
        assert_eq!(fresh[0].sha256, sha256_hex(b"other"));

        // No cache folder, or an unreadable cache: computed all the same.
        std::fs::write(cache_file(&cache), b"not json").unwrap();
        let again = hash_files(&files, None, Some(&cache)).unwrap();
        assert_eq!(again[0].sha256, sha256_hex(b"other"));
        assert_eq!(
            hash_files(&files, None, None).unwrap()[0].sha256,
            sha256_hex(b"other")
        );
    }
}
