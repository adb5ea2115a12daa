//! DSearch — dynamic tree search (Li et al. 2025, "Dynamic Search for Inference-Time Alignment
//! in Diffusion Models", arXiv 2503.02039; ALGORITHMS §5).
//!
//! Each group holds beams. Every step but the last, each beam branches into `C` children by
//! the model's own stochastic transition — `C = M` normally, and a wide expansion
//! `C = w·M·(beams₀ / beams)` with probability `p(i)` (the search schedule), which keeps the
//! compute per step roughly constant as beams are dropped. Each child is valued by the reward
//! of its look-ahead `x̂0`; each beam keeps its best child. Then the group is pruned to the
//! beam-count schedule `n(i)` (decaying from the initial beams to `b`), and with DSearch-R the
//! worst `⌊ρ·b⌋` beams are replaced by copies drawn from `softmax(values)` of the others. The
//! look-ahead prediction of every survivor is reused at the next step.
//!
//! The number of initial beams is the group's particle count (`b·o` with oversampling `o`).

use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::guidance::{Context, Guidance, Needs, Step};
use crate::population::Population;
use crate::resample::{normalize, Resampling};
use crate::reward::Reward;
use crate::rng::{Domain, StreamKey};
use crate::{Error, Result};

/// Probability `p(i)` of a wide expansion at step `i` of `T` (the reference's schedules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchSchedule {
    /// Always wide.
    All,
    /// 0.7 at every step.
    Uniform,
    /// `(i + 10)/(T − 1)`, capped at 1.
    Linear,
    /// `1 − exp(−3i/(T − 1))`: little search while x̂0 is still blurry.
    Exponential,
}

impl SearchSchedule {
    /// `p(i)` for step `i` of `count`.
    pub fn probability(self, i: usize, count: usize) -> f64 {
        let t = (count.max(2) - 1) as f64;
        match self {
            SearchSchedule::All => 1.0,
            SearchSchedule::Uniform => 0.7,
            SearchSchedule::Linear => ((i as f64 + 10.0) / t).min(1.0),
            SearchSchedule::Exponential => 1.0 - (-3.0 * i as f64 / t).exp(),
        }
    }
}

/// DSearch / DSearch-R.
#[derive(Clone)]
pub struct DSearch {
    /// The reward valuing each child's look-ahead `x̂0`.
    pub reward: Arc<dyn Reward>,
    /// Target beams per group at the end (`b`).
    pub beams: usize,
    /// Children per beam in a normal step (`M`).
    pub children: usize,
    /// Width multiplier of a wide expansion (`w`).
    pub width: usize,
    /// When to expand wide.
    pub search: SearchSchedule,
    /// DSearch-R replace rate ρ (0 = plain DSearch).
    pub replace: f64,
}

/// Scalar each particle keeps: the group's initial beam count.
const INITIAL: &str = "dsearch.initial_beams";

impl DSearch {
    /// Beams allowed after step `i`: exponential decay from `initial` to `b`.
    fn beam_budget(&self, initial: usize, i: usize, count: usize) -> usize {
        let t = (count.max(2) - 1) as f64;
        let b = self.beams as f64;
        (b + (initial as f64 - b) * (-5.0 * (i + 1) as f64 / t).exp()).round() as usize
    }

    /// The coin for a wide expansion at this step. One coin per step for the whole batch (the
    /// engine branches every particle alike), keyed by the step alone so that a group's result
    /// never depends on which groups share its batch.
    fn wide(&self, step: &Step) -> bool {
        let u = StreamKey {
            seed: 0x0D5E_A2C4,
            lineage: u64::MAX,
            step: step.index as u64,
            domain: Domain::Select,
        }
        .uniforms(1)[0];
        u < self.search.probability(step.index, step.count)
    }
}

impl Guidance for DSearch {
    fn name(&self) -> String {
        format!(
            "dsearch(b={}, M={}, w={}, reward={})",
            self.beams,
            self.children,
            self.width,
            self.reward.name()
        )
    }

    fn needs(&self) -> Needs {
        Needs {
            stochastic_solver: true,
            ..Needs::default()
        }
    }

