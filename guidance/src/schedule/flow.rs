//! Rectified-flow schedules, exactly as diffusers' `FlowMatchEulerDiscreteScheduler` picks them.
//!
//! On the flow path `x_σ = (1 − σ)·x0 + σ·ε` a point is `(timestep = σ·T, α = 1 − σ, σ)`.
//! Sigmas are shifted towards the noise end, `σ' = s·σ/(1 + (s − 1)·σ)` (Esser et al. 2024,
//! "Scaling Rectified Flow Transformers", eq. 23, SD3 uses `s = 3`), or with the resolution
//! dependent "dynamic" shift `σ' = e^μ/(e^μ + (1/σ − 1))` (FLUX; `μ` from the image size).
//!
//! diffusers' arithmetic is reproduced: without explicit sigmas the grid is
//! `linspace(σ_max·T, σ_min·T, N)/T` in float64 where `σ_min` is the *already shifted*
//! `1/T` (so a static shift is applied twice at the low end, as diffusers does); explicit sigmas
//! are cast to float32 and shifted in float32. Timesteps are `σ·T` in float32.

use crate::path::StepPoint;
use crate::schedule::spacing::np_linspace;
use crate::schedule::Schedule;
use crate::{Error, Result};

/// diffusers' `time_shift_type` for dynamic shifting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeShift {
    /// `e^μ/(e^μ + (1/σ − 1))` (FLUX).
    Exponential,
    /// `μ/(μ + (1/σ − 1))`.
    Linear,
}

/// Options of diffusers' `FlowMatchEulerDiscreteScheduler` that shape its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowOptions {
    /// `num_train_timesteps` (`T`; the model is fed `σ·T`).
    pub num_train_timesteps: usize,
    /// `shift` (static shift; ignored when `dynamic` is set).
    pub shift: f64,
    /// `use_dynamic_shifting` with its `time_shift_type` and the call's `mu`.
    pub dynamic: Option<(TimeShift, f64)>,
    /// `shift_terminal`: stretch the shifted sigmas so the last one equals this value.
    pub shift_terminal: Option<f64>,
}

impl FlowOptions {
    /// A static shift over `T = 1000` (1.0: the plain rectified-flow grid).
    pub fn with_shift(shift: f64) -> Self {
        FlowOptions {
            num_train_timesteps: 1000,
            shift,
            dynamic: None,
            shift_terminal: None,
        }
    }
}

/// Rounds to float32 when emulating float32 arithmetic.
fn rnd(x: f64, f32_math: bool) -> f64 {
    if f32_math {
        x as f32 as f64
    } else {
        x
    }
}

/// The flow schedule for `steps` steps, or for the explicit `sigmas` (one per step, without the
/// final 0, which is appended).
pub fn flow(steps: usize, opts: &FlowOptions, explicit_sigmas: Option<&[f64]>) -> Result<Schedule> {
    let t_train = opts.num_train_timesteps as f64;
    if opts.num_train_timesteps == 0 {
        return Err(Error::InvalidArgument(
            "num_train_timesteps must be ≥ 1".into(),
        ));
    }
    // Shifted end points of the train grid (float32 torch arithmetic in __init__).
    let static_shift = |s: f64, f32_math: bool| -> f64 {
        let k = opts.shift;
        if f32_math {
            let (k, km1, s) = (k as f32, (k - 1.0) as f32, s as f32);
            f64::from(k * s / (1.0 + km1 * s))
        } else {
            k * s / (1.0 + (k - 1.0) * s)
        }
    };
    let (mut sig, f32_math): (Vec<f64>, bool) = match explicit_sigmas {
        Some(list) => {
            if list.is_empty() {
                return Err(Error::InvalidArgument("explicit sigmas are empty".into()));
            }
            (list.iter().map(|&s| f64::from(s as f32)).collect(), true)
        }
        None => {
            if steps == 0 {
                return Err(Error::InvalidArgument(
                    "the number of inference steps must be at least 1".into(),
                ));
            }
            let t32 = opts.num_train_timesteps as f32;
            // the train grid runs from T/T = 1 down to 1/T (float32)
            let (mut smax, mut smin) = (1.0, f64::from(1.0f32 / t32));
            if opts.dynamic.is_none() {
                smax = static_shift(smax, true);
                smin = static_shift(smin, true);
            }
            let ts = np_linspace(smax * t_train, smin * t_train, steps);
            (ts.into_iter().map(|t| t / t_train).collect(), false)
        }
    };
    match opts.dynamic {
        Some((kind, mu)) => {
            let m = match kind {
                TimeShift::Exponential => rnd(mu.exp(), f32_math),
                TimeShift::Linear => rnd(mu, f32_math),
            };
            for s in sig.iter_mut() {
                let inv = rnd(rnd(1.0 / *s, f32_math) - 1.0, f32_math);
                *s = rnd(m / rnd(m + inv, f32_math), f32_math);
            }
        }
        None => {
            for s in sig.iter_mut() {
                *s = static_shift(*s, f32_math);
            }
        }
    }
    if let Some(term) = opts.shift_terminal.filter(|&t| t != 0.0) {
        let last = *sig.last().expect("non-empty");
        let scale = rnd(rnd(1.0 - last, f32_math) / (1.0 - term), f32_math);
        for s in sig.iter_mut() {
            *s = rnd(
                1.0 - rnd(rnd(1.0 - *s, f32_math) / scale, f32_math),
                f32_math,
            );
        }
    }
    let t32 = opts.num_train_timesteps as f32;
    let mut points: Vec<StepPoint> = sig
        .iter()
        .map(|&s| {
            let s = s as f32;
            StepPoint {
                timestep: f64::from(s * t32),
                alpha: 1.0 - f64::from(s),
                sigma: f64::from(s),
            }
        })
        .collect();
    points.push(StepPoint {
        timestep: 0.0,
        alpha: 1.0,
        sigma: 0.0,
    });
    Ok(Schedule::new(points, 1.0))
}

/// FLUX's resolution-dependent shift `μ` (diffusers' `calculate_shift`): linear in the number of
/// image tokens, `base_shift` at `base_seq_len` and `max_shift` at `max_seq_len`.
pub fn dynamic_shift_mu(
    image_seq_len: usize,
    base_seq_len: usize,
    max_seq_len: usize,
    base_shift: f64,
    max_shift: f64,
) -> f64 {
    let m = (max_shift - base_shift) / (max_seq_len as f64 - base_seq_len as f64);
    let b = base_shift - m * base_seq_len as f64;
    image_seq_len as f64 * m + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshifted_grid_is_linear_and_ends_clean() {
        let s = flow(4, &FlowOptions::with_shift(1.0), None).unwrap();
        assert_eq!(s.points.len(), 5);
        assert_eq!(s.points[0].sigma, 1.0);
        assert_eq!(s.points[0].alpha, 0.0);
        assert_eq!(s.points[0].timestep, 1000.0);
        assert_eq!(s.points[4].sigma, 0.0);
        for p in &s.points {
            assert!((p.alpha + p.sigma - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn flux_schnell_explicit_sigmas() {
        let s = flow(
            4,
            &FlowOptions::with_shift(1.0),
            Some(&[1.0, 0.75, 0.5, 0.25]),
        )
        .unwrap();
        let ts: Vec<f64> = s.points.iter().map(|p| p.timestep).collect();
        assert_eq!(ts, vec![1000.0, 750.0, 500.0, 250.0, 0.0]);
    }
}
