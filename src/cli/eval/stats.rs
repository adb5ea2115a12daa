//! Means over independent groups, their standard errors, and paired differences.
//!
//! The unit of independence is the output **group** (one seed), never the particle: the
//! particles of an FK or best-of-N group share their start and their resampling, so they are
//! not independent draws. Each group contributes the mean of its outputs' values (a 0/1
//! "in the class" for a classifier judge, a score for a reward), and for `G` group values
//! `v_g` with mean `v̄`:
//!
//! - standard error `SE(v̄) = √( Σ_g (v_g − v̄)² / (G (G − 1)) )`, the sample standard
//!   deviation over `√G`. With one 0/1 output per group it is the binomial
//!   `√(p̂ (1 − p̂) / (G − 1))`.
//! - Two rows run on the same seeds have the same groups, so their difference is paired:
//!   `d_g = a_g − b_g`, `SE(d̄)` as above over the `d_g`. Pairing removes the variance the
//!   shared starting noise puts into both rows (the independent-samples formula
//!   `√(SE_a² + SE_b²)` would overstate it).

use serde::Serialize;

/// A mean over groups and its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The mean of the group values.
    pub mean: f64,
    /// Its standard error (NaN with fewer than two groups).
    pub se: f64,
    /// Groups averaged.
    pub groups: usize,
}

/// The [`Estimate`] of the finite values among `values` (NaN mean when there are none).
pub fn estimate(values: impl IntoIterator<Item = f64>) -> Estimate {
    let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    let g = v.len();
    if g == 0 {
        return Estimate {
            mean: f64::NAN,
            se: f64::NAN,
            groups: 0,
        };
    }
    let mean = v.iter().sum::<f64>() / g as f64;
    let se = if g < 2 {
        f64::NAN
    } else {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (g * (g - 1)) as f64).sqrt()
    };
    Estimate {
        mean,
        se,
        groups: g,
    }
}

/// Per-group means of per-output `values`, outputs belonging to `groups[i]`; a group without a
/// finite value is `None`.
pub fn group_means(values: &[f64], groups: &[usize]) -> Vec<Option<f64>> {
    let count = groups.iter().max().map_or(0, |&g| g + 1);
    let mut sum = vec![0.0; count];
    let mut n = vec![0usize; count];
    for (&v, &g) in values.iter().zip(groups) {
        if v.is_finite() {
            sum[g] += v;
            n[g] += 1;
        }
    }
    sum.into_iter()
        .zip(n)
        .map(|(s, n)| (n > 0).then(|| s / n as f64))
        .collect()
}

/// The paired difference `a − b` over the groups both have.
pub fn paired_difference(a: &[Option<f64>], b: &[Option<f64>]) -> Estimate {
    estimate(a.iter().zip(b).filter_map(|(x, y)| Some((*x)? - (*y)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_binary_output_per_group_gives_the_binomial_error() {
        // 30 of 100 groups in the class: p̂ = 0.3, SE = √(0.3·0.7/99).
        let v: Vec<f64> = (0..100).map(|i| if i < 30 { 1.0 } else { 0.0 }).collect();
        let e = estimate(v);
        assert_eq!(e.groups, 100);
        assert!((e.mean - 0.3).abs() < 1e-12);
        assert!((e.se - (0.3f64 * 0.7 / 99.0).sqrt()).abs() < 1e-12, "{e:?}");
    }

    #[test]
    fn particles_of_a_group_count_once() {
        // Two groups of four particles: the values within a group are averaged first, so the
        // estimate rests on two groups, not eight outputs.
        let values = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let groups = [0, 0, 0, 0, 1, 1, 1, 1];
        let means = group_means(&values, &groups);
        assert_eq!(means, vec![Some(1.0), Some(0.25)]);
        let e = estimate(means.into_iter().flatten());
        assert_eq!(e.groups, 2);
        assert!((e.mean - 0.625).abs() < 1e-12);
        assert!((e.se - 0.375).abs() < 1e-12, "{e:?}");
    }

    #[test]
    fn a_paired_difference_cancels_what_the_groups_share() {
        // b = a + 0.1 on every group, whatever a varies by: the difference is exact.
        let a: Vec<Option<f64>> = (0..50).map(|i| Some((i % 7) as f64)).collect();
        let b: Vec<Option<f64>> = a.iter().map(|x| x.map(|v| v + 0.1)).collect();
        let d = paired_difference(&b, &a);
        assert!((d.mean - 0.1).abs() < 1e-12);
        assert!(d.se < 1e-12, "{d:?}");
        // Groups missing from either side are left out.
        let mut c = b.clone();
        c[0] = None;
        assert_eq!(paired_difference(&c, &a).groups, 49);
    }

    #[test]
    fn non_finite_values_and_empty_input_are_not_averaged_in() {
        assert_eq!(estimate([1.0, f64::NAN, 3.0]).mean, 2.0);
        assert!(estimate([]).mean.is_nan());
        assert!(estimate([2.0]).se.is_nan());
    }
}
