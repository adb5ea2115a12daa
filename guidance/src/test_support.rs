//! Helpers the crate's unit tests share.

use candle_core::Tensor;

/// The largest `|a − b|` over every value, in f32.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every value's bits, in order (for comparisons that must be exact, zeros' signs included).
pub(crate) fn bits(t: &Tensor) -> Vec<u32> {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.into_iter().map(f32::to_bits).collect()
}
