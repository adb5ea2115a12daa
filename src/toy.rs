//! `steerdiff toy …`: the procedural dataset, training and evaluation of the embedded toy models.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use steerdiff_pipelines::toy::{data, train};

/// Flags of `steerdiff toy`.
#[derive(Debug, Args)]
pub struct ToyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ToyCommand,
}

/// The toy subcommands.
#[derive(Debug, Subcommand)]
pub enum ToyCommand {
    /// Write N images of the procedural dataset as PNGs plus labels.csv.
    Dataset {
        /// Number of images (image i has class i mod 10).
        #[arg(short = 'n', long = "num", default_value_t = 100)]
        num: usize,
        /// Dataset seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory.
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: PathBuf,
    },
    /// Train a toy model in a work directory (checkpoints, resume, exports).
    Train(Box<TrainArgs>),
    /// Copy training exports into an assets folder and write its manifest.json (sha256,
    /// configs, training records).
    Package(PackageArgs),
    /// Measure the shipped models: classifier accuracies on fresh dataset images, generated
    /// class accuracy (by the evaluation classifier) and diversity; prints a Markdown table.
    Eval(EvalArgs),
    /// FlowChef inpainting of a centre box on dataset images vs inpainting by replacement.
    Inpaint(crate::inpaint_demo::InpaintArgs),
    /// Per-noise-level denoising error and label use of a flow model on dataset images.
    Diagnose(crate::toy_diagnose::DiagnoseArgs),
    /// Write a grid of every class at two CFG scales (the picture in assets/toy-samples.png).
    Samples {
        /// Output PNG.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Samples per class and scale.
        #[arg(long, default_value_t = 6)]
        per_class: usize,
        /// CFG scales (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1.0, 3.0])]
        cfgs: Vec<f64>,
        /// Solver steps.
        #[arg(long, default_value_t = 30)]
        steps: usize,
        /// Model: toy or toy-weak.
        #[arg(long, default_value = "toy")]
        model: String,
    },
}

/// Flags of `steerdiff toy package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// Export folder of the flow model.
    #[arg(long)]
    pub flow: PathBuf,
    /// Export folder of the weaker twin.
    #[arg(long)]
    pub weak: PathBuf,
    /// Export folder of the guidance classifier.
    #[arg(long)]
    pub classifier: PathBuf,
    /// Export folder of the evaluation classifier.
    #[arg(long)]
    pub eval_classifier: PathBuf,
    /// Free-text notes per model, `NAME=TEXT` (repeatable).
    #[arg(long)]
    pub note: Vec<String>,
    /// Assets folder to write.
    #[arg(long, default_value = "assets")]
    pub out: PathBuf,
}

/// Flags of `steerdiff toy eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Models to sample (comma-separated: toy, toy-weak).
    #[arg(long, value_delimiter = ',', default_values_t = ["toy".to_string(), "toy-weak".to_string()])]
    pub models: Vec<String>,
    /// CFG scales (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 3.0])]
    pub cfgs: Vec<f64>,
    /// Generated samples per class.
    #[arg(long, default_value_t = 100)]
    pub per_class: usize,
    /// flow-euler steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Fresh dataset images for the classifier accuracies (0 = skip).
    #[arg(long, default_value_t = 2000)]
    pub dataset_images: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The network of a toy flow model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowArch {
    /// The patch-4 diffusion transformer.
    Dit,
    /// The convolutional U-Net.
    Unet,
}

