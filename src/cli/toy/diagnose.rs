//! `steerdiff toy diagnose`: how a flow model denoises real images at each noise level, and
//! how much it uses its class label.
//!
//! For 200 fresh dataset images `x0`, one fixed noise draw `ε` and times
//! `t ∈ {0.1, …, 0.99}`, it forms `x_t = (1 − t)·x0 + t·ε` and reports, for the true label and
//! for the null label: the velocity loss `‖v̂ − (ε − x0)‖²`, the clean-estimate error
//! `‖x̂0 − x0‖²` with `x̂0 = x_t − t·v̂`, and the evaluation classifier's accuracy on `x̂0`.
//! A model that uses its label has a clearly lower loss with it than without it at mid and
//! high noise; a small gap means classifier-free guidance has little to amplify.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use steerdiff_guidance::rng::{Domain, StreamKey};
use steerdiff_pipelines::toy::model::{self, ToyClassifier, ToyFlow};
use steerdiff_pipelines::toy::{data, ToyConfig, NUM_CLASSES};

/// Flags of `steerdiff toy diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// A training export folder (config.json + model.safetensors); default: the shipped toy.
    #[arg(long, value_name = "DIR")]
    pub flow: Option<PathBuf>,
    /// Dataset images to denoise.
    #[arg(long, default_value_t = 200)]
    pub images: usize,
}

/// Noise levels reported.
pub const TIMES: [f64; 8] = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99];

/// Runs `steerdiff toy diagnose`, printing a Markdown table.
pub fn diagnose(args: &DiagnoseArgs) -> Result<()> {
    let assets = model::Assets::locate();
    let flow = match &args.flow {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join("config.json"))
                .with_context(|| format!("reading {}/config.json", dir.display()))?;
            let config: ToyConfig = serde_json::from_str(&text).context("config.json")?;
            ToyFlow::from_files(&config, &dir.join("model.safetensors"), "candidate")?
        }
        None => ToyFlow::load(&assets, model::FLOW, "toy")?,
    };
    let clf = ToyClassifier::load(&assets, model::EVAL_CLASSIFIER)?;
    let n = args.images.max(1);
    let dev = Device::Cpu;
    let (pix, labels) = data::batch(super::eval::EVAL_DATA_SEED, 0, n);
    let x0 = Tensor::from_vec(pix, (n, 3, data::SIZE, data::SIZE), &dev)?;
    let key = StreamKey {
        seed: 5,
        lineage: 0,
        step: 0,
        domain: Domain::Init,
    };
    let eps = Tensor::from_vec(key.normals(n * data::PIXELS), x0.shape(), &dev)?;
    let target = (&eps - &x0)?;
    println!("| t | loss (label) | loss (null) | x̂0 error (label) | x̂0 error (null) | accuracy on x̂0 (label) | (null) |");
    println!("|---|---|---|---|---|---|---|");
    for &t in &TIMES {
        let xt = ((&x0 * (1.0 - t))? + (&eps * t)?)?;
        let ts = Tensor::full((t * 1000.0) as f32, n, &dev)?;
        let mut row = vec![];
        let mut accs = vec![];
        for null in [false, true] {
            let ys: Vec<u32> = if null {
                vec![NUM_CLASSES as u32; n]
            } else {
                labels.clone()
            };
            let y = Tensor::from_vec(ys, n, &dev)?;
            let mut parts = vec![];
            for s in (0..n).step_by(50) {
                let m = 50.min(n - s);
                parts.push(flow.network().forward(
                    &xt.narrow(0, s, m)?,
                    &ts.narrow(0, s, m)?,
                    &y.narrow(0, s, m)?,
                )?);
            }
            let v = Tensor::cat(&parts, 0)?;
            let loss = (&v - &target)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
            let x0_hat = (&xt - (&v * t)?)?;
            let err = (&x0_hat - &x0)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
            let pred = clf.predict(&x0_hat.clamp(-1f32, 1f32)?)?;
            let acc = pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / n as f64;
            row.push((loss, err));
            accs.push(acc);
        }
        println!(
            "| {t:.2} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1} % | {:.1} % |",
            row[0].0,
            row[1].0,
            row[0].1,
            row[1].1,
            100.0 * accs[0],
            100.0 * accs[1]
        );
    }
    Ok(())
}
