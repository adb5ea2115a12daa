//! The one guidance trait: six hooks into a sampling step, each doing nothing by default.
//!
//! | hook | does | used by |
//! |---|---|---|
//! | [`requests`](Guidance::requests) | extra model rows each particle needs (another condition, another model) | CFG, autoguidance, GFCG |
//! | [`combine`](Guidance::combine) | adds an affine guidance term to the per-particle prediction | CFG, autoguidance, GFCG, dynamic CFG |
//! | [`steer`](Guidance::steer) | moves `x_t` using `x̂0`, the model output frozen | FlowChef |
//! | [`expand`](Guidance::expand) | branches each particle into children before the transition | SVDD, DSearch, Free²Guide |
//! | [`select`](Guidance::select) | reweights, resamples, prunes, picks after the transition | FK, CoDe, best-of-N |
//! | [`revisits`](Guidance::revisits) | re-noises the state back and runs the whole step again | time travel (RePaint) |
//!
//! Strategies stack: the engine calls every strategy's hook in order. Combinations are additive
//! in `(x̂0, ε̂)` space starting from the conditional prediction — each term is a difference of
//! two predictions at the same `x_t`, so the pair stays consistent (`x = α·x̂0 + σ·ε̂`).

use candle_core::Tensor;
use serde_json::Value;

use crate::condition::Condition;
use crate::denoiser::Denoiser;
use crate::ledger::{Ledger, Timing};
use crate::path::StepPoint;
use crate::population::Population;
use crate::prediction::{Parameterization, Prediction};
use crate::reward::{Reward, RewardContext};
use crate::rows;
pub use crate::rows::Request;
use crate::schedule::Schedule;
use crate::trace::TraceLine;
use crate::{Error, Result};

/// Where in the schedule a step is.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Step index, 0 = noisiest.
    pub index: usize,
    /// Number of steps of the schedule.
    pub count: usize,
    /// The point the step starts from (where the model is evaluated).
    pub from: StepPoint,
    /// The point the step moves to.
    pub to: StepPoint,
    /// The main model's parameterisation.
    pub parameterization: Parameterization,
    /// Which visit of this step this is: 0 the first, `1..` a revisit after the state was
    /// noised back to `from` (see [`Guidance::revisits`]). Strategies that draw noise key it
    /// by the visit too, so a revisit does not replay the same draw.
    pub visit: usize,
}

impl Step {
    /// The first visit of step `index` of `schedule` for a main model of `parameterization`.
    pub fn of(
        schedule: &Schedule,
        index: usize,
        parameterization: Parameterization,
    ) -> Result<Step> {
        if index >= schedule.steps() {
            return Err(Error::InvalidArgument(format!(
                "step {index} is past the schedule's {} steps",
                schedule.steps()
            )));
        }
        Ok(Step {
            index,
            count: schedule.steps(),
            from: schedule.points[index],
            to: schedule.target(index),
            parameterization,
            visit: 0,
        })
    }

    /// True for the last step of the schedule.
    pub fn is_last(&self) -> bool {
        self.index + 1 == self.count
    }
}

/// What a strategy needs from the engine; checked before sampling starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Duplicated particles must diverge: the solver must be stochastic.
    pub stochastic_solver: bool,
    /// Number of models the strategy addresses (`2` for a guiding model).
    pub models: usize,
    /// Only valid on rectified-flow models (FlowChef).
    pub flow_path: bool,
    /// [`Guidance::requests`] reads this step's conditional prediction (GFCG picks its
    /// reference class from it): the engine evaluates conditional rows first, then these
    /// requests in a second batch.
    pub cond_before_requests: bool,
}

/// Engine services a strategy may use inside its hooks: scoring rewards and extra model
/// evaluations (look-ahead), both counted in the ledger, and the step's trace line.
///
/// It holds what the hooks need of a run — the models, the schedule and the strategy stack —
/// not the engine itself, so this module does not depend on the engine (the engine builds a
/// context with `Engine::context`).
pub struct Context<'a> {
    /// Models; index 0 is the main model, others are guiding models (autoguidance).
    pub models: &'a [&'a dyn Denoiser],
    /// The points the run visits.
    pub schedule: &'a Schedule,
    /// The run's strategies, applied in order (what [`Context::predict_guided`] combines).
    pub strategies: &'a [Box<dyn Guidance + 'a>],
    /// Costs so far.
    pub ledger: &'a mut Ledger,
    /// Wall time so far.
    pub timing: &'a mut Timing,
    /// The current step's trace line.
    pub trace: &'a mut TraceLine,
}

