//! Particle weights and resampling schemes.
//!
//! Weights live in log space and are normalised with log-sum-exp, so `λ·r` of any size is safe
//! (the FK reference code exponentiates raw values and clamps at 1e10 — ALGORITHMS §2.9).
//! Each scheme maps normalised weights `w` (summing to 1) and uniforms to `n` ancestor indices;
//! all are unbiased (`E[#copies of i] = n·w_i`). Douc & Cappé (2005) compare them: systematic
//! and residual have lower variance than multinomial.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The resampling scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Resampling {
    /// `n` independent categorical draws (what FK's reference code does).
    Multinomial,
    /// One uniform `u`, points `(u + j)/n`.
    #[default]
    Systematic,
    /// One uniform per stratum, points `(u_j + j)/n`.
    Stratified,
    /// `⌊n·w_i⌋` deterministic copies, the remainder multinomial.
    Residual,
}

impl Resampling {
    /// How many uniforms [`Resampling::ancestors`] consumes for `n` draws.
    pub fn uniforms_needed(self, n: usize) -> usize {
        match self {
            Resampling::Systematic => 1,
            _ => n,
        }
    }

    /// Draws `n` ancestor indices from normalised weights `w` using the uniforms `u` in `[0,1)`
    /// (at least [`Resampling::uniforms_needed`] of them). Indices come out sorted.
    pub fn ancestors(self, w: &[f64], n: usize, u: &[f64]) -> Vec<usize> {
        match self {
            Resampling::Multinomial => {
                let mut pts: Vec<f64> = u[..n].to_vec();
                pts.sort_by(f64::total_cmp);
                invert_cdf(w, &pts)
            }
            Resampling::Systematic => {
                let pts: Vec<f64> = (0..n).map(|j| (u[0] + j as f64) / n as f64).collect();
                invert_cdf(w, &pts)
            }
            Resampling::Stratified => {
                let pts: Vec<f64> = (0..n).map(|j| (u[j] + j as f64) / n as f64).collect();
                invert_cdf(w, &pts)
            }
            Resampling::Residual => {
                let mut out = Vec::with_capacity(n);
                let mut rest: Vec<f64> = Vec::with_capacity(w.len());
                for (i, &wi) in w.iter().enumerate() {
                    let copies = (n as f64 * wi).floor() as usize;
                    out.extend(std::iter::repeat_n(i, copies));
                    rest.push(n as f64 * wi - copies as f64);
                }
                let left = n - out.len();
                if left > 0 {
                    let total: f64 = rest.iter().sum();
                    let rest: Vec<f64> = rest.iter().map(|r| r / total).collect();
                    let mut pts: Vec<f64> = u[..left].to_vec();
                    pts.sort_by(f64::total_cmp);
                    out.extend(invert_cdf(&rest, &pts));
                }
                out.sort_unstable();
                out
            }
        }
    }
}

/// Maps sorted points in `[0,1)` through the inverse CDF of `w`.
fn invert_cdf(w: &[f64], sorted_points: &[f64]) -> Vec<usize> {
    let mut out = Vec::with_capacity(sorted_points.len());
    let mut i = 0;
    let mut cum = w[0];
    for &p in sorted_points {
        while p >= cum && i + 1 < w.len() {
            i += 1;
            cum += w[i];
        }
        out.push(i);
    }
    out
}

/// `ln Σ exp(v_i)` computed stably; `-∞` for an empty or all `-∞` input.
pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Normalised weights from log-weights. Entries that are NaN or `-∞` get weight zero; an error
/// if no entry is finite (every particle was invalid).
pub fn normalize(log_w: &[f64]) -> Result<Vec<f64>> {
    let clean: Vec<f64> = log_w
        .iter()
        .map(|&l| if l.is_nan() { f64::NEG_INFINITY } else { l })
        .collect();
    if clean.contains(&f64::INFINITY) {
        return Err(Error::InvalidArgument(
            "a particle has log-weight +inf (a reward returned +inf?)".into(),
        ));
    }
    let lse = log_sum_exp(&clean);
    if lse == f64::NEG_INFINITY {
        return Err(Error::InvalidArgument(
            "every particle has zero weight (all rewards NaN or -inf)".into(),
        ));
    }
    Ok(clean.iter().map(|l| (l - lse).exp()).collect())
}

