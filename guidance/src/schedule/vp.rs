//! Schedules on a VP path, exactly as diffusers' DDIM, DDPM, Euler (ancestral) and
//! DPM-Solver multistep schedulers pick them.
//!
//! Every schedule is expressed as [`StepPoint`]s `(timestep, α, σ)` on `x_t = α·x0 + σ·ε`:
//!
//! * DDIM / DDPM: integer timesteps, `α = √ᾱ_t`, `σ = √(1 − ᾱ_t)`; the final point is DDIM's
//!   `final_alpha_cumprod` (`ᾱ_0`, or 1 with `set_alpha_to_one`) or DDPM's `ᾱ = 1`.
//! * Euler / Euler ancestral / DPM-Solver: diffusers works with variance-exploding sigmas
//!   `s = √((1 − ᾱ)/ᾱ)` (float32); a VE sigma maps to `α = 1/√(1 + s²)`, `σ = s·α`, and the
//!   diffusers state `x_ve` to the engine's `x = α·x_ve` (= diffusers' `scale_model_input`).
//!   The final point is `s = 0` (`α = 1`, `σ = 0`) or `σ_min` (`final_sigmas_type`).

use crate::path::{StepPoint, VpPath};
use crate::schedule::karras::{karras_sigmas, sigma_to_t};
use crate::schedule::spacing::{
    check_steps, dpm_timesteps, euler_timesteps, integer_timesteps, np_interp_index,
};
use crate::schedule::{Schedule, TimestepSpacing};
use crate::{Error, Result};

/// The point for a VE sigma `s` (float32 in diffusers): `α = 1/√(1 + s²)`, `σ = s·α`.
pub fn ve_point(timestep: f64, sigma_ve: f64) -> StepPoint {
    let alpha = 1.0 / (1.0 + sigma_ve * sigma_ve).sqrt();
    StepPoint {
        timestep,
        alpha,
        sigma: sigma_ve * alpha,
    }
}

/// The clean end point `α = 1`, `σ = 0`.
pub fn clean_point() -> StepPoint {
    StepPoint {
        timestep: 0.0,
        alpha: 1.0,
        sigma: 0.0,
    }
}

/// `ᾱ` as float32, with diffusers' zero-terminal-SNR patch: Euler, Euler ancestral and
/// DPM-Solver set a final `ᾱ = 0` to `2⁻²⁴` ("close to 0 without being 0 so first sigma is not
/// inf"); a zero is only produced by `rescale_betas_zero_snr`, which is when diffusers patches.
fn alphas_cumprod_f32_patched(vp: &VpPath) -> Vec<f32> {
    let mut ab: Vec<f32> = vp.alphas_cumprod.iter().map(|&a| a as f32).collect();
    if let Some(last) = ab.last_mut() {
        if *last == 0.0 {
            *last = 2f32.powi(-24);
        }
    }
    ab
}

/// diffusers' VE sigma table `((1 − ᾱ)/ᾱ)^0.5` in float32, indexed by train timestep.
pub fn ve_sigma_table(vp: &VpPath) -> Vec<f32> {
    alphas_cumprod_f32_patched(vp)
        .into_iter()
        .map(|ab| ((1.0 - ab) / ab).sqrt())
        .collect()
}

fn log_table(table: &[f32]) -> Vec<f32> {
    table.iter().map(|s| s.ln()).collect()
}

fn vp_point_checked(vp: &VpPath, t: i64) -> Result<StepPoint> {
    if t < 0 || t as usize >= vp.alphas_cumprod.len() {
        return Err(Error::InvalidArgument(format!(
            "timestep {t} is outside the model's train timesteps 0..{} (check steps_offset / \
             timestep_spacing)",
            vp.alphas_cumprod.len()
        )));
    }
    Ok(vp.point(t as usize))
}

