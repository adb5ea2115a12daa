//! Loading real-model folders and the Hub cache: offline behaviour, bounded network waits, a
//! hand-built hub cache, and clear errors (never panics) for bad files and configs.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use steerdiff::pipelines::sd::{HubSettings, LoadOptions, ModelFiles, Source, StableDiffusion};

fn pipeline_dir() -> PathBuf {
    match std::env::var_os("STEERDIFF_FIXTURES") {
        Some(d) => PathBuf::from(d).join("tiny-sd/pipeline"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd/pipeline"),
    }
}

/// A writable copy of the tiny pipeline.
fn pipeline_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pipeline");
    common::copy_dir(&pipeline_dir(), &p);
    (dir, p)
}

fn load_folder(p: &Path) -> Result<StableDiffusion, String> {
    StableDiffusion::from_files(
        &ModelFiles::new(Source::Folder(p.to_path_buf())),
        &LoadOptions::default(),
    )
    .map_err(|e| e.to_string())
}

/// `steerdiff generate` with a clean hub environment rooted at `hf_home`.
fn generate(hf_home: &Path, env: &[(&str, &str)], args: &[&str]) -> (Output, Duration) {
    let out = hf_home.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steerdiff"));
    cmd.arg("generate")
        .args(args)
        .arg("-o")
        .arg(&out)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env_remove("STEERDIFF_HUB_TIMEOUT_S");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let o = cmd.output().unwrap();
    (o, start.elapsed())
}

const SD15_REPO: &str = "stable-diffusion-v1-5/stable-diffusion-v1-5";