impl Context<'_> {
    /// Scores rows of `x0` with `reward`, counting the call. Non-finite scores other than `-∞`
    /// (NaN, `+∞`) are mapped to NaN so callers treat them as invalid items.
    pub fn score(
        &mut self,
        reward: &dyn Reward,
        x0: &Tensor,
        conds: &[Condition],
        at: StepPoint,
    ) -> Result<Vec<f64>> {
        let start = std::time::Instant::now();
        let scores = reward.score(x0, &RewardContext { conds, at })?;
        Timing::add(&mut self.timing.reward_s, start.elapsed());
        if scores.len() != conds.len() {
            return Err(Error::RewardUnusable {
                name: reward.name().into(),
                message: format!("returned {} scores for {} items", scores.len(), conds.len()),
            });
        }
        *self
            .ledger
            .reward_calls
            .entry(reward.name().into())
            .or_default() += 1;
        *self
            .ledger
            .reward_items
            .entry(reward.name().into())
            .or_default() += conds.len() as u64;
        self.ledger.reward_cached += reward.take_cached();
        self.ledger.decodes += reward.take_decodes();
        Ok(scores
            .into_iter()
            .map(|s| {
                if s.is_nan() || s == f64::INFINITY {
                    f64::NAN
                } else {
                    s
                }
            })
            .collect())
    }

    /// Evaluates model `model` on rows `x` at `at` and converts to `(x̂0, ε̂)`, counting rows.
    pub fn predict(
        &mut self,
        model: usize,
        x: &Tensor,
        at: &StepPoint,
        conds: &[Condition],
    ) -> Result<Prediction> {
        rows::predict(self.models[model], x, at, conds, self.ledger, self.timing)
    }

    /// The [`Step`] of schedule index `index` (its first visit).
    pub fn step(&self, index: usize) -> Result<Step> {
        Step::of(self.schedule, index, self.models[0].parameterization())
    }

    /// The guided prediction every strategy's `requests` and `combine` make for `pop` at step
    /// `index` — what the engine itself will compute at that step. Used for look-ahead values;
    /// storing the result in `pop.pending` lets the engine reuse it instead of recomputing.
    pub fn predict_guided(&mut self, pop: &Population, index: usize) -> Result<Prediction> {
        let step = self.step(index)?;
        let mut scratch = TraceLine::new();
        Context {
            models: self.models,
            schedule: self.schedule,
            strategies: self.strategies,
            ledger: self.ledger,
            timing: self.timing,
            trace: &mut scratch,
        }
        .guided(&step, pop)
    }

    /// Every particle's conditional row plus each strategy's requests, evaluated in batches,
    /// then combined by each strategy in order: the guided prediction at `step.from`. The
    /// strategies' `combine` hooks write to this context's trace line.
    pub(crate) fn guided(&mut self, step: &Step, pop: &Population) -> Result<Prediction> {
        let strategies = self.strategies;
        // Phase 1: conditional rows plus every request that does not read them; phase 2 (only
        // when a strategy asks): requests made from this step's conditional prediction.
        let mut requests = vec![Request {
            model: 0,
            conds: pop.conds(),
        }];
        let mut spans = vec![0..0; strategies.len()];
        for (k, g) in strategies.iter().enumerate() {
            if !g.needs().cond_before_requests {
                let asked = self.checked(g.as_ref(), g.requests(step, pop, None)?, pop)?;
                spans[k] = requests.len()..requests.len() + asked.len();
                requests.extend(asked);
            }
        }
        let (x, at) = (&pop.x, &step.from);
        let mut preds = rows::evaluate(self.models, &requests, x, at, self.ledger, self.timing)?;
        let late: Vec<usize> = (0..strategies.len())
            .filter(|&k| strategies[k].needs().cond_before_requests)
            .collect();
        if !late.is_empty() {
            let mut more = Vec::new();
            for &k in &late {
                let g = &strategies[k];
                let asked =
                    self.checked(g.as_ref(), g.requests(step, pop, Some(&preds[0]))?, pop)?;
                let start = requests.len() + more.len();
                spans[k] = start..start + asked.len();
                more.extend(asked);
            }
            preds.extend(rows::evaluate(
                self.models,
                &more,
                x,
                at,
                self.ledger,
                self.timing,
            )?);
            requests.extend(more);
        }
        let mut guided = preds[0].clone();
        for (g, span) in strategies.iter().zip(&spans) {
            g.combine(
                step,
                pop,
                &preds[0],
                &preds[span.clone()],
                &mut guided,
                self,
            )?;
        }
        Ok(guided)
    }

    /// Checks a strategy's requests: one condition per particle, an existing model.
    fn checked(
        &self,
        g: &dyn Guidance,
        asked: Vec<Request>,
        pop: &Population,
    ) -> Result<Vec<Request>> {
        for r in &asked {
            if r.conds.len() != pop.len() || r.model >= self.models.len() {
                return Err(Error::InvalidArgument(format!(
                    "{} requested rows for {} particles of model {} (have {} particles, {} models)",
                    g.name(),
                    r.conds.len(),
                    r.model,
                    pop.len(),
                    self.models.len()
                )));
            }
        }
        Ok(asked)
    }

    /// Adds a field to the step's trace line.
    pub fn trace(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.trace.insert(key.into(), value.into());
    }
}

