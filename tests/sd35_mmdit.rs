//! SD3.5's transformers against diffusers: tiny original-layout single files in
//! `tests/fixtures/tiny-dit` (written by steerdiff's `sd3_tiny::write_random_transformer`, the
//! recipe below) for SD3.5 medium's MMDiT-X (dual attention in the first block, QK-norm) and
//! SD3.5 large's MMDiT with QK-norm, run through steerdiff's loader and MMDiT and compared with
//! diffusers' own `SD3Transformer2DModel.from_single_file` of the same files on the same inputs
//! (`tests/fixtures/tiny-dit/make_fixture.py`, cases `sd3.5-medium` and `sd3.5-large` of
//! `cases.json`).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use steerdiff::pipelines::sd::mmdit::{Config as MmditConfig, Mmdit, MmditVariant};
use steerdiff::pipelines::sd::LoadOptions;
use steerdiff::pipelines::sd::{sd3, sd3_tiny};

use common::{flat, floats, max_diff};

/// The fixture cases: (case name = file stem, config, variant, seed).
fn recipes() -> Vec<(&'static str, MmditConfig, MmditVariant, u64)> {
    // diffusers' SD3 fixes the timestep embedding's width at 256.
    let config = |depth: usize, head_size: usize| MmditConfig {
        patch_size: 2,
        in_channels: 4,
        out_channels: 4,
        depth,
        head_size,
        adm_in_channels: 8,
        pos_embed_max_size: 8,
        context_embed_size: 12,
        frequency_embedding_size: 256,
    };
    vec![
        (
            "sd3.5-medium",
            config(3, 4),
            MmditVariant {
                dual_attention_layers: vec![0],
                qk_norm: true,
            },
            35,
        ),
        (
            "sd3.5-large",
            config(2, 8),
            MmditVariant {
                dual_attention_layers: vec![],
                qk_norm: true,
            },
            36,
        ),
    ]
}

fn dir() -> PathBuf {
    common::fixture("tiny-dit")
}

fn file(name: &str) -> PathBuf {
    dir().join(format!("{name}.safetensors"))
}

/// Writes the fixture files from their recipes (then rerun `make_fixture.py`).
#[test]
#[ignore = "writes tests/fixtures/tiny-dit/sd3.5-*.safetensors; run by hand to regenerate"]
fn write_sd35_fixture_files() {
    for (name, config, variant, seed) in recipes() {
        sd3_tiny::write_random_transformer(&file(name), &config, &variant, seed).unwrap();
    }
}

/// The fixture files are exactly what the writer makes from the recipes: every tensor, bit for
/// bit (so the files are reproducible, and diffusers was given steerdiff's layout).
#[test]
fn sd35_fixture_files_are_the_writers() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, config, variant, seed) in recipes() {
        let fresh = tmp.path().join("fresh.safetensors");
        sd3_tiny::write_random_transformer(&fresh, &config, &variant, seed).unwrap();
        let want = candle_core::safetensors::load(&fresh, &Device::Cpu).unwrap();
        let have = candle_core::safetensors::load(file(name), &Device::Cpu).unwrap();
        let mut names: Vec<_> = want.keys().collect();
        names.sort();
        let mut have_names: Vec<_> = have.keys().collect();
        have_names.sort();
        assert_eq!(names, have_names, "{name}: tensor names");
        for n in names {
            let (a, b) = (&want[n], &have[n]);
            assert_eq!(a.dims(), b.dims(), "{name}: {n}");
            assert_eq!(b.dtype(), DType::F16, "{name}: {n}");
            assert_eq!(f32s(a), f32s(b), "{name}: {n} differs from the recipe");
        }
    }
}

fn f32s(t: &Tensor) -> Vec<f32> {
    flat(&t.to_dtype(DType::F32).unwrap())
}

/// `case[key]` shaped as `case[key_shape]` (the model casts it to its dtype).
fn case_tensor(case: &Value, key: &str) -> Tensor {
    let shape: Vec<usize> = serde_json::from_value(case[format!("{key}_shape")].clone()).unwrap();
    Tensor::from_vec(floats(&case[key]), shape, &Device::Cpu).unwrap()
}

/// The case's output from `model` with the batch rows of the text (`context`, `pooled`) taken
/// in the order `rows`.
fn run(model: &Mmdit, case: &Value, rows: &[u32]) -> Vec<f32> {
    let idx = Tensor::new(rows, &Device::Cpu).unwrap();
    let x = case_tensor(case, "x");
    let t = case["timestep"].as_f64().unwrap() as f32;
    let t = Tensor::full(t, x.dim(0).unwrap(), &Device::Cpu).unwrap();
    let ctx = case_tensor(case, "context").index_select(&idx, 0).unwrap();
    let pooled = case_tensor(case, "pooled").index_select(&idx, 0).unwrap();
    f32s(&model.forward(&x, &t, &pooled, &ctx).unwrap())
}

/// `file` without the tensors whose names end in `suffix`, written to `to`.
fn without(file: &Path, suffix: &str, to: &Path) {
    let mut tensors = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    let before = tensors.len();
    tensors.retain(|name, _| !name.ends_with(suffix));
    assert_eq!(tensors.len() + 1, before, "one tensor ends in {suffix}");
    candle_core::safetensors::save(&tensors, to).unwrap();
}

