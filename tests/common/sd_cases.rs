//! The diffusers conformance cases of the tiny Stable Diffusion fixtures (`tiny-sd`,
//! `tiny-sdxl`): each case file's token ids, embeddings, per-step latents, decode and image,
//! checked through the API ([`api_cases`]) or the binary ([`cli_cases`]), whichever way the
//! model was loaded (a diffusers folder, or an original-layout single file).

use std::process::Command;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use serde_json::Value;
use steerdiff::guidance::strategy::ClassifierFree;
use steerdiff::guidance::{
    Condition, Context, Engine, GroupSpec, Guidance, Population, SchedulerConfig, SetTimesteps,
    Step,
};
use steerdiff::pipelines::sd::StableDiffusion;

use super::{fixture as fixture_dir_of, flat, floats};

pub fn cases(fixture: &str) -> Vec<(String, Value)> {
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

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// Max of |a − b| and max of |b|.
pub fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
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
pub struct Recorder(Arc<Mutex<Vec<(Step, Tensor)>>>);

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

/// The token ids a case expects from each tokenizer (`KEY`, then `KEY_2` for SDXL's second).
pub fn case_ids(case: &Value, key: &str) -> Vec<Vec<u32>> {
    let mut out = vec![ids(&case[key])];
    if let Some(v) = case.get(format!("{key}_2")) {
        out.push(ids(v));
    }
    out
}

/// Worst errors of one case: (embeddings, per-step latents relative, decoded, image).
pub fn run_case(sd: &mut StableDiffusion, name: &str, case: &Value) -> (f32, Vec<f32>, f32, f32) {
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

/// Runs every case of `fixture` on `sd`, printing the worst errors.
pub fn api_cases(sd: &mut StableDiffusion, fixture: &str) {
    for (name, case) in cases(fixture) {
        let (emb, steps, dec, img) = run_case(sd, &name, &case);
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
pub fn cli_cases(fixture: &str, model: &[std::ffi::OsString]) {
    for (name, case) in cases(fixture) {
        let case_path = fixture_dir_of(fixture).join(format!("{name}.json"));
        cli_case(&name, &case_path, &case, model);
    }
}

/// One case (read from `case_path`) through the binary, with the model flags `model`.
pub fn cli_case(
    name: &str,
    case_path: &std::path::Path,
    case: &Value,
    model: &[std::ffi::OsString],
) {
    let dir = tempfile::tempdir().unwrap();
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
        .arg("generate")
        .args(model)
        .args(["--prompt", case["prompt"].as_str().unwrap()])
        .args(&negative)
        .args([
            "--steps", &steps, "--cfg", &cfg, "--height", &h, "--width", &w,
        ])
        .arg("--scheduler")
        .arg(&scheduler_file)
        .arg("--init-latents")
        .arg(case_path)
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