/// An inference-time guidance strategy. Implement only the hooks you need.
pub trait Guidance: Send + Sync {
    /// Name for records and traces.
    fn name(&self) -> String;

    /// What this strategy requires of the model and sampler.
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Checks the strategy's settings against a schedule of `steps` steps before sampling.
    fn validate(&self, _steps: usize) -> Result<()> {
        Ok(())
    }

    /// Extra model rows needed this step, beyond each particle's conditional row. `cond` is
    /// this step's conditional prediction when [`Needs::cond_before_requests`] is set.
    fn requests(
        &self,
        _step: &Step,
        _pop: &Population,
        _cond: Option<&Prediction>,
    ) -> Result<Vec<Request>> {
        Ok(Vec::new())
    }

    /// Adds this strategy's term to `guided` (which starts as `cond` and carries the terms of the
    /// strategies before this one). `extra[k]` answers this strategy's `k`-th request.
    fn combine(
        &self,
        _step: &Step,
        _pop: &Population,
        _cond: &Prediction,
        _extra: &[Prediction],
        _guided: &mut Prediction,
        _cx: &mut Context,
    ) -> Result<()> {
        Ok(())
    }

    /// Changes `x_t` (in `pop.x`) before the transition, with the model output frozen; must keep
    /// `guided` consistent with the new state.
    fn steer(
        &self,
        _step: &Step,
        _pop: &mut Population,
        _guided: &mut Prediction,
        _cx: &mut Context,
    ) -> Result<()> {
        Ok(())
    }

    /// Children per particle for this step's transition (1 = no branching). Children share
    /// their parent's prediction and differ in noise.
    fn expand(&self, _step: &Step, _pop: &Population) -> usize {
        1
    }

    /// Reweights, resamples, prunes or picks after the transition (`pop.x` is at `step.to`,
    /// `pop.x0` holds the guided `x̂0` made at `step.from`).
    fn select(&self, _step: &Step, _pop: &mut Population, _cx: &mut Context) -> Result<()> {
        Ok(())
    }

    /// Extra visits of this step (0 = none): after the transition and `select`, the engine
    /// noises `x` from `step.to` back to `step.from` with the forward process and runs the
    /// whole step again, this many times (the engine takes the largest answer).
    fn revisits(&self, _step: &Step) -> usize {
        0
    }
}

/// A borrowed strategy is a strategy: lets one strategy object serve several engines.
impl<G: Guidance + ?Sized> Guidance for &G {
    fn name(&self) -> String {
        (**self).name()
    }
    fn needs(&self) -> Needs {
        (**self).needs()
    }
    fn validate(&self, steps: usize) -> Result<()> {
        (**self).validate(steps)
    }
    fn requests(
        &self,
        step: &Step,
        pop: &Population,
        cond: Option<&Prediction>,
    ) -> Result<Vec<Request>> {
        (**self).requests(step, pop, cond)
    }
    fn combine(
        &self,
        step: &Step,
        pop: &Population,
        cond: &Prediction,
        extra: &[Prediction],
        guided: &mut Prediction,
        cx: &mut Context,
    ) -> Result<()> {
        (**self).combine(step, pop, cond, extra, guided, cx)
    }
    fn steer(
        &self,
        step: &Step,
        pop: &mut Population,
        guided: &mut Prediction,
        cx: &mut Context,
    ) -> Result<()> {
        (**self).steer(step, pop, guided, cx)
    }
    fn expand(&self, step: &Step, pop: &Population) -> usize {
        (**self).expand(step, pop)
    }
    fn select(&self, step: &Step, pop: &mut Population, cx: &mut Context) -> Result<()> {
        (**self).select(step, pop, cx)
    }
    fn revisits(&self, step: &Step) -> usize {
        (**self).revisits(step)
    }
}
