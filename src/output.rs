//! What a run leaves behind, written so that it is never half there.
//!
//! Every file is written to a hidden temporary file in its destination directory and renamed
//! into place only when all of a run's files are complete ([`Staged`]); a failure anywhere
//! removes the temporaries. `samples.json` holds only deterministic data, so two identical
//! commands write byte-identical files; wall times go to `timing.json`.

use std::fs::{self, File};
use std::io::{BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use image::{ImageFormat, Rgb, RgbImage};
use serde::Serialize;
use serde_json::Value;
use steerdiff_guidance::{Condition, Ledger, Outcome, Population, Timing, TraceSink};
use steerdiff_pipelines::GmmSpec;

use crate::error::input_error;
use crate::run::{Job, Parameters};

/// Side length of `scatter.png`, pixels.
pub const SCATTER_SIZE: u32 = 512;

/// A file being written next to its destination; removed on drop unless committed.
#[derive(Debug)]
struct TempFile {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl TempFile {
    fn new(dest: &Path) -> Result<(TempFile, File)> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp)
            .with_context(|| format!("cannot write `{}` (in `{}`)", name, dir.display()))?;
        Ok((
            TempFile {
                tmp,
                dest: dest.to_path_buf(),
                committed: false,
            },
            file,
        ))
    }

    fn commit(&mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!(
                "cannot move the finished file into `{}`",
                self.dest.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A set of files written to temporaries and renamed into place together by
/// [`Staged::commit`]; dropping it uncommitted removes every temporary.
#[derive(Debug, Default)]
pub struct Staged {
    files: Vec<TempFile>,
}

impl Staged {
    /// An empty set.
    pub fn new() -> Self {
        Staged::default()
    }

    /// Writes `bytes` to a temporary that will become `dest`.
    pub fn add(&mut self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let (tmp, mut file) = TempFile::new(dest)?;
        self.files.push(tmp);
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .with_context(|| format!("cannot write `{}`", dest.display()))
    }

    /// Renames every temporary into place.
    pub fn commit(mut self) -> Result<()> {
        for f in &mut self.files {
            f.commit()?;
        }
        Ok(())
    }
}

/// Creates `dir` if missing and checks that files can be written in it, before any work is
/// done. Errors name the path (exit code 2).
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if let Err(e) = fs::create_dir_all(dir) {
        input_error!(
            "cannot create output directory `{}`: {e}; choose a writable -o DIR",
            dir.display()
        );
    }
    let probe = dir.join(format!(".steerdiff-probe-{}", std::process::id()));
    match File::create(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => input_error!(
            "cannot write in output directory `{}`: {e}; choose a writable -o DIR",
            dir.display()
        ),
    }
}

/// One final sample, as recorded in `samples.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRecord {
    /// Group index within this run (`0..n`).
    pub group: usize,
    /// Particle index within its group.
    pub particle: usize,
    /// The group's seed (`--seed` + group).
    pub seed: u64,
    /// The sample.
    pub x: Vec<f32>,
    /// The particle's importance log-weight (`null` if not finite).
    pub log_weight: f64,
    /// The last reward measured for it, `null` if none was.
    pub reward: Option<f64>,
    /// Its `--eval-reward` score (reported, never steered by); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_reward: Option<f64>,
}

/// Every particle of the final population, in population order (groups contiguous);
/// `first_group` is the run-wide index of the population's group 0 (see [`Job::first_group`]).
pub fn samples(pop: &Population, first_group: usize) -> Result<Vec<SampleRecord>> {
    let mut out = Vec::with_capacity(pop.len());
    for range in pop.groups() {
        for i in range.clone() {
            let p = &pop.particles[i];
            out.push(SampleRecord {
                group: first_group + p.group,
                particle: i - range.start,
                seed: p.seed,
                x: pop.row(i)?,
                log_weight: p.log_weight,
                reward: p.reward,
                eval_reward: None,
            });
        }
    }
    Ok(out)
}

/// The text of `samples.json`: one sample per line, then the ledger and the parameters.
pub fn samples_json(
    samples: &[SampleRecord],
    ledger: &Ledger,
    parameters: &Parameters,
) -> Result<String> {
    samples_text(samples, ledger, parameters)
}

/// The `samples.json` layout for any serialisable samples, ledger and parameters (also used
/// by `steerdiff merge` on records read back as JSON).
pub fn samples_text(
    samples: &[impl Serialize],
    ledger: &impl Serialize,
    parameters: &impl Serialize,
) -> Result<String> {
    let mut s = String::from("{\n  \"samples\": [");
    for (i, r) in samples.iter().enumerate() {
        s.push_str(if i == 0 { "\n    " } else { ",\n    " });
        s.push_str(&serde_json::to_string(r)?);
    }
    s.push_str(if samples.is_empty() {
        "],\n"
    } else {
        "\n  ],\n"
    });
    s.push_str("  \"ledger\": ");
    s.push_str(&serde_json::to_string(ledger)?);
    s.push_str(",\n  \"parameters\": ");
    s.push_str(&serde_json::to_string(parameters)?);
    s.push_str("\n}\n");
    Ok(s)
}

/// The text of `timing.json` (wall times; differs between identical runs).
pub fn timing_json(timing: &Timing) -> Result<String> {
    #[derive(Serialize)]
    struct Record<'a> {
        #[serde(flatten)]
        timing: &'a Timing,
        other_s: f64,
    }
    let mut s = serde_json::to_string_pretty(&Record {
        timing,
        other_s: timing.other_s(),
    })?;
    s.push('\n');
    Ok(s)
}

