//! Inference timestep spacing, with numpy's exact arithmetic.
//!
//! diffusers picks inference timesteps with numpy (`np.arange`, `np.linspace`, `.round()`,
//! `.astype(np.int64)`); a checkpoint only works with the timesteps it expects, so these helpers
//! reproduce numpy's float64 arithmetic operation by operation:
//!
//! * `np.arange(start, stop, step)` with a float step has `ceil((stop − start)/step)` elements
//!   `start + i·δ` where `δ = (start + step) − start` (numpy's `fill` recomputes the step from
//!   the first two elements);
//! * `np.linspace(start, stop, n)` is `start + i·((stop − start)/(n − 1))` with the last element
//!   set to `stop` exactly;
//! * `.round()` rounds half to even; `.astype(np.int64)` truncates toward zero.
//!
//! The spacings themselves are Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps
//! are Flawed"), Table 2.

use crate::schedule::TimestepSpacing;
use crate::{Error, Result};

/// `np.arange(start, stop, step)` in float64 (numpy's element count and fill rule).
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let tmp_len = (stop - start) / step;
    if !tmp_len.is_finite() || tmp_len <= 0.0 {
        return Vec::new();
    }
    let len = tmp_len.ceil() as usize;
    if len == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(len);
    out.push(start);
    if len > 1 {
        let second = start + step;
        let delta = second - start;
        out.push(second);
        for i in 2..len {
            out.push(start + i as f64 * delta);
        }
    }
    out
}

/// `np.linspace(start, stop, n)` in float64 (endpoint included).
pub fn np_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut out: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
            out[n - 1] = stop;
            out
        }
    }
}

/// `np.interp(x, arange(fp.len()), fp)`: piecewise-linear interpolation over integer abscissae,
/// clamped to the end values, exact at the knots.
pub fn np_interp_index(x: f64, fp: &[f64]) -> f64 {
    let n = fp.len();
    if n == 0 {
        return f64::NAN;
    }
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0];
    }
    let last = (n - 1) as f64;
    if x >= last {
        return fp[n - 1];
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / 1.0;
    let r = slope * (x - j as f64) + fp[j];
    if r.is_nan() {
        let r2 = slope * (x - (j + 1) as f64) + fp[j + 1];
        if r2.is_nan() && fp[j] == fp[j + 1] {
            return fp[j];
        }
        return r2;
    }
    r
}

