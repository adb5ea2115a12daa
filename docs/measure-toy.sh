#!/usr/bin/env bash
# Re-measure the toy model's own tables with the models in $STEERDIFF_ASSETS (default:
# assets/): the model table of "The embedded toy model" and FlowChef inpainting, plus the two
# committed pictures. The steering tables (every strategy beside the matched-cost CFG, by the
# judge) are docs/measure-honest.sh's.
#
#   docs/measure-toy.sh [BINARY] [OUT_DIR] [JOBS]
#
# BINARY defaults to target/release/steerdiff, OUT_DIR to out/measure-toy, JOBS (parallel
# single-thread processes) to the number of cores. Every run writes its JSON under OUT_DIR;
# the pooled tables are printed as Markdown at the end (and kept in OUT_DIR/tables.md); the
# runs' messages go to OUT_DIR/stderr.log, and a failed run stops the script before pooling.
# Needs jq. The seeds are the README's, so the same models give the same numbers.
set -euo pipefail
bin=${1:-target/release/steerdiff}
out=${2:-out/measure-toy}
jobs=${3:-$(nproc)}
mkdir -p "$out"
: > "$out/stderr.log"
export RAYON_NUM_THREADS=1

# One line per job; xargs runs them JOBS at a time, each a single-thread process.
{
    echo "$bin toy eval --per-class 100 --json $out/models.json > $out/models.md"
    echo "$bin toy inpaint -n 1000 --steps 30 --box-size 12 --grid 10 --time-travel 4" \
        "-o $out/flowchef-inpaint.png" \
        "--json $out/inpaint.json > /dev/null"
    echo "$bin toy samples -o $out/toy-samples.png --per-class 6 --cfgs 1,3"
} | xargs -P "$jobs" -I{} bash -c "{} 2>> $out/stderr.log"

{
    cat "$out/models.md"
    echo
    echo "FlowChef inpainting"
    jq -c . "$out/inpaint.json"
} | tee "$out/tables.md"
