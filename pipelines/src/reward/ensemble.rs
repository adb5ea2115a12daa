//! Ensembles of rewards: one reward made of several.

use std::sync::Arc;

use candle_core::Tensor;
use steerdiff_guidance::{Reward, RewardContext};

/// How member scores are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsembleMode {
    /// `Σ w_i · r_i`: batch-independent.
    WeightedSum,
    /// `Σ w_i · z_i` with `z_i` the member's score standardised over the batch (so members on
    /// different scales count equally); depends on the batch it is scored in.
    WeightedZ,
    /// The weighted mean of each member's rank in the batch, scaled to `[0, 1]`
    /// (robust to outliers and scale; batch-dependent).
    RankMean,
}

/// A weighted combination of rewards. Items any member scores as NaN stay NaN.
pub struct Ensemble {
    /// Members and their weights.
    pub members: Vec<(Arc<dyn Reward>, f64)>,
    /// Combination rule.
    pub mode: EnsembleMode,
    name: String,
}

impl Ensemble {
    /// An ensemble of `members` combined by `mode`.
    pub fn new(members: Vec<(Arc<dyn Reward>, f64)>, mode: EnsembleMode) -> Self {
        let name = format!(
            "ensemble[{:?}]({})",
            mode,
            members
                .iter()
                .map(|(r, w)| format!("{w}×{}", r.name()))
                .collect::<Vec<_>>()
                .join(" + ")
        );
        Ensemble {
            members,
            mode,
            name,
        }
    }
}

/// Standardises finite entries to mean 0, std 1 (std 0 → all zeros).
fn zscores(v: &[f64]) -> Vec<f64> {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let n = finite.len().max(1) as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let std = (finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    v.iter()
        .map(|x| if std > 0.0 { (x - mean) / std } else { x * 0.0 })
        .collect()
}

/// Ranks in `[0, 1]` (ties share their mean rank; NaN stays NaN).
fn ranks(v: &[f64]) -> Vec<f64> {
    let n = v.len();
    let mut idx: Vec<usize> = (0..n).filter(|&i| !v[i].is_nan()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![f64::NAN; n];
    let m = idx.len();
    let mut i = 0;
    while i < m {
        let mut j = i;
        while j + 1 < m && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 / (m.max(2) - 1) as f64;
        for k in i..=j {
            out[idx[k]] = r;
        }
        i = j + 1;
    }
    out
}

impl Reward for Ensemble {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, x0: &Tensor, cx: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let n = x0.dim(0)?;
        let mut total = vec![0.0; n];
        let weight_sum: f64 = self.members.iter().map(|(_, w)| w).sum();
        for (r, w) in &self.members {
            let s = r.score(x0, cx)?;
            let s = match self.mode {
                EnsembleMode::WeightedSum => s,
                EnsembleMode::WeightedZ => zscores(&s),
                EnsembleMode::RankMean => ranks(&s),
            };
            for (t, v) in total.iter_mut().zip(s) {
                *t += w * v;
            }
        }
        if self.mode == EnsembleMode::RankMean && weight_sum > 0.0 {
            total.iter_mut().for_each(|t| *t /= weight_sum);
        }
        Ok(total)
    }

    fn take_cached(&self) -> u64 {
        self.members.iter().map(|(r, _)| r.take_cached()).sum()
    }

    fn take_decodes(&self) -> u64 {
        self.members.iter().map(|(r, _)| r.take_decodes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::{Linear, Quadratic};
    use candle_core::Device;
    use steerdiff_guidance::{Condition, StepPoint};

    #[test]
    fn members_combine_by_each_rule() {
        let x = Tensor::new(&[[0.0f32], [1.0], [3.0]], &Device::Cpu).unwrap();
        let conds = [Condition::Null; 3];
        let cx = RewardContext {
            conds: &conds,
            at: StepPoint {
                timestep: 0.0,
                alpha: 1.0,
                sigma: 0.0,
            },
        };
        let lin: Arc<dyn Reward> = Arc::new(Linear::new(vec![2.0]));
        let quad: Arc<dyn Reward> = Arc::new(Quadratic::new(vec![1.0]));
        let sum = Ensemble::new(
            vec![(lin.clone(), 1.0), (quad.clone(), 0.5)],
            EnsembleMode::WeightedSum,
        );
        assert_eq!(sum.score(&x, &cx).unwrap(), vec![-0.25, 2.0, 5.0]);
        let rank = Ensemble::new(vec![(lin, 1.0), (quad, 1.0)], EnsembleMode::RankMean);
        // linear ranks 0, .5, 1; quadratic (−.5, 0, −2) ranks .5, 1, 0
        assert_eq!(rank.score(&x, &cx).unwrap(), vec![0.25, 0.75, 0.5]);
        let z = zscores(&[1.0, 2.0, 3.0]);
        assert!((z[0] + 1.2247).abs() < 1e-3 && z[1].abs() < 1e-12);
    }
}