/// Flags of `steerdiff toy train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Which model: flow, classifier or eval-classifier.
    #[arg(long)]
    pub what: String,
    /// Total optimiser steps.
    #[arg(long)]
    pub steps: u64,
    /// Work directory (checkpoint.safetensors, state.json, log.csv, export-STEP/).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Override the batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// The flow model's network.
    #[arg(long, value_enum, default_value_t = FlowArch::Dit)]
    pub arch: FlowArch,
    /// Override the U-Net's channels per level, finest first (comma-separated, e.g. 32,64,128).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<usize>>,
    /// Override the DiT's width d.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Override the DiT's depth.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Override whether the flow model adds the class embedding to every token.
    #[arg(long)]
    pub class_in_tokens: Option<bool>,
    /// Override the flow's training-time distribution: uniform or logit-normal.
    #[arg(long)]
    pub time_sampling: Option<train::TimeSampling>,
    /// Override the peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Train on the generator variant with full or upright (±20°) rotation.
    #[arg(long)]
    pub data_rotation: Option<steerdiff_pipelines::toy::data::Rotation>,
    /// Contrastive flow matching (ΔFM) for a flow model, with this weight λ (the paper uses
    /// 0.05); off when absent.
    #[arg(long, value_name = "LAMBDA")]
    pub contrastive_weight: Option<f64>,
    /// Representation alignment (REPA) of a flow model to the guidance classifier's features,
    /// with this weight λ (the paper's default is 0.5); off when absent.
    #[arg(long, value_name = "LAMBDA")]
    pub repa_weight: Option<f64>,
    /// The REPA tap: align the tokens after this many transformer blocks.
    #[arg(long, default_value_t = 2, requires = "repa_weight")]
    pub repa_block: usize,
    /// Where to train: cpu, cuda, cuda:N, metal or metal:N (GPUs need a binary built with
    /// `--features cuda` / `metal`). The recipe and its random draws do not depend on it.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Start from an exported model's weights (a directory with config.json and
    /// model.safetensors: an export-STEP/ folder or assets/toy-flow) instead of a fresh
    /// initialisation; the architecture flags must describe the same network. The optimiser
    /// starts afresh (warm-up and cosine over --steps) and the data continue after the images
    /// that model was trained on. Resuming such a run takes the same --init-from again.
    #[arg(long, value_name = "DIR")]
    pub init_from: Option<PathBuf>,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Extra export steps (comma-separated); the end and, for flows, steps/8 are exported.
    #[arg(long, value_delimiter = ',')]
    pub export_at: Vec<u64>,
    /// Print progress every this many steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
}

/// Runs a `steerdiff toy` command.
pub fn execute(args: &ToyArgs) -> Result<()> {
    match &args.command {
        ToyCommand::Dataset { num, seed, output } => write_dataset(*num, *seed, output),
        ToyCommand::Train(t) => run_train(t),
        ToyCommand::Package(p) => package(p),
        ToyCommand::Eval(e) => crate::toy_eval::eval(e),
        ToyCommand::Inpaint(a) => crate::inpaint_demo::run(a),
        ToyCommand::Diagnose(a) => crate::toy_diagnose::diagnose(a),
        ToyCommand::Samples {
            output,
            per_class,
            cfgs,
            steps,
            model,
        } => crate::toy_eval::samples_grid(output, *per_class, cfgs, *steps, model),
    }
}

fn run_train(t: &TrainArgs) -> Result<()> {
    let mut spec = train::default_spec(&t.what, t.steps)?;
    if let Some(b) = t.batch {
        spec.batch = b;
    }
    use steerdiff_pipelines::toy::ToyConfig;
    if t.arch == FlowArch::Unet {
        if !matches!(spec.config, ToyConfig::Dit(_)) {
            anyhow::bail!("--arch is for flow models (--what flow)");
        }
        spec.config = ToyConfig::Unet(steerdiff_pipelines::toy::UnetConfig::toy());
    }
    if let ToyConfig::Unet(c) = &mut spec.config {
        if let Some(ch) = &t.channels {
            c.channels = ch.clone();
        }
    } else if t.channels.is_some() {
        anyhow::bail!("--channels is for the U-Net (--arch unet)");
    }
    if let ToyConfig::Dit(c) = &mut spec.config {
        if let Some(h) = t.hidden {
            c.hidden_size = h;
        }
        if let Some(d) = t.depth {
            c.depth = d;
        }
        if let Some(k) = t.class_in_tokens {
            c.class_in_tokens = k;
        }
    }
    if let Some(ts) = t.time_sampling {
        spec.time_sampling = ts;
    }
    if let Some(lr) = t.lr {
        spec.lr = lr;
    }
    if let Some(r) = t.data_rotation {
        spec.data_rotation = r;
    }
    if let Some(l) = t.contrastive_weight {
        if !(l.is_finite() && (0.0..1.0).contains(&l)) {
            anyhow::bail!("--contrastive-weight must be in [0, 1) (got {l}); the paper uses 0.05");
        }
        spec.contrastive = Some(l);
    }
    if let Some(weight) = t.repa_weight {
        let assets = steerdiff_pipelines::toy::model::assets_dir();
        let teacher = steerdiff_pipelines::toy::model::CLASSIFIER.to_string();
        let manifest = steerdiff_pipelines::toy::Manifest::load(&assets)?;
        spec.repa = Some(train::RepaSpec {
            weight,
            block: t.repa_block,
            teacher_sha256: manifest.entry(&teacher)?.sha256.clone(),
            teacher,
        });
    }
    if let Some(dir) = &t.init_from {
        spec.init_from = Some(train::InitFrom::read(dir, &spec.config)?);
    }
    spec.checkpoint_every = t.checkpoint_every.max(1);
    // The flow spec already exports at steps/8 (the weak twin's point); name each step once.
    spec.export_at.extend(&t.export_at);
    spec.export_at.sort_unstable();
    spec.export_at.dedup();
    let device = crate::device::parse_device(&t.device)?;
    let state = train::train_on(&spec, &t.out, t.resume, t.log_every.max(1), &device)?;
    if state.recent_loss.is_finite() {
        eprintln!(
            "trained {} steps in {:.0} s; recent loss {:.5}",
            state.step, state.elapsed_s, state.recent_loss
        );
    } else {
        eprintln!("trained {} steps (none in this run)", state.step);
    }
    Ok(())
}

