//! `steerdiff bench` measures what it says: a forward per batch size, decoding, one whole run
//! split into shares that add up, and the peak memory. Nothing here asserts a speed.

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {err}"))
}

#[test]
fn bench_reports_every_figure_of_a_steered_toy_run() {
    let r = bench(&[
        "bench",
        "--json",
        "--batches",
        "1,3",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--",
        "--class",
        "star",
        "--guidance",
        "fk",
        "--reward",
        "classifier",
        "--particles",
        "4",
        "--steps",
        "3",
        "-n",
        "2",
    ]);
    let forward = r["forward"].as_array().unwrap();
    assert_eq!(forward.len(), 2);
    for (f, batch) in forward.iter().zip([1.0, 3.0]) {
        assert_eq!(f["batch"].as_f64(), Some(batch));
        let median = f["seconds"]["median"].as_f64().unwrap();
        assert!(median > 0.0);
        let per_row = f["ms_per_row"].as_f64().unwrap();
        assert!((per_row - 1e3 * median / batch).abs() < 1e-9 * per_row.max(1.0));
    }
    assert!(r["decode_per_image"]["median"].as_f64().unwrap() > 0.0);
    assert!(r["text_encode"].is_null(), "the toy has no text encoder");
    let run = &r["run"];
    assert_eq!(run["strategy"], "fk");
    assert_eq!(run["images"], 2);
    // 2 groups × 4 particles × 3 steps, CFG at the toy's default scale: two rows each.
    assert_eq!(run["model_rows"], 2 * 4 * 3 * 2);
    let shares: f64 = [
        "model_share",
        "reward_share",
        "decode_share",
        "engine_share",
    ]
    .iter()
    .map(|k| run[k].as_f64().unwrap())
    .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{run}");
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(r["threads"].as_u64().unwrap() >= 1);
}

#[test]
fn bench_measures_a_text_to_image_pipeline_and_refuses_what_it_cannot_run() {
    let sd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny-sd/pipeline"
    );
    let r = bench(&[
        "bench",
        "--json",
        "--batches",
        "2",
        "--repeats",
        "1",
        "--runs",
        "0",
        "--",
        "--model",
        sd,
        "-p",
        "a cat",
        "--steps",
        "2",
    ]);
    assert!(r["text_encode"]["median"].as_f64().unwrap() > 0.0);
    assert!(r["decode_per_image"]["median"].as_f64().unwrap() > 0.0);
    assert!(r["run"].is_null());
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(["bench", "--", "--trace", "t.jsonl"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--trace is for generate"));
}

/// `--threads` changes how fast, not what: the toy and tiny-sd give the same samples on one
/// thread as on two.
#[test]
fn threads_change_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny-sd/pipeline"
    );
    let samples = |threads: &str, model: &[&str]| {
        let out = tmp.path().join(format!("{threads}-{}", model.len()));
        let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
            .args(["generate", "--threads", threads, "--steps", "4", "-n", "2"])
            .args(model)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("samples.json")).unwrap())
                .unwrap();
        assert!(v["parameters"].get("threads").is_none(), "not recorded");
        v["samples"].clone()
    };
    for model in [
        &[][..],
        &["--model", sd, "-p", "a cat", "--batch-groups", "2"][..],
    ] {
        assert_eq!(samples("1", model), samples("2", model), "{model:?}");
    }
}
