#!/usr/bin/env bash
# The honest comparison of docs/honest-comparison.md: every steering strategy on the toy
# model at CFG 1, beside the best CFG-only setting at matched cost (chosen per class on its own
# block of seeds), and on top of that CFG; judged by toy-judge (a ResNet, never steers), with
# the first evaluation classifier's verdict and the two judges' agreement beside it.
#
#   docs/measure-honest.sh [BINARY] [OUT_DIR] [JOBS]
#
# BINARY defaults to target/release/steerdiff, OUT_DIR to out/measure-honest, JOBS (parallel
# single-thread processes) to the number of cores. One `steerdiff eval --json` per class goes
# to OUT_DIR/CLASS.json; the pooled table (Markdown) is printed and kept in OUT_DIR/table.md.
# Needs jq. The seeds are fixed, so the same models give the same numbers.
set -euo pipefail
bin=${1:-target/release/steerdiff}
out=${2:-out/measure-honest}
jobs=${3:-$(nproc)}
groups=${GROUPS_PER_CLASS:-20}
mkdir -p "$out"
: > "$out/stderr.log"
export RAYON_NUM_THREADS=1
classes=(circle square triangle cross ring star diamond heart bars arrow)
for k in "${!classes[@]}"; do
    c=${classes[$k]}
    echo "$bin eval --model toy --class $c" \
        "--strategies none,bon,fk,code,gfcg,autoguidance,dynamic-cfg --budget 4 --lambda 10" \
        "--gfcg-scale 3 --autoguidance-scale 3 --steps 30 -n $groups --seed $((100000 + 1000 * k))" \
        "--baseline-cfg 1,2,3,4,5 --tune-num 20 --tune-seed $((500000 + 1000 * k))" \
        "--second-judge toy-eval-classifier --json > $out/$c.json"
done | xargs -P "$jobs" -I{} bash -c "{} 2>> $out/stderr.log"

# Pool each row over the ten classes. Every class has the same number of groups, so a pooled
# mean is the mean of the class means and its standard error √(Σ se²)/10 (the classes are
# independent); paired differences from the matched CFG row pool the same way. A row is keyed
# by strategy and by whether it ran at CFG 1, at the class's tuned scale ("tuned"), or at its
# own scales (dynamic CFG); where a class tuned to scale 1 its CFG-1 row is both.
jq -rs '
  def pct: . * 1000 | round / 10;
  def pool(f): (map(f) | add / length);
  def pool_se(f): ((map(f * f) | add) | sqrt) / length;
  [ .[] | .baseline.cfg as $w | .rows[]
    | (if .cfg == null then ["auto"] elif .cfg == 1 and $w == 1 then ["1", "tuned"]
       elif .cfg == 1 then ["1"] elif .cfg == $w then ["tuned"] else [] end) as $keys
    | . as $r | $keys[] | {key: [$r.strategy, .], row: $r} ]
  | group_by(.key)
  | map({strategy: .[0].key[0], at: .[0].key[1], classes: length,
         nfe: pool(.row.nfe_per_group),
         reward: pool(.row.reward.mean),
         acc: pool(.row.judged.mean), se: pool_se(.row.judged.se),
         d: (if any(.[]; .row.vs_cfg_baseline == null) then null
             else pool(.row.vs_cfg_baseline.difference.mean) end),
         dse: (if any(.[]; .row.vs_cfg_baseline == null) then null
               else pool_se(.row.vs_cfg_baseline.difference.se) end),
         old: pool(.row.second_judge.accuracy.mean),
         agree: pool(.row.second_judge.agreement),
         div: pool(.row.diversity)})
  | sort_by(.strategy != "none", .strategy, .at)
  | "| strategy | CFG | NFE / group | steering reward | judge accuracy | vs matched CFG | toy-eval-classifier | agreement | diversity |",
    "|---|---|---|---|---|---|---|---|---|",
    (.[] | "| \(.strategy) | \(.at) | \(.nfe | round) | \(.reward * 100 | round / 100) | \(.acc | pct) ± \(.se | pct) % | \(if .d == null then "—" else "\(if .d >= 0 then "+" else "" end)\(.d | pct) ± \(.dse | pct)" end) | \(.old | pct) % | \(.agree | pct) % | \(.div * 10 | round / 10) |")
' "$out"/*.json | tee "$out/table.md"
echo
jq -r '"\(input_filename | split("/") | last | rtrimstr(".json")): tuned CFG \(.baseline.cfg) (\(.baseline.sweep | map("\(.cfg) → \(.value.mean * 100 | round)%") | join(", ")))"' "$out"/*.json | tee -a "$out/table.md"
