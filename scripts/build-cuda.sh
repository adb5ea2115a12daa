#!/usr/bin/env bash
# `cargo COMMAND --release --features cuda [ARGS…]` for a binary that NEEDs no CUDA library and
# opens CUDA 13 (libcuda.so.1, libcublas.so.13, libcurand.so.10) at run time, so that one
# binary built here starts on a machine whose only CUDA is PyTorch's pip packages.
#
#   scripts/build-cuda.sh build                      # target/release/steerdiff
#   scripts/build-cuda.sh clippy --all-targets -- -D warnings
#
# Needs nvcc (scripts/install-cuda-toolkit.sh). Why the patch: candle-core 0.11.1's `cuda`
# feature turns on cudarc's `dynamic-linking` (NEEDed libcublas.so.<build machine's major>);
# steerdiff-guidance adds `dynamic-loading` and `cuda-13000`, and cargo features only add up,
# but cudarc 0.19.10's build script panics when both are on. This script makes a copy of the
# crates.io release under target/ whose build script lets `dynamic-loading` win (two edits,
# printed below when made) and hands it to cargo as a patch for this command only; the
# repository's Cargo.toml and Cargo.lock are left as they were. Drop it when candle stops
# forcing `dynamic-linking`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 build|clippy|check [CARGO ARGS…]" >&2; exit 2; }
command=$1
shift

version=0.19.10
target=${CARGO_TARGET_DIR:-target}
patched="$target/patched/cudarc-$version"
if [ ! -f "$patched/.steerdiff-patched" ]; then
    cargo fetch --quiet
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-$version 2>/dev/null | head -n 1)
    [ -n "$src" ] || { echo "cudarc $version is not in cargo's registry after cargo fetch" >&2; exit 1; }
    rm -rf "$patched"
    mkdir -p "$(dirname "$patched")"
    cp -r "$src" "$patched"
    python3 - "$patched/build.rs" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
edits = [
    ('    #[cfg(all(feature = "dynamic-loading", feature = "dynamic-linking"))]\n'
     '    panic!("Both `dynamic-loading` and `dynamic-linking` features are active, this is a bug");\n',
     '    // steerdiff: `dynamic-loading` wins over `dynamic-linking` (scripts/build-cuda.sh).\n'),
    ('    #[cfg(feature = "dynamic-linking")]\n    dynamic_linking(major, minor);\n',
     '    #[cfg(all(feature = "dynamic-linking", not(feature = "dynamic-loading")))]\n'
     '    dynamic_linking(major, minor);\n'),
]
for old, new in edits:
    if text.count(old) != 1:
        sys.exit(f"cudarc's build.rs changed: cannot find exactly one\n{old}")
    text = text.replace(old, new)
    print(f"patched {path}:\n- {old.strip()}\n+ {new.strip()}", file=sys.stderr)
open(path, "w").write(text)
PY
    touch "$patched/.steerdiff-patched"
fi
abs=$(cd "$patched" && pwd)
# The patch changes cudarc's entry in Cargo.lock for this command; put the file back after.
cp Cargo.lock "$target/Cargo.lock.before-cuda"
trap 'cp "$target/Cargo.lock.before-cuda" Cargo.lock' EXIT
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
cargo "$command" --release --features cuda \
    --config "patch.crates-io.cudarc.path=\"$abs\"" "$@"