/// DDIM (Song et al. 2021), `DDIMScheduler.set_timesteps` + `step`.
///
/// Model points are the spaced integer timesteps; step `i` lands on `t_i − T // N` (diffusers'
/// `prev_timestep`, whatever the spacing), or on the final point when that is negative:
/// `ᾱ_0` (`set_alpha_to_one = false`, Stable Diffusion) or `ᾱ = 1`.
pub fn ddim(
    vp: &VpPath,
    steps: usize,
    spacing: TimestepSpacing,
    steps_offset: i64,
    set_alpha_to_one: bool,
) -> Result<Schedule> {
    let train = vp.alphas_cumprod.len();
    let ts = integer_timesteps(spacing, train, steps, steps_offset)?;
    let final_point = if set_alpha_to_one {
        clean_point()
    } else {
        vp.point(0)
    };
    let ratio = (train / steps) as i64;
    let mut points = Vec::with_capacity(ts.len() + 1);
    let mut targets = Vec::with_capacity(ts.len());
    for &t in &ts {
        points.push(vp_point_checked(vp, t)?);
        let prev = t - ratio;
        targets.push(if prev >= 0 {
            vp_point_checked(vp, prev)?
        } else {
            final_point
        });
    }
    points.push(*targets.last().expect("at least one step"));
    let differs = targets.iter().zip(&points[1..]).any(|(a, b)| a != b);
    Ok(Schedule {
        points,
        init_noise_sigma: 1.0,
        targets: differs.then_some(targets),
    })
}

/// DDPM (Ho et al. 2020), `DDPMScheduler.set_timesteps`: the spaced integer timesteps, each step
/// landing on the next one, the last on `ᾱ = 1` (diffusers' `self.one`).
pub fn ddpm(
    vp: &VpPath,
    steps: usize,
    spacing: TimestepSpacing,
    steps_offset: i64,
) -> Result<Schedule> {
    let train = vp.alphas_cumprod.len();
    let ts = integer_timesteps(spacing, train, steps, steps_offset)?;
    let mut points = ts
        .iter()
        .map(|&t| vp_point_checked(vp, t))
        .collect::<Result<Vec<_>>>()?;
    points.push(clean_point());
    Ok(Schedule::new(points, 1.0))
}

/// Options of diffusers' `EulerDiscreteScheduler` that shape its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct EulerOptions {
    /// `timestep_spacing`.
    pub spacing: TimestepSpacing,
    /// `steps_offset` (leading spacing only).
    pub steps_offset: i64,
    /// `use_karras_sigmas`: Karras et al. 2022 eq. 5 sigmas between the interpolated ends.
    pub karras: bool,
    /// `sigma_min` override for Karras sigmas.
    pub sigma_min: Option<f64>,
    /// `sigma_max` override for Karras sigmas.
    pub sigma_max: Option<f64>,
    /// `final_sigmas_type = "sigma_min"` (end at `σ(t=0)` instead of 0).
    pub final_sigma_min: bool,
    /// `timestep_type = "continuous"` with v-prediction: the model is fed `0.25·ln σ`.
    pub continuous_timesteps: bool,
}

impl Default for EulerOptions {
    fn default() -> Self {
        EulerOptions {
            spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            karras: false,
            sigma_min: None,
            sigma_max: None,
            final_sigma_min: false,
            continuous_timesteps: false,
        }
    }
}

/// diffusers' Euler init noise in VE units: `max σ` for linspace/trailing spacing,
/// `√(max σ² + 1)` for leading (float32 arithmetic).
fn euler_init_noise_ve(sigmas: &[f32], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    match spacing {
        TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
        _ => f64::from(max),
    }
}