/// The raw float64 timesteps of a spacing, before rounding and casting (noisiest first), as
/// DDIM, DDPM, Euler and Euler-ancestral compute them for `steps` inference steps over
/// `num_train_timesteps` train steps.
///
/// * leading: `arange(0, N)·(T // N)`, reversed, then `+ steps_offset`
/// * trailing: `round(arange(T, 0, −T/N)) − 1`
/// * linspace: `linspace(0, T − 1, N)`, reversed (not rounded here)
fn raw_timesteps(spacing: TimestepSpacing, train: usize, steps: usize) -> Result<Vec<f64>> {
    check_steps(steps, train)?;
    Ok(match spacing {
        TimestepSpacing::Leading => {
            let ratio = (train / steps) as f64;
            (0..steps).rev().map(|i| i as f64 * ratio).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = train as f64 / steps as f64;
            np_arange(train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect()
        }
        TimestepSpacing::Linspace => {
            let mut v = np_linspace(0.0, (train - 1) as f64, steps);
            v.reverse();
            v
        }
    })
}

/// Checks `1 ≤ steps ≤ T` (diffusers refuses more inference steps than train steps).
pub fn check_steps(steps: usize, train: usize) -> Result<()> {
    if steps == 0 {
        return Err(Error::InvalidArgument(
            "the number of inference steps must be at least 1".into(),
        ));
    }
    if steps > train {
        return Err(Error::InvalidArgument(format!(
            "{steps} inference steps exceed the model's {train} train timesteps"
        )));
    }
    Ok(())
}

/// Integer timesteps of DDIM and DDPM (`.round().astype(np.int64)`; `steps_offset` is added for
/// leading spacing only).
pub fn integer_timesteps(
    spacing: TimestepSpacing,
    train: usize,
    steps: usize,
    steps_offset: i64,
) -> Result<Vec<i64>> {
    let raw = raw_timesteps(spacing, train, steps)?;
    Ok(raw
        .into_iter()
        .map(|t| {
            let t = t.round_ties_even() as i64;
            if spacing == TimestepSpacing::Leading {
                t + steps_offset
            } else {
                t
            }
        })
        .collect())
}

/// Float32 timesteps of Euler and Euler-ancestral: leading and trailing are rounded integers
/// (as float32), linspace keeps the fractional `linspace(0, T − 1, N)` values cast to float32.
pub fn euler_timesteps(
    spacing: TimestepSpacing,
    train: usize,
    steps: usize,
    steps_offset: i64,
) -> Result<Vec<f32>> {
    let raw = raw_timesteps(spacing, train, steps)?;
    Ok(raw
        .into_iter()
        .map(|t| match spacing {
            TimestepSpacing::Leading => t.round_ties_even() as f32 + steps_offset as f32,
            TimestepSpacing::Trailing => t as f32,
            TimestepSpacing::Linspace => t as f32,
        })
        .collect())
}

/// Integer timesteps of `DPMSolverMultistepScheduler` (which spaces `N + 1` points and drops the
/// last for linspace and leading): `last` is `T − clipped_idx` (`lambda_min_clipped`).
///
/// * linspace: `round(linspace(0, last − 1, N + 1))`, reversed, last dropped
/// * leading: `arange(0, N + 1)·(last // (N + 1))`, reversed, last dropped, `+ steps_offset`
/// * trailing: `round(arange(last, 0, −T/N)) − 1`
pub fn dpm_timesteps(
    spacing: TimestepSpacing,
    train: usize,
    last: usize,
    steps: usize,
    steps_offset: i64,
) -> Result<Vec<i64>> {
    check_steps(steps, train)?;
    Ok(match spacing {
        TimestepSpacing::Linspace => {
            let v = np_linspace(0.0, last as f64 - 1.0, steps + 1);
            v.iter()
                .rev()
                .take(steps)
                .map(|t| t.round_ties_even() as i64)
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = (last / (steps + 1)) as i64;
            (1..=steps as i64)
                .rev()
                .map(|i| i * ratio + steps_offset)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = train as f64 / steps as f64;
            np_arange(last as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
    })
}

/// Parses diffusers' `timestep_spacing` string.
pub fn parse_spacing(s: &str) -> Result<TimestepSpacing> {
    match s {
        "leading" => Ok(TimestepSpacing::Leading),
        "trailing" => Ok(TimestepSpacing::Trailing),
        "linspace" => Ok(TimestepSpacing::Linspace),
        other => Err(Error::Unsupported(format!(
            "timestep_spacing = \"{other}\" (supported: \"leading\", \"trailing\", \"linspace\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers_examples() {
        // DDIM leading, SD 1.5 (steps_offset 1)
        let t = integer_timesteps(TimestepSpacing::Leading, 1000, 20, 1).unwrap();
        assert_eq!(t[0], 951);
        assert_eq!(*t.last().unwrap(), 1);
        // trailing, 12 steps (sd21 zero-SNR fixture)
        let t = integer_timesteps(TimestepSpacing::Trailing, 1000, 12, 1).unwrap();
        assert_eq!(
            t,
            vec![999, 916, 832, 749, 666, 582, 499, 416, 332, 249, 166, 82]
        );
        // DPM linspace 20 steps
        let t = dpm_timesteps(TimestepSpacing::Linspace, 1000, 1000, 20, 1).unwrap();
        assert_eq!(&t[..3], &[999, 949, 899]);
        assert_eq!(t[10], 500);
        assert_eq!(*t.last().unwrap(), 50);
        // Euler trailing (SD-Turbo)
        let t = euler_timesteps(TimestepSpacing::Trailing, 1000, 4, 0).unwrap();
        assert_eq!(t, vec![999.0, 749.0, 499.0, 249.0]);
    }

    #[test]
    fn interp_is_exact_at_knots_and_linear_between() {
        let fp = [1.0, 3.0, 7.0];
        assert_eq!(np_interp_index(1.0, &fp), 3.0);
        assert_eq!(np_interp_index(1.5, &fp), 5.0);
        assert_eq!(np_interp_index(-1.0, &fp), 1.0);
        assert_eq!(np_interp_index(9.0, &fp), 7.0);
    }
}
