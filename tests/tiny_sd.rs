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
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use serde_json::Value;
use steerdiff::guidance::strategy::ClassifierFree;
use steerdiff::guidance::{
    Condition, Context, Engine, GroupSpec, Guidance, Population, SchedulerConfig, SetTimesteps,
    Step,
};
use steerdiff::pipelines::sd::{LoadOptions, ModelFiles, Source, StableDiffusion};

use common::{fixture as fixture_dir_of, flat, floats, total_rows};

const SD: &str = "tiny-sd";
const SDXL: &str = "tiny-sdxl";

fn fixture_dir() -> PathBuf {
    fixture_dir_of(SD)
}

fn cases(fixture: &str) -> Vec<(String, Value)> {
    let dir = fixture_dir_of(fixture);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixture folder {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_stem().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if let Ok(only) = std::env::var("TINY_SD_CASE") {
        out.retain(|c| c.0 == only);
    }
    assert!(!out.is_empty(), "no case files in {}", dir.display());
    out
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// Max of |a − b| and max of |b|.
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length");
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let m = b.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    (d, m)
}

/// Records the state after every step.
struct Recorder(Arc<Mutex<Vec<(Step, Tensor)>>>);

impl Guidance for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }

    fn select(
        &self,
        step: &Step,
        pop: &mut Population,
        _cx: &mut Context,
    ) -> steerdiff::guidance::Result<()> {
        self.0.lock().unwrap().push((*step, pop.x.clone()));
        Ok(())
    }
}

fn load_fixture(fixture: &str) -> StableDiffusion {
    let files = ModelFiles::new(Source::Folder(fixture_dir_of(fixture).join("pipeline")));
    StableDiffusion::from_files(&files, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("load {fixture}: {e}"))
}

fn load() -> StableDiffusion {
    load_fixture(SD)
}

/// The token ids a case expects from each tokenizer (`KEY`, then `KEY_2` for SDXL's second).
fn case_ids(case: &Value, key: &str) -> Vec<Vec<u32>> {
    let mut out = vec![ids(&case[key])];
    if let Some(v) = case.get(format!("{key}_2")) {
        out.push(ids(v));
    }
    out
}

/// Worst errors of one case: (embeddings, per-step latents relative, decoded, image).
fn run_case(sd: &mut StableDiffusion, name: &str, case: &Value) -> (f32, Vec<f32>, f32, f32) {
    let prompt = case["prompt"].as_str().unwrap();
    // `null`: no negative prompt (SDXL then uses an all-zero unconditional row).
    let negative = case["negative_prompt"].as_str();
    assert_eq!(
        sd.tokenize_all(prompt).unwrap(),
        case_ids(case, "input_ids"),
        "{name}: input_ids"
    );
    assert_eq!(
        sd.tokenize_all(negative.unwrap_or("")).unwrap(),
        case_ids(case, "negative_input_ids"),
        "{name}: negative_input_ids"
    );
    let h = case["height"].as_u64().unwrap() as usize;
    let w = case["width"].as_u64().unwrap() as usize;
    sd.set_image_size(h, w).unwrap();
    sd.set_prompts(&[prompt], negative).unwrap();
    let table = sd.prompt_table().unwrap();
    let mut emb_err = 0.0f32;
    for (row, key) in [(1, "prompt_embeds"), (0, "negative_prompt_embeds")] {
        let (e, _) = diff(&flat(&table.context.get(row).unwrap()), &floats(&case[key]));
        emb_err = emb_err.max(e);
    }
    match &table.pooled {
        Some(pooled) => {
            for (row, key) in [
                (1, "pooled_prompt_embeds"),
                (0, "negative_pooled_prompt_embeds"),
            ] {
                let (e, _) = diff(&flat(&pooled.get(row).unwrap()), &floats(&case[key]));
                emb_err = emb_err.max(e);
            }
            let want: Vec<f32> = floats(&case["add_time_ids"]);
            assert_eq!(sd.time_ids().to_vec(), want, "{name}: add_time_ids");
        }
        None => assert!(case.get("pooled_prompt_embeds").is_none(), "{name}"),
    }
    assert!(
        emb_err <= 1e-4,
        "{name}: prompt embeddings differ by {emb_err}"
    );

    let sched =
        SchedulerConfig::from_value(case["scheduler"].as_str(), &case["scheduler_config"]).unwrap();
    let ve = sched.class().unwrap().ve_coordinates();
    let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
    let sampler = sched
        .sampler(steps, &SetTimesteps::default(), None)
        .unwrap();
    let schedule = &sampler.schedule;

    let init_shape = shape(&case["initial_latents_shape"]);
    let init =
        Tensor::from_vec(floats(&case["initial_latents"]), init_shape, &Device::Cpu).unwrap();
    // diffusers' pipeline multiplies the latents it is handed by its `init_noise_sigma`
    // (prepare_latents); the engine's `init_noise_sigma` is that factor in model-input
    // coordinates (× α at the first point for Euler), so the engine starts from latents × it.
    let x_init = init.affine(schedule.init_noise_sigma, 0.0).unwrap();
    let groups = [GroupSpec {
        seed: 0,
        cond: Condition::Prompt(0),
        particles: 1,
    }];
    let mut pop = Population::new(&groups, &[4, h / 2, w / 2], 1.0, &Device::Cpu).unwrap();
    pop.x = x_init;

    let recorded = Arc::new(Mutex::new(Vec::new()));
    let scale = case["guidance_scale"].as_f64().unwrap();
    let mut guidance: Vec<Box<dyn Guidance + '_>> = Vec::new();
    if scale > 1.0 {
        guidance.push(Box::new(ClassifierFree::new(scale).unwrap()));
    }
    guidance.push(Box::new(Recorder(recorded.clone())));
    let engine = Engine {
        models: vec![&*sd],
        schedule,
        solver: sampler.solver.as_ref(),
        guidance,
    };
    let out = engine.run(pop, None).unwrap();
    drop(engine);

    let recorded = recorded.lock().unwrap().clone();
    let want_steps = case["steps"].as_array().unwrap();
    assert_eq!(recorded.len(), want_steps.len(), "{name}: step count");
    let mut step_errs = Vec::new();
    for (k, ((step, x), want)) in recorded.iter().zip(want_steps).enumerate() {
        let got = if ve {
            x.affine(1.0 / step.to.alpha, 0.0).unwrap()
        } else {
            x.clone()
        };
        let want = floats(&want["latents"]);
        let (d, m) = diff(&flat(&got), &want);
        let rel = d / m.max(1.0);
        assert!(
            rel <= 1e-3,
            "{name}: latents after step {k} differ by {d} (max |x| {m})"
        );
        step_errs.push(rel);
    }

    let latents = out.population.x.clone();
    let decoded = sd.vae.decode_raw(&latents).unwrap();
    let (dec_err, _) = diff(&flat(&decoded), &floats(&case["decoded"]));
    let image = sd
        .decode(&latents)
        .unwrap()
        .get(0)
        .unwrap()
        .permute((1, 2, 0))
        .unwrap();
    let (img_err, _) = diff(&flat(&image), &floats(&case["image_hwc_0_1"]));
    assert!(
        dec_err <= 4.0 / 255.0,
        "{name}: decoded differs by {dec_err}"
    );
    assert!(img_err <= 2.0 / 255.0, "{name}: image differs by {img_err}");
    (emb_err, step_errs, dec_err, img_err)
}

