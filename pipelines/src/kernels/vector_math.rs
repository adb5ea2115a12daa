//! Element-wise math over `f32` rows that the compiler vectorises: `exp`, the softmax of a row,
//! SiLU. Each hot loop is compiled twice more with AVX-512 or AVX2 + FMA enabled and picked at
//! run time, so one binary uses the widest vectors the machine has.
//!
//! Why hand-written: `f32::exp` calls libm once per element (about 3 ns here), which at 512 px
//! puts over a billion scalar calls into every attention-heavy UNet step; the polynomial below
//! runs 8–16 lanes at a time.
//!
//! `exp(x) = 2ⁿ · exp(r)`, `n = round(x·log₂e)`, `r = x − n·ln 2` (Cody–Waite, `ln 2` split in
//! two so that `r` is exact to f32), `|r| ≤ ln2/2`, and `exp(r)` by its degree-6 Taylor
//! polynomial (truncation error `(ln2/2)⁷/7! < 1.3e-7` relative, about one ulp).

/// The largest argument whose `exp` is finite in f32 (a little under ln(f32::MAX)).
const MAX_ARG: f32 = 88.0;
/// Arguments below this give exactly 0 (`exp` would be subnormal there).
const MIN_ARG: f32 = -87.0;

/// `exp(x)`, within about two ulp for `x ∈ [−87, 88]`; 0 below, `exp(88)` above.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and removing 1.5·2²³ rounds to the nearest integer (ties to even) without a branch.
    const ROUND: f32 = 12_582_912.0;
    let small = x < MIN_ARG;
    let x = x.clamp(MIN_ARG, MAX_ARG);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the low mantissa bits of `shifted` (an `as i32` cast
    // saturates, which the compiler cannot vectorise).
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    if small {
        0.0
    } else {
        p * scale
    }
}

/// Lanes summed separately in the reductions (so that they vectorise; 16 f32 fill one AVX-512
/// register).
const LANES: usize = 16;

#[inline(always)]
fn max_of(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `row ← exp(row − max(row))`, returning the sum of the new row.
#[inline(always)]
fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
            *v = exp(*v - max);
            *a += *v;
        }
    }
    let mut tail = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        tail += *v;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn softmax_numerator_generic(row: &mut [f32]) -> f32 {
    if row.is_empty() {
        return 0.0;
    }
    let max = max_of(row);
    exp_shifted(row, max)
}

#[inline(always)]
fn silu_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + exp(-*v);
    }
}

/// Defines `$name(&mut [f32]) -> $out`: `$generic` compiled for AVX-512, AVX2 + FMA, or
/// plain, by what the CPU has (detected once).
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $generic:ident, $out:ty) => {
        $(#[$doc])*
        pub fn $name(x: &mut [f32]) -> $out {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide(x: &mut [f32]) -> $out {
                    $generic(x)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn narrow(x: &mut [f32]) -> $out {
                    $generic(x)
                }
                match simd_level() {
                    // SAFETY: the CPU was checked to have the features these were compiled for.
                    SimdLevel::Avx512 => return unsafe { wide(x) },
                    SimdLevel::Avx2 => return unsafe { narrow(x) },
                    SimdLevel::Plain => {}
                }
            }
            $generic(x)
        }
    };
}

dispatch!(
    /// `row ← exp(row − max(row))`, returning the new row's sum: the numerators of the row's
    /// softmax and their normaliser (divide by it to get the softmax).
    softmax_numerator,
    softmax_numerator_generic,
    f32
);
dispatch!(
    /// `x ← x · sigmoid(x)` (SiLU, also called swish).
    silu_in_place,
    silu_generic,
    ()
);

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum SimdLevel {
    Avx512,
    Avx2,
    Plain,
}

#[cfg(target_arch = "x86_64")]
fn simd_level() -> SimdLevel {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f64;
        for i in 0..350_000 {
            let x = -87.0 + i as f32 * 0.000_5;
            let exact = (x as f64).exp();
            let rel = ((exp(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(100.0).is_finite());
    }

    #[test]
    fn softmax_matches_the_definition() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 * 0.9 - 10.0)
            .collect();
        let mut fast = row.clone();
        let z_fast = softmax_numerator(&mut fast);
        fast.iter_mut().for_each(|v| *v /= z_fast);
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = row.iter().map(|&r| (r as f64 - m).exp()).sum();
        for (f, &r) in fast.iter().zip(&row) {
            let want = (r as f64 - m).exp() / z;
            assert!(
                (*f as f64 - want).abs() < 1e-6 * want.max(1e-3),
                "{f} vs {want}"
            );
        }
    }

    #[test]
    fn silu_matches_the_definition() {
        let mut x: Vec<f32> = (0..41).map(|i| i as f32 * 0.5 - 10.0).collect();
        let want: Vec<f64> = x
            .iter()
            .map(|&v| v as f64 / (1.0 + (-v as f64).exp()))
            .collect();
        silu_in_place(&mut x);
        for (a, b) in x.iter().zip(&want) {
            assert!(
                (*a as f64 - b).abs() < 1e-6 * b.abs().max(1e-2),
                "{a} vs {b}"
            );
        }
    }
}
