//! Hostile inputs against the real binary: each case asserts the exit code, a message that
//! names the problem, no panic or abort, and the output folder's state afterwards.
//!
//! The cases are grouped by what they attack: files planted in the output folder, special
//! files as targets, plugin URLs and answers, crafted PNGs, and sizes that would exhaust
//! memory.

mod common;

use common::steerdiff;

use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::png_chunk;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run failed as an input error: exit 2, one message containing every `needle`, no
/// panic.
fn refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

/// Every entry of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

const SMALL: [&str; 4] = ["--steps", "2", "-n", "1"];

// ---- files planted in the output folder --------------------------------------------------

/// Symlinks at every name the old writer could pick (`.steerdiff-probe-PID`,
/// `.samples.json.tmp-PID`, …, for the next hundred PIDs) are neither followed nor
/// overwritten: the victim they point at keeps its bytes and samples.json is a new file.
#[test]
fn planted_symlinks_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000);
    for pid in last..last + 100 {
        for name in [
            format!(".steerdiff-probe-{pid}"),
            format!(".samples.json.tmp-{pid}"),
            format!(".samples.json.old-{pid}"),
            format!(".sample-0000.png.tmp-{pid}"),
        ] {
            std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
        }
    }
    let o = steerdiff(&[&["generate", "-o", out.to_str().unwrap()][..], &SMALL].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let meta = std::fs::symlink_metadata(out.join("samples.json")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "samples.json must be a regular file"
    );
}

/// A symlink in place of an output is replaced by the new file, never written through.
#[test]
fn an_output_that_is_a_symlink_is_replaced_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("samples.json")).unwrap();
    let o = steerdiff(&[&["generate", "-o", out.to_str().unwrap()][..], &SMALL].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(out.join("samples.json"))
        .unwrap()
        .file_type()
        .is_file());
}

// ---- special files as targets ------------------------------------------------------------

/// `--trace /dev/null` writes into the device, which stays a device; `--trace /dev/stdout`
/// streams the trace to standard output.
#[test]
fn device_targets_are_written_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = steerdiff(
        &[
            &[
                "generate",
                "--trace",
                "/dev/null",
                "-o",
                out.to_str().unwrap(),
            ][..],
            &SMALL,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(meta.file_type().is_char_device(), "/dev/null was replaced");
    let out2 = tmp.path().join("out2");
    let o = steerdiff(
        &[
            &[
                "generate",
                "--trace",
                "/dev/stdout",
                "-o",
                out2.to_str().unwrap(),
            ][..],
            &SMALL,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one trace line per step: {text}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v.get("step").is_some(), "{l}");
    }
    assert!(
        !listing(&out2).iter().any(|n| n.contains("trace")),
        "{:?}",
        listing(&out2)
    );
}

/// `--trace` naming a folder is refused before the run.
#[test]
fn a_trace_that_is_a_folder_is_refused_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = steerdiff(
        &[
            &["generate", "--trace", tmp.path().to_str().unwrap()][..],
            &["-o", out.to_str().unwrap()],
            &SMALL,
        ]
        .concat(),
    );
    refused(&o, &["--trace", "is a folder"]);
    assert!(
        listing(&out).iter().all(|n| n.starts_with('.')),
        "{:?}",
        listing(&out)
    );
}

// ---- plugin URLs and answers -------------------------------------------------------------

/// URLs whose host another parser would read differently are not loopback.
#[test]
fn plugin_urls_that_hide_a_remote_host_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for url in [
        "http://0.0.0.0:8765?@127.0.0.1",
        "http://example.com?@127.0.0.1",
        "http://example.com#@127.0.0.1",
        "http://127.0.0.1@example.com",
    ] {
        let out = tmp.path().join("out");
        let o = steerdiff(
            &[
                &["generate", "--guidance", "fk", "--reward", url][..],
                &["-o", out.to_str().unwrap()],
                &SMALL,
            ]
            .concat(),
        );
        refused(&o, &["not on this machine"]);
        assert!(!out.join("samples.json").exists(), "{url}");
    }
}