#[test]
fn every_case_matches_diffusers_through_the_api() {
    api_cases(SD);
}

#[test]
fn every_sdxl_case_matches_diffusers_through_the_api() {
    let sd = load_fixture(SDXL);
    assert!(sd.is_sdxl() && sd.force_zeros_for_empty_prompt);
    api_cases(SDXL);
}

fn api_cases(fixture: &str) {
    let mut sd = load_fixture(fixture);
    for (name, case) in cases(fixture) {
        let (emb, steps, dec, img) = run_case(&mut sd, &name, &case);
        eprintln!(
            "{name}: ids exact; embeddings {emb:.2e}; step latents (rel) {}; decoded {dec:.2e}; \
             image {img:.2e} ({:.3}/255)",
            steps
                .iter()
                .map(|e| format!("{e:.1e}"))
                .collect::<Vec<_>>()
                .join(" "),
            img * 255.0
        );
    }
}

/// The same runs through the binary: `--init-latents CASE.json` feeds the case's initial
/// latents, `--scheduler FILE` the case's scheduler; the PNG (8-bit, so up to 0.5/255 of
/// rounding) must match the case's image within 2/255.
#[test]
fn every_case_matches_diffusers_through_the_cli() {
    cli_cases(SD);
}

#[test]
fn every_sdxl_case_matches_diffusers_through_the_cli() {
    cli_cases(SDXL);
}

fn cli_cases(fixture: &str) {
    let pipeline = fixture_dir_of(fixture).join("pipeline");
    for (name, case) in cases(fixture) {
        let dir = tempfile::tempdir().unwrap();
        let case_path = fixture_dir_of(fixture).join(format!("{name}.json"));
        let steps = case["num_inference_steps"].to_string();
        let cfg = case["guidance_scale"].to_string();
        let h = case["height"].to_string();
        let w = case["width"].to_string();
        let scheduler_file = dir.path().join("scheduler.json");
        let mut sched = case["scheduler_config"].clone();
        sched["_class_name"] = case["scheduler"].clone();
        std::fs::write(&scheduler_file, sched.to_string()).unwrap();
        let out = dir.path().join("out");
        let negative: Vec<&str> = match case["negative_prompt"].as_str() {
            Some(n) => vec!["--negative", n],
            None => vec![],
        };
        let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
            .args(["generate", "--model"])
            .arg(&pipeline)
            .args(["--prompt", case["prompt"].as_str().unwrap()])
            .args(&negative)
            .args([
                "--steps", &steps, "--cfg", &cfg, "--height", &h, "--width", &w,
            ])
            .arg("--scheduler")
            .arg(&scheduler_file)
            .arg("--init-latents")
            .arg(&case_path)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let png = image::open(out.join("sample-0000.png")).unwrap().to_rgb8();
        let got: Vec<f32> = png.as_raw().iter().map(|&b| b as f32 / 255.0).collect();
        let (d, _) = diff(&got, &floats(&case["image_hwc_0_1"]));
        eprintln!("{name} (CLI): image {:.3}/255", d * 255.0);
        assert!(d <= 2.0 / 255.0, "{name}: CLI image differs by {d}");
    }
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
