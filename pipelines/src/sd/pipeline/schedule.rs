//! Scheduler selection by name over a model's own scheduler config, and img2img's shortened
//! schedule.

use candle_core::Tensor;
use steerdiff_guidance::{Schedule, SchedulerClass, SchedulerConfig, StepPoint};

use super::SCHEDULER_NAMES;
use crate::{Error, Result};

/// Resolves a scheduler name against a model's own scheduler config.
pub fn scheduler_for(
    own: &SchedulerConfig,
    name: Option<&str>,
) -> Result<(SchedulerConfig, String)> {
    let with = |class: SchedulerClass, karras: bool| {
        let mut c = own.with_class(class);
        if karras {
            c.use_karras_sigmas = Some(true);
        }
        c
    };
    let name = name.unwrap_or("default");
    let cfg = match name {
        "default" => match own.class() {
            Ok(_) => own.clone(),
            Err(_) => {
                let c = with(SchedulerClass::DpmSolverMultistep, false);
                return Ok((
                    c,
                    format!(
                        "DPMSolverMultistepScheduler (the model's {} is not reproduced)",
                        own.class_name.as_deref().unwrap_or("scheduler")
                    ),
                ));
            }
        },
        "ddim" => with(SchedulerClass::Ddim, false),
        "ddpm" => with(SchedulerClass::Ddpm, false),
        "euler" => with(SchedulerClass::EulerDiscrete, false),
        "euler-karras" => with(SchedulerClass::EulerDiscrete, true),
        "euler-a" => with(SchedulerClass::EulerAncestralDiscrete, false),
        "dpmpp-2m" => with(SchedulerClass::DpmSolverMultistep, false),
        "dpmpp-2m-karras" => with(SchedulerClass::DpmSolverMultistep, true),
        other if other.ends_with(".json") => {
            let text = std::fs::read_to_string(other)
                .map_err(|e| Error::Spec(format!("cannot read scheduler config `{other}`: {e}")))?;
            SchedulerConfig::from_json_str(&text)
                .map_err(|e| Error::Spec(format!("scheduler config `{other}`: {e}")))?
        }
        other => match SchedulerClass::from_diffusers_name(other) {
            Ok(class) => with(class, false),
            Err(_) => {
                let names: Vec<&str> = SCHEDULER_NAMES.iter().map(|(n, _)| *n).collect();
                return Err(Error::Spec(format!(
                    "unknown scheduler `{other}` (valid: {}, a diffusers class name, or a \
                     scheduler_config.json path)",
                    names.join(", ")
                )));
            }
        },
    };
    let about = cfg.class_name.clone().unwrap_or_else(|| "scheduler".into());
    Ok((cfg, about))
}

/// diffusers' img2img start: with `strength` s, the last `⌊steps·s⌋` steps of `schedule` are
/// run. Returns the shortened schedule; start it from [`noised`] at its first point.
pub fn img2img_schedule(schedule: &Schedule, strength: f64) -> Result<Schedule> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::Spec(format!(
            "img2img strength must be in (0, 1] (got {strength})"
        )));
    }
    let steps = schedule.steps();
    let init = ((steps as f64 * strength) as usize).min(steps);
    if init == 0 {
        return Err(Error::Spec(format!(
            "strength {strength} with {steps} steps leaves no step to run"
        )));
    }
    let start = steps - init;
    Ok(Schedule {
        points: schedule.points[start..].to_vec(),
        init_noise_sigma: schedule.init_noise_sigma,
        targets: schedule.targets.as_ref().map(|t| t[start..].to_vec()),
    })
}

/// `α·x0 + σ·ε` at `at`: clean latents noised to a schedule point (engine coordinates).
pub fn noised(x0: &Tensor, noise: &Tensor, at: &StepPoint) -> Result<Tensor> {
    Ok((x0.affine(at.alpha, 0.0)? + noise.affine(at.sigma, 0.0)?)?)
}
