//! Named samplers for the command line: a [`Schedule`] plus a [`Solver`].
//!
//! Every sampler is one of two rules ([`Ddim`] with some `η`, or [`DpmSolverPp2M`]) on a
//! schedule chosen the way diffusers would for Stable Diffusion. On a VP path:
//!
//! | name | schedule | rule |
//! |---|---|---|
//! | `ddim` | DDIM, leading spacing, `steps_offset = 1`, `set_alpha_to_one = false` | `Ddim { η }` (default 0) |
//! | `ddpm` | DDPM, leading, `steps_offset = 1`, ends at `ᾱ = 1` | `Ddim { 1 }` |
//! | `euler` | Euler, leading, `steps_offset = 1`, ends at σ = 0 | `Ddim { 0 }` |
//! | `euler-karras` | Euler with Karras sigmas (leading ends) | `Ddim { 0 }` |
//! | `euler-a` | Euler ancestral, leading, `steps_offset = 1` | `Ddim { 1 }` |
//! | `dpmpp-2m` | DPM-Solver multistep, linspace (diffusers' default) | `DpmSolverPp2M` |
//! | `dpmpp-2m-karras` | the same with Karras sigmas | `DpmSolverPp2M` |
//!
//! Leading spacing with `steps_offset = 1` is what Stable Diffusion 1.x/2.x/XL ship; it is used
//! for every VP model (a zero-terminal-SNR model is better served by its own
//! `scheduler_config.json` through [`SchedulerConfig`](crate::schedule::SchedulerConfig)).
//!
//! On a flow path every name uses the flow-matching schedule (`σ` linear from 1 to `1/T`, with
//! the given shift, then 0): `ddim`/`euler`/`flow-euler` → `Ddim { η }`, `ddpm`/`euler-a` →
//! `Ddim { 1 }`, `dpmpp-2m` → `DpmSolverPp2M`; Karras variants are refused.
//!
//! `η` is a parameter of `ddim` and `flow-euler` only; the other samplers have a fixed `η` and
//! refuse a different value.

use crate::path::NoisePath;
use crate::schedule::flow::{self, FlowOptions};
use crate::schedule::vp::{self, DpmOptions, EulerOptions};
use crate::schedule::{Schedule, TimestepSpacing};
use crate::solver::{Ddim, DpmSolverPp2M, Solver};
use crate::{Error, Result};

/// A schedule and the rule that walks it.
#[derive(Debug)]
pub struct Sampler {
    /// The points visited.
    pub schedule: Schedule,
    /// The update rule.
    pub solver: Box<dyn Solver>,
}

/// The named samplers: `(name, one-line description)`.
pub const SAMPLERS: &[(&str, &str)] = &[
    (
        "ddim",
        "DDIM (Song et al. 2021); deterministic at --eta 0 (default), DDPM-like at --eta 1",
    ),
    ("ddpm", "DDPM ancestral sampling (Ho et al. 2020), η = 1"),
    (
        "euler",
        "Euler (Karras et al. 2022) on diffusers' Euler schedule; deterministic",
    ),
    (
        "euler-karras",
        "Euler with Karras sigmas (ρ = 7); deterministic; VP models only",
    ),
    (
        "euler-a",
        "Euler ancestral (stochastic, η = 1 in DDIM form)",
    ),
    (
        "dpmpp-2m",
        "DPM-Solver++(2M) (Lu et al. 2022), second-order multistep; deterministic",
    ),
    (
        "dpmpp-2m-karras",
        "DPM-Solver++(2M) with Karras sigmas; VP models only",
    ),
    (
        "flow-euler",
        "flow-matching Euler (rectified-flow models only); --eta > 0 makes it stochastic",
    ),
];

