//! Conformance of the Stable Diffusion code path with diffusers on the tiny fixtures
//! (`tests/fixtures/tiny-sd` and `tests/fixtures/tiny-sdxl`, or the same names under
//! `$STEERDIFF_FIXTURES`): every case file is a case.
//!
//! The pipeline folder is loaded through the same loader as a Hub model. Per case: token ids
//! exactly (both tokenizers for SDXL); prompt and negative-prompt embeddings (and SDXL's pooled
//! embeddings) ≤ 1e-4; the latents after every step ≤ 1e-3·max(1, |x|) (in diffusers'
//! coordinates: Euler's are `x/α`); the VAE decode and the output image ≤ 2/255. Then the same
//! run through the `steerdiff` binary.
//!
//! `tiny-sdxl` is written by `tests/fixtures/tiny-sdxl/make_fixture.py` (diffusers' own
//! StableDiffusionXLPipeline on random weights).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use serde_json::Value;
use steerdiff::guidance::strategy::ClassifierFree;
use steerdiff::guidance::{Condition, Engine, GroupSpec, Population};
use steerdiff::pipelines::sd::{LoadOptions, ModelFiles, Source, StableDiffusion};

use common::sd_cases::{api_cases, cli_cases};
use common::{fixture as fixture_dir_of, flat, floats, total_rows};

const SD: &str = "tiny-sd";
const SDXL: &str = "tiny-sdxl";

fn fixture_dir() -> PathBuf {
    fixture_dir_of(SD)
}

fn load_fixture(fixture: &str) -> StableDiffusion {
    let files = ModelFiles::new(Source::Folder(fixture_dir_of(fixture).join("pipeline")));
    StableDiffusion::from_files(&files, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("load {fixture}: {e}"))
}

fn load() -> StableDiffusion {
    load_fixture(SD)
}

#[test]
fn every_case_matches_diffusers_through_the_api() {
    api_cases(&mut load(), SD);
}

#[test]
fn every_sdxl_case_matches_diffusers_through_the_api() {
    let mut sd = load_fixture(SDXL);
    assert!(sd.is_sdxl() && sd.force_zeros_for_empty_prompt);
    api_cases(&mut sd, SDXL);
}

/// The same runs through the binary: `--init-latents CASE.json` feeds the case's initial
/// latents, `--scheduler FILE` the case's scheduler; the PNG (8-bit, so up to 0.5/255 of
/// rounding) must match the case's image within 2/255.
#[test]
fn every_case_matches_diffusers_through_the_cli() {
    cli_cases(SD, &folder_model(SD));
}

#[test]
fn every_sdxl_case_matches_diffusers_through_the_cli() {
    cli_cases(SDXL, &folder_model(SDXL));
}

fn folder_model(fixture: &str) -> Vec<std::ffi::OsString> {
    vec![
        "--model".into(),
        fixture_dir_of(fixture).join("pipeline").into(),
    ]
}

/// Beyond conformance: a steered generation (FK with the JPEG-compressibility reward, CFG inside
/// every particle) through the binary, and the other options of the text-to-image path.
#[test]
fn fk_steering_with_an_image_reward_runs_on_the_tiny_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(["generate", "--model"])
        .arg(fixture_dir().join("pipeline"))
        .args(["--prompt", "a red cat", "--negative", "blue", "--cfg", "3"])
        .args(["--steps", "4", "--scheduler", "ddim", "--eta", "1"])
        .args([
            "--guidance",
            "fk",
            "--reward",
            "jpeg",
            "--particles",
            "3",
            "--keep",
            "all",
            "-n",
            "2",
        ])
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("samples.json")).unwrap()).unwrap();
    let samples = record["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 6, "2 groups × 3 particles");
    assert_eq!(samples[0]["x"].as_array().unwrap().len(), 4 * 8 * 8);
    assert!(samples.iter().all(|s| s["reward"].is_number()), "{record}");
    assert_eq!(
        record["ledger"]["model_rows"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap(),
        2 * 3 * 4 * 2
    );
    for i in 0..6 {
        let name = format!("sample-{:04}-{}.png", i / 3, i % 3);
        let img = image::open(out.join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (16, 16));
    }
    // Image 4 (group 1, particle 1) carries the arguments that reproduce it byte for byte (the
    // whole run: convolutions round differently at other batch sizes).
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(["info", "--json"])
        .arg(out.join("sample-0001-1.png"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["file"], "sample-0001-1.png");
    assert_eq!(info["parameters"], record["parameters"]);
    let argv: Vec<String> = serde_json::from_value(info["argv"].clone()).unwrap();
    let again = dir.path().join("again");
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(&argv)
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out.join("sample-0001-1.png")).unwrap(),
        std::fs::read(again.join("sample-0001-1.png")).unwrap()
    );
}

