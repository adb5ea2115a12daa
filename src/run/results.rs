//! A finished run's files, the same for every model: `samples.json`, `timing.json`, one PNG
//! per sample with its run record, `grid.png` and `top.png` for image models, `scatter.png`
//! for 2-D mixtures, and the trace — staged and committed together.
//!
//! A run into a folder that holds an earlier run replaces it whole: the earlier run's
//! images, grids and timing that this run does not write are removed once this run's files
//! are in place (files steerdiff does not write are never touched).

use std::path::{Path, PathBuf};

use anyhow::Result;
use image::RgbImage;
use steerdiff_guidance::Outcome;

use super::job::Job;
use crate::output::png_record::{self, ImageRecord};
use crate::output::{self, JsonlTrace, SampleRecord, Staged};

/// Samples shown in `top.png`.
pub const TOP_K: usize = 16;

/// Largest side of a grid cell, in pixels (bigger images are shrunk for the grid).
const GRID_CELL: u32 = 128;

/// What [`write()`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// `DIR/samples.json`.
    pub samples: PathBuf,
    /// Every file written, in commit order.
    pub files: Vec<PathBuf>,
    /// Files of an earlier run that were removed.
    pub removed: Vec<PathBuf>,
}

/// The final samples as recorded, with each one's `--eval-reward` score (measured after the
/// run, so it never steers) and image file name.
pub fn records(job: &Job, outcome: &Outcome) -> Result<Vec<SampleRecord>> {
    let pop = &outcome.population;
    let mut records = output::samples(pop, job.first_group())?;
    if let Some(scores) = job.eval_scores(&pop.x, &pop.conds())? {
        for (r, s) in records.iter_mut().zip(scores) {
            r.eval_reward = Some(s).filter(|s| s.is_finite());
        }
    }
    Ok(records)
}

/// The image file of particle `particle` of group `group`; `several` when the run wrote
/// more than one particle per group (`--keep all` with FK).
fn image_name(group: usize, particle: usize, several: bool) -> String {
    if several {
        format!("sample-{group:04}-{particle}.png")
    } else {
        format!("sample-{group:04}.png")
    }
}

/// A grid cell: the image, shrunk to at most [`GRID_CELL`] pixels a side.
fn cell(img: &RgbImage) -> RgbImage {
    if img.width() <= GRID_CELL && img.height() <= GRID_CELL {
        img.clone()
    } else {
        image::imageops::thumbnail(img, GRID_CELL, GRID_CELL)
    }
}

/// A grid cell's label: the class name (or `uncond`) and the seed; the seed alone for
/// prompted runs.
pub fn grid_label(class_name: Option<&str>, prompted: bool, seed: u64) -> String {
    if prompted {
        format!("{seed}")
    } else {
        format!("{} {seed}", class_name.unwrap_or("uncond"))
    }
}

/// `grid.png`: every sample, labelled, in a near-square grid (cells shrunk to at most
/// `GRID_CELL` pixels, small images scaled up towards it).
pub fn grid_png(cells: &[(RgbImage, String)]) -> Result<Vec<u8>> {
    let cells: Vec<(RgbImage, String)> = cells.iter().map(|(i, t)| (cell(i), t.clone())).collect();
    let scale = cells
        .first()
        .map(|(i, _)| (GRID_CELL / i.width().max(1)).max(1) as usize)
        .unwrap_or(1);
    let cols = (cells.len() as f64).sqrt().ceil() as usize;
    output::grid(&cells, cols, scale).png()
}