fn ve_schedule(timesteps: &[f64], sigmas: &[f32], spacing: TimestepSpacing) -> Result<Schedule> {
    if sigmas.len() != timesteps.len() + 1 {
        return Err(Error::InvalidArgument(format!(
            "{} sigmas for {} timesteps (need one more sigma than timesteps)",
            sigmas.len(),
            timesteps.len()
        )));
    }
    let mut points: Vec<StepPoint> = timesteps
        .iter()
        .zip(sigmas)
        .map(|(&t, &s)| ve_point(t, f64::from(s)))
        .collect();
    let last = f64::from(*sigmas.last().expect("non-empty"));
    points.push(if last == 0.0 {
        clean_point()
    } else {
        ve_point(0.0, last)
    });
    // diffusers' init_noise_sigma is in VE units; the engine's state is x = α·x_ve.
    let init = euler_init_noise_ve(sigmas, spacing) * points[0].alpha;
    Ok(Schedule::new(points, init))
}

/// `EulerDiscreteScheduler.set_timesteps` (Karras et al. 2022's Euler sampler in diffusers'
/// variance-exploding form), and also `EulerAncestralDiscreteScheduler`'s with default options.
///
/// Sigmas are `np.interp` of the float32 VE table at the (possibly fractional) timesteps; with
/// Karras sigmas the timesteps become fractional, `_sigma_to_t` of each Karras sigma. With
/// explicit `sigmas` (the list includes the final sigma) the timesteps are `_sigma_to_t` of all but
/// the last.
pub fn euler(
    vp: &VpPath,
    steps: usize,
    opts: &EulerOptions,
    explicit_sigmas: Option<&[f64]>,
) -> Result<Schedule> {
    let train = vp.alphas_cumprod.len();
    let table = ve_sigma_table(vp);
    let logs = log_table(&table);
    let (timesteps, sigmas): (Vec<f32>, Vec<f32>) = match explicit_sigmas {
        Some(list) => {
            if list.len() < 2 {
                return Err(Error::InvalidArgument(
                    "explicit sigmas need at least two values (the last is where sampling ends)"
                        .into(),
                ));
            }
            let s32: Vec<f32> = list.iter().map(|&s| s as f32).collect();
            let ts = s32[..s32.len() - 1]
                .iter()
                .map(|&s| sigma_to_t(f64::from(s), &logs) as f32)
                .collect();
            (ts, s32)
        }
        None => {
            let ts = euler_timesteps(opts.spacing, train, steps, opts.steps_offset)?;
            let fp: Vec<f64> = table.iter().map(|&s| f64::from(s)).collect();
            let mut sig: Vec<f64> = ts
                .iter()
                .map(|&t| np_interp_index(f64::from(t), &fp))
                .collect();
            let mut ts = ts;
            if opts.karras {
                let smin = opts.sigma_min.unwrap_or(*sig.last().expect("steps ≥ 1"));
                let smax = opts.sigma_max.unwrap_or(sig[0]);
                sig = karras_sigmas(smin, smax, steps);
                ts = sig.iter().map(|&s| sigma_to_t(s, &logs) as f32).collect();
            }
            let last = if opts.final_sigma_min { table[0] } else { 0.0 };
            let mut s32: Vec<f32> = sig.iter().map(|&s| s as f32).collect();
            s32.push(last);
            (ts, s32)
        }
    };
    let timesteps: Vec<f64> = if opts.continuous_timesteps {
        sigmas[..sigmas.len() - 1]
            .iter()
            .map(|s| f64::from(0.25 * s.ln()))
            .collect()
    } else {
        timesteps.iter().map(|&t| f64::from(t)).collect()
    };
    ve_schedule(&timesteps, &sigmas, opts.spacing)
}

/// Options of diffusers' `DPMSolverMultistepScheduler` that shape its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct DpmOptions {
    /// `timestep_spacing`.
    pub spacing: TimestepSpacing,
    /// `steps_offset` (leading spacing only).
    pub steps_offset: i64,
    /// `use_karras_sigmas`: Karras et al. 2022 eq. 5 sigmas between `σ(0)` and `σ(T − 1)`.
    pub karras: bool,
    /// `final_sigmas_type = "sigma_min"` (end at `σ(t=0)` instead of 0).
    pub final_sigma_min: bool,
    /// `lambda_min_clipped`: train timesteps with `λ` below it are never visited.
    pub lambda_min_clipped: f64,
    /// Round Karras timesteps to integers (diffusers does unless `squaredcos_cap_v2`).
    pub round_karras_timesteps: bool,
}