    fn validate(&self, _steps: usize) -> Result<()> {
        if self.beams == 0 || self.children == 0 || self.width == 0 {
            return Err(Error::InvalidArgument(
                "DSearch: beams, children and width must all be ≥ 1".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.replace) {
            return Err(Error::InvalidArgument(format!(
                "DSearch: the replace rate must be in [0, 1), got {}",
                self.replace
            )));
        }
        Ok(())
    }

    fn expand(&self, step: &Step, pop: &Population) -> usize {
        if step.is_last() {
            return 1;
        }
        if !self.wide(step) {
            return self.children;
        }
        // Keep compute roughly constant as beams are dropped (w_ad = beams₀ / beams).
        let groups = pop.groups();
        let now = groups.first().map(|r| r.len()).unwrap_or(1).max(1);
        let initial = pop
            .particles
            .first()
            .and_then(|p| p.state.get(INITIAL))
            .map(|&v| v as usize)
            .unwrap_or(now);
        self.width * self.children * initial.div_ceil(now)
    }

    fn select(&self, step: &Step, pop: &mut Population, cx: &mut Context) -> Result<()> {
        if step.is_last() {
            return Ok(());
        }
        let next = cx.predict_guided(pop, step.index + 1)?;
        let values = cx.score(
            self.reward.as_ref(),
            next.x0(),
            &pop.conds(),
            cx.step(step.index + 1)?.from,
        )?;
        for (p, &v) in pop.particles.iter_mut().zip(&values) {
            p.reward = Some(v);
        }
        let mut keep = Vec::new();
        let mut beams_after = Vec::new();
        let mut initial_beams = Vec::new();
        for range in pop.groups() {
            // Children of one beam are contiguous and share their `ancestor`.
            let mut winners: Vec<(usize, f64)> = Vec::new();
            let mut i = range.start;
            while i < range.end {
                let a = pop.particles[i].ancestor;
                let mut j = i;
                let mut best = (i, f64::NEG_INFINITY);
                while j < range.end && pop.particles[j].ancestor == a {
                    if values[j].is_finite() && values[j] > best.1 {
                        best = (j, values[j]);
                    }
                    j += 1;
                }
                winners.push(best);
                i = j;
            }
            if winners.iter().all(|w| !w.1.is_finite()) {
                return Err(Error::Reward {
                    name: self.reward.name().into(),
                    message: "every child of a group scored NaN or ±inf".into(),
                });
            }
            let initial = pop.particles[range.start]
                .state
                .get(INITIAL)
                .map(|&v| v as usize)
                .unwrap_or(winners.len());
            initial_beams.push(initial as f64);
            // Prune to the beam budget, best first.
            winners.sort_by(|a, b| b.1.total_cmp(&a.1));
            winners.truncate(
                self.beam_budget(initial, step.index, step.count)
                    .max(self.beams)
                    .min(winners.len()),
            );
            // DSearch-R: replace the worst ⌊ρ·b⌋ by draws from softmax(values) of the rest.
            let r = (self.replace * self.beams as f64).floor() as usize;
            if r > 0 && winners.len() > r {
                let survivors = winners.len() - r;
                let w = normalize(&winners[..survivors].iter().map(|w| w.1).collect::<Vec<_>>())?;
                let u = StreamKey {
                    seed: pop.particles[range.start].seed,
                    lineage: 0,
                    step: step.index as u64,
                    domain: Domain::Select,
                }
                .uniforms(r);
                let picks = Resampling::Multinomial.ancestors(&w, r, &u);
                for (slot, p) in (survivors..winners.len()).zip(picks) {
                    winners[slot] = winners[p];
                }
            }
            winners.sort_by_key(|w| w.0);
            beams_after.push(winners.len());
            keep.extend(winners.into_iter().map(|w| w.0));
        }
        cx.trace(
            "dsearch",
            json!({ "children": pop.len(), "beams": beams_after, "values": values }),
        );
        *pop = pop.gather(&keep, step.index)?;
        // Every particle remembers its group's initial beam count.
        for (range, n0) in pop.groups().into_iter().zip(initial_beams) {
            for p in &mut pop.particles[range] {
                p.state.insert(INITIAL, n0);
            }
        }
        let idx = Tensor::from_vec(
            keep.iter().map(|&k| k as u32).collect::<Vec<_>>(),
            keep.len(),
            pop.x.device(),
        )?;
        pop.pending = Some(next.gather(&idx)?);
        Ok(())
    }
}
