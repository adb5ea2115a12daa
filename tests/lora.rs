//! LoRA merged at load against diffusers (`tests/fixtures/tiny-lora`, written by its
//! `make_fixture.py`): tiny LoRAs on the tiny SD 1.x and SDXL pipelines (UNet attention,
//! projections, feed-forward and 3×3 resnet convolutions, and every text encoder), in peft's
//! and kohya's layouts, each merged by diffusers' `load_lora_weights` + `fuse_lora` at two
//! strengths. steerdiff must reproduce every case within the tolerances of `tests/tiny_sd.rs`,
//! through the API and the CLI; then the refusals (unknown layers, another family's LoRA,
//! LyCORIS files, models without LoRA support) and the run record.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use steerdiff::pipelines::sd::lora::LoraSpec;
use steerdiff::pipelines::sd::{LoadOptions, ModelFiles, Source, StableDiffusion};

use common::sd_cases::{cli_case, run_case};
use common::{fixture, steerdiff_offline};

fn lora_dir() -> PathBuf {
    fixture("tiny-lora")
}

/// Every case file: `(name, path, case)`.
fn lora_cases() -> Vec<(String, PathBuf, Value)> {
    let dir = lora_dir().join("cases");
    let mut out: Vec<(String, PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_stem().unwrap().to_string_lossy().into_owned(), p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 8, "two families × two layouts × two strengths");
    out
}

fn spec(case: &Value) -> LoraSpec {
    LoraSpec {
        path: lora_dir().join(case["lora_file"].as_str().unwrap()),
        scale: case["lora_scale"].as_f64().unwrap(),
    }
}

fn pipeline(case: &Value) -> PathBuf {
    fixture(case["pipeline_fixture"].as_str().unwrap()).join("pipeline")
}

#[test]
fn every_lora_case_matches_diffusers_through_the_api() {
    for (name, _, case) in lora_cases() {
        let opts = LoadOptions {
            loras: vec![spec(&case)],
            ..LoadOptions::default()
        };
        let files = ModelFiles::new(Source::Folder(pipeline(&case)));
        let mut sd = StableDiffusion::from_files(&files, &opts).unwrap();
        let (emb, steps, dec, img) = run_case(&mut sd, &name, &case);
        eprintln!(
            "{name}: embeddings {emb:.2e}; last latents (rel) {:.1e}; decoded {dec:.2e}; image \
             {:.3}/255",
            steps.last().unwrap(),
            img * 255.0
        );
    }
}

/// The merged model really differs from the base one: the same run without the LoRA misses
/// the case (by far more than the tolerance).
#[test]
fn without_the_lora_the_cases_are_missed() {
    let (name, _, case) = lora_cases().remove(0);
    let files = ModelFiles::new(Source::Folder(pipeline(&case)));
    let mut sd = StableDiffusion::from_files(&files, &LoadOptions::default()).unwrap();
    let plain = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_case(&mut sd, &name, &case);
    }));
    assert!(plain.is_err(), "{name} matched without its LoRA");
}

fn model_args(case: &Value) -> Vec<OsString> {
    let s = spec(case);
    vec![
        "--model".into(),
        pipeline(case).into(),
        "--lora".into(),
        format!("{}:{}", s.path.display(), s.scale).into(),
    ]
}

#[test]
fn lora_cases_match_diffusers_through_the_cli() {
    for (name, path, case) in lora_cases() {
        if name == "sd-kohya-s0.5" || name == "sdxl-peft-s1" {
            cli_case(&name, &path, &case, &model_args(&case));
        }
    }
}

fn generate(model: &Path, loras: &[String], out: &Path) -> Output {
    let mut args: Vec<OsString> = vec!["generate".into(), "--model".into(), model.into()];
    for l in loras {
        args.push("--lora".into());
        args.push(l.into());
    }
    args.extend(["--prompt", "a red cat", "--steps", "2", "-o"].map(OsString::from));
    args.push(out.into());
    steerdiff_offline(&args)
}

fn refused(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing `{n}` in: {err}");
    }
}

/// Writes a copy of `src` with `extra` tensors added (names → shapes, filled with 0.1).
fn with_extra(src: &Path, extra: &[(&str, &[usize])], dst: &Path) {
    let dev = candle_core::Device::Cpu;
    let mut t = candle_core::safetensors::load(src, &dev).unwrap();
    for (name, shape) in extra {
        let v = candle_core::Tensor::full(0.1f32, *shape, &dev).unwrap();
        t.insert(name.to_string(), v);
    }
    candle_core::safetensors::save(&t, dst).unwrap();
}

