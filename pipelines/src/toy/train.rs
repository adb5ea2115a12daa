//! Reproducible training of the toy models, with checkpoints and resume.
//!
//! Every random number is drawn from steerdiff's seeded streams: images are
//! `data::image(data_seed, step·batch + i)` (a fresh, never-repeated stream of the procedural
//! dataset), the flow's noise, times and label drops come from `noise_seed` keyed by the step,
//! and initialisation from `init_seed`. A run resumed from a checkpoint therefore continues
//! exactly as if it had not stopped (up to floating-point summation order).
//!
//! The work directory holds `checkpoint.safetensors` (weights `p.*`, weight average `e.*`, Adam
//! moments `m.*`/`v.*`) with `state.json` (step, elapsed time, recent losses), `log.csv`, and
//! `export-STEP/` folders (`config.json` + `model.safetensors` of the averaged weights +
//! `train.json`) at the steps named by `export_at` and at the end.
//!
//! A run may also start from an exported model ([`InitFrom`], `toy train --init-from DIR`):
//! training then continues across machines that kept only the shipped weights, not the work
//! directory.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use steerdiff_guidance::rng::{Domain, StreamKey};

use super::augment::Augment;
use super::classifier::{cross_entropy, Classifier, ClassifierArch, ClassifierConfig};
use super::data::{self, NUM_CLASSES, PIXELS};
use super::dit::{self, DitConfig};
use super::network::FlowNet;
use super::nn::{init_seeded, lr_at, AdamW, Ema};
use super::ToyConfig;
use crate::{Error, Result};

/// Everything that determines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// The architecture.
    pub config: ToyConfig,
    /// Total optimiser steps.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub final_lr_frac: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip: f64,
    /// Target decay of the weight average.
    pub ema_decay: f64,
    /// Probability of replacing a label by the null label (flow models).
    pub label_dropout: f64,
    /// Seed of the procedural dataset.
    pub data_seed: u64,
    /// Seed of the initial weights.
    pub init_seed: u64,
    /// Seed of noise, times and label drops.
    pub noise_seed: u64,
    /// Checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// Steps at which to export the averaged weights (the end is always exported).
    pub export_at: Vec<u64>,
    /// How flow training draws its times (absent in older specs = logit-normal).
    #[serde(default)]
    pub time_sampling: TimeSampling,
    /// The generator variant trained on (absent in older specs = full rotation).
    #[serde(default)]
    pub data_rotation: data::Rotation,
    /// Weight λ of the contrastive flow-matching term (ΔFM, Stoica et al. 2025, eq. 6):
    /// `L = ‖v̂ − v‖² − λ‖v̂ − ṽ‖²`, where `ṽ` is the target of another image of the batch. It
    /// pushes the conditional predictions of different images apart; absent = 0 (plain flow
    /// matching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrastive: Option<f64>,
    /// Representation alignment of the flow model ([`super::repa`]); absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repa: Option<RepaSpec>,
    /// Warm start from an exported model's weights instead of `init_seed`; absent = a fresh
    /// initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// Augmentation of classifier training images; absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
}

/// A warm start: the run's weights (and their average) begin as an exported model's, its
/// optimiser moments at zero, and its data and noise streams after the steps that model was
/// trained for, so the continued run sees images it has not seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitFrom {
    /// The model directory (`config.json` + `model.safetensors`), as given.
    pub dir: String,
    /// sha256 of its `model.safetensors`, checked when the run starts.
    pub sha256: String,
    /// Steps the weights were trained for, over every run they come from (a warm-started
    /// model's own steps plus its warm start's offset): step `s` of this run draws the
    /// streams of step `stream_offset + s`.
    pub stream_offset: u64,
}