/// A plugin whose describe answer announces a petabyte payload is refused at once, with
/// the limit named, instead of allocating it.
#[test]
fn a_plugin_announcing_a_huge_payload_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("huge.py");
    std::fs::write(
        &plugin,
        "import sys\nsys.stdin.readline()\n\
         sys.stdout.write('{\"payload_bytes\": 1000000000000000}\\n')\nsys.stdout.flush()\n",
    )
    .unwrap();
    let reward = format!("stdio:python3 {}", plugin.display());
    let out = tmp.path().join("out");
    let o = steerdiff(
        &[
            &["generate", "--guidance", "fk", "--reward", &reward][..],
            &["-o", out.to_str().unwrap()],
            &SMALL,
        ]
        .concat(),
    );
    refused(&o, &["payload bytes"]);
    assert!(!out.join("samples.json").exists());

    // The cap is the user's to set: a 2 MiB payload passes the default 64 MiB (and is then
    // refused as no description) but not `--plugin-max-answer-mib 1`.
    std::fs::write(
        &plugin,
        "import sys\nsys.stdin.readline()\n\
         sys.stdout.write('{\"payload_bytes\": 2097152}\\n')\n\
         sys.stdout.write('0' * 2097152)\nsys.stdout.flush()\n",
    )
    .unwrap();
    let run = |cap: &[&str]| {
        steerdiff(
            &[
                &["generate", "--guidance", "fk", "--reward", &reward][..],
                &["-o", out.to_str().unwrap()],
                cap,
                &SMALL,
            ]
            .concat(),
        )
    };
    let o = run(&[]);
    refused(&o, &["not a valid description"]);
    let o = run(&["--plugin-max-answer-mib", "1"]);
    refused(
        &o,
        &[
            "2097152 payload bytes",
            "at most 1048576",
            "--plugin-max-answer-mib",
        ],
    );
    assert!(!out.join("samples.json").exists());
}

// ---- crafted PNGs ------------------------------------------------------------------------

/// A PNG whose header says `w`×`h` RGB, with a tiny (invalid) image stream.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

#[test]
fn a_png_claiming_a_huge_size_is_refused_without_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("huge.png");
    std::fs::write(&path, png_claiming(100_000, 100_000)).unwrap();
    let o = steerdiff(&["info", path.to_str().unwrap()]);
    refused(&o, &["100000×100000"]);
}

/// A PNG with `text` under the `steerdiff` keyword, compressed when `compress`.
fn png_with_record(path: &Path, text: &str, compress: bool) {
    let mut info = png::Info::with_size(1, 1);
    info.color_type = png::ColorType::Rgb;
    info.bit_depth = png::BitDepth::Eight;
    let mut c = png::text_metadata::ITXtChunk::new("steerdiff", text);
    c.compressed = compress;
    info.utf8_text.push(c);
    let w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let enc = png::Encoder::with_info(w, info).unwrap();
    enc.write_header()
        .unwrap()
        .write_image_data(&[0, 0, 0])
        .unwrap();
}

/// A text chunk that inflates to 64 MiB is not inflated past the cap.
#[test]
fn a_compressed_text_bomb_is_not_inflated() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bomb.png");
    png_with_record(&path, &" ".repeat(64 << 20), true);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 1 << 20, "{size} bytes");
    let o = steerdiff(&["info", path.to_str().unwrap()]);
    refused(&o, &["no generation record"]);
}

/// Terminal escapes in a forged record are shown escaped, never sent to the terminal.
#[test]
fn info_does_not_print_terminal_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("forged.png");
    let record = serde_json::json!({
        "steerdiff": "0.1.0\u{1b}]0;pwned\u{7}",
        "argv": ["generate", "--class=\u{1b}[2J"],
        "file": "sample-0000.png",
        "particle": 0,
        "reward": null,
        "log_weight": null,
        "parameters": {"note": "\u{1b}[31mred"},
    });
    png_with_record(&path, &record.to_string(), false);
    let o = steerdiff(&["info", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !o.stdout.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!o.stdout.contains(&0x07));
}

