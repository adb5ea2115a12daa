//! The per-step strategies on the command line and in `steerdiff eval` (GFCG, autoguidance,
//! dynamic CFG, FlowChef, replacement) on the toy model: flags reach the strategy and the
//! record, model rows are what each method costs, FlowChef and dynamic CFG add none, FlowChef
//! lands on the known pixels, time travel revisits steps at their cost, the inpainting demo
//! runs, and bad input is refused in one line
//! with exit code 2 and nothing written. Few samples and steps: plumbing, not quality.

mod common;

use common::steerdiff;

use std::path::Path;

use serde_json::Value;
use steerdiff::cli::toy::inpaint_demo::{self, InpaintArgs};
use steerdiff::pipelines::toy::data;
use steerdiff::run::observation::{box_mask, Observation};
use steerdiff::run::strategy::{flowchef, PerStepArgs, PerStepFlags, TaskArg};
use steerdiff::run::strategy::{StrategyArgs, StrategyKind};
use steerdiff::{Job, Options};

fn ok(args: &[&str]) {
    let o = steerdiff(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn samples(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("samples.json")).unwrap()).unwrap()
}

fn rows(v: &Value) -> u64 {
    v["ledger"]["model_rows"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r.as_u64().unwrap())
        .sum()
}

/// A dataset image written as a PNG (32×32), returning its path.
fn dataset_png(dir: &Path) -> String {
    ok(&[
        "toy",
        "dataset",
        "-n",
        "1",
        "-o",
        dir.join("ds").to_str().unwrap(),
    ]);
    dir.join("ds/00000.png").to_str().unwrap().to_string()
}

