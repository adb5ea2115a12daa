//! Original-layout single files (`tests/fixtures/single-file/`, written from the tiny
//! diffusers fixtures by its `make_fixture.py` and proven genuine there by diffusers' own
//! `from_single_file`, which reproduces the folders' cases): steerdiff must run each of them
//! to the same latents and images as the folder, within the tolerances of `tests/tiny_sd.rs`,
//! through the API and through `steerdiff generate --model FILE --text-encoders FOLDER`.
//! Then the refusals: pickles (by name and by magic bytes), files of another family than the
//! config repo, files without a text encoder or VAE.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use candle_core::Device;
use steerdiff::pipelines::sd::ldm::{Layout, LdmCheckpoint};
use steerdiff::pipelines::sd::{LoadOptions, StableDiffusion};

use common::sd_cases::{api_cases, cli_cases};
use common::{fixture, steerdiff_offline};

/// The single file of `name` and the diffusers folder whose configs it uses.
fn single(name: &str, config_fixture: &str) -> (PathBuf, PathBuf) {
    (
        fixture("single-file").join(format!("{name}.safetensors")),
        fixture(config_fixture).join("pipeline"),
    )
}

fn load(name: &str, config_fixture: &str, opts: &LoadOptions) -> StableDiffusion {
    let (file, config) = single(name, config_fixture);
    let checkpoint = Arc::new(LdmCheckpoint::open(&file).unwrap());
    StableDiffusion::from_single_file(checkpoint, Some(config.to_str().unwrap()), opts)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn model_args(name: &str, config_fixture: &str) -> Vec<OsString> {
    let (file, config) = single(name, config_fixture);
    vec![
        "--model".into(),
        file.into(),
        "--text-encoders".into(),
        config.into(),
    ]
}

#[test]
fn each_family_is_told_from_its_tensor_names() {
    for (name, layout) in [
        ("tiny-sd", Layout::Sd1),
        ("tiny-sd2", Layout::Sd2),
        ("tiny-sdxl", Layout::Sdxl),
    ] {
        let (file, _) = single(name, "tiny-sd");
        assert_eq!(LdmCheckpoint::open(&file).unwrap().layout, layout, "{name}");
    }
}

#[test]
fn an_sd1_file_matches_diffusers_through_the_api() {
    api_cases(
        &mut load("tiny-sd", "tiny-sd", &LoadOptions::default()),
        "tiny-sd",
    );
}

/// The same weights with the OpenCLIP text encoder of SD 2.x files (fused q/k/v).
#[test]
fn an_sd2_file_matches_diffusers_through_the_api() {
    api_cases(
        &mut load("tiny-sd2", "tiny-sd", &LoadOptions::default()),
        "tiny-sd",
    );
}

#[test]
fn an_sdxl_file_matches_diffusers_through_the_api() {
    let mut sd = load("tiny-sdxl", "tiny-sdxl", &LoadOptions::default());
    assert!(sd.is_sdxl() && sd.force_zeros_for_empty_prompt);
    api_cases(&mut sd, "tiny-sdxl");
}

#[test]
fn single_files_match_diffusers_through_the_cli() {
    cli_cases("tiny-sd", &model_args("tiny-sd", "tiny-sd"));
    cli_cases("tiny-sdxl", &model_args("tiny-sdxl", "tiny-sdxl"));
}

/// `--prediction` overrides the config repo's scheduler: v-prediction on this ε model moves
/// the image; `epsilon` (what the config says) leaves it byte-identical.
#[test]
fn prediction_overrides_the_config_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let run = |tag: &str, extra: &[&str]| -> Vec<u8> {
        let out = dir.path().join(tag);
        let mut args: Vec<OsString> = vec!["generate".into()];
        args.extend(model_args("tiny-sd2", "tiny-sd"));
        for a in [
            "--prompt",
            "a red cat",
            "--steps",
            "3",
            "-H",
            "16",
            "-W",
            "16",
            "-o",
        ] {
            args.push(a.into());
        }
        args.push(out.clone().into());
        args.extend(extra.iter().map(OsString::from));
        let o = steerdiff_offline(&args);
        assert!(
            o.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        image::open(out.join("sample-0000.png"))
            .unwrap()
            .to_rgb8()
            .into_raw()
    };
    let plain = run("plain", &[]);
    assert_eq!(plain, run("eps", &["--prediction", "epsilon"]));
    assert_ne!(plain, run("v", &["--prediction", "v"]));
}

fn refused(args: &[OsString], needles: &[&str]) {
    let o = steerdiff_offline(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing `{n}` in: {err}");
    }
}

fn generate_args(model: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["generate".into(), "--model".into(), model.into()];
    args.extend(["--prompt", "x", "--steps", "1", "-o"].map(OsString::from));
    args.push(model.with_extension("out").into());
    args.extend(extra.iter().map(OsString::from));
    args
}

/// A `.ckpt` is refused by its name, whatever it holds (it is never opened: the content here
/// is not even a pickle); a pickle renamed `.safetensors` is refused by its magic bytes.
#[test]
fn pickles_are_refused_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("model.ckpt");
    std::fs::write(&ckpt, b"not read at all").unwrap();
    refused(&generate_args(&ckpt, &[]), &["pickle", "safetensors"]);
    for (name, magic) in [
        ("zip.safetensors", &b"PK\x03\x04rest-of-a-torch-zip"[..]),
        (
            "legacy.safetensors",
            &b"\x80\x02\x8a\x0alegacy-torch-save"[..],
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, magic).unwrap();
        refused(&generate_args(&p, &[]), &["pickle", "renamed"]);
    }
}

