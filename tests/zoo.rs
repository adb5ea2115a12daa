//! The reward zoo (`examples/plugins/zoo/`) end to end.
//!
//! - The VLM judge steers FK on the toy against a fake OpenAI-compatible server
//!   (`tests/fixtures/zoo/fake_openai.py`, which checks each request carries the prompt and a
//!   PNG data URL and scores 10 × the PNG's mean brightness): the run succeeds and records
//!   exactly the scores the server answered. An unparseable reply scores `null`; a server that
//!   is down stops the run with the URL in the message.
//! - Where torch and transformers are installed, PickScore and the LAION aesthetic plugin score
//!   the images of the tiny CLIP fixture (`tests/fixtures/tiny-clip`, written by transformers)
//!   exactly as transformers does (its `cases.json`), and steer the toy to finite rewards.
//! - Every model plugin whose Python packages are missing fails the handshake with one line
//!   naming the pip packages to install.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use serde_json::{json, Value};

fn zoo(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/plugins/zoo")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Whether `python3 -c "import MODULES"` succeeds.
fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `steerdiff generate` on the toy: FK with 2 particles, 4 steps, 2 groups of `class`.
fn generate(out: &Path, class: &str, reward: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args([
            "generate",
            "--guidance",
            "fk",
            "--particles",
            "2",
            "--steps",
            "4",
        ])
        .args([
            "-n", "2", "--seed", "1", "--class", class, "--reward", reward,
        ])
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .expect("run steerdiff")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn samples(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("samples.json")).unwrap()).unwrap()
}

fn rewards(v: &Value) -> Vec<f64> {
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reward"].as_f64().expect("a numeric reward"))
        .collect()
}

/// A running `fake_openai.py MODE EXPECT LOG`, killed on drop.
struct FakeServer {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    fn start(mode: &str, expect: &str) -> FakeServer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("answered.txt");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoo/fake_openai.py");
        let (child, url) = common::start_ready_server(
            Command::new("python3")
                .arg(script)
                .args([mode, expect])
                .arg(&log),
        );
        FakeServer {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    /// The scores it answered, in order.
    fn answered(&self) -> Vec<f64> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn judge(url: &str) -> String {
    format!("stdio:python3 {} --base-url {url}", zoo("vlm_judge.py"))
}

/// The fake server's score of a sample: 10 × the mean of its pixels' bytes (the protocol's
/// rgb8 rule, `round((x + 1) · 127.5)` in f32) / 255, divided as Python divides integers.
fn brightness_score(x: &Value) -> f64 {
    let bytes: Vec<u64> = x
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            ((v.as_f64().unwrap() as f32 + 1.0) * 127.5)
                .round()
                .clamp(0.0, 255.0) as u64
        })
        .collect();
    (10 * bytes.iter().sum::<u64>()) as f64 / (255 * bytes.len() as u64) as f64
}

#[test]
fn vlm_judge_steers_fk_with_the_scores_the_server_answered() {
    let server = FakeServer::start("score", "star");
    let tmp = tempfile::tempdir().unwrap();
    let o = generate(tmp.path(), "star", &judge(&server.url), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = samples(tmp.path());
    let answered = server.answered();
    assert!(!rewards(&v).is_empty(), "no samples");
    for (s, r) in v["samples"].as_array().unwrap().iter().zip(rewards(&v)) {
        assert_eq!(
            r,
            brightness_score(&s["x"]),
            "the reward is not the image's score"
        );
        assert!(
            answered.contains(&r),
            "{r} was never answered: {answered:?}"
        );
    }
    // Every item the engine sent (all but the cache's) was one chat request.
    let ledger = &v["ledger"];
    let items = ledger["reward_items"]["vlm-judge"].as_u64().unwrap();
    let cached = ledger["reward_cached"].as_u64().unwrap();
    assert_eq!(answered.len() as u64, items - cached, "{ledger}");

    // The server does check the prompt: a heart is refused with HTTP 400.
    let o = generate(
        &tmp.path().join("heart"),
        "heart",
        &judge(&server.url),
        &["--plugin-retries", "0"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("HTTP 400") && err.contains("no text part mentions 'star'"),
        "{err}"
    );
}

/// One `score` request of [`exchange`]: the items' shape `[C, H, W]` and `(prompt, bytes)`.
type Request<'a> = ([usize; 3], Vec<(Option<&'a str>, Vec<u8>)>);

