//! End-to-end tests of the `steerdiff` binary: determinism, the seeding rule, bad input,
//! outputs (samples.json, scatter.png, trace) and `list`.

mod common;

use common::steerdiff;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tempfile::TempDir;

const SPEC_1D: &str = r#"{"dim": 1, "components": [
    {"weight": 0.7, "mean": [-2], "std": 0.4, "class": 0},
    {"weight": 0.3, "mean": [2], "std": 0.4, "class": 1}]}"#;

const SPEC_2D: &str = r#"{"dim": 2, "components": [
    {"weight": 0.6, "mean": [-2, 0], "std": 0.5, "class": 0},
    {"weight": 0.4, "mean": [2, 1], "std": 0.7, "class": 1}],
    "class_names": ["left", "right"]}"#;

/// A temp dir holding `1d.json` and `2d.json`.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("1d.json"), SPEC_1D).unwrap();
        fs::write(dir.path().join("2d.json"), SPEC_2D).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn model(&self, spec: &str) -> String {
        format!("gmm:{}", self.path(spec).display())
    }
}

/// Runs `generate` with `args` plus `-o out`, asserting success.
fn generate(out: &Path, args: &[&str]) -> Value {
    let mut all = vec!["generate"];
    all.extend_from_slice(args);
    let out_s = out.to_str().unwrap();
    all.extend_from_slice(&["-o", out_s]);
    let o = steerdiff(&all);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{all:?} failed: {stderr}");
    read_samples(out)
}

fn read_samples(out: &Path) -> Value {
    let text = fs::read_to_string(out.join("samples.json")).expect("samples.json");
    serde_json::from_str(&text).expect("samples.json is JSON")
}

/// `(group, x)` of every sample, x as written (compared exactly).
fn xs(samples: &Value) -> Vec<(u64, Vec<Value>)> {
    samples["samples"]
        .as_array()
        .expect("samples array")
        .iter()
        .map(|s| {
            (
                s["group"].as_u64().expect("group"),
                s["x"].as_array().expect("x").clone(),
            )
        })
        .collect()
}

#[test]
fn the_same_command_twice_is_byte_identical() {
    let f = Fixture::new();
    for (spec, extra) in [
        ("1d.json", vec!["--eta", "1"]),
        ("2d.json", vec!["--class", "right", "--cfg", "2.5"]),
    ] {
        let model = f.model(spec);
        let mut args = vec![
            "--model",
            model.as_str(),
            "-n",
            "16",
            "--seed",
            "5",
            "--steps",
            "25",
        ];
        args.extend(extra);
        let (a, b) = (f.path(&format!("{spec}-a")), f.path(&format!("{spec}-b")));
        generate(&a, &args);
        generate(&b, &args);
        let read = |d: &Path, name: &str| fs::read(d.join(name)).unwrap();
        assert_eq!(read(&a, "samples.json"), read(&b, "samples.json"), "{spec}");
        if spec == "2d.json" {
            assert_eq!(read(&a, "scatter.png"), read(&b, "scatter.png"));
        }
        // Nothing but the outputs is left behind (no temporaries).
        let mut names: Vec<String> = fs::read_dir(&a)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let want: &[&str] = if spec == "2d.json" {
            &["samples.json", "scatter.png", "timing.json"]
        } else {
            &["samples.json", "timing.json"]
        };
        assert_eq!(names, want);
    }
}

#[test]
fn n8_is_two_runs_of_n4_with_offset_seeds() {
    let f = Fixture::new();
    let m1 = f.model("1d.json");
    let m2 = f.model("2d.json");
    let cases: Vec<Vec<&str>> = vec![
        vec!["--model", &m1, "--steps", "30"],
        vec!["--model", &m1, "--steps", "30", "--eta", "1"],
        vec!["--model", &m2, "--steps", "20", "--sampler", "dpmpp-2m"],
        vec![
            "--model", &m2, "--steps", "20", "--path", "flow", "--eta", "0.5", "--class", "left",
            "--cfg", "3",
        ],
    ];
    for (k, args) in cases.iter().enumerate() {
        let run = |n: &str, seed: &str, tag: &str| {
            let mut a = args.clone();
            a.extend_from_slice(&["-n", n, "--seed", seed]);
            generate(&f.path(&format!("c{k}-{tag}")), &a)
        };
        let all = run("8", "3", "all");
        let first = run("4", "3", "first");
        let second = run("4", "7", "second");
        let all = xs(&all);
        assert_eq!(all.len(), 8);
        let mut joined = xs(&first);
        joined.extend(xs(&second).into_iter().map(|(g, x)| (g + 4, x)));
        assert_eq!(all, joined, "case {k}: {args:?}");
        // Not all the same sample.
        assert_ne!(all[0].1, all[1].1);
    }
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let f = Fixture::new();
    fs::write(f.path("bad.json"), "{\"dim\": 1, \"components\": [").unwrap();
    fs::write(f.path("a-file"), "not a directory").unwrap();
    let m = f.model("1d.json");
    let bad = f.model("bad.json");
    let missing = f.model("missing.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--model", &bad], "malformed"),
        (vec!["--model", &missing], "missing.json"),
        (vec!["--model", "foo:bar"], "foo"),
        // No --model: the default toy model, which refuses an unknown class.
        (vec!["--class", "hexagon"], "hexagon"),
        (vec!["--model", &m, "--sampler", "heun"], "heun"),
        (vec!["--model", &m, "--steps", "0"], "steps"),
        (vec!["--model", &m, "--eta", "-1"], "eta"),
        (
            vec!["--model", &m, "--sampler", "euler", "--eta", "0.5"],
            "euler",
        ),
        (vec!["--model", &m, "--sampler", "flow-euler"], "flow-euler"),
        (vec!["--model", &m, "--class", "nine"], "nine"),
        (vec!["--model", &m, "--cfg", "3"], "--class"),
        (
            vec![
                "--model",
                &m,
                "--class",
                "1",
                "--cfg",
                "3",
                "--cfg-rescale",
                "2",
            ],
            "cfg-rescale",
        ),
        (vec!["--model", &m, "-n", "0"], "-n"),
        // Text-to-image flags on other models are refused, not ignored.
        (vec!["--model", &m, "--negative", "blue"], "--negative"),
        (vec!["--class", "star", "--width", "64"], "--width"),
    ];
    for (k, (args, needle)) in cases.iter().enumerate() {
        let out = f.path(&format!("out-{k}"));
        let mut all = vec!["generate"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", out.to_str().unwrap()]);
        check_refused(&steerdiff(&all), needle, &all);
        assert!(
            !out.join("samples.json").exists(),
            "{all:?} left samples.json"
        );
    }
    // An output path under a regular file.
    let out = f.path("a-file").join("out");
    let all = ["generate", "--model", &m, "-o", out.to_str().unwrap()];
    check_refused(&steerdiff(&all), "a-file", &all);
    // An unwritable trace path: refused before any output is written.
    let out = f.path("out-trace");
    let trace = f.path("no-such-dir").join("t.jsonl");
    let all = [
        "generate",
        "--model",
        &m,
        "-o",
        out.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ];
    check_refused(&steerdiff(&all), "t.jsonl", &all);
    assert!(!out.join("samples.json").exists());
}

