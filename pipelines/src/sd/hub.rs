//! Where a model's files come from: a preset name, a Hugging Face Hub repository (through the
//! standard hub cache), a local diffusers-format folder, or a single checkpoint file.
//!
//! Hub access follows the Hugging Face conventions:
//!
//! * the cache is `$HF_HOME/hub` (default `~/.cache/huggingface/hub`) in hf-hub's layout
//!   (`models--org--name/refs/main` holding a commit id, `snapshots/<id>/<path>`), so files
//!   fetched by Python's `huggingface_hub` are reused and vice versa;
//! * `HF_HUB_OFFLINE=1` never touches the network: a missing file is an error naming the
//!   repository, the file and how to fetch it;
//! * `HF_ENDPOINT` changes the server, `HF_TOKEN` (or the token file) authenticates;
//! * every network wait for a file's first answer is bounded (`STEERDIFF_HUB_TIMEOUT_S`,
//!   default 30 s) — hf-hub's HTTP client has no timeouts of its own.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::{Error, Result};

/// `folder/file` inside a model repo (`file` alone at the repo's root, `folder = ""`).
pub fn in_folder(folder: &str, file: &str) -> String {
    if folder.is_empty() {
        file.to_string()
    } else {
        format!("{folder}/{file}")
    }
}

/// The model families steerdiff loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.x / 2.x (UNet, one CLIP text encoder, KL VAE).
    StableDiffusion,
    /// Stable Diffusion XL (two text encoders, added conditioning).
    StableDiffusionXl,
    /// Stable Diffusion 3 / 3.5 (MMDiT).
    StableDiffusion3,
    /// FLUX.1 (schnell, dev).
    Flux,
}

/// A named model: a hub repository and the defaults its authors recommend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// Name on the command line (`--model sd15`).
    pub name: &'static str,
    /// Hub repository id.
    pub repo: &'static str,
    /// Model family.
    pub family: Family,
    /// Recommended number of steps.
    pub steps: usize,
    /// Recommended classifier-free guidance scale (1 = none).
    pub cfg: f64,
    /// Native resolution in pixels (square).
    pub size: usize,
    /// One-line description.
    pub about: &'static str,
    /// For SD3 / FLUX: the original single files the transformer (and FLUX's autoencoder)
    /// load from; `repo` then supplies the text encoders.
    pub single_file: Option<SingleFile>,
}

/// Where a DiT preset's original single-file checkpoints are on the Hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SingleFile {
    /// Hub repository holding the files.
    pub repo: &'static str,
    /// The transformer (SD3: transformer + autoencoder).
    pub transformer: &'static str,
    /// FLUX's autoencoder.
    pub ae: Option<&'static str>,
}