/// Talks `steerdiff-reward/1` to a plugin directly: `describe`, then the `score` requests;
/// returns each request's scores, in item order.
fn exchange(argv: &[&str], encoding: &str, requests: &[Request<'_>]) -> Vec<Vec<Value>> {
    let mut child = Command::new("python3")
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let describe = json!({"protocol": "steerdiff-reward/1", "op": "describe", "request_id": 0});
    writeln!(stdin, "{describe}").unwrap();
    let answer = read_answer(&mut stdout);
    assert_eq!(answer["protocol"], "steerdiff-reward/1", "{answer}");
    let mut out = Vec::new();
    for (r, (shape, items)) in requests.iter().enumerate() {
        let (mut headers, mut payload) = (Vec::new(), Vec::new());
        for (i, (prompt, bytes)) in items.iter().enumerate() {
            headers.push(
                json!({"id": format!("i{i}"), "class": null, "prompt": prompt,
                "sigma": 0.0, "offset": payload.len(), "bytes": bytes.len()}),
            );
            payload.extend_from_slice(bytes);
        }
        let header = json!({"protocol": "steerdiff-reward/1", "op": "score", "request_id": r + 1,
            "encoding": encoding, "shape": shape, "items": headers,
            "payload_bytes": payload.len()});
        writeln!(stdin, "{header}").unwrap();
        stdin.write_all(&payload).unwrap();
        stdin.flush().unwrap();
        let answer = read_answer(&mut stdout);
        let scores = &answer["scores"];
        assert!(scores.is_object(), "{answer}");
        out.push(
            (0..items.len())
                .map(|i| scores[format!("i{i}")].clone())
                .collect(),
        );
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    out
}

fn read_answer(stdout: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn an_unparseable_reply_scores_null() {
    let server = FakeServer::start("garbage", "star");
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([200, 100, 50]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let script = zoo("vlm_judge.py");
    let scores = exchange(
        &[&script, "--base-url", &server.url],
        "png",
        &[([3, 4, 4], vec![(Some("a star"), png.into_inner())])],
    );
    assert_eq!(scores, [[Value::Null]]);

    // Through steerdiff, a null score follows --plugin-on-error (abort by default).
    let tmp = tempfile::tempdir().unwrap();
    let o = generate(tmp.path(), "star", &judge(&server.url), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("null or not finite"), "{err}");
    assert!(!tmp.path().join("samples.json").exists());
}

#[test]
fn a_server_that_is_down_stops_the_run_naming_its_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // free once the listener is dropped, here
    let url = format!("http://127.0.0.1:{port}/v1");
    let tmp = tempfile::tempdir().unwrap();
    let o = generate(tmp.path(), "star", &judge(&url), &["--plugin-retries", "0"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("vlm-judge")
            && err.contains(&format!(
                "cannot reach http://127.0.0.1:{port}/v1/chat/completions"
            )),
        "{err}"
    );
    assert!(!tmp.path().join("samples.json").exists());
}

#[test]
fn the_judge_reads_scores_from_json_or_the_first_number() {
    // The doctests of vlm_judge.parse_score.
    let o = Command::new("python3")
        .args(["-m", "doctest", &zoo("vlm_judge.py")])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

#[test]
fn model_plugins_without_their_packages_say_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let mlp = "--mlp x.safetensors";
    // (plugin and flags, [(module, pip package)] it imports)
    let plugins: [(String, &[(&str, &str)]); 4] = [
        (
            zoo("pickscore.py"),
            &[("torch", "torch"), ("transformers", "transformers")],
        ),
        (
            format!("{} {mlp}", zoo("aesthetic.py")),
            &[("torch", "torch"), ("transformers", "transformers")],
        ),
        (
            zoo("hpsv2.py"),
            &[("torch", "torch"), ("open_clip", "open-clip-torch")],
        ),
        (
            zoo("image_reward.py"),
            &[("torch", "torch"), ("ImageReward", "image-reward")],
        ),
    ];
    for (plugin, packages) in &plugins {
        let missing: Vec<&str> = packages
            .iter()
            .filter(|(module, _)| !python_has(module))
            .map(|(_, pip)| *pip)
            .collect();
        if missing.is_empty() {
            eprintln!("zoo: {plugin}: its packages are installed; the missing-package message was not checked");
            continue;
        }
        let o = generate(
            &tmp.path().join("o"),
            "star",
            &format!("stdio:python3 {plugin}"),
            &[],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        let line = format!("install with: pip install {}", missing.join(" "));
        assert!(
            err.contains("describe handshake failed") && err.contains(&line),
            "{plugin}: {err}"
        );
    }

    // The aesthetic MLP has no default: its absence is named before anything is imported.
    let o = generate(
        &tmp.path().join("o"),
        "star",
        &format!("stdio:python3 {}", zoo("aesthetic.py")),
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pass --mlp FILE (or set $AESTHETIC_MLP)"),
        "{err}"
    );
}

/// One request per case of the tiny CLIP's `cases.json`: its image as rgb8, once per prompt
/// (or once, without a prompt).
fn case_requests(cases: &[Value], with_prompts: bool) -> Vec<Request<'_>> {
    cases
        .iter()
        .map(|c| {
            let (w, h) = (c["width"].as_u64().unwrap(), c["height"].as_u64().unwrap());
            let bytes: Vec<u8> = c["image_hwc_u8"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            let prompts: Vec<Option<&str>> = if with_prompts {
                c["prompts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(Value::as_str)
                    .collect()
            } else {
                vec![None]
            };
            let items = prompts.into_iter().map(|p| (p, bytes.clone())).collect();
            ([3, h as usize, w as usize], items)
        })
        .collect()
}

fn assert_close(got: &[Value], want: &Value, what: &str) {
    let want = common::floats(want);
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(&want) {
        let (g, w) = (
            g.as_f64().unwrap_or_else(|| panic!("{what}: {got:?}")),
            *w as f64,
        );
        assert!(
            (g - w).abs() < 1e-4 * (1.0 + w.abs()),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn pickscore_and_aesthetic_match_transformers_on_the_tiny_clip() {
    if !python_has("torch, transformers, PIL") {
        eprintln!("zoo: transformers not installed; the PickScore/aesthetic checks did not run");
        return;
    }
    let fixture = common::fixture("tiny-clip");
    let model = fixture.join("model").to_string_lossy().into_owned();
    let mlp = fixture
        .join("aesthetic.safetensors")
        .to_string_lossy()
        .into_owned();
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("cases.json")).unwrap())
            .unwrap();
    let cases = cases["cases"].as_array().unwrap();
    let pickscore = zoo("pickscore.py");
    let aesthetic = zoo("aesthetic.py");
    let cpu = ["--device", "cpu"];
    let pick_argv = [
        &[pickscore.as_str(), "--model", &model, "--processor", &model][..],
        &cpu,
    ]
    .concat();
    let aest_argv = [
        &[aesthetic.as_str(), "--clip", &model, "--mlp", &mlp][..],
        &cpu,
    ]
    .concat();

    // Each case is one image against its prompts. PickScore's logit_scale · cos is
    // transformers' logits_per_image; the aesthetic score is the MLP of the image embedding.
    for (c, got) in cases
        .iter()
        .zip(exchange(&pick_argv, "rgb8", &case_requests(cases, true)))
    {
        assert_close(&got, &c["logits_per_image"], "pickscore");
    }
    for (c, got) in cases
        .iter()
        .zip(exchange(&aest_argv, "rgb8", &case_requests(cases, false)))
    {
        assert_close(&got, &c["aesthetic"], "aesthetic");
    }

    // Both steer FK on the toy (32×32 images, the class name as the prompt) to finite rewards.
    let tmp = tempfile::tempdir().unwrap();
    for (name, argv) in [("pickscore", &pick_argv), ("aesthetic", &aest_argv)] {
        let out = tmp.path().join(name);
        let o = generate(
            &out,
            "star",
            &format!("stdio:python3 {}", argv.join(" ")),
            &[],
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let r = rewards(&samples(&out));
        assert!(
            !r.is_empty() && r.iter().all(|x| x.is_finite()),
            "{name}: {r:?}"
        );
    }
}
