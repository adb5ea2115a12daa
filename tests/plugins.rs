//! Reward plugins end to end: the Python stdio and HTTP plugins of `examples/plugins/` steer FK
//! and CoDe on the toy model to exactly the particles the built-in Rust `brightness` reward
//! picks; resampled copies are answered from the cache; and every documented fault (a crash,
//! a hang, garbage, a wrong set of ids, NaN, an exit at start) gives its documented behaviour,
//! a clear message, and leaves no process behind.

mod common;

use common::steerdiff;

use std::path::Path;
use std::process::{Child, Command};

use serde_json::Value;

fn plugin(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/plugins")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn samples(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("samples.json")).unwrap()).unwrap()
}

/// Runs `generate` on the toy with `extra` flags into `dir`, asserting success.
fn generate(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "generate", "--class", "heart", "--steps", "8", "-n", "2", "--seed", "3", "-o",
    ];
    let d = dir.to_str().unwrap();
    args.push(d);
    args.extend_from_slice(extra);
    let o = steerdiff(&args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    samples(dir)
}

/// The chosen particles: every final sample's pixels and weight.
fn chosen(v: &Value) -> Vec<(Value, Value)> {
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["x"].clone(), s["log_weight"].clone()))
        .collect()
}

fn stdio_brightness() -> String {
    format!("stdio:python3 {}", plugin("brightness_stdio.py"))
}

/// A running HTTP plugin, killed on drop.
struct Server(Child, String);

