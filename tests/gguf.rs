//! FLUX from GGUF: a tiny FLUX quantized by `steerdiff quantize` matches the f32 model within
//! a stated quantization error, runs FK-steered through the CLI, and bad GGUF files are
//! refused (exit 2) naming the problem.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::{Device, Tensor};
use steerdiff::guidance::{Condition, Denoiser, StepPoint};
use steerdiff::pipelines::sd::flux::Flux;
use steerdiff::pipelines::sd::flux_tiny;
use steerdiff::pipelines::sd::{gguf_header, LoadOptions};

use common::{flat, steerdiff};

/// `steerdiff quantize IN OUT --type TY` (and `extra` flags).
fn quantize(input: &Path, out: &Path, ty: &str, extra: &[&str]) -> Output {
    let (i, o) = (input.display().to_string(), out.display().to_string());
    steerdiff(&[&["quantize", &i, &o, "--type", ty][..], extra].concat())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `n` deterministic values in about ±1.7 (sums of uniforms), from `seed`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    (0..n).map(|_| u() + u() + u() - 1.5).collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()
}

/// The velocity of `file` (+ `ae`) at σ = 0.7 on fixed latents and text, both conditions.
fn velocity(file: &Path, ae: &Path) -> (Vec<f32>, bool) {
    let mut f = Flux::load(file, ae, &LoadOptions::default()).unwrap();
    let (ctx, vec) = (f.config.context_in_dim, f.config.vec_in_dim);
    f.set_text_embeddings(&tensor(&[2, 5, ctx], 1), &tensor(&[2, vec], 2))
        .unwrap();
    let at = StepPoint {
        timestep: 700.0,
        alpha: 0.3,
        sigma: 0.7,
    };
    let x = tensor(&[2, f.ae_config.z_channels, 8, 8], 3);
    let out = f
        .forward(&x, &at, &[Condition::Null, Condition::Prompt(0)])
        .unwrap();
    (flat(&out), f.is_quantized())
}

/// ‖a − b‖ / ‖a‖.
fn relative_rms(reference: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut n) = (0f64, 0f64);
    for (x, y) in reference.iter().zip(b) {
        d += f64::from(x - y).powi(2);
        n += f64::from(*x).powi(2);
    }
    (d / n).sqrt()
}

/// How many tensors of `file` are stored as GGML type `id`.
fn count_type(file: &Path, id: u32) -> usize {
    let h = gguf_header::read(file).unwrap();
    h.tensors.iter().filter(|t| t.type_id == id).count()
}

/// A tiny FLUX whose widths take Q4_K's 256-element blocks: width 256 (2 heads of 128), and
/// the tiny text encoders' widths (T5 96, CLIP-L 32).
fn wide_flux(dir: &Path) -> (PathBuf, PathBuf) {
    let (mut cfg, ae) = flux_tiny::tiny_config(false);
    cfg.hidden_size = 256;
    cfg.num_heads = 2;
    cfg.axes_dim = vec![16, 56, 56];
    cfg.context_in_dim = 96;
    cfg.vec_in_dim = 32;
    let d = dir.join("wide");
    std::fs::create_dir_all(&d).unwrap();
    flux_tiny::write_random_checkpoints(&d, &cfg, &ae, 11).unwrap()
}

