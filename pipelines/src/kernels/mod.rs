//! CPU kernels for the hot operations of the image models, where candle 0.11's own CPU ops
//! spend most of their time outside the arithmetic: convolution (im2col, and Winograd's
//! F(2×2, 3×3) for 3 × 3 of stride 1), attention, group norm with SiLU, and the vectorised `exp`
//! under the last two.
//!
//! Each kernel runs for f32 tensors on the CPU and falls back to candle's ops for other devices
//! and dtypes, so a model written against these functions runs everywhere; each is tested
//! against candle's op in value. The matrix products are the `gemm` crate's, which candle itself
//! uses on the CPU.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use steerdiff_pipelines::kernels::{conv2d, Conv2dParams};
//!
//! let x = Tensor::ones((1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
//! let w = Tensor::ones((3, 2, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let y = conv2d(&x, &w, None, Conv2dParams { padding: 1, ..Default::default() })?;
//! // The centre sees all 9 taps of both channels; a corner sees 4 of each.
//! assert_eq!(y.get(0)?.get(0)?.get(1)?.get(1)?.to_scalar::<f32>()?, 18.0);
//! assert_eq!(y.get(0)?.get(0)?.get(0)?.get(0)?.to_scalar::<f32>()?, 8.0);
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod attention;
pub mod conv2d;
pub mod geglu;
pub mod group_norm;
mod im2col;
pub mod linear;
pub mod vector_math;
mod winograd;

pub use attention::attention;
pub use conv2d::{conv2d, Conv2dParams};
pub use geglu::geglu;
pub use group_norm::GroupNorm;
pub use linear::Linear;

use candle_core::{CpuStorage, Layout, Result};

/// The f32 data of a contiguous CPU tensor, or an error naming `op`.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = storage else {
        candle_core::bail!("{op}: f32 tensors only")
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// A matrix read through strides: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl View {
    /// A row-major matrix: rows `rs` apart, each contiguous.
    pub fn rows(ptr: *const f32, rs: usize) -> View {
        View { ptr, rs, cs: 1 }
    }

    /// The transpose of a row-major matrix whose rows are `cs` apart: element `(i, j)` at
    /// `ptr + i + j·cs`.
    pub fn transposed(ptr: *const f32, cs: usize) -> View {
        View { ptr, rs: 1, cs }
    }
}

/// The matrix product every kernel uses (`gemm`'s): `dst ← dst + β·lhs·rhs` when `accumulate`
/// (`dst` holds the bias, say), else `dst ← β·lhs·rhs`; `lhs` is `m × k`, `rhs` `k × n`, `dst`
/// `m × n` with rows `dst_rs` apart and unit column stride.
///
/// # Safety
/// Each view must cover its extent, and `dst`'s `m × n` extent must be writable and touched by
/// no other thread meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    (m, n, k): (usize, usize, usize),
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        beta,
        false,
        false,
        false,
        parallelism,
    )
}

/// How the matrix products split across threads: rayon's pool (its size follows `--threads`
/// and `RAYON_NUM_THREADS`).
pub(crate) fn gemm_threads() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// The least work (in values touched) worth one parallel task: below it, handing a task to
/// another thread costs more than doing it (tiny models are all such work).
pub(crate) const MIN_TASK_FLOATS: usize = 16 << 10;

/// A pointer to an output buffer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);

impl SendPtr {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: every user writes through the pointer only to elements no other task touches, and
// the buffer outlives the tasks (they are joined before it is returned).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