/// Writes `n` dataset images as `DIR/00000.png …` and `DIR/labels.csv`.
pub fn write_dataset(n: usize, seed: u64, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut csv = String::from("file,label,class\n");
    for i in 0..n {
        let (pix, label) = data::image(seed, i as u64);
        let name = format!("{i:05}.png");
        save_png(
            &dir.join(&name),
            &data::to_rgb8(&pix),
            data::SIZE as u32,
            data::SIZE as u32,
        )?;
        csv.push_str(&format!(
            "{name},{label},{}\n",
            data::CLASS_NAMES[label as usize]
        ));
    }
    let path = dir.join("labels.csv");
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("steerdiff: {n} images → {}", dir.display());
    Ok(())
}

/// Writes an RGB8 PNG (to a temporary name, then renamed).
pub fn save_png(path: &std::path::Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let img = image::RgbImage::from_raw(w, h, rgb.to_vec()).context("image buffer size")?;
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A 3×5 bitmap font: each glyph is five rows of three bits (most significant = left).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
        'C' => [0b011, 0b100, 0b100, 0b100, 0b011],
        'D' => [0b110, 0b101, 0b101, 0b101, 0b110],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
        'G' => [0b011, 0b100, 0b101, 0b101, 0b011],
        'H' => [0b101, 0b101, 0b111, 0b101, 0b101],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'J' => [0b001, 0b001, 0b001, 0b101, 0b010],
        'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'M' => [0b101, 0b111, 0b111, 0b101, 0b101],
        'N' => [0b110, 0b101, 0b101, 0b101, 0b101],
        'O' => [0b010, 0b101, 0b101, 0b101, 0b010],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'Q' => [0b010, 0b101, 0b101, 0b110, 0b011],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        'U' => [0b101, 0b101, 0b101, 0b101, 0b111],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        'W' => [0b101, 0b101, 0b111, 0b111, 0b101],
        'X' => [0b101, 0b101, 0b010, 0b101, 0b101],
        'Y' => [0b101, 0b101, 0b010, 0b010, 0b010],
        'Z' => [0b111, 0b001, 0b010, 0b100, 0b111],
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b110, 0b001, 0b010, 0b100, 0b111],
        '3' => [0b110, 0b001, 0b010, 0b001, 0b110],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b110, 0b001, 0b110],
        '6' => [0b011, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b110],
        '-' => [0, 0, 0b111, 0, 0],
        '.' => [0, 0, 0, 0, 0b010],
        '=' => [0, 0b111, 0, 0b111, 0],
        '#' => [0b101, 0b111, 0b101, 0b111, 0b101],
        _ => [0; 5],
    }
}