#[test]
fn dtypes_previews_and_v_prediction() {
    use steerdiff::pipelines::sd::{preview::preview, WeightDType};
    let files = ModelFiles::new(Source::Folder(fixture_dir().join("pipeline")));
    // f16 weights run; bf16 is refused on the CPU with the reason.
    let opts = LoadOptions {
        dtype: WeightDType::F16,
        ..LoadOptions::default()
    };
    let mut sd = StableDiffusion::from_files(&files, &opts).unwrap();
    sd.set_prompts(&["a red cat"], None).unwrap();
    let (sampler, _) = sd.sampler(Some("dpmpp-2m-karras"), 3, None).unwrap();
    let engine = Engine {
        models: vec![&sd],
        schedule: &sampler.schedule,
        solver: sampler.solver.as_ref(),
        guidance: vec![Box::new(ClassifierFree::new(2.0).unwrap())],
    };
    let groups = [GroupSpec {
        seed: 1,
        cond: Condition::Prompt(0),
        particles: 2,
    }];
    let pop = Population::new(&groups, &[4, 8, 8], 1.0, &Device::Cpu).unwrap();
    let out = engine.run(pop, None).unwrap();
    let x = &out.population.x;
    assert_eq!(x.dims(), &[2, 4, 8, 8]);
    assert!(flat(x).iter().all(|v| v.is_finite()));
    assert_eq!(sd.decode(x).unwrap().dims(), &[2, 3, 16, 16]);
    assert_eq!(preview(x).unwrap().dims(), &[2, 3, 8, 8]);
    let bf16 = LoadOptions {
        dtype: WeightDType::BF16,
        ..LoadOptions::default()
    };
    let e = StableDiffusion::from_files(&files, &bf16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bf16"), "{e}");

    // A v-prediction scheduler config makes the UNet a v-prediction model.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pipeline");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(
        fixture_dir().join("pipeline/model_index.json"),
        copy.join("model_index.json"),
    )
    .unwrap();
    for folder in ["scheduler", "tokenizer", "text_encoder", "unet", "vae"] {
        let from = fixture_dir().join("pipeline").join(folder);
        std::fs::create_dir_all(copy.join(folder)).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.join(folder).join(f.file_name())).unwrap();
        }
    }
    let sched = copy.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&sched)
        .unwrap()
        .replace("\"epsilon\"", "\"v_prediction\"");
    std::fs::write(&sched, text).unwrap();
    let sd = StableDiffusion::from_files(
        &ModelFiles::new(Source::Folder(copy)),
        &LoadOptions::default(),
    )
    .unwrap();
    use steerdiff::guidance::{Denoiser, Parameterization};
    assert_eq!(sd.parameterization(), Parameterization::VPrediction);
}

/// img2img: the VAE encoder gives the posterior mean (deterministic), and `--init-image` with
/// `--strength S` runs the last ⌊steps·S⌋ steps from it.
#[test]
fn img2img_encodes_deterministically_and_runs_the_last_steps() {
    let sd = load();
    let pixels: Vec<f32> = (0..3 * 16 * 16).map(|i| (i % 17) as f32 / 16.0).collect();
    let pixels = Tensor::from_vec(pixels, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let a = sd.vae.encode(&pixels).unwrap();
    let b = sd.vae.encode(&pixels).unwrap();
    assert_eq!(a.dims(), &[1, 4, 8, 8]);
    assert_eq!(flat(&a), flat(&b), "the posterior mean, not a sample");
    assert!(flat(&a).iter().all(|v| v.is_finite()));

    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("in.png");
    image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([(x * 16) as u8, (y * 16) as u8, 128])
    })
    .save(&png)
    .unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(["generate", "--model"])
        .arg(fixture_dir().join("pipeline"))
        .args(["--prompt", "a red cat", "--cfg", "3", "--steps", "10"])
        .arg("--init-image")
        .arg(&png)
        .args(["--strength", "0.3", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("samples.json")).unwrap()).unwrap();
    let rows = total_rows(&record);
    assert_eq!(rows, 3 * 2, "⌊10·0.3⌋ = 3 steps, 2 rows each (CFG)");
}