impl InitFrom {
    /// Reads the warm start of `dir`: an export (`train.json` gives the steps trained) or a
    /// model of a manifest in `dir`'s parent (its entry gives them). Where that model was
    /// itself warm-started, its warm start's offset is added, so a chain of runs never draws
    /// the same images twice. `config` is the architecture the run builds; the model's
    /// `config.json` must match it.
    pub fn read(dir: &Path, config: &ToyConfig) -> Result<InitFrom> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            Error::Spec(format!(
                "--init-from {}: {e}; pass a model directory holding config.json and \
                 model.safetensors (an export-STEP/ folder or assets/toy-flow)",
                dir.display()
            ))
        })?;
        let theirs: ToyConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("{}: {e}", cfg_path.display())))?;
        if &theirs != config {
            return Err(Error::Spec(format!(
                "--init-from {} holds {theirs:?}, but this run builds {config:?}; pass the \
                 same --arch / --channels / --hidden / --depth as that model",
                dir.display()
            )));
        }
        let train_json = dir.join("train.json");
        // An export's train.json, or the manifest entry's `training`, which is the packaged
        // train.json (plus a note).
        let info: ExportInfo = if train_json.exists() {
            let text = std::fs::read_to_string(&train_json).map_err(|e| io(e, &train_json))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::Spec(format!("{}: {e}", train_json.display())))?
        } else {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let parent = dir.parent().unwrap_or(Path::new("."));
            let manifest = super::Manifest::load(parent).map_err(|e| {
                Error::Spec(format!(
                    "--init-from {}: no train.json, and no manifest beside it to say how long \
                     it was trained ({e})",
                    dir.display()
                ))
            })?;
            serde_json::from_value(manifest.entry(name)?.training.clone()).map_err(|e| {
                Error::Spec(format!(
                    "the manifest entry {name}: training is not a `toy train` export record \
                     (step, spec, …): {e}"
                ))
            })?
        };
        let stream_offset = info.step + info.spec.init_from.map_or(0, |i| i.stream_offset);
        Ok(InitFrom {
            dir: dir.display().to_string(),
            sha256: super::model::sha256_file(&dir.join("model.safetensors"))?,
            stream_offset,
        })
    }

    /// Sets the model's variables of `opt` (all but the REPA projector's) and their averages
    /// to the weights in `self.dir`, after checking their sha256.
    fn apply(&self, opt: &AdamW, ema: &mut Ema, dev: &Device) -> Result<()> {
        let path = Path::new(&self.dir).join("model.safetensors");
        // Read once: the bytes that are hashed are the bytes that are loaded.
        let bytes = std::fs::read(&path).map_err(|e| io(e, &path))?;
        let found = super::model::sha256_hex(&bytes);
        if found != self.sha256 {
            return Err(Error::Spec(format!(
                "{}: sha256 {found} is not the {} this run was started with; the warm start's \
                 weights changed",
                path.display(),
                self.sha256
            )));
        }
        let saved = candle_core::safetensors::load_buffer(&bytes, dev)?;
        let mut used = 0;
        for (i, (name, var)) in opt.vars.iter().enumerate() {
            if super::repa::is_projector(name) {
                continue;
            }
            let w = saved
                .get(name)
                .ok_or_else(|| Error::Spec(format!("{} lacks {name}", path.display())))?;
            if w.dims() != var.dims() {
                return Err(Error::Spec(format!(
                    "{}: {name} has shape {:?}, the run's has {:?}",
                    path.display(),
                    w.dims(),
                    var.dims()
                )));
            }
            var.set(w)?;
            ema.values[i] = w.copy()?;
            used += 1;
        }
        if used != saved.len() {
            return Err(Error::Spec(format!(
                "{} holds {} tensors, the run's model {used}: not the same network",
                path.display(),
                saved.len()
            )));
        }
        Ok(())
    }
}

/// The representation-alignment settings of a flow run ([`super::repa`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepaSpec {
    /// Weight λ of the alignment loss (the paper's default is 0.5).
    pub weight: f64,
    /// The tokens after this many blocks are aligned (1 ≤ block ≤ depth).
    pub block: usize,
    /// The teacher: a cnn-a classifier of the manifest (the guidance classifier).
    pub teacher: String,
    /// The teacher weights' sha256, checked when the run starts or resumes.
    pub teacher_sha256: String,
}

/// The distribution of training times `t` of the flow loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSampling {
    /// `t = sigmoid(n)`, `n ~ N(0, 1)` (Esser et al. 2024, §3.1): concentrates on mid times;
    /// only 1.4 % of draws exceed 0.9.
    #[default]
    LogitNormal,
    /// `t ~ U(0, 1)`: the high-noise times, where the class decides the layout, get as much
    /// training as any other.
    Uniform,
}

impl TimeSampling {
    /// Maps one standard normal `n` and one uniform `u` (both drawn per image) to a time.
    pub fn time(self, n: f32, u: f32) -> f32 {
        match self {
            TimeSampling::LogitNormal => 1.0 / (1.0 + (-n).exp()),
            TimeSampling::Uniform => u,
        }
    }
}

impl std::str::FromStr for TimeSampling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "logit-normal" => Ok(TimeSampling::LogitNormal),
            "uniform" => Ok(TimeSampling::Uniform),
            other => Err(Error::Spec(format!(
                "unknown time sampling `{other}`; valid: logit-normal, uniform"
            ))),
        }
    }
}

/// `state.json` of a work directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// The spec the run was started with.
    pub spec: TrainSpec,
    /// Steps done.
    pub step: u64,
    /// Training wall time so far, seconds (summed over resumes).
    pub elapsed_s: f64,
    /// Mean main loss (flow or classification, without the REPA / ΔFM terms) of the last
    /// logged window, or of the last 100 steps at a checkpoint.
    pub recent_loss: f64,
}

/// Metadata written beside an export (`train.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportInfo {
    /// The spec.
    pub spec: TrainSpec,
    /// Steps trained when exported.
    pub step: u64,
    /// Mean main loss (flow or classification, without the REPA / ΔFM terms) over the last
    /// 100 steps.
    pub final_loss: f64,
    /// Training wall time, seconds.
    pub wall_s: f64,
    /// Number of parameters.
    pub parameters: usize,
    /// Where it ran.
    pub machine: String,
}

enum Net {
    Flow(FlowNet, Option<Box<Alignment>>),
    Classifier(Classifier),
}

