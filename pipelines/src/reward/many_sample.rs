//! The many-sample intermediate reward of FK steering (Singhal et al. 2025, arXiv 2501.06848,
//! §3.2; ALGORITHMS §2.3).
//!
//! Instead of scoring Tweedie's single estimate `x̂0 = E[x0 | x_t]`, score `n` draws from the
//! posterior and take the log-mean-exp (the reference's PR #10: log-mean, not mean-log):
//!
//! ```text
//! r_φ(x_t) = log (1/n) Σ_j exp(r(x0⁽ʲ⁾)),   x0⁽ʲ⁾ ~ p(x0 | x_t).
//! ```
//!
//! A continuous model gives no posterior samples without further model calls, so the draws are
//! Gaussian around Tweedie's mean with the posterior spread of a Gaussian data prior of
//! per-coordinate standard deviation `c` (exact when `x0 ~ N(0, c²I)`):
//!
//! ```text
//! x0⁽ʲ⁾ = x̂0 + s_t ξ_j,   s_t = c·σ / √(α²c² + σ²),   ξ_j ~ N(0, I).
//! ```
//!
//! `s_t` is 0 on clean samples (σ = 0), where the reward is `r(x0)` exactly, so FK's final
//! potential — and with it the tilted target `p(x)·exp(λ r(x))` — is unchanged; only the
//! intermediate potentials, which decide which particles survive, see the smoothed reward.
//! The log-mean-exp rewards particles whose neighbourhood *can* score high, not only its centre.
//!
//! The draws are keyed by the content of each row (a hash of its values) and the step, so a
//! score depends only on the row itself — not on batch order or size, and two resampled copies
//! of one particle get the same score. Costs `n` inner reward rows per row, in one call.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use steerdiff_guidance::rng::{splitmix64, Domain, StreamKey};
use steerdiff_guidance::{Condition, Reward, RewardContext};

/// `log (1/n) Σ_j exp(r(x̂0 + s_t ξ_j))` around an inner reward.
pub struct ManySample {
    /// The reward evaluated on each draw.
    pub inner: Arc<dyn Reward>,
    /// Draws per row (`n ≥ 1`; the reference uses 4 or 16).
    pub samples: usize,
    /// Data standard deviation `c` of the Gaussian prior that sets the spread `s_t`.
    pub data_std: f64,
    name: String,
}

impl ManySample {
    /// `n` draws with prior scale `c`.
    pub fn new(inner: Arc<dyn Reward>, samples: usize, data_std: f64) -> Self {
        let name = format!("many-sample({samples}, {})", inner.name());
        ManySample {
            inner,
            samples: samples.max(1),
            data_std,
            name,
        }
    }

    /// The draw spread `s_t = c·σ / √(α²c² + σ²)` at a path point.
    pub fn spread(&self, alpha: f64, sigma: f64) -> f64 {
        let c = self.data_std;
        if sigma <= 0.0 {
            return 0.0;
        }
        c * sigma / (alpha * alpha * c * c + sigma * sigma).sqrt()
    }
}

