//! `steerdiff bench`: how fast a model and a strategy run on this machine, measured where
//! users run them — the model's forward at several batch sizes, text encoding, decoding to
//! images, and one whole steered run split into model, reward, decode and engine time — with
//! the peak resident memory.
//!
//! Every timing is the median of `repeats` calls after `warmup` unmeasured ones
//! (criterion-style: the first calls page weights in and fill allocator caches). A forward is
//! timed until its output is read back (a one-number reduction), so a GPU's queued work is
//! counted. Ratios against PyTorch on the same machine are the business of the scripts in
//! `bench/`; this measures steerdiff alone.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Tensor};
use serde::Serialize;
use steerdiff_pipelines::model::{Family, Model};

use super::{Job, Options};

/// What to measure and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Batch sizes (model rows per forward) to time.
    pub batches: Vec<usize>,
    /// Unmeasured calls (or whole runs) before each measurement.
    pub warmup: usize,
    /// Measured calls; their median is reported.
    pub repeats: usize,
    /// Whole runs of the strategy to time (0: none).
    pub runs: usize,
}

/// A repeated measurement, in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Seconds {
    /// The median.
    pub median: f64,
    /// The fastest.
    pub min: f64,
    /// The slowest.
    pub max: f64,
}

impl Seconds {
    /// The median, min and max of `samples` (at least one).
    fn of(mut samples: Vec<f64>) -> Seconds {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            0.5 * (samples[n / 2 - 1] + samples[n / 2])
        };
        Seconds {
            median,
            min: samples[0],
            max: samples[n - 1],
        }
    }
}

/// The forward at one batch size.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Forward {
    /// Model rows per call.
    pub batch: usize,
    /// Seconds per call.
    pub seconds: Seconds,
    /// Median milliseconds per row.
    pub ms_per_row: f64,
    /// Rows per second at the median.
    pub rows_per_s: f64,
}

/// One whole run of the job's strategy, split by where the time went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Run {
    /// The strategy (`none` for plain sampling).
    pub strategy: String,
    /// Samples kept.
    pub images: usize,
    /// Model rows evaluated.
    pub model_rows: u64,
    /// Wall seconds of the run (median over the runs).
    pub wall_s: f64,
    /// Samples per second.
    pub images_per_s: f64,
    /// Shares of the wall time: model forwards, reward calls, decodes, and the engine's own
    /// work (solver, resampling, bookkeeping), each in `[0, 1]`.
    pub model_share: f64,
    /// See [`Run::model_share`].
    pub reward_share: f64,
    /// See [`Run::model_share`].
    pub decode_share: f64,
    /// See [`Run::model_share`].
    pub engine_share: f64,
}

/// Everything `steerdiff bench` measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The model spec.
    pub model: String,
    /// The device, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// The weight dtype.
    pub dtype: String,
    /// CPU threads candle's kernels use.
    pub threads: usize,
    /// Unmeasured calls (or whole runs) before each measurement.
    pub warmup: usize,
    /// Measured calls per figure.
    pub repeats: usize,
    /// The forward at each batch size.
    pub forward: Vec<Forward>,
    /// Encoding the run's prompts (text-to-image models).
    pub text_encode: Option<Seconds>,
    /// Decoding one sample to an RGB image (image models).
    pub decode_per_image: Option<Seconds>,
    /// The whole runs of the strategy.
    pub run: Option<Run>,
    /// Peak resident memory of the process, bytes (Linux).
    pub peak_rss_bytes: Option<u64>,
}

/// Times `f` `warmup + repeats` times and keeps the last `repeats`.
fn time(settings: &Settings, mut f: impl FnMut() -> Result<()>) -> Result<Seconds> {
    for _ in 0..settings.warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(settings.repeats);
    for _ in 0..settings.repeats.max(1) {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64());
    }
    Ok(Seconds::of(samples))
}

/// Waits for `t`'s computation by reading one number of it back.
fn settle(t: &Tensor) -> Result<()> {
    t.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    Ok(())
}