/// An RGB canvas for grids.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
    /// RGB8, row-major.
    pub rgb: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `bg`.
    pub fn new(w: usize, h: usize, bg: [u8; 3]) -> Self {
        let mut rgb = vec![0u8; w * h * 3];
        for p in rgb.chunks_mut(3) {
            p.copy_from_slice(&bg);
        }
        Canvas { w, h, rgb }
    }

    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Pastes a 32×32 image (channel-first, `[-1, 1]`) scaled by `s` (nearest) at `(x, y)`.
    pub fn paste(&mut self, pixels: &[f32], x: usize, y: usize, s: usize) {
        let rgb = data::to_rgb8(pixels);
        for py in 0..data::SIZE * s {
            for px in 0..data::SIZE * s {
                let i = ((py / s) * data::SIZE + px / s) * 3;
                self.put(x + px, y + py, [rgb[i], rgb[i + 1], rgb[i + 2]]);
            }
        }
    }

    /// Writes `text` (3×5 font, upper case) at `(x, y)` with pixel size `s`.
    pub fn text(&mut self, text: &str, x: usize, y: usize, s: usize, c: [u8; 3]) {
        for (k, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            for (r, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for dy in 0..s {
                            for dx in 0..s {
                                self.put(x + (k * 4 + col) * s + dx, y + r * s + dy, c);
                            }
                        }
                    }
                }
            }
        }
    }

    /// PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>> {
        let img = image::RgbImage::from_raw(self.w as u32, self.h as u32, self.rgb.clone())
            .context("canvas size")?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .context("encoding PNG")?;
        Ok(out.into_inner())
    }
}

/// A labelled grid of images: `cols` per row, each scaled ×`scale` with its label beneath.
pub fn grid(images: &[(Vec<f32>, String)], cols: usize, scale: usize) -> Canvas {
    let cell = data::SIZE * scale;
    let label_h = 14;
    let pad = 4;
    let cols = cols.max(1).min(images.len().max(1));
    let rows = images.len().div_ceil(cols);
    let mut c = Canvas::new(
        cols * (cell + pad) + pad,
        rows * (cell + label_h + pad) + pad,
        [255, 255, 255],
    );
    for (i, (pix, label)) in images.iter().enumerate() {
        let x = pad + (i % cols) * (cell + pad);
        let y = pad + (i / cols) * (cell + label_h + pad);
        c.paste(pix, x, y, scale);
        c.text(label, x, y + cell + 2, 2, [0, 0, 0]);
    }
    c
}

/// Writes one PNG per sample (`DIR/sample-GGGG.png`) and `DIR/grid.png` (×4, labelled with
/// the class name and seed) for a toy-model run.
pub fn write_images(
    dir: &std::path::Path,
    job: &crate::run::Job,
    records: &[crate::output::SampleRecord],
    flags: &crate::invocation::Flags,
) -> Result<()> {
    let params = job.parameters();
    let name = params.class_name.clone().unwrap_or_else(|| "uncond".into());
    let file_name = |group: usize, particle: usize| {
        if params.particles_per_group > 1 {
            format!("sample-{group:04}-{particle}.png")
        } else {
            format!("sample-{group:04}.png")
        }
    };
    let mut staged = crate::output::Staged::new();
    let mut cells = Vec::with_capacity(records.len());
    for r in records {
        // The one-image run that reproduces this sample: its seed as group 0, -n 1.
        let mut one = params.clone();
        one.n = 1;
        one.seed = r.seed;
        one.shard = None;
        let mut argv = crate::invocation::to_argv(flags);
        argv.extend([format!("--seed={}", r.seed), "--num=1".to_string()]);
        let record = crate::png_record::ImageRecord {
            steerdiff: env!("CARGO_PKG_VERSION").into(),
            argv,
            file: file_name(0, r.particle),
            particle: r.particle,
            reward: r.reward,
            log_weight: r.log_weight.is_finite().then_some(r.log_weight),
            parameters: serde_json::to_value(&one)?,
        };
        let png = crate::png_record::encode(&data::to_rgb8(&r.x), 32, 32, &record)?;
        staged.add(&dir.join(file_name(r.group, r.particle)), &png)?;
        cells.push((r.x.clone(), format!("{name} {}", r.seed)));
    }
    let cols = (records.len() as f64).sqrt().ceil() as usize;
    staged.add(&dir.join("grid.png"), &grid(&cells, cols, 4).png()?)?;
    // The best samples by their evaluation reward (else the steering reward), with scores.
    let mut scored: Vec<(f64, &crate::output::SampleRecord)> = records
        .iter()
        .filter_map(|r| r.eval_reward.or(r.reward).map(|s| (s, r)))
        .filter(|(s, _)| s.is_finite())
        .collect();
    if !scored.is_empty() {
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(TOP_K);
        let top: Vec<(Vec<f32>, String)> = scored
            .iter()
            .map(|(s, r)| (r.x.clone(), format!("{s:.3}")))
            .collect();
        let cols = (top.len() as f64).sqrt().ceil() as usize;
        staged.add(&dir.join("top.png"), &grid(&top, cols, 4).png()?)?;
    }
    staged.commit()
}