/// `generate` on the tiny pipeline (prompt "a red cat", 4 stochastic DDIM steps) with
/// `extra` flags into `out`; returns its samples.json.
fn generate_tiny(out: &Path, extra: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(["generate", "--model"])
        .arg(fixture_dir().join("pipeline"))
        .args([
            "--prompt",
            "a red cat",
            "--steps",
            "4",
            "--scheduler",
            "ddim",
            "--eta",
            "1",
        ])
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(out.join("samples.json")).unwrap()).unwrap()
}

#[test]
fn a_plugin_steers_the_tiny_pipeline_on_decoded_pixels_and_eval_reward_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = format!(
        "stdio:python3 {}/examples/plugins/brightness_stdio.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let fk = ["--guidance", "fk", "--particles", "3"];
    let record = generate_tiny(
        &dir.path().join("out"),
        &[
            &fk[..],
            &["-n", "2", "--reward", &plugin, "--eval-reward", "jpeg"],
        ]
        .concat(),
    );
    assert_eq!(
        record["ledger"]["reward_items"]["brightness-plugin(Decode)"],
        18
    );
    assert_eq!(
        record["ledger"]["decodes"], 18,
        "one VAE decode per scored item"
    );
    for s in record["samples"].as_array().unwrap() {
        // Brightness of decoded pixels in [-1, 1]; minus kB of JPEG.
        let r = s["reward"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&r), "{s}");
        assert!(s["eval_reward"].as_f64().unwrap() < 0.0, "{s}");
    }
    // Ensembles take plugins and image rewards alike.
    let ensemble = format!("ensemble:z:1*jpeg;0.5*{plugin}");
    let record = generate_tiny(
        &dir.path().join("ens"),
        &[&fk[..], &["--reward", &ensemble]].concat(),
    );
    let name = common::reward_name(&record);
    assert!(
        name.contains("jpeg") && name.contains("brightness-plugin"),
        "{name}"
    );
    let items = record["ledger"]["reward_items"][&name].as_u64().unwrap();
    assert_eq!(
        record["ledger"]["decodes"].as_u64().unwrap(),
        2 * items,
        "each member decodes"
    );
}

/// CLIP rewards on the tiny pipeline through the CLI (`tests/fixtures/tiny-clip` as
/// `--clip-model`): FK steers by the aesthetic MLP, and the CLIP score reported as the
/// evaluation reward equals the library's CLIP score of the decoded final latents.
#[test]
fn clip_and_aesthetic_rewards_run_through_the_cli() {
    use steerdiff::pipelines::sd::clip_model::ClipModel;
    use steerdiff::pipelines::sd::clip_rewards::ClipScore;
    use steerdiff::pipelines::sd::rewards::Pixels;
    let clip_dir = fixture_dir_of("tiny-clip");
    let aesthetic = format!(
        "aesthetic:{}",
        clip_dir.join("aesthetic.safetensors").display()
    );
    let model = clip_dir.join("model").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let record = generate_tiny(
        &dir.path().join("out"),
        &[
            "--guidance",
            "fk",
            "--particles",
            "2",
            "--reward",
            &aesthetic,
            "--eval-reward",
            "clip",
            "--clip-model",
            &model,
        ],
    );
    let sd = load();
    let clip = std::sync::Arc::new(ClipModel::load(&model, &Device::Cpu).unwrap());
    let score = ClipScore::new(clip, Pixels::Decode(sd.vae.clone()), &["a red cat"]).unwrap();
    let samples = record["samples"].as_array().unwrap();
    // One batch, as the run decodes it (convolutions round differently at other batch sizes,
    // and the CLIP processor sees 8-bit pixels).
    let latents: Vec<f32> = samples.iter().flat_map(|s| floats(&s["x"])).collect();
    let latents = Tensor::from_vec(latents, (samples.len(), 4, 8, 8), &Device::Cpu).unwrap();
    let images = sd.decode(&latents).unwrap();
    let want = score
        .score_images(&images, &vec![Some(0); samples.len()])
        .unwrap();
    for (s, want) in samples.iter().zip(want) {
        assert!(s["reward"].as_f64().unwrap().is_finite(), "{s}");
        let got = s["eval_reward"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-3, "CLI {got} vs library {want}");
        assert!((-100.0..=100.0).contains(&got), "{got}");
    }
    // A missing CLIP model is named.
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(["generate", "--model"])
        .arg(fixture_dir().join("pipeline"))
        .args(["--prompt", "a red cat", "--steps", "2", "--guidance", "fk"])
        .args(["--reward", "clip", "--clip-model"])
        .arg(dir.path().join("no-such-clip"))
        .arg("-o")
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--clip-model") && e.contains("no-such-clip"),
        "{e}"
    );
}