/// Every preset. Adding a diffusers-format model needs no preset: name its repo or folder.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "sd15",
        repo: "stable-diffusion-v1-5/stable-diffusion-v1-5",
        family: Family::StableDiffusion,
        steps: 25,
        cfg: 7.5,
        size: 512,
        about: "Stable Diffusion 1.5 (ε-prediction, 512 px)",
        single_file: None,
    },
    Preset {
        name: "sd21",
        repo: "stabilityai/stable-diffusion-2-1",
        family: Family::StableDiffusion,
        steps: 25,
        cfg: 7.5,
        size: 768,
        about: "Stable Diffusion 2.1 (v-prediction, 768 px)",
        single_file: None,
    },
    Preset {
        name: "sd21-base",
        repo: "stabilityai/stable-diffusion-2-1-base",
        family: Family::StableDiffusion,
        steps: 25,
        cfg: 7.5,
        size: 512,
        about: "Stable Diffusion 2.1 base (ε-prediction, 512 px)",
        single_file: None,
    },
    Preset {
        name: "sd-turbo",
        repo: "stabilityai/sd-turbo",
        family: Family::StableDiffusion,
        steps: 1,
        cfg: 1.0,
        size: 512,
        about: "SD-Turbo (adversarially distilled SD 2.1, 1–4 steps, no CFG)",
        single_file: None,
    },
    Preset {
        name: "sdxl",
        repo: "stabilityai/stable-diffusion-xl-base-1.0",
        family: Family::StableDiffusionXl,
        steps: 30,
        cfg: 5.0,
        size: 1024,
        about: "Stable Diffusion XL base 1.0 (two CLIP encoders, size/crop micro-conditioning)",
        single_file: None,
    },
    Preset {
        name: "sdxl-turbo",
        repo: "stabilityai/sdxl-turbo",
        family: Family::StableDiffusionXl,
        steps: 1,
        cfg: 1.0,
        size: 512,
        about: "SDXL-Turbo (adversarially distilled SDXL, 1–4 steps, no CFG)",
        single_file: None,
    },
    Preset {
        name: "sd3-medium",
        repo: "stabilityai/stable-diffusion-3-medium-diffusers",
        family: Family::StableDiffusion3,
        steps: 28,
        cfg: 7.0,
        size: 1024,
        about: "Stable Diffusion 3 medium (MMDiT; CLIP-L, CLIP-G, T5 from the diffusers repo)",
        single_file: Some(SingleFile {
            repo: "stabilityai/stable-diffusion-3-medium",
            transformer: "sd3_medium.safetensors",
            ae: None,
        }),
    },
    Preset {
        name: "sd3.5-medium",
        repo: "stabilityai/stable-diffusion-3.5-medium",
        family: Family::StableDiffusion3,
        steps: 28,
        cfg: 4.5,
        size: 1024,
        about: "Stable Diffusion 3.5 medium (MMDiT-X with QK-norm)",
        single_file: Some(SingleFile {
            repo: "stabilityai/stable-diffusion-3.5-medium",
            transformer: "sd3.5_medium.safetensors",
            ae: None,
        }),
    },
    Preset {
        name: "sd3.5-large",
        repo: "stabilityai/stable-diffusion-3.5-large",
        family: Family::StableDiffusion3,
        steps: 28,
        cfg: 3.5,
        size: 1024,
        about: "Stable Diffusion 3.5 large (MMDiT with QK-norm)",
        single_file: Some(SingleFile {
            repo: "stabilityai/stable-diffusion-3.5-large",
            transformer: "sd3.5_large.safetensors",
            ae: None,
        }),
    },
    Preset {
        name: "sd3.5-large-turbo",
        repo: "stabilityai/stable-diffusion-3.5-large-turbo",
        family: Family::StableDiffusion3,
        steps: 4,
        cfg: 1.0,
        size: 1024,
        about: "Stable Diffusion 3.5 large turbo (MMDiT with QK-norm; 4 steps, no CFG)",
        single_file: Some(SingleFile {
            repo: "stabilityai/stable-diffusion-3.5-large-turbo",
            transformer: "sd3.5_large_turbo.safetensors",
            ae: None,
        }),
    },
    Preset {
        name: "flux-schnell",
        repo: "black-forest-labs/FLUX.1-schnell",
        family: Family::Flux,
        steps: 4,
        cfg: 1.0,
        size: 1024,
        about: "FLUX.1 schnell (rectified flow, 1–4 steps, no CFG)",
        single_file: Some(SingleFile {
            repo: "black-forest-labs/FLUX.1-schnell",
            transformer: "flux1-schnell.safetensors",
            ae: Some("ae.safetensors"),
        }),
    },
    Preset {
        name: "flux-dev",
        repo: "black-forest-labs/FLUX.1-dev",
        family: Family::Flux,
        steps: 28,
        cfg: 1.0,
        size: 1024,
        about: "FLUX.1 dev (guidance-distilled; gated repo: HF_TOKEN)",
        single_file: Some(SingleFile {
            repo: "black-forest-labs/FLUX.1-dev",
            transformer: "flux1-dev.safetensors",
            ae: Some("ae.safetensors"),
        }),
    },
];

/// The preset called `name`, if any.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local diffusers-format folder (with `model_index.json`).
    Folder(PathBuf),
    /// A single checkpoint file (FLUX / SD3 original layouts).
    File(PathBuf),
    /// A Hub repository at a revision (branch, tag or commit).
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit (default `main`).
        revision: String,
    },
}

impl Source {
    /// Resolves a `--model` value: a preset name, an existing folder or file, or `org/name`
    /// (optionally `org/name@revision`).
    pub fn parse(name: &str) -> Result<Source> {
        Source::parse_as(name, "model")
    }

