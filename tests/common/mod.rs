//! Helpers shared by the conformance tests (each test binary uses some of them).
#![allow(dead_code)]

pub mod sd_cases;

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::Value;

/// A fixture folder: `tests/fixtures/NAME`, or `$STEERDIFF_FIXTURES/NAME` when set.
pub fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("STEERDIFF_FIXTURES") {
        Some(d) => PathBuf::from(d).join(name),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    }
}

/// A JSON list of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list of numbers")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Every element of a tensor, as f32.
pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Max of |a − b|.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Model rows of a run record's ledger, over every model.
pub fn total_rows(record: &Value) -> u64 {
    record["ledger"]["model_rows"]
        .as_object()
        .expect("a ledger")
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// The name of the (first) reward a run record's ledger counts calls for.
pub fn reward_name(record: &Value) -> String {
    record["ledger"]["reward_calls"]
        .as_object()
        .expect("a ledger")
        .keys()
        .next()
        .expect("a reward call")
        .clone()
}

/// Starts `cmd` — a test server that prints `READY URL` as its first line — and returns the
/// child and the URL.
#[allow(dead_code)]
pub fn start_ready_server(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the test server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("READY ")
        .expect("READY line")
        .to_string();
    (child, url)
}

/// The CRC-32 (IEEE) PNG chunks carry, for hand-made PNGs.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// One PNG chunk: length, kind, data and CRC.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = kind.to_vec();
    crc.extend_from_slice(data);
    out.extend_from_slice(&crc32(&crc).to_be_bytes());
    out
}

/// Copies folder `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Runs the steerdiff binary under test with `args` and returns what it did.
pub fn steerdiff(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(args)
        .output()
        .expect("run steerdiff")
}

/// The tiny text encoders laid out as a FLUX repo (`tokenizer[_2]/`, `text_encoder[_2]/`: CLIP-L
/// and T5) in `dir/flux-encoders`.
pub fn flux_encoders(dir: &Path) -> PathBuf {
    let src = fixture("tiny-text-encoders");
    let repo = dir.join("flux-encoders");
    for (from, to) in [
        ("tokenizer", "tokenizer"),
        ("text_encoder", "text_encoder"),
        ("tokenizer_3", "tokenizer_2"),
        ("text_encoder_3", "text_encoder_2"),
    ] {
        copy_dir(&src.join(from), &repo.join(to));
    }
    repo
}

/// `steerdiff ARGS` with the Hub offline (tests never reach it), its output collected.
pub fn steerdiff_offline(args: &[std::ffi::OsString]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run steerdiff")
}

/// `case[key]` shaped as `case[key_shape]`.
pub fn case_tensor(case: &Value, key: &str) -> Tensor {
    let shape: Vec<usize> = serde_json::from_value(case[format!("{key}_shape")].clone()).unwrap();
    Tensor::from_vec(floats(&case[key]), shape, &candle_core::Device::Cpu).unwrap()
}

/// A FLUX case of `tests/fixtures/tiny-dit/make_fixture.py` through `flux`: its guidance, text
/// embeddings and `x` at its σ, rows answering `Null` and `Prompt(0)` as the reference batch.
pub fn flux_case_output(flux: &mut steerdiff::pipelines::sd::flux::Flux, case: &Value) -> Tensor {
    use steerdiff::guidance::{Condition, Denoiser, StepPoint};
    flux.guidance = case["guidance"].as_f64().unwrap();
    flux.set_text_embeddings(&case_tensor(case, "txt"), &case_tensor(case, "vec"))
        .unwrap();
    let sigma = case["sigma"].as_f64().unwrap();
    let at = StepPoint {
        timestep: sigma * 1000.0,
        alpha: 1.0 - sigma,
        sigma,
    };
    flux.forward(
        &case_tensor(case, "x"),
        &at,
        &[Condition::Null, Condition::Prompt(0)],
    )
    .unwrap()
}