/// What representation alignment needs during training: the frozen teacher and the projector.
struct Alignment {
    teacher: Classifier,
    projector: super::repa::Projector,
}

/// Loads the teacher of `r` (checking its sha256) and builds the projector in `vb`, for the
/// features of `net` at tap `r.block`.
fn alignment(r: &RepaSpec, net: &FlowNet, vb: VarBuilder) -> Result<Alignment> {
    let tap_width = net.tap_width(r.block).map_err(Error::Spec)?;
    if !(r.weight.is_finite() && r.weight > 0.0) {
        return Err(Error::Spec(format!(
            "REPA weight must be a positive number (got {})",
            r.weight
        )));
    }
    let assets = super::Assets::locate();
    let entry = super::model::Manifest::of(&assets)?
        .entry(&r.teacher)?
        .clone();
    if entry.sha256 != r.teacher_sha256 {
        return Err(Error::Spec(format!(
            "REPA teacher `{}` has sha256 {} but this run was started with {}: the teacher \
             changed, so the run cannot be reproduced",
            r.teacher, entry.sha256, r.teacher_sha256
        )));
    }
    let (config, weights) = super::model::checked_files(&assets, &r.teacher)?;
    let ToyConfig::Classifier(config) = config else {
        return Err(Error::Spec(format!(
            "REPA teacher `{}` is not a classifier",
            r.teacher
        )));
    };
    let teacher = Classifier::new(
        &config,
        super::model::var_builder_from_bytes(weights, vb.device())?,
    )?;
    let width = match &teacher.config {
        ClassifierConfig {
            arch: ClassifierArch::CnnA,
            width,
            ..
        } => 2 * width,
        _ => {
            return Err(Error::Spec(format!(
                "REPA teacher `{}` must be a cnn-a classifier (its 8×8 map matches the DiT's \
                 patch grid)",
                r.teacher
            )))
        }
    };
    let projector = super::repa::Projector::new(tap_width, width, vb)?;
    Ok(Alignment { teacher, projector })
}

fn build(spec: &TrainSpec, vb: VarBuilder) -> Result<Net> {
    if let Some(net) = FlowNet::new(&spec.config, vb.clone())? {
        let align = match &spec.repa {
            Some(r) => Some(Box::new(alignment(r, &net, vb)?)),
            None => None,
        };
        return Ok(Net::Flow(net, align));
    }
    match &spec.config {
        ToyConfig::Classifier(c) if spec.repa.is_none() => {
            Ok(Net::Classifier(Classifier::for_training(c, vb)?))
        }
        _ => Err(Error::Spec(
            "representation alignment (REPA) is for flow models only".into(),
        )),
    }
}

