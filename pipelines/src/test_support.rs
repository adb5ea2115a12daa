//! Helpers the crate's unit tests share.

use candle_core::{DType, Tensor};

/// The largest `|v|` over every value of `t`, in f32.
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The largest `|a − b|` over every value, in f32.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}