#[test]
fn offline_with_an_empty_cache_fails_fast_naming_repo_file_and_fix() {
    let home = tempfile::tempdir().unwrap();
    let (o, took) = generate(
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
        &["--model", "sd15", "--prompt", "a cat"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for want in [
        SD15_REPO,
        "model_index.json",
        "huggingface-cli download",
        "HF_HUB_OFFLINE",
    ] {
        assert!(err.contains(want), "missing `{want}` in: {err}");
    }
    assert!(!home.path().join("out").exists(), "nothing written");
    // The DiT presets name their single files.
    for (preset, repo, file) in [
        (
            "flux-schnell",
            "black-forest-labs/FLUX.1-schnell",
            "flux1-schnell.safetensors",
        ),
        (
            "sd3-medium",
            "stabilityai/stable-diffusion-3-medium",
            "sd3_medium.safetensors",
        ),
    ] {
        let (o, took) = generate(
            home.path(),
            &[("HF_HUB_OFFLINE", "1")],
            &["--model", preset, "--prompt", "a cat"],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(err.contains(repo) && err.contains(file), "{err}");
    }
}

#[test]
fn no_network_fails_fast_naming_repo_file_and_fix() {
    // A closed loopback port: connection refused at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let (o, took) = generate(
        home.path(),
        &[("HF_ENDPOINT", &endpoint)],
        &["--model", "sd15", "--prompt", "a cat"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for want in [SD15_REPO, "model_index.json", "huggingface-cli download"] {
        assert!(err.contains(want), "missing `{want}` in: {err}");
    }
}

#[test]
fn a_server_that_never_answers_is_bounded() {
    // Accepts connections (the kernel completes the handshake) but never replies.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let home = tempfile::tempdir().unwrap();
    let (o, took) = generate(
        home.path(),
        &[("HF_ENDPOINT", &endpoint), ("STEERDIFF_HUB_TIMEOUT_S", "1")],
        &["--model", "sd15", "--prompt", "a cat"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(
        err.contains("no answer") && err.contains(SD15_REPO),
        "{err}"
    );
    drop(listener);
}

/// A cache laid out as hf-hub lays it: `models--org--name/refs/main` + `snapshots/<id>/…`.
fn hub_cache(home: &Path, repo: &str) {
    let root = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let id = "0123456789abcdef0123456789abcdef01234567";
    fs::create_dir_all(root.join("refs")).unwrap();
    fs::write(root.join("refs/main"), id).unwrap();
    common::copy_dir(&pipeline_dir(), &root.join("snapshots").join(id));
}

#[test]
fn a_populated_hub_cache_loads_offline() {
    let home = tempfile::tempdir().unwrap();
    hub_cache(home.path(), "tiny-org/tiny-sd");
    let settings = HubSettings {
        cache_dir: home.path().join("hub"),
        offline: true,
        ..HubSettings::from_env()
    };
    let files = ModelFiles::with_settings(Source::parse("tiny-org/tiny-sd").unwrap(), settings);
    let sd = StableDiffusion::from_files(&files, &LoadOptions::default()).unwrap();
    assert_eq!(sd.image_size(), (16, 16));
    // And through the binary, offline.
    let (o, _) = generate(
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
        &[
            "--model",
            "tiny-org/tiny-sd",
            "--prompt",
            "a red cat",
            "--steps",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(home.path().join("out/sample-0000.png").is_file());
    // A file the cached snapshot lacks: named, with the fix.
    fs::remove_file(
        home.path()
            .join("hub/models--tiny-org--tiny-sd/snapshots/0123456789abcdef0123456789abcdef01234567/unet/config.json"),
    )
    .unwrap();
    let (o, _) = generate(
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
        &["--model", "tiny-org/tiny-sd", "--prompt", "x"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unet/config.json") && err.contains("tiny-org/tiny-sd"),
        "{err}"
    );
}

/// A preset runs with its recommended steps and CFG unless they are given: `sd-turbo` (1 step,
/// no CFG), here with the tiny pipeline cached under its repo id.
#[test]
fn a_preset_brings_its_recommended_steps_and_cfg() {
    let home = tempfile::tempdir().unwrap();
    hub_cache(home.path(), "stabilityai/sd-turbo");
    let rows = |args: &[&str]| -> u64 {
        let (o, _) = generate(home.path(), &[("HF_HUB_OFFLINE", "1")], args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = fs::read_to_string(home.path().join("out/samples.json")).unwrap();
        common::total_rows(&serde_json::from_str(&text).unwrap())
    };
    let base = [
        "--model",
        "sd-turbo",
        "--prompt",
        "a red cat",
        "--height",
        "16",
        "--width",
        "16",
    ];
    assert_eq!(rows(&base), 1, "1 step, no CFG");
    assert_eq!(
        rows(&[&base[..], &["--steps", "3", "--cfg", "2"]].concat()),
        3 * 2
    );
}

fn rewrite_tensors(file: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut t = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, file).unwrap();
}

#[test]
fn bad_weights_give_clear_errors() {
    // Truncated.
    let (_d, p) = pipeline_copy();
    let unet = p.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = fs::read(&unet).unwrap();
    fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_folder(&p).unwrap_err();
    assert!(e.contains("unet") && e.contains("truncated"), "{e}");

    // A tensor of the wrong shape.
    let (_d, p) = pipeline_copy();
    rewrite_tensors(&p.join("vae/diffusion_pytorch_model.safetensors"), |t| {
        let w = t.get("post_quant_conv.weight").unwrap().clone();
        let n = w.elem_count();
        t.insert("post_quant_conv.weight".into(), w.reshape(n).unwrap());
    });
    let e = load_folder(&p).unwrap_err();
    assert!(e.contains("post_quant_conv") && e.contains("shape"), "{e}");

    // A tensor of the wrong dtype.
    let (_d, p) = pipeline_copy();
    rewrite_tensors(&p.join("unet/diffusion_pytorch_model.safetensors"), |t| {
        let w = t.get("conv_in.bias").unwrap().to_dtype(DType::I64).unwrap();
        t.insert("conv_in.bias".into(), w);
    });
    let e = load_folder(&p).unwrap_err();
    assert!(e.contains("conv_in.bias") && e.contains("I64"), "{e}");

    // A missing tensor.
    let (_d, p) = pipeline_copy();
    rewrite_tensors(&p.join("text_encoder/model.safetensors"), |t| {
        t.remove("text_model.final_layer_norm.weight");
    });
    let e = load_folder(&p).unwrap_err();
    assert!(e.contains("final_layer_norm"), "{e}");
}

#[test]
fn bad_configs_give_clear_errors() {
    let edit = |file: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let (d, p) = pipeline_copy();
        let path = p.join(file);
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut v);
        fs::write(&path, v.to_string()).unwrap();
        let e = load_folder(&p).unwrap_err();
        drop(d);
        e
    };
    let e = edit("unet/config.json", &|v| v["warp_drive"] = 3.into());
    assert!(e.contains("warp_drive") && e.contains("unknown"), "{e}");
    let e = edit("vae/config.json", &|v| {
        v.as_object_mut().unwrap().remove("latent_channels");
    });
    assert!(
        e.contains("latent_channels") && e.contains("missing"),
        "{e}"
    );
    let e = edit("text_encoder/config.json", &|v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    assert!(
        e.contains("hidden_size") && e.contains("text_encoder"),
        "{e}"
    );
    // SDXL's added conditioning needs its sizes; an SDXL pipeline needs both encoders.
    let e = edit("unet/config.json", &|v| {
        v["addition_embed_type"] = "text_time".into()
    });
    assert!(
        e.contains("addition_time_embed_dim") && e.contains("missing"),
        "{e}"
    );
    let e = edit("unet/config.json", &|v| {
        v["addition_embed_type"] = "image_hint".into()
    });
    assert!(e.contains("image_hint") && e.contains("text_time"), "{e}");
    let e = edit("unet/config.json", &|v| v["norm_num_groups"] = 16.into());
    assert!(e.contains("norm_num_groups"), "{e}");
    let e = edit("model_index.json", &|v| {
        v["_class_name"] = "StableDiffusionXLPipeline".into()
    });
    assert!(e.contains("tokenizer_2"), "{e}");
    let e = edit("unet/config.json", &|v| {
        v["block_out_channels"] = "wide".into()
    });
    assert!(e.contains("block_out_channels"), "{e}");
    // Not JSON at all.
    let (_d, p) = pipeline_copy();
    fs::write(p.join("scheduler/scheduler_config.json"), "{not json").unwrap();
    let e = load_folder(&p).unwrap_err();
    assert!(e.contains("scheduler_config.json"), "{e}");
}

#[test]
fn pickle_checkpoints_are_refused() {
    // Pickle weights in a diffusers folder.
    let (_d, p) = pipeline_copy();
    fs::rename(
        p.join("vae/diffusion_pytorch_model.safetensors"),
        p.join("vae/diffusion_pytorch_model.bin"),
    )
    .unwrap();
    let e = load_folder(&p).unwrap_err();
    assert!(
        e.contains("pickle") && e.contains("diffusion_pytorch_model.bin"),
        "{e}"
    );
    // A .ckpt named on the command line.
    let home = tempfile::tempdir().unwrap();
    let ckpt = home.path().join("model.ckpt");
    fs::write(&ckpt, b"\x80\x02not really").unwrap();
    let (o, _) = generate(
        home.path(),
        &[],
        &["--model", ckpt.to_str().unwrap(), "--prompt", "x"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pickle") && !err.contains("internal error"),
        "{err}"
    );
}

/// Hub SD repos ship the tokenizer as `vocab.json` + `merges.txt` (no `tokenizer.json`): the
/// tokenizer built from those must give the fixture's ids for every case.
#[test]
fn a_tokenizer_from_vocab_and_merges_matches_the_fixture() {
    let (_d, p) = pipeline_copy();
    let tj: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(p.join("tokenizer/tokenizer.json")).unwrap())
            .unwrap();
    let model = &tj["model"];
    fs::write(p.join("tokenizer/vocab.json"), model["vocab"].to_string()).unwrap();
    let mut merges = String::from("#version: 0.2\n");
    for m in model["merges"].as_array().unwrap() {
        let line = match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => {
                format!("{} {}", a[0].as_str().unwrap(), a[1].as_str().unwrap())
            }
            _ => panic!("merge {m}"),
        };
        merges.push_str(&line);
        merges.push('\n');
    }
    fs::write(p.join("tokenizer/merges.txt"), merges).unwrap();
    fs::remove_file(p.join("tokenizer/tokenizer.json")).unwrap();
    let sd = load_folder(&p).unwrap();
    let dir = pipeline_dir().parent().unwrap().to_path_buf();
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let case: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        for (text, ids) in [
            ("prompt", "input_ids"),
            ("negative_prompt", "negative_input_ids"),
        ] {
            let want: Vec<u32> = case[ids]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                sd.tokenize(case[text].as_str().unwrap()).unwrap(),
                want,
                "{}: {text}",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n > 0);
    // Truncation: a long prompt keeps bos … eos at the model's length.
    let long = sd.tokenize(&"red cat ".repeat(40)).unwrap();
    assert_eq!(long.len(), 16);
    assert_eq!((long[0], long[15]), (63, 64));
}

/// FLUX from tiny random checkpoints in the original single-file layout (made here): the real
/// loader infers the config from the tensors, and a full FK-steered generation (JPEG reward on
/// the autoencoder's decode, stochastic flow sampler) gives images of the right shape. Both
/// schnell-style (no guidance embedding) and dev-style (guidance embedding, dynamic shift).
#[test]
fn tiny_flux_single_file_checkpoints_load_and_steer() {
    use std::sync::Arc;
    use steerdiff::guidance::strategy::{FkSteering, ResampleSchedule};
    use steerdiff::guidance::{Condition, Engine, GroupSpec, Population};
    use steerdiff::pipelines::sd::flux::Flux;
    use steerdiff::pipelines::sd::flux_tiny::{tiny_config, write_random_checkpoints};
    use steerdiff::pipelines::sd::rewards::{JpegCompressibility, Pixels};

    for dev_style in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, ae_cfg) = tiny_config(dev_style);
        let (model, ae) = write_random_checkpoints(dir.path(), &cfg, &ae_cfg, 7).unwrap();
        let mut flux = Flux::load(&model, &ae, &LoadOptions::default()).unwrap();
        assert_eq!(flux.config.hidden_size, 32);
        assert_eq!(flux.config.num_heads, 2);
        assert_eq!(flux.config.guidance_embed, dev_style);
        assert_eq!(flux.ae_config.ch_mult, vec![1, 1]);
        flux.set_image_size(32, 32).unwrap();
        let txt: Vec<f32> = (0..2 * 5 * 12)
            .map(|i| ((i % 7) as f32 - 3.0) / 3.0)
            .collect();
        let txt = Tensor::from_vec(txt, (2, 5, 12), &Device::Cpu).unwrap();
        let vec_: Vec<f32> = (0..2 * 8).map(|i| ((i % 5) as f32 - 2.0) / 2.0).collect();
        let vec_ = Tensor::from_vec(vec_, (2, 8), &Device::Cpu).unwrap();
        flux.set_text_embeddings(&txt, &vec_).unwrap();
        let flux = Arc::new(flux);
        let decoder = flux.clone();
        let reward = Arc::new(
            JpegCompressibility::new(
                Pixels::Custom(Arc::new(move |x: &Tensor| decoder.decode(x))),
                90,
            )
            .unwrap(),
        );
        let steps = 4;
        let sampler = flux.sampler(steps, Some(1.0)).unwrap();
        let fk = FkSteering::new(reward, 5.0, ResampleSchedule::for_steps(steps));
        let engine = Engine {
            models: vec![&*flux],
            schedule: &sampler.schedule,
            solver: sampler.solver.as_ref(),
            guidance: vec![Box::new(fk)],
        };
        let groups = [GroupSpec {
            seed: 3,
            cond: Condition::Prompt(0),
            particles: 3,
        }];
        use steerdiff::guidance::Denoiser;
        assert_eq!(flux.sample_shape(), vec![4, 16, 16]);
        let pop = Population::new(&groups, &flux.sample_shape(), 1.0, &Device::Cpu).unwrap();
        let out = engine.run(pop, None).unwrap();
        let x = &out.population.x;
        assert_eq!(x.dims(), &[3, 4, 16, 16]);
        let images = flux.decode(x).unwrap();
        assert_eq!(images.dims(), &[3, 3, 32, 32]);
        let v: Vec<f32> = images.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|p| p.is_finite() && (0.0..=1.0).contains(p)));
        assert!(out.ledger.reward_calls.values().sum::<u64>() > 0);
        assert!(out.population.particles.iter().all(|p| p.reward.is_some()));
    }
    // A transformer file that is not FLUX, and an autoencoder of the wrong width: clear errors.
    let dir = tempfile::tempdir().unwrap();
    let (cfg, ae_cfg) = tiny_config(false);
    let (model, ae) = write_random_checkpoints(dir.path(), &cfg, &ae_cfg, 1).unwrap();
    let e = Flux::load(&ae, &ae, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("img_in.weight"), "{e}");
    let mut wide = ae_cfg.clone();
    wide.z_channels = 8;
    let other = tempfile::tempdir().unwrap();
    let (_, ae8) = write_random_checkpoints(other.path(), &cfg, &wide, 1).unwrap();
    let e = Flux::load(&model, &ae8, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("latent channels"), "{e}");
    drop(ae);
}

/// SD3 from a tiny random checkpoint in the original single-file layout (MMDiT under
/// `model.diffusion_model.`, VAE under `first_stage_model.`, made here): loaded through the
/// real loader, then a full FK-steered generation with CFG on the negative-prompt row.
#[test]
fn tiny_sd3_single_file_checkpoint_loads_and_steers() {
    use std::sync::Arc;
    use steerdiff::guidance::strategy::{ClassifierFree, FkSteering, ResampleSchedule};
    use steerdiff::guidance::{Condition, Denoiser, Engine, GroupSpec, Population};
    use steerdiff::pipelines::sd::rewards::{JpegCompressibility, Pixels};
    use steerdiff::pipelines::sd::sd3::Sd3;
    use steerdiff::pipelines::sd::sd3_tiny::{tiny_config, write_random_checkpoint};

    let dir = tempfile::tempdir().unwrap();
    let (cfg, ae_cfg) = tiny_config();
    let file = write_random_checkpoint(dir.path(), &cfg, &ae_cfg, 11).unwrap();
    let mut sd3 = Sd3::load(&file, &LoadOptions::default()).unwrap();
    assert_eq!(sd3.config.depth, 2);
    assert_eq!(sd3.config.head_size, 16);
    assert_eq!(sd3.config.pos_embed_max_size, 16);
    assert_eq!(sd3.config.adm_in_channels, 8);
    sd3.set_image_size(32, 32).unwrap();
    let ctx: Vec<f32> = (0..2 * 6 * 12)
        .map(|i| ((i % 9) as f32 - 4.0) / 4.0)
        .collect();
    let ctx = Tensor::from_vec(ctx, (2, 6, 12), &Device::Cpu).unwrap();
    let pooled: Vec<f32> = (0..2 * 8).map(|i| ((i % 3) as f32 - 1.0) / 2.0).collect();
    let pooled = Tensor::from_vec(pooled, (2, 8), &Device::Cpu).unwrap();
    sd3.set_text_embeddings(&ctx, &pooled).unwrap();
    let sd3 = Arc::new(sd3);
    let decoder = sd3.clone();
    let reward = Arc::new(
        JpegCompressibility::new(
            Pixels::Custom(Arc::new(move |x: &Tensor| decoder.decode(x))),
            90,
        )
        .unwrap(),
    );
    let steps = 4;
    let sampler = sd3.sampler(steps, Some(1.0)).unwrap();
    let engine = Engine {
        models: vec![&*sd3],
        schedule: &sampler.schedule,
        solver: sampler.solver.as_ref(),
        guidance: vec![
            Box::new(ClassifierFree::new(4.0).unwrap()),
            Box::new(FkSteering::new(
                reward,
                5.0,
                ResampleSchedule::for_steps(steps),
            )),
        ],
    };
    assert_eq!(sd3.sample_shape(), vec![4, 16, 16]);
    let groups = [GroupSpec {
        seed: 5,
        cond: Condition::Prompt(0),
        particles: 2,
    }];
    let pop = Population::new(&groups, &sd3.sample_shape(), 1.0, &Device::Cpu).unwrap();
    let out = engine.run(pop, None).unwrap();
    assert_eq!(out.population.x.dims(), &[2, 4, 16, 16]);
    let images = sd3.decode(&out.population.x).unwrap();
    assert_eq!(images.dims(), &[2, 3, 32, 32]);
    let v: Vec<f32> = images.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|p| p.is_finite()));
    assert_eq!(out.ledger.total_rows(), (2 * 2 * steps) as u64);
    // A checkpoint without the VAE is refused by name.
    let e = Sd3::load(
        &steerdiff::pipelines::sd::flux_tiny::write_random_checkpoints(
            dir.path(),
            &steerdiff::pipelines::sd::flux_tiny::tiny_config(false).0,
            &steerdiff::pipelines::sd::flux_tiny::tiny_config(false).1,
            1,
        )
        .unwrap()
        .0,
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x_embedder"), "{e}");
}
