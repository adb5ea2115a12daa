//! `steerdiff toy package`: `toy train` exports become the shipped `assets/` folder
//! (weights, configs, a manifest with sha256 and training records), all or nothing. Models
//! whose export is not given keep their entry and files in the folder.

use anyhow::{Context as _, Result};

use super::PackageArgs;
use steerdiff_pipelines::toy::data;

pub(super) fn package(p: &PackageArgs) -> Result<()> {
    use steerdiff_pipelines::toy::model::{self, Manifest, ManifestEntry};
    use steerdiff_pipelines::toy::ToyConfig;
    let names = [
        model::FLOW,
        model::FLOW_WEAK,
        model::CLASSIFIER,
        model::EVAL_CLASSIFIER,
        model::JUDGE,
    ];
    let mut notes = std::collections::BTreeMap::new();
    for n in &p.note {
        match n.split_once('=') {
            Some((name, text)) if names.contains(&name) => {
                notes.insert(name.to_string(), text.to_string());
            }
            _ => crate::error::input_error!(
                "--note `{n}` is not NAME=TEXT with NAME one of {}",
                names.join(", ")
            ),
        }
    }
    // Everything is read and checked first, then written through temporaries and renamed
    // into place together: a missing or bad export leaves the assets folder as it was.
    let mut staged = crate::output::Staged::new();
    // A folder without a manifest starts empty; a manifest that cannot be read is an error,
    // not an empty folder.
    let existing = if p.out.join("manifest.json").exists() {
        Some(
            model::Manifest::of(&model::Assets::from(p.out.as_path()))
                .with_context(|| format!("{} (the entries to keep)", p.out.display()))?,
        )
    } else {
        None
    };
    let mut models = existing
        .as_ref()
        .map(|m| m.models.clone())
        .unwrap_or_default();
    let sources = [
        &p.flow,
        &p.weak,
        &p.classifier,
        &p.eval_classifier,
        &p.judge,
    ];
    if sources.iter().all(|s| s.is_none()) {
        crate::error::input_error!(
            "nothing to package: give one or more of --flow, --weak, --classifier, \
             --eval-classifier, --judge (export-STEP/ folders of `toy train`)"
        );
    }
    for (name, src) in names.into_iter().zip(sources) {
        let Some(src) = src else {
            if !models.contains_key(name) {
                crate::error::input_error!(
                    "{} has no `{name}` to keep; give its export folder too",
                    p.out.join("manifest.json").display()
                );
            }
            continue;
        };
        let read = |f: &str| -> Result<Vec<u8>> {
            match std::fs::read(src.join(f)) {
                Ok(bytes) => Ok(bytes),
                Err(e) => crate::error::input_error!(
                    "cannot read {}: {e}; pass an export-STEP/ folder of `toy train` (config.json, \
                     model.safetensors, train.json)",
                    src.join(f).display()
                ),
            }
        };
        let (config_bytes, weights, train_json) = (
            read("config.json")?,
            read("model.safetensors")?,
            read("train.json")?,
        );
        let config: ToyConfig = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("{}", src.join("config.json").display()))?;
        let mut training: serde_json::Value = serde_json::from_slice(&train_json)
            .with_context(|| format!("{}", src.join("train.json").display()))?;
        if let Some(n) = notes.get(name) {
            training["note"] = serde_json::Value::String(n.clone());
        }
        let dest = p.out.join(name);
        std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
        staged.add(&dest.join("config.json"), &config_bytes)?;
        staged.add(&dest.join("model.safetensors"), &weights)?;
        models.insert(
            name.to_string(),
            ManifestEntry {
                dir: name.to_string(),
                sha256: model::sha256_hex(&weights),
                bytes: weights.len() as u64,
                config,
                training,
            },
        );
    }
    let manifest = Manifest {
        dataset: serde_json::json!({
            "generator": "steerdiff_pipelines::toy::data (procedural 32×32 RGB shapes; image i of seed s is a pure function of (s, i), class i mod 10)",
            "classes": data::CLASS_NAMES,
            "size": [3, 32, 32],
            "pixel_range": [-1.0, 1.0],
            "training_seeds": {"toy-flow": 1, "toy-flow-weak": 1, "toy-classifier": 2, "toy-eval-classifier": 3, "toy-judge": 4},
            "evaluation_seed": super::eval::EVAL_DATA_SEED,
            "rotation": "each model's training.spec.data_rotation (absent: full); `toy dataset` and the classifier accuracies use full",
        }),
        models,
        // The shipped recommendation carries over (it describes the recipe, not one export).
        recommended_cfg: existing
            .or_else(|| model::Manifest::of(&model::Assets::locate()).ok())
            .and_then(|m| m.recommended_cfg),
    };
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    staged.add(&p.out.join("manifest.json"), text.as_bytes())?;
    staged.commit()?;
    eprintln!("steerdiff: wrote {}", p.out.join("manifest.json").display());
    Ok(())
}