/// GFCG on a text-to-image model: the zero-shot CLIP classifier over the prompt and its
/// `--zero-shot` competitors picks a reference prompt every step (3 rows per step with CFG),
/// and the trace shows the reference and the scale; dynamic CFG reads the same classifier at
/// no extra rows.
#[test]
fn gfcg_and_dynamic_cfg_run_on_prompts_with_a_zero_shot_clip_classifier() {
    let clip = fixture_dir_of("tiny-clip").join("model");
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| -> (Value, Vec<Value>) {
        let trace = dir.path().join(format!("{name}.jsonl"));
        let mut flags = vec!["--clip-model", clip.to_str().unwrap()];
        flags.extend_from_slice(&["--trace", trace.to_str().unwrap()]);
        flags.extend_from_slice(extra);
        let record = generate_tiny(&dir.path().join(name), &flags);
        let lines = std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (record, lines)
    };
    let zs = ["--zero-shot", "blue;a quick fox"];
    let (plain, _) = run("cfg", &["--cfg", "3"]);
    let (gfcg, trace) = run(
        "gfcg",
        &[&["--cfg", "3", "--guidance", "gfcg"], &zs[..]].concat(),
    );
    assert_eq!(total_rows(&plain), 4 * 2);
    assert_eq!(
        total_rows(&gfcg),
        4 * 3,
        "cond + uncond + reference per step"
    );
    for line in &trace {
        let r = line["gfcg"]["reference"][0].as_u64().unwrap();
        let w = line["gfcg"]["scale"][0].as_f64().unwrap();
        assert!(r == 1 || r == 2, "the reference is a competitor: {line}");
        assert!(
            (1.0..=3.0).contains(&w),
            "confusion scale in [1, w]: {line}"
        );
    }
    assert_ne!(
        plain["samples"][0]["x"], gfcg["samples"][0]["x"],
        "GFCG changed the sample"
    );
    let (dynamic, _) = run("dyn", &[&["--guidance", "dynamic-cfg"], &zs[..]].concat());
    assert_eq!(
        total_rows(&dynamic),
        4 * 2,
        "dynamic CFG adds no model rows"
    );
}

/// Autoguidance on a text-to-image model with `--guide-model`: D_guide + w·(D − D_guide) costs
/// one extra row per step, and with the model itself as its guide it is exactly the model
/// (D − D = 0), so the sample equals the unguided one bit for bit.
#[test]
fn autoguidance_with_a_guide_model_on_the_tiny_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fixture_dir().join("pipeline").display().to_string();
    let plain = generate_tiny(&dir.path().join("plain"), &[]);
    let guided = generate_tiny(
        &dir.path().join("ag"),
        &[
            "--guidance",
            "autoguidance",
            "--autoguidance-scale",
            "2.5",
            "--guide-model",
            &pipeline,
        ],
    );
    assert_eq!(total_rows(&plain), 4);
    assert_eq!(
        total_rows(&guided),
        4 * 2,
        "the model and its guide each step"
    );
    assert_eq!(plain["samples"][0]["x"], guided["samples"][0]["x"]);
    // A guide nobody reads is refused.
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args([
            "generate", "--model", &pipeline, "--prompt", "x", "--steps", "2",
        ])
        .args(["--guide-model", &pipeline, "-o"])
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--guide-model"));
}
