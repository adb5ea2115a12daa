//! `steerdiff toy …`: the procedural dataset, training and evaluation of the embedded toy models.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use steerdiff_pipelines::toy::{data, train};

pub mod diagnose;
pub mod eval;
pub mod inpaint_demo;
mod package;

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
    Inpaint(inpaint_demo::InpaintArgs),
    /// Per-noise-level denoising error and label use of a flow model on dataset images.
    Diagnose(diagnose::DiagnoseArgs),
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
    pub flow: Option<PathBuf>,
    /// Export folder of the weaker twin.
    #[arg(long)]
    pub weak: Option<PathBuf>,
    /// Export folder of the guidance classifier.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Export folder of the first evaluation classifier (cnn-a).
    #[arg(long)]
    pub eval_classifier: Option<PathBuf>,
    /// Export folder of the judge (the default evaluation classifier, a ResNet).
    #[arg(long)]
    pub judge: Option<PathBuf>,
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
    /// Which model: flow, classifier, eval-classifier or judge.
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
        ToyCommand::Package(p) => package::package(p),
        ToyCommand::Eval(e) => eval::eval(e),
        ToyCommand::Inpaint(a) => inpaint_demo::run(a),
        ToyCommand::Diagnose(a) => diagnose::diagnose(a),
        ToyCommand::Samples {
            output,
            per_class,
            cfgs,
            steps,
            model,
        } => eval::samples_grid(output, *per_class, cfgs, *steps, model),
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
        let assets = steerdiff_pipelines::toy::Assets::locate();
        let teacher = steerdiff_pipelines::toy::model::CLASSIFIER.to_string();
        let manifest = steerdiff_pipelines::toy::Manifest::of(&assets)?;
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
    let device = crate::run::device::parse_device(&t.device)?;
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

/// Writes an RGB8 PNG through [`crate::output::Staged`] (a fresh temporary renamed into
/// place; written in place into a device such as `/dev/null`).
pub fn save_png(path: &std::path::Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let img = image::RgbImage::from_raw(w, h, rgb.to_vec()).context("image buffer size")?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .with_context(|| format!("encoding {}", path.display()))?;
    let mut staged = crate::output::Staged::new();
    staged.add(path, png.get_ref())?;
    staged.commit()
}
