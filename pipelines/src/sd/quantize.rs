//! A FLUX transformer's safetensors quantized into a GGUF file that [`super::flux_gguf`]
//! (and city96's ComfyUI-GGUF) loads: BFL's tensor names (a `model.diffusion_model.` prefix is
//! dropped), `general.architecture = "flux"`.
//!
//! Which tensors are quantized, as city96's converter does: the 2-D `.weight` matrices of more
//! than [`KEEP_AT_MOST`] elements. A matrix whose inner (last) dimension is not a multiple of
//! the type's block (32 for Q8_0/Q4_0/Q5_x, 256 for the k-quants) falls back as llama.cpp's
//! quantizer does — Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0 — and is kept
//! unquantized when even 32 does not divide it. Everything else (norms, biases, small
//! tensors) keeps its float type (f32, f16, bf16). [`Summary`] says what became what.

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device};

use super::gguf::dtype_name;
use super::tensor_shapes::TensorShapes;
use super::weights::{candle_message, open_checked};
use crate::{Error, Result};

/// Tensors of at most this many elements are never quantized (city96's threshold).
pub const KEEP_AT_MOST: usize = 1024;

/// The types `steerdiff quantize --type` accepts, by their command-line names.
pub const TYPES: [(&str, GgmlDType); 12] = [
    ("q8_0", GgmlDType::Q8_0),
    ("q6_k", GgmlDType::Q6K),
    ("q5_k", GgmlDType::Q5K),
    ("q5_1", GgmlDType::Q5_1),
    ("q5_0", GgmlDType::Q5_0),
    ("q4_k", GgmlDType::Q4K),
    ("q4_1", GgmlDType::Q4_1),
    ("q4_0", GgmlDType::Q4_0),
    ("q3_k", GgmlDType::Q3K),
    ("q2_k", GgmlDType::Q2K),
    ("f16", GgmlDType::F16),
    ("f32", GgmlDType::F32),
];

/// Parses a `--type` name (case-insensitive; `q4k` for `q4_k` too).
pub fn parse_type(name: &str) -> Result<GgmlDType> {
    let want = name.to_ascii_lowercase().replace('_', "");
    TYPES
        .iter()
        .find(|(n, _)| n.replace('_', "") == want)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
            Error::Spec(format!(
                "unknown quantization type `{name}` (valid: {})",
                names.join(", ")
            ))
        })
}

/// The type a matrix with `inner` columns is stored as when `want` is asked for: `want` when
/// its blocks divide `inner`, else llama.cpp's fallback, else `None` (kept as it is).
pub fn fitting_type(want: GgmlDType, inner: usize) -> Option<GgmlDType> {
    use GgmlDType::*;
    let fits = |t: GgmlDType| inner % t.block_size() == 0;
    if fits(want) {
        return Some(want);
    }
    let fallback = match want {
        Q2K | Q3K => Q4_0,
        Q4K => Q5_0,
        Q5K => Q5_1,
        Q6K => Q8_0,
        _ => return None,
    };
    fits(fallback).then_some(fallback)
}

/// What a quantization did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Tensors per stored type (`Q4_K`, `F32`, …).
    pub per_type: BTreeMap<String, usize>,
    /// Matrices that could not take the asked type: (name, inner dimension, stored type).
    pub fallbacks: Vec<(String, usize, String)>,
    /// Bytes of tensor data read.
    pub bytes_in: u64,
    /// Bytes of tensor data written.
    pub bytes_out: u64,
}

/// A quantized transformer, ready to write.
#[derive(Debug)]
pub struct Quantized {
    /// The tensors in name order (BFL names, no prefix).
    pub tensors: Vec<(String, QTensor)>,
    /// What became what.
    pub summary: Summary,
}

/// Quantizes the FLUX transformer `input` (safetensors) to `want`.
pub fn quantize_flux(input: &Path, want: GgmlDType) -> Result<Quantized> {
    let st = open_checked(&[input.to_path_buf()])?;
    // Refuses what is not a FLUX transformer, naming what is missing.
    let not_flux = |why: String| {
        Error::Spec(format!(
            "`{}` is not a FLUX transformer ({why}); `steerdiff quantize` takes a FLUX.1 \
             transformer in BFL's single-file layout (flux1-dev.safetensors)",
            input.display()
        ))
    };
    let prefix = ["", "model.diffusion_model."]
        .into_iter()
        .find(|p| st.has_prefix(&format!("{p}double_blocks.")))
        .ok_or_else(|| not_flux("no `double_blocks.*` tensors".into()))?;
    super::flux::infer_config(&st, prefix).map_err(|e| not_flux(e.to_string()))?;
    let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    let mut summary = Summary::default();
    let mut tensors = Vec::with_capacity(names.len());
    for full in names {
        let Some(name) = full.strip_prefix(prefix) else {
            continue; // Not part of the transformer (e.g. a bundled VAE or text encoder).
        };
        let t = st.load(&full, &Device::Cpu)?;
        let dims = t.dims().to_vec();
        summary.bytes_in += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let keep = match t.dtype() {
            DType::F16 => GgmlDType::F16,
            DType::BF16 => GgmlDType::BF16,
            _ => GgmlDType::F32,
        };
        let matrix = dims.len() == 2 && name.ends_with(".weight") && t.elem_count() > KEEP_AT_MOST;
        let stored = if matrix {
            let inner = dims[1];
            let got = fitting_type(want, inner).unwrap_or(keep);
            if got != want {
                summary
                    .fallbacks
                    .push((name.to_string(), inner, dtype_name(got)));
            }
            got
        } else {
            keep
        };
        let q = QTensor::quantize(&t, stored).map_err(|e| {
            Error::Spec(format!(
                "quantizing `{full}` {dims:?} to {}: {}",
                dtype_name(stored),
                candle_message(&e)
            ))
        })?;
        summary.bytes_out += q.storage_size_in_bytes() as u64;
        *summary.per_type.entry(dtype_name(stored)).or_default() += 1;
        tensors.push((name.to_string(), q));
    }
    Ok(Quantized { tensors, summary })
}

/// Writes `q` as GGUF (version 2, 32-byte alignment) to `w`.
pub fn write_gguf<W: Write + Seek>(w: &mut W, q: &Quantized) -> Result<()> {
    let arch = Value::String("flux".into());
    let version = Value::U32(2);
    let metadata = [
        ("general.architecture", &arch),
        ("general.quantization_version", &version),
    ];
    let tensors: Vec<(&str, &QTensor)> = q.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(w, &metadata, &tensors)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_fall_back_as_llama_cpp_does() {
        use GgmlDType::*;
        assert_eq!(fitting_type(Q4K, 3072), Some(Q4K));
        assert_eq!(fitting_type(Q4K, 96), Some(Q5_0));
        assert_eq!(fitting_type(Q6K, 64), Some(Q8_0));
        assert_eq!(fitting_type(Q2K, 32), Some(Q4_0));
        assert_eq!(fitting_type(Q8_0, 16), None);
        assert_eq!(fitting_type(F16, 7), Some(F16));
        assert_eq!(parse_type("Q4_K").unwrap(), Q4K);
        assert_eq!(parse_type("q8_0").unwrap(), Q8_0);
        assert!(parse_type("iq2_xxs").is_err());
    }
}
