//! Kernels compiled for the vector units the CPU has, chosen at run time: the hand-written
//! loops of this crate and of `steerdiff-pipelines` are plain Rust that the compiler
//! vectorises, and [`simd_dispatch!`](crate::simd_dispatch) compiles each one three times
//! (AVX-512, AVX2 + FMA, and the build's baseline) and calls the one the CPU runs.
//!
//! No kernel's values depend on the choice: Rust never fuses a multiply and an add into an FMA
//! on its own (that needs fast-math flags it does not set), so every variant performs the same
//! operations in the same order, only on wider registers.

/// The widest vector extension the CPU has, of those the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512 Foundation.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// The build's baseline (SSE2 on x86-64; every other architecture).
    Plain,
}

/// What this CPU has (detected once).
pub fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            if std::arch::is_x86_feature_detected!("avx512f") {
                SimdLevel::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                SimdLevel::Avx2
            } else {
                SimdLevel::Plain
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    SimdLevel::Plain
}

/// Defines `$vis fn $name(args) -> $out` as `$generic(args)` compiled for AVX-512, AVX2 + FMA,
/// or the baseline, by [`simd_level`](crate::simd::simd_level). `$generic` should be
/// `#[inline(always)]`, so that its loops are compiled inside each variant.
///
/// ```
/// #[inline(always)]
/// fn sum_generic(x: &[f32]) -> f32 {
///     x.chunks(8).map(|c| c.iter().sum::<f32>()).sum()
/// }
/// steerdiff_guidance::simd_dispatch!(
///     /// The sum of `x`, by chunks of 8.
///     pub fn sum(x: &[f32]) -> f32 = sum_generic
/// );
/// assert_eq!(sum(&[1.0; 20]), 20.0);
/// ```
#[macro_export]
macro_rules! simd_dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty = $generic:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) -> $out {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) -> $out {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn narrow($($arg: $ty),*) -> $out {
                    $generic($($arg),*)
                }
                match $crate::simd::simd_level() {
                    // SAFETY: the CPU was checked to have the features these were compiled for.
                    $crate::simd::SimdLevel::Avx512 => return unsafe { wide($($arg),*) },
                    $crate::simd::SimdLevel::Avx2 => return unsafe { narrow($($arg),*) },
                    $crate::simd::SimdLevel::Plain => {}
                }
            }
            $generic($($arg),*)
        }
    };
}
