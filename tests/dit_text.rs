//! SD3's and FLUX's text conditioning against diffusers' own `encode_prompt` on the tiny
//! fixture `tests/fixtures/tiny-text-encoders` (random CLIP-L, CLIP-G and T5 encoders; written
//! by its `make_fixture.py`).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use steerdiff::pipelines::sd::dit_text::{FluxText, Sd3Text};
use steerdiff::pipelines::sd::{ModelFiles, Source};

use common::{flat, floats, max_diff, total_rows};

fn fixture() -> PathBuf {
    common::fixture("tiny-text-encoders")
}

fn files(dir: &Path) -> ModelFiles {
    ModelFiles::new(Source::Folder(dir.to_path_buf()))
}

#[test]
fn sd3_and_flux_prompt_embeddings_match_diffusers() {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap())
            .unwrap();
    let sd3 = Sd3Text::from_files(&files(&fixture()), 96, DType::F32, &Device::Cpu).unwrap();
    // The fixture is laid out as an SD3 repo; FLUX reads its CLIP-L and its T5.
    let folders = [
        ("tokenizer", "text_encoder"),
        ("tokenizer_3", "text_encoder_3"),
    ];
    let flux =
        FluxText::from_folders(&files(&fixture()), folders, DType::F32, &Device::Cpu).unwrap();
    for case in all["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let negative = case["negative_prompt"].as_str().unwrap();
        let len = case["t5_max_length"].as_u64().unwrap() as usize;
        let t5 = sd3.t5.as_ref().unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(case["t5_input_ids"].clone()).unwrap();
        assert_eq!(
            t5.tokenize(&[prompt], len).unwrap()[0],
            want_ids,
            "{prompt}"
        );

        let (ctx, pooled) = sd3.encode(&[prompt, negative], len).unwrap();
        let shape: Vec<usize> =
            serde_json::from_value(case["sd3_prompt_embeds_shape"].clone()).unwrap();
        assert_eq!(&ctx.dims()[1..], &shape[1..]);
        let errs = [
            max_diff(
                &flat(&ctx.get(0).unwrap()),
                &floats(&case["sd3_prompt_embeds"]),
            ),
            max_diff(
                &flat(&ctx.get(1).unwrap()),
                &floats(&case["sd3_negative_prompt_embeds"]),
            ),
            max_diff(&flat(&pooled.get(0).unwrap()), &floats(&case["sd3_pooled"])),
            max_diff(
                &flat(&pooled.get(1).unwrap()),
                &floats(&case["sd3_negative_pooled"]),
            ),
        ];
        let (txt, vec) = flux.encode(&[prompt], len).unwrap();
        let flux_errs = [
            max_diff(&flat(&txt), &floats(&case["flux_prompt_embeds"])),
            max_diff(&flat(&vec), &floats(&case["flux_pooled"])),
        ];
        eprintln!("{prompt:?}: SD3 context/negative/pooled/negative pooled {errs:?}; FLUX txt/vec {flux_errs:?}");
        assert!(
            errs.iter().chain(&flux_errs).all(|&e| e <= 1e-4),
            "{errs:?} {flux_errs:?}"
        );
    }
}

#[test]
fn sd3_without_t5_uses_zero_rows_and_bad_t5_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("repo");
    for sub in [
        "tokenizer",
        "text_encoder",
        "tokenizer_2",
        "text_encoder_2",
        "tokenizer_3",
        "text_encoder_3",
    ] {
        std::fs::create_dir_all(copy.join(sub)).unwrap();
        for f in std::fs::read_dir(fixture().join(sub)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.join(sub).join(f.file_name())).unwrap();
        }
    }
    // An unknown feed-forward kind is refused by name.
    let cfg = copy.join("text_encoder_3/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"gated-gelu\"", "\"gated-swish\"")).unwrap();
    let e = Sd3Text::from_files(&files(&copy), 96, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("feed_forward_proj") && e.contains("gated-swish"),
        "{e}"
    );
    // No T5 at all: diffusers' zeros in its place.
    std::fs::remove_dir_all(copy.join("text_encoder_3")).unwrap();
    let sd3 = Sd3Text::from_files(&files(&copy), 96, DType::F32, &Device::Cpu).unwrap();
    let (ctx, pooled) = sd3.encode(&["a red cat"], 12).unwrap();
    assert_eq!(ctx.dims(), &[1, 16 + 12, 96]);
    assert_eq!(pooled.dims(), &[1, 32 + 48]);
    let t5_rows = flat(&ctx.narrow(1, 16, 12).unwrap());
    assert!(t5_rows.iter().all(|&v| v == 0.0));
}

