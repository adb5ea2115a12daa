//! Weights: safetensors only, checked before use so a bad file gives a clear error, never a
//! panic: truncated or malformed files, tensors of a non-float dtype, pickle checkpoints
//! (`.ckpt`, `.bin`, `.pt`, `.pth`), which can run code when loaded and are refused.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::hub::ModelFiles;
use crate::{Error, Result};

/// The weight dtype a model runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDType {
    /// 32-bit float (default; what the conformance tests use).
    #[default]
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    BF16,
}

impl WeightDType {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            WeightDType::F32 => DType::F32,
            WeightDType::F16 => DType::F16,
            WeightDType::BF16 => DType::BF16,
        }
    }

    /// The name as written on the command line and in records (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            WeightDType::F32 => "f32",
            WeightDType::F16 => "f16",
            WeightDType::BF16 => "bf16",
        }
    }

    /// Parses `f32`, `f16`/`fp16`/`float16`, `bf16`/`bfloat16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(WeightDType::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(WeightDType::F16),
            "bf16" | "bfloat16" => Ok(WeightDType::BF16),
            other => Err(Error::Spec(format!(
                "unknown dtype `{other}` (valid: f32, f16, bf16)"
            ))),
        }
    }
}

const PICKLE_EXTENSIONS: [&str; 5] = ["ckpt", "bin", "pt", "pth", "pkl"];

/// Refuses a pickle checkpoint by name, explaining why and what to do.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
        return Err(Error::Spec(format!(
            "`{}` is a PyTorch pickle checkpoint; steerdiff loads safetensors only (pickles can \
             run arbitrary code when loaded). Use the model's .safetensors files, or convert it \
             once in Python with `safetensors.torch.save_file(torch.load(path), \"model.safetensors\")`",
            path.display()
        )));
    }
    if ext != "safetensors" {
        return Err(Error::Spec(format!(
            "`{}` is not a .safetensors file (steerdiff loads safetensors only)",
            path.display()
        )));
    }
    if let Some(kind) = pickle_magic(path) {
        return Err(Error::Spec(format!(
            "`{}` is a PyTorch pickle checkpoint ({kind}) renamed .safetensors; steerdiff loads \
             safetensors only (pickles can run arbitrary code when loaded). Convert the original \
             once in Python with `safetensors.torch.save_file(torch.load(path), \"model.safetensors\")`",
            path.display()
        )));
    }
    Ok(())
}

/// Whether a file starts like a pickle checkpoint, from its first 9 bytes only: a zip archive
/// (`torch.save` since PyTorch 1.6: `PK\x03\x04`, where a safetensors file has its JSON header
/// `{` at byte 8) or a legacy `torch.save` stream (pickle protocol 2 opening with the torch
/// magic number, `\x80\x02\x8a\x0a`).
fn pickle_magic(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    if n >= 4 && head[..4] == *b"PK\x03\x04" && (n < 9 || head[8] != b'{') {
        Some("a zip archive, as torch.save writes")
    } else if n >= 4 && head[..4] == [0x80, 0x02, 0x8a, 0x0a] {
        Some("a legacy torch.save stream")
    } else {
        None
    }
}

/// Opens safetensors files and checks every tensor: the files must parse completely (a
/// truncated file is refused) and hold only f32/f16/bf16 tensors (integer buffers named
/// `*position_ids` are tolerated: old CLIP checkpoints carry them).
pub fn open_checked(files: &[PathBuf]) -> Result<MmapedSafetensors> {
    for f in files {
        refuse_pickle(f)?;
        if let Some(why) = crate::fs::why_unusable(f) {
            return Err(Error::Spec(format!("cannot read safetensors: {why}")));
        }
    }
    // SAFETY: the files are memory-mapped read-only; steerdiff never writes them, and they are
    // expected not to change while a model is loaded (as every safetensors loader assumes).
    let st = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| {
        Error::Spec(format!(
            "cannot read safetensors {}: {} (a truncated or corrupt file? fetch it again)",
            list(files),
            candle_message(&e)
        ))
    })?;
    for (name, view) in st.tensors() {
        check_dtype(&name, view.dtype(), &list(files))?;
    }
    Ok(st)
}

/// Refuses a tensor that is not f32, f16 or bf16 (but integer `*position_ids`).
fn check_dtype(name: &str, dtype: safetensors::Dtype, files: &str) -> Result<()> {
    let dtype = format!("{dtype:?}");
    let float = matches!(dtype.as_str(), "F32" | "F16" | "BF16");
    if !float && !name.ends_with("position_ids") {
        return Err(Error::Spec(format!(
            "tensor `{name}` in {files} has dtype {dtype}; weights must be f32, f16 or bf16"
        )));
    }
    Ok(())
}

/// The checks of [`open_checked`] on a safetensors file in memory (the fuzzing entry point):
/// the header and every tensor's extent parse, and every tensor is a float.
pub fn check_safetensors_bytes(bytes: &[u8]) -> Result<()> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Spec(format!("not a safetensors file: {e}")))?;
    for (name, view) in st.tensors() {
        check_dtype(&name, view.dtype(), "(memory)")?;
    }
    Ok(())
}

fn list(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| format!("`{}`", f.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A candle error's message without the backtrace candle attaches (for one-line errors).
pub fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        other => other.to_string(),
    }
}

/// Wraps a candle error raised while building `what` from `files` into a load error.
pub fn load_error(what: &str, files: &[PathBuf], e: candle_core::Error) -> Error {
    Error::Spec(format!(
        "loading {what} from {}: {}",
        list(files),
        candle_message(&e)
    ))
}

/// A [`VarBuilder`] over checked safetensors files, converting to `dtype` on `device`.
pub fn var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let st = open_checked(files)?;
    Ok(VarBuilder::from_backend(
        Box::new(st),
        dtype,
        device.clone(),
    ))
}

/// The weight files of a diffusers component folder (`unet/`, `vae/`, `text_encoder/`):
/// `<stem>.safetensors`, else the shards of `<stem>.safetensors.index.json`, else the
/// `fp16` variant. A folder holding only pickle weights is refused by name.
pub fn component_weights(files: &ModelFiles, folder: &str, stem: &str) -> Result<Vec<PathBuf>> {
    let at = |file: String| super::hub::in_folder(folder, &file);
    let single = at(format!("{stem}.safetensors"));
    if let Some(p) = files.find(&single)? {
        return Ok(vec![p]);
    }
    let index = at(format!("{stem}.safetensors.index.json"));
    if let Some(p) = files.find(&index)? {
        let text = std::fs::read_to_string(&p)
            .map_err(|e| Error::Spec(format!("cannot read `{}`: {e}", p.display())))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("`{}` is not valid JSON: {e}", p.display())))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Spec(format!("`{}` has no `weight_map`", p.display())))?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        return shards.iter().map(|s| files.get(&at(s.clone()))).collect();
    }
    let fp16 = at(format!("{stem}.fp16.safetensors"));
    if let Some(p) = files.find(&fp16)? {
        return Ok(vec![p]);
    }
    for ext in ["bin", "ckpt", "pt"] {
        let pickle = at(format!("{stem}.{ext}"));
        if let Some(p) = files.find(&pickle)? {
            refuse_pickle(&p)?;
        }
    }
    Err(Error::Spec(format!(
        "no safetensors weights for `{folder}` in {} (looked for `{single}`, `{index}`, `{fp16}`)",
        files.source().describe()
    )))
}
