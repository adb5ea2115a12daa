//! The FlowChef inpainting demo (`steerdiff toy inpaint`): fill a centred box of fresh dataset
//! images with FlowChef (Patel et al. 2025, arXiv 2412.00100; ALGORITHMS §4) and with the
//! standard unguided baseline, inpainting by replacement, on the same model, steps and seeds;
//! report for each the mean absolute error on the known pixels (pixels in `[0, 1]`), the error
//! inside the box against the source, and how often the evaluation classifier (which never
//! steers) assigns the result to the source image's class; write a picture grid.
//!
//! By default the fill is unconditional (the null class): the model must infer what the shape
//! is from the pixels around the box, so class agreement measures how coherent the fill is.
//! `--time-travel U` adds both methods again with every step but the last revisited U more
//! times ([`TimeTravel`](steerdiff_guidance::strategy::TimeTravel), RePaint's resampling).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;
use steerdiff_pipelines::toy::model::{self, ToyClassifier};
use steerdiff_pipelines::toy::{data, CLASS_NAMES};

use super::eval::EVAL_DATA_SEED;
use crate::error::input_error;
use crate::output::Canvas;
use crate::run::observation::{box_mask, centre_box, Observation};
use crate::run::strategy::{flowchef, PerStepArgs, TaskArg};
use crate::run::strategy::{StrategyArgs, StrategyKind};
use crate::run::{Job, Options, PathKind};

/// Flags of `steerdiff toy inpaint`.
#[derive(Debug, Clone, Args)]
pub struct InpaintArgs {
    /// Dataset images to inpaint (image i has class i mod 10).
    #[arg(short = 'n', long = "num", default_value_t = 100)]
    pub num: usize,
    /// Dataset seed (default: the evaluation seed, never used in training).
    #[arg(long, default_value_t = EVAL_DATA_SEED)]
    pub data_seed: u64,
    /// Generator variant of the source images: full or upright (default: the one the toy
    /// flow model was trained on, from its manifest entry).
    #[arg(long, value_name = "ROTATION")]
    pub data_rotation: Option<data::Rotation>,
    /// Side of the centred square box to fill, in pixels.
    #[arg(long, value_name = "PX", default_value_t = 12)]
    pub box_size: usize,
    /// Solver steps (flow-Euler).
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// FlowChef step size η (0.5 lands x̂0 on the known pixels each inner step; the default
    /// 0.2 corrects part of the way, as `generate --task inpaint` does).
    #[arg(long, value_name = "η", default_value_t = 0.2)]
    pub lr: f64,
    /// FlowChef inner updates K per step.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub inner_steps: usize,
    /// FlowChef: guide only the first N steps (default: all but the last, as the paper's code).
    #[arg(long, value_name = "N")]
    pub guided_steps: Option<usize>,
    /// Condition the fill on the source image's class (default: unconditional, the class must
    /// be inferred from the context).
    #[arg(long)]
    pub conditional: bool,
    /// CFG scale with --conditional (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f64,
    /// Also run both methods with time travel (RePaint's resampling): every step but the last
    /// revisited U more times (0 = not).
    #[arg(long, value_name = "U", default_value_t = 0)]
    pub time_travel: usize,
    /// Seed of image 0's sampling noise (image i uses SEED + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Picture grid PNG: rows source, mask, masked input, then one per method.
    #[arg(short = 'o', long = "output", value_name = "PNG")]
    pub output: PathBuf,
    /// Images shown in the grid (the first ones).
    #[arg(long, default_value_t = 8)]
    pub grid: usize,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One method's row.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRow {
    /// `flowchef` or `replacement`, with ` + time travel U=…` when revisiting steps.
    pub method: String,
    /// Images inpainted.
    pub images: usize,
    /// Mean |output − source| over known pixels, pixels in `[0, 1]` (outputs clamped).
    pub known_mae: f64,
    /// Mean |output − source| inside the box (how close the fill is to the hidden truth).
    pub fill_mae: f64,
    /// Fraction of outputs the evaluation classifier puts in the source image's class.
    pub class_agreement: f64,
    /// Model rows (NFE) per image.
    pub nfe_per_image: f64,
    /// Sampling wall time, seconds.
    pub seconds: f64,
}

/// Everything the demo measures.
#[derive(Debug, Clone, Serialize)]
pub struct InpaintReport {
    /// The box filled, `[x0, y0, x1, y1)`.
    pub fill_box: [usize; 4],
    /// Solver steps.
    pub steps: usize,
    /// Whether the fill was conditioned on the source class.
    pub conditional: bool,
    /// Evaluation-classifier accuracy on the source images themselves (the ceiling).
    pub source_accuracy: f64,
    /// The methods.
    pub rows: Vec<MethodRow>,
}