#[test]
fn loras_that_do_not_fit_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let sd = fixture("tiny-sd").join("pipeline");
    let out = dir.path().join("out");
    let sd_kohya = lora_dir().join("sd-kohya.safetensors");
    // A layer the model does not have.
    let stray = dir.path().join("stray.safetensors");
    with_extra(
        &sd_kohya,
        &[
            (
                "lora_unet_down_blocks_7_no_such_layer.lora_down.weight",
                &[4, 8],
            ),
            (
                "lora_unet_down_blocks_7_no_such_layer.lora_up.weight",
                &[8, 4],
            ),
        ],
        &stray,
    );
    refused(
        &generate(&sd, &[stray.display().to_string()], &out),
        &["down_blocks_7_no_such_layer", "another model family"],
    );
    // An SDXL LoRA on SD 1.x: a second text encoder the model lacks, shapes that disagree.
    let xl_lora = lora_dir().join("sdxl-kohya.safetensors");
    refused(
        &generate(&sd, &[xl_lora.display().to_string()], &out),
        &["sdxl-kohya.safetensors", "another model family"],
    );
    // LyCORIS LoHa is named, not mis-merged.
    let loha = dir.path().join("loha.safetensors");
    with_extra(
        &sd_kohya,
        &[("lora_unet_conv_in.hada_w1_a", &[4, 4])],
        &loha,
    );
    refused(
        &generate(&sd, &[loha.display().to_string()], &out),
        &["LoHa"],
    );
    // Not a LoRA at all.
    let unet = sd.join("unet/diffusion_pytorch_model.safetensors");
    refused(
        &generate(&sd, &[unet.display().to_string()], &out),
        &["no LoRA layers"],
    );
    // A strength that is not a number in range; a model without LoRA support.
    refused(
        &generate(&sd, &[format!("{}:1e9", sd_kohya.display())], &out),
        &["scale"],
    );
    let toy = steerdiff_offline(&[
        "generate".into(),
        "--lora".into(),
        sd_kohya.clone().into(),
        "-o".into(),
        out.clone().into(),
    ]);
    refused(&toy, &["--lora", "toy"]);
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

/// Two LoRAs add up; the record names each file with its strength and sha256.
#[test]
fn loras_stack_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let sd = fixture("tiny-sd").join("pipeline");
    let peft = lora_dir().join("sd-peft.safetensors");
    let kohya = lora_dir().join("sd-kohya.safetensors");
    let pixels = |tag: &str, loras: &[String]| -> Vec<u8> {
        let out = dir.path().join(tag);
        let o = generate(&sd, loras, &out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        image::open(out.join("sample-0000.png"))
            .unwrap()
            .to_rgb8()
            .into_raw()
    };
    // The same matrices in two layouts at 0.5 each equal one of them at 1.
    let halves = pixels(
        "halves",
        &[
            format!("{}:0.5", peft.display()),
            format!("{}:0.5", kohya.display()),
        ],
    );
    let whole = pixels("whole", &[peft.display().to_string()]);
    let max_diff = halves
        .iter()
        .zip(&whole)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(max_diff <= 1, "two halves vs one whole: {max_diff}/255");
    assert_ne!(whole, pixels("none", &[]));
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("halves/samples.json")).unwrap(),
    )
    .unwrap();
    let text = record.to_string();
    for needle in [
        "sd-peft.safetensors",
        "sd-kohya.safetensors",
        "\"scale\":0.5",
        "sha256",
    ] {
        assert!(text.contains(needle), "record lacks {needle}: {text}");
    }
}

