//! Helpers the cases use to build their files and command lines.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

pub(crate) use super::common::{copy_dir, png_chunk};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_steerdiff");

pub(crate) fn manifest(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

pub(crate) fn s(p: &Path) -> String {
    p.display().to_string()
}

pub(crate) fn out(d: &Path) -> String {
    s(&d.join("out"))
}

pub(crate) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `generate --steps 2 -n 1 -o DIR/out` and `extra` (the toy model unless `extra` names one).
pub(crate) fn gen(d: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = strings(&["generate", "--steps", "2", "-n", "1", "-o"]);
    v.push(out(d));
    v.extend(strings(extra));
    v
}

/// `generate -o DIR/out` and `extra` only (for cases that set --steps or -n themselves).
pub(crate) fn gen_raw(d: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["generate".to_string(), "-o".to_string(), out(d)];
    v.extend(strings(extra));
    v
}

/// A small text-to-image run of `model` into `DIR/out`.
pub(crate) fn sd_gen(d: &Path, model: &str, extra: &[&str]) -> Vec<String> {
    gen(d, &[&["--model", model, "-p", "a cat"][..], extra].concat())
}

pub(crate) fn fixture_sd() -> String {
    manifest("tests/fixtures/tiny-sd/pipeline")
}

pub(crate) fn write(path: &Path, bytes: impl AsRef<[u8]>) -> String {
    std::fs::write(path, bytes).unwrap();
    s(path)
}

/// A copy of the tiny SD pipeline at `DIR/sd`.
pub(crate) fn sd_copy(d: &Path) -> PathBuf {
    let to = d.join("sd");
    copy_dir(Path::new(&fixture_sd()), &to);
    to
}

/// Edits the JSON file at `path`.
pub(crate) fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// A tiny SD copy with `component/config.json`'s `key` set to `value`; returns the argv.
pub(crate) fn sd_config(d: &Path, file: &str, key: &str, value: Value) -> Vec<String> {
    let sd = sd_copy(d);
    edit_json(&sd.join(file), |v| v[key] = value);
    sd_gen(d, &s(&sd), &[])
}

pub(crate) const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";
pub(crate) const VAE_WEIGHTS: &str = "vae/diffusion_pytorch_model.safetensors";

/// The header (as JSON) and the data of a safetensors file.
pub(crate) fn read_safetensors(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

pub(crate) fn write_safetensors(path: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let h = serde_json::to_vec(header).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// A tiny SD copy whose `weights` file's header is edited by `f`; returns the argv.
pub(crate) fn sd_tensors(
    d: &Path,
    weights: &str,
    f: fn(&mut serde_json::Map<String, Value>, &mut Vec<u8>),
) -> Vec<String> {
    let sd = sd_copy(d);
    let path = sd.join(weights);
    let (mut header, mut data) = read_safetensors(&path);
    f(&mut header, &mut data);
    write_safetensors(&path, &header, &data);
    sd_gen(d, &s(&sd), &[])
}

/// A tiny SD copy whose unet weights' bytes are replaced by `f(bytes)`; returns the argv.
pub(crate) fn sd_bytes(d: &Path, f: fn(Vec<u8>) -> Vec<u8>) -> Vec<String> {
    let sd = sd_copy(d);
    let path = sd.join(UNET_WEIGHTS);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, f(bytes)).unwrap();
    sd_gen(d, &s(&sd), &[])
}

/// The tensor of `header` whose data ends last.
pub(crate) fn last_tensor(header: &serde_json::Map<String, Value>) -> String {
    header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .max_by_key(|(_, v)| v["data_offsets"][1].as_u64().unwrap())
        .map(|(k, _)| k.clone())
        .unwrap()
}

/// `gmm:DIR/spec.json` holding `text`, sampled.
pub(crate) fn gmm(d: &Path, text: &str) -> Vec<String> {
    let spec = write(&d.join("spec.json"), text);
    gen(d, &["--model", &format!("gmm:{spec}")])
}

/// A run with `--config DIR/run.toml` holding `bytes`.
pub(crate) fn config(d: &Path, bytes: &[u8]) -> Vec<String> {
    let file = write(&d.join("run.toml"), bytes);
    gen(d, &["--config", &file])
}

/// A run of every line of `DIR/NAME` holding `bytes`.
pub(crate) fn prompt_file(d: &Path, name: &str, bytes: &[u8]) -> Vec<String> {
    let file = write(&d.join(name), bytes);
    gen(d, &["--prompt-file", &file])
}

/// An FK run on the toy steered by the reward `reward`, plus `extra`.
pub(crate) fn fk(d: &Path, reward: &str, extra: &[&str]) -> Vec<String> {
    gen(
        d,
        &[
            &["--class", "ring", "--guidance", "fk", "--reward", reward][..],
            extra,
        ]
        .concat(),
    )
}

/// `examples/plugins/faulty.py MODE`, its marker the case folder (so leftovers are found).
pub(crate) fn faulty(d: &Path, mode: &str, extra: &[&str]) -> Vec<String> {
    let reward = format!(
        "stdio:python3 {} {mode} {}",
        manifest("examples/plugins/faulty.py"),
        s(d)
    );
    fk(d, &reward, extra)
}

/// A plugin that speaks the protocol except where MODE says: the describe answer
/// (`notdesc`, `version`, `batch0`, `jpeg`, `noenc`, `audio`, `sideways`, `hello`) or the
/// score answer (`wrongids`, `scorelist`, `scorestr`).
pub(crate) const PLUGIN: &str = r#"import json, sys
mode = sys.argv[1]
desc = {"protocol": "steerdiff-reward/1", "name": "p", "version": "1", "inputs": ["pixels"],
        "mode": "pointwise", "batch_size": 16, "range": None, "direction": "maximize",
        "deterministic": True, "encodings": ["f32"]}
if mode == "notdesc": desc = {"hello": "world"}
if mode == "version": desc["protocol"] = "steerdiff-reward/2"
if mode == "batch0": desc["batch_size"] = 0
if mode == "jpeg": desc["encodings"] = ["jpeg"]
if mode == "noenc": desc["encodings"] = []
if mode == "audio": desc["inputs"] = ["audio"]
if mode == "sideways": desc["direction"] = "sideways"
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    h = json.loads(line)
    if h.get("payload_bytes"):
        sys.stdin.buffer.read(h["payload_bytes"])
    if h["op"] == "shutdown":
        break
    if h["op"] == "describe":
        sys.stdout.write("hello there\n" if mode == "hello" else json.dumps(desc) + "\n")
        sys.stdout.flush()
        continue
    ids = [it["id"] for it in h["items"]]
    scores = {i: 0.5 for i in ids}
    if mode == "wrongids": scores = {i + "x": 0.5 for i in ids}
    if mode == "scorelist": scores = [0.5 for i in ids]
    if mode == "scorestr": scores = {i: "high" for i in ids}
    sys.stdout.write(json.dumps({"scores": scores}) + "\n")
    sys.stdout.flush()
"#;

pub(crate) fn plugin(d: &Path, mode: &str) -> Vec<String> {
    let script = write(&d.join("plugin.py"), PLUGIN);
    fk(
        d,
        &format!("stdio:python3 {script} {mode}"),
        &["--plugin-retries", "0"],
    )
}

/// A 1×1 RGB PNG with `text` as an uncompressed `steerdiff` iTXt chunk.
pub(crate) fn png_with_steerdiff_text(text: &str) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 1u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&1u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend(png_chunk(b"IHDR", &ihdr));
    let mut itxt = b"steerdiff\0\0\0\0\0".to_vec();
    itxt.extend_from_slice(text.as_bytes());
    png.extend(png_chunk(b"iTXt", &itxt));
    // zlib of the one scanline [filter 0, 0, 0, 0], stored.
    let raw = [0u8, 0, 0, 0];
    let mut z = vec![0x78, 0x01, 0x01, 4, 0, !4u8, 0xff];
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    png.extend(png_chunk(b"IDAT", &z));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// A real PNG of `w`×`h` pixels, written by the image crate.
pub(crate) fn image_file(path: &Path, w: u32, h: u32) -> String {
    image::RgbImage::from_pixel(w, h, image::Rgb([200, 40, 40]))
        .save(path)
        .unwrap();
    s(path)
}

/// Runs steerdiff (setup work such as making shards), asserting success.
pub(crate) fn run_ok(args: &[&str]) {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Shard `i` of 2 of a 2-sample toy run into `DIR/name`, with `extra` flags (`--steps 2`
/// unless they give it).
pub(crate) fn shard(d: &Path, name: &str, i: usize, extra: &[&str]) -> String {
    let dir = s(&d.join(name));
    let idx = format!("{i}/2");
    let steps: &[&str] = if extra.contains(&"--steps") {
        &[]
    } else {
        &["--steps", "2"]
    };
    run_ok(
        &[
            &["generate", "-n", "2", "--shard", &idx, "-o", &dir][..],
            steps,
            extra,
        ]
        .concat(),
    );
    dir
}

pub(crate) fn merge(shards: &[&str], o: &str) -> Vec<String> {
    let mut v = vec!["merge".to_string()];
    v.extend(strings(shards));
    v.extend(["-o".to_string(), o.to_string()]);
    v
}

/// Latents of the tiny SD model ([4, 8, 8] per sample) as nested lists of shape `dims`.
pub(crate) fn nested(dims: &[usize]) -> Value {
    match dims {
        [] => json!(0.1),
        [n, rest @ ..] => Value::Array(vec![nested(rest); *n]),
    }
}
