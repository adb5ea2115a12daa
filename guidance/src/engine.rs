//! The sampling loop. One loop for every model, solver and strategy:
//!
//! ```text
//! for each step i (x at points[i]):
//!     rows   = conditional row of every particle + each strategy's requests   (batched per model)
//!     guided = cond; each strategy.combine adds its term                      (x̂0, ε̂ space)
//!     each strategy.steer may move x with the model output frozen
//!     children = max over strategies of expand  → branch particles (fresh lineages)
//!     x      = solver.step(x, guided, particle history, particle noise)      (to target(i))
//!     each strategy.select may reweight / resample / prune
//!     repeat max over strategies of revisits times:                           (time travel)
//!         x = forward process from target(i) back to points[i]; the step again
//! ```
//!
//! Everything a particle owns lives in the [`Population`]; the engine holds no sampling state.

use std::time::Instant;

use candle_core::Tensor;
use serde_json::Value;

use crate::denoiser::Denoiser;
use crate::guidance::{Context, Guidance, Step};
use crate::ledger::{Ledger, Timing};
use crate::population::Population;
use crate::rng::Stream;
use crate::schedule::Schedule;
use crate::solver::Solver;
use crate::trace::{TraceLine, TraceSink};
use crate::{Error, Result};

/// The final population of a run and what it cost.
#[derive(Debug)]
pub struct Outcome {
    /// Final particles (`x` at the last schedule point).
    pub population: Population,
    /// Exact counts.
    pub ledger: Ledger,
    /// Wall time.
    pub timing: Timing,
}

/// Models, schedule, solver and strategies of one run.
pub struct Engine<'a> {
    /// Models; index 0 is the main model, others are guiding models (autoguidance).
    pub models: Vec<&'a dyn Denoiser>,
    /// The points to visit.
    pub schedule: &'a Schedule,
    /// The update rule.
    pub solver: &'a dyn Solver,
    /// Strategies, applied in order.
    pub guidance: Vec<Box<dyn Guidance + 'a>>,
}

impl<'a> Engine<'a> {
    /// Checks that every strategy's needs are met, with a message saying how to fix it.
    pub fn validate(&self) -> Result<()> {
        if self.schedule.steps() == 0 {
            return Err(Error::InvalidArgument(
                "the schedule has no steps (steps must be ≥ 1)".into(),
            ));
        }
        let main = self
            .models
            .first()
            .ok_or_else(|| Error::InvalidArgument("no model".into()))?;
        for g in &self.guidance {
            g.validate(self.schedule.steps())?;
            let needs = g.needs();
            if needs.stochastic_solver && !self.solver.is_stochastic() {
                return Err(Error::Unsupported(format!(
                    "{} needs a stochastic sampler (with a deterministic one, resampled copies \
                     stay identical); use --eta 1 (or --sampler ddpm / euler-a)",
                    g.name()
                )));
            }
            if needs.models > self.models.len() {
                return Err(Error::Unsupported(format!(
                    "{} needs {} models but {} were given",
                    g.name(),
                    needs.models,
                    self.models.len()
                )));
            }
            if needs.flow_path && !main.path().is_flow() {
                return Err(Error::Unsupported(format!(
                    "{} works on rectified-flow models only; `{}` is a VP diffusion model",
                    g.name(),
                    main.name()
                )));
            }
        }
        Ok(())
    }

    /// Runs the schedule from `pop`, writing one trace line per visited step to `trace` if given.
    pub fn run(
        &self,
        mut pop: Population,
        mut trace: Option<&mut dyn TraceSink>,
    ) -> Result<Outcome> {
        self.validate()?;
        let started = Instant::now();
        let mut ledger = Ledger::default();
        let mut timing = Timing::default();
        for index in 0..self.schedule.steps() {
            let first = self.step(index)?;
            let visits = 1 + self
                .guidance
                .iter()
                .map(|g| g.revisits(&first))
                .max()
                .unwrap_or(0);
            for visit in 0..visits {
                let step = Step { visit, ..first };
                if visit > 0 {
                    self.travel_back(&step, &mut pop)?;
                }
                let line = self
                    .visit(&step, &mut pop, &mut ledger, &mut timing)
                    .map_err(|e| match e {
                        Error::NonFinite(m) => Error::NonFinite(format!(
                            "at step {} of {}: {m}",
                            index + 1,
                            self.schedule.steps()
                        )),
                        other => other,
                    })?;
                if let Some(sink) = trace.as_deref_mut() {
                    sink.record(Value::Object(line))?;
                }
            }
        }
        timing.total_s = started.elapsed().as_secs_f64();
        Ok(Outcome {
            population: pop,
            ledger,
            timing,
        })
    }

