//! Safetensors read tensor by tensor with `pread`, not through a memory map.
//!
//! Building a model from a mapped file touches every page of it while the copies are made, so
//! for a moment the process holds the whole file (as mapped page cache) and the whole model:
//! the peak resident memory of an f32 SD-1.5 load is about twice its weights (measured in
//! `docs/bench.md`). Read into a buffer per tensor, the file's pages stay in the page cache,
//! outside the process, and the peak is the model plus one tensor.
//!
//! Files are checked first as every weight file is ([`super::weights::open_checked`]: the
//! header and every tensor's extent parse, dtypes are floats); the offsets come from the same
//! header.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use serde::Deserialize;

use crate::{Error, Result};

/// One tensor's place in its file.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    /// Absolute byte offset in the file.
    start: u64,
    len: usize,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// Checked safetensors files whose tensors are read on demand.
#[derive(Debug)]
pub struct ReadTensors {
    files: Vec<PathBuf>,
    /// The files, open for positioned reads (`pread` needs no seek, so `&File` is enough).
    handles: Vec<File>,
    index: HashMap<String, Entry>,
}

impl ReadTensors {
    /// Checks and indexes `files` (a model's shards).
    pub fn open(files: &[PathBuf]) -> Result<ReadTensors> {
        drop(super::weights::open_checked(files)?);
        let mut index = HashMap::new();
        let mut handles = Vec::with_capacity(files.len());
        for (i, path) in files.iter().enumerate() {
            let bad = |e: String| Error::Spec(format!("`{}`: {e}", path.display()));
            let mut f = File::open(path).map_err(|e| bad(e.to_string()))?;
            let mut n = [0u8; 8];
            f.read_exact(&mut n).map_err(|e| bad(e.to_string()))?;
            // `open_checked` has parsed this header already (≤ 100 MB by the format).
            let n = u64::from_le_bytes(n) as usize;
            let mut header = vec![0u8; n];
            f.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
            handles.push(f);
            for (name, v) in map {
                if name == "__metadata__" {
                    continue;
                }
                let h: HeaderEntry = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
                let (begin, end) = h.data_offsets;
                index.insert(
                    name,
                    Entry {
                        file: i,
                        dtype: h.dtype,
                        shape: h.shape,
                        start: (8 + n + begin) as u64,
                        len: end - begin,
                    },
                );
            }
        }
        Ok(ReadTensors {
            files: files.to_vec(),
            handles,
            index,
        })
    }

    /// The tensor `name`, read from disk onto `dev` in its stored dtype.
    pub fn load(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(e) = self.index.get(name) else {
            candle_core::bail!("cannot find tensor {name}")
        };
        let mut bytes = vec![0u8; e.len];
        self.handles[e.file]
            .read_exact_at(&mut bytes, e.start)
            .map_err(|err| {
                candle_core::Error::Msg(format!(
                    "reading `{name}` from `{}`: {err}",
                    self.files[e.file].display()
                ))
            })?;
        let view = safetensors::tensor::TensorView::new(e.dtype, e.shape.clone(), &bytes)
            .map_err(|err| candle_core::Error::Msg(format!("`{name}`: {err}")))?;
        view.load(dev)
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|e| e.shape.as_slice())
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}

/// `t` if it has the shape `s` a layer asked for `name` with, else candle's shape error.
pub(crate) fn expect_shape(name: &str, t: Tensor, s: Shape) -> candle_core::Result<Tensor> {
    if t.shape() == &s {
        return Ok(t);
    }
    Err(candle_core::Error::UnexpectedShape {
        msg: format!("shape mismatch for {name}"),
        expected: s,
        got: t.shape().clone(),
    }
    .bt())
}

impl SimpleBackend for ReadTensors {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        expect_shape(name, self.load(name, dev)?, s)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;

    #[test]
    fn tensors_read_equal_the_mapped_ones() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        t.insert(
            "a".to_string(),
            Tensor::randn(0f32, 1.0, (3, 5), &dev).unwrap(),
        );
        t.insert(
            "b.weight".to_string(),
            Tensor::randn(0f32, 1.0, (7,), &dev)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        );
        let path = dir.path().join("m.safetensors");
        candle_core::safetensors::save(&t, &path).unwrap();
        let read = ReadTensors::open(std::slice::from_ref(&path)).unwrap();
        let mapped = candle_core::safetensors::load(&path, &dev).unwrap();
        for (name, want) in mapped {
            let got = read.load(&name, &dev).unwrap();
            assert_eq!(got.dtype(), want.dtype());
            let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            assert_eq!(max_abs_diff(&f32s(&got), &f32s(&want)), 0.0, "{name}");
        }
        assert!(read.load("missing", &dev).is_err());
        assert_eq!(read.shape("a"), Some(&[3usize, 5][..]));
    }
}
