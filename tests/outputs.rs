//! Outputs users can trust: shards merge into the whole run, every PNG carries a record that
//! `steerdiff info` reads back and that reproduces the image byte for byte, and `--config`
//! equals the flags.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn steerdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steerdiff"))
        .args(args)
        .output()
        .expect("run steerdiff")
}

fn ok(args: &[&str]) -> Output {
    let o = steerdiff(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pngs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("sample-")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_str().unwrap().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

const RUN: [&str; 11] = [
    "generate", "--class", "star", "--steps", "6", "-n", "5", "--seed", "11", "--cfg", "2",
];

#[test]
fn shards_merge_into_the_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    ok(&[&RUN[..], &["-o", &d("whole")]].concat());
    ok(&[&RUN[..], &["--shard", "1/2", "-o", &d("s1")]].concat());
    ok(&[&RUN[..], &["--shard", "0/2", "-o", &d("s0")]].concat());
    let s1 = json(&tmp.path().join("s1/samples.json"));
    assert_eq!(
        s1["parameters"]["shard"]["groups"],
        serde_json::json!([2, 5])
    );
    // Merging needs every shard.
    let o = steerdiff(&["merge", &d("s1"), "-o", &d("bad")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("do not make one run"));
    ok(&["merge", &d("s1"), &d("s0"), "-o", &d("merged")]);
    let whole = json(&tmp.path().join("whole/samples.json"));
    let merged = json(&tmp.path().join("merged/samples.json"));
    assert_eq!(whole["samples"], merged["samples"]);
    assert_eq!(whole["parameters"], merged["parameters"]);
    for counter in ["model_rows", "reward_items", "reward_cached", "decodes"] {
        assert_eq!(
            whole["ledger"][counter], merged["ledger"][counter],
            "{counter}"
        );
    }
    let a = pngs(&tmp.path().join("whole"));
    assert_eq!(a.len(), 5);
    assert_eq!(a, pngs(&tmp.path().join("merged")), "sample PNGs differ");
}

#[test]
fn info_reads_the_record_and_it_reproduces_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(&[
        &RUN[..],
        &[
            "--guidance",
            "fk",
            "--particles",
            "2",
            "--reward",
            "brightness",
            "-o",
            out.to_str().unwrap(),
        ],
    ]
    .concat());
    let image = out.join("sample-0003-1.png");
    let o = ok(&["info", "--json", image.to_str().unwrap()]);
    let record: Value = serde_json::from_slice(&o.stdout).unwrap();
    // Every parameter of the run, for the one-image run with this image's seed.
    let mut expect = json(&out.join("samples.json"))["parameters"].clone();
    expect["n"] = 1.into();
    expect["seed"] = 14.into();
    assert_eq!(record["parameters"], expect);
    assert_eq!(record["file"], "sample-0000-1.png");
    let mut argv: Vec<String> = serde_json::from_value(record["argv"].clone()).unwrap();
    let again = tmp.path().join("again");
    argv.extend(["-o".into(), again.to_str().unwrap().into()]);
    ok(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read(&image).unwrap(),
        std::fs::read(again.join("sample-0000-1.png")).unwrap(),
        "the re-run does not reproduce the image byte for byte"
    );
    let text = String::from_utf8(ok(&["info", image.to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains("steerdiff generate --class=star"), "{text}");
    let o = steerdiff(&["info", out.join("samples.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a PNG"));
}

#[test]
fn a_config_file_equals_its_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        "class = \"star\"\nsteps = 6\nnum = 5\nseed = 11\ncfg = 2\n# the command line wins:\noutput = \"ignored\"\n",
    )
    .unwrap();
    let a = tmp.path().join("flags");
    let b = tmp.path().join("config");
    ok(&[&RUN[..], &["-o", a.to_str().unwrap()]].concat());
    ok(&[
        "generate",
        "--config",
        cfg.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(a.join("samples.json")).unwrap(),
        std::fs::read(b.join("samples.json")).unwrap()
    );
    assert_eq!(pngs(&a), pngs(&b));
}

#[test]
fn a_prompt_file_runs_each_line_with_its_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("lines.jsonl");
    std::fs::write(
        &file,
        "{\"class\": \"star\", \"cfg\": 2}\n# skipped\n{\"class\": \"heart\", \"seed\": 40}\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    ok(&[
        "generate",
        "--prompt-file",
        file.to_str().unwrap(),
        "--steps",
        "4",
        "-n",
        "2",
        "--seed",
        "7",
        "-o",
        out.to_str().unwrap(),
    ]);
    let a = json(&out.join("line-0000/samples.json"))["parameters"].clone();
    let b = json(&out.join("line-0001/samples.json"))["parameters"].clone();
    assert_eq!(
        (
            a["class_name"].as_str(),
            a["cfg"].as_f64(),
            a["seed"].as_u64()
        ),
        (Some("star"), Some(2.0), Some(7))
    );
    assert_eq!(
        (
            b["class_name"].as_str(),
            b["cfg"].as_f64(),
            b["seed"].as_u64()
        ),
        (Some("heart"), Some(1.0), Some(40))
    );
    assert_eq!((a["steps"].as_u64(), b["n"].as_u64()), (Some(4), Some(2)));
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"class\": \"star\"}\nnot json\n").unwrap();
    let o = steerdiff(&[
        "generate",
        "--prompt-file",
        bad.to_str().unwrap(),
        "-o",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 2: not a JSON object"));
    assert!(
        !tmp.path().join("x/line-0000").exists(),
        "a bad file must be refused before any run"
    );
}

/// Every file of a folder, by name.
fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_failure_after_the_first_png_leaves_the_folder_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    ok(&[
        "generate", "--class", "star", "--steps", "3", "-n", "2", "-o", o,
    ]);
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let before = listing(&out);
    // The third image's name is taken by a directory: its rename fails after the first two
    // PNGs (which replace the earlier run's) were moved into place.
    std::fs::create_dir(out.join("sample-0002.png")).unwrap();
    let e = steerdiff(&[
        "generate", "--class", "ring", "--steps", "3", "-n", "4", "-o", o,
    ]);
    assert!(!e.status.success());
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        err.contains("sample-0002.png") && err.contains("directory"),
        "{err}"
    );
    assert_eq!(
        listing(&out),
        before,
        "the earlier run and notes.txt, unchanged"
    );
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporaries or backups left: {hidden:?}");
}

#[test]
fn a_rerun_with_fewer_images_replaces_the_earlier_run_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    ok(&[
        "generate",
        "--class",
        "star",
        "--steps",
        "3",
        "-n",
        "4",
        "--guidance",
        "bon",
        "--particles",
        "2",
        "--reward",
        "classifier",
        "-o",
        o,
    ]);
    assert!(out.join("top.png").is_file());
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    ok(&[
        "generate", "--class", "star", "--steps", "3", "-n", "1", "-o", o,
    ]);
    let names: Vec<String> = listing(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "grid.png",
            "notes.txt",
            "sample-0000.png",
            "samples.json",
            "timing.json"
        ],
        "no stale images, top.png or grid from the earlier run; the user's file kept"
    );
    let record = json(&out.join("samples.json"));
    assert_eq!(record["samples"].as_array().unwrap().len(), 1);
}
