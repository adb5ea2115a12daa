//! Loading a model of any family from its spec (the one place that reads `toy`, `gmm:` and
//! text-to-image specs).

use candle_core::Device;
use serde_json::Value;
use std::sync::Arc;

use super::{Inner, LoadOptions, Model};
use crate::sd::{self, WeightDType};
use crate::toy::{self, ToyFlow};
use crate::{Error, GmmDenoiser, GmmSpec, Result};

/// The dtype a family runs in when none is asked for: f32 on the CPU; on a GPU bf16 for
/// SDXL, SD3 and FLUX (whose fp32 weights rarely fit or pay off), f32 for the rest.
pub fn default_dtype(family: Option<sd::Family>, device: &Device) -> WeightDType {
    match family {
        Some(sd::Family::StableDiffusionXl | sd::Family::StableDiffusion3 | sd::Family::Flux)
            if !device.is_cpu() =>
        {
            WeightDType::BF16
        }
        _ => WeightDType::F32,
    }
}

/// The text-to-image family a spec names, read from a preset or a folder's
/// `model_index.json` without loading weights; `None` when it cannot tell cheaply.
fn text_family(spec: &str) -> Option<sd::Family> {
    if let Some(p) = sd::preset(spec) {
        return Some(p.family);
    }
    match sd::Source::parse(spec).ok()? {
        // A Stable Diffusion checkpoint is told by its tensor names (header only); the other
        // single files are SD3 / FLUX transformers, whose defaults are the same.
        sd::Source::File(path) => Some(match sd::ldm::LdmCheckpoint::open(&path) {
            Ok(c) if c.layout == sd::ldm::Layout::Sdxl => sd::Family::StableDiffusionXl,
            Ok(_) => sd::Family::StableDiffusion,
            Err(_) => sd::Family::Flux,
        }),
        sd::Source::Folder(dir) => {
            let text = std::fs::read_to_string(dir.join("model_index.json")).ok()?;
            let class = serde_json::from_str::<Value>(&text).ok()?["_class_name"]
                .as_str()?
                .to_string();
            Some(if class.contains("XL") {
                sd::Family::StableDiffusionXl
            } else if class.contains("StableDiffusion3") {
                sd::Family::StableDiffusion3
            } else if class.contains("Flux") {
                sd::Family::Flux
            } else {
                sd::Family::StableDiffusion
            })
        }
        sd::Source::Hub { .. } => None,
    }
}

/// The model names that are not text-to-image specs, for messages.
pub const CLASS_MODELS: &str = "toy, toy-weak, gmm:SPEC.json";

/// Whether `spec` names a text-to-image model (a preset, a diffusers folder, a Hub repo, a
/// single file) rather than the toy or a mixture.
pub fn is_text_to_image(spec: &str) -> bool {
    spec != "toy"
        && spec != "toy-weak"
        && !spec.starts_with("gmm:")
        && sd::Source::parse(spec).is_ok()
}

/// Refuses a spec written as a path (`./x`, `../x`, `/x`, `~/x`, `x.safetensors`, `gmm:x`)
/// that names nothing on disk, saying so, before it could be taken for a Hub repo or an
/// unknown name.
pub fn check_spec_path(spec: &str) -> Result<()> {
    let path = spec.strip_prefix("gmm:").unwrap_or(spec);
    if spec == "gmm:" {
        return Err(Error::Spec(format!(
            "model `{spec}` names no spec file; use --model gmm:SPEC.json"
        )));
    }
    let looks_like_path = spec.starts_with("gmm:")
        || ["./", "../", "/", "~"].iter().any(|p| path.starts_with(p))
        || path.ends_with(".safetensors")
        || path.ends_with(".json");
    if let Some(why) = looks_like_path
        .then(|| crate::fs::why_unusable(std::path::Path::new(path)))
        .flatten()
    {
        return Err(Error::Spec(format!(
            "{why} (--model names a preset, a diffusers folder, an ORG/NAME Hub repo, a single \
             .safetensors file (SD 1.x/2.x/XL, SD3, FLUX) or gmm:SPEC.json)"
        )));
    }
    Ok(())
}