/// The two-sample Kolmogorov–Smirnov statistic `sup |F_a − F_b|` of two samples (tests use it
/// to check that a strategy leaves a distribution unchanged).
pub fn ks_distance(a: &[f64], b: &[f64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            i += 1;
        } else {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// Effective sample size `1 / Σ w_i²` of normalised weights (Kong 1992): `n` for equal weights,
/// 1 when one particle carries everything.
pub fn ess(w: &[f64]) -> f64 {
    1.0 / w.iter().map(|x| x * x).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Resampling; 4] = [
        Resampling::Multinomial,
        Resampling::Systematic,
        Resampling::Stratified,
        Resampling::Residual,
    ];

    #[test]
    fn systematic_with_equal_weights_is_the_identity() {
        let w = vec![0.125; 8];
        for u in [0.0, 0.3, 0.999] {
            assert_eq!(
                Resampling::Systematic.ancestors(&w, 8, &[u]),
                (0..8).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            Resampling::Residual.ancestors(&w, 8, &[0.5; 8]),
            (0..8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_scheme_is_unbiased() {
        let w = [0.05, 0.5, 0.2, 0.25];
        let n = 4;
        let trials = 20_000;
        for scheme in ALL {
            let mut counts = [0usize; 4];
            for t in 0..trials {
                let key = crate::rng::StreamKey {
                    seed: t as u64,
                    lineage: 0,
                    step: 0,
                    domain: crate::rng::Domain::Select,
                };
                let u = key.uniforms(n);
                for a in scheme.ancestors(&w, n, &u) {
                    counts[a] += 1;
                }
            }
            for i in 0..4 {
                let got = counts[i] as f64 / (trials * n) as f64;
                assert!(
                    (got - w[i]).abs() < 0.01,
                    "{scheme:?} index {i}: {got} vs {}",
                    w[i]
                );
            }
        }
    }

    #[test]
    fn log_weights_normalise_stably() {
        let w = normalize(&[1000.0, 1000.0, f64::NEG_INFINITY, f64::NAN]).unwrap();
        for (got, want) in w.iter().zip([0.5, 0.5, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{w:?}");
        }
        assert!((ess(&w) - 2.0).abs() < 1e-12);
        assert!(normalize(&[f64::NAN, f64::NEG_INFINITY]).is_err());
        assert!(normalize(&[0.0, f64::INFINITY]).is_err());
    }

    #[test]
    fn multinomial_with_equal_weights_keeps_the_distribution() {
        let key = |step| crate::rng::StreamKey {
            seed: 42,
            lineage: 0,
            step,
            domain: crate::rng::Domain::Select,
        };
        let n = 4000;
        let xs: Vec<f64> = key(0).normals(n).into_iter().map(f64::from).collect();
        let w = vec![1.0 / n as f64; n];
        let idx = Resampling::Multinomial.ancestors(&w, n, &key(1).uniforms(n));
        let ys: Vec<f64> = idx.iter().map(|&i| xs[i]).collect();
        // Resampled against a fresh draw from the same law: the 1% critical value of the
        // two-sample KS statistic is 1.63·√(2/n) ≈ 0.036.
        let fresh: Vec<f64> = key(2).normals(n).into_iter().map(f64::from).collect();
        let d = ks_distance(&ys, &fresh);
        assert!(d < 0.036, "KS distance {d}");
        // …and it is a genuine resample (duplicates), not the identity.
        let mut uniq = idx.clone();
        uniq.dedup();
        assert!(uniq.len() < n * 7 / 10, "{} distinct of {n}", uniq.len());
    }
}
