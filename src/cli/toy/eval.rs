//! Measuring the toy models (`steerdiff toy eval`) and drawing their sample sheet
//! (`steerdiff toy samples`).
//!
//! Generated images are judged only by classifiers that never steer: the judge (`toy-judge`,
//! a ResNet of another family, seed, training stream and augmentation than the cnn-a guidance
//! classifier), with the first evaluation classifier (`toy-eval-classifier`, cnn-a at another
//! width) and the two's agreement beside it.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;
use steerdiff_pipelines::toy::model::{self, ToyClassifier};
use steerdiff_pipelines::toy::{data, CLASS_NAMES, NUM_CLASSES};

use super::EvalArgs;
use crate::output::Canvas;
use crate::run::{Job, Options, PathKind};

/// Dataset seed of the fresh evaluation images (training used seeds 1, 2 and 3).
pub const EVAL_DATA_SEED: u64 = 9001;

/// Seed of the first sample of class `k` in evaluations (`1_000_000 + 10_000·k`).
pub fn eval_seed(class: u32) -> u64 {
    1_000_000 + 10_000 * class as u64
}

/// `n` samples of class `class` from `model` (`toy` or `toy-weak`) with flow-Euler, CFG
/// `cfg`, groups seeded from `seed`.
pub fn generate(
    model: &str,
    class: u32,
    cfg: f64,
    n: usize,
    seed: u64,
    steps: usize,
) -> Result<Vec<Vec<f32>>> {
    let job = Job::load(
        model,
        &Options {
            path: PathKind::Flow,
            class: Some(CLASS_NAMES[class as usize].to_string()),
            steps: Some(steps),
            cfg: Some(cfg),
            n,
            seed,
            ..Options::default()
        },
    )?;
    let outcome = job.run(None)?;
    Ok(crate::output::samples(&outcome.population, 0)?
        .into_iter()
        .map(|r| r.x)
        .collect())
}

fn stack(images: &[Vec<f32>]) -> Result<Tensor> {
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(
        flat,
        (images.len(), 3, data::SIZE, data::SIZE),
        &Device::Cpu,
    )?)
}

/// Mean pairwise root-mean-square pixel distance (pixels in `[-1, 1]`).
pub fn mean_pairwise_distance(images: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    let mut pairs = 0usize;
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            let d: f64 = images[i]
                .iter()
                .zip(&images[j])
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / images[i].len() as f64;
            total += d.sqrt();
            pairs += 1;
        }
    }
    total / pairs.max(1) as f64
}

/// Fraction of `images` the classifier assigns to `labels`.
pub fn accuracy(clf: &ToyClassifier, images: &[Vec<f32>], labels: &[u32]) -> Result<f64> {
    Ok(hits(&clf.predict(&stack(images)?)?, labels))
}

/// Fraction of predictions equal to `labels`.
fn hits(pred: &[u32], labels: &[u32]) -> f64 {
    let ok = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    ok as f64 / labels.len().max(1) as f64
}

/// One row of the generated-image table.
#[derive(Debug, Clone, Serialize)]
pub struct GenRow {
    /// `toy` or `toy-weak`.
    pub model: String,
    /// CFG scale.
    pub cfg: f64,
    /// Samples measured.
    pub samples: usize,
    /// The judge's accuracy.
    pub accuracy: f64,
    /// Its standard error (binomial over the samples, each its own seed).
    pub accuracy_se: f64,
    /// The judge's accuracy per class.
    pub per_class: Vec<f64>,
    /// The first evaluation classifier's accuracy.
    pub eval_classifier_accuracy: f64,
    /// Fraction of samples the two put in the same class.
    pub agreement: f64,
    /// Mean within-class pairwise distance, averaged over classes.
    pub diversity: f64,
    /// `diversity` / the dataset's.
    pub diversity_ratio: f64,
    /// Wall time of sampling, seconds.
    pub wall_s: f64,
}

