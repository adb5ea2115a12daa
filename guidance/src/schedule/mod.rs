//! Timestep schedules: which points of the path a sampler visits, exactly as diffusers picks them.
//!
//! A [`Schedule`] is the list of `steps + 1` [`StepPoint`]s a sampler moves through (the last is
//! where sampling ends: σ = 0, or DDIM's `final_alpha_cumprod` point). Real checkpoints only work
//! with the timesteps they expect, so every rule here reproduces diffusers' `set_timesteps`
//! (tested against diffusers' own trajectories in `tests/fixtures/schedulers`).

use serde::{Deserialize, Serialize};

use crate::path::StepPoint;

pub mod config_checks;
pub mod diffusers;
pub mod flow;
pub mod karras;
pub mod spacing;
pub mod vp;

pub use diffusers::{SchedulerClass, SchedulerConfig, SetTimesteps};

/// The points a sampler visits, noisiest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// `steps + 1` points; step `i` evaluates the model at `points[i]` and moves to
    /// [`Schedule::target`]`(i)`, which is `points[i + 1]` except for diffusers' DDIM quirk below.
    pub points: Vec<StepPoint>,
    /// Standard deviation of the initial state `x_T = init_noise_sigma·ε` in path (model-input)
    /// units: 1 for VP schedules, σ_max for diffusers' linspace/trailing Euler, 1 for flows.
    pub init_noise_sigma: f64,
    /// Where step `i` lands, when that is not `points[i + 1]` (`None`: every step lands on the
    /// next point). diffusers' DDIM always steps from `t` to `t − T // N`, whatever the spacing;
    /// with trailing or linspace spacing that can be one train step away from the next timestep
    /// it evaluates the model at (e.g. 916 → 833, then the model runs at 832). Use
    /// [`Schedule::target`] rather than `points[i + 1]` for the landing point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<StepPoint>>,
}

impl Schedule {
    /// A schedule whose steps land exactly on the next point.
    pub fn new(points: Vec<StepPoint>, init_noise_sigma: f64) -> Self {
        Schedule {
            points,
            init_noise_sigma,
            targets: None,
        }
    }

    /// Number of solver steps.
    pub fn steps(&self) -> usize {
        self.points.len().saturating_sub(1)
    }

    /// The point step `index` moves to: `targets[index]` when given, else `points[index + 1]`.
    pub fn target(&self, index: usize) -> StepPoint {
        match &self.targets {
            Some(t) => t[index],
            None => self.points[index + 1],
        }
    }
}

/// How diffusers spaces inference timesteps over the train timesteps (`timestep_spacing`;
/// Lin et al. 2024, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `arange(0, N)·(T/N) + steps_offset`, reversed (SD 1.x default).
    #[default]
    Leading,
    /// `round(arange(T, 0, −T/N)) − 1` (SD-Turbo, zero-SNR models).
    Trailing,
    /// `linspace(0, T−1, N)` rounded, reversed.
    Linspace,
}
