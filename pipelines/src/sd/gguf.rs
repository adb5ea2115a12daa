//! GGUF weights, checked before candle reads them: the GGML types steerdiff can load, each
//! tensor's size against its type's blocks and against the file (a truncated file is named as
//! such), so a bad file gives a clear error, never a panic.

use std::path::Path;

use candle_core::quantized::GgmlDType;

use super::gguf_header::{self, Header};
use crate::{Error, Result};

/// The GGML types steerdiff loads, with their GGUF type ids.
pub const LOADABLE: [(u32, GgmlDType); 13] = [
    (0, GgmlDType::F32),
    (1, GgmlDType::F16),
    (30, GgmlDType::BF16),
    (2, GgmlDType::Q4_0),
    (3, GgmlDType::Q4_1),
    (6, GgmlDType::Q5_0),
    (7, GgmlDType::Q5_1),
    (8, GgmlDType::Q8_0),
    (10, GgmlDType::Q2K),
    (11, GgmlDType::Q3K),
    (12, GgmlDType::Q4K),
    (13, GgmlDType::Q5K),
    (14, GgmlDType::Q6K),
];

/// The name llama.cpp and city96's files use for GGML type `id` (`Q4_K`, `IQ2_XXS`, …).
pub fn type_name(id: u32) -> String {
    let names = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
        "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
        "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4",
        "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0",
    ];
    names
        .get(id as usize)
        .map(|n| n.to_string())
        .unwrap_or_else(|| format!("type {id}"))
}

/// The name of a candle GGML type, as [`type_name`] writes it.
pub fn dtype_name(t: GgmlDType) -> String {
    match LOADABLE.iter().find(|(_, d)| *d == t) {
        Some((id, _)) => type_name(*id),
        None => format!("{t:?}"),
    }
}

/// The candle type of GGUF type id `id`, when steerdiff loads it.
pub fn loadable(id: u32) -> Option<GgmlDType> {
    LOADABLE.iter().find(|(i, _)| *i == id).map(|(_, d)| *d)
}

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Reads and checks the header of the GGUF file `path`: every tensor of a loadable type,
/// whole blocks, inside the file.
pub fn open_checked(path: &Path) -> Result<Header> {
    if let Some(why) = crate::fs::why_unusable(path) {
        return Err(Error::Spec(format!("cannot read GGUF: {why}")));
    }
    let header = gguf_header::read(path)?;
    let shown = path.display();
    let loadable_names = || {
        LOADABLE
            .iter()
            .map(|(id, _)| type_name(*id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for t in &header.tensors {
        let Some(dtype) = loadable(t.type_id) else {
            return Err(Error::Spec(format!(
                "`{shown}`: tensor `{}` is stored as {}, which steerdiff cannot load (it loads \
                 {}); use a file quantized to one of those, e.g. made by `steerdiff quantize`",
                t.name,
                type_name(t.type_id),
                loadable_names()
            )));
        };
        let damaged = |why: String| {
            Error::Spec(format!(
                "`{shown}`: tensor `{}` {why}: the file is damaged (fetch it again, or re-make \
                 it with `steerdiff quantize`)",
                t.name
            ))
        };
        let elems = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| damaged(format!("has an impossible shape {:?}", t.dims)))?;
        let block = dtype.block_size() as u64;
        let inner = t.dims.last().copied().unwrap_or(1);
        if inner % block != 0 {
            return Err(damaged(format!(
                "of shape {:?} does not fill whole {} blocks of {block}",
                t.dims,
                dtype_name(dtype)
            )));
        }
        let end = (elems / block)
            .checked_mul(dtype.type_size() as u64)
            .and_then(|bytes| bytes.checked_add(t.offset))
            .and_then(|e| e.checked_add(header.data_offset));
        match end {
            Some(end) if end <= header.file_size => {}
            _ => {
                return Err(Error::Spec(format!(
                    "`{shown}` is truncated: tensor `{}` ({} {:?}) runs past the file's end \
                     ({} bytes); fetch it again or re-make it with `steerdiff quantize`",
                    t.name,
                    dtype_name(dtype),
                    t.dims,
                    header.file_size
                )))
            }
        }
    }
    Ok(header)
}
