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

#[path = "../common/mod.rs"]
mod common;
mod files;
mod flags;
mod init;
mod loras;
mod models;
mod plugins;
mod setup;
mod specs;

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use setup::BIN;

/// What the files look like after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The `-o` folder is absent or holds only what the setup put there; nothing else changed.
    Untouched,
    /// `samples.json` and the files of a complete run (its images, timing.json, grid/top/
    /// scatter PNGs), nothing else; nothing outside `-o` changed.
    Complete,
}
pub(crate) use Expect::{Complete, Untouched};

/// One hostile input.
pub(crate) struct Case {
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

pub(crate) fn case(
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

/// Every case, by category.
fn cases() -> Vec<Case> {
    let mut all = models::cases();
    all.extend(specs::cases());
    all.extend(flags::cases());
    all.extend(plugins::cases());
    all.extend(files::cases());
    all.extend(init::cases());
    all.extend(loras::cases());
    all
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