/// Writes `src` without the tensors whose names start with any of `drop`.
fn without(src: &Path, drop: &[&str], dst: &Path) {
    let tensors = candle_core::safetensors::load(src, &Device::Cpu).unwrap();
    let kept: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .filter(|(n, _)| !drop.iter().any(|d| n.starts_with(d)))
        .collect();
    candle_core::safetensors::save(&kept, dst).unwrap();
}

#[test]
fn files_of_another_family_or_missing_parts_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (sd1, _) = single("tiny-sd", "tiny-sd");
    let xl_config = fixture("tiny-sdxl").join("pipeline");
    let xl = xl_config.to_str().unwrap();
    refused(
        &generate_args(&sd1, &["--text-encoders", xl]),
        &["SD 1.x", "SDXL", "--text-encoders"],
    );
    refused(
        &generate_args(&sd1, &["--ae", sd1.to_str().unwrap()]),
        &["VAE inside", "drop --ae"],
    );
    let no_vae = dir.path().join("no-vae.safetensors");
    without(&sd1, &["first_stage_model."], &no_vae);
    refused(
        &generate_args(&no_vae, &[]),
        &["no VAE", "first_stage_model"],
    );
    let unet_only = dir.path().join("unet-only.safetensors");
    without(
        &sd1,
        &["cond_stage_model.", "first_stage_model."],
        &unet_only,
    );
    refused(&generate_args(&unet_only, &[]), &["no text encoder"]);
    let refiner = dir.path().join("refiner.safetensors");
    let (xl_file, _) = single("tiny-sdxl", "tiny-sdxl");
    without(&xl_file, &["conditioner.embedders.0."], &refiner);
    let renamed = dir.path().join("refiner2.safetensors");
    let tensors = candle_core::safetensors::load(&refiner, &Device::Cpu).unwrap();
    let moved: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(n, t)| {
            (
                n.replace("conditioner.embedders.1.", "conditioner.embedders.0."),
                t,
            )
        })
        .collect();
    candle_core::safetensors::save(&moved, &renamed).unwrap();
    refused(&generate_args(&renamed, &[]), &["refiner"]);
}

/// Without --text-encoders the family's diffusers repo is used for the configs; offline and
/// not cached, the error names it and the flag.
#[test]
fn the_default_config_repo_is_named_when_it_is_not_cached() {
    let home = tempfile::tempdir().unwrap();
    let (sd1, _) = single("tiny-sd", "tiny-sd");
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(generate_args(&sd1, &[]))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("stable-diffusion-v1-5/stable-diffusion-v1-5")
            && err.contains("--text-encoders"),
        "{err}"
    );
}