/// LoRAs on the tiny FLUX transformer merged by steerdiff — kohya's layout (BFL names: fused
/// q/k/v, MLPs, modulations) and diffusers' (separate q/k/v, `proj_mlp`, the final
/// modulation's swapped halves, merged into BFL's fused rows) — against diffusers loading each
/// (`FluxPipeline.lora_state_dict`, `load_lora_adapter`) into `FluxTransformer2DModel` and
/// fusing it at each strength, on the inputs of the tiny-dit FLUX case; the bound is that
/// case's.
#[test]
fn a_flux_lora_matches_diffusers() {
    use steerdiff::pipelines::sd::flux::Flux;
    let dit = fixture("tiny-dit");
    let plain: Value =
        serde_json::from_str(&std::fs::read_to_string(dit.join("cases.json")).unwrap()).unwrap();
    for (layout, s) in [
        ("kohya", "0.5"),
        ("kohya", "1"),
        ("peft", "0.5"),
        ("peft", "1"),
    ] {
        let path = lora_dir().join(format!("flux-cases/flux-{layout}-s{s}.json"));
        let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let opts = LoadOptions {
            loras: vec![spec(&case)],
            ..LoadOptions::default()
        };
        let mut flux = Flux::load(
            &dit.join("flux.safetensors"),
            &dit.join("ae.safetensors"),
            &opts,
        )
        .unwrap();
        let out = common::flat(&common::flux_case_output(&mut flux, &case));
        let max_diff = |want: &[f32]| {
            out.iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let want = common::floats(&case["output"]);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = max_diff(&want);
        let off = max_diff(&common::floats(&plain["flux"]["output"]));
        eprintln!(
            "FLUX LoRA at {s}: max |Δ| {err:.2e} (max |out| {scale:.2}); base model {off:.2}"
        );
        assert!(err <= 1e-4 * scale.max(1.0), "{err}");
        assert!(
            off > 100.0 * 1e-4 * scale.max(1.0),
            "the LoRA moved nothing: {off}"
        );
    }
}

/// A LoRA (kohya layout, written here for a random FLUX whose widths fit the tiny text
/// encoders) through the CLI: an FK-steered run completes and records the file; on a
/// quantized GGUF transformer `--lora` is refused.
#[test]
fn a_flux_lora_runs_through_the_cli() {
    use steerdiff::pipelines::sd::flux_tiny;
    let dir = tempfile::tempdir().unwrap();
    let enc = common::flux_encoders(dir.path());
    let (mut cfg, ae_cfg) = flux_tiny::tiny_config(false);
    cfg.context_in_dim = 96;
    cfg.vec_in_dim = 32;
    let (model, ae) = flux_tiny::write_random_checkpoints(dir.path(), &cfg, &ae_cfg, 4).unwrap();
    let dev = candle_core::Device::Cpu;
    let weights = candle_core::safetensors::load(&model, &dev).unwrap();
    let mut lora = std::collections::HashMap::new();
    for m in [
        "double_blocks.0.img_attn.qkv",
        "single_blocks.0.linear1",
        "final_layer.linear",
    ] {
        let (o, i) = weights[&format!("{m}.weight")].dims2().unwrap();
        let key = format!("lora_unet_{}", m.replace('.', "_"));
        let t = |shape: (usize, usize)| candle_core::Tensor::full(0.05f32, shape, &dev).unwrap();
        lora.insert(format!("{key}.lora_down.weight"), t((2, i)));
        lora.insert(format!("{key}.lora_up.weight"), t((o, 2)));
    }
    let lora_file = dir.path().join("flux-lora.safetensors");
    candle_core::safetensors::save(&lora, &lora_file).unwrap();
    let args = |model: &Path, out: &Path| -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["generate".into(), "--model".into(), model.into()];
        a.extend(["--ae".into(), ae.clone().into()]);
        a.extend([
            "--text-encoders".into(),
            enc.clone().into(),
            "--lora".into(),
        ]);
        a.push(format!("{}:0.5", lora_file.display()).into());
        a.extend(
            [
                "--prompt",
                "a red cat",
                "--steps",
                "2",
                "-H",
                "32",
                "-W",
                "32",
                "--guidance",
                "fk",
                "--particles",
                "2",
                "--reward",
                "jpeg",
            ]
            .map(OsString::from),
        );
        a.extend(["-o".into(), out.into()]);
        a
    };
    let out = dir.path().join("out");
    let o = steerdiff_offline(&args(&model, &out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let record = std::fs::read_to_string(out.join("samples.json")).unwrap();
    assert!(record.contains("flux-lora.safetensors"), "{record}");
    let gguf = fixture("tiny-dit").join("flux-q8_0.gguf");
    refused(
        &steerdiff_offline(&args(&gguf, &dir.path().join("q"))),
        &["GGUF", "--lora"],
    );
}
