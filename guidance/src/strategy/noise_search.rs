//! Search over initial noise (Ma et al. 2025, "Inference-Time Scaling for Diffusion Models
//! beyond Scaling Denoising Steps", arXiv 2501.09732; ALGORITHMS §8.5).
//!
//! Whole trajectories are the unit: each round samples a pool of initial noises per group,
//! runs every one to the end with the ordinary sampler (and any per-step guidance), scores the
//! final samples, and keeps the best sample seen so far, so the best-so-far reward never
//! decreases.
//!
//! * **Random search**: round `r` draws a fresh pool of `2^r` noises (tt-scale-flux's schedule;
//!   rounds 0..R cost `2^R − 1` trajectories).
//! * **Zero-order search**: a pivot noise `n` and `N` neighbours on the same-norm sphere at
//!   cosine `c` from it, `n' = ‖n‖·(c·u + √(1 − c²)·w)` with `u = n/‖n‖` and `w` a random unit
//!   vector orthogonal to `u`; the best neighbour becomes the pivot if it beats the pivot,
//!   otherwise the round is rejected and a fresh pivot is drawn.
//!
//! Noise proposals come from each group's `Search` streams keyed by (round, candidate), so the
//! search is reproducible and independent of batch composition.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::engine::{Engine, Outcome};
use crate::ledger::{Ledger, Timing};
use crate::path::StepPoint;
use crate::population::{GroupSpec, Population};
use crate::reward::Reward;
use crate::rng::{round_seed, Domain, StreamKey};
use crate::trace::{TraceLine, TraceSink};
use crate::{Error, Result};

/// How proposals are made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SearchKind {
    /// Fresh noises, `2^r` in round `r`.
    Random,
    /// Neighbours of a pivot on its sphere.
    ZeroOrder {
        /// Neighbours per round.
        neighbours: usize,
        /// Cosine similarity `c` of a neighbour to the pivot, in `(0, 1)`.
        threshold: f64,
    },
}

/// Noise search over whole trajectories.
#[derive(Clone)]
pub struct NoiseSearch {
    /// The verifier scoring final samples.
    pub reward: Arc<dyn Reward>,
    /// Number of rounds (≥ 1).
    pub rounds: usize,
    /// Proposal rule.
    pub kind: SearchKind,
}