fn io(e: std::io::Error, what: &Path) -> Error {
    Error::Spec(format!("{}: {e}", what.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io(e, &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| io(e, path))
}

fn save_tensors(path: &Path, map: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let on_cpu = map
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    candle_core::safetensors::save(&on_cpu, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| io(e, path))
}

/// A short description of this machine (CPU model and cores), for records.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    format!("{cpu}, {cores} cores, RAYON_NUM_THREADS={threads}, CPU f32 (candle)")
}

/// The loss of one step, and its flow (or classification) part.
fn step_loss(net: &Net, spec: &TrainSpec, step: u64, dev: &Device) -> Result<(Tensor, f64)> {
    let b = spec.batch;
    let (mut pix, labels) =
        data::batch_with(spec.data_rotation, spec.data_seed, step * b as u64, b);
    if let Some(augment) = &spec.augment {
        let key = StreamKey {
            seed: spec.noise_seed,
            lineage: 4,
            step,
            domain: Domain::Step,
        };
        augment.apply(&mut pix, b, key);
    }
    let x0 = Tensor::from_vec(pix, (b, 3, data::SIZE, data::SIZE), dev)?;
    match net {
        Net::Classifier(c) => {
            let y = Tensor::from_vec(labels, b, dev)?;
            let loss = cross_entropy(&c.logits(&x0)?, &y)?;
            let value = loss.to_scalar::<f32>()? as f64;
            Ok((loss, value))
        }
        Net::Flow(m, align) => {
            let key = |lineage| StreamKey {
                seed: spec.noise_seed,
                lineage,
                step,
                domain: Domain::Step,
            };
            let eps = Tensor::from_vec(key(0).normals(b * PIXELS), x0.shape(), dev)?;
            let t: Vec<f32> = key(1)
                .normals(b)
                .into_iter()
                .zip(key(3).uniforms(b))
                .map(|(n, u)| spec.time_sampling.time(n, u as f32))
                .collect();
            let drop = key(2).uniforms(b);
            let y: Vec<u32> = labels
                .iter()
                .zip(&drop)
                .map(|(&l, &u)| {
                    if u < spec.label_dropout {
                        NUM_CLASSES as u32
                    } else {
                        l
                    }
                })
                .collect();
            let tt = Tensor::from_vec(t.clone(), (b, 1, 1, 1), dev)?;
            let xt = (x0.broadcast_mul(&(1.0 - &tt)?)? + eps.broadcast_mul(&tt)?)?;
            let target = (&eps - &x0)?;
            let ts = (Tensor::from_vec(t, b, dev)? * 1000.0)?;
            let y = Tensor::from_vec(y, b, dev)?;
            let tap = spec.repa.as_ref().map(|r| r.block);
            let (v, tokens) = m.forward_tapped(&xt, &ts, &y, tap)?;
            let mut flow = dit::mse(&v, &target)?;
            let flow_value = flow.to_scalar::<f32>()? as f64;
            if let Some(lambda) = spec.contrastive.filter(|&l| l != 0.0) {
                // The negatives ṽ: each image's prediction against the next image's target.
                let others =
                    Tensor::cat(&[target.narrow(0, 1, b - 1)?, target.narrow(0, 0, 1)?], 0)?;
                flow = (flow - (dit::mse(&v, &others)? * lambda)?)?;
            }
            match (align, &spec.repa, tokens) {
                (Some(a), Some(r), Some(z)) => {
                    let feats = super::repa::targets(&a.teacher, &x0)?;
                    let cos = super::repa::negative_cosine(&a.projector.forward(&z)?, &feats)?;
                    Ok(((flow + (cos * r.weight)?)?, flow_value))
                }
                _ => Ok((flow, flow_value)),
            }
        }
    }
}

/// Trains (or resumes, when `resume` and `dir` holds a checkpoint) and returns the final state.
/// Progress goes to stderr every `log_every` steps and to `dir/log.csv`.
pub fn train(spec: &TrainSpec, dir: &Path, resume: bool, log_every: u64) -> Result<TrainState> {
    train_on(spec, dir, resume, log_every, &Device::Cpu)
}

/// [`train`] on `dev` (a CUDA or Metal device when candle is built with that feature). The
/// random streams are drawn on the CPU and copied over, so a run's images, noise and times do
/// not depend on the device; only floating-point rounding does. Checkpoints and exports are
/// written from CPU copies and resume on any device.
pub fn train_on(
    spec: &TrainSpec,
    dir: &Path,
    resume: bool,
    log_every: u64,
    dev: &Device,
) -> Result<TrainState> {
    let dev = dev.clone();
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let net = build(spec, vb)?;
    init_seeded(&varmap, spec.init_seed, FlowNet::zero_init(&spec.config))?;
    let mut opt = AdamW::new(&varmap, spec.weight_decay)?;
    let mut ema = Ema::new(&opt.vars, spec.ema_decay)?;
    let ckpt = dir.join("checkpoint.safetensors");
    let state_path = dir.join("state.json");
    let mut state = TrainState {
        spec: spec.clone(),
        step: 0,
        elapsed_s: 0.0,
        recent_loss: f64::NAN,
    };
    if resume && ckpt.exists() {
        let text = std::fs::read_to_string(&state_path).map_err(|e| io(e, &state_path))?;
        let old: TrainState = serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("{}: {e}", state_path.display())))?;
        if old.spec.config != spec.config || old.spec.batch != spec.batch {
            return Err(Error::Spec(format!(
                "cannot resume {}: it was started with a different architecture or batch",
                dir.display()
            )));
        }
        if old.spec.init_from != spec.init_from {
            return Err(Error::Spec(format!(
                "cannot resume {}: it was started from {:?}, this run from {:?}; resume with \
                 the same --init-from",
                dir.display(),
                old.spec.init_from.as_ref().map(|i| &i.dir),
                spec.init_from.as_ref().map(|i| &i.dir)
            )));
        }
        let saved = candle_core::safetensors::load(&ckpt, &dev)?;
        let get = |k: String| {
            saved
                .get(&k)
                .cloned()
                .ok_or_else(|| Error::Spec(format!("checkpoint lacks {k}")))
        };
        for (i, (name, var)) in opt.vars.iter().enumerate() {
            var.set(&get(format!("p.{name}"))?)?;
            ema.values[i] = get(format!("e.{name}"))?;
            opt.m[i] = get(format!("m.{name}"))?;
            opt.v[i] = get(format!("v.{name}"))?;
        }
        opt.t = old.step;
        state.step = old.step;
        state.elapsed_s = old.elapsed_s;
        eprintln!("resuming {} at step {}", dir.display(), old.step);
    } else if let Some(init) = &spec.init_from {
        init.apply(&opt, &mut ema, &dev)?;
        eprintln!(
            "starting from {} (trained {} steps)",
            init.dir, init.stream_offset
        );
    }
    let log_path = dir.join("log.csv");
    if state.step > 0 {
        // Drop log lines of steps after the checkpoint (they are about to be redone).
        if let Ok(text) = std::fs::read_to_string(&log_path) {
            let kept: String = text
                .lines()
                .filter(|l| {
                    l.split(',')
                        .next()
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_none_or(|s| s <= state.step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            write_atomic(&log_path, kept.as_bytes())?;
        }
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io(e, &log_path))?;
    if state.step == 0 {
        writeln!(log, "step,loss,lr,grad_norm,elapsed_s,main_loss")
            .map_err(|e| io(e, &log_path))?;
    }
    let started = Instant::now();
    let base_elapsed = state.elapsed_s;
    let mut window: Vec<f64> = Vec::new();
    let mut last100: Vec<f64> = Vec::new();
    if state.step >= spec.steps && !dir.join(format!("export-{}", state.step)).exists() {
        // A run stopped early: `--resume --steps S` with S ≤ the checkpoint's step exports the
        // checkpoint's averaged weights without training further.
        let info = ExportInfo {
            spec: spec.clone(),
            step: state.step,
            final_loss: state.recent_loss,
            wall_s: state.elapsed_s,
            parameters: exported_parameters(&opt, &ema),
            machine: machine(),
        };
        export(dir, &opt, &ema, &info)?;
    }
    let offset = spec.init_from.as_ref().map_or(0, |i| i.stream_offset);
    while state.step < spec.steps {
        let step = state.step;
        let (loss, part) = step_loss(&net, spec, offset + step, &dev)?;
        let lv = loss.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            return Err(Error::Spec(format!("loss is {lv} at step {step}")));
        }
        let lr = lr_at(step, spec.steps, spec.warmup, spec.lr, spec.final_lr_frac);
        let gn = opt.step(&loss, lr, spec.clip)?;
        ema.update(&opt.vars, step)?;
        state.step += 1;
        state.elapsed_s = base_elapsed + started.elapsed().as_secs_f64();
        // Progress and records report the main loss: the auxiliary terms (REPA's cosine,
        // ΔFM's negative error) shift the total by amounts unrelated to how well the model
        // fits. log.csv has both.
        window.push(part);
        last100.push(part);
        if last100.len() > 100 {
            last100.remove(0);
        }
        writeln!(
            log,
            "{},{lv:.6},{lr:.3e},{gn:.4},{:.1},{part:.6}",
            state.step, state.elapsed_s
        )
        .map_err(|e| io(e, &log_path))?;
        if state.step % log_every == 0 || state.step == spec.steps {
            state.recent_loss = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            eprintln!(
                "step {}/{} loss {:.5} lr {lr:.2e} |g| {gn:.3} {:.1} s ({:.2} s/step)",
                state.step,
                spec.steps,
                state.recent_loss,
                state.elapsed_s,
                state.elapsed_s / state.step as f64
            );
        }
        let do_export = spec.export_at.contains(&state.step) || state.step >= spec.steps;
        if state.step % spec.checkpoint_every == 0 || do_export {
            let mut map = HashMap::new();
            for (i, (name, var)) in opt.vars.iter().enumerate() {
                map.insert(format!("p.{name}"), var.as_tensor().clone());
                map.insert(format!("e.{name}"), ema.values[i].clone());
                map.insert(format!("m.{name}"), opt.m[i].clone());
                map.insert(format!("v.{name}"), opt.v[i].clone());
            }
            save_tensors(&ckpt, &map)?;
            state.recent_loss = last100.iter().sum::<f64>() / last100.len().max(1) as f64;
            let json = serde_json::to_string_pretty(&state).expect("state serialises");
            write_atomic(&state_path, json.as_bytes())?;
        }
        if do_export {
            let info = ExportInfo {
                spec: spec.clone(),
                step: state.step,
                final_loss: last100.iter().sum::<f64>() / last100.len().max(1) as f64,
                wall_s: state.elapsed_s,
                parameters: exported_parameters(&opt, &ema),
                machine: machine(),
            };
            export(dir, &opt, &ema, &info)?;
        }
    }
    Ok(state)
}

/// The averaged weights an export holds: every variable but the REPA projector's.
fn exported<'a>(opt: &'a AdamW, ema: &'a Ema) -> impl Iterator<Item = (&'a String, &'a Tensor)> {
    opt.vars
        .iter()
        .zip(&ema.values)
        .filter(|((name, _), _)| !super::repa::is_projector(name))
        .map(|((name, _), e)| (name, e))
}