/// Paths of what [`write_generate`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// `DIR/samples.json`.
    pub samples: PathBuf,
    /// `DIR/timing.json`.
    pub timing: PathBuf,
    /// `DIR/scatter.png`, for 2-D mixtures.
    pub scatter: Option<PathBuf>,
}

/// Writes `samples.json`, `timing.json` and (2-D mixtures) `scatter.png` into `dir`, all or
/// nothing; `extra` (e.g. the trace) is committed with them.
pub fn write_generate(
    dir: &Path,
    job: &Job,
    outcome: &Outcome,
    records: &[SampleRecord],
    extra: Option<&mut JsonlTrace>,
) -> Result<Written> {
    let mut staged = Staged::new();
    let samples_path = dir.join("samples.json");
    staged.add(
        &samples_path,
        samples_json(records, &outcome.ledger, job.parameters())?.as_bytes(),
    )?;
    let timing_path = dir.join("timing.json");
    staged.add(&timing_path, timing_json(&outcome.timing)?.as_bytes())?;
    let mut scatter = None;
    if let Some(spec) = job.gmm_spec().filter(|s| s.dim == 2) {
        let points: Vec<[f64; 2]> = records
            .iter()
            .map(|r| [r.x[0] as f64, r.x[1] as f64])
            .collect();
        let png = scatter_png(spec, job.condition(), &points, SCATTER_SIZE)?;
        let path = dir.join("scatter.png");
        staged.add(&path, &png)?;
        scatter = Some(path);
    }
    if let Some(trace) = extra {
        trace.finish()?;
    }
    staged.commit()?;
    Ok(Written {
        samples: samples_path,
        timing: timing_path,
        scatter,
    })
}

/// A PNG (`size`×`size`) of a 2-D mixture's log-density under `cond` as a colour-mapped
/// background, with `points` as dots. The square window covers every component mean ± 4 std
/// and every finite point.
pub fn scatter_png(
    spec: &GmmSpec,
    cond: Condition,
    points: &[[f64; 2]],
    size: u32,
) -> Result<Vec<u8>> {
    if spec.dim != 2 {
        anyhow::bail!(
            "a scatter plot needs a 2-D mixture (this one has dim {})",
            spec.dim
        );
    }
    let size = size.max(16);
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    let mut cover = |p: [f64; 2]| {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    };
    for c in &spec.components {
        let r = 4.0 * c.std;
        cover([c.mean[0] - r, c.mean[1] - r]);
        cover([c.mean[0] + r, c.mean[1] + r]);
    }
    for p in points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite())
    {
        cover(*p);
    }
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    let half = ((hi[0] - lo[0]).max(hi[1] - lo[1]) / 2.0 * 1.05).max(1e-6);
    let n = size as usize;
    let scale = 2.0 * half / n as f64;
    let to_world = |px: usize, py: usize| {
        [
            centre[0] - half + (px as f64 + 0.5) * scale,
            centre[1] + half - (py as f64 + 0.5) * scale,
        ]
    };
    let mut logp = vec![0.0f64; n * n];
    for py in 0..n {
        for px in 0..n {
            logp[py * n + px] = spec.log_density(&to_world(px, py), 1.0, 0.0, cond);
        }
    }
    let max = logp
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    // Twelve nats of dynamic range below the mode.
    const RANGE: f64 = 12.0;
    let mut img = RgbImage::new(size, size);
    for (i, px) in img.pixels_mut().enumerate() {
        let t = if max.is_finite() && logp[i].is_finite() {
            ((logp[i] - max) / RANGE + 1.0).clamp(0.0, 1.0)
        } else {
            0.0
        };
        *px = colour_map(t);
    }
    for p in points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite())
    {
        let cx = (p[0] - (centre[0] - half)) / scale;
        let cy = ((centre[1] + half) - p[1]) / scale;
        dot(&mut img, cx, cy, 3.2, Rgb([0, 0, 0]));
        dot(&mut img, cx, cy, 2.2, Rgb([255, 96, 48]));
    }
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .context("encoding scatter.png")?;
    Ok(bytes.into_inner())
}