fn valid_names() -> String {
    SAMPLERS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sampler called `name` on `path` with `steps` steps (flow shift 1.0).
///
/// Errors: unknown name, `steps = 0`, `η < 0` or NaN, or an `η` for a fixed-η sampler →
/// [`Error::InvalidArgument`]; a combination that cannot work (Karras on a flow, `flow-euler` on
/// a VP model) → [`Error::Unsupported`].
pub fn by_name(name: &str, path: &NoisePath, steps: usize, eta: Option<f64>) -> Result<Sampler> {
    by_name_with_shift(name, path, steps, eta, 1.0)
}

/// [`by_name`] with a flow time shift (`σ' = s·σ/(1 + (s − 1)·σ)`, Esser et al. 2024; SD3 uses
/// 3.0); the shift is ignored on VP paths.
pub fn by_name_with_shift(
    name: &str,
    path: &NoisePath,
    steps: usize,
    eta: Option<f64>,
    flow_shift: f64,
) -> Result<Sampler> {
    if !SAMPLERS.iter().any(|(n, _)| *n == name) {
        return Err(Error::InvalidArgument(format!(
            "unknown sampler `{name}` (valid: {})",
            valid_names()
        )));
    }
    if steps == 0 {
        return Err(Error::InvalidArgument("steps must be at least 1".into()));
    }
    if let Some(e) = eta {
        if !e.is_finite() || e < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "eta must be a finite number ≥ 0 (got {e})"
            )));
        }
    }
    let free_eta = || eta.unwrap_or(0.0);
    let fixed = |value: f64| -> Result<f64> {
        match eta {
            Some(e) if e != value => Err(Error::InvalidArgument(format!(
                "sampler `{name}` has a fixed η = {value} (got --eta {e}); η is a parameter of \
                 `ddim` and `flow-euler`"
            ))),
            _ => Ok(value),
        }
    };
    match path {
        NoisePath::Flow {
            num_train_timesteps,
        } => {
            if !(flow_shift.is_finite() && flow_shift > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "flow shift must be a positive number (got {flow_shift})"
                )));
            }
            let opts = FlowOptions {
                num_train_timesteps: *num_train_timesteps,
                ..FlowOptions::with_shift(flow_shift)
            };
            let schedule = flow::flow(steps, &opts, None)?;
            let solver: Box<dyn Solver> = match name {
                "ddim" | "flow-euler" => Box::new(Ddim { eta: free_eta() }),
                "euler" => Box::new(Ddim { eta: fixed(0.0)? }),
                "ddpm" | "euler-a" => Box::new(Ddim { eta: fixed(1.0)? }),
                "dpmpp-2m" => {
                    fixed(0.0)?;
                    Box::new(DpmSolverPp2M)
                }
                _ => {
                    return Err(Error::Unsupported(format!(
                        "sampler `{name}`: Karras sigmas are defined for VP diffusion models; on \
                         a rectified flow use `flow-euler`, `euler` or `dpmpp-2m`"
                    )))
                }
            };
            Ok(Sampler { schedule, solver })
        }
        NoisePath::Vp(vp_path) => {
            let leading = EulerOptions {
                spacing: TimestepSpacing::Leading,
                steps_offset: 1,
                ..Default::default()
            };
            let (schedule, solver): (Schedule, Box<dyn Solver>) = match name {
                "ddim" => (
                    vp::ddim(vp_path, steps, TimestepSpacing::Leading, 1, false)?,
                    Box::new(Ddim { eta: free_eta() }),
                ),
                "ddpm" => (
                    vp::ddpm(vp_path, steps, TimestepSpacing::Leading, 1)?,
                    Box::new(Ddim { eta: fixed(1.0)? }),
                ),
                "euler" => (
                    vp::euler(vp_path, steps, &leading, None)?,
                    Box::new(Ddim { eta: fixed(0.0)? }),
                ),
                "euler-karras" => (
                    vp::euler(
                        vp_path,
                        steps,
                        &EulerOptions {
                            karras: true,
                            ..leading
                        },
                        None,
                    )?,
                    Box::new(Ddim { eta: fixed(0.0)? }),
                ),
                "euler-a" => (
                    vp::euler(vp_path, steps, &leading, None)?,
                    Box::new(Ddim { eta: fixed(1.0)? }),
                ),
                "dpmpp-2m" | "dpmpp-2m-karras" => {
                    fixed(0.0)?;
                    let opts = DpmOptions {
                        karras: name == "dpmpp-2m-karras",
                        ..Default::default()
                    };
                    (vp::dpm(vp_path, steps, &opts)?, Box::new(DpmSolverPp2M))
                }
                _ => {
                    return Err(Error::Unsupported(format!(
                        "sampler `{name}` is for rectified-flow models; this is a VP diffusion \
                         model: use `euler`, `ddim` or `dpmpp-2m`"
                    )))
                }
            };
            Ok(Sampler { schedule, solver })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{BetaSchedule, VpPath};

    fn sd() -> NoisePath {
        NoisePath::Vp(VpPath::new(
            BetaSchedule::ScaledLinear,
            0.00085,
            0.012,
            1000,
            false,
        ))
    }

    #[test]
    fn every_name_builds_where_it_should() {
        for (name, _) in SAMPLERS {
            let vp = by_name(name, &sd(), 10, None);
            assert_eq!(vp.is_ok(), *name != "flow-euler", "{name} on VP");
            let fl = by_name(name, &NoisePath::flow(), 10, None);
            assert_eq!(fl.is_ok(), !name.ends_with("karras"), "{name} on flow");
            if let Ok(s) = fl {
                assert_eq!(s.schedule.steps(), 10);
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = by_name("heun", &sd(), 10, None).unwrap_err().to_string();
        assert!(e.contains("heun") && e.contains("dpmpp-2m"), "{e}");
        assert!(matches!(
            by_name("ddim", &sd(), 0, None),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            by_name("ddim", &sd(), 10, Some(-0.5)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            by_name("ddim", &sd(), 10, Some(f64::NAN)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            by_name("euler", &sd(), 10, Some(0.5)),
            Err(Error::InvalidArgument(_))
        ));
        let ddim = by_name("ddim", &sd(), 10, Some(1.0)).unwrap();
        assert!(ddim.solver.is_stochastic());
        let flow = by_name("flow-euler", &NoisePath::flow(), 10, Some(0.5)).unwrap();
        assert!(flow.solver.is_stochastic());
    }
}