    /// [`Source::parse`] for the value of another flag, `what` (`--text-encoders`), which
    /// messages name.
    pub fn parse_as(name: &str, what: &str) -> Result<Source> {
        if let Some(p) = preset(name) {
            return Ok(Source::Hub {
                repo: p.repo.into(),
                revision: "main".into(),
            });
        }
        let path = Path::new(name);
        if path.is_dir() {
            return Ok(Source::Folder(path.to_path_buf()));
        }
        if path.is_file() {
            return Ok(Source::File(path.to_path_buf()));
        }
        let looks_like_path = name.starts_with('.')
            || name.starts_with('/')
            || name.starts_with('~')
            || name.ends_with(".safetensors")
            || name.matches('/').count() > 1;
        let (repo, revision) = match name.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (name, "main"),
        };
        let valid_repo = repo.split('/').count() == 2
            && repo.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        let names = || {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            names.join(", ")
        };
        if let Some(why) = looks_like_path
            .then(|| crate::fs::why_unusable(path))
            .flatten()
        {
            return Err(Error::Spec(format!(
                "{what}: {why} (give a preset ({}), a folder or file, or a Hub repository id \
                 `org/name`)",
                names()
            )));
        }
        if looks_like_path || !valid_repo || revision.is_empty() {
            return Err(Error::Spec(format!(
                "{what} `{name}` is neither a preset ({}), an existing folder or file, nor a \
                 Hub repository id `org/name`",
                names()
            )));
        }
        Ok(Source::Hub {
            repo: repo.into(),
            revision: revision.into(),
        })
    }

    /// How the source is named in messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Folder(p) => format!("folder `{}`", p.display()),
            Source::File(p) => format!("file `{}`", p.display()),
            Source::Hub { repo, revision } if revision == "main" => format!("Hub repo `{repo}`"),
            Source::Hub { repo, revision } => format!("Hub repo `{repo}` at `{revision}`"),
        }
    }
}

/// How the Hub is reached; [`HubSettings::from_env`] reads the standard variables.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSettings {
    /// The hub cache folder (`$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Server (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Access token (`HF_TOKEN`, else the token file next to the cache).
    pub token: Option<String>,
    /// Never use the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Bound on the wait for a file's first answer.
    pub timeout: Duration,
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl HubSettings {
    /// Settings from `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` and
    /// `STEERDIFF_HUB_TIMEOUT_S`.
    pub fn from_env() -> HubSettings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache_dir = match (var("HF_HUB_CACHE"), var("HF_HOME")) {
            (Some(c), _) => PathBuf::from(c),
            (None, Some(h)) => PathBuf::from(h).join("hub"),
            (None, None) => hf_hub::Cache::default().path().clone(),
        };
        let token = var("HF_TOKEN")
            .or_else(|| hf_hub::Cache::new(cache_dir.clone()).token())
            .map(|t| t.trim().to_string());
        let timeout = var("STEERDIFF_HUB_TIMEOUT_S")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(30.0);
        HubSettings {
            cache_dir,
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            token,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            timeout: Duration::from_secs_f64(timeout),
        }
    }
}

/// A model's files: looked up in a folder, or in the hub cache and fetched when missing.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    source: Source,
    hub: HubSettings,
}

impl ModelFiles {
    /// Files of `source`, with hub settings from the environment.
    pub fn new(source: Source) -> ModelFiles {
        ModelFiles::with_settings(source, HubSettings::from_env())
    }

    /// Files of `source` with explicit hub settings.
    pub fn with_settings(source: Source, hub: HubSettings) -> ModelFiles {
        ModelFiles { source, hub }
    }

    /// Where the files come from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The folder the files lie in: the model folder, or the cached Hub snapshot (`None` for
    /// a single file, or a repo not in the cache).
    pub fn root(&self) -> Option<PathBuf> {
        match &self.source {
            Source::Folder(root) => Some(root.clone()),
            Source::File(_) => None,
            Source::Hub { repo, revision } => self.snapshot(repo, revision),
        }
    }

    /// The file at `path` (relative to the model root, `/`-separated); an error naming the
    /// model, the file and how to get it when it is not there.
    pub fn get(&self, path: &str) -> Result<PathBuf> {
        match self.find(path)? {
            Some(p) => Ok(p),
            None => Err(Error::Spec(match &self.source {
                Source::Hub { repo, .. } => {
                    format!("`{path}` does not exist in Hub repo `{repo}`")
                }
                other => format!("`{path}` is missing from {}", other.describe()),
            })),
        }
    }

    /// The file at `path`, or `None` when the model is known not to have it. Errors when the
    /// answer cannot be known (offline and not cached, network failure, no access).
    pub fn find(&self, path: &str) -> Result<Option<PathBuf>> {
        match &self.source {
            Source::Folder(root) => {
                let p = root.join(path);
                let broken_link = p.symlink_metadata().is_ok();
                match crate::fs::why_unusable(&p) {
                    None => Ok(p.is_file().then_some(p)),
                    // A link to nothing or a loop is a broken model, not a missing file.
                    Some(why) if broken_link => Err(Error::Spec(why)),
                    Some(_) => Ok(None),
                }
            }
            Source::File(f) => Err(Error::Spec(format!(
                "`{}` is a single checkpoint file; it has no `{path}` (give a diffusers-format \
                 folder or Hub repo instead)",
                f.display()
            ))),
            Source::Hub { repo, revision } => self.find_hub(repo, revision, path),
        }
    }