/// A neighbour of `pivot` at cosine `c` on its sphere, using the Gaussian direction `g`. Where
/// the sphere has no such point along `g` — one dimension, a zero pivot, or `g` parallel to
/// the pivot — the pivot itself is returned (the alternative, 0/0, made NaN noises).
pub fn sphere_neighbour(pivot: &[f32], g: &[f32], c: f64) -> Vec<f32> {
    let norm = pivot
        .iter()
        .map(|&v| (v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let u: Vec<f64> = pivot.iter().map(|&v| v as f64 / norm).collect();
    let gu: f64 = g.iter().zip(&u).map(|(&a, b)| a as f64 * b).sum();
    let w: Vec<f64> = g.iter().zip(&u).map(|(&a, b)| a as f64 - gu * b).collect();
    let wn = w.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(norm > 0.0 && wn > 1e-12 * norm) {
        return pivot.to_vec();
    }
    let s = (1.0 - c * c).sqrt();
    u.iter()
        .zip(&w)
        .map(|(a, b)| (norm * (c * a + s * b / wn)) as f32)
        .collect()
}

impl NoiseSearch {
    fn validate(&self) -> Result<()> {
        if self.rounds == 0 {
            return Err(Error::InvalidArgument(
                "noise search needs at least one round".into(),
            ));
        }
        if let SearchKind::ZeroOrder {
            neighbours,
            threshold,
        } = self.kind
        {
            if neighbours == 0 {
                return Err(Error::InvalidArgument(
                    "zero-order search needs at least one neighbour".into(),
                ));
            }
            if !(threshold > 0.0 && threshold < 1.0) {
                return Err(Error::InvalidArgument(format!(
                    "zero-order search: the cosine threshold must be in (0, 1), got {threshold}"
                )));
            }
        }
        Ok(())
    }

    /// Runs the search for `groups` (their `particles` field is ignored: one output per group)
    /// with `engine`, whose strategies apply inside every trajectory.
    pub fn run(
        &self,
        engine: &Engine,
        groups: &[GroupSpec],
        init_sigma: f64,
        mut trace: Option<&mut dyn TraceSink>,
    ) -> Result<Outcome> {
        self.validate()?;
        let started = std::time::Instant::now();
        let shape = engine.models[0].sample_shape();
        let numel: usize = shape.iter().product();
        let device = engine.models[0].device().clone();
        let mut ledger = Ledger::default();
        let mut timing = Timing::default();
        // Per group: best (reward, final sample row, noise) so far, and the zero-order pivot.
        let mut best: Vec<Option<(f64, Tensor)>> = vec![None; groups.len()];
        let mut pivot: Vec<Option<(f64, Vec<f32>)>> = vec![None; groups.len()];
        for round in 0..self.rounds {
            // Proposals for every group, in group order.
            let mut noises: Vec<Vec<f32>> = Vec::new();
            let mut counts = Vec::with_capacity(groups.len());
            for (g, spec) in groups.iter().enumerate() {
                let key = |j: u64| StreamKey {
                    seed: spec.seed,
                    lineage: j,
                    step: round as u64,
                    domain: Domain::Search,
                };
                let proposals: Vec<Vec<f32>> = match (self.kind, &pivot[g]) {
                    (SearchKind::Random, _) => {
                        (0..1u64 << round).map(|j| key(j).normals(numel)).collect()
                    }
                    (SearchKind::ZeroOrder { .. }, None) => vec![key(0).normals(numel)],
                    (
                        SearchKind::ZeroOrder {
                            neighbours,
                            threshold,
                        },
                        Some((_, n)),
                    ) => (0..neighbours as u64)
                        .map(|j| sphere_neighbour(n, &key(j + 1).normals(numel), threshold))
                        .collect(),
                };
                counts.push(proposals.len());
                noises.extend(proposals);
            }
            let round_groups: Vec<GroupSpec> = groups
                .iter()
                .zip(&counts)
                .map(|(spec, &k)| GroupSpec {
                    seed: round_seed(spec.seed, round),
                    particles: k,
                    ..*spec
                })
                .collect();
            let mut dims = vec![noises.len()];
            dims.extend_from_slice(&shape);
            let flat: Vec<f32> = noises.iter().flatten().copied().collect();
            let x = Tensor::from_vec(flat, dims, &Device::Cpu)?
                .to_device(&device)?
                .affine(init_sigma, 0.0)?;
            let out = engine.run(Population::from_states(&round_groups, x)?, None)?;
            ledger.absorb(&out.ledger);
            timing.model_s += out.timing.model_s;
            timing.reward_s += out.timing.reward_s;
            let pop = out.population;
            let mut line = TraceLine::new();
            let clean = StepPoint::CLEAN;
            let rewards = {
                let mut cx = engine.context(&mut ledger, &mut timing, &mut line);
                cx.score(self.reward.as_ref(), &pop.x, &pop.conds(), clean)?
            };
            let mut start = 0;
            let mut best_rewards = Vec::with_capacity(groups.len());
            for g in 0..groups.len() {
                let k = counts[g];
                let (j, r) = (start..start + k)
                    .map(|i| (i, rewards[i]))
                    .filter(|(_, r)| r.is_finite())
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((start, f64::NEG_INFINITY));
                if best[g].as_ref().is_none_or(|(b, _)| r > *b) {
                    best[g] = Some((r, pop.x.get(j)?));
                }
                if let SearchKind::ZeroOrder { .. } = self.kind {
                    pivot[g] = match &pivot[g] {
                        // First round: the drawn base becomes the pivot.
                        None => Some((r, noises[j].clone())),
                        // The best neighbour replaces the pivot only if it is better; else
                        // the round is rejected and a fresh base is drawn next round.
                        Some((pr, _)) if r > *pr => Some((r, noises[j].clone())),
                        Some(_) => None,
                    };
                }
                best_rewards.push(best[g].as_ref().map(|b| b.0).unwrap_or(f64::NEG_INFINITY));
                start += k;
            }
            if let Some(sink) = trace.as_deref_mut() {
                line.insert("round".into(), round.into());
                line.insert(
                    "search".into(),
                    json!({ "candidates": counts, "rewards": rewards, "best_so_far": best_rewards }),
                );
                sink.record(serde_json::Value::Object(line))?;
            }
        }
        let mut rows = Vec::with_capacity(best.len());
        let mut scores = Vec::with_capacity(best.len());
        for b in best {
            let (r, x) = b.ok_or_else(|| Error::Reward {
                name: self.reward.name().into(),
                message: "no candidate of a group could be scored".into(),
            })?;
            rows.push(x);
            scores.push(r);
        }
        let final_groups: Vec<GroupSpec> = groups
            .iter()
            .map(|g| GroupSpec { particles: 1, ..*g })
            .collect();
        let mut population = Population::from_states(&final_groups, Tensor::stack(&rows, 0)?)?;
        for (p, r) in population.particles.iter_mut().zip(scores) {
            p.reward = Some(r);
        }
        timing.total_s = started.elapsed().as_secs_f64();
        Ok(Outcome {
            population,
            ledger,
            timing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sphere_without_neighbours_gives_the_pivot_not_nan() {
        assert_eq!(sphere_neighbour(&[1.5], &[0.3], 0.9), vec![1.5]);
        assert_eq!(
            sphere_neighbour(&[0.0, 0.0], &[0.3, 1.0], 0.9),
            vec![0.0, 0.0]
        );
        assert_eq!(
            sphere_neighbour(&[1.0, 2.0], &[2.0, 4.0], 0.9),
            vec![1.0, 2.0]
        );
    }

    #[test]
    fn neighbours_keep_the_norm_and_the_cosine_exactly() {
        let key = |l| StreamKey {
            seed: 1,
            lineage: l,
            step: 0,
            domain: Domain::Search,
        };
        let n = key(0).normals(64);
        for j in 1..5 {
            let m = sphere_neighbour(&n, &key(j).normals(64), 0.95);
            let dot: f64 = n.iter().zip(&m).map(|(&a, &b)| a as f64 * b as f64).sum();
            let nn: f64 = n.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
            let mm: f64 = m.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
            assert!((nn - mm).abs() < 1e-4 * nn, "norm {nn} vs {mm}");
            assert!(
                (dot / (nn * mm) - 0.95).abs() < 1e-5,
                "cos {}",
                dot / (nn * mm)
            );
        }
    }
}