/// Not a PNG at all, or a PNG of no tool: clear errors, exit 2.
#[test]
fn files_that_are_not_steerdiff_pngs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("a.png");
    std::fs::write(&text, "hello").unwrap();
    refused(
        &steerdiff(&["info", text.to_str().unwrap()]),
        &["not a PNG"],
    );
    let plain: PathBuf = tmp.path().join("plain.png");
    image::RgbImage::new(2, 2).save(&plain).unwrap();
    refused(
        &steerdiff(&["info", plain.to_str().unwrap()]),
        &["no generation record"],
    );
}

// ---- sizes and counts that would exhaust memory or never finish --------------------------

/// Each is refused at once, naming the limit, with nothing written.
#[test]
fn sizes_and_counts_past_the_limits_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let gmm = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gmm/three-classes-1d.json");
    let gmm = format!("gmm:{}", gmm.display());
    let sd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd/pipeline");
    let sd = sd.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--steps", "100000000"], &["at most 10000"]),
        (vec!["--time-travel", "100000000"], &["at most 100"]),
        (
            vec!["-n", "1000000000"],
            &["--shard", "values one batch may hold"],
        ),
        (
            vec![
                "--guidance",
                "fk",
                "--reward",
                "classifier",
                "--particles",
                "100000000",
            ],
            &["values one batch may hold"],
        ),
        (
            vec![
                "--guidance",
                "random-search",
                "--reward",
                "classifier",
                "--rounds",
                "40",
            ],
            &["at most 20 rounds"],
        ),
        (
            vec!["--model", &gmm, "-n", "18446744073709551615"],
            &["values one batch may hold"],
        ),
        (
            vec![
                "--model", sd, "-p", "x", "--width", "65536", "--height", "65536",
            ],
            &["65536×65536", "--width"],
        ),
    ];
    for (args, needles) in cases {
        let o = steerdiff(&[&["generate", "-o", o][..], &args].concat());
        refused(&o, needles);
        assert!(!out.join("samples.json").exists(), "{args:?}");
    }
}

/// A GMM spec that is a device or a FIFO is refused instead of read forever.
#[test]
fn special_files_as_specs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for spec in [
        "gmm:/dev/zero".to_string(),
        format!("gmm:{}", fifo.display()),
    ] {
        let out = tmp.path().join("out");
        let o = steerdiff(&["generate", "--model", &spec, "-o", out.to_str().unwrap()]);
        refused(&o, &["not a regular file"]);
    }
}

// ---- silent wrong results ----------------------------------------------------------------

/// A mixture whose numbers overflow gives non-finite samples: the run stops and says so.
#[test]
fn non_finite_samples_stop_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("big.json");
    std::fs::write(
        &spec,
        r#"{"dim": 1, "components": [{"weight": 1, "mean": [1e300], "std": 1e300}]}"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = steerdiff(&[
        "generate",
        "--model",
        &format!("gmm:{}", spec.display()),
        "-n",
        "3",
        "--steps",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    refused(&o, &["non-finite", "3 of 3", "at step 1 of 3"]);
    assert!(!out.join("samples.json").exists());
}

