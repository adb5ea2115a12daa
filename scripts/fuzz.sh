#!/usr/bin/env bash
# Fuzz every parser of untrusted input (fuzz/fuzz_targets/*) with cargo-fuzz: each target for
# RUNS executions (default 1,000,000), or SECONDS of wall time with `-t SECONDS`.
#   scripts/fuzz.sh            # the release check: 1,000,000 executions per target
#   scripts/fuzz.sh -t 30      # a short run of each (30 s)
# Needs the nightly toolchain and `cargo install cargo-fuzz`. The committed seeds are
# fuzz/corpus/<target>/ (read only); inputs that reach new code go to fuzz/work/<target>/
# (not committed); a crash is saved under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
limit=(-runs=1000000)
if [[ "${1:-}" == "-t" ]]; then
    limit=(-max_total_time="${2:?seconds}")
fi
for target in $(cargo +nightly fuzz list); do
    echo "== $target"
    mkdir -p "work/$target"
    cargo +nightly fuzz run -O "$target" "work/$target" "corpus/$target" -- "${limit[@]}" -max_len=65536 \
        -rss_limit_mb=4096 -timeout=10 2>&1 | grep -E '^#[0-9]+ *DONE|Done [0-9]+ runs|ERROR|SUMMARY|panicked' || true
done
