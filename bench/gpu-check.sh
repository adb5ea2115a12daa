#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and PyTorch but no Rust toolchain: takes a
# steerdiff binary built elsewhere with `--features cuda` (scripts/install-cuda-toolkit.sh,
# then `CUDA_COMPUTE_CAP=80 cargo build --release --features cuda`) and runs, on the GPU:
#   1. the tiny-sd and tiny-sdxl conformance cases through the CLI (f32, the CPU tolerance:
#      the PNG within 2/255 of diffusers' image);
#   2. the same cases from original-layout single files, and the LoRA cases (diffusers' fused
#      LoRAs at two strengths), with the same tolerance;
#   3. the toy model on cuda against the cpu, and a Gaussian mixture with FK on cuda;
#   4. the SD-1.5-size bench: one CFG UNet step in bf16, steerdiff against diffusers on the same
#      random weights (diffusers from .whl/ when the machine lacks it).
# Results: one JSON line each on stdout and in $OUT/results.jsonl.
#
#   STEERDIFF_BIN=path/to/steerdiff OUT=out bash bench/gpu-check.sh [conformance models toy sd15-bench]
set -u
cd "$(dirname "$0")/.."
BIN=$(realpath "${STEERDIFF_BIN:-.gpu/steerdiff}")
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
sections=${*:-conformance models toy sd15-bench}

# CUDA's libraries: PyTorch's pip packages hold them (cuBLAS, cuRAND, NVRTC, the runtime).
site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
for d in "$site"/nvidia/*/lib "$site"/nvidia/cu*/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c 'import diffusers' 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$BIN" --version
"$BIN" generate --device cuda --steps 2 -o "$OUT/smoke" 2>&1 | tail -2
# Seconds each section may take (the whole check stays under about 9.5 minutes).
declare -A limit=([conformance]=120 [models]=120 [toy]=90 [sd15-bench]=210)
for s in $sections; do
    echo "== $s ($(date +%T))"
    timeout "${limit[$s]:-200}" python3 bench/gpu_check.py "$s" "$BIN" "$OUT" ||
        echo "{\"check\": \"$s\", \"ok\": false, \"error\": \"stopped after ${limit[$s]:-200} s\"}"
done
echo "== done ($(date +%T))"