/// A UNet whose every weight is NaN stops the run at its first step, naming the step and the
/// model, instead of writing `null` samples.
#[test]
fn nan_weights_stop_the_run_at_the_first_step() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("sd");
    common::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd/pipeline"),
        &sd,
    );
    let file = sd.join("unet/diffusion_pytorch_model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Every tensor of the fixture is F32: overwrite the data with quiet NaNs.
    for word in bytes[header..].chunks_exact_mut(4) {
        word.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&file, bytes).unwrap();
    let out = tmp.path().join("out");
    let o = steerdiff(&[
        "generate",
        "--model",
        sd.to_str().unwrap(),
        "-p",
        "a cat",
        "--steps",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    refused(&o, &["at step 1 of 3", "non-finite", "model `"]);
    assert!(
        !out.exists() || listing(&out).is_empty(),
        "{:?}",
        listing(&out)
    );
}

// ---- messages and exit codes -------------------------------------------------------------

#[test]
fn bad_values_get_our_message_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let missing = tmp.path().join("missing");
    let m = missing.to_str().unwrap();
    let fk = ["--guidance", "fk", "--reward", "classifier"];
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            [&fk[..], &["--plugin-timeout", "-1"]].concat(),
            &["--plugin-timeout"],
        ),
        (
            [&fk[..], &["--ess-threshold", "-1"]].concat(),
            &["ESS threshold"],
        ),
        (
            vec![
                "--guidance",
                "code",
                "--reward",
                "classifier",
                "--tau",
                "-1",
            ],
            &["--tau"],
        ),
        (
            vec![
                "--guidance",
                "dsearch",
                "--reward",
                "classifier",
                "--beams",
                "5",
                "--particles",
                "2",
            ],
            &["--beams 5", "--particles 2"],
        ),
        (vec!["--config", m], &["cannot read the config file"]),
        (
            vec!["--model", "./nope", "-p", "a cat"],
            &["no such file or folder `./nope`"],
        ),
        (
            vec!["--model", "gmm:./nope.json"],
            &["no such file or folder"],
        ),
        (
            vec!["--model", "/nope/x.safetensors", "-p", "x"],
            &["no such file or folder"],
        ),
        (vec!["--prompt-file", m], &["cannot read the prompt file"]),
    ];
    for (args, needles) in cases {
        let r = steerdiff(&[&["generate", "--steps", "2", "-o", o][..], &args].concat());
        refused(&r, needles);
    }
    refused(
        &steerdiff(&[
            "eval", "--model", "toy", "--class", "star", "--budget", "0", "-n", "2",
        ]),
        &["--budget"],
    );
    refused(&steerdiff(&["info", m]), &["cannot open"]);
    refused(
        &steerdiff(&[
            "merge",
            m,
            "-o",
            tmp.path().join("merged").to_str().unwrap(),
        ]),
        &["cannot read the shard record"],
    );
    let bad = tmp.path().join("bad-shard");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("samples.json"), "{not json").unwrap();
    refused(
        &steerdiff(&[
            "merge",
            bad.to_str().unwrap(),
            "-o",
            tmp.path().join("m2").to_str().unwrap(),
        ]),
        &["not a shard record"],
    );
}

/// A prompt file with a bad third line runs none of its lines.
#[test]
fn a_bad_prompt_file_line_runs_no_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("runs.jsonl");
    std::fs::write(
        &file,
        "{\"class\": \"star\"}\n{\"class\": \"ring\"}\n{\"no-such-flag\": 1}\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = steerdiff(&[
        "generate",
        "--steps",
        "2",
        "--prompt-file",
        file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    refused(&o, &["line 3"]);
    assert!(!out.join("line-0000").exists() && !out.join("line-0001").exists());
    // A 10 MB line is refused by its length, not echoed.
    std::fs::write(&file, format!("{}\n", "a".repeat(10 << 20))).unwrap();
    let o = steerdiff(&[
        "generate",
        "--prompt-file",
        file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    refused(&o, &["at most 65536"]);
    assert!(o.stderr.len() < 4096, "{} bytes of message", o.stderr.len());
}

/// `--trace` naming one of the run's own outputs is refused before the run.
#[test]
fn a_trace_over_an_output_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for name in ["samples.json", "grid.png", "sample-0000.png"] {
        let trace = out.join(name);
        let o = steerdiff(
            &[
                &["generate", "--trace", trace.to_str().unwrap()][..],
                &["-o", out.to_str().unwrap()],
                &SMALL,
            ]
            .concat(),
        );
        refused(&o, &["one of the run's own outputs"]);
        assert!(!out.join("samples.json").exists());
    }
}

// ---- processes -----------------------------------------------------------------------------

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes; /proc/PID/stat's third field says which.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            state != Some("Z")
        })
        .unwrap_or(false)
}