/// Mean absolute difference in `[0, 1]` pixel units over the entries where `weight` is 1
/// (outputs clamped to the image range first).
pub fn masked_mae(out: &[f32], src: &[f32], weight: &[f32]) -> f64 {
    let (mut sum, mut n) = (0.0, 0.0);
    for ((o, s), w) in out.iter().zip(src).zip(weight) {
        if *w > 0.5 {
            sum += ((o.clamp(-1.0, 1.0) - s) as f64).abs() / 2.0;
            n += 1.0;
        }
    }
    if n == 0.0 {
        0.0
    } else {
        sum / n
    }
}

/// The known pixels with the box filled mid-grey: what the methods see.
fn masked_input(src: &[f32], known: &[f32]) -> Vec<f32> {
    src.iter()
        .zip(known)
        .map(|(s, k)| if *k > 0.5 { *s } else { 0.0 })
        .collect()
}

/// One method of the demo.
struct Method {
    /// Its name in the table.
    name: String,
    /// Its row label in the picture.
    label: &'static str,
    kind: StrategyKind,
    /// Time travel's extra visits per step.
    time_travel: usize,
}

/// One method on image `i`: the output pixels and the model rows spent.
fn inpaint(
    a: &InpaintArgs,
    method: &Method,
    obs: &Observation,
    label: u32,
    i: usize,
) -> Result<(Vec<f32>, u64)> {
    let mut per_step = PerStepArgs::default();
    per_step.flags.flowchef = flowchef::Flags {
        task: TaskArg::Inpaint,
        lr: Some(a.lr),
        inner_steps: a.inner_steps,
        guided_steps: a.guided_steps,
        ..flowchef::Flags::default()
    };
    let opts = Options {
        path: PathKind::Flow,
        class: a
            .conditional
            .then(|| CLASS_NAMES[label as usize].to_string()),
        steps: Some(a.steps),
        cfg: Some(a.cfg),
        time_travel: method.time_travel,
        n: 1,
        seed: a.seed + i as u64,
        strategy: StrategyArgs {
            kind: method.kind,
            per_step,
            ..StrategyArgs::default()
        },
        observation: Some(obs.clone()),
        ..Options::default()
    };
    let job = Job::load("toy", &opts)?;
    let out = job.run(None)?;
    Ok((out.population.row(0)?, out.ledger.total_rows()))
}

