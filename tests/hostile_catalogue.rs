//! A catalogue of bad and hostile inputs (issue 21), run against the real binary, table-driven.
//!
//! Each case builds its files in a fresh temporary folder and names the command line; the one
//! loop in [`hostile_catalogue`] runs every case and checks, for each:
//!
//! * the exit code (2 for an input error — a bad flag value, an unreadable or malformed file, a
//!   plugin that breaks its protocol —, 1 for a plugin that fails during the run, 0 for
//!   success, 130 for a stop signal);
//! * a message on stderr naming the problem (every needle; `a||b` accepts either), at most
//!   4 KiB of it;
//! * no panic or abort: no `panicked` or `internal error`, no death by a signal (the run has
//!   an address-space limit, so a huge allocation aborts instead of swapping the machine);
//! * the state of the files afterwards: [`Expect::Untouched`] — everything the setup built is
//!   as it was, and the `-o` folder holds nothing new (it may exist, empty, where it did not);
//!   [`Expect::Complete`] — the `-o` folder holds `samples.json` and exactly the files a
//!   complete run writes, and nothing else changed;
//! * no process left running that mentions the case's folder (its plugins).
//!
//! It collects every failure and panics once at the end, listing each failing case's name,
//! exit code and stderr. The cases complement `hostile_inputs.rs` and `plugins.rs`.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What the files look like after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The `-o` folder is absent or holds only what the setup put there; nothing else changed.
    Untouched,
    /// `samples.json` and the files of a complete run (its images, timing.json, grid/top/
    /// scatter PNGs), nothing else; nothing outside `-o` changed.
    Complete,
}
use Expect::{Complete, Untouched};

/// One hostile input.
struct Case {
    name: &'static str,
    /// Builds files in the case's folder and returns the arguments after the binary.
    setup: fn(&Path) -> Vec<String>,
    code: i32,
    /// Substrings of stderr, each required; `a||b` accepts either.
    needles: &'static [&'static str],
    folder: Expect,
    /// Send SIGINT this many milliseconds after the start.
    interrupt_ms: Option<u64>,
}

fn case(
    name: &'static str,
    code: i32,
    needles: &'static [&'static str],
    folder: Expect,
    setup: fn(&Path) -> Vec<String>,
) -> Case {
    Case {
        name,
        setup,
        code,
        needles,
        folder,
        interrupt_ms: None,
    }
}

// ---- helpers for the setups ----------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_steerdiff");

