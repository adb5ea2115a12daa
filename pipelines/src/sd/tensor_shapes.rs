//! [`TensorShapes`]: the names and shapes of a checkpoint's tensors, whatever its format
//! (safetensors, GGUF), so a config read off the shapes ([`super::flux::infer_config`]) is
//! one piece of code for every format.

use candle_core::safetensors::MmapedSafetensors;

use super::gguf_header::Header;
use crate::{Error, Result};

/// A checkpoint's tensor names and shapes (no data).
pub trait TensorShapes {
    /// The shape of tensor `name` (outermost dimension first), `None` when absent.
    fn shape_of(&self, name: &str) -> Option<Vec<usize>>;

    /// Whether some tensor's name starts with `prefix`.
    fn has_prefix(&self, prefix: &str) -> bool;
}

impl TensorShapes for MmapedSafetensors {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.get(name).ok().map(|v| v.shape().to_vec())
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.tensors().iter().any(|(n, _)| n.starts_with(prefix))
    }
}

impl TensorShapes for super::read_tensors::ReadTensors {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.shape(name).map(<[usize]>::to_vec)
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.names().any(|n| n.starts_with(prefix))
    }
}

impl TensorShapes for Header {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let t = self.tensors.iter().find(|t| t.name == name)?;
        t.dims.iter().map(|&d| usize::try_from(d).ok()).collect()
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.tensors.iter().any(|t| t.name.starts_with(prefix))
    }
}

/// The shape of tensor `name`; its absence is an error naming it.
pub(crate) fn dims(st: &impl TensorShapes, name: &str) -> Result<Vec<usize>> {
    st.shape_of(name)
        .ok_or_else(|| Error::Spec(format!("the checkpoint has no tensor `{name}`")))
}

/// How many numbered blocks `prefix.0.`, `prefix.1.`, … the checkpoint holds (stopping at the
/// first gap).
pub(crate) fn count(st: &impl TensorShapes, prefix: &str) -> usize {
    let mut n = 0;
    while st.has_prefix(&format!("{prefix}.{n}.")) {
        n += 1;
    }
    n
}

/// The `(rows, columns)` of the matrix `name`; absent or not 2-D is an error naming it.
pub(crate) fn matrix(st: &impl TensorShapes, name: &str) -> Result<(usize, usize)> {
    match dims(st, name)?[..] {
        [r, c] => Ok((r, c)),
        ref other => Err(Error::Spec(format!(
            "the checkpoint's `{name}` has shape {other:?}; a matrix was expected (is it the \
             right kind of checkpoint?)"
        ))),
    }
}

/// The length of the vector `name`; absent or not 1-D is an error naming it.
pub(crate) fn vector(st: &impl TensorShapes, name: &str) -> Result<usize> {
    match dims(st, name)?[..] {
        [n] => Ok(n),
        ref other => Err(Error::Spec(format!(
            "the checkpoint's `{name}` has shape {other:?}; a vector was expected (is it the \
             right kind of checkpoint?)"
        ))),
    }
}