/// Runs the demo and returns its report (the grid is written to `a.output`).
pub fn measure(a: &InpaintArgs) -> Result<InpaintReport> {
    if a.num == 0 {
        input_error!("-n must be at least 1 (the number of dataset images to inpaint)");
    }
    if a.cfg != 1.0 && !a.conditional {
        input_error!(
            "--cfg {} needs --conditional (an unconditional fill has no class to guide towards)",
            a.cfg
        );
    }
    if a.box_size == 0 || a.box_size > data::SIZE {
        input_error!(
            "--box-size must be 1..={} pixels (got {})",
            data::SIZE,
            a.box_size
        );
    }
    let dims = [3, data::SIZE, data::SIZE];
    let fill_box = centre_box(a.box_size, data::SIZE, data::SIZE);
    let known = box_mask(fill_box, dims)?;
    let unknown: Vec<f32> = known.iter().map(|k| 1.0 - k).collect();
    let eval = ToyClassifier::load(&model::Assets::locate(), model::EVAL_CLASSIFIER)
        .context("loading the toy evaluation classifier")?;
    let method = |name: &str, label, kind, time_travel| Method {
        name: name.to_string(),
        label,
        kind,
        time_travel,
    };
    let mut methods = vec![
        method("flowchef", "flowchef", StrategyKind::Flowchef, 0),
        method("replacement", "replace", StrategyKind::Replace, 0),
    ];
    if a.time_travel > 0 {
        let u = a.time_travel;
        let tt = format!(" + time travel U={u}");
        methods.push(method(
            &format!("flowchef{tt}"),
            "chef tt",
            StrategyKind::Flowchef,
            u,
        ));
        methods.push(method(
            &format!("replacement{tt}"),
            "repl tt",
            StrategyKind::Replace,
            u,
        ));
    }
    let rotation = match a.data_rotation {
        Some(r) => r,
        None => model::Manifest::of(&model::Assets::locate())?
            .entry(model::FLOW)?
            .data_rotation()?,
    };
    let mut sources = Vec::with_capacity(a.num);
    let mut labels = Vec::with_capacity(a.num);
    let mut outputs: Vec<Vec<Vec<f32>>> = vec![Vec::with_capacity(a.num); methods.len()];
    let mut rows_spent = vec![0u64; methods.len()];
    let mut seconds = vec![0f64; methods.len()];
    for i in 0..a.num {
        let (src, label) = data::image_with(rotation, a.data_seed, i as u64);
        let obs = Observation {
            image: src.clone(),
            dims,
            known: Some(known.clone()),
        };
        for (m, method) in methods.iter().enumerate() {
            let started = Instant::now();
            let (out, rows) = inpaint(a, method, &obs, label, i)?;
            seconds[m] += started.elapsed().as_secs_f64();
            rows_spent[m] += rows;
            outputs[m].push(out);
        }
        sources.push(src);
        labels.push(label);
    }
    let source_accuracy = super::eval::accuracy(&eval, &sources, &labels)?;
    let mut rows = Vec::new();
    for (m, method) in methods.iter().enumerate() {
        let outs = &outputs[m];
        let mean = |w: &[f32]| {
            outs.iter()
                .zip(&sources)
                .map(|(o, s)| masked_mae(o, s, w))
                .sum::<f64>()
                / a.num as f64
        };
        rows.push(MethodRow {
            method: method.name.clone(),
            images: a.num,
            known_mae: mean(&known),
            fill_mae: mean(&unknown),
            class_agreement: super::eval::accuracy(&eval, outs, &labels)?,
            nfe_per_image: rows_spent[m] as f64 / a.num as f64,
            seconds: seconds[m],
        });
    }
    // The grid: one column per image, rows source / mask / masked input / methods.
    let shown = a.grid.min(a.num);
    if shown > 0 {
        let scale = 3;
        let cell = data::SIZE * scale + 4;
        let left = 12 * 4 * 2 + 8;
        let mut names = vec!["source", "mask", "input"];
        names.extend(methods.iter().map(|m| m.label));
        let mut c = Canvas::new(left + shown * cell, names.len() * cell + 4, [255, 255, 255]);
        let mask_img: Vec<f32> = known.iter().map(|k| k * 2.0 - 1.0).collect();
        for (r, name) in names.iter().enumerate() {
            c.text(name, 4, r * cell + cell / 2 - 5, 2, [0, 0, 0]);
            for j in 0..shown {
                let pix = match r {
                    0 => sources[j].clone(),
                    1 => mask_img.clone(),
                    2 => masked_input(&sources[j], &known),
                    _ => outputs[r - 3][j].clone(),
                };
                c.paste(&pix, left + j * cell, r * cell + 2, scale);
            }
        }
        let png = c.png()?;
        let mut staged = crate::output::Staged::new();
        staged.add(&a.output, &png)?;
        staged.commit()?;
    }
    Ok(InpaintReport {
        fill_box,
        steps: a.steps,
        conditional: a.conditional,
        source_accuracy,
        rows,
    })
}

/// The report as a Markdown table.
pub fn markdown(r: &InpaintReport) -> String {
    let [x0, y0, x1, y1] = r.fill_box;
    let mut out = String::from(
        "| method | images | known-pixel MAE | fill MAE | class agreement (eval classifier) \
         | NFE/image | wall |\n|---|---|---|---|---|---|---|\n",
    );
    for m in &r.rows {
        out += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.1} % | {:.0} | {:.0} s |\n",
            m.method,
            m.images,
            m.known_mae,
            m.fill_mae,
            100.0 * m.class_agreement,
            m.nfe_per_image,
            m.seconds
        );
    }
    out += &format!(
        "\nbox [{x0}, {x1}) × [{y0}, {y1}) filled, flow-Euler {} steps, {}; pixels in [0, 1]; \
         the evaluation classifier puts {:.1} % of the source images in their class.\n",
        r.steps,
        if r.conditional {
            "conditioned on the source class"
        } else {
            "unconditional"
        },
        100.0 * r.source_accuracy
    );
    out
}

/// `steerdiff toy inpaint`: runs the demo, prints the table, writes the grid (and JSON).
pub fn run(a: &InpaintArgs) -> Result<()> {
    let report = measure(a)?;
    print!("{}", markdown(&report));
    if let Some(path) = &a.json {
        let mut staged = crate::output::Staged::new();
        staged.add(
            path,
            (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
        )?;
        staged.commit()?;
    }
    eprintln!("steerdiff: wrote {}", a.output.display());
    Ok(())
}
