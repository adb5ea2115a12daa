//! Feynman–Kac steering (Singhal et al. 2025, "A General Framework for Inference-time
//! Scaling and Steering of Diffusion Models", arXiv 2501.06848): K particles per group, potentials on the
//! reward of x̂0, resampling towards p(x)·exp(λ·r(x)).

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;
use steerdiff_guidance::strategy::{FkSteering, Potential, ResampleSchedule};
use steerdiff_guidance::Resampling;

use super::{Built, Def, EvalUse, Inputs, RewardUse};
use crate::error::input_error;

/// `--guidance fk`.
pub const DEF: Def = Def {
    name: "fk",
    about: "Feynman–Kac steering: K particles, potentials on r(x̂0), resampling.",
    list: "Feynman–Kac steering (Singhal et al. 2025) towards p·exp(λr): --particles K \
           --lambda L --potential diff|max|add|rt --resample-every/--resample-start \
           --ess-threshold θ --resampling multinomial|systematic|stratified|residual",
    particles: true,
    reward: RewardUse::Required,
    eval: EvalUse::AtEachCfg,
    build,
};

/// FK's own flags.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
pub struct Flags {
    /// FK tilt λ: the target is p(x)·exp(λ·r(x)).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub lambda: f64,
    /// FK potential.
    #[arg(long, value_enum, default_value_t = PotentialArg::Diff)]
    pub potential: PotentialArg,
    /// FK: resample every E steps (default: a fifth of the steps).
    #[arg(long, value_name = "E")]
    pub resample_every: Option<usize>,
    /// FK: first resampling step (default: a fifth of the steps).
    #[arg(long, value_name = "S")]
    pub resample_start: Option<usize>,
    /// FK: resample only when ESS < θ·K (default: at every resampling step).
    #[arg(long, value_name = "θ", allow_negative_numbers = true)]
    pub ess_threshold: Option<f64>,
    /// FK resampling scheme.
    #[arg(long, value_enum, default_value_t = ResamplingArg::Multinomial)]
    pub resampling: ResamplingArg,
}

crate::run::clap_defaults::defaults_from_clap!(Flags);

/// FK potentials on the command line ([`Potential`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PotentialArg {
    /// exp(λ(r_t − r_prev)).
    Diff,
    /// exp(λ·max(r_t, r_prev)).
    Max,
    /// exp(λ(r_t + r_prev)).
    Add,
    /// exp(λ·r_t).
    Rt,
}

/// Resampling schemes on the command line ([`Resampling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ResamplingArg {
    /// Independent categorical draws.
    Multinomial,
    /// One uniform, evenly spaced points.
    Systematic,
    /// One uniform per stratum.
    Stratified,
    /// Deterministic copies plus multinomial remainder.
    Residual,
}

fn build(i: &Inputs) -> Result<Built> {
    let a = &i.args.flags.fk;
    if !(a.lambda.is_finite() && a.lambda >= 0.0) {
        input_error!("--lambda must be a finite number ≥ 0 (got {})", a.lambda);
    }
    let mut schedule = ResampleSchedule::for_steps(i.steps);
    if let Some(e) = a.resample_every {
        schedule.every = e;
    }
    if let Some(s) = a.resample_start {
        schedule.start = s;
    }
    Ok(Built::Step(Box::new(FkSteering {
        reward: i.reward()?,
        lambda: a.lambda,
        potential: match a.potential {
            PotentialArg::Diff => Potential::Diff,
            PotentialArg::Max => Potential::Max,
            PotentialArg::Add => Potential::Add,
            PotentialArg::Rt => Potential::Rt,
        },
        schedule,
        adaptive: a.ess_threshold,
        resampling: match a.resampling {
            ResamplingArg::Multinomial => Resampling::Multinomial,
            ResamplingArg::Systematic => Resampling::Systematic,
            ResamplingArg::Stratified => Resampling::Stratified,
            ResamplingArg::Residual => Resampling::Residual,
        },
    })))
}