/// SD3.5 medium's MMDiT-X and SD3.5 large's QK-normed MMDiT against diffusers (f32):
/// * in f16, as `Sd3` runs them: within the SD3 case's bound `1e-2·max(1, max |out|)`;
/// * in f32: within `1e-5·max(1, max |out|)`;
/// * control: swapping the two batch rows' text (context and pooled) moves the output more
///   than ten times the f16 bound;
/// * ablation: without the last block's context `ln_k` (what candle-transformers 0.11.1's own
///   `MMDiT` computes: its last block ignores that tensor) the f32 output misses diffusers by
///   more than a hundred times the f32 bound — the reason for steerdiff's own last block.
#[test]
fn sd35_transformers_match_diffusers_from_single_file() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, config, variant, _) in recipes() {
        let case = &cases[name];
        assert!(case.is_object(), "cases.json has no `{name}` case");
        let load = |f: &Path, dtype| sd3::load_transformer(f, &Device::Cpu, dtype).unwrap();
        let (cfg, half) = load(&file(name), DType::F16);
        let (_, full) = load(&file(name), DType::F32);
        assert_eq!(half.variant, variant, "{name}");
        assert_eq!(
            (cfg.depth, cfg.head_size, cfg.pos_embed_max_size),
            (config.depth, config.head_size, config.pos_embed_max_size)
        );
        let last_ln_k = format!(
            "joint_blocks.{}.context_block.attn.ln_k.weight",
            cfg.depth - 1
        );
        let ablated_file = tmp.path().join(format!("{name}-ablated.safetensors"));
        without(&file(name), &last_ln_k, &ablated_file);
        let (_, ablated) = load(&ablated_file, DType::F32);
        assert_eq!(
            ablated.variant, variant,
            "the ablation keeps every other QK-norm"
        );

        let want = floats(&case["output"]);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let (bound16, bound32) = (1e-2 * scale, 1e-5 * scale);
        let err16 = max_diff(&run(&half, case, &[0, 1]), &want);
        let err32 = max_diff(&run(&full, case, &[0, 1]), &want);
        let swapped = max_diff(&run(&half, case, &[1, 0]), &want);
        let no_ln_k = max_diff(&run(&ablated, case, &[0, 1]), &want);
        eprintln!(
            "{name} ({}): max |Δ| vs diffusers f16 {err16:.2e} (bound {bound16:.1e}), f32 \
             {err32:.2e} (bound {bound32:.1e}); text rows swapped {swapped:.2e}; last block's \
             context ln_k dropped {no_ln_k:.2e}",
            half.variant.describe()
        );
        let checks = [
            (err16 <= bound16, "f16 output within the SD3 bound"),
            (err32 <= bound32, "f32 output within 1e-5"),
            (swapped >= 10.0 * bound16, "swapped text moves the output"),
            (
                no_ln_k >= 100.0 * bound32,
                "the last block's context QK-norm matters",
            ),
        ];
        failures.extend(
            checks
                .iter()
                .filter(|(ok, _)| !ok)
                .map(|(_, what)| format!("{name}: {what}")),
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The full single file (MMDiT-X with QK-norm and the autoencoder) loads through `Sd3::load`,
/// which reports the variant and samples; a last block with a second attention is refused.
#[test]
fn sd35_medium_single_file_loads_through_sd3() {
    use steerdiff::guidance::{Condition, Denoiser, StepPoint};
    let tmp = tempfile::tempdir().unwrap();
    let (mut cfg, ae) = sd3_tiny::tiny_config();
    cfg.depth = 3;
    cfg.head_size = 8;
    let variant = MmditVariant {
        dual_attention_layers: vec![0, 1],
        qk_norm: true,
    };
    let path =
        sd3_tiny::write_random_variant_checkpoint(tmp.path(), &cfg, &variant, &ae, 5).unwrap();
    let mut model = sd3::Sd3::load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(model.variant(), &variant);
    assert!(model.variant().describe().contains("SD3.5 medium"));
    let ctx = Tensor::ones((2, 3, 12), DType::F32, &Device::Cpu).unwrap();
    let pooled = Tensor::ones((2, 8), DType::F32, &Device::Cpu).unwrap();
    model.set_text_embeddings(&ctx, &pooled).unwrap();
    let x = Tensor::ones((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let at = StepPoint {
        timestep: 500.0,
        alpha: 0.5,
        sigma: 0.5,
    };
    let v = model.forward(&x, &at, &[Condition::Prompt(0)]).unwrap();
    assert_eq!(v.dims(), &[1, 4, 8, 8]);
    assert!(flat(&v).iter().all(|v| v.is_finite()));

    let last_dual = MmditVariant {
        dual_attention_layers: vec![2],
        qk_norm: false,
    };
    let e = sd3_tiny::write_random_variant_checkpoint(tmp.path(), &cfg, &last_dual, &ae, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("last") && e.contains("attn2"), "{e}");
}

/// The SD3 case (`sd3.safetensors`, no MMDiT-X, no QK-norm) through the same transformer in
/// f32: within 1e-5 of diffusers' f32 (`tests/dit_text.rs` checks it in f16, as `Sd3` runs).
#[test]
fn sd3_transformer_in_f32_matches_diffusers() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let case = &cases["sd3"];
    let (_, model) =
        sd3::load_transformer(&dir().join("sd3.safetensors"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(model.variant, MmditVariant::default());
    assert_eq!(model.dtype(), DType::F32);
    let want = floats(&case["output"]);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let err = max_diff(&run(&model, case, &[0, 1]), &want);
    eprintln!("sd3 in f32: max |Δ| vs diffusers {err:.2e} (max |out| {scale:.2})");
    assert!(err <= 1e-5 * scale, "{err}");
}