/// A stdio plugin that answers `describe`, then on its first score request starts `sleep 300`,
/// writes "its pid and the sleep's pid" to `pids` and sleeps itself.
fn busy_plugin(dir: &Path, pids: &Path) -> PathBuf {
    let plugin = dir.join("busy.py");
    std::fs::write(
        &plugin,
        format!(
            r#"import json, os, subprocess, sys, time
sys.stdin.buffer.readline()
print(json.dumps({{"protocol": "steerdiff-reward/1", "name": "busy", "version": "1",
      "inputs": ["pixels"], "mode": "pointwise", "batch_size": 16, "range": None,
      "direction": "maximize", "deterministic": True, "encodings": ["f32"]}}), flush=True)
sys.stdin.buffer.readline()
child = subprocess.Popen(["sleep", "300"])
open({pids:?}, "w").write(f"{{os.getpid()}} {{child.pid}}\n")
time.sleep(300)
"#,
            pids = pids.display().to_string()
        ),
    )
    .unwrap();
    plugin
}

/// A plugin that times out is killed with its whole process group: what it started goes
/// too, not only the plugin itself.
#[test]
fn a_plugin_timeout_kills_what_the_plugin_started() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let plugin = busy_plugin(tmp.path(), &pids);
    let out = tmp.path().join("out");
    let reward = format!("stdio:python3 {}", plugin.display());
    let o = steerdiff(&[
        "generate",
        "--guidance",
        "fk",
        "--reward",
        &reward,
        "--steps",
        "2",
        "--plugin-timeout",
        "2",
        "--plugin-retries",
        "0",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no answer within 2.0 s"),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&pids).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    for p in text.split_whitespace().map(|p| p.parse::<u32>().unwrap()) {
        assert!(
            !alive(p),
            "process {p} of the plugin's group is still running"
        );
    }
    assert!(!out.join("samples.json").exists());
}