/// A dark-blue → teal → yellow ramp (viridis-like) for `t ∈ [0, 1]`.
fn colour_map(t: f64) -> Rgb<u8> {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let c = |k: usize| (STOPS[i][k] * (1.0 - f) + STOPS[i + 1][k] * f).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

/// A filled disc of radius `r` centred at pixel coordinates `(cx, cy)`, clipped to the image.
fn dot(img: &mut RgbImage, cx: f64, cy: f64, r: f64, colour: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, x1) = ((cx - r).floor() as i64, (cx + r).ceil() as i64);
    let (y0, y1) = ((cy - r).floor() as i64, (cy + r).ceil() as i64);
    for y in y0.max(0)..=y1.min(h - 1) {
        for x in x0.max(0)..=x1.min(w - 1) {
            let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
            if dx * dx + dy * dy <= r * r {
                img.put_pixel(x as u32, y as u32, colour);
            }
        }
    }
}

/// A [`TraceSink`] writing one JSON line per step to a temporary next to its destination,
/// renamed into place by [`JsonlTrace::finish`] (and removed if the run fails).
#[derive(Debug)]
pub struct JsonlTrace {
    temp: TempFile,
    writer: Option<BufWriter<File>>,
    error: Option<std::io::Error>,
}

impl JsonlTrace {
    /// Opens the temporary for `dest`; its directory must exist. Errors name the path (exit
    /// code 2).
    pub fn create(dest: &Path) -> Result<JsonlTrace> {
        match TempFile::new(dest) {
            Ok((temp, file)) => Ok(JsonlTrace {
                temp,
                writer: Some(BufWriter::new(file)),
                error: None,
            }),
            Err(e) => input_error!(
                "cannot write trace file `{}`: {}; choose a writable --trace FILE",
                dest.display(),
                e.root_cause()
            ),
        }
    }

    /// The I/O error that stopped recording, if one did (the engine only sees that recording
    /// failed; this is the reason).
    pub fn take_error(&mut self) -> Option<anyhow::Error> {
        self.error.take().map(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot write trace file `{}`",
                self.temp.dest.display()
            ))
        })
    }

    /// Flushes and renames the trace into place.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        if let Some(mut w) = self.writer.take() {
            w.flush()
                .and_then(|_| w.get_ref().sync_all())
                .with_context(|| {
                    format!("cannot write trace file `{}`", self.temp.dest.display())
                })?;
        }
        self.temp.commit()
    }
}

impl TraceSink for JsonlTrace {
    fn record(&mut self, line: Value) -> steerdiff_guidance::Result<()> {
        let result = match self.writer.as_mut() {
            Some(w) => serde_json::to_writer(&mut *w, &line)
                .map_err(std::io::Error::from)
                .and_then(|_| w.write_all(b"\n")),
            None => Err(std::io::Error::other("the trace is already finished")),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = format!(
                    "cannot write trace file `{}`: {e}",
                    self.temp.dest.display()
                );
                self.error = Some(e);
                // The engine's error type has no I/O variant; the caller reports `take_error`.
                Err(steerdiff_guidance::Error::Sink(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_appear_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let mut s = Staged::new();
        s.add(&a, b"hello").unwrap();
        assert!(!a.exists());
        drop(s);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporaries removed"
        );
        let mut s = Staged::new();
        s.add(&a, b"hello").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn colour_map_ends() {
        assert_eq!(colour_map(0.0), Rgb([68, 1, 84]));
        assert_eq!(colour_map(1.0), Rgb([253, 231, 37]));
    }
}