/// Loads the model `spec` names: `toy`, `toy-weak`, `gmm:SPEC.json`, or a text-to-image spec
/// (see [`crate::sd::text_to_image::load`]).
pub fn load(spec: &str, opts: &LoadOptions) -> Result<Model> {
    check_spec_path(spec)?;
    if !opts.loras.is_empty() && !is_text_to_image(spec) {
        return Err(Error::Spec(format!(
            "--lora goes with Stable Diffusion 1.x/2.x/XL and FLUX models, not `{spec}`"
        )));
    }
    if spec == "toy" || spec == "toy-weak" {
        return load_toy(spec == "toy-weak", opts);
    }
    if let Some(path) = spec.strip_prefix("gmm:") {
        return load_mixture(spec, path, opts);
    }
    if !is_text_to_image(spec) {
        return Err(Error::Spec(format!(
            "unknown model `{spec}`; valid: {CLASS_MODELS}, a preset ({}), a diffusers folder, \
             an ORG/NAME Hub repo or a single .safetensors file (SD 1.x/2.x/XL, SD3, FLUX; see `steerdiff list`)",
            sd::PRESETS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let dtype = opts
        .dtype
        // On the CPU every family runs in f32, so the family (a header read for single files)
        // is looked up only for a GPU.
        .unwrap_or_else(|| {
            let family = (!opts.device.is_cpu()).then(|| text_family(spec)).flatten();
            default_dtype(family, &opts.device)
        });
    let mut sd_opts = sd::LoadOptions {
        dtype,
        device: opts.device.clone(),
        prediction: opts.prediction,
        loras: opts.loras.clone(),
        ..sd::LoadOptions::default()
    };
    if let Some(b) = opts.max_batch {
        sd_opts.max_batch = b;
    }
    let loaded = sd::text_to_image::load(
        spec,
        opts.text_encoders.as_deref(),
        opts.ae.as_deref(),
        &sd_opts,
    )?;
    let weights = super::weight_hashes::hash_files(
        &loaded.weights,
        loaded.root.as_deref(),
        super::weight_hashes::cache_dir().as_deref(),
    )?;
    let mut record = serde_json::json!({
        "family": "text-to-image",
        "weights": serde_json::to_value(&weights)
            .map_err(|e| Error::Spec(format!("recording the weight hashes: {e}")))?,
    });
    if let Some(t) = &opts.text_encoders {
        record["text_encoders"] = t.clone().into();
    }
    if !opts.loras.is_empty() {
        record["loras"] = lora_record(&opts.loras)?;
    }
    if let Some(p) = opts.prediction {
        record["prediction"] = serde_json::to_value(p).unwrap_or_default();
    }
    if let Some(a) = &opts.ae {
        record["ae"] = a.display().to_string().into();
    }
    Ok(Model {
        source: spec.to_string(),
        inner: Inner::Text(Arc::from(loaded.model)),
        record,
        device: opts.device.clone(),
        dtype,
        recommended_cfg: None,
    })
}

/// `[{file, scale, bytes, sha256}]` of the LoRA files merged.
fn lora_record(loras: &[sd::lora::LoraSpec]) -> Result<Value> {
    let paths: Vec<std::path::PathBuf> = loras.iter().map(|l| l.path.clone()).collect();
    let hashes = super::weight_hashes::hash_files(
        &paths,
        None,
        super::weight_hashes::cache_dir().as_deref(),
    )?;
    Ok(loras
        .iter()
        .zip(hashes)
        .map(|(l, h)| {
            serde_json::json!({
                "file": h.file, "scale": l.scale, "bytes": h.bytes, "sha256": h.sha256,
            })
        })
        .collect())
}

pub(super) fn only_f32(opts: &LoadOptions, what: &str) -> Result<WeightDType> {
    match opts.dtype {
        None | Some(WeightDType::F32) => Ok(WeightDType::F32),
        Some(d) => Err(Error::Spec(format!(
            "{what} runs in f32 only (asked for {}); drop --dtype",
            d.name()
        ))),
    }
}

pub(super) fn load_toy(weak: bool, opts: &LoadOptions) -> Result<Model> {
    let dtype = only_f32(opts, "the toy model")?;
    let (entry, name) = if weak {
        (toy::model::FLOW_WEAK, "toy-weak")
    } else {
        (toy::model::FLOW, "toy")
    };
    let assets = toy::Assets::locate();
    let context = |e: Error| Error::Spec(format!("loading the toy model `{name}`: {e}"));
    // Read and checked once: the config is recorded, the weights loaded.
    let (config, weights) = toy::model::checked_files(&assets, entry).map_err(context)?;
    let flow = ToyFlow::from_checked(&config, weights, name, &opts.device).map_err(context)?;
    let mut record = serde_json::to_value(&config)
        .map_err(|e| Error::Spec(format!("recording the toy config: {e}")))?;
    // The weights' sha256 (checked at load), so a record names the exact model.
    let manifest = toy::model::Manifest::of(&assets)?;
    record["weights_sha256"] = manifest.entry(entry)?.sha256.clone().into();
    Ok(Model {
        source: name.to_string(),
        inner: Inner::Toy { flow, weak },
        record,
        device: opts.device.clone(),
        dtype,
        recommended_cfg: manifest.recommended_cfg,
    })
}

/// Longest GMM spec file read (a spec is a few kB; 64 MiB holds a million components).
const MAX_SPEC_BYTES: u64 = 64 << 20;

/// Reads a GMM spec: a regular file (not a device or FIFO, which could block or never end)
/// of at most [`MAX_SPEC_BYTES`].
fn read_spec_file(path: &str) -> Result<String> {
    use std::io::Read as _;
    let fail = |why: String| {
        Error::Spec(format!(
            "cannot read GMM spec `{path}`: {why}; give a JSON file as --model gmm:SPEC.json"
        ))
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("it is not a regular file".into()));
    }
    if meta.len() > MAX_SPEC_BYTES {
        return Err(fail(format!(
            "it is {} bytes, more than the {MAX_SPEC_BYTES} a spec may have",
            meta.len()
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SPEC_BYTES).read_to_string(&mut text))
        .map_err(|e| fail(e.to_string()))?;
    Ok(text)
}

fn load_mixture(spec: &str, path: &str, opts: &LoadOptions) -> Result<Model> {
    let dtype = only_f32(opts, "a Gaussian mixture")?;
    let text = read_spec_file(path)?;
    let mixture = GmmSpec::from_json(&text).map_err(|e| {
        let e = e.to_string();
        let e = e.trim_start_matches("GMM spec: ");
        Error::Spec(format!(
            "GMM spec `{path}`: {e} (expected {{\"dim\": D, \"components\": [{{\"weight\": w, \
             \"mean\": [D numbers], \"std\": s, \"class\": c}}, …]}})"
        ))
    })?;
    Model::mixture(spec, mixture, opts, dtype)
}

impl Model {
    /// A Gaussian mixture given directly, named `source` in records.
    pub fn from_mixture(source: &str, spec: GmmSpec, opts: &LoadOptions) -> Result<Model> {
        let dtype = only_f32(opts, "a Gaussian mixture")?;
        Model::mixture(source, spec, opts, dtype)
    }

    fn mixture(
        source: &str,
        spec: GmmSpec,
        opts: &LoadOptions,
        dtype: WeightDType,
    ) -> Result<Model> {
        let record = serde_json::to_value(&spec)
            .map_err(|e| Error::Spec(format!("recording the GMM spec: {e}")))?;
        let path = opts
            .mixture_path
            .clone()
            .unwrap_or_else(GmmDenoiser::vp_path);
        let denoiser = GmmDenoiser::new(spec, path, "gmm")?;
        Ok(Model {
            source: source.to_string(),
            inner: Inner::Mixture(denoiser),
            record,
            device: opts.device.clone(),
            dtype,
            recommended_cfg: None,
        })
    }
}
