//! Why a path a user named cannot be used, in words: missing, a dangling or looping symbolic
//! link, or unreadable. `Path::exists` folds all of these into `false`, which made a symlink
//! loop read as "no such file".

use std::io::ErrorKind;
use std::path::Path;

/// `None` when `path` can be looked at (its metadata, following links, can be read);
/// otherwise what is wrong with it, naming it.
pub fn why_unusable(path: &Path) -> Option<String> {
    let err = std::fs::metadata(path).err()?;
    let shown = path.display();
    Some(match (err.kind(), std::fs::read_link(path)) {
        (ErrorKind::NotFound, Ok(target)) => format!(
            "`{shown}` is a symbolic link to `{}`, which does not exist",
            target.display()
        ),
        (ErrorKind::NotFound, Err(_)) => format!("no such file or folder `{shown}`"),
        _ => format!("cannot open `{shown}`: {err}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dangling_and_looping_paths_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(why_unusable(&file), None);
        assert_eq!(why_unusable(tmp.path()), None);
        let missing = tmp.path().join("missing");
        assert!(why_unusable(&missing)
            .unwrap()
            .starts_with("no such file or folder"));
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink(&missing, &dangling).unwrap();
        assert!(why_unusable(&dangling)
            .unwrap()
            .contains("is a symbolic link to"));
        let looping = tmp.path().join("loop");
        std::os::unix::fs::symlink(&looping, &looping).unwrap();
        let why = why_unusable(&looping).unwrap();
        assert!(
            why.starts_with("cannot open") && why.contains("symbolic links"),
            "{why}"
        );
    }
}