/// Samples shown in `top.png`.
pub const TOP_K: usize = 16;

fn package(p: &PackageArgs) -> Result<()> {
    use steerdiff_pipelines::toy::model::{self, Manifest, ManifestEntry};
    use steerdiff_pipelines::toy::ToyConfig;
    let names = [
        model::FLOW,
        model::FLOW_WEAK,
        model::CLASSIFIER,
        model::EVAL_CLASSIFIER,
    ];
    let mut notes = std::collections::BTreeMap::new();
    for n in &p.note {
        match n.split_once('=') {
            Some((name, text)) if names.contains(&name) => {
                notes.insert(name.to_string(), text.to_string());
            }
            _ => crate::error::input_error!(
                "--note `{n}` is not NAME=TEXT with NAME one of {}",
                names.join(", ")
            ),
        }
    }
    // Everything is read and checked first, then written through temporaries and renamed
    // into place together: a missing or bad export leaves the assets folder as it was.
    let mut staged = crate::output::Staged::new();
    let mut models = std::collections::BTreeMap::new();
    let sources = [&p.flow, &p.weak, &p.classifier, &p.eval_classifier];
    for (name, src) in names.into_iter().zip(sources) {
        let read = |f: &str| -> Result<Vec<u8>> {
            match std::fs::read(src.join(f)) {
                Ok(bytes) => Ok(bytes),
                Err(e) => crate::error::input_error!(
                    "cannot read {}: {e}; pass an export-STEP/ folder of `toy train` (config.json, \
                     model.safetensors, train.json)",
                    src.join(f).display()
                ),
            }
        };
        let (config_bytes, weights, train_json) = (
            read("config.json")?,
            read("model.safetensors")?,
            read("train.json")?,
        );
        let config: ToyConfig = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("{}", src.join("config.json").display()))?;
        let mut training: serde_json::Value = serde_json::from_slice(&train_json)
            .with_context(|| format!("{}", src.join("train.json").display()))?;
        if let Some(n) = notes.get(name) {
            training["note"] = serde_json::Value::String(n.clone());
        }
        let dest = p.out.join(name);
        std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
        staged.add(&dest.join("config.json"), &config_bytes)?;
        staged.add(&dest.join("model.safetensors"), &weights)?;
        models.insert(
            name.to_string(),
            ManifestEntry {
                dir: name.to_string(),
                sha256: model::sha256_hex(&weights),
                bytes: weights.len() as u64,
                config,
                training,
            },
        );
    }
    let manifest = Manifest {
        dataset: serde_json::json!({
            "generator": "steerdiff_pipelines::toy::data (procedural 32×32 RGB shapes; image i of seed s is a pure function of (s, i), class i mod 10)",
            "classes": data::CLASS_NAMES,
            "size": [3, 32, 32],
            "pixel_range": [-1.0, 1.0],
            "training_seeds": {"toy-flow": 1, "toy-flow-weak": 1, "toy-classifier": 2, "toy-eval-classifier": 3},
            "evaluation_seed": crate::toy_eval::EVAL_DATA_SEED,
            "rotation": "each model's training.spec.data_rotation (absent: full); `toy dataset` and the classifier accuracies use full",
        }),
        models,
    };
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    staged.add(&p.out.join("manifest.json"), text.as_bytes())?;
    staged.commit()?;
    eprintln!("steerdiff: wrote {}", p.out.join("manifest.json").display());
    Ok(())
}
