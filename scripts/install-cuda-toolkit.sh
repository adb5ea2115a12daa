#!/usr/bin/env bash
# Install Debian's CUDA toolkit (nvcc 11.8 on bookworm) so that `cargo build --features cuda`
# can compile candle-kernels. Idempotent; run as root on Debian. About 1.6 GB.
# See docs: CUDA_COMPUTE_CAP=80 is required with nvcc 11.8 (compute_90 is unsupported).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-cuda-toolkit.sh: must run as root" >&2
    exit 1
fi

src=/etc/apt/sources.list.d/debian.sources
if [ ! -f "$src" ]; then
    echo "install-cuda-toolkit.sh: $src not found (not a deb822 Debian system?)" >&2
    exit 1
fi

# Add `contrib non-free` to every `Components:` line that lacks them.
if grep -Eq '^Components:' "$src"; then
    for comp in contrib non-free; do
        if grep -E '^Components:' "$src" | grep -vqw "$comp"; then
            sed -i -E "/^Components:/{/(^|[[:space:]])${comp}([[:space:]]|$)/!s/\$/ ${comp}/}" "$src"
        fi
    done
fi

export DEBIAN_FRONTEND=noninteractive
if ! command -v nvcc >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends nvidia-cuda-toolkit
fi

nvcc --version
