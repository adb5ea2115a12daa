//! `steerdiff merge`: the shards of a run (`generate --shard I/N`) joined into the whole.
//!
//! Every shard's parameters must agree except for the `shard` entry, and shards `0..N` must
//! each appear once. The merged `samples.json` holds every sample in group order, the summed
//! ledger and the parameters without `shard` — what the run in one piece records, except that
//! batched-call counts (`model_calls`, `reward_calls`) count each shard's own batches. Sample
//! PNGs are copied (they are byte-identical to the whole run's) and the grid is redrawn.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use crate::error::input_error;
use crate::output::Staged;
use crate::run::results::{grid_label, grid_png, top_png};
use crate::run::SCHEMA_VERSION;

/// Flags of `steerdiff merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' output directories (any order).
    #[arg(required = true, value_name = "SHARD_DIR")]
    pub shards: Vec<PathBuf>,
    /// Where to write the merged output.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
}

/// Adds the numbers of `b` into `a`, key by key (objects recursively).
fn add_counts(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    // Peaks of separate processes: the largest, not the sum.
                    Some(x) if k.starts_with("peak_") => {
                        if v.as_f64() > x.as_f64() {
                            *x = v.clone();
                        }
                    }
                    Some(x) => add_counts(x, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a @ Value::Number(_), Value::Number(b)) => {
            *a = match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => Value::from(x + y),
                _ => Value::from(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
            }
        }
        _ => {}
    }
}

/// A shard's samples must be every group of its range, each with the same number of samples,
/// and name their images by plain run-output file names (nothing outside the shard folder).
fn check_samples(dir: &std::path::Path, shard: &Value, v: &Value) -> Result<()> {
    let bad = |why: String| -> Result<()> {
        input_error!(
            "`{}` is not a whole shard: {why}; re-run that shard",
            dir.display()
        )
    };
    let range = match (shard["groups"][0].as_u64(), shard["groups"][1].as_u64()) {
        (Some(a), Some(b)) if a < b => a..b,
        _ => return bad("its record names no group range".into()),
    };
    let Some(samples) = v["samples"].as_array() else {
        return bad("its record has no samples".into());
    };
    let mut per_group = std::collections::BTreeMap::<u64, usize>::new();
    for s in samples {
        let Some(g) = s["group"].as_u64().filter(|g| range.contains(g)) else {
            return bad(format!(
                "a sample of group {} is outside {range:?}",
                s["group"]
            ));
        };
        *per_group.entry(g).or_default() += 1;
        if let Some(name) = s["image"].as_str() {
            let plain = std::path::Path::new(name)
                .file_name()
                .and_then(|n| n.to_str());
            if plain != Some(name) || !crate::output::staged::is_run_output(name) {
                return bad(format!("a sample names the image `{name}`"));
            }
        }
    }
    let counts: std::collections::BTreeSet<usize> = per_group.values().copied().collect();
    if per_group.len() as u64 != range.end - range.start || counts.len() != 1 {
        return bad(format!(
            "its {} samples do not cover groups {range:?} equally",
            samples.len()
        ));
    }
    Ok(())
}

