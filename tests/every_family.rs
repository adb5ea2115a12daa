//! One `generate` path for every model family: the same flags on the toy, a Gaussian mixture,
//! tiny Stable Diffusion and SDXL pipelines and tiny SD3 and FLUX checkpoints write the one
//! `samples.json` schema (docs/samples-json.md); `info` reads every image's record; and
//! `--shard 0/2` + `--shard 1/2`, merged, give the unsharded run's PNGs byte for byte and its
//! record.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn steerdiff(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(args)
        .output()
        .expect("run steerdiff")
}

fn ok(args: &[String]) -> Output {
    let o = steerdiff(args);
    assert!(
        o.status.success(),
        "steerdiff {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The model flags of every family (what the family itself requires: its spec, and a class
/// or a prompt).
fn families(dir: &Path) -> Vec<(&'static str, Vec<String>, bool)> {
    use steerdiff::pipelines::sd::{flux_tiny, sd3_tiny};
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let path = |p: PathBuf| p.display().to_string();
    let encoders = common::fixture("tiny-text-encoders");
    let (mut cfg, ae) = sd3_tiny::tiny_config();
    cfg.context_embed_size = 96;
    cfg.adm_in_channels = 32 + 48;
    let sd3_file = path(sd3_tiny::write_random_checkpoint(dir, &cfg, &ae, 3).unwrap());
    let flux_enc = common::flux_encoders(dir);
    let (mut fcfg, fae) = flux_tiny::tiny_config(false);
    fcfg.context_in_dim = 96;
    fcfg.vec_in_dim = 32;
    let fdir = dir.join("flux");
    std::fs::create_dir_all(&fdir).unwrap();
    let (flux_file, ae_file) = flux_tiny::write_random_checkpoints(&fdir, &fcfg, &fae, 4).unwrap();
    let gmm = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gmm/three-classes-1d.json");
    let prompt = ["--prompt", "a red cat"];
    vec![
        ("toy", s(&["--model", "toy", "--class", "star"]), true),
        (
            "gmm",
            s(&[
                "--model",
                &format!("gmm:{}", gmm.display()),
                "--class",
                "right",
            ]),
            false,
        ),
        (
            "tiny-sd",
            [
                s(&[
                    "--model",
                    &path(common::fixture("tiny-sd").join("pipeline")),
                ]),
                s(&prompt),
            ]
            .concat(),
            true,
        ),
        (
            "tiny-sdxl",
            [
                s(&[
                    "--model",
                    &path(common::fixture("tiny-sdxl").join("pipeline")),
                ]),
                s(&prompt),
            ]
            .concat(),
            true,
        ),
        (
            "sd3",
            [
                s(&["--model", &sd3_file, "--text-encoders", &path(encoders)]),
                s(&prompt),
                s(&["--height", "32", "--width", "32"]),
            ]
            .concat(),
            true,
        ),
        (
            "flux",
            [
                s(&["--model", &path(flux_file), "--ae", &path(ae_file)]),
                s(&["--text-encoders", &path(flux_enc)]),
                s(&prompt),
                s(&["--height", "32", "--width", "32"]),
            ]
            .concat(),
            true,
        ),
    ]
}

/// The same run flags for every family.
const COMMON: [&str; 6] = ["-n", "3", "--steps", "2", "--seed", "7"];

fn pngs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sample-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Text-to-image records name every weight file the model was read from with its size and
/// sha256 (recomputed here from the file itself).
fn check_weight_hashes(family: &str, model: &[String], record: &Value) {
    if matches!(family, "toy" | "gmm") {
        return;
    }
    let spec = Path::new(&model[1]);
    let weights = record["parameters"]["model_config"]["weights"]
        .as_array()
        .unwrap_or_else(|| panic!("{family}: model_config.weights missing"));
    // UNet or transformer, autoencoder (in the SD folder, or FLUX's --ae) and text encoders.
    assert!(weights.len() >= 3, "{family}: {weights:?}");
    for w in weights {
        let file = Path::new(w["file"].as_str().unwrap());
        let path = if file.is_absolute() {
            file.to_path_buf()
        } else {
            spec.join(file)
        };
        assert_eq!(
            w["bytes"].as_u64(),
            Some(std::fs::metadata(&path).unwrap().len()),
            "{family}: {w}"
        );
        let sha = steerdiff::pipelines::toy::model::sha256_file(&path).unwrap();
        assert_eq!(w["sha256"], sha.as_str(), "{family}: {}", file.display());
    }
    if family.starts_with("tiny-sd") {
        let files: Vec<&str> = weights
            .iter()
            .map(|w| w["file"].as_str().unwrap())
            .collect();
        assert!(
            files.contains(&"unet/diffusion_pytorch_model.safetensors"),
            "{family}: {files:?}"
        );
    }
}

fn check_schema(family: &str, record: &Value, images: bool) {
    let keys: Vec<&String> = record.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ledger", "parameters", "samples"], "{family}");
    let p = &record["parameters"];
    assert_eq!(p["schema"], 2, "{family}");
    for key in [
        "model",
        "model_config",
        "steerdiff_version",
        "device",
        "dtype",
        "path",
        "class",
        "class_name",
        "sampler",
        "solver",
        "stochastic",
        "steps",
        "eta",
        "cfg",
        "cfg_rescale",
        "cfg_interval",
        "n",
        "particles_per_group",
        "seed",
        "seeding",
        "strategy",
    ] {
        assert!(p.get(key).is_some(), "{family}: parameters.{key} missing");
    }
    assert_eq!(p["device"], "cpu", "{family}");
    assert_eq!((p["n"].as_u64(), p["steps"].as_u64()), (Some(3), Some(2)));
    let samples = record["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3, "{family}");
    for (g, s) in samples.iter().enumerate() {
        let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        let mut want = vec!["group", "log_weight", "particle", "reward", "seed", "x"];
        if images {
            want.push("image");
            want.sort();
        }
        assert_eq!(keys, want, "{family}: sample {g}");
        assert_eq!(s["group"], g as u64);
        assert_eq!(s["seed"], 7 + g as u64);
        if images {
            assert_eq!(s["image"], format!("sample-{g:04}.png"), "{family}");
        }
    }
}

#[test]
fn every_family_writes_one_schema_and_its_shards_merge_into_the_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, model, images) in families(tmp.path()) {
        let out = |name: &str| tmp.path().join(format!("{family}-{name}"));
        let run = |name: &str, extra: &[&str]| {
            let mut args: Vec<String> = vec!["generate".into()];
            args.extend(model.iter().cloned());
            args.extend(COMMON.iter().map(|s| s.to_string()));
            args.extend(extra.iter().map(|s| s.to_string()));
            args.extend(["-o".to_string(), out(name).display().to_string()]);
            ok(&args);
            json(&out(name).join("samples.json"))
        };
        let whole = run("whole", &[]);
        check_schema(family, &whole, images);
        check_weight_hashes(family, &model, &whole);
        if images {
            for name in ["grid.png", "sample-0000.png"] {
                assert!(out("whole").join(name).is_file(), "{family}: {name}");
            }
            let o = ok(&[
                "info".into(),
                "--json".into(),
                out("whole").join("sample-0002.png").display().to_string(),
            ]);
            let info: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(info["parameters"]["model"], whole["parameters"]["model"]);
        }
        let s0 = run("s0", &["--shard", "0/2"]);
        let s1 = run("s1", &["--shard", "1/2"]);
        assert_eq!(
            s1["parameters"]["shard"]["groups"],
            serde_json::json!([1, 3])
        );
        assert_eq!(s0["samples"].as_array().unwrap().len(), 1, "{family}");
        ok(&[
            "merge".into(),
            out("s1").display().to_string(),
            out("s0").display().to_string(),
            "-o".into(),
            out("merged").display().to_string(),
        ]);
        let merged = json(&out("merged").join("samples.json"));
        assert_eq!(whole["samples"], merged["samples"], "{family}: samples");
        assert_eq!(whole["parameters"], merged["parameters"], "{family}");
        assert_eq!(
            whole["ledger"]["model_rows"], merged["ledger"]["model_rows"],
            "{family}"
        );
        let (a, b) = (pngs(&out("whole")), pngs(&out("merged")));
        assert_eq!(a.len(), if images { 3 } else { 0 }, "{family}");
        let names = |v: &[(String, Vec<u8>)]| v.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b), "{family}");
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                x == y,
                "{family}: {name} differs between the whole and the merged run"
            );
        }
        if images {
            assert_eq!(
                std::fs::read(out("whole").join("grid.png")).unwrap(),
                std::fs::read(out("merged").join("grid.png")).unwrap(),
                "{family}: grid"
            );
        }
    }
}
