//! Flags users bring from sd.cpp, A1111 and diffusers: every alias and short flag of
//! `generate` gives the same run as its long name; `--seed -1` draws a seed and records it;
//! `--help`'s first screen shows the common flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn steerdiff(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(args)
        .output()
        .expect("run steerdiff")
}

fn tiny_sd() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-sd/pipeline")
        .display()
        .to_string()
}

/// The run parameters of `generate` with `args` (and a small common run) into `out`.
fn parameters(args: &[String], out: &Path) -> Value {
    let mut all: Vec<String> = vec!["generate".into()];
    all.extend(args.iter().cloned());
    if !all
        .iter()
        .any(|a| a == "--steps" || a == "--num-inference-steps")
    {
        all.extend(["--steps".to_string(), "2".to_string()]);
    }
    all.extend(["-o".to_string(), out.display().to_string()]);
    let o = steerdiff(&all);
    assert!(
        o.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(out.join("samples.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["parameters"].clone()
}

/// A value for each flag that has an alias, and the model flags it needs.
fn value_for(long: &str, dir: &Path) -> (String, Vec<String>) {
    let sd = vec!["--model".to_string(), tiny_sd()];
    let sd_prompt = [sd.clone(), vec!["--prompt".into(), "a red cat".into()]].concat();
    match long {
        "model" => ("toy".into(), vec![]),
        "steps" => ("3".into(), vec![]),
        "seed" => ("5".into(), vec![]),
        "cfg" => ("2.5".into(), vec!["--class".into(), "star".into()]),
        "sampler" => ("euler".into(), sd_prompt),
        "prompt" => ("a red cat".into(), sd),
        "negative" => ("blurry".into(), sd_prompt),
        "width" | "height" => ("32".into(), sd_prompt),
        "init-image" => {
            let png = dir.join("init.png");
            image::RgbImage::from_pixel(16, 16, image::Rgb([200, 40, 40]))
                .save(&png)
                .unwrap();
            (png.display().to_string(), sd_prompt)
        }
        "num" | "output" => (String::new(), vec![]),
        other => panic!("no test value for --{other}: add one to value_for"),
    }
}

#[test]
fn every_alias_and_short_flag_gives_the_same_run_as_the_long_name() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = steerdiff::cli::invocation::generate_command();
    let mut walked = vec![];
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let mut names: Vec<String> = arg
            .get_visible_aliases()
            .unwrap_or_default()
            .into_iter()
            .map(|a| format!("--{a}"))
            .collect();
        if let Some(s) = arg.get_short().filter(|&s| s != 'h') {
            names.push(format!("-{s}"));
        }
        if names.is_empty() || matches!(long, "num" | "output") {
            continue; // -n and -o are in every other test
        }
        let (value, model) = value_for(long, dir.path());
        let run = |flag: &str, name: &str| -> Value {
            let args = [model.clone(), vec![flag.to_string(), value.clone()]].concat();
            parameters(&args, &dir.path().join(name))
        };
        let want = run(&format!("--{long}"), &format!("{long}-long"));
        for (i, name) in names.iter().enumerate() {
            let got = run(name, &format!("{long}-{i}"));
            assert_eq!(got, want, "{name} differs from --{long}");
            walked.push(name.clone());
        }
    }
    for expected in [
        "-m",
        "-p",
        "-s",
        "-W",
        "-H",
        "--cfg-scale",
        "--guidance-scale",
        "--negative-prompt",
        "--sampling-method",
        "--scheduler",
        "--num-inference-steps",
        "--init-img",
    ] {
        assert!(
            walked.iter().any(|w| w == expected),
            "{expected} not walked: {walked:?}"
        );
    }
}

#[test]
fn seed_minus_one_draws_a_seed_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("out");
    let o = steerdiff(
        &[
            "generate",
            "--steps",
            "2",
            "-s",
            "-1",
            "-o",
            out.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let text = std::fs::read_to_string(out.join("samples.json")).unwrap();
    let seed = serde_json::from_str::<Value>(&text).unwrap()["parameters"]["seed"]
        .as_u64()
        .unwrap();
    assert!(err.contains(&format!("drew seed {seed}")), "{err}");
    // The image's record re-runs with that seed.
    let o = steerdiff(
        &[
            "info",
            "--json",
            out.join("sample-0000.png").to_str().unwrap(),
        ]
        .map(String::from),
    );
    let record: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        record["argv"]
            .as_array()
            .unwrap()
            .contains(&format!("--seed={seed}").into()),
        "{record}"
    );
    // Two draws differ (the chance they agree is 2^-32).
    let again = dir.path().join("again");
    let o = steerdiff(
        &[
            "generate",
            "--steps",
            "2",
            "--seed",
            "-1",
            "-o",
            again.to_str().unwrap(),
        ]
        .map(String::from),
    );
    assert!(o.status.success());
    let text = std::fs::read_to_string(again.join("samples.json")).unwrap();
    let other = serde_json::from_str::<Value>(&text).unwrap()["parameters"]["seed"].clone();
    assert_ne!(other, Value::from(seed));
    // Other negative seeds are refused with the rule.
    let o = steerdiff(&["generate", "--seed", "-2", "-o", "x"].map(String::from));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-1 for a random seed"));
}

#[test]
fn the_first_screen_of_help_shows_the_common_flags() {
    let o = steerdiff(&["generate", "-h"].map(String::from));
    let text = String::from_utf8(o.stdout).unwrap();
    let first: String = text.lines().take(30).collect::<Vec<_>>().join("\n");
    for flag in [
        "--model",
        "--class",
        "--prompt",
        "--steps",
        "--cfg",
        "--seed",
        "--num",
        "--guidance",
        "--reward",
        "--particles",
        "--output",
    ] {
        assert!(
            first.contains(flag),
            "{flag} is not on the first screen:\n{first}"
        );
    }
    for heading in [
        "Common:",
        "Sampling:",
        "Strategies:",
        "Rewards and plugins:",
    ] {
        assert!(text.contains(heading), "{heading}");
    }
}