/// Number of scalars an export holds.
fn exported_parameters(opt: &AdamW, ema: &Ema) -> usize {
    exported(opt, ema).map(|(_, t)| t.elem_count()).sum()
}

/// Writes `dir/export-STEP/` (averaged weights, config, training record).
fn export(dir: &Path, opt: &AdamW, ema: &Ema, info: &ExportInfo) -> Result<()> {
    let out = dir.join(format!("export-{}", info.step));
    std::fs::create_dir_all(&out).map_err(|e| io(e, &out))?;
    let mut map: HashMap<String, Tensor> = exported(opt, ema)
        .map(|(name, e)| (name.clone(), e.clone()))
        .collect();
    if let ToyConfig::Classifier(config) = &info.spec.config {
        map.extend(batch_statistics(config, &info.spec, &map)?);
    }
    save_tensors(&out.join("model.safetensors"), &map)?;
    write_atomic(
        &out.join("config.json"),
        serde_json::to_string_pretty(&info.spec.config)
            .expect("config serialises")
            .as_bytes(),
    )?;
    write_atomic(
        &out.join("train.json"),
        serde_json::to_string_pretty(info)
            .expect("info serialises")
            .as_bytes(),
    )?;
    eprintln!("exported {}", out.display());
    Ok(())
}

/// Images of the training seed from this index on fix a ResNet's batch statistics at export:
/// far past any run's stream, so they are fresh images of the training distribution.
const CALIBRATION_START: u64 = 1 << 40;