fn check_refused(o: &Output, needle: &str, args: &[&str]) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: `{needle}` not in: {stderr}"
    );
}

#[test]
fn a_2d_spec_writes_a_png_scatter_and_samples_follow_the_class() {
    let f = Fixture::new();
    let m = f.model("2d.json");
    let out = f.path("png");
    let s = generate(
        &out,
        &[
            "--model", &m, "-n", "40", "--steps", "25", "--class", "right",
        ],
    );
    let img = image::open(out.join("scatter.png")).expect("a decodable PNG");
    assert_eq!((img.width(), img.height()), (512, 512));
    // Conditioned on `right` (mean [2, 1]): every sample lies on the right.
    for (_, x) in xs(&s) {
        assert!(x[0].as_f64().unwrap() > 0.0, "{x:?}");
    }
    assert_eq!(s["parameters"]["class"], 1);
    assert_eq!(s["parameters"]["class_name"], "right");
    assert_eq!(s["ledger"]["model_rows"]["gmm"], 40 * 25);
    let timing: Value =
        serde_json::from_str(&fs::read_to_string(out.join("timing.json")).unwrap()).unwrap();
    assert!(timing["total_s"].as_f64().unwrap() >= 0.0);
    assert!(
        timing["peak_rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{timing}"
    );
    // A 1-D spec writes no scatter.
    let out1 = f.path("no-png");
    generate(&out1, &["--model", &f.model("1d.json"), "--steps", "20"]);
    assert!(!out1.join("scatter.png").exists());
}

#[test]
fn trace_has_one_json_line_per_step() {
    let f = Fixture::new();
    let out = f.path("traced");
    let trace = f.path("trace.jsonl");
    generate(
        &out,
        &[
            "--model",
            &f.model("1d.json"),
            "--class",
            "0",
            "--cfg",
            "2",
            "-n",
            "3",
            "--steps",
            "20",
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    let text = fs::read_to_string(&trace).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 20);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i);
        assert_eq!(l["cfg_scale"], 2.0);
    }
}

#[test]
fn list_names_every_model_sampler_guidance_and_reward() {
    let o = steerdiff(&["list"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    use steerdiff::cli::catalog::{guidance, MODELS, REWARDS};
    use steerdiff::guidance::sampler::SAMPLERS;
    for (name, _) in SAMPLERS.iter().chain(MODELS).chain(REWARDS) {
        assert!(text.contains(name), "`{name}` not listed:\n{text}");
    }
    for (name, _) in guidance() {
        assert!(text.contains(&name), "`{name}` not listed:\n{text}");
    }
    for section in ["MODELS", "SAMPLERS", "GUIDANCE", "REWARDS"] {
        assert!(text.contains(section));
    }
}

/// Without the `cuda` feature, `--device cuda` on `generate` and `eval` is refused (exit 2)
/// with the command that rebuilds with it, before anything is loaded or written.
#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_the_feature_says_how_to_rebuild() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    for args in [
        &["generate", "--device", "cuda", "--steps", "2", "-o", o][..],
        &[
            "eval", "--model", "toy", "--device", "cuda:0", "--class", "star", "-n", "2",
        ][..],
    ] {
        let r = steerdiff(args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--features cuda"), "{args:?}: {err}");
    }
    assert!(!out.exists(), "nothing written");
    // `auto` on a CPU-only build is the CPU, and the record says so.
    let r = steerdiff(&["generate", "--steps", "2", "-o", o]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let record: Value =
        serde_json::from_str(&fs::read_to_string(out.join("samples.json")).unwrap()).unwrap();
    assert_eq!(record["parameters"]["device"], "cpu");
    assert_eq!(record["parameters"]["dtype"], "f32");
    assert_eq!(record["parameters"]["schema"], 2);
}