/// A 64-bit hash of a row's values (FNV-1a over the f32 bit patterns, then SplitMix64).
fn row_hash(row: &[f32], step_key: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ step_key;
    for v in row {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    splitmix64(h)
}

/// `log (1/n) Σ exp(v)`, shifted by the maximum; NaN entries are dropped (all NaN → NaN).
fn log_mean_exp(v: &[f64]) -> f64 {
    let ok: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if ok.is_empty() {
        return f64::NAN;
    }
    let m = ok.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + (ok.iter().map(|x| (x - m).exp()).sum::<f64>() / ok.len() as f64).ln()
}

impl Reward for ManySample {
    fn name(&self) -> &str {
        &self.name
    }

    fn take_cached(&self) -> u64 {
        self.inner.take_cached()
    }

    fn take_decodes(&self) -> u64 {
        self.inner.take_decodes()
    }

    fn score(&self, x0: &Tensor, cx: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let s = self.spread(cx.at.alpha, cx.at.sigma);
        if s == 0.0 {
            return self.inner.score(x0, cx);
        }
        let b = x0.dim(0)?;
        let shape = x0.dims().to_vec();
        let per_row = x0.elem_count() / b.max(1);
        let rows = x0.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2::<f32>()?;
        let n = self.samples;
        let step_key = cx.at.sigma.to_bits();
        let mut draws = Vec::with_capacity(b * n * per_row);
        for row in &rows {
            let key = StreamKey {
                seed: row_hash(row, step_key),
                lineage: 0,
                step: 0,
                domain: Domain::Search,
            };
            let xi = key.normals(n * per_row);
            for j in 0..n {
                draws.extend(
                    row.iter()
                        .zip(&xi[j * per_row..(j + 1) * per_row])
                        .map(|(x, e)| x + s as f32 * e),
                );
            }
        }
        let mut big = shape;
        big[0] = b * n;
        let draws = Tensor::from_vec(draws, big, x0.device())?.to_dtype(x0.dtype())?;
        let conds: Vec<Condition> = cx
            .conds
            .iter()
            .flat_map(|c| std::iter::repeat_n(*c, n))
            .collect();
        let scores = self.inner.score(
            &draws,
            &RewardContext {
                conds: &conds,
                at: cx.at,
            },
        )?;
        if scores.len() != b * n {
            return Err(steerdiff_guidance::Error::Reward {
                name: self.inner.name().into(),
                message: format!("returned {} scores for {} items", scores.len(), b * n),
            });
        }
        Ok(scores.chunks(n).map(log_mean_exp).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Quadratic;
    use candle_core::Device;
    use steerdiff_guidance::StepPoint;

    fn at(alpha: f64, sigma: f64) -> StepPoint {
        StepPoint {
            timestep: 0.0,
            alpha,
            sigma,
        }
    }

    #[test]
    fn clean_samples_score_exactly_and_noisy_ones_match_the_gaussian_expectation() {
        // r = −(x − m)²/2 in 1-D: E exp(r(x̂ + sξ)) = exp(−(x̂ − m)²/(2(1 + s²))) / √(1 + s²).
        let r = ManySample::new(Arc::new(Quadratic::new(vec![0.5])), 20_000, 1.0);
        let x = Tensor::new(&[[1.5f32], [-1.0]], &Device::Cpu).unwrap();
        let conds = [Condition::Null; 2];
        let clean = r
            .score(
                &x,
                &RewardContext {
                    conds: &conds,
                    at: StepPoint::CLEAN,
                },
            )
            .unwrap();
        assert_eq!(clean, vec![-0.5, -1.125]);
        let p = at(0.6, 0.8);
        let s = r.spread(0.6, 0.8);
        assert!((s - 0.8).abs() < 1e-12, "{s}");
        let got = r
            .score(
                &x,
                &RewardContext {
                    conds: &conds,
                    at: p,
                },
            )
            .unwrap();
        for (g, x) in got.iter().zip([1.5f64, -1.0]) {
            let v = 1.0 + s * s;
            let want = -(x - 0.5) * (x - 0.5) / (2.0 * v) - 0.5 * v.ln();
            assert!((g - want).abs() < 0.02, "{g} vs {want}");
        }
        // Scores depend on the row alone: the same row in another batch scores the same.
        let one = r
            .score(
                &x.narrow(0, 1, 1).unwrap(),
                &RewardContext {
                    conds: &conds[..1],
                    at: p,
                },
            )
            .unwrap();
        assert_eq!(one[0], got[1]);
    }

    #[test]
    fn log_mean_exp_is_stable_and_drops_nan() {
        assert!((log_mean_exp(&[1000.0, 1000.0]) - 1000.0).abs() < 1e-9);
        assert!((log_mean_exp(&[0.0, f64::NAN]) - 0.0).abs() < 1e-12);
        assert!(log_mean_exp(&[f64::NAN]).is_nan());
        assert_eq!(log_mean_exp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }
}