/// A second run `other`, with another prompt, succeeded and gave other latents than `first`.
fn assert_prompt_conditions(first: &Value, other: (bool, String, Value), family: &str) {
    let (ok, err, b) = other;
    assert!(ok, "{err}");
    assert_ne!(
        first["samples"][0]["x"], b["samples"][0]["x"],
        "the prompt conditions {family}"
    );
}

fn generate(args: &[&str]) -> (bool, String, Value) {
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .arg("generate")
        .args(args)
        .arg("-o")
        .arg(out.path())
        .output()
        .unwrap();
    let record = std::fs::read_to_string(out.path().join("samples.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        record,
    )
}

/// SD3 and FLUX from a prompt through the binary: tiny random single-file transformers with the
/// tiny text encoders (`--text-encoders`), CFG with a negative prompt (SD3), FK steering with
/// an image reward on their own decoders; the prompt reaches the model.
#[test]
fn sd3_and_flux_run_from_a_prompt_through_the_cli() {
    use steerdiff::pipelines::sd::{flux, flux_tiny, sd3_tiny};
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, ae) = sd3_tiny::tiny_config();
    cfg.context_embed_size = 96; // T5's width
    cfg.adm_in_channels = 32 + 48; // CLIP-L ‖ CLIP-G pooled
    let sd3_file = sd3_tiny::write_random_checkpoint(dir.path(), &cfg, &ae, 3).unwrap();
    let encoders = fixture().display().to_string();
    let sd3_file = sd3_file.display().to_string();
    let common = [
        "--steps", "3", "--height", "32", "--width", "32", "--seed", "5",
    ];
    let run_sd3 = |prompt: &str| {
        generate(
            &[
                &[
                    "--model",
                    &sd3_file,
                    "--text-encoders",
                    &encoders,
                    "--prompt",
                    prompt,
                ][..],
                &[
                    "--negative",
                    "blue",
                    "--cfg",
                    "3",
                    "--guidance",
                    "fk",
                    "--reward",
                    "jpeg",
                ],
                &["--particles", "2", "--keep", "all"],
                &common,
            ]
            .concat(),
        )
    };
    let (ok, err, a) = run_sd3("a red cat");
    assert!(ok, "{err}");
    let samples = a["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    assert!(samples
        .iter()
        .all(|s| s["reward"].as_f64().unwrap().is_finite()));
    let rows = total_rows(&a);
    assert_eq!(rows, 3 * 2 * 2, "steps × particles × (cond + negative)");
    assert_prompt_conditions(&a, run_sd3("a quick fox"), "SD3");

    let flux_repo = common::flux_encoders(dir.path());
    let (mut fcfg, fae) = flux_tiny::tiny_config(false);
    fcfg.context_in_dim = 96;
    fcfg.vec_in_dim = 32;
    let fdir = dir.path().join("flux");
    std::fs::create_dir_all(&fdir).unwrap();
    let (model, ae_file) = flux_tiny::write_random_checkpoints(&fdir, &fcfg, &fae, 4).unwrap();
    let (model, ae_file) = (model.display().to_string(), ae_file.display().to_string());
    let flux_enc = flux_repo.display().to_string();
    let run_flux = |prompt: &str| {
        generate(
            &[
                &[
                    "--model",
                    &model,
                    "--ae",
                    &ae_file,
                    "--text-encoders",
                    &flux_enc,
                ][..],
                &[
                    "--prompt",
                    prompt,
                    "--guidance",
                    "fk",
                    "--reward",
                    "jpeg",
                    "--particles",
                    "2",
                    "--keep",
                    "all",
                ],
                &common,
            ]
            .concat(),
        )
    };
    let (ok, err, a) = run_flux("a red cat");
    assert!(ok, "{err}");
    assert_eq!(a["samples"].as_array().unwrap().len(), 2);
    assert_prompt_conditions(&a, run_flux("a quick fox"), "FLUX");

    // img2img: the autoencoder's posterior mean, then the last ⌊steps·strength⌋ steps.
    let png = dir.path().join("in.png");
    image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, 90])
    })
    .save(&png)
    .unwrap();
    let png = png.display().to_string();
    let i2i = [
        "--init-image",
        png.as_str(),
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--seed",
        "5",
    ];
    let (ok, err, r) = generate(
        &[
            &[
                "--model",
                &sd3_file,
                "--text-encoders",
                &encoders,
                "--prompt",
                "a red cat",
            ][..],
            &["--cfg", "3"],
            &i2i,
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    let rows = total_rows(&r);
    assert_eq!(rows, 2 * 2, "⌊4·0.5⌋ = 2 steps, CFG's 2 rows each");
    let (ok, err, _) = generate(
        &[
            &[
                "--model",
                &model,
                "--ae",
                &ae_file,
                "--text-encoders",
                &flux_enc,
            ][..],
            &["--prompt", "a red cat"],
            &i2i,
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    let flux = flux::Flux::load(
        Path::new(&model),
        Path::new(&ae_file),
        &steerdiff::pipelines::sd::LoadOptions::default(),
    )
    .unwrap();
    let pixels = Tensor::full(0.25f32, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let (a, b) = (flux.encode(&pixels).unwrap(), flux.encode(&pixels).unwrap());
    assert_eq!(a.dims(), &[1, 4, 16, 16]);
    assert_eq!(flat(&a), flat(&b), "the posterior mean, not a sample");

    // Missing pieces are named.
    let (ok, err, _) = generate(&[
        "--model",
        &model,
        "--text-encoders",
        &flux_enc,
        "--prompt",
        "x",
    ]);
    assert!(!ok && err.contains("--ae"), "{err}");
    let (ok, err, _) = generate(&["--model", &sd3_file, "--prompt", "x"]);
    assert!(!ok && err.contains("--text-encoders"), "{err}");
    let (ok, err, _) = generate(
        &[
            &[
                "--model",
                &sd3_file,
                "--text-encoders",
                &encoders,
                "--prompt",
                "x",
            ][..],
            &["--scheduler", "ddim"],
            &common,
        ]
        .concat(),
    );
    assert!(!ok && err.contains("flow-match"), "{err}");
}

/// The `family` case of `tests/fixtures/tiny-dit/cases.json`, and the folder.
fn dit_case(family: &str) -> (PathBuf, Value) {
    let dir = common::fixture("tiny-dit");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let case = cases[family].clone();
    (dir, case)
}

/// Max |out − diffusers' output| and max |diffusers' output|, printed.
fn output_error(case: &Value, out: &Tensor, family: &str) -> (f32, f32) {
    let want = floats(&case["output"]);
    let err = max_diff(&flat(out), &want);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("{family} transformer vs diffusers: max |Δ| {err:.2e} (max |out| {scale:.2})");
    (err, scale)
}

/// The tiny SD3 single file (`tests/fixtures/tiny-dit`, written by steerdiff's
/// `sd3_tiny::write_random_checkpoint`) through steerdiff's loader and MMDiT (candle's parts), against
/// diffusers' own `SD3Transformer2DModel.from_single_file` of the same file on the same inputs
/// (its `make_fixture.py`). `Sd3` runs the MMDiT in f16, diffusers here in f32, so the bound is
/// f16's (`tests/sd35_mmdit.rs` checks it in f32 too).
#[test]
fn sd3_transformer_matches_diffusers_from_single_file() {
    use steerdiff::guidance::{Condition, Denoiser, StepPoint};
    use steerdiff::pipelines::sd::sd3::Sd3;
    let (dir, case) = dit_case("sd3");
    let tensor = |key: &str| common::case_tensor(&case, key);
    let mut sd3 = Sd3::load(
        &dir.join("sd3.safetensors"),
        &steerdiff::pipelines::sd::LoadOptions::default(),
    )
    .unwrap();
    sd3.set_text_embeddings(&tensor("context"), &tensor("pooled"))
        .unwrap();
    let at = StepPoint {
        timestep: case["timestep"].as_f64().unwrap(),
        alpha: 0.3,
        sigma: 0.7,
    };
    // Table row 0 answers Null, row 1 Prompt(0): the two rows of the reference batch.
    let out = sd3
        .forward(&tensor("x"), &at, &[Condition::Null, Condition::Prompt(0)])
        .unwrap();
    let (err, scale) = output_error(&case, &out, "SD3");
    assert!(err <= 1e-2 * scale.max(1.0), "{err} (max |out| {scale})");
}

/// The tiny FLUX-dev-style single file (guidance embedding; `tests/fixtures/tiny-dit`) through
/// steerdiff's loader and candle's FLUX, against diffusers' own `FluxTransformer2DModel` with
/// the same weights (mapped from the original names and loaded strictly by its
/// `make_fixture.py`), on the same inputs, with FluxPipeline's packing and position ids.
#[test]
fn flux_transformer_matches_diffusers() {
    use steerdiff::pipelines::sd::flux::Flux;
    let (dir, case) = dit_case("flux");
    let mut flux = Flux::load(
        &dir.join("flux.safetensors"),
        &dir.join("ae.safetensors"),
        &steerdiff::pipelines::sd::LoadOptions::default(),
    )
    .unwrap();
    assert!(flux.config.guidance_embed);
    let out = common::flux_case_output(&mut flux, &case);
    let (err, scale) = output_error(&case, &out, "FLUX");
    assert!(err <= 1e-4 * scale.max(1.0), "{err} (max |out| {scale})");
}