/// Images the batch statistics are measured on (100 per class).
const CALIBRATION_IMAGES: usize = 1000;

/// The fixed batch statistics of a classifier with batch normalisation, measured for the
/// exported weights `map` on [`CALIBRATION_IMAGES`] fresh, unaugmented training images (see
/// [`super::resnet`]); nothing for the other families.
fn batch_statistics(
    config: &super::ClassifierConfig,
    spec: &TrainSpec,
    map: &HashMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    if config.arch != ClassifierArch::Resnet8 {
        return Ok(Vec::new());
    }
    let dev = Device::Cpu;
    let weights: HashMap<String, Tensor> = map
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&dev)?)))
        .collect::<Result<_>>()?;
    let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
    let mut net = Classifier::for_training(config, vb)?;
    let (pix, _) = data::batch_with(
        spec.data_rotation,
        spec.data_seed,
        CALIBRATION_START,
        CALIBRATION_IMAGES,
    );
    let x = Tensor::from_vec(pix, (CALIBRATION_IMAGES, 3, data::SIZE, data::SIZE), &dev)?;
    Ok(net.calibrate(&x)?)
}

/// The default spec of each toy model (`what`: `flow`, `classifier`, `eval-classifier`,
/// `judge`).
pub fn default_spec(what: &str, steps: u64) -> Result<TrainSpec> {
    let base = TrainSpec {
        config: ToyConfig::Dit(DitConfig::toy()),
        steps,
        batch: 32,
        lr: 8e-4,
        warmup: 200,
        final_lr_frac: 0.05,
        weight_decay: 0.0,
        clip: 1.0,
        ema_decay: 0.999,
        label_dropout: 0.12,
        data_seed: 1,
        init_seed: 11,
        noise_seed: 21,
        checkpoint_every: 100,
        export_at: vec![steps / 8],
        // The shipped model's recipe; the other choices are flags of `toy train`.
        time_sampling: TimeSampling::LogitNormal,
        data_rotation: data::Rotation::Full,
        contrastive: None,
        repa: None,
        init_from: None,
        augment: None,
    };
    // The classifiers' shared recipe; each has its own network, data stream and seeds.
    let classifier = |arch, width, seed| TrainSpec {
        config: ToyConfig::Classifier(ClassifierConfig {
            arch,
            width,
            num_classes: NUM_CLASSES,
        }),
        batch: 64,
        lr: 2e-3,
        warmup: 100,
        weight_decay: 0.01,
        ema_decay: 0.99,
        label_dropout: 0.0,
        data_seed: seed,
        init_seed: 10 + seed,
        export_at: vec![],
        ..base.clone()
    };
    Ok(match what {
        "flow" => base,
        "classifier" => classifier(ClassifierArch::CnnA, 48, 2),
        "eval-classifier" => classifier(ClassifierArch::CnnA, 40, 3),
        "judge" => TrainSpec {
            noise_seed: 24,
            augment: Some(Augment {
                shift: 2,
                flip: true,
            }),
            ..classifier(ClassifierArch::Resnet8, 16, 4)
        },
        other => {
            return Err(Error::Spec(format!(
                "unknown model to train `{other}`; valid: flow, classifier, eval-classifier, judge"
            )))
        }
    })
}

