//! Time travel — RePaint's resampling (Lugmayr et al. 2022, "RePaint: Inpainting using
//! Denoising Diffusion Probabilistic Models", §4.2, Alg. 1; the "time-travel strategy" of
//! FreeDoM, Yu et al. 2023): after a step lands at `s = step.to`, the state is noised back to
//! `t = step.from` with the forward process and the step is run again,
//!
//! ```text
//! repeat U times:   x_t = (α_t/α_s)·x_s + √(σ_t² − (α_t/α_s)²·σ_s²)·z,   z ~ N(0, I)
//!                   x_s = the whole step again from x_t (rows, guidance, steering, selection)
//! ```
//!
//! Conditioning applied to the state alone — replacement of known pixels, FlowChef's steering —
//! only ever sees the model's current fill, and an early fill that clashes with the context is
//! never revised; each round trip gives the model another look at the now consistent state, so
//! the fill harmonises with what is known. Every revisit costs the step's model rows again
//! (the ledger counts them): `U` extra visits on each of `N − 1` steps multiply the rows of an
//! `N`-step run by about `1 + U`. This is RePaint with jump length 1 (it resamples one step
//! at a time; the paper's best setting jumps 10 steps at once).

use crate::guidance::{Guidance, Step};

/// Revisit steps of the schedule, noising back and running them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeTravel {
    /// Extra visits `U` of every revisited step.
    pub revisits: usize,
    /// Revisit only the first `max_steps` steps (None = all but the last, whose target is the
    /// clean sample, as RePaint stops resampling at the end).
    pub max_steps: Option<usize>,
}

impl TimeTravel {
    /// `U` revisits of every step but the last, or `None` for `U = 0` (no time travel): the
    /// setting of `--time-travel U`.
    pub fn every_step(revisits: usize) -> Option<Self> {
        (revisits > 0).then_some(TimeTravel {
            revisits,
            max_steps: None,
        })
    }
}

impl Guidance for TimeTravel {
    fn name(&self) -> String {
        format!("time-travel(U={})", self.revisits)
    }

    fn revisits(&self, step: &Step) -> usize {
        let last = self.max_steps.unwrap_or(step.count.saturating_sub(1));
        if step.index < last {
            self.revisits
        } else {
            0
        }
    }
}