impl Default for DpmOptions {
    fn default() -> Self {
        DpmOptions {
            spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            karras: false,
            final_sigma_min: false,
            lambda_min_clipped: f64::NEG_INFINITY,
            round_karras_timesteps: true,
        }
    }
}

/// `DPMSolverMultistepScheduler.set_timesteps` (Lu et al. 2022): integer timesteps (Karras: the
/// rounded `_sigma_to_t` of each Karras sigma, while the step itself uses the Karras sigma).
pub fn dpm(vp: &VpPath, steps: usize, opts: &DpmOptions) -> Result<Schedule> {
    let train = vp.alphas_cumprod.len();
    check_steps(steps, train)?;
    let ab = alphas_cumprod_f32_patched(vp);
    // clipped_idx = searchsorted(flip(λ_t), lambda_min_clipped): how many λ lie below the clip.
    let clipped = ab
        .iter()
        .map(|&a| {
            let (al, si) = (a.sqrt(), (1.0 - a).sqrt());
            f64::from(al.ln() - si.ln())
        })
        .filter(|&l| l < opts.lambda_min_clipped)
        .count();
    let last_timestep = train - clipped;
    if last_timestep == 0 {
        return Err(Error::InvalidArgument(
            "lambda_min_clipped removes every train timestep".into(),
        ));
    }
    let table = ve_sigma_table(vp);
    let logs = log_table(&table);
    let (ts, sig): (Vec<i64>, Vec<f64>) = if opts.karras {
        let sig = karras_sigmas(f64::from(table[0]), f64::from(table[train - 1]), steps);
        let ts = sig
            .iter()
            .map(|&s| {
                let t = sigma_to_t(s, &logs);
                if opts.round_karras_timesteps {
                    t.round_ties_even() as i64
                } else {
                    t as i64
                }
            })
            .collect();
        (ts, sig)
    } else {
        let ts = dpm_timesteps(opts.spacing, train, last_timestep, steps, opts.steps_offset)?;
        let fp: Vec<f64> = table.iter().map(|&s| f64::from(s)).collect();
        let sig = ts.iter().map(|&t| np_interp_index(t as f64, &fp)).collect();
        (ts, sig)
    };
    let last = if opts.final_sigma_min { table[0] } else { 0.0 };
    let mut s32: Vec<f32> = sig.iter().map(|&s| s as f32).collect();
    s32.push(last);
    let timesteps: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
    let mut schedule = ve_schedule(&timesteps, &s32, opts.spacing)?;
    schedule.init_noise_sigma = 1.0;
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::BetaSchedule;

    fn sd() -> VpPath {
        VpPath::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000, false)
    }

    #[test]
    fn ddim_trailing_lands_one_step_off_like_diffusers() {
        let zsnr = VpPath::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000, true);
        let s = ddim(&zsnr, 12, TimestepSpacing::Trailing, 1, false).unwrap();
        assert_eq!(s.points[2].timestep, 832.0);
        assert_eq!(s.target(1).timestep, 833.0);
        assert_eq!(s.target(0), s.points[1]);
        assert_eq!(s.points[0].alpha, 0.0);
    }

    #[test]
    fn euler_leading_init_noise_is_one_in_vp_units() {
        let s = euler(
            &sd(),
            30,
            &EulerOptions {
                spacing: TimestepSpacing::Leading,
                steps_offset: 1,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!((s.init_noise_sigma - 1.0).abs() < 1e-6);
        assert_eq!(s.points.last().unwrap().sigma, 0.0);
    }
}