#[test]
fn flags_reach_the_strategies_and_rows_are_what_each_costs() {
    let tmp = tempfile::tempdir().unwrap();
    let steps = 3u64;
    let n = 2u64;
    let run = |name: &str, extra: &[&str]| -> Value {
        let out = tmp.path().join(name);
        let mut args = vec![
            "generate",
            "--class",
            "star",
            "--steps",
            "3",
            "-n",
            "2",
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        // CFG off unless the case sets it (class runs of the toy default to its CFG 3).
        if !extra.contains(&"--cfg") {
            args.extend(["--cfg", "1"]);
        }
        ok(&args);
        samples(&out)
    };
    let plain = run("plain", &[]);
    assert_eq!(rows(&plain), steps * n);
    let cfg = run("cfg", &["--cfg", "2"]);
    assert_eq!(rows(&cfg), 2 * steps * n);
    let trace = tmp.path().join("gfcg.jsonl");
    let gfcg = run(
        "gfcg",
        &[
            "--guidance",
            "gfcg",
            "--gfcg-scale",
            "2.5",
            "--gfcg-reference",
            "top-if-wrong",
            "--gfcg-scale-rule",
            "constant",
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    let ps = &gfcg["parameters"]["strategy"];
    assert_eq!(ps["kind"], "gfcg");
    assert_eq!(ps["per_step"]["gfcg_scale"], 2.5);
    assert_eq!(ps["per_step"]["gfcg_reference"], "top-if-wrong");
    assert_eq!(
        rows(&gfcg),
        2 * steps * n,
        "GFCG: one reference row per step"
    );
    // The constant rule applies w everywhere; the trace shows it.
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["gfcg"]["scale"][0].as_f64(), Some(2.5));
    let both = run("gfcg-cfg", &["--guidance", "gfcg", "--cfg", "2"]);
    assert_eq!(rows(&both), 3 * steps * n, "GFCG + CFG: 3 rows per step");
    let ag = run(
        "ag",
        &["--guidance", "autoguidance", "--autoguidance-scale", "1.5"],
    );
    assert_eq!(
        ag["ledger"]["model_rows"]["toy-weak"].as_u64(),
        Some(steps * n),
        "autoguidance: one row of the weaker twin per step"
    );
    assert_eq!(rows(&ag), 2 * steps * n);
    let weak = run("gfcg-weak", &["--guidance", "gfcg", "--gfcg-guide", "weak"]);
    assert_eq!(
        weak["ledger"]["model_rows"]["toy-weak"].as_u64(),
        Some(steps * n)
    );
    // Dynamic CFG: the rows of CFG, no more (its candidates are linear combinations).
    let dynamic = run(
        "dyn",
        &["--guidance", "dynamic-cfg", "--cfg-candidates", "1,3"],
    );
    assert_eq!(rows(&dynamic), rows(&cfg));
    assert!(dynamic["ledger"]["reward_calls"].as_object().unwrap().len() == 1);
    // FlowChef: the rows of unguided sampling, for every task.
    let png = dataset_png(tmp.path());
    for extra in [
        vec!["--task", "inpaint", "--image", &png, "--box", "8,8,24,24"],
        vec!["--task", "superres", "--image", &png],
        vec!["--task", "deblur", "--image", &png, "--zo-pairs", "2"],
        vec!["--task", "class", "--inner-steps", "2"],
    ] {
        let mut a = vec!["--guidance", "flowchef"];
        a.extend(extra.iter().copied());
        let v = run(&format!("fc-{}", extra[1]), &a);
        assert_eq!(
            rows(&v),
            rows(&plain),
            "FlowChef {extra:?} adds no model rows"
        );
    }
    let replace = [
        "--guidance",
        "replace",
        "--image",
        &png,
        "--box",
        "8,8,24,24",
    ];
    let rep = run("rep", &replace);
    assert_eq!(rows(&rep), rows(&plain));
    // Time travel: every step but the last visited 1 + U times, each visit its rows again;
    // recorded, and traced with the visit number.
    let trace = tmp.path().join("tt.jsonl");
    let mut travel = replace.to_vec();
    travel.extend(["--time-travel", "2", "--trace", trace.to_str().unwrap()]);
    let tt = run("tt", &travel);
    assert_eq!(rows(&tt), n * (steps + 2 * (steps - 1)));
    assert_eq!(tt["parameters"]["time_travel"], 2);
    assert!(plain["parameters"].get("time_travel").is_none());
    let visits: Vec<(u64, u64)> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["visit"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        visits,
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    );
}

/// Runs `kind` on dataset image 0 with a centre box through the library (FlowChef with η ½).
fn inpaint(kind: StrategyKind, guided_steps: Option<usize>) -> (Vec<f32>, Vec<f32>, Vec<f32>, u64) {
    let (src, _) = data::image(9001, 0);
    let known = box_mask([10, 10, 22, 22], [3, 32, 32]).unwrap();
    let opts = Options {
        steps: Some(4),
        strategy: StrategyArgs {
            kind,
            per_step: PerStepArgs {
                flags: PerStepFlags {
                    flowchef: flowchef::Flags {
                        task: TaskArg::Inpaint,
                        guided_steps,
                        lr: Some(0.5),
                        ..flowchef::Flags::default()
                    },
                    ..PerStepFlags::default()
                },
                ..PerStepArgs::default()
            },
            ..StrategyArgs::default()
        },
        observation: Some(Observation {
            image: src.clone(),
            dims: [3, 32, 32],
            known: Some(known.clone()),
        }),
        ..Options::default()
    };
    let job = Job::load("toy", &opts).unwrap();
    let out = job.run(None).unwrap();
    (
        out.population.row(0).unwrap(),
        src,
        known,
        out.ledger.total_rows(),
    )
}

#[test]
fn flowchef_lands_on_the_known_pixels() {
    // Guiding every step with η = ½ puts x̂0 on the known pixels each step and the last
    // flow-Euler step returns x̂0: a property of the descent, not of the model.
    let (out, src, known, rows) = inpaint(StrategyKind::Flowchef, Some(4));
    assert!(inpaint_demo::masked_mae(&out, &src, &known) < 1e-4);
    assert_eq!(rows, 4);
    let (out, src, known, _) = inpaint(StrategyKind::Replace, None);
    assert_eq!(inpaint_demo::masked_mae(&out, &src, &known), 0.0);
    // The unguided model knows nothing of the source.
    let (out, src, known, _) = inpaint(StrategyKind::None, None);
    assert!(inpaint_demo::masked_mae(&out, &src, &known) > 0.02);
}

#[test]
fn the_inpainting_demo_reports_both_methods_and_draws_the_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("grid.png");
    let args = InpaintArgs {
        num: 2,
        data_seed: 9001,
        data_rotation: None,
        box_size: 12,
        steps: 3,
        lr: 0.5,
        inner_steps: 1,
        guided_steps: Some(3),
        conditional: false,
        cfg: 1.0,
        time_travel: 1,
        seed: 0,
        output: png.clone(),
        grid: 2,
        json: None,
    };
    let r = inpaint_demo::measure(&args).unwrap();
    assert_eq!(r.fill_box, [10, 10, 22, 22]);
    assert_eq!(
        r.rows.len(),
        4,
        "both methods, without and with time travel"
    );
    for row in &r.rows {
        assert_eq!(row.images, 2);
        // Time travel revisits the first two of the three steps once each.
        let nfe = if row.method.contains("time travel U=1") {
            5.0
        } else {
            3.0
        };
        assert_eq!(row.nfe_per_image, nfe, "{}", row.method);
        assert!(row.known_mae < 1e-4, "{}: {}", row.method, row.known_mae);
        assert!((0.0..=1.0).contains(&row.class_agreement));
    }
    let img = image::open(&png).unwrap();
    assert!(img.width() > 2 * 32 && img.height() >= 7 * 32);
    let table = inpaint_demo::markdown(&r);
    assert!(table.contains("| flowchef | 2 |"), "{table}");
    assert!(
        table.contains("| replacement + time travel U=1 | 2 |"),
        "{table}"
    );
}

#[test]
fn eval_has_rows_for_the_per_step_methods_at_matched_settings() {
    let o = steerdiff(&[
        "eval",
        "--model",
        "toy",
        "--class",
        "ring",
        "--strategies",
        "none,gfcg,autoguidance,dynamic-cfg",
        "--cfg",
        "1,2",
        "--steps",
        "3",
        "-n",
        "3",
        "--no-baseline",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let find = |s: &str, cfg: Option<f64>| {
        rows.iter()
            .find(|r| r["strategy"] == s && r["cfg"].as_f64() == cfg)
            .unwrap_or_else(|| panic!("no row {s} cfg {cfg:?}: {rows:?}"))
    };
    // Dynamic CFG runs once, at its own scales.
    assert_eq!(rows.len(), 7);
    assert_eq!(find("none", Some(1.0))["nfe_per_group"], 3.0);
    assert_eq!(find("none", Some(2.0))["nfe_per_group"], 6.0);
    assert_eq!(find("gfcg", Some(1.0))["nfe_per_group"], 6.0);
    assert_eq!(find("gfcg", Some(2.0))["nfe_per_group"], 9.0);
    assert_eq!(find("autoguidance", Some(1.0))["nfe_per_group"], 6.0);
    assert_eq!(find("dynamic-cfg", None)["nfe_per_group"], 6.0);
    for r in rows {
        assert!(r["eval_accuracy"].as_f64().is_some(), "{r}");
        assert!(r["diversity"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// Asserts a refusal: exit code 2, one `error:` line naming `needle`, nothing written.
fn refused(args: &[&str], out: &Path, needle: &str) {
    let o = steerdiff(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("error:"), "{err}");
    assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{args:?} wrote {}", out.display());
}

#[test]
fn bad_input_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let png = dataset_png(tmp.path());
    let small = tmp.path().join("mask16.png");
    image::RgbImage::from_pixel(16, 16, image::Rgb([255, 255, 255]))
        .save(&small)
        .unwrap();
    let spec = tmp.path().join("g.json");
    std::fs::write(
        &spec,
        r#"{"dim": 2, "components": [{"weight": 0.5, "mean": [-2, 0], "std": 0.5, "class": 0},
            {"weight": 0.5, "mean": [2, 0], "std": 0.5, "class": 1}]}"#,
    )
    .unwrap();
    let gmm = format!("gmm:{}", spec.display());
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let small = small.to_str().unwrap();
    let gen = |extra: &[&str]| {
        let mut a = vec!["generate", "--steps", "2", "-o", o];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            gen(&["--guidance", "flowchef", "--image", &png, "--mask", small]),
            "16×16",
        ),
        (
            gen(&["--guidance", "replace", "--image", &png, "--mask", small]),
            "give a 32×32 mask",
        ),
        (
            gen(&["--model", &gmm, "--path", "vp", "--guidance", "flowchef"]),
            "rectified-flow",
        ),
        (gen(&["--guidance", "gfcg", "--class", "dragon"]), "dragon"),
        (
            gen(&["--guidance", "dynamic-cfg", "--class", "dragon"]),
            "valid: circle",
        ),
        (
            gen(&[
                "--guidance",
                "gfcg",
                "--class",
                "star",
                "--gfcg-scale",
                "NaN",
            ]),
            "--gfcg-scale",
        ),
        (
            gen(&["--guidance", "autoguidance", "--autoguidance-scale", "nan"]),
            "--autoguidance-scale",
        ),
        (
            gen(&[
                "--guidance",
                "dynamic-cfg",
                "--class",
                "star",
                "--cfg-candidates",
                "1,NaN",
            ]),
            "--cfg-candidates",
        ),
        (gen(&["--class", "star", "--cfg", "NaN"]), "finite"),
        (
            gen(&[
                "--guidance",
                "flowchef",
                "--image",
                &png,
                "--lr",
                "nan",
                "--box",
                "1,1,4,4",
            ]),
            "--lr",
        ),
        (
            gen(&[
                "--guidance",
                "flowchef",
                "--image",
                &png,
                "--mask",
                small,
                "--box",
                "1,1,4,4",
            ]),
            "not both",
        ),
        (gen(&["--guidance", "flowchef", "--image", &png]), "--box"),
        (gen(&["--guidance", "gfcg"]), "--class"),
        (
            gen(&["--guidance", "dynamic-cfg", "--class", "star", "--cfg", "3"]),
            "drop --cfg",
        ),
        (
            gen(&["--guidance", "flowchef", "--task", "class"]),
            "--class",
        ),
        (
            gen(&["--model", &gmm, "--guidance", "autoguidance"]),
            "toy-weak",
        ),
    ];
    for (args, needle) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&a, &out, needle);
    }
    refused(
        &[
            "eval",
            "--model",
            "toy",
            "--class",
            "star",
            "--strategies",
            "flowchef",
        ],
        &out,
        "steerdiff toy inpaint",
    );
}