impl Server {
    fn start() -> Server {
        let (child, url) = common::start_ready_server(Command::new("python3").args([
            plugin("brightness_http.py").as_str(),
            "--port",
            "0",
        ]));
        Server(child, url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn python_plugins_steer_fk_and_code_to_the_rust_rewards_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    for strategy in [
        &["--guidance", "fk", "--particles", "4", "--lambda", "20"][..],
        &["--guidance", "code", "--particles", "4", "--block", "2"][..],
    ] {
        let name = strategy[1];
        let rust = generate(
            &tmp.path().join(format!("{name}-rust")),
            &[strategy, &["--reward", "brightness"]].concat(),
        );
        let stdio = generate(
            &tmp.path().join(format!("{name}-stdio")),
            &[strategy, &["--reward", &stdio_brightness()]].concat(),
        );
        let http = generate(
            &tmp.path().join(format!("{name}-http")),
            &[strategy, &["--reward", &server.1]].concat(),
        );
        assert_eq!(
            chosen(&rust),
            chosen(&stdio),
            "{name}: stdio plugin vs Rust"
        );
        assert_eq!(chosen(&rust), chosen(&http), "{name}: HTTP plugin vs Rust");
        // The steering did something: the samples differ from plain sampling's.
        let plain = generate(&tmp.path().join(format!("{name}-plain")), &[]);
        assert_ne!(
            chosen(&plain)[0].0,
            chosen(&rust)[0].0,
            "{name} changed nothing"
        );
        assert!(
            stdio["ledger"]["reward_items"]["brightness-plugin"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
}

#[test]
fn resampled_copies_are_scored_once() {
    // Copies made by resampling share their state, so at the next step they share x̂0 too,
    // and the next potential evaluation finds them in the cache.
    let tmp = tempfile::tempdir().unwrap();
    let v = generate(
        tmp.path(),
        &[
            "--guidance",
            "fk",
            "--particles",
            "8",
            "--lambda",
            "50",
            "--resample-every",
            "1",
            "--resample-start",
            "1",
            "--reward",
            &stdio_brightness(),
        ],
    );
    let ledger = &v["ledger"];
    let items = ledger["reward_items"]["brightness-plugin"]
        .as_u64()
        .unwrap();
    let cached = ledger["reward_cached"].as_u64().unwrap();
    assert!(cached > 0, "no cache hits: {ledger}");
    assert!(cached < items, "{ledger}");
    // 8 particles × 2 groups at each of the 6 resampling steps and the final step; the
    // plugin was sent `items − cached` of them.
    assert_eq!(items, 8 * 2 * 7, "{ledger}");
}

/// Runs the faulty plugin in `mode` and returns (exit code, stderr); checks that no process
/// carrying `marker` is left. Every mode but `hang` answers or fails at once, so their timeout
/// is generous: a fresh Python child on a loaded 2-core machine can take seconds to answer.
fn faulty(mode: &str, extra: &[&str]) -> (Option<i32>, String) {
    let timeout = if mode == "hang" { "2" } else { "30" };
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("marker-{mode}-{}", std::process::id());
    let reward = format!("stdio:python3 {} {mode} {marker}", plugin("faulty.py"));
    let out = tmp.path().join("out");
    let mut args = vec![
        "generate",
        "--class",
        "ring",
        "--steps",
        "6",
        "-n",
        "1",
        "--guidance",
        "fk",
        "--particles",
        "2",
        "--reward",
        &reward,
        "--plugin-timeout",
        timeout,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(if extra.is_empty() {
        &["--plugin-retries", "1"]
    } else {
        extra
    });
    let flag = tmp.path().join("crashed-once");
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(&args)
        .env("FAULTY_FLAG_FILE", &flag)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let left = Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "{mode}: processes left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    if o.status.success() {
        assert!(out.join("samples.json").exists(), "{mode}: no output");
    } else {
        // 2 = the plugin cannot be used as given (no handshake, answers outside the
        // protocol), 1 = it failed during the run (a crash, a timeout, a null score).
        assert!(matches!(o.status.code(), Some(1 | 2)), "{mode}: {stderr}");
        assert!(!stderr.contains("internal error"), "{mode}: {stderr}");
        assert!(
            !out.join("samples.json").exists(),
            "{mode}: output written on failure"
        );
    }
    (o.status.code(), stderr)
}

#[test]
fn plugin_faults_are_reported_and_leave_no_processes() {
    let (code, err) = faulty("exit-at-start", &[]);
    assert!(
        code == Some(2) && err.contains("describe handshake failed"),
        "{err}"
    );
    assert!(
        err.contains("exit status: 3") && err.contains("cannot load my weights"),
        "{err}"
    );

    let (code, err) = faulty("crash", &[]);
    assert!(
        code == Some(1) && err.contains("closed its output") && err.contains("segfault"),
        "{err}"
    );
    assert!(err.contains("after 2 attempts"), "{err}");

    // One crash: the child is restarted and the request retried; the run completes.
    let (code, err) = faulty("crash-once", &[]);
    assert!(
        code == Some(0) && err.contains("retrying (1 of 1)"),
        "{err}"
    );

    let (code, err) = faulty("hang", &["--plugin-retries", "0"]);
    assert!(
        code == Some(1) && err.contains("no answer within 2.0 s"),
        "{err}"
    );

    let (code, err) = faulty("garbage", &[]);
    assert!(
        code == Some(2) && err.contains("not a JSON header") && err.contains("Traceback"),
        "{err}"
    );

    let (code, err) = faulty("wrong-count", &[]);
    assert!(
        code == Some(2) && err.contains("1 scores for 2 items") && err.contains("missing ids"),
        "{err}"
    );

    let (code, err) = faulty("nan", &[]);
    assert!(
        code == Some(1) && err.contains("scored item") && err.contains("null or not finite"),
        "{err}"
    );
    // (Without the cache, so that resampled copies of the NaN item are not all −∞.)
    let (code, err) = faulty("nan", &["--plugin-on-error", "skip", "--plugin-no-cache"]);
    assert!(
        code == Some(0) && err.contains("null or not finite; scoring 1 item(s) −∞"),
        "{err}"
    );
}

#[test]
fn remote_hosts_and_missing_programs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    for (reward, expect) in [
        ("http://10.1.2.3:80", "--plugin-allow-remote"),
        (
            "stdio:no-such-program-xyz",
            "cannot start `no-such-program-xyz`",
        ),
    ] {
        let o = steerdiff(&[
            "generate",
            "--guidance",
            "fk",
            "--reward",
            reward,
            "-o",
            out.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(expect), "{err}");
    }
}

#[test]
fn ensembles_of_plugins_steer_and_an_evaluation_reward_only_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let fk = ["--guidance", "fk", "--particles", "4", "--lambda", "20"];
    let ensemble = format!("ensemble:sum:0.5*brightness;0.5*{}", stdio_brightness());
    let single = generate(
        &tmp.path().join("single"),
        &[&fk[..], &["--reward", "brightness"]].concat(),
    );
    let both = generate(
        &tmp.path().join("ens"),
        &[&fk[..], &["--reward", &ensemble]].concat(),
    );
    // 0.5·b + 0.5·b = b: the same particles as brightness alone.
    assert_eq!(chosen(&single), chosen(&both));
    let name = common::reward_name(&both);
    assert!(
        name.contains("brightness-plugin") && name.contains("brightness"),
        "{name}"
    );
    let judged = generate(
        &tmp.path().join("judged"),
        &[
            &fk[..],
            &["--reward", "brightness", "--eval-reward", "classifier"],
        ]
        .concat(),
    );
    assert_eq!(
        chosen(&single),
        chosen(&judged),
        "the evaluation reward changed the samples"
    );
    let scores: Vec<f64> = judged["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["eval_reward"].as_f64().unwrap())
        .collect();
    assert!(
        scores.iter().all(|s| *s <= 0.0),
        "log-probabilities: {scores:?}"
    );
    assert!(single["samples"][0].get("eval_reward").is_none());
}
