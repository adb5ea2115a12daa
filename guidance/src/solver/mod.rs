//! Solvers: stateless update rules from one schedule point to the next.
//!
//! Every solver reads the guided prediction `(x̂0, ε̂)` at `x_t` and returns `x_s`. Whatever
//! history a multistep solver needs (earlier `x̂0`) is owned by the particles and handed in, so
//! resampling and branching keep it consistent. Noise is an explicit input: the engine draws it
//! from each particle's own counter-based stream.

use candle_core::Tensor;

use crate::noise::Noise;
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use crate::Result;

pub mod ddim;
pub mod dpmpp_2m;

pub use ddim::Ddim;
pub use dpmpp_2m::DpmSolverPp2M;

/// One update rule `x_t → x_s` on the Gaussian path.
pub trait Solver: Send + Sync + std::fmt::Debug {
    /// Short name for records and traces.
    fn name(&self) -> String;

    /// Whether [`Solver::step`] consumes noise (particle methods need this).
    fn is_stochastic(&self) -> bool;

    /// The DDIM noise scale η this rule uses, if it is a DDIM-family rule.
    fn eta(&self) -> Option<f64> {
        None
    }

    /// How many earlier `x̂0` (most recent first) the solver reads; 0 for single-step solvers.
    fn history_len(&self) -> usize {
        0
    }

    /// Moves `x` (at `schedule.points[index]`) to [`Schedule::target`]`(index)` (which is
    /// `schedule.points[index + 1]` except for diffusers' DDIM with trailing/linspace spacing).
    ///
    /// `history[k]` is the guided `x̂0` of step `index − 1 − k` (shorter at the start);
    /// `noise` is standard normal noise shaped like `x` when the solver is stochastic.
    fn step(
        &self,
        schedule: &Schedule,
        index: usize,
        x: &Tensor,
        pred: &Prediction,
        history: &[Tensor],
        noise: Option<&Noise>,
    ) -> Result<Tensor>;
}