/// The newest export folder of a work directory.
pub fn latest_export(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("export-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            if best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, e.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;

    fn grads_all_nonzero(config: ToyConfig, steps: u64) {
        let mut spec = default_spec("flow", 10).unwrap();
        spec.config = config;
        grads_all_nonzero_in(spec, steps);
    }

    fn grads_all_nonzero_in(mut spec: TrainSpec, steps: u64) {
        let dev = Device::Cpu;
        spec.batch = 4;
        spec.warmup = 1;
        spec.lr = 1e-2;
        let varmap = VarMap::new();
        let net = build(&spec, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        init_seeded(&varmap, 1, FlowNet::zero_init(&spec.config)).unwrap();
        let mut opt = AdamW::new(&varmap, 0.0).unwrap();
        // adaLN-Zero: gates and the output layer start at zero, so a few updates are needed
        // before gradients reach every layer.
        for s in 0..steps {
            let (loss, _) = step_loss(&net, &spec, s, &dev).unwrap();
            opt.step(&loss, 1e-2, 0.0).unwrap();
        }
        let (loss, _) = step_loss(&net, &spec, steps, &dev).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in &opt.vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0, "{name} has a zero gradient");
        }
    }

    #[test]
    fn every_unet_parameter_gets_a_gradient() {
        let mut c = super::super::UnetConfig::toy();
        c.channels = vec![8, 16, 16];
        c.num_heads = 2;
        c.embed_size = 16;
        c.frequency_size = 16;
        grads_all_nonzero(ToyConfig::Unet(c), 3);
    }

    #[test]
    fn every_dit_parameter_gets_a_gradient() {
        let mut c = DitConfig::toy();
        c.hidden_size = 32;
        c.depth = 2;
        c.num_heads = 2;
        grads_all_nonzero(ToyConfig::Dit(c), 3);
    }

    #[test]
    fn the_contrastive_term_subtracts_the_error_against_another_images_target() {
        let dev = Device::Cpu;
        let mut c = DitConfig::toy();
        c.hidden_size = 16;
        c.depth = 1;
        c.num_heads = 2;
        let mut spec = default_spec("flow", 10).unwrap();
        spec.config = ToyConfig::Dit(c);
        spec.batch = 3;
        let varmap = VarMap::new();
        let net = build(&spec, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        init_seeded(&varmap, 1, |_| false).unwrap();
        let (plain, plain_mse) = step_loss(&net, &spec, 7, &dev).unwrap();
        spec.contrastive = Some(0.05);
        let (with, with_mse) = step_loss(&net, &spec, 7, &dev).unwrap();
        let (plain, with) = (
            plain.to_scalar::<f32>().unwrap() as f64,
            with.to_scalar::<f32>().unwrap() as f64,
        );
        // Same draws, same flow error; the total is lower by λ·(error against the negatives),
        // which for an untrained net is about the plain error.
        assert_eq!(plain_mse, with_mse);
        assert!(
            with < plain && with > plain - 0.1 * plain,
            "{plain} → {with}"
        );
    }

    #[test]
    fn every_parameter_gets_a_gradient_with_representation_alignment() {
        let mut spec = default_spec("flow", 10).unwrap();
        let mut c = DitConfig::toy();
        c.hidden_size = 32;
        c.depth = 2;
        c.num_heads = 2;
        spec.config = ToyConfig::Dit(c);
        let teacher = super::super::model::CLASSIFIER.to_string();
        let manifest = super::super::Manifest::of(&super::super::Assets::Embedded).unwrap();
        spec.repa = Some(RepaSpec {
            weight: 0.5,
            block: 1,
            teacher_sha256: manifest.entry(&teacher).unwrap().sha256.clone(),
            teacher,
        });
        grads_all_nonzero_in(spec.clone(), 3);
        // A teacher whose weights changed since the run started is refused.
        let mut stale = spec.clone();
        stale.repa.as_mut().unwrap().teacher_sha256 = "0".repeat(64);
        let varmap = VarMap::new();
        let err = build(
            &stale,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .err()
        .expect("a stale teacher is refused")
        .to_string();
        assert!(err.contains("teacher changed"), "{err}");
    }

    #[test]
    fn every_classifier_parameter_gets_a_gradient() {
        for arch in [
            ClassifierArch::CnnA,
            ClassifierArch::CnnB,
            ClassifierArch::Resnet8,
        ] {
            let c = ClassifierConfig {
                arch,
                width: 4,
                num_classes: NUM_CLASSES,
            };
            grads_all_nonzero(ToyConfig::Classifier(c), 0);
        }
    }

    #[test]
    fn a_resnet_export_carries_the_batch_statistics_of_its_final_weights() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = default_spec("judge", 2).unwrap();
        spec.batch = 4;
        let ToyConfig::Classifier(c) = &mut spec.config else {
            panic!("the judge is a classifier")
        };
        c.width = 4;
        let config = c.clone();
        train(&spec, dir.path(), false, 100).unwrap();
        let weights = load_cpu(&dir.path().join("export-2/model.safetensors"));
        // Every BN has both statistics: stem, two per block, and the projections of the
        // two blocks that widen.
        let stats = weights.keys().filter(|k| k.contains(".running_")).count();
        assert_eq!(stats, 2 * (1 + 2 * 3 + 2), "{:?}", weights.keys());
        // With them, inference on the calibration batch is training mode on that batch.
        let (pix, _) = data::batch_with(
            spec.data_rotation,
            spec.data_seed,
            CALIBRATION_START,
            CALIBRATION_IMAGES,
        );
        let x = Tensor::from_vec(pix, (CALIBRATION_IMAGES, 3, 32, 32), &Device::Cpu).unwrap();
        let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
        let fixed = Classifier::new(&config, vb).unwrap().logits(&x).unwrap();
        let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
        let batch = Classifier::for_training(&config, vb)
            .unwrap()
            .logits(&x)
            .unwrap();
        assert!(
            max_abs_diff(&fixed, &batch) < 1e-3,
            "{}",
            max_abs_diff(&fixed, &batch)
        );
        // An image's logits at inference do not depend on the batch it comes in.
        let one = Classifier::new(
            &config,
            VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu),
        )
        .unwrap()
        .logits(&x.narrow(0, 5, 1).unwrap())
        .unwrap();
        assert!(max_abs_diff(&one, &fixed.narrow(0, 5, 1).unwrap()) < 1e-4);
        // Weights without statistics are refused for inference, naming what is missing.
        let bare: HashMap<String, Tensor> = weights
            .into_iter()
            .filter(|(k, _)| !k.contains(".running_"))
            .collect();
        let err = Classifier::new(
            &config,
            VarBuilder::from_tensors(bare, DType::F32, &Device::Cpu),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("running_mean"), "{err}");
    }

    fn load_cpu(path: &Path) -> HashMap<String, Tensor> {
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    #[test]
    fn resume_continues_exactly() {
        let dir = std::env::temp_dir().join(format!("steerdiff-toy-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec = default_spec("classifier", 4).unwrap();
        spec.batch = 4;
        spec.checkpoint_every = 2;
        if let ToyConfig::Classifier(c) = &mut spec.config {
            c.width = 4;
        }
        let _straight = train(&spec, &dir.join("a"), false, 100).unwrap();
        let mut half = spec.clone();
        half.steps = 2;
        train(&half, &dir.join("b"), false, 100).unwrap();
        let resumed = train(&spec, &dir.join("b"), true, 100).unwrap();
        assert_eq!(resumed.step, 4);
        let a = load_cpu(&dir.join("a/export-4/model.safetensors"));
        let b = load_cpu(&dir.join("b/export-4/model.safetensors"));
        for (k, t) in &a {
            let d = max_abs_diff(t, &b[k]);
            assert!(d < 1e-6, "{k} differs by {d}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_warm_start_begins_at_the_exported_weights_and_checks_them() {
        let dir = std::env::temp_dir().join(format!("steerdiff-toy-warm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec = default_spec("classifier", 2).unwrap();
        spec.batch = 4;
        if let ToyConfig::Classifier(c) = &mut spec.config {
            c.width = 4;
        }
        train(&spec, &dir.join("a"), false, 100).unwrap();
        let source = dir.join("a/export-2");
        let init = InitFrom::read(&source, &spec.config).unwrap();
        assert_eq!(
            init.stream_offset, 2,
            "the export's train.json says 2 steps"
        );
        // Zero steps: the end export is the warm start itself.
        let mut warm = spec.clone();
        warm.steps = 0;
        warm.init_from = Some(init.clone());
        train(&warm, &dir.join("c"), false, 100).unwrap();
        // A warm start from a warm-started run continues after both runs' steps.
        let mut chained = warm.clone();
        chained.steps = 3;
        chained.export_at = vec![];
        train(&chained, &dir.join("e"), false, 100).unwrap();
        let again = InitFrom::read(&dir.join("e/export-3"), &spec.config).unwrap();
        assert_eq!(again.stream_offset, 2 + 3);
        let a = load_cpu(&source.join("model.safetensors"));
        let c = load_cpu(&dir.join("c/export-0/model.safetensors"));
        assert_eq!(a.len(), c.len());
        for (k, t) in &a {
            assert_eq!(max_abs_diff(t, &c[k]), 0.0, "{k} moved");
        }
        // Another architecture is refused, naming the flags to fix.
        let mut wider = spec.config.clone();
        if let ToyConfig::Classifier(c) = &mut wider {
            c.width = 8;
        }
        let e = InitFrom::read(&source, &wider).unwrap_err().to_string();
        assert!(e.contains("--arch"), "{e}");
        // Weights that changed after the run was specified are refused.
        let mut tampered = warm.clone();
        tampered.init_from = Some(InitFrom {
            sha256: "0".repeat(64),
            ..init
        });
        let e = train(&tampered, &dir.join("d"), false, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256"), "{e}");
        // A run started afresh does not resume as a warm start (its streams would shift).
        let mut longer = warm.clone();
        longer.steps = 4;
        let e = train(&longer, &dir.join("a"), true, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("same --init-from"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_unet_export_loads_as_the_toy_flow_and_predicts() {
        use steerdiff_guidance::Denoiser as _;
        let dir = std::env::temp_dir().join(format!("steerdiff-toy-unet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec = default_spec("flow", 2).unwrap();
        let mut c = super::super::UnetConfig::toy();
        c.channels = vec![8, 8, 16];
        c.num_heads = 2;
        spec.config = ToyConfig::Unet(c.clone());
        spec.batch = 2;
        train(&spec, &dir, false, 100).unwrap();
        let export = dir.join("export-2");
        let text = std::fs::read_to_string(export.join("config.json")).unwrap();
        assert!(text.contains("\"model_type\": \"unet\""), "{text}");
        let config: ToyConfig = serde_json::from_str(&text).unwrap();
        let flow =
            super::super::ToyFlow::from_files(&config, &export.join("model.safetensors"), "u")
                .unwrap();
        // The exported (EMA) weights, loaded through the shipped path, give a non-zero
        // prediction after two updates of the zero-initialised output layer.
        let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let at = steerdiff_guidance::StepPoint {
            timestep: 500.0,
            alpha: 0.5,
            sigma: 0.5,
        };
        let v = flow
            .forward(&x, &at, &[steerdiff_guidance::Condition::Class(3)])
            .unwrap();
        assert_eq!(v.dims(), &[1, 3, 32, 32]);
        let norm = v
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "{norm}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