/// Everything `steerdiff toy eval` measures.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Fresh dataset images classified.
    pub dataset_images: usize,
    /// The judge's accuracy on them.
    pub judge_accuracy: Option<f64>,
    /// First evaluation classifier's accuracy on them.
    pub eval_classifier_accuracy: Option<f64>,
    /// Guidance-classifier accuracy on them.
    pub guidance_classifier_accuracy: Option<f64>,
    /// Within-class diversity of dataset images (100 per class, of the generator variant the
    /// flow model was trained on).
    pub dataset_diversity: f64,
    /// Solver steps.
    pub steps: usize,
    /// Generated-image rows.
    pub generated: Vec<GenRow>,
}

/// `steerdiff toy eval`.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let assets = model::Assets::locate();
    let eval_clf = ToyClassifier::load(&assets, model::EVAL_CLASSIFIER)?;
    let judge = ToyClassifier::load(&assets, model::JUDGE)?;
    let mut report = EvalReport {
        dataset_images: args.dataset_images,
        judge_accuracy: None,
        eval_classifier_accuracy: None,
        guidance_classifier_accuracy: None,
        dataset_diversity: 0.0,
        steps: args.steps,
        generated: Vec::new(),
    };
    if args.dataset_images > 0 {
        let guide = ToyClassifier::load(&assets, model::CLASSIFIER)?;
        let (pix, labels) = data::batch(EVAL_DATA_SEED, 0, args.dataset_images);
        let images: Vec<Vec<f32>> = pix.chunks(data::PIXELS).map(|c| c.to_vec()).collect();
        report.judge_accuracy = Some(accuracy(&judge, &images, &labels)?);
        report.eval_classifier_accuracy = Some(accuracy(&eval_clf, &images, &labels)?);
        report.guidance_classifier_accuracy = Some(accuracy(&guide, &images, &labels)?);
        eprintln!(
            "classifiers on {} fresh images: judge {:.4}, eval {:.4}, guidance {:.4}",
            args.dataset_images,
            report.judge_accuracy.unwrap_or(0.0),
            report.eval_classifier_accuracy.unwrap_or(0.0),
            report.guidance_classifier_accuracy.unwrap_or(0.0)
        );
    }
    // Diversity is compared with the images the flow model learnt from (its generator variant).
    let rotation = model::Manifest::of(&assets)?
        .entry(model::FLOW)?
        .data_rotation()?;
    let mut div = 0.0;
    for k in 0..NUM_CLASSES as u64 {
        let imgs: Vec<Vec<f32>> = (0..100)
            .map(|i| data::image_with(rotation, EVAL_DATA_SEED, 1_000_000 + k + 10 * i).0)
            .collect();
        div += mean_pairwise_distance(&imgs);
    }
    report.dataset_diversity = div / NUM_CLASSES as f64;
    for m in &args.models {
        for &cfg in &args.cfgs {
            let started = Instant::now();
            let mut per_class = Vec::new();
            let (mut correct, mut old_correct, mut agree) = (0.0, 0.0, 0.0);
            let mut div = 0.0;
            for k in 0..NUM_CLASSES as u32 {
                let imgs = generate(m, k, cfg, args.per_class, eval_seed(k), args.steps)?;
                let labels = vec![k; imgs.len()];
                let x = stack(&imgs)?;
                let (verdict, old) = (judge.predict(&x)?, eval_clf.predict(&x)?);
                let acc = hits(&verdict, &labels);
                correct += acc * imgs.len() as f64;
                old_correct += hits(&old, &labels) * imgs.len() as f64;
                agree += hits(&verdict, &old) * imgs.len() as f64;
                per_class.push(acc);
                div += mean_pairwise_distance(&imgs);
            }
            let samples = args.per_class * NUM_CLASSES;
            let accuracy = correct / samples as f64;
            let row = GenRow {
                model: m.clone(),
                cfg,
                samples,
                accuracy,
                accuracy_se: (accuracy * (1.0 - accuracy) / (samples.max(2) - 1) as f64).sqrt(),
                per_class,
                eval_classifier_accuracy: old_correct / samples as f64,
                agreement: agree / samples as f64,
                diversity: div / NUM_CLASSES as f64,
                diversity_ratio: div / NUM_CLASSES as f64 / report.dataset_diversity,
                wall_s: started.elapsed().as_secs_f64(),
            };
            eprintln!(
                "{} cfg {}: accuracy {:.4}, diversity ratio {:.3} ({:.0} s)",
                row.model, row.cfg, row.accuracy, row.diversity_ratio, row.wall_s
            );
            report.generated.push(row);
        }
    }
    print!("{}", markdown(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}

/// The report as Markdown tables.
pub fn markdown(r: &EvalReport) -> String {
    let mut out = String::new();
    if let (Some(j), Some(e), Some(g)) = (
        r.judge_accuracy,
        r.eval_classifier_accuracy,
        r.guidance_classifier_accuracy,
    ) {
        out += &format!(
            "| classifier | accuracy on {} fresh dataset images |\n|---|---|\n\
             | judge (toy-judge) | {:.2} % |\n\
             | first evaluation classifier (toy-eval-classifier) | {:.2} % |\n\
             | guidance (toy-classifier) | {:.2} % |\n\n",
            r.dataset_images,
            100.0 * j,
            100.0 * e,
            100.0 * g
        );
    }
    out += "| model | CFG | samples | class accuracy (judge) | toy-eval-classifier | agreement | \
            diversity / dataset | sampling wall |\n|---|---|---|---|---|---|---|---|\n";
    for g in &r.generated {
        out += &format!(
            "| {} | {} | {} | {:.1} ± {:.1} % | {:.1} % | {:.1} % | {:.2} | {:.0} s |\n",
            g.model,
            g.cfg,
            g.samples,
            100.0 * g.accuracy,
            100.0 * g.accuracy_se,
            100.0 * g.eval_classifier_accuracy,
            100.0 * g.agreement,
            g.diversity_ratio,
            g.wall_s
        );
    }
    out += &format!(
        "\nflow-Euler, {} steps; dataset within-class mean pairwise RMS distance {:.4}.\n",
        r.steps, r.dataset_diversity
    );
    out
}

/// `steerdiff toy samples`: rows = classes, column blocks = CFG scales.
pub fn samples_grid(
    output: &Path,
    per_class: usize,
    cfgs: &[f64],
    steps: usize,
    model: &str,
) -> Result<()> {
    let scale = 2;
    let cell = data::SIZE * scale + 2;
    let left = 4 * 8 * 2 + 8;
    let top = 16;
    let gap = 12;
    let block = per_class * cell + gap;
    let mut c = Canvas::new(
        left + cfgs.len() * block,
        top + NUM_CLASSES * cell + 4,
        [255, 255, 255],
    );
    for (b, &cfg) in cfgs.iter().enumerate() {
        c.text(&format!("CFG {cfg}"), left + b * block, 3, 2, [0, 0, 0]);
        for k in 0..NUM_CLASSES as u32 {
            let imgs = generate(model, k, cfg, per_class, eval_seed(k), steps)?;
            for (i, img) in imgs.iter().enumerate() {
                c.paste(
                    img,
                    left + b * block + i * cell,
                    top + k as usize * cell,
                    scale,
                );
            }
        }
    }
    for (k, name) in CLASS_NAMES.iter().enumerate() {
        c.text(name, 4, top + k * cell + cell / 2 - 5, 2, [0, 0, 0]);
    }
    let png = c.png()?;
    let mut staged = crate::output::Staged::new();
    staged.add(output, &png)?;
    staged.commit()?;
    eprintln!("steerdiff: wrote {}", output.display());
    Ok(())
}
