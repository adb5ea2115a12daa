#!/usr/bin/env bash
# Re-measure every toy-model table of README.md with the models in $STEERDIFF_ASSETS
# (default: assets/): the model table of "The embedded toy model", "Steering the toy image
# model" and "Per-step guidance on the toy image model", plus the two committed pictures.
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
mkdir -p "$out"/steer "$out"/perstep
: > "$out/stderr.log"
export RAYON_NUM_THREADS=1
classes=(circle square triangle cross ring star diamond heart bars arrow)

# One line per job; xargs runs them JOBS at a time, each a single-thread process.
{
    echo "$bin toy eval --per-class 100 --json $out/models.json > $out/models.md"
    for k in "${!classes[@]}"; do
        c=${classes[$k]}
        for s in 100000 200000; do
            echo "$bin eval --model toy --class $c --strategies none,bon,fk,code --budget 4" \
                "--lambda 10 --steps 30 -n 20 --seed $((s + 1000 * k)) --json" \
                "> $out/steer/$c-$s.json"
        done
        echo "$bin eval --model toy --class $c --strategies none,gfcg,autoguidance,dynamic-cfg" \
            "--cfg 1,3 --gfcg-scale 3 --autoguidance-scale 3 --steps 30 -n 100 --seed 1000000" \
            "--json > $out/perstep/$c.json"
    done
    echo "$bin toy inpaint -n 1000 --steps 30 --box-size 12 --grid 10 --time-travel 4" \
        "-o $out/flowchef-inpaint.png" \
        "--json $out/inpaint.json > /dev/null"
    echo "$bin toy samples -o $out/toy-samples.png --per-class 6 --cfgs 1,3"
} | xargs -P "$jobs" -I{} bash -c "{} 2>> $out/stderr.log"

# Pool rows of the same (strategy, CFG) over files: accuracy weighted by outputs, diversity
# averaged over classes (it is a within-class figure).
pool() {
    local title=$1
    shift
    jq -rs --arg title "$title" '
        [.[][]] | group_by([.strategy, .cfg])
        | map({strategy: .[0].strategy, cfg: .[0].cfg, nfe: .[0].nfe_per_group,
               calls: .[0].reward_calls,
               reward: ((map(.reward_mean * .outputs) | add) / (map(.outputs) | add)),
               n: (map(.outputs) | add),
               acc: ((map(.eval_accuracy * .outputs) | add) / (map(.outputs) | add)),
               div: ((map(.diversity) | add) / length)})
        | ($title + "\n\n| strategy | CFG | NFE / group | reward calls | mean reward | outputs | evaluation accuracy | diversity |\n|---|---|---|---|---|---|---|---|"),
          (.[] | "| \(.strategy) | \(.cfg) | \(.nfe) | \(.calls) | \(.reward * 100 | round / 100) | \(.n) | \(.acc * 1000 | round / 10) % | \(.div * 10 | round / 10) |")' "$@"
}
{
    cat "$out/models.md"
    echo
    pool "Steering, S = 100000" "$out"/steer/*-100000.json
    echo
    pool "Steering, S = 200000" "$out"/steer/*-200000.json
    echo
    pool "Steering, pooled" "$out"/steer/*.json
    echo
    pool "Per-step guidance" "$out"/perstep/*.json
    echo
    echo "FlowChef inpainting"
    jq -c . "$out/inpaint.json"
} | tee "$out/tables.md"