/// Runs `steerdiff merge`.
pub fn merge(args: &MergeArgs) -> Result<()> {
    let out = std::fs::canonicalize(&args.output).ok();
    let mut shards = vec![];
    for dir in &args.shards {
        if out.is_some() && std::fs::canonicalize(dir).ok() == out {
            input_error!(
                "-o `{}` is one of the shards; merge into a new folder",
                args.output.display()
            );
        }
        let path = dir.join("samples.json");
        let text = crate::error::read_user_text(&path, "the shard record", 4 << 30)?;
        let mut v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => input_error!("`{}` is not a shard record (not JSON: {e})", path.display()),
        };
        let Some(shard) = v["parameters"]
            .as_object_mut()
            .and_then(|p| p.remove("shard"))
        else {
            input_error!(
                "`{}` is not a shard: its parameters have no `shard` (run generate with --shard I/N)",
                dir.display()
            );
        };
        let schema = &v["parameters"]["schema"];
        if schema.as_u64() != Some(u64::from(SCHEMA_VERSION)) {
            input_error!(
                "`{}` is a record of schema {schema}; this steerdiff merges schema \
                 {SCHEMA_VERSION} (merge shards with the steerdiff that made them)",
                path.display()
            );
        }
        let index = shard["index"].as_u64().unwrap_or(u64::MAX) as usize;
        let count = shard["count"].as_u64().unwrap_or(0) as usize;
        check_samples(dir, &shard, &v)?;
        shards.push((index, count, dir.clone(), v));
    }
    shards.sort_by_key(|s| s.0);
    let count = shards[0].1;
    let indices: Vec<usize> = shards.iter().map(|s| s.0).collect();
    if shards.iter().any(|s| s.1 != count) || indices != (0..count).collect::<Vec<_>>() {
        input_error!(
            "the shards do not make one run: got shard indices {indices:?} of counts {:?}; \
             pass every shard 0..N of the same --shard I/N split exactly once",
            shards.iter().map(|s| s.1).collect::<Vec<_>>()
        );
    }
    let params = shards[0].3["parameters"].clone();
    for (i, _, dir, v) in &shards[1..] {
        if v["parameters"] != params {
            let differing: Vec<&String> = params
                .as_object()
                .map(|p| {
                    p.keys()
                        .filter(|k| v["parameters"][k.as_str()] != p[k.as_str()])
                        .collect()
                })
                .unwrap_or_default();
            input_error!(
                "shard {i} (`{}`) was run with other parameters than shard 0 (differing: \
                 {differing:?}); shards must come from one command",
                dir.display()
            );
        }
    }
    let mut samples = vec![];
    let mut ledger = Value::Object(Default::default());
    for (_, _, _, v) in &shards {
        samples.extend(v["samples"].as_array().cloned().unwrap_or_default());
        add_counts(&mut ledger, &v["ledger"]);
    }
    crate::output::prepare_dir(&args.output)?;
    let _lock = crate::output::lock_dir(&args.output)?;
    let text = crate::output::samples_text(&samples, &ledger, &params)?;
    let mut staged = Staged::new();
    staged.add(&args.output.join("samples.json"), text.as_bytes())?;
    let mut timing = Value::Object(Default::default());
    let mut cells = vec![];
    for (_, _, dir, _) in &shards {
        if let Ok(t) = std::fs::read_to_string(dir.join("timing.json")) {
            if let Ok(t) = serde_json::from_str::<Value>(&t) {
                add_counts(&mut timing, &t);
            }
        }
    }
    // Each sample's PNG, copied byte for byte, and the grid and top images redrawn from them.
    let dir_of = |group: usize| {
        shards.iter().find(|(_, _, _, v)| {
            v["samples"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x["group"] == group))
        })
    };
    let prompted = params["prompt"].is_string();
    let class_name = params["class_name"].as_str();
    let mut scored = vec![];
    for s in &samples {
        let Some(name) = s["image"].as_str() else {
            continue;
        };
        let group = s["group"].as_u64().unwrap_or(0) as usize;
        let Some((_, _, dir, _)) = dir_of(group) else {
            continue;
        };
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => input_error!("cannot read the shard image `{}`: {e}", path.display()),
        };
        let img = match image::load_from_memory(&bytes) {
            Ok(i) => i.to_rgb8(),
            Err(e) => input_error!("the shard image `{}` is damaged: {e}", path.display()),
        };
        staged.add(&args.output.join(name), &bytes)?;
        let seed = s["seed"].as_u64().unwrap_or(0);
        cells.push((img.clone(), grid_label(class_name, prompted, seed)));
        if let Some(score) = s["eval_reward"].as_f64().or(s["reward"].as_f64()) {
            scored.push((score, img));
        }
    }
    staged.add(
        &args.output.join("timing.json"),
        format!("{}\n", serde_json::to_string_pretty(&timing)?).as_bytes(),
    )?;
    if !cells.is_empty() {
        staged.add(&args.output.join("grid.png"), &grid_png(&cells)?)?;
    }
    if let Some(png) = top_png(scored)? {
        staged.add(&args.output.join("top.png"), &png)?;
    }
    let files: Vec<PathBuf> = staged.destinations().map(|p| p.to_path_buf()).collect();
    staged.commit()?;
    crate::output::remove_stale(&args.output, &files)?;
    eprintln!(
        "steerdiff: merged {} shards, {} samples → {}",
        shards.len(),
        samples.len(),
        args.output.join("samples.json").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_peaks_take_the_largest() {
        let mut a = serde_json::json!({"model_s": 1.5, "rows": {"toy": 4}, "peak_rss_bytes": 100});
        add_counts(
            &mut a,
            &serde_json::json!({"model_s": 2.0, "rows": {"toy": 6}, "peak_rss_bytes": 70}),
        );
        assert_eq!(
            a,
            serde_json::json!({"model_s": 3.5, "rows": {"toy": 10}, "peak_rss_bytes": 100})
        );
    }
}
