//! Where the toy models come from: compiled into the binary (the default, so a copied or
//! `cargo install`ed binary needs no files), or a folder named by `STEERDIFF_ASSETS` holding
//! the same layout (`manifest.json`, `<model>/config.json`, `<model>/model.safetensors`).
//! Either way every weight file is checked against the manifest's sha256 when it is loaded
//! ([`super::model::checked_files`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The toy assets: the embedded copy or a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assets {
    /// The copy compiled into the binary from the source tree's `assets/`.
    Embedded,
    /// A folder of the same layout.
    Dir(PathBuf),
}

/// The files compiled in: `(path under assets/, contents)`.
const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "manifest.json",
        include_bytes!("../../../assets/manifest.json"),
    ),
    (
        "toy-flow/config.json",
        include_bytes!("../../../assets/toy-flow/config.json"),
    ),
    (
        "toy-flow/model.safetensors",
        include_bytes!("../../../assets/toy-flow/model.safetensors"),
    ),
    (
        "toy-flow-weak/config.json",
        include_bytes!("../../../assets/toy-flow-weak/config.json"),
    ),
    (
        "toy-flow-weak/model.safetensors",
        include_bytes!("../../../assets/toy-flow-weak/model.safetensors"),
    ),
    (
        "toy-classifier/config.json",
        include_bytes!("../../../assets/toy-classifier/config.json"),
    ),
    (
        "toy-classifier/model.safetensors",
        include_bytes!("../../../assets/toy-classifier/model.safetensors"),
    ),
    (
        "toy-eval-classifier/config.json",
        include_bytes!("../../../assets/toy-eval-classifier/config.json"),
    ),
    (
        "toy-eval-classifier/model.safetensors",
        include_bytes!("../../../assets/toy-eval-classifier/model.safetensors"),
    ),
    (
        "toy-judge/config.json",
        include_bytes!("../../../assets/toy-judge/config.json"),
    ),
    (
        "toy-judge/model.safetensors",
        include_bytes!("../../../assets/toy-judge/model.safetensors"),
    ),
];

impl Assets {
    /// `$STEERDIFF_ASSETS` when set (and not empty), else the embedded copy.
    pub fn locate() -> Assets {
        match std::env::var_os("STEERDIFF_ASSETS") {
            Some(d) if !d.is_empty() => Assets::Dir(PathBuf::from(d)),
            _ => Assets::Embedded,
        }
    }

    /// The contents of `file` (a path under the assets root, `/`-separated).
    pub fn read(&self, file: &str) -> Result<Cow<'static, [u8]>> {
        match self {
            Assets::Embedded => EMBEDDED
                .iter()
                .find(|(name, _)| *name == file)
                .map(|(_, bytes)| Cow::Borrowed(*bytes))
                .ok_or_else(|| {
                    Error::Spec(format!(
                        "the embedded toy assets have no `{file}` (set STEERDIFF_ASSETS to a \
                         folder that has it)"
                    ))
                }),
            Assets::Dir(dir) => {
                let path = dir.join(file);
                std::fs::read(&path).map(Cow::Owned).map_err(|e| {
                    Error::Spec(format!(
                        "cannot read {}: {e} (STEERDIFF_ASSETS names the toy assets folder; \
                         unset it to use the copy built into steerdiff)",
                        path.display()
                    ))
                })
            }
        }
    }

    /// How `file` is named in messages: its path, or `embedded assets/FILE`.
    pub fn describe(&self, file: &str) -> String {
        match self {
            Assets::Embedded => format!("embedded assets/{file}"),
            Assets::Dir(dir) => dir.join(file).display().to_string(),
        }
    }
}

impl From<&Path> for Assets {
    fn from(dir: &Path) -> Assets {
        Assets::Dir(dir.to_path_buf())
    }
}

/// The source tree's `assets/` folder, for the tools that write or compare assets (training
/// exports, the asset tests); running models read [`Assets::locate`].
pub fn source_assets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_copy_is_the_source_tree_byte_for_byte() {
        for (file, bytes) in EMBEDDED {
            let on_disk = std::fs::read(source_assets_dir().join(file)).unwrap();
            assert!(on_disk == *bytes, "{file}");
            assert_eq!(
                Assets::Embedded.read(file).unwrap().as_ref(),
                on_disk.as_slice()
            );
        }
        assert!(Assets::Embedded.read("nope.json").is_err());
    }
}