/// SIGTERM to steerdiff alone, while a stdio plugin (and a process it started) is busy:
/// both are killed with their process group, the run exits 130 and the output folder is
/// left as it was.
#[test]
fn a_stop_signal_kills_busy_plugins_and_leaves_the_folder_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let plugin = busy_plugin(tmp.path(), &pids);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let reward = format!("stdio:python3 {}", plugin.display());
    // The trace is written into the folder too: its temporary must go with the run.
    let trace = out.join("trace.jsonl");
    let mut run = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args([
            "generate",
            "--guidance",
            "fk",
            "--reward",
            &reward,
            "--steps",
            "4",
        ])
        .arg("-o")
        .arg(&out)
        .arg("--trace")
        .arg(&trace)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&pids) {
            if t.ends_with('\n') {
                break t;
            }
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "the plugin never got a score request"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let ids: Vec<u32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(ids.iter().all(|&p| alive(p)));
    assert!(Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "steerdiff did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read as _;
    run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    for p in ids {
        assert!(
            !alive(p),
            "process {p} of the plugin's group is still running"
        );
    }
    assert_eq!(listing(&out), ["keep.txt"], "{err}");
}

// ---- merge -------------------------------------------------------------------------------

/// A shard with a sample removed, or whose record names an image outside its folder, is not
/// merged.
#[test]
fn merge_refuses_incomplete_or_forged_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = |i: usize| tmp.path().join(format!("s{i}"));
    for i in 0..2 {
        let o = steerdiff(&[
            "generate",
            "--steps",
            "2",
            "-n",
            "4",
            "--shard",
            &format!("{i}/2"),
            "-o",
            shard(i).to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let record = shard(1).join("samples.json");
    let original = std::fs::read_to_string(&record).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
    v["samples"].as_array_mut().unwrap().pop();
    std::fs::write(&record, v.to_string()).unwrap();
    let merged = tmp.path().join("merged");
    let args = |m: &Path| {
        vec![
            "merge".to_string(),
            shard(0).display().to_string(),
            shard(1).display().to_string(),
            "-o".to_string(),
            m.display().to_string(),
        ]
    };
    let run = |a: Vec<String>| steerdiff(&a.iter().map(String::as_str).collect::<Vec<_>>());
    refused(&run(args(&merged)), &["not a whole shard"]);
    assert!(!merged.exists() || listing(&merged).is_empty());
    let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
    v["samples"][0]["image"] = "../../escape.png".into();
    std::fs::write(&record, v.to_string()).unwrap();
    refused(&run(args(&merged)), &["names the image `../../escape.png`"]);
}

/// Two runs into one folder at once: the second is refused while the first holds the
/// folder's lock.
#[test]
fn a_second_run_into_a_busy_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Held as a running steerdiff holds it: flock(2) on the folder, from another process.
    // -o: flock itself holds the lock (its `sleep` does not), so killing it releases it.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&out)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = steerdiff(&[&["generate", "-o", out.to_str().unwrap()][..], &SMALL].concat());
    refused(&o, &["another steerdiff run is writing into"]);
    assert!(listing(&out).is_empty(), "{:?}", listing(&out));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let o = steerdiff(&[&["generate", "-o", out.to_str().unwrap()][..], &SMALL].concat());
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The classifier reward of an image does not depend on the batch it was scored in: 16
/// one-group shards of an FK run steered by it, merged, equal the whole run to the last digit
/// of every reward and byte for byte in every PNG (each PNG records its reward).
#[test]
fn classifier_rewards_do_not_depend_on_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, shard: Option<usize>| {
        let out = tmp.path().join(name);
        let shard = shard.map(|i| format!("{i}/16"));
        let mut args = vec![
            "generate",
            "--class",
            "star",
            "--guidance",
            "fk",
            "--reward",
            "classifier",
            "--steps",
            "4",
            "-n",
            "16",
            "-o",
            out.to_str().unwrap(),
        ];
        if let Some(s) = &shard {
            args.extend(["--shard", s.as_str()]);
        }
        let o = steerdiff(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let whole = run("whole", None);
    let shards: Vec<String> = (0..16)
        .map(|i| run(&format!("s{i:02}"), Some(i)).display().to_string())
        .collect();
    let merged = tmp.path().join("merged");
    let mut args: Vec<&str> = vec!["merge"];
    args.extend(shards.iter().map(String::as_str));
    args.extend(["-o", merged.to_str().unwrap()]);
    let o = steerdiff(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("samples.json")).unwrap()).unwrap()
    };
    assert_eq!(read(&whole)["samples"], read(&merged)["samples"]);
    for g in 0..16 {
        let name = format!("sample-{g:04}.png");
        assert!(
            std::fs::read(whole.join(&name)).unwrap() == std::fs::read(merged.join(&name)).unwrap(),
            "{name}"
        );
    }
}

/// A run whose stderr is not a terminal (a log, a pipe) still says it is alive: plain
/// progress lines at the interval `STEERDIFF_PROGRESS_SECONDS` sets (0: every step).
#[test]
fn progress_lines_reach_a_stderr_that_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(["generate", "--steps", "5", "-n", "1", "-o"])
        .arg(&out)
        .env("STEERDIFF_PROGRESS_SECONDS", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("steerdiff: step "))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[4].starts_with("steerdiff: step 5/5,"), "{lines:?}");
    // The default interval (10 s) prints nothing in a run this short.
    let o = steerdiff(&[&["generate", "-o", out.to_str().unwrap()][..], &SMALL].concat());
    assert!(!stderr(&o).contains("steerdiff: step "), "{}", stderr(&o));
}

/// A valid 4096² `--init-image` on tiny-sd (whose first UNet block attends at latent
/// resolution: some 10¹⁴ attention scores) is refused when the size is set, with the numbers
/// and the way past the limit, instead of allocating until the process is killed.
#[test]
fn an_init_image_whose_attention_cannot_fit_is_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("big.png");
    image::RgbImage::new(4096, 4096).save(&img).unwrap();
    let out = tmp.path().join("out");
    let sd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd/pipeline");
    let o = steerdiff(&[
        "generate",
        "--model",
        sd.to_str().unwrap(),
        "-p",
        "a cat",
        "--init-image",
        img.to_str().unwrap(),
        "--steps",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    refused(
        &o,
        &[
            "4096×4096",
            "attention scores",
            "STEERDIFF_MAX_ATTENTION_SCORES",
        ],
    );
    assert!(!out.exists() || listing(&out).is_empty());
}
