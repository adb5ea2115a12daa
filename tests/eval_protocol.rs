//! `steerdiff eval`'s protocol: the judge, the CFG baseline chosen on a separate block of
//! seeds, strategies on top of it, paired differences and standard errors over groups — on an
//! exact mixture (the Bayes classifier judges), the toy (its ResNet judge beside the first
//! evaluation classifier) and tiny-sd (CLIP score as the held-out reward).

mod common;

use common::steerdiff;

use std::path::Path;

use serde_json::Value;

/// Two overlapping classes: the Bayes classifier errs, and CFG has room to sharpen class 1.
const SPEC: &str = r#"{"dim": 1, "components": [
    {"weight": 0.5, "mean": [-0.6], "std": 1.0, "class": 0},
    {"weight": 0.5, "mean": [0.6], "std": 1.0, "class": 1}]}"#;

fn report(args: &[&str]) -> Value {
    let o = steerdiff(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn mixture(dir: &Path) -> String {
    let p = dir.join("overlap.json");
    std::fs::write(&p, SPEC).unwrap();
    format!("gmm:{}", p.display())
}

fn row<'a>(rows: &'a [Value], strategy: &str, cfg: f64) -> &'a Value {
    rows.iter()
        .find(|r| r["strategy"] == strategy && r["cfg"].as_f64() == Some(cfg))
        .unwrap_or_else(|| panic!("no row {strategy} at CFG {cfg}: {rows:#?}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const MIXTURE_ARGS: [&str; 14] = [
    "--class",
    "1",
    "--reward",
    "quadratic:1.5",
    "--strategies",
    "none,bon,fk",
    "--budget",
    "4",
    "--steps",
    "20",
    "-n",
    "200",
    "--tune-num",
    "100",
];

#[test]
fn the_mixture_protocol_tunes_cfg_on_other_seeds_and_compares_every_row_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = mixture(tmp.path());
    let mut args = vec![
        "eval",
        "--model",
        &model,
        "--baseline-cfg",
        "1,1.5,2",
        "--json",
    ];
    args.extend(MIXTURE_ARGS);
    let r = report(&args);
    assert_eq!(r["judge"], "bayes");
    assert_eq!(r["judge_measures"], "accuracy");
    let b = &r["baseline"];
    // The tuning block is the 100 groups right after the 200 test groups.
    assert_eq!(b["tune_seed"], 200);
    assert_eq!(b["tune_groups"], 100);
    assert_eq!(b["selected_by"], "judge bayes");
    let sweep = b["sweep"].as_array().unwrap();
    let scales: Vec<f64> = sweep.iter().map(|p| f(&p["cfg"])).collect();
    assert_eq!(scales, [1.0, 1.5, 2.0]);
    let best = sweep.iter().fold(&sweep[0], |a, p| {
        if f(&p["value"]["mean"]) > f(&a["value"]["mean"]) {
            p
        } else {
            a
        }
    });
    let chosen = f(&b["cfg"]);
    assert_eq!(chosen, f(&best["cfg"]), "the best of the sweep: {b}");
    // Classes that overlap this much gain from CFG: the chosen scale is above 1.
    assert!(chosen > 1.0, "{b}");

    let rows = r["rows"].as_array().unwrap();
    // Each strategy at CFG 1 and on top of the tuned scale; plain sampling at the tuned scale
    // is the baseline.
    assert_eq!(rows.len(), 6, "{rows:#?}");
    let plain = row(rows, "none", 1.0);
    let base = row(rows, "none", chosen);
    assert_eq!(base["cfg_baseline"], true);
    assert_eq!(plain["cfg_baseline"], false);
    assert_eq!(f(&plain["nfe_per_group"]), 20.0);
    assert_eq!(f(&base["nfe_per_group"]), 40.0);
    assert_eq!(f(&row(rows, "bon", 1.0)["nfe_per_group"]), 80.0);
    assert_eq!(f(&row(rows, "fk", chosen)["nfe_per_group"]), 160.0);

    // One output per group: the standard error is the binomial one over the 200 groups.
    let j = &plain["judged"];
    let p = f(&j["mean"]);
    assert_eq!(j["groups"], 200);
    assert!(
        (f(&j["se"]) - (p * (1.0 - p) / 199.0).sqrt()).abs() < 1e-12,
        "{j}"
    );
    assert_eq!(f(&plain["eval_accuracy"]), p);
    // FK keeps its 4 particles per group, but they are not independent: 200 groups count.
    let fk = row(rows, "fk", 1.0);
    assert_eq!(fk["outputs"], 800);
    assert_eq!(fk["judged"]["groups"], 200);

    // Every row that costs at least the baseline is compared with it, paired over the seeds:
    // with every group present, the paired mean is the difference of the two means.
    for r in rows.iter().filter(|r| r["cfg_baseline"] == false) {
        if f(&r["nfe_per_group"]) < 40.0 {
            assert!(r["vs_cfg_baseline"].is_null(), "{r}");
            continue;
        }
        let c = &r["vs_cfg_baseline"];
        assert_eq!(f(&c["baseline_cfg"]), chosen, "{r}");
        let want = f(&r["judged"]["mean"]) - f(&base["judged"]["mean"]);
        assert!((f(&c["difference"]["mean"]) - want).abs() < 1e-12, "{r}");
        assert!(f(&c["difference"]["se"]) > 0.0, "{r}");
    }
    // Steering towards class 1 on top of the tuned CFG lands more samples in it.
    assert!(f(&row(rows, "bon", chosen)["judged"]["mean"]) > f(&base["judged"]["mean"]));

    // The tuning block never touches the test rows: without the baseline, the CFG-1 rows are
    // the same numbers.
    let mut args = vec!["eval", "--model", &model, "--no-baseline", "--json"];
    args.extend(MIXTURE_ARGS);
    let alone = report(&args);
    assert!(alone["baseline"].is_null());
    let alone_rows = alone["rows"].as_array().unwrap();
    assert_eq!(alone_rows.len(), 3);
    for s in ["none", "bon", "fk"] {
        assert_eq!(
            row(alone_rows, s, 1.0)["judged"],
            row(rows, s, 1.0)["judged"],
            "{s}"
        );
    }
}

#[test]
fn the_toy_is_judged_by_its_resnet_beside_the_first_evaluation_classifier() {
    let r = report(&[
        "eval",
        "--model",
        "toy",
        "--class",
        "star",
        "--strategies",
        "none,fk",
        "--budget",
        "2",
        "--steps",
        "6",
        "-n",
        "6",
        "--tune-num",
        "4",
        "--baseline-cfg",
        "1,3",
        "--second-judge",
        "toy-eval-classifier",
        "--json",
    ]);
    assert_eq!(r["judge"], "toy-judge");
    assert_eq!(r["second_judge"], "toy-eval-classifier");
    assert_eq!(r["baseline"]["selected_by"], "judge toy-judge");
    for row in r["rows"].as_array().unwrap() {
        let s = &row["second_judge"];
        assert_eq!(s["judge"], "toy-eval-classifier");
        let agreement = f(&s["agreement"]);
        assert!((0.0..=1.0).contains(&agreement), "{row}");
        assert!(f(&s["accuracy"]["mean"]) >= 0.0, "{row}");
    }
    // The old evaluation classifier stays selectable as the judge.
    let old = report(&[
        "eval",
        "--model",
        "toy",
        "--class",
        "star",
        "--strategies",
        "none",
        "--steps",
        "4",
        "-n",
        "3",
        "--no-baseline",
        "--judge",
        "toy-eval-classifier",
        "--json",
    ]);
    assert_eq!(old["judge"], "toy-eval-classifier");
}

#[test]
fn a_judge_that_steers_or_does_not_exist_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = mixture(tmp.path());
    let cases: [(&[&str], &str); 6] = [
        (&["--tune-seed", "1"], "overlap the test groups (seeds 0–1)"),
        (&["--judge", "quadratic:1.5"], "is the reward that steers"),
        (
            &["--judge", "nonesuch"],
            "neither a judge of this model (bayes) nor a reward",
        ),
        (
            &["--second-judge", "toy-judge"],
            "not a judge of this model",
        ),
        (&["--tune-num", "0"], "--no-baseline"),
        (&["--baseline-cfg", "nan"], "finite"),
    ];
    for (extra, needle) in cases {
        let mut args = vec![
            "eval",
            "--model",
            &model,
            "--class",
            "1",
            "--reward",
            "quadratic:1.5",
            "--strategies",
            "none",
            "-n",
            "2",
        ];
        args.extend(extra);
        let o = steerdiff(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn tiny_sd_is_judged_by_a_held_out_clip_score() {
    let clip = common::fixture("tiny-clip");
    let aesthetic = format!("aesthetic:{}", clip.join("aesthetic.safetensors").display());
    let clip_model = clip.join("model").display().to_string();
    let sd = common::fixture("tiny-sd")
        .join("pipeline")
        .display()
        .to_string();
    let r = report(&[
        "eval",
        "--model",
        &sd,
        "--prompt",
        "a red cat",
        "--reward",
        &aesthetic,
        "--judge",
        "clip",
        "--clip-model",
        &clip_model,
        "--strategies",
        "none,bon",
        "--budget",
        "2",
        "--steps",
        "2",
        "-n",
        "2",
        "--tune-num",
        "2",
        "--baseline-cfg",
        "1,3",
        "--json",
    ]);
    assert_eq!(r["judge"], "clip");
    assert_eq!(r["judge_measures"], "score");
    assert_eq!(r["baseline"]["selected_by"], "judge clip");
    let rows = r["rows"].as_array().unwrap();
    assert!(rows.len() >= 3, "{rows:#?}");
    for row in rows {
        let score = f(&row["judged"]["mean"]);
        // CLIP scores are 100·cos: bounded.
        assert!((-100.0..=100.0).contains(&score), "{row}");
        assert!(
            row["eval_accuracy"].is_null(),
            "a score is not an accuracy: {row}"
        );
        assert!(f(&row["reward"]["mean"]).is_finite(), "{row}");
    }
    // A text-to-image model has no classifier judge to compare with.
    let o = steerdiff(&[
        "eval",
        "--model",
        &sd,
        "--prompt",
        "a red cat",
        "--judge",
        "clip",
        "--clip-model",
        &clip_model,
        "--second-judge",
        "bayes",
        "--strategies",
        "none",
        "-n",
        "1",
        "--steps",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("its judges: none"));
}

#[test]
fn an_unconditional_eval_runs_without_a_cfg_baseline_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let model = mixture(tmp.path());
    let o = steerdiff(&[
        "eval",
        "--model",
        &model,
        "--eval-class",
        "1",
        "--reward",
        "quadratic:1.5",
        "--strategies",
        "none,bon",
        "-n",
        "20",
        "--steps",
        "10",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no CFG baseline: the run is unconditional")
    );
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["baseline"].is_null());
    assert_eq!(r["rows"].as_array().unwrap().len(), 2);
    assert_eq!(r["judge"], "bayes");
}