/// `top.png`: the [`TOP_K`] best samples by score, labelled with it; `None` when no sample
/// has a finite score.
pub fn top_png(mut scored: Vec<(f64, RgbImage)>) -> Result<Option<Vec<u8>>> {
    scored.retain(|(s, _)| s.is_finite());
    if scored.is_empty() {
        return Ok(None);
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.truncate(TOP_K);
    let top: Vec<(RgbImage, String)> = scored
        .into_iter()
        .map(|(s, i)| (i, format!("{s:.3}")))
        .collect();
    Ok(Some(grid_png(&top)?))
}

/// Writes the run's files into `dir` (created by the caller), all or nothing; `argv` is the
/// command line that asked for it (recorded in every PNG), `trace` the run's trace if one was
/// kept.
pub fn write(
    dir: &Path,
    job: &Job,
    outcome: &Outcome,
    records: &mut [SampleRecord],
    argv: &[String],
    trace: Option<JsonlTrace>,
) -> Result<Written> {
    let params = job.parameters();
    let mut staged = Staged::new();
    let images = job.model().images(&outcome.population.x)?;
    let several = outcome.population.groups().iter().any(|g| g.len() > 1);
    let mut cells = vec![];
    if let Some(images) = &images {
        for (r, img) in records.iter_mut().zip(images) {
            let name = image_name(r.group, r.particle, several);
            let record = if job.model().batch_stable() {
                // The one-image run that reproduces this sample: its seed as group 0, -n 1.
                let mut one = params.clone();
                one.n = 1;
                one.seed = r.seed;
                one.shard = None;
                let mut argv = argv.to_vec();
                argv.extend([format!("--seed={}", r.seed), "--num=1".to_string()]);
                ImageRecord {
                    steerdiff: env!("CARGO_PKG_VERSION").into(),
                    argv,
                    file: image_name(0, r.particle, several),
                    particle: r.particle,
                    reward: r.reward,
                    log_weight: r.log_weight.is_finite().then_some(r.log_weight),
                    parameters: serde_json::to_value(&one)?,
                }
            } else {
                // The whole run: batched forwards round differently at other batch sizes, so
                // a one-image re-run would not be bit-exact.
                let mut whole = params.clone();
                whole.shard = None;
                let mut argv = argv.to_vec();
                argv.extend([
                    format!("--seed={}", params.seed),
                    format!("--num={}", params.n),
                ]);
                ImageRecord {
                    steerdiff: env!("CARGO_PKG_VERSION").into(),
                    argv,
                    file: name.clone(),
                    particle: r.particle,
                    reward: r.reward,
                    log_weight: r.log_weight.is_finite().then_some(r.log_weight),
                    parameters: serde_json::to_value(&whole)?,
                }
            };
            let png = png_record::encode(img.as_raw(), img.width(), img.height(), &record, r.seed)?;
            staged.add(&dir.join(&name), &png)?;
            r.image = Some(name);
            let text = grid_label(
                params.class_name.as_deref(),
                params.prompt.is_some(),
                r.seed,
            );
            cells.push((cell(img), text, r.eval_reward.or(r.reward)));
        }
    }
    let samples = dir.join("samples.json");
    staged.add(
        &samples,
        output::samples_text(records, &outcome.ledger, params)?.as_bytes(),
    )?;
    staged.add(
        &dir.join("timing.json"),
        output::timing_json(&outcome.timing)?.as_bytes(),
    )?;
    if let Some(spec) = job.model().mixture_spec().filter(|s| s.dim == 2) {
        let points: Vec<[f64; 2]> = records
            .iter()
            .map(|r| [r.x[0] as f64, r.x[1] as f64])
            .collect();
        let png = output::scatter_png(spec, job.condition(), &points, output::SCATTER_SIZE)?;
        staged.add(&dir.join("scatter.png"), &png)?;
    }
    if !cells.is_empty() {
        let all: Vec<(RgbImage, String)> = cells
            .iter()
            .map(|(i, t, _)| (i.clone(), t.clone()))
            .collect();
        staged.add(&dir.join("grid.png"), &grid_png(&all)?)?;
        let scored = cells.into_iter().filter_map(|(i, _, s)| s.map(|s| (s, i)));
        if let Some(png) = top_png(scored.collect())? {
            staged.add(&dir.join("top.png"), &png)?;
        }
    }
    if let Some(t) = trace {
        t.finish_into(&mut staged)?;
    }
    let files: Vec<PathBuf> = staged.destinations().map(Path::to_path_buf).collect();
    staged.commit()?;
    let removed = output::remove_stale(dir, &files)?;
    Ok(Written {
        samples,
        files,
        removed,
    })
}
