//! Limits on what a run may ask for, checked before anything large is allocated or a run
//! that could not finish is started. Each error names the limit and the way past it.

use anyhow::Result;

use crate::error::input_error;

/// Most solver steps (diffusers' schedules have 1,000 training steps).
pub const MAX_STEPS: usize = 10_000;
/// Most extra visits per step of `--time-travel`.
pub const MAX_TIME_TRAVEL: usize = 100;
/// Most rounds of a noise search (random search's round r draws 2^r noises).
pub const MAX_ROUNDS: usize = 20;
/// Longest side of a generated image, in pixels.
pub const MAX_SIDE: usize = 16_384;
/// Most pixels of a generated image (8192²).
pub const MAX_PIXELS: usize = 1 << 26;
/// Most values the particle state of one batch may hold (2^31 f32 values, 8 GiB); raise it
/// with `STEERDIFF_MAX_STATE_VALUES`.
pub const MAX_STATE_VALUES: u64 = 1 << 31;

/// Refuses step and visit counts whose cost explodes.
pub fn check_counts(steps: usize, time_travel: usize) -> Result<()> {
    if steps > MAX_STEPS {
        input_error!("--steps {steps} is more than {MAX_STEPS}; use at most {MAX_STEPS} steps");
    }
    if time_travel > MAX_TIME_TRAVEL {
        input_error!(
            "--time-travel {time_travel} would run every step {} times; use at most \
             {MAX_TIME_TRAVEL}",
            time_travel + 1
        );
    }
    Ok(())
}

/// Refuses a noise search whose last round would draw more noises than can be sampled.
pub fn check_rounds(rounds: usize) -> Result<()> {
    if let Some(r) = Some(rounds).filter(|&r| r > MAX_ROUNDS) {
        input_error!(
            "--rounds {r}: random search's last round alone would draw 2^{} noises per sample; \
             use at most {MAX_ROUNDS} rounds",
            r - 1
        );
    }
    Ok(())
}

/// Refuses an image size no model can sample in memory; `remedy` says where the size came
/// from and how to change it (e.g. "give a smaller --width / --height").
pub fn check_image_size(height: usize, width: usize, remedy: &str) -> Result<()> {
    if height > MAX_SIDE || width > MAX_SIDE || height.saturating_mul(width) > MAX_PIXELS {
        input_error!(
            "an image of {width}×{height} pixels is larger than steerdiff samples (at most \
             {MAX_SIDE} pixels a side and {MAX_PIXELS} pixels); {remedy}"
        );
    }
    Ok(())
}

/// The checks of a run's batch on `model`: the noise search's `rounds` and the state one
/// batch holds — every one of the `groups` of a batch-stable model, a block of
/// `batch_groups` text groups — of `particles` particles (a search's largest round draws
/// 2^(R−1) trajectories per group).
pub fn check_run(
    model: &steerdiff_pipelines::model::Model,
    batch_groups: usize,
    groups: usize,
    particles: usize,
    rounds: Option<usize>,
) -> Result<()> {
    if let Some(r) = rounds {
        check_rounds(r)?;
    }
    let batch = if model.batch_stable() {
        groups
    } else {
        batch_groups.min(groups)
    };
    let per_group = rounds.map_or(particles, |r| 1usize << r.saturating_sub(1).min(60));
    let per_sample = model.denoiser().sample_shape().iter().product::<usize>();
    check_state(batch, per_group, per_sample)
}

/// The state limit: [`MAX_STATE_VALUES`], or `STEERDIFF_MAX_STATE_VALUES` when set.
fn state_limit() -> u64 {
    std::env::var("STEERDIFF_MAX_STATE_VALUES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(MAX_STATE_VALUES)
}

/// Refuses a batch of `groups` groups × `particles` particles of `per_sample` values each
/// that would not fit in memory.
pub fn check_state(groups: usize, particles: usize, per_sample: usize) -> Result<()> {
    let limit = state_limit();
    let values = (groups as u64)
        .checked_mul(particles as u64)
        .and_then(|r| r.checked_mul(per_sample as u64));
    match values {
        Some(v) if v <= limit => Ok(()),
        _ => input_error!(
            "{groups} samples × {particles} particles × {per_sample} values per sample are \
             more than the {limit} values one batch may hold ({} GiB of f32); draw fewer \
             samples per run and split the rest with --shard I/N (or raise \
             STEERDIFF_MAX_STATE_VALUES)",
            (limit * 4) >> 30
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_what_cannot_run_and_pass_what_can() {
        assert!(check_counts(50, 0).is_ok() && check_rounds(3).is_ok());
        assert!(check_counts(100_000_000, 0).is_err());
        assert!(check_counts(50, 100_000_000).is_err());
        assert!(check_rounds(40).is_err());
        assert!(check_image_size(1024, 1024, "").is_ok());
        let e = check_image_size(65_536, 65_536, "give a smaller --width").unwrap_err();
        assert!(e.to_string().ends_with("; give a smaller --width"), "{e}");
        assert!(check_image_size(16_384, 16_384, "").is_err());
        assert!(check_state(16, 8, 4 * 128 * 128).is_ok());
        assert!(check_state(1_000_000_000, 1, 3072).is_err());
        assert!(check_state(usize::MAX, usize::MAX, 1).is_err());
    }
}
