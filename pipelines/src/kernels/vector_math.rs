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

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7 in exact arithmetic,
/// under 5e-7 measured in f32, where `1 − …` cancels near 0; GELU multiplies it by `x/2`):
/// `erf(x) = 1 − (a₁t + a₂t² + a₃t³ + a₄t⁴ + a₅t⁵)·exp(−x²)`, `t = 1/(1 + p·|x|)`, odd in `x`.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp(-ax * ax);
    y.copysign(x)
}

/// `out[i] = a[i] · GELU(gate[i])` over one row split in halves `[a | gate]` (GEGLU, Shazeer
/// 2020, with the exact GELU `x·(1 + erf(x/√2))/2` of Hendrycks & Gimpel 2016).
#[inline(always)]
fn geglu_row_generic(row: &[f32], out: &mut [f32]) {
    let (a, gate) = row.split_at(out.len());
    for ((o, &a), &g) in out.iter_mut().zip(a).zip(gate) {
        *o = a * (0.5 * g * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2)));
    }
}

/// Lanes of the f64 sums in [`mean_and_variance`] (8 fill one AVX-512 register).
const F64_LANES: usize = 8;

/// `Σ f(xᵢ)` in f64, over [`F64_LANES`] separate sums so that it vectorises.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; F64_LANES];
    let mut chunks = x.chunks_exact(F64_LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    chunks.remainder().iter().map(|&v| f(v)).sum::<f64>() + acc.iter().sum::<f64>()
}

#[inline(always)]
fn mean_and_variance_generic(x: &[f32]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = lane_sum(x, |v| v as f64) / n;
    let var = lane_sum(x, |v| (v as f64 - mean) * (v as f64 - mean)) / n;
    (mean, var)
}

#[inline(always)]
fn silu_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + exp(-*v);
    }
}

/// The affine part of [`layer_norm_rows`]: `x̂·gain + shift` per channel.
pub type Modulation<'a> = Option<(&'a [f32], &'a [f32])>;

/// `Σ f(xᵢ)` over [`LANES`] separate f32 sums, so that it vectorises.
#[inline(always)]
fn lane_sum_f32(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    // Halves added pairwise (4 vector additions, not 15 dependent scalar ones: rows are short).
    let mut width = LANES / 2;
    while width > 0 {
        let (low, high) = acc.split_at_mut(width);
        low.iter_mut()
            .zip(&high[..width])
            .for_each(|(a, &b)| *a += b);
        width /= 2;
    }
    chunks.remainder().iter().map(|&v| f(v)).sum::<f32>() + acc[0]
}

/// One row's mean and `1/√(var + ε)` (rows here are a pixel's channels: tens to hundreds of
/// values, where f32 sums lose nothing that matters).
#[inline(always)]
fn row_mean_and_inverse_std(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len().max(1) as f32;
    let mean = lane_sum_f32(row, |v| v) / n;
    let var = lane_sum_f32(row, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn layer_norm_rows_generic(
    src: &[f32],
    dst: &mut [f32],
    channels: usize,
    eps: f32,
    modulation: Modulation,
    silu: bool,
) {
    for (x, y) in src
        .chunks_exact(channels)
        .zip(dst.chunks_exact_mut(channels))
    {
        let (mean, inv) = row_mean_and_inverse_std(x, eps);
        match modulation {
            Some((gain, shift)) => {
                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gain).zip(shift) {
                    *y = (x - mean) * inv * g + b;
                }
            }
            None => {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = (x - mean) * inv;
                }
            }
        }
    }
    // Over all rows at once: a row is often one vector, and `exp`'s chain of dependent
    // operations then runs with no other work to overlap it.
    if silu {
        silu_generic(&mut dst[..src.len() / channels * channels]);
    }
}

steerdiff_guidance::simd_dispatch!(
    /// `row ← exp(row − max(row))`, returning the new row's sum: the numerators of the row's
    /// softmax and their normaliser (divide by it to get the softmax).
    pub fn softmax_numerator(row: &mut [f32]) -> f32 = softmax_numerator_generic
);
steerdiff_guidance::simd_dispatch!(
    /// `x ← x · sigmoid(x)` (SiLU, also called swish).
    pub fn silu_in_place(x: &mut [f32]) -> () = silu_generic
);
steerdiff_guidance::simd_dispatch!(
    /// `out = a ⊙ GELU(gate)` over one row `[a | gate]` (see `geglu_row_generic`).
    pub fn geglu_row(row: &[f32], out: &mut [f32]) -> () = geglu_row_generic
);
steerdiff_guidance::simd_dispatch!(
    /// The mean and (biased) variance of `x`, accumulated in f64 over 8 lanes, in two passes
    /// (mean, then squared deviations).
    pub fn mean_and_variance(x: &[f32]) -> (f64, f64) = mean_and_variance_generic
);

steerdiff_guidance::simd_dispatch!(
    /// LayerNorm without affine parameters over each row of `channels` values of `src`
    /// (`x̂ = (x − μ)/√(σ² + ε)`), written to the same row of `dst`; then `x̂·gain + shift` per
    /// channel when `modulation` is given, then SiLU when `silu` (the toy U-Net's
    /// normalisations, one pass each).
    pub fn layer_norm_rows(
        src: &[f32],
        dst: &mut [f32],
        channels: usize,
        eps: f32,
        modulation: Modulation,
        silu: bool
    ) -> () = layer_norm_rows_generic
);

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
    fn erf_is_within_its_bound() {
        for i in 0..=4000 {
            let x = -6.0 + i as f64 * 0.003;
            let want = libm_erf(x);
            let err = (erf(x as f32) as f64 - want).abs();
            assert!(err < 6e-7, "erf({x}): {err:e}");
        }
    }

    /// erf in f64 by its Maclaurin series (|x| ≤ 3) or its continued fraction's asymptote.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        // erf(x) = 2/√π Σ (−1)ⁿ x^(2n+1) / (n! (2n+1)), summed until the terms vanish.
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
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