/// `rows` samples of the model's shape with fixed, noise-like values (a hash of the index:
/// reproducible, no generator needed), on the model's device.
fn inputs(job: &Job, rows: usize) -> Result<Tensor> {
    let shape = job.denoiser().sample_shape();
    let mut dims = vec![rows];
    dims.extend_from_slice(&shape);
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
            (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Ok(Tensor::from_vec(values, dims, job.model().device())?
        .to_dtype(job.model().dtype().dtype())?)
}

/// Measures `model` as `opts` would run it.
pub fn measure(mut model: Model, opts: &Options, settings: &Settings) -> Result<Report> {
    let text_encode = match model.family() {
        Family::TextToImage => {
            let native = model.image_size().unwrap_or_default();
            let size = (
                opts.height.unwrap_or(native.0),
                opts.width.unwrap_or(native.1),
            );
            let prompt = opts.prompt.clone().unwrap_or_default();
            let negative = opts.negative.as_deref();
            Some(time(settings, || {
                Ok(model.set_text(size, &[prompt.as_str()], negative)?)
            })?)
        }
        _ => None,
    };
    let job = Job::new(model, opts)?;
    let schedule = &job.sampler.schedule;
    let at = schedule.points[schedule.points.len().saturating_sub(1) / 2];
    let mut forward = vec![];
    for &batch in &settings.batches {
        let x = inputs(&job, batch)?;
        let conds = vec![job.condition(); batch];
        let seconds = time(settings, || {
            settle(&job.denoiser().forward(&x, &at, &conds)?)
        })?;
        forward.push(Forward {
            batch,
            ms_per_row: 1e3 * seconds.median / batch as f64,
            rows_per_s: batch as f64 / seconds.median,
            seconds,
        });
    }
    // Models that make images (not mixtures) decode one sample to an RGB image.
    let one = inputs(&job, 1)?;
    let decode_per_image = match job.model().images(&one)? {
        Some(_) => Some(time(settings, || {
            job.model().images(&one).map(drop).map_err(Into::into)
        })?),
        None => None,
    };
    let run = if settings.runs > 0 {
        Some(whole_runs(&job, settings.warmup, settings.runs)?)
    } else {
        None
    };
    let params = job.parameters();
    Ok(Report {
        model: job.model().source().to_string(),
        device: params.device.clone(),
        dtype: params.dtype.clone(),
        threads: candle_core::utils::get_num_threads(),
        warmup: settings.warmup,
        repeats: settings.repeats,
        forward,
        text_encode,
        decode_per_image,
        run,
        peak_rss_bytes: crate::output::memory::peak_rss_bytes(),
    })
}

/// `runs` whole runs of `job` after `warmup` unmeasured ones (the first run of a process also
/// pays one-time costs: the allocator's first pages, the thread pool's first wake-ups): the
/// median run's wall time and its split.
fn whole_runs(job: &Job, warmup: usize, runs: usize) -> Result<Run> {
    for _ in 0..warmup {
        job.run(None)?;
    }
    let mut outcomes = Vec::with_capacity(runs);
    for _ in 0..runs {
        outcomes.push(job.run(None)?);
    }
    outcomes.sort_by(|a, b| a.timing.total_s.total_cmp(&b.timing.total_s));
    let o = &outcomes[outcomes.len() / 2];
    let t = &o.timing;
    let share = |s: f64| if t.total_s > 0.0 { s / t.total_s } else { 0.0 };
    let images = o.population.len();
    Ok(Run {
        strategy: job.parameters().strategy.kind.cli_name().to_string(),
        images,
        model_rows: o.ledger.total_rows(),
        wall_s: t.total_s,
        images_per_s: images as f64 / t.total_s.max(f64::MIN_POSITIVE),
        model_share: share(t.model_s),
        reward_share: share(t.reward_s),
        decode_share: share(t.decode_s),
        engine_share: share(t.other_s()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        let s = Seconds::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Seconds::of(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }
}