    /// One visit of `step`: rows, combination, steering, branching, transition, selection.
    /// Returns the step's trace line.
    fn visit(
        &self,
        step: &Step,
        pop: &mut Population,
        ledger: &mut Ledger,
        timing: &mut Timing,
    ) -> Result<TraceLine> {
        let index = step.index;
        let mut line = TraceLine::new();
        line.insert("step".into(), index.into());
        if step.visit > 0 {
            line.insert("visit".into(), step.visit.into());
        }
        line.insert("timestep".into(), step.from.timestep.into());
        line.insert("alpha".into(), step.from.alpha.into());
        line.insert("sigma".into(), step.from.sigma.into());

        // 1–2. Rows and combination (or the look-ahead a strategy already made).
        let mut guided = match pop.pending.take() {
            Some(p) if p.rows()? == pop.len() => {
                line.insert("reused_lookahead".into(), true.into());
                p
            }
            _ => self.context(ledger, timing, &mut line).guided(step, pop)?,
        };

        // 3. Steer the state with the prediction frozen.
        for g in &self.guidance {
            let mut cx = self.context(ledger, timing, &mut line);
            g.steer(step, pop, &mut guided, &mut cx)?;
        }

        // 4. Branch.
        let children = self
            .guidance
            .iter()
            .map(|g| g.expand(step, pop))
            .max()
            .unwrap_or(1);
        if children == 0 {
            return Err(Error::InvalidArgument(
                "a strategy asked for 0 children".into(),
            ));
        }
        if children > 1 {
            let idx: Vec<usize> = (0..pop.len())
                .flat_map(|i| std::iter::repeat_n(i, children))
                .collect();
            *pop = pop.gather(&idx, index)?;
            let t = Tensor::from_vec(
                idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                idx.len(),
                pop.x.device(),
            )?;
            guided = guided.gather(&t)?;
        }

        // 5. Transition.
        let noise = if self.solver.is_stochastic() {
            Some(pop.step_noise(index, step.visit))
        } else {
            None
        };
        let x = self.solver.step(
            self.schedule,
            index,
            &pop.x,
            &guided,
            &pop.history,
            noise.as_ref(),
        )?;
        pop.x = x;
        pop.pending = None;
        // (A velocity's x̂0 was written by the step's own pass where it could be.)
        let x0 = guided.x0().clone();
        pop.x0 = Some(x0.clone());
        if self.solver.history_len() > 0 {
            pop.history.insert(0, x0);
            pop.history.truncate(self.solver.history_len());
        }

        // 6. Select.
        for g in &self.guidance {
            let mut cx = self.context(ledger, timing, &mut line);
            g.select(step, pop, &mut cx)?;
        }
        Ok(line)
    }

    /// Time travel before a revisit of `step`: `x` goes from `step.to` back to `step.from` by
    /// the forward process ([`crate::path::StepPoint::forward_to`]), with noise from the
    /// particle's stream [`Stream::Renoise`]. The visit's own `x̂0` leaves the solver history,
    /// so a multistep solver takes its first-order step on a revisit: the re-noised state has no
    /// past of its own, and extrapolating from the previous step's `x̂0` (a different
    /// trajectory's) made DPM-Solver++(2M) diverge on the exact Gaussian (std 59 instead of 1
    /// with 16 revisits).
    fn travel_back(&self, step: &Step, pop: &mut Population) -> Result<()> {
        let (a, s) = step.to.forward_to(&step.from).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "step {} cannot be revisited: its target (σ {}) is not less noisy than its start \
                 (σ {})",
                step.index, step.to.sigma, step.from.sigma
            ))
        })?;
        let z = pop.stream_noise(Stream::Renoise {
            step: step.index,
            visit: step.visit,
        })?;
        pop.x = (pop.x.affine(a, 0.0)? + z.affine(s, 0.0)?)?;
        pop.pending = None;
        if self.solver.history_len() > 0 && !pop.history.is_empty() {
            pop.history.remove(0);
        }
        Ok(())
    }

    /// The [`Step`] of schedule index `index` (its first visit).
    pub fn step(&self, index: usize) -> Result<Step> {
        Step::of(self.schedule, index, self.models[0].parameterization())
    }

    /// The services strategies get in their hooks: this engine's models, schedule and strategies
    /// with the run's `ledger`, `timing` and the current step's `trace` line.
    pub fn context<'c>(
        &'c self,
        ledger: &'c mut Ledger,
        timing: &'c mut Timing,
        trace: &'c mut TraceLine,
    ) -> Context<'c> {
        Context {
            models: &self.models,
            schedule: self.schedule,
            strategies: &self.guidance,
            ledger,
            timing,
            trace,
        }
    }
}
