//! With the `cuda` feature on Linux: link the CUDA runtime statically.
//!
//! candle-kernels (pulled in by candle-core's `cuda` feature) compiles its MoE/GGUF kernels into
//! a static library with nvcc, whose host code calls the CUDA runtime, and asks for
//! `-lcudart` (`cargo:rustc-link-lib=dylib=cudart`, which a dependent cannot override). A
//! binary linked that way NEEDs the build machine's `libcudart.so.<major>` and does not start
//! where only another CUDA major version is installed. So this script puts a linker script
//! named `libcudart.so` ahead of the system directories: `-lcudart` then resolves to the
//! toolkit's `libcudart_static.a` (which finds the driver, `libcuda.so.1`, at run time
//! itself). Everything else in CUDA is opened at run time by cudarc (`dynamic-loading`).
//!
//! Without `libcudart_static.a` the shim is skipped with a warning, and the binary NEEDs
//! `libcudart.so` as before.

use std::env;
use std::path::{Path, PathBuf};

/// Where a CUDA toolkit may be named (as cudarc's build script reads them).
const ROOT_VARS: [&str; 4] = [
    "CUDA_HOME",
    "CUDA_PATH",
    "CUDA_ROOT",
    "CUDA_TOOLKIT_ROOT_DIR",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none()
        || env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
    {
        return;
    }
    for var in ROOT_VARS.iter().chain(&["PATH"]) {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Some(archive) = find_cudart_static() else {
        println!(
            "cargo:warning=libcudart_static.a not found (set CUDA_HOME): the binary will \
             NEED libcudart.so of the build machine's CUDA version"
        );
        return;
    };
    let dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("cudart-static");
    std::fs::create_dir_all(&dir).expect("create the cudart shim directory");
    let script = format!(
        "/* steerdiff-guidance build.rs: -lcudart means the static CUDA runtime. */\n\
         INPUT({} -lrt -lpthread -ldl)\n",
        archive.display()
    );
    std::fs::write(dir.join("libcudart.so"), script).expect("write the cudart linker script");
    println!("cargo:rustc-link-search=native={}", dir.display());
}

/// `libcudart_static.a` of the toolkit that builds the kernels: under `$CUDA_HOME` (and its
/// aliases) if set, else next to `nvcc` on `PATH`, else the usual install places.
fn find_cudart_static() -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> = ROOT_VARS
        .iter()
        .filter_map(env::var_os)
        .map(PathBuf::from)
        .collect();
    if let Some(nvcc) = env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|p| p.join("nvcc"))
            .find(|p| p.is_file())
    }) {
        let nvcc = nvcc.canonicalize().unwrap_or(nvcc);
        if let Some(root) = nvcc.parent().and_then(Path::parent) {
            roots.push(root.to_path_buf());
        }
    }
    roots.extend(["/usr/local/cuda", "/opt/cuda", "/usr"].map(PathBuf::from));
    let subdirs = [
        "lib64",
        "lib",
        "lib/x86_64-linux-gnu",
        "lib/aarch64-linux-gnu",
        "targets/x86_64-linux/lib",
        "targets/sbsa-linux/lib",
    ];
    roots
        .iter()
        .flat_map(|root| {
            subdirs
                .iter()
                .map(move |s| root.join(s).join("libcudart_static.a"))
        })
        .find(|p| p.is_file())
}