/// Quantization error of the transformer's velocity, relative RMS against the f32 model, on
/// the fixture (width 32: Q4_K falls back to Q5_0 for all but two matrices) and on a width-256
/// model that takes Q4_K throughout. Measured: fixture Q8_0 1.3e-3, Q4_K 8.5e-3; wide Q8_0
/// 8.2e-3, Q4_K 6.1e-2 (candle's quantized products also quantize the activations, to Q8_0 /
/// Q8_K). Bounds: Q8_0 2 %, Q4_K 12 %, and Q8_0 at least 4× tighter than Q4_K. An F32 GGUF
/// through candle's quantized FLUX equals the float model (1e-7), so the error is the types'.
#[test]
fn quantized_tiny_flux_matches_f32_within_the_quantization_error() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = common::fixture("tiny-dit");
    let (wide, wide_ae) = wide_flux(dir.path());
    let models = [
        (
            "fixture",
            fixture.join("flux.safetensors"),
            fixture.join("ae.safetensors"),
        ),
        ("wide", wide, wide_ae),
    ];
    for (label, model, ae) in &models {
        let (reference, quantized) = velocity(model, ae);
        assert!(!quantized);
        let mut errors = vec![];
        for (ty, bound) in [("f32", 1e-5), ("q8_0", 0.02), ("q4_k", 0.12)] {
            let out = dir.path().join(format!("{label}-{ty}.gguf"));
            let o = quantize(model, &out, ty, &[]);
            assert!(o.status.success(), "{}", stderr(&o));
            let (v, quantized) = velocity(&out, ae);
            assert!(quantized, "a GGUF loads quantized");
            let err = relative_rms(&reference, &v);
            let bytes = std::fs::metadata(&out).unwrap().len();
            eprintln!("{label} {ty}: relative RMS error {err:.2e}, {bytes} bytes");
            assert!(err <= bound, "{label} {ty}: {err} > {bound}");
            errors.push(err);
        }
        assert!(
            errors[1] > 0.0 && errors[1] * 4.0 < errors[2],
            "{label}: {errors:?}"
        );
    }
    // Q4_K on the wide model is Q4_K (id 12), not a fallback: every block matrix but the
    // text/vector inputs (widths 96, 32 → Q5_0, id 6) and img_in (width 16, kept f32).
    let q4 = dir.path().join("wide-q4_k.gguf");
    assert!(count_type(&q4, 12) >= 15, "{}", count_type(&q4, 12));
    assert_eq!(count_type(&q4, 6), 2);
    let q8 = dir.path().join("fixture-q8_0.gguf");
    assert_eq!(count_type(&q8, 8), 14);
}

/// A Q4_K tiny FLUX from `steerdiff quantize`, FK-steered through `generate`, writes its
/// images and records the GGUF among its weights.
#[test]
fn fk_steered_run_on_a_q4_k_flux_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (model, ae) = wide_flux(dir.path());
    let gguf = dir.path().join("flux-q4_k.gguf");
    let o = quantize(&model, &gguf, "q4_k", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let enc = common::flux_encoders(dir.path());
    let out = dir.path().join("out");
    let p = |p: &Path| p.display().to_string();
    let o = steerdiff(&[
        "generate",
        "--model",
        &p(&gguf),
        "--ae",
        &p(&ae),
        "--text-encoders",
        &p(&enc),
        "--prompt",
        "a red cat",
        "--guidance",
        "fk",
        "--reward",
        "jpeg",
        "--particles",
        "2",
        "--keep",
        "all",
        "--steps",
        "3",
        "--height",
        "32",
        "--width",
        "32",
        "--seed",
        "5",
        "-o",
        &p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("samples.json")).unwrap()).unwrap();
    let samples = record["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        assert!(s["reward"].as_f64().unwrap().is_finite());
        let png = out.join(s["image"].as_str().unwrap());
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
    }
    assert!(common::total_rows(&record) >= 3 * 2);
    assert!(
        record.to_string().contains("flux-q4_k.gguf"),
        "the record names the GGUF weights"
    );
}

/// A GGUF written by the `gguf` Python package (llama.cpp's gguf-py, which city96's converter
/// uses; `tests/fixtures/tiny-dit/make_gguf.py`) loads, and gives the velocity of steerdiff's
/// own Q8_0 file of the same weights (measured relative difference: 0, the same blocks).
#[test]
fn a_gguf_from_the_gguf_python_package_loads_like_our_own() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = common::fixture("tiny-dit");
    let ae = fixture.join("ae.safetensors");
    let (reference, _) = velocity(&fixture.join("flux.safetensors"), &ae);
    let (theirs, quantized) = velocity(&fixture.join("flux-q8_0.gguf"), &ae);
    assert!(quantized);
    let ours_file = dir.path().join("ours.gguf");
    let o = quantize(&fixture.join("flux.safetensors"), &ours_file, "q8_0", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ours, _) = velocity(&ours_file, &ae);
    let (vs_f32, vs_ours) = (
        relative_rms(&reference, &theirs),
        relative_rms(&ours, &theirs),
    );
    eprintln!("gguf-py Q8_0: vs f32 {vs_f32:.2e}, vs steerdiff's Q8_0 {vs_ours:.2e}");
    assert!(vs_f32 <= 0.02 && vs_ours <= 1e-4, "{vs_f32} {vs_ours}");
}