    /// The snapshot folder of a cached hub repo (`refs/<revision>` → `snapshots/<id>`), or
    /// `None` when the repo is not in the cache.
    fn snapshot(&self, repo: &str, revision: &str) -> Option<PathBuf> {
        let root = self
            .hub
            .cache_dir
            .join(format!("models--{}", repo.replace('/', "--")));
        let by_ref = std::fs::read_to_string(root.join("refs").join(revision))
            .ok()
            .map(|id| root.join("snapshots").join(id.trim()));
        let dir = by_ref.unwrap_or_else(|| root.join("snapshots").join(revision));
        dir.is_dir().then_some(dir)
    }

    fn find_hub(&self, repo: &str, revision: &str, path: &str) -> Result<Option<PathBuf>> {
        let snapshot = self.snapshot(repo, revision);
        if let Some(dir) = &snapshot {
            let p = dir.join(path);
            if p.is_file() {
                return Ok(Some(p));
            }
        }
        let fetch_hint = format!(
            "fetch it with `huggingface-cli download {repo} {path}` (the whole model: \
             `huggingface-cli download {repo}`), or run once with network access; the cache is \
             `{}` (set HF_HOME to use another)",
            self.hub.cache_dir.display()
        );
        if self.hub.offline {
            // A cached snapshot without the file: the repo does not have it (as far as the
            // cache knows); optional files are then simply absent.
            if snapshot.is_some() && !is_primary(path) {
                return Ok(None);
            }
            return Err(Error::Spec(format!(
                "`{path}` of Hub repo `{repo}` is not in the local cache and HF_HUB_OFFLINE is \
                 set; {fetch_hint}"
            )));
        }
        let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(
            self.hub.cache_dir.clone(),
        ))
        .with_endpoint(self.hub.endpoint.clone())
        .with_token(self.hub.token.clone())
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(|e| Error::Spec(format!("cannot set up the Hub client: {e}")))?;
        let hub_repo = hf_hub::Repo::with_revision(
            repo.to_string(),
            hf_hub::RepoType::Model,
            revision.to_string(),
        );
        let api_repo = api.repo(hub_repo);
        let url = api_repo.url(path);
        // First answer, bounded: the client has no timeouts of its own.
        let (tx, rx) = mpsc::channel();
        let probe = api.clone();
        let probe_url = url.clone();
        std::thread::spawn(move || {
            let _ = tx.send(probe.metadata(&probe_url).map(|_| ()));
        });
        let secs = self.hub.timeout.as_secs_f64();
        match rx.recv_timeout(self.hub.timeout) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let text = e.to_string();
                if text.contains("status: 404") {
                    return Ok(None);
                }
                if text.contains("status: 401") || text.contains("status: 403") {
                    return Err(Error::Spec(format!(
                        "Hub repo `{repo}` refused access to `{path}` ({text}); it may be gated \
                         or private: accept its licence on the Hub and set HF_TOKEN"
                    )));
                }
                return Err(Error::Spec(format!(
                    "cannot fetch `{path}` of Hub repo `{repo}` from {}: {text}; check the \
                     network (or HF_ENDPOINT), or {fetch_hint}",
                    self.hub.endpoint
                )));
            }
            Err(_) => {
                return Err(Error::Spec(format!(
                    "no answer from {} within {secs:.0} s for `{path}` of Hub repo `{repo}` \
                     (STEERDIFF_HUB_TIMEOUT_S); check the network, or {fetch_hint}",
                    self.hub.endpoint
                )))
            }
        }
        api_repo.get(path).map(Some).map_err(|e| {
            Error::Spec(format!(
                "downloading `{path}` of Hub repo `{repo}` failed: {e}; {fetch_hint}"
            ))
        })
    }
}

/// Files every diffusers model has: offline, their absence means the repo was never fetched.
fn is_primary(path: &str) -> bool {
    path == "model_index.json" || path.ends_with("config.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(
            Source::parse("sd15").unwrap(),
            Source::Hub {
                repo: "stable-diffusion-v1-5/stable-diffusion-v1-5".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            Source::parse("org/model@v2").unwrap(),
            Source::Hub {
                repo: "org/model".into(),
                revision: "v2".into()
            }
        );
        let e = Source::parse("./no/such/folder").unwrap_err().to_string();
        assert!(e.contains("sd15") && e.contains("no/such/folder"), "{e}");
        assert!(Source::parse("sd99").is_err());
    }
}
