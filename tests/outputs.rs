//! Outputs users can trust: shards merge into the whole run, every PNG carries a record that
//! `steerdiff info` reads back and that reproduces the image byte for byte, and `--config`
//! equals the flags.

mod common;

use common::steerdiff;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

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
            "--keep",
            "all",
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
        // CFG off unless a line sets it (class runs of the toy default to its CFG 3).
        "--cfg",
        "1",
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

/// FK writes the best particle of each group by default (what the FK reference returns),
/// its whole population with `--keep all`; both are recorded, and the kept particle is the
/// one with the highest final reward.
#[test]
fn fk_writes_each_groups_best_particle_unless_asked_for_all() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| -> Value {
        let out = tmp.path().join(name);
        let args = [
            &["generate", "--class", "star", "--steps", "4", "-n", "8"][..],
            &[
                "--guidance",
                "fk",
                "--particles",
                "4",
                "--reward",
                "brightness",
            ],
            &["-o", out.to_str().unwrap()],
            extra,
        ]
        .concat();
        ok(&args);
        json(&out.join("samples.json"))
    };
    let best = run("best", &[]);
    let all = run("all", &["--keep", "all"]);
    assert_eq!(pngs(&tmp.path().join("best")).len(), 8);
    assert_eq!(pngs(&tmp.path().join("all")).len(), 32);
    assert!(tmp.path().join("best/sample-0007.png").is_file());
    assert!(tmp.path().join("all/sample-0007-3.png").is_file());
    assert_eq!(best["parameters"]["keep"], "best");
    assert_eq!(all["parameters"]["keep"], "all");
    let (b, a) = (
        best["samples"].as_array().unwrap(),
        all["samples"].as_array().unwrap(),
    );
    assert_eq!((b.len(), a.len()), (8, 32));
    for (g, s) in b.iter().enumerate() {
        let group: Vec<&Value> = a.iter().filter(|p| p["group"] == g as u64).collect();
        let top = group
            .iter()
            .map(|p| p["reward"].as_f64().unwrap())
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(s["reward"].as_f64().unwrap(), top, "group {g}");
        assert!(group.iter().any(|p| p["x"] == s["x"]), "group {g}");
    }
}

/// The `parameters` text of a PNG, read as the A1111 web UI reads it
/// (`modules/infotext_utils.py`: the last line is `key: value` pairs matched by
/// `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`, the lines before it the prompt and,
/// from `Negative prompt:` on, the negative prompt).
fn a1111_fields(png: &Path) -> (String, String, Vec<(String, String)>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let reader = decoder.read_info().unwrap();
    let text = reader
        .info()
        .utf8_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .expect("a parameters chunk")
        .get_text()
        .unwrap();
    let lines: Vec<&str> = text.trim().lines().collect();
    let (last, body) = lines.split_last().unwrap();
    let re = regex::Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).unwrap();
    let fields: Vec<(String, String)> = re
        .captures_iter(last)
        .map(|c| {
            let v = c[2].to_string();
            let v = if v.starts_with('"') {
                serde_json::from_str::<String>(&v).unwrap()
            } else {
                v
            };
            (c[1].to_string(), v)
        })
        .collect();
    let (mut prompt, mut negative, mut in_negative) = (vec![], vec![], false);
    for line in body {
        if let Some(n) = line.strip_prefix("Negative prompt:") {
            in_negative = true;
            negative.push(n.trim());
        } else if in_negative {
            negative.push(line);
        } else {
            prompt.push(*line);
        }
    }
    (prompt.join("\n"), negative.join("\n"), fields)
}

/// Every PNG carries A1111-format `parameters` that the web UI's grammar reads back to the
/// run's prompt, steps, sampler, CFG, seed and size; `info` reads both chunks and the image
/// still reproduces byte for byte; a PNG of another tool is read as far as its fields go.
#[test]
fn pngs_carry_a1111_parameters_that_its_grammar_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let sd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd/pipeline");
    ok(&[
        "generate",
        "--model",
        sd.to_str().unwrap(),
        "--prompt",
        "a red cat, in a hat",
        "--negative",
        "blurry",
        "--steps",
        "3",
        "--cfg",
        "4.5",
        "-n",
        "2",
        "--seed",
        "40",
        "-o",
        out.to_str().unwrap(),
    ]);
    let (prompt, negative, fields) = a1111_fields(&out.join("sample-0001.png"));
    assert_eq!(prompt, "a red cat, in a hat");
    assert_eq!(negative, "blurry");
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no `{k}` in {fields:?}"))
    };
    let params = json(&out.join("samples.json"))["parameters"].clone();
    assert_eq!(get("Steps"), "3");
    assert_eq!(get("Sampler"), params["sampler"].as_str().unwrap());
    assert_eq!(get("CFG scale"), "4.5");
    assert_eq!(get("Seed"), "41");
    assert_eq!(get("Size"), "16x16");
    assert_eq!(get("Model"), sd.to_str().unwrap());
    assert_eq!(get("Model hash").len(), 10);
    assert!(get("steerdiff").contains("none"), "{fields:?}");
    // `info` shows both, and the JSON record still reproduces the image.
    let image = out.join("sample-0001.png");
    let text = String::from_utf8(ok(&["info", image.to_str().unwrap()]).stdout).unwrap();
    assert!(
        text.contains("prompt: a red cat, in a hat") && text.contains("Seed: 41"),
        "{text}"
    );
    let o = ok(&["info", "--json", image.to_str().unwrap()]);
    let record: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut argv: Vec<String> = serde_json::from_value(record["argv"].clone()).unwrap();
    let again = tmp.path().join("again");
    argv.extend(["-o".into(), again.to_str().unwrap().into()]);
    ok(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read(&image).unwrap(),
        std::fs::read(again.join("sample-0001.png")).unwrap()
    );
    // A PNG written by another tool in the A1111 format.
    let other = tmp.path().join("other.png");
    {
        let w = std::io::BufWriter::new(std::fs::File::create(&other).unwrap());
        let mut enc = png::Encoder::new(w, 1, 1);
        enc.set_color(png::ColorType::Rgb);
        enc.add_text_chunk(
            "parameters".into(),
            "a lovely cat\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, CFG scale: 7, \
             Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5"
                .into(),
        )
        .unwrap();
        enc.write_header()
            .unwrap()
            .write_image_data(&[0, 0, 0])
            .unwrap();
    }
    let o = ok(&["info", "--json", other.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "a1111");
    assert_eq!(v["prompt"], "a lovely cat");
    assert_eq!(v["negative_prompt"], "ugly");
    assert_eq!(v["parameters"]["Sampler"], "Euler a");
    assert_eq!(v["parameters"]["Seed"], "42");
}
