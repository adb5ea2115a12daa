//! Install anywhere: the toy models are compiled into the binary, so the release binary
//! copied to an empty folder elsewhere, with `STEERDIFF_ASSETS` unset, makes steered
//! pictures; where `strace` is installed, the test also checks that the run opens no file of
//! the source tree.

use std::path::Path;
use std::process::Command;

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-e", "trace=openat", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_copied_binary_makes_pictures_without_the_source_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin").join("steerdiff");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_steerdiff"), &bin).unwrap();
    let args = [
        "generate",
        "--class",
        "star",
        "--guidance",
        "fk",
        "--reward",
        "classifier",
        "--particles",
        "2",
        "-n",
        "2",
        "--steps",
        "4",
        "-o",
        "out",
    ];
    let traced = strace_works();
    let mut cmd = if traced {
        let mut c = Command::new("strace");
        c.args([
            "-f",
            "-e",
            "trace=open,openat,openat2,stat,newfstatat,statx",
        ])
        .arg("-o")
        .arg(tmp.path().join("trace.txt"))
        .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let o = cmd
        .args(args)
        .current_dir(tmp.path())
        .env_remove("STEERDIFF_ASSETS")
        // cargo's test environment points the loader into target/; a user's has no such path.
        .env_remove("LD_LIBRARY_PATH")
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "sample-0000.png",
        "sample-0001.png",
        "grid.png",
        "samples.json",
    ] {
        assert!(tmp.path().join("out").join(f).is_file(), "{f}");
    }
    if !traced {
        eprintln!("install: strace is not available; the no-source-files check did not run");
        return;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let trace = std::fs::read_to_string(tmp.path().join("trace.txt")).unwrap();
    let opened: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains(source.to_str().unwrap()))
        .collect();
    assert!(
        opened.is_empty(),
        "the copied binary touched the source tree:\n{}",
        opened.join("\n")
    );
    assert!(
        trace.contains("out"),
        "the trace records the run's own files"
    );
}