fn manifest(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn out(d: &Path) -> String {
    s(&d.join("out"))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `generate --steps 2 -n 1 -o DIR/out` and `extra` (the toy model unless `extra` names one).
fn gen(d: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = strings(&["generate", "--steps", "2", "-n", "1", "-o"]);
    v.push(out(d));
    v.extend(strings(extra));
    v
}

/// `generate -o DIR/out` and `extra` only (for cases that set --steps or -n themselves).
fn gen_raw(d: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["generate".to_string(), "-o".to_string(), out(d)];
    v.extend(strings(extra));
    v
}

/// A small text-to-image run of `model` into `DIR/out`.
fn sd_gen(d: &Path, model: &str, extra: &[&str]) -> Vec<String> {
    gen(d, &[&["--model", model, "-p", "a cat"][..], extra].concat())
}

fn fixture_sd() -> String {
    manifest("tests/fixtures/tiny-sd/pipeline")
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> String {
    std::fs::write(path, bytes).unwrap();
    s(path)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A copy of the tiny SD pipeline at `DIR/sd`.
fn sd_copy(d: &Path) -> PathBuf {
    let to = d.join("sd");
    copy_dir(Path::new(&fixture_sd()), &to);
    to
}

/// Edits the JSON file at `path`.
fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// A tiny SD copy with `component/config.json`'s `key` set to `value`; returns the argv.
fn sd_config(d: &Path, file: &str, key: &str, value: Value) -> Vec<String> {
    let sd = sd_copy(d);
    edit_json(&sd.join(file), |v| v[key] = value);
    sd_gen(d, &s(&sd), &[])
}

const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";
const VAE_WEIGHTS: &str = "vae/diffusion_pytorch_model.safetensors";

/// The header (as JSON) and the data of a safetensors file.
fn read_safetensors(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn write_safetensors(path: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let h = serde_json::to_vec(header).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// A tiny SD copy whose `weights` file's header is edited by `f`; returns the argv.
fn sd_tensors(
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
fn sd_bytes(d: &Path, f: fn(Vec<u8>) -> Vec<u8>) -> Vec<String> {
    let sd = sd_copy(d);
    let path = sd.join(UNET_WEIGHTS);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, f(bytes)).unwrap();
    sd_gen(d, &s(&sd), &[])
}

/// The tensor of `header` whose data ends last.
fn last_tensor(header: &serde_json::Map<String, Value>) -> String {
    header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .max_by_key(|(_, v)| v["data_offsets"][1].as_u64().unwrap())
        .map(|(k, _)| k.clone())
        .unwrap()
}

/// `gmm:DIR/spec.json` holding `text`, sampled.
fn gmm(d: &Path, text: &str) -> Vec<String> {
    let spec = write(&d.join("spec.json"), text);
    gen(d, &["--model", &format!("gmm:{spec}")])
}

/// A run with `--config DIR/run.toml` holding `bytes`.
fn config(d: &Path, bytes: &[u8]) -> Vec<String> {
    let file = write(&d.join("run.toml"), bytes);
    gen(d, &["--config", &file])
}

/// A run of every line of `DIR/NAME` holding `bytes`.
fn prompt_file(d: &Path, name: &str, bytes: &[u8]) -> Vec<String> {
    let file = write(&d.join(name), bytes);
    gen(d, &["--prompt-file", &file])
}

/// An FK run on the toy steered by the reward `reward`, plus `extra`.
fn fk(d: &Path, reward: &str, extra: &[&str]) -> Vec<String> {
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
fn faulty(d: &Path, mode: &str, extra: &[&str]) -> Vec<String> {
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
const PLUGIN: &str = r#"import json, sys
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

fn plugin(d: &Path, mode: &str) -> Vec<String> {
    let script = write(&d.join("plugin.py"), PLUGIN);
    fk(
        d,
        &format!("stdio:python3 {script} {mode}"),
        &["--plugin-retries", "0"],
    )
}

fn crc32(bytes: &[u8]) -> u32 {
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

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = kind.to_vec();
    crc.extend_from_slice(data);
    out.extend_from_slice(&crc32(&crc).to_be_bytes());
    out
}

/// A 1×1 RGB PNG with `text` as an uncompressed `steerdiff` iTXt chunk.
fn png_with_steerdiff_text(text: &str) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 1u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&1u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend(chunk(b"IHDR", &ihdr));
    let mut itxt = b"steerdiff\0\0\0\0\0".to_vec();
    itxt.extend_from_slice(text.as_bytes());
    png.extend(chunk(b"iTXt", &itxt));
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
    png.extend(chunk(b"IDAT", &z));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// A real PNG of `w`×`h` pixels, written by the image crate.
fn image_file(path: &Path, w: u32, h: u32) -> String {
    image::RgbImage::from_pixel(w, h, image::Rgb([200, 40, 40]))
        .save(path)
        .unwrap();
    s(path)
}

/// Runs steerdiff (setup work such as making shards), asserting success.
fn run_ok(args: &[&str]) {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Shard `i` of 2 of a 2-sample toy run into `DIR/name`, with `extra` flags (`--steps 2`
/// unless they give it).
fn shard(d: &Path, name: &str, i: usize, extra: &[&str]) -> String {
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

fn merge(shards: &[&str], o: &str) -> Vec<String> {
    let mut v = vec!["merge".to_string()];
    v.extend(strings(shards));
    v.extend(["-o".to_string(), o.to_string()]);
    v
}

/// Latents of the tiny SD model ([4, 8, 8] per sample) as nested lists of shape `dims`.
fn nested(dims: &[usize]) -> Value {
    match dims {
        [] => json!(0.1),
        [n, rest @ ..] => Value::Array(vec![nested(rest); *n]),
    }
}

// ---- the catalogue -----------------------------------------------------------------------

fn cases() -> Vec<Case> {
    vec![
        // ---- 1. crafted model folders (copies of tiny-sd) ----
        case(
            "st_header_length_huge",
            2,
            &["header too large"],
            Untouched,
            |d| {
                sd_bytes(d, |mut b| {
                    b[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
                    b
                })
            },
        ),
        case(
            "st_header_length_past_the_end",
            2,
            &["invalid header length"],
            Untouched,
            |d| {
                sd_bytes(d, |mut b| {
                    let n = b.len() as u64;
                    b[..8].copy_from_slice(&n.to_le_bytes());
                    b
                })
            },
        ),
        case(
            "st_truncated",
            2,
            &[
                "not fully covered",
                "unet/diffusion_pytorch_model.safetensors",
            ],
            Untouched,
            |d| sd_bytes(d, |b| b[..b.len() / 2].to_vec()),
        ),
        case("st_three_bytes", 2, &["header too small"], Untouched, |d| {
            sd_bytes(d, |_| vec![1, 2, 3])
        }),
        case(
            "st_header_not_json",
            2,
            &["invalid JSON in header"],
            Untouched,
            |d| {
                sd_bytes(d, |mut b| {
                    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
                    b[8..8 + n].fill(b'x');
                    b
                })
            },
        ),
        case(
            "st_unknown_dtype",
            2,
            &["unknown variant `Q7`"],
            Untouched,
            |d| {
                sd_tensors(d, UNET_WEIGHTS, |h, _| {
                    h["conv_in.bias"]["dtype"] = json!("Q7")
                })
            },
        ),
        case(
            "st_integer_dtype",
            2,
            &["`conv_in.bias`", "has dtype I32"],
            Untouched,
            |d| {
                sd_tensors(d, UNET_WEIGHTS, |h, _| {
                    h["conv_in.bias"]["dtype"] = json!("I32")
                })
            },
        ),
        case(
            "st_offsets_past_the_end",
            2,
            &["invalid shape, data type, or offset||invalid offset"],
            Untouched,
            |d| {
                sd_tensors(d, VAE_WEIGHTS, |h, _| {
                    let k = last_tensor(h);
                    let end = h[&k]["data_offsets"][1].as_u64().unwrap();
                    h[&k]["data_offsets"][1] = json!(end + 4096);
                })
            },
        ),
        case(
            "st_offsets_far_outside",
            2,
            &["invalid offset"],
            Untouched,
            |d| {
                sd_tensors(d, VAE_WEIGHTS, |h, _| {
                    let k = last_tensor(h);
                    let o = &h[&k]["data_offsets"];
                    let len = o[1].as_u64().unwrap() - o[0].as_u64().unwrap();
                    h[&k]["data_offsets"] = json!([1u64 << 62, (1u64 << 62) + len]);
                })
            },
        ),
        case("st_shape_overflows", 2, &["overflow"], Untouched, |d| {
            sd_tensors(d, VAE_WEIGHTS, |h, _| {
                h["decoder.conv_in.bias"]["shape"] = json!([1u64 << 40, 1u64 << 40])
            })
        }),
        case(
            "st_tensor_of_the_wrong_shape",
            2,
            &["shape mismatch for decoder.conv_in.bias", "loading the VAE"],
            Untouched,
            |d| {
                sd_tensors(d, VAE_WEIGHTS, |h, _| {
                    h["decoder.conv_in.bias"]["shape"] = json!([8, 8])
                })
            },
        ),
        case(
            "sd_missing_unet_folder",
            2,
            &["`unet/config.json` is missing"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                std::fs::remove_dir_all(sd.join("unet")).unwrap();
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_missing_vae_folder",
            2,
            &["`vae/config.json` is missing"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                std::fs::remove_dir_all(sd.join("vae")).unwrap();
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_missing_weights_file",
            2,
            &["no safetensors weights for `unet`"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                std::fs::remove_file(sd.join(UNET_WEIGHTS)).unwrap();
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_pickle_weights_in_the_folder",
            2,
            &["diffusion_pytorch_model.bin` is a PyTorch pickle"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                std::fs::remove_file(sd.join(UNET_WEIGHTS)).unwrap();
                // A pickle that would run a command if it were ever unpickled.
                write(
                    &sd.join("unet/diffusion_pytorch_model.bin"),
                    b"cos\nsystem\n(S'touch pwned'\ntR.",
                );
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_unet_config_not_json",
            2,
            &["unet/config.json", "invalid JSON"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                write(&sd.join("unet/config.json"), "{not json");
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_model_index_not_json",
            2,
            &["model_index.json", "invalid JSON"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                write(&sd.join("model_index.json"), "nope");
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_unet_sample_size_huge",
            2,
            // No --width / --height given: the config is named, not the flags.
            &[
                "2000000×2000000",
                "`unet/config.json`",
                "sample_size 1000000",
            ],
            Untouched,
            |d| sd_config(d, "unet/config.json", "sample_size", json!(1_000_000)),
        ),
        case(
            "sd_unet_sample_size_negative",
            2,
            &["sample_size"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "sample_size", json!(-8)),
        ),
        case(
            "sd_unet_in_channels_negative",
            2,
            &["`in_channels` must be a non-negative integer"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "in_channels", json!(-4)),
        ),
        case(
            "sd_unet_in_channels_zero",
            2,
            &["in_channels"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "in_channels", json!(0)),
        ),
        case(
            "sd_unet_block_out_channels_empty",
            2,
            &["`block_out_channels` must be a non-empty list"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "block_out_channels", json!([])),
        ),
        case(
            "sd_unet_layers_per_block_absurd",
            2,
            &["loading the UNet", "cannot find tensor"],
            Untouched,
            |d| {
                sd_config(
                    d,
                    "unet/config.json",
                    "layers_per_block",
                    json!(1_000_000_000),
                )
            },
        ),
        case(
            "sd_unet_norm_groups_zero",
            2,
            &["norm_num_groups = 0"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "norm_num_groups", json!(0)),
        ),
        case(
            "sd_unet_attention_heads_zero",
            2,
            &["0 attention heads"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "attention_head_dim", json!(0)),
        ),
        case(
            "sd_text_encoder_heads_indivisible",
            2,
            &["text_encoder/config.json", "not divisible into 3 heads"],
            Untouched,
            |d| {
                sd_config(
                    d,
                    "text_encoder/config.json",
                    "num_attention_heads",
                    json!(3),
                )
            },
        ),
        case(
            "sd_vae_scaling_factor_zero",
            2,
            &["scaling_factor"],
            Untouched,
            |d| sd_config(d, "vae/config.json", "scaling_factor", json!(0)),
        ),
        case(
            "sd_scheduler_config_not_json",
            2,
            &["scheduler/scheduler_config.json", "invalid JSON"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                write(&sd.join("scheduler/scheduler_config.json"), "[1,2");
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_scheduler_unknown_beta_schedule",
            2,
            &["beta_schedule = \"cubic\""],
            Untouched,
            |d| {
                sd_config(
                    d,
                    "scheduler/scheduler_config.json",
                    "beta_schedule",
                    json!("cubic"),
                )
            },
        ),
        case(
            "sd_scheduler_train_steps_huge",
            2,
            &["num_train_timesteps"],
            Untouched,
            |d| {
                sd_config(
                    d,
                    "scheduler/scheduler_config.json",
                    "num_train_timesteps",
                    json!(100_000_000_000u64),
                )
            },
        ),
        case(
            "model_ckpt_file_refused_unread",
            2,
            &["pickle checkpoint", "safetensors only"],
            Untouched,
            |d| {
                let ckpt = write(&d.join("model.ckpt"), b"cos\nsystem\n(S'touch pwned'\ntR.");
                sd_gen(d, &ckpt, &[])
            },
        ),
        case(
            "model_pt_file_refused_unread",
            2,
            &["pickle checkpoint"],
            Untouched,
            |d| {
                let pt = write(&d.join("model.pt"), b"PK\x03\x04 not a zip");
                sd_gen(d, &pt, &[])
            },
        ),
        case(
            "model_symlink_loop",
            2,
            &["loop", "symbolic link||symlink"],
            Untouched,
            |d| {
                std::os::unix::fs::symlink(d.join("loop-b"), d.join("loop-a")).unwrap();
                std::os::unix::fs::symlink(d.join("loop-a"), d.join("loop-b")).unwrap();
                sd_gen(d, &s(&d.join("loop-a")), &[])
            },
        ),
        case(
            "sd3_text_encoders_folder_missing",
            2,
            &["--text-encoders", "no-such-encoders"],
            Untouched,
            |d| {
                let te = s(&d.join("no-such-encoders"));
                sd_gen(
                    d,
                    &manifest("tests/fixtures/tiny-dit/sd3.safetensors"),
                    &["--text-encoders", &te],
                )
            },
        ),
        case(
            "flux_ae_file_missing",
            2,
            &["no-such-ae.safetensors", "no such file or folder"],
            Untouched,
            |d| {
                let ae = s(&d.join("no-such-ae.safetensors"));
                sd_gen(
                    d,
                    &manifest("tests/fixtures/tiny-dit/flux.safetensors"),
                    &[
                        "--text-encoders",
                        &manifest("tests/fixtures/tiny-text-encoders"),
                        "--ae",
                        &ae,
                    ],
                )
            },
        ),
        // ---- 2. mixture specs ----
        case("gmm_not_json", 2, &["malformed GMM spec"], Untouched, |d| {
            gmm(d, "dim: 1")
        }),
        case(
            "gmm_empty_file",
            2,
            &["malformed GMM spec", "EOF"],
            Untouched,
            |d| gmm(d, ""),
        ),
        case(
            "gmm_zero_components",
            2,
            &["`components` is empty"],
            Untouched,
            |d| gmm(d, r#"{"dim": 1, "components": []}"#),
        ),
        case(
            "gmm_negative_std",
            2,
            &["component 0 std must be a positive number, got -1"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 1, "mean": [0], "std": -1}]}"#,
                )
            },
        ),
        case(
            "gmm_zero_std",
            2,
            &["std must be a positive number, got 0"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 1, "mean": [0], "std": 0}]}"#,
                )
            },
        ),
        case(
            "gmm_negative_weight",
            2,
            &["component 1 weight must be a positive number, got -1"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 2, "mean": [0], "std": 1}, {"weight": -1, "mean": [1], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_weights_sum_to_zero",
            2,
            &["weight must be a positive number, got 0"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 0, "mean": [0], "std": 1}, {"weight": 0, "mean": [1], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_weights_sum_overflows",
            2,
            &["non-finite"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 1e308, "mean": [0], "std": 1}, {"weight": 1e308, "mean": [1], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_mean_of_the_wrong_dimension",
            2,
            &["mean of length 1 but dim is 2"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 2, "components": [{"weight": 1, "mean": [0], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_nan_as_a_string",
            2,
            &["invalid type: string \"NaN\""],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 1, "mean": ["NaN"], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_dim_zero",
            2,
            &["`dim` must be ≥ 1"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 0, "components": [{"weight": 1, "mean": [], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_unknown_field",
            2,
            &["unknown field `colour`"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "colour": "red", "components": [{"weight": 1, "mean": [0], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_too_few_class_names",
            2,
            &["1 class_names given but labels go up to 3"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "class_names": ["a"], "components": [{"weight": 1, "mean": [0], "std": 1, "class": 3}]}"#,
                )
            },
        ),
        case(
            "gmm_spec_is_a_folder",
            2,
            &["not a regular file"],
            Untouched,
            |d| {
                std::fs::create_dir(d.join("spec.json")).unwrap();
                gen(d, &["--model", &format!("gmm:{}", s(&d.join("spec.json")))])
            },
        ),
        case("gmm_no_spec_named", 2, &["no spec file"], Untouched, |d| {
            gen(d, &["--model", "gmm:"])
        }),
        // ---- 3. config files ----
        case(
            "config_not_toml",
            2,
            &["is not valid TOML"],
            Untouched,
            |d| config(d, b"steps = = 3\n"),
        ),
        case(
            "config_unknown_key",
            2,
            &["unknown key `colour`", "run.toml"],
            Untouched,
            |d| config(d, b"colour = \"red\"\n"),
        ),
        case(
            "config_value_of_the_wrong_type",
            2,
            &["invalid value 'high' for '--cfg <CFG>'"],
            Untouched,
            |d| config(d, b"cfg = \"high\"\n"),
        ),
        case(
            "config_inline_table",
            2,
            &["`cfg` must be a string, number, boolean or a list"],
            Untouched,
            |d| config(d, b"cfg = { a = 1 }\n"),
        ),
        case(
            "config_switch_given_a_string",
            2,
            &["`plugin-no-cache` is a switch"],
            Untouched,
            |d| config(d, b"plugin-no-cache = \"yes\"\n"),
        ),
        case(
            "config_duplicate_key",
            2,
            &["duplicate key `class`"],
            Untouched,
            |d| config(d, b"class = \"star\"\nclass = \"ring\"\n"),
        ),
        case(
            "config_not_utf8",
            2,
            &["is not UTF-8 text"],
            Untouched,
            |d| config(d, b"\xff\xfecfg = 3\n"),
        ),
        case(
            "config_is_a_folder",
            2,
            &["cannot read the config file", "Is a directory"],
            Untouched,
            |d| {
                std::fs::create_dir(d.join("run.toml")).unwrap();
                gen(d, &["--config", &s(&d.join("run.toml"))])
            },
        ),
        case(
            "config_endless_device",
            2,
            &["longer than 16777216 bytes"],
            Untouched,
            |d| gen(d, &["--config", "/dev/zero"]),
        ),
        // ---- 4. prompt files ----
        case(
            "prompt_file_line_not_json",
            2,
            &["line 2: not a JSON object"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"{\"class\": \"star\"}\nclass=star\n"),
        ),
        case(
            "prompt_file_line_a_json_array",
            2,
            &["line 1: not a JSON object"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"[\"star\"]\n"),
        ),
        case(
            "prompt_file_flag_of_another_command",
            2,
            &["line 1: unknown key `budget`"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"{\"budget\": 3}\n"),
        ),
        case(
            "prompt_file_value_of_the_wrong_type",
            2,
            &["line 2", "invalid value 'loud' for '--cfg <CFG>'"],
            Untouched,
            |d| {
                prompt_file(
                    d,
                    "runs.jsonl",
                    b"{\"class\": \"star\"}\n{\"cfg\": \"loud\"}\n",
                )
            },
        ),
        case(
            "prompt_file_value_an_object",
            2,
            &["line 1: `class` must be a string"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"{\"class\": {\"name\": \"star\"}}\n"),
        ),
        case(
            "prompt_file_output_per_line",
            2,
            &["`output` cannot be set per line"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"{\"output\": \"/tmp/elsewhere\"}\n"),
        ),
        case(
            "prompt_file_not_utf8",
            2,
            &["the prompt file", "is not UTF-8 text"],
            Untouched,
            |d| prompt_file(d, "classes.txt", b"star\n\xff\xfe\n"),
        ),
        case(
            "prompt_file_empty",
            2,
            &["has no lines to run"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b""),
        ),
        case(
            "prompt_file_only_comments",
            2,
            &["has no lines to run"],
            Untouched,
            |d| prompt_file(d, "classes.txt", b"# nothing\n\n   \n"),
        ),
        case(
            "prompt_file_unknown_class_on_line_2",
            2,
            &["unknown toy class `unicorn`"],
            Untouched,
            |d| prompt_file(d, "classes.txt", b"star\nunicorn\n"),
        ),
        // ---- 5. numeric and named flags ----
        case(
            "cfg_nan",
            2,
            &["CFG scale must be a finite number, got NaN"],
            Untouched,
            |d| gen(d, &["--class", "star", "--cfg", "nan"]),
        ),
        case(
            "cfg_inf",
            2,
            &["CFG scale must be a finite number, got inf"],
            Untouched,
            |d| gen(d, &["--class", "star", "--cfg", "inf"]),
        ),
        case("cfg_minus_inf", 2, &["got -inf"], Untouched, |d| {
            gen(d, &["--class", "star", "--cfg=-inf"])
        }),
        case(
            "eta_negative",
            2,
            &["eta must be a finite number ≥ 0 (got -1)"],
            Untouched,
            |d| gen(d, &["--eta=-1"]),
        ),
        case(
            "steps_zero",
            2,
            &["steps must be at least 1"],
            Untouched,
            |d| gen_raw(d, &["--steps", "0", "-n", "1"]),
        ),
        case("num_zero", 2, &["-n must be at least 1"], Untouched, |d| {
            gen_raw(d, &["--steps", "2", "-n", "0"])
        }),
        case(
            "shard_index_past_count",
            2,
            &["--shard", "got `3/2`"],
            Untouched,
            |d| gen(d, &["--shard", "3/2"]),
        ),
        case(
            "shard_zero_of_zero",
            2,
            &["--shard", "got `0/0`"],
            Untouched,
            |d| gen(d, &["--shard", "0/0"]),
        ),
        case(
            "shard_not_a_fraction",
            2,
            &["--shard expects I/N", "got `x`"],
            Untouched,
            |d| gen(d, &["--shard", "x"]),
        ),
        case(
            "seed_out_of_range",
            2,
            &["--seed", "18446744073709551616"],
            Untouched,
            |d| gen(d, &["--seed", "18446744073709551616"]),
        ),
        case(
            "seed_negative_not_minus_one",
            2,
            &["--seed", "or -1 for a random seed"],
            Untouched,
            |d| gen(d, &["--seed=-2"]),
        ),
        case(
            "lambda_nan_with_fk",
            2,
            &["--lambda must be a finite number", "NaN"],
            Untouched,
            |d| fk(d, "classifier", &["--lambda", "nan"]),
        ),
        case(
            "particles_zero",
            2,
            &["--particles must be at least 1"],
            Untouched,
            |d| fk(d, "classifier", &["--particles", "0"]),
        ),
        case(
            "strength_two_on_img2img",
            2,
            &["img2img strength must be in (0, 1] (got 2)"],
            Untouched,
            |d| {
                let img = image_file(&d.join("init.png"), 16, 16);
                sd_gen(d, &fixture_sd(), &["--init-image", &img, "--strength", "2"])
            },
        ),
        case(
            "width_not_a_multiple_of_the_vae_scale",
            2,
            &["16×17", "multiples of 2"],
            Untouched,
            |d| sd_gen(d, &fixture_sd(), &["--width", "17"]),
        ),
        case(
            "unknown_class",
            2,
            &["unknown toy class `unicorn`", "valid: circle"],
            Untouched,
            |d| gen(d, &["--class", "unicorn"]),
        ),
        case(
            "unknown_sampler",
            2,
            &["unknown sampler `warp`"],
            Untouched,
            |d| gen(d, &["--sampler", "warp"]),
        ),
        case(
            "unknown_reward",
            2,
            &["--reward `nope`", "the toy model's rewards"],
            Untouched,
            |d| fk(d, "nope", &[]),
        ),
        case(
            "cfg_interval_reversed",
            2,
            &["--cfg-interval 2,1"],
            Untouched,
            |d| gen(d, &["--class", "star", "--cfg-interval", "2,1"]),
        ),
        case(
            "unknown_device",
            2,
            &["unknown --device `tpu`"],
            Untouched,
            |d| gen(d, &["--device", "tpu"]),
        ),
        case(
            "max_batch_zero",
            2,
            &["--max-batch must be at least 1"],
            Untouched,
            |d| gen(d, &["--max-batch", "0"]),
        ),
        // ---- 6. plugins ----
        case(
            "plugin_program_missing",
            2,
            &["cannot start `/nonexistent/plugin`"],
            Untouched,
            |d| fk(d, "stdio:/nonexistent/plugin", &[]),
        ),
        case(
            "plugin_exits_at_start",
            2,
            &["describe handshake failed", "cannot load my weights"],
            Untouched,
            |d| faulty(d, "exit-at-start", &["--plugin-retries", "0"]),
        ),
        case(
            "plugin_answers_garbage",
            2,
            &["not a JSON header"],
            Untouched,
            |d| faulty(d, "garbage", &["--plugin-retries", "0"]),
        ),
        case("plugin_wrong_count", 2, &["missing ids"], Untouched, |d| {
            faulty(d, "wrong-count", &["--plugin-retries", "0"])
        }),
        case(
            "plugin_nan_skipped",
            0,
            &["null or not finite; scoring 1 item(s) −∞"],
            Complete,
            |d| faulty(d, "nan", &["--plugin-on-error", "skip"]),
        ),
        case(
            "plugin_nan_aborts",
            1,
            &["null or not finite", "--plugin-on-error skip"],
            Untouched,
            |d| faulty(d, "nan", &["--plugin-retries", "0"]),
        ),
        case(
            "plugin_crashes_during_the_run",
            1,
            &["closed its output", "segfault"],
            Untouched,
            |d| faulty(d, "crash", &["--plugin-retries", "0"]),
        ),
        case(
            "plugin_hangs",
            1,
            &["no answer within 1.0 s"],
            Untouched,
            |d| {
                faulty(
                    d,
                    "hang",
                    &["--plugin-timeout", "1", "--plugin-retries", "0"],
                )
            },
        ),
        case(
            "plugin_url_ftp_scheme",
            2,
            &["ftp://127.0.0.1:21", "http://127.0.0.1:PORT"],
            Untouched,
            |d| fk(d, "ftp://127.0.0.1:21", &[]),
        ),
        case(
            "plugin_url_remote_ipv6",
            2,
            &["not on this machine", "--plugin-allow-remote"],
            Untouched,
            |d| fk(d, "http://[2001:db8::1]:8765", &[]),
        ),
        case(
            "plugin_url_closed_port",
            2,
            &["describe handshake failed", "Connection refused"],
            Untouched,
            |d| fk(d, "http://127.0.0.1:1", &[]),
        ),
        case(
            "plugin_url_port_out_of_range",
            2,
            &["99999", "port"],
            Untouched,
            |d| fk(d, "http://127.0.0.1:99999", &["--plugin-allow-remote"]),
        ),
        case(
            "plugin_describe_not_a_description",
            2,
            &["not a valid description", "missing field `protocol`"],
            Untouched,
            |d| plugin(d, "notdesc"),
        ),
        case(
            "plugin_describe_not_json",
            2,
            &["describe handshake failed", "not a JSON header"],
            Untouched,
            |d| plugin(d, "hello"),
        ),
        case(
            "plugin_protocol_version_2",
            2,
            &["speaks `steerdiff-reward/2`"],
            Untouched,
            |d| plugin(d, "version"),
        ),
        case(
            "plugin_batch_size_zero",
            2,
            &["batch_size is 0"],
            Untouched,
            |d| plugin(d, "batch0"),
        ),
        case(
            "plugin_unknown_encoding",
            2,
            &["unknown variant `jpeg`"],
            Untouched,
            |d| plugin(d, "jpeg"),
        ),
        case(
            "plugin_no_encodings",
            2,
            &["accepts encodings []"],
            Untouched,
            |d| plugin(d, "noenc"),
        ),
        case(
            "plugin_unknown_direction",
            2,
            &["unknown variant `sideways`"],
            Untouched,
            |d| plugin(d, "sideways"),
        ),
        case("plugin_unknown_input", 2, &["audio"], Untouched, |d| {
            plugin(d, "audio")
        }),
        case(
            "plugin_scores_wrong_ids",
            2,
            &["unexpected ids", "one score per requested id"],
            Untouched,
            |d| plugin(d, "wrongids"),
        ),
        case(
            "plugin_scores_a_list",
            2,
            &["not a score response"],
            Untouched,
            |d| plugin(d, "scorelist"),
        ),
        case(
            "plugin_scores_strings",
            2,
            &["not a score response", "\"high\""],
            Untouched,
            |d| plugin(d, "scorestr"),
        ),
        Case {
            interrupt_ms: Some(1500),
            ..case(
                "sigint_while_a_plugin_hangs",
                130,
                &["stopping"],
                Untouched,
                |d| {
                    std::fs::create_dir(d.join("out")).unwrap();
                    write(&d.join("out/keep.txt"), "mine");
                    faulty(d, "hang", &[])
                },
            )
        },
        // ---- 7. info ----
        case(
            "info_empty_file",
            2,
            &["is not a PNG file"],
            Untouched,
            |d| strings(&["info", &write(&d.join("empty.png"), b"")]),
        ),
        case(
            "info_png_cut_in_its_header",
            2,
            &["is not a PNG file", "unexpected end of file"],
            Untouched,
            |d| {
                let png = png_with_steerdiff_text("{}");
                strings(&["info", &write(&d.join("cut.png"), &png[..20])])
            },
        ),
        case(
            "info_png_cut_in_its_image_data",
            2,
            &["cut.png", "unexpected end of file"],
            Untouched,
            |d| {
                let full = image_file(&d.join("full.png"), 16, 16);
                let bytes = std::fs::read(&full).unwrap();
                std::fs::remove_file(&full).unwrap();
                strings(&[
                    "info",
                    &write(&d.join("cut.png"), &bytes[..bytes.len() - 20]),
                ])
            },
        ),
        case(
            "info_a_jpeg",
            2,
            &["is not a PNG file", "Invalid PNG signature"],
            Untouched,
            |d| {
                let jpeg = d.join("photo.jpg");
                image::RgbImage::new(4, 4).save(&jpeg).unwrap();
                strings(&["info", &s(&jpeg)])
            },
        ),
        case(
            "info_a_folder",
            2,
            &["is not a PNG file", "Is a directory"],
            Untouched,
            |d| strings(&["info", &s(d)]),
        ),
        case(
            "info_forged_record_not_json",
            2,
            &["is not a steerdiff record"],
            Untouched,
            |d| {
                strings(&[
                    "info",
                    &write(&d.join("forged.png"), png_with_steerdiff_text("{not json")),
                ])
            },
        ),
        case(
            "info_forged_record_of_wrong_types",
            2,
            &["is not a steerdiff record", "invalid type"],
            Untouched,
            |d| {
                strings(&[
                    "info",
                    &write(
                        &d.join("forged.png"),
                        png_with_steerdiff_text("{\"steerdiff\": 1}"),
                    ),
                ])
            },
        ),
        case(
            "info_bad_crc",
            2,
            &["is not a PNG file", "CRC error"],
            Untouched,
            |d| {
                let mut png = png_with_steerdiff_text("{}");
                png[29] ^= 0xff; // the IHDR's CRC
                strings(&["info", &write(&d.join("crc.png"), png)])
            },
        ),
        // ---- 8. merge ----
        case(
            "merge_shards_of_other_seeds",
            2,
            &["other parameters than shard 0", "\"seed\""],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                let b = shard(d, "b1", 1, &["--seed", "5"]);
                merge(&[&a, &b], &out(d))
            },
        ),
        case(
            "merge_shards_of_other_steps",
            2,
            &["other parameters than shard 0", "\"steps\""],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                let b = shard(d, "b1", 1, &["--steps", "3"]);
                merge(&[&a, &b], &out(d))
            },
        ),
        case(
            "merge_the_same_shard_twice",
            2,
            &["shard indices [0, 0]"],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                merge(&[&a, &a], &out(d))
            },
        ),
        case(
            "merge_a_missing_shard_folder",
            2,
            &["cannot read the shard record", "No such file"],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                merge(&[&a, &s(&d.join("a1"))], &out(d))
            },
        ),
        case(
            "merge_a_whole_run",
            2,
            &["is not a shard: its parameters have no `shard`"],
            Untouched,
            |d| {
                let whole = s(&d.join("whole"));
                run_ok(&["generate", "--steps", "2", "-n", "2", "-o", &whole]);
                merge(&[&whole], &out(d))
            },
        ),
        case("merge_into_one_of_the_shards", 2, &["-o"], Untouched, |d| {
            let a = shard(d, "a0", 0, &[]);
            let b = shard(d, "a1", 1, &[]);
            merge(&[&a, &b], &a)
        }),
        case(
            "merge_a_shard_of_another_schema",
            2,
            &["\"schema\""],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                let b = shard(d, "a1", 1, &[]);
                edit_json(&d.join("a1/samples.json"), |v| {
                    v["parameters"]["schema"] = json!(1)
                });
                merge(&[&a, &b], &out(d))
            },
        ),
        case(
            "merge_shards_of_an_unknown_schema",
            2,
            &["schema"],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                let b = shard(d, "a1", 1, &[]);
                for name in ["a0", "a1"] {
                    edit_json(&d.join(name).join("samples.json"), |v| {
                        v["parameters"]["schema"] = json!(99)
                    });
                }
                merge(&[&a, &b], &out(d))
            },
        ),
        // ---- 9. outputs ----
        case(
            "output_is_a_regular_file",
            2,
            &["cannot create output directory", "File exists"],
            Untouched,
            |d| {
                write(&d.join("out"), "precious");
                gen(d, &[])
            },
        ),
        case(
            "output_under_a_regular_file",
            2,
            &["cannot create output directory", "Not a directory"],
            Untouched,
            |d| {
                write(&d.join("file"), "precious");
                let o = s(&d.join("file/sub"));
                strings(&["generate", "--steps", "2", "-n", "1", "-o", &o])
            },
        ),
        case(
            "output_grid_png_is_a_folder",
            2,
            &["grid.png", "directory"],
            Untouched,
            |d| {
                std::fs::create_dir_all(d.join("out/grid.png")).unwrap();
                write(&d.join("out/keep.txt"), "mine");
                gen(d, &[])
            },
        ),
        case(
            "trace_into_a_missing_folder",
            2,
            &["cannot write trace file", "No such file or directory"],
            Untouched,
            |d| gen(d, &["--trace", &s(&d.join("nowhere/trace.jsonl"))]),
        ),
        case(
            "trace_under_a_regular_file",
            2,
            &["cannot write trace file", "Not a directory"],
            Untouched,
            |d| {
                write(&d.join("file"), "precious");
                gen(d, &["--trace", &s(&d.join("file/trace.jsonl"))])
            },
        ),
        // ---- 10. init inputs on tiny-sd ----
        case(
            "init_latents_wrong_count",
            2,
            &["holds 100 numbers", "need 256"],
            Untouched,
            |d| {
                let f = write(&d.join("lat.json"), json!(vec![0.1; 100]).to_string());
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_nested_of_the_wrong_shape",
            2,
            &["--init-latents", "[4, 8, 8]"],
            Untouched,
            |d| {
                let f = write(&d.join("lat.json"), nested(&[1, 8, 4, 8]).to_string());
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_string_element",
            2,
            &["(\"x\") is not a finite number"],
            Untouched,
            |d| {
                let mut v = vec![json!(0.1); 256];
                v[255] = json!("x");
                let f = write(&d.join("lat.json"), Value::Array(v).to_string());
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_not_json",
            2,
            &["is not JSON"],
            Untouched,
            |d| {
                let f = write(&d.join("lat.json"), "[[[");
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_field_not_a_list",
            2,
            &["`initial_latents` is not a list"],
            Untouched,
            |d| {
                let f = write(&d.join("lat.json"), r#"{"initial_latents": "noise"}"#);
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_image_not_an_image",
            2,
            &["cannot read --init-image"],
            Untouched,
            |d| {
                let f = write(&d.join("init.png"), "this is text");
                sd_gen(d, &fixture_sd(), &["--init-image", &f])
            },
        ),
        case(
            "init_image_of_another_size",
            2,
            &["--init-image is 16×24", "--height/--width ask for 16×16"],
            Untouched,
            |d| {
                let f = image_file(&d.join("init.png"), 24, 16);
                sd_gen(
                    d,
                    &fixture_sd(),
                    &["--init-image", &f, "--width", "16", "--height", "16"],
                )
            },
        ),
        case(
            "init_image_empty_file",
            2,
            &["cannot read --init-image", "unexpected end of file"],
            Untouched,
            |d| {
                let f = write(&d.join("init.png"), b"");
                sd_gen(d, &fixture_sd(), &["--init-image", &f])
            },
        ),
    ]
}

// ---- the runner ------------------------------------------------------------------------------

/// A file tree's state: each path's kind and, for files, a hash of the bytes.
type Snapshot = BTreeMap<PathBuf, String>;

fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = if meta.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&path).ok())
            } else if meta.is_dir() {
                walk(root, &path, out);
                "dir".to_string()
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path).unwrap_or_default().hash(&mut h);
                format!("file {} {:x}", meta.len(), h.finish())
            };
            out.insert(rel, kind);
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

/// The `-o` argument of `argv`.
fn output_of(argv: &[String]) -> Option<PathBuf> {
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == "-o" || a == "--output" {
            argv.get(i + 1).map(PathBuf::from)
        } else {
            a.strip_prefix("--output=").map(PathBuf::from)
        }
    })
}

/// What is wrong with the files after a run (empty when nothing).
fn check_folder(expect: Expect, tmp: &Path, before: &Snapshot, o: Option<&Path>) -> Vec<String> {
    let mut after = snapshot(tmp);
    let rel_out = o.and_then(|o| o.strip_prefix(tmp).ok().map(Path::to_path_buf));
    let mut problems = vec![];
    if expect == Complete {
        let Some(o) = o else {
            return vec!["no -o in the command".into()];
        };
        let record: Option<Value> = std::fs::read_to_string(o.join("samples.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let Some(record) = record else {
            return vec![format!("no readable {}/samples.json", o.display())];
        };
        let images: Vec<String> = record["samples"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["image"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for img in &images {
            if !o.join(img).is_file() {
                problems.push(format!("samples.json names {img}, which is missing"));
            }
        }
        for e in std::fs::read_dir(o).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let expected = matches!(
                name.as_str(),
                "samples.json" | "timing.json" | "grid.png" | "top.png" | "scatter.png"
            ) || images.contains(&name)
                || before.contains_key(&rel_out.clone().unwrap_or_default().join(&name));
            if !expected {
                problems.push(format!("unexpected `{name}` in the output folder"));
            }
        }
        // Outside -o nothing changes.
        if let Some(r) = &rel_out {
            after.retain(|p, _| !p.starts_with(r) || p == r);
        }
        let mut before = before.clone();
        if let Some(r) = &rel_out {
            before.retain(|p, _| !p.starts_with(r) || p == r);
            before.entry(r.clone()).or_insert_with(|| "dir".into());
        }
        if before != after {
            problems.push(format!(
                "files outside -o changed: {}",
                diff(&before, &after)
            ));
        }
        return problems;
    }
    // Untouched: as before, but the -o folder may now exist, empty.
    if let Some(r) = &rel_out {
        if !before.contains_key(r) && after.get(r).map(String::as_str) == Some("dir") {
            let empty = !after.keys().any(|p| p != r && p.starts_with(r));
            if empty {
                after.remove(r);
            }
        }
    }
    if &after != before {
        problems.push(format!("files changed: {}", diff(before, &after)));
    }
    problems
}

fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut v = vec![];
    for (p, k) in after {
        match before.get(p) {
            None => v.push(format!("+{}", p.display())),
            Some(b) if b != k => v.push(format!("~{}", p.display())),
            _ => {}
        }
    }
    for p in before.keys().filter(|p| !after.contains_key(*p)) {
        v.push(format!("-{}", p.display()));
    }
    v.truncate(12);
    v.join(" ")
}

/// Processes other than this one whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(marker)
                .then(|| format!("{} {cmd}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Longest run of one case.
const DEADLINE: Duration = Duration::from_secs(90);
/// Address space of a run (a huge allocation aborts instead of exhausting the machine).
const ADDRESS_SPACE: u64 = 6 << 30;
/// Most stderr a refused input may print.
const MAX_STDERR: usize = 4096;

/// Runs one case; returns its problems (empty when it passed).
fn run_case(c: &Case) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let d = tmp.path().canonicalize().unwrap();
    let argv = match std::panic::catch_unwind(|| (c.setup)(&d)) {
        Ok(a) => a,
        Err(e) => {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return vec![format!("its setup panicked: {why}")];
        }
    };
    let before = snapshot(&d);
    let (err_path, out_path) = (logs.path().join("stderr"), logs.path().join("stdout"));
    let mut cmd = Command::new(BIN);
    cmd.args(&argv)
        .current_dir(&d)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut interrupted = false;
    let mut problems = vec![];
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if let Some(ms) = c.interrupt_ms {
            if !interrupted && start.elapsed() >= Duration::from_millis(ms) {
                // SAFETY: a plain kill(2) of our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                interrupted = true;
            }
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status.map(|s| (s.code(), s)) {
        None => problems.push(format!("still running after {DEADLINE:?}; killed")),
        Some((None, s)) => problems.push(format!("killed by a signal ({s})")),
        Some((Some(code), _)) if code != c.code => {
            problems.push(format!("exit code {code}, expected {}", c.code))
        }
        _ => {}
    }
    for bad in ["panicked", "internal error", "stack backtrace"] {
        if err.contains(bad) {
            problems.push(format!("stderr says `{bad}`"));
        }
    }
    for n in c.needles {
        if !n.split("||").any(|alt| err.contains(alt)) {
            problems.push(format!("stderr lacks `{n}`"));
        }
    }
    if c.code != 0 && err.len() > MAX_STDERR {
        problems.push(format!("{} bytes of stderr", err.len()));
    }
    problems.extend(check_folder(
        c.folder,
        &d,
        &before,
        output_of(&argv).as_deref(),
    ));
    // Plugins die with the run (give the kernel a moment to reap them).
    let marker = d.display().to_string();
    let mut left = processes_mentioning(&marker);
    let t = Instant::now();
    while !left.is_empty() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_mentioning(&marker);
    }
    if !left.is_empty() {
        problems.push(format!("processes left behind: {left:?}"));
        for p in &left {
            if let Some(pid) = p.split(' ').next().and_then(|p| p.parse().ok()) {
                // SAFETY: a plain kill(2) of a leftover of this case.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    if !problems.is_empty() {
        let code = status.and_then(|s| s.code());
        let shown: String = err.chars().take(1500).collect();
        problems.push(format!("exit {code:?}; stderr:\n{shown}"));
    }
    problems
}

#[test]
fn hostile_catalogue() {
    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "two cases are named {}", c.name);
    }
    let only = std::env::var("HOSTILE_CASE").ok();
    let mut failures = vec![];
    let mut ran = 0;
    for c in &cases {
        if only.as_deref().is_some_and(|o| !c.name.contains(o)) {
            continue;
        }
        ran += 1;
        let problems = run_case(c);
        if !problems.is_empty() {
            failures.push(format!("--- {}: {}", c.name, problems.join("\n    ")));
        }
    }
    println!(
        "hostile catalogue: {ran} cases run, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} hostile cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
