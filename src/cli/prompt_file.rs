//! `generate --prompt-file FILE`: one run per line, each into its own numbered directory.
//!
//! A `.jsonl` file holds one JSON object per line whose keys are long flags of `generate`
//! (`{"class": "star", "cfg": 3, "seed": 10}`, `{"prompt": "a red fox", "steps": 30}`); they
//! override the command line's flags for that line. Any other file holds one condition per
//! line: the prompt of a text-to-image model, or the class of a class-conditional one. Blank
//! lines and lines starting with `#` are skipped. Line `i` (counting kept lines from 0) writes
//! `DIR/line-NNNN/`; `--shard I/N` splits the seeds of every line the same way.

use std::path::Path;

use anyhow::Result;

use crate::cli::invocation::Flags;
use crate::error::input_error;

/// Longest line of a prompt file (64 KiB: a prompt is a few hundred bytes).
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// The flag overrides of each line of `path`; `condition` names the flag a plain-text line
/// sets (`prompt` or `class`).
pub fn read(path: &Path, condition: &str) -> Result<Vec<Flags>> {
    let text = crate::error::read_user_text(path, "the prompt file", 256 << 20)?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    parse(&text, jsonl, condition, path)
}

/// The lines of a prompt file's `text` (JSON objects when `jsonl`), `path` naming it in
/// messages.
pub fn parse(text: &str, jsonl: bool, condition: &str, path: &Path) -> Result<Vec<Flags>> {
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.len() > MAX_LINE_BYTES {
            input_error!(
                "`{}` line {} is {} bytes long; a line may hold at most {MAX_LINE_BYTES}",
                path.display(),
                n + 1,
                line.len()
            );
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !jsonl {
            out.push(vec![(condition.to_string(), vec![line.to_string()])]);
            continue;
        }
        let where_ = || format!("`{}` line {}", path.display(), n + 1);
        let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(line) {
            Ok(o) => o,
            Err(e) => input_error!("{}: not a JSON object ({e})", where_()),
        };
        let mut flags = Flags::new();
        for (key, value) in obj {
            let (long, values) = match crate::cli::invocation::flag_for(&key, &value) {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(e) => input_error!("{}: {e}", where_()),
            };
            if matches!(long.as_str(), "output" | "prompt-file" | "config" | "shard") {
                input_error!("{}: `{key}` cannot be set per line", where_());
            }
            flags.push((long, values));
        }
        out.push(flags);
    }
    if out.is_empty() {
        input_error!("the prompt file `{}` has no lines to run", path.display());
    }
    Ok(out)
}

/// `base` with every flag of `line` replacing the same flag of `base`.
pub fn apply(base: &Flags, line: &Flags) -> Flags {
    let mut out: Flags = base
        .iter()
        .filter(|(k, _)| k != "prompt-file" && !line.iter().any(|(l, _)| l == k))
        .cloned()
        .collect();
    out.extend(line.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_override_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.jsonl");
        std::fs::write(
            &f,
            "{\"class\": \"star\", \"cfg\": 3}\n\n# note\n{\"seed\": 4}\n",
        )
        .unwrap();
        let lines = read(&f, "class").unwrap();
        assert_eq!(lines.len(), 2);
        let base: Flags = vec![
            ("cfg".into(), vec!["1".into()]),
            ("steps".into(), vec!["5".into()]),
        ];
        let a = apply(&base, &lines[0]);
        assert!(
            a.contains(&("cfg".into(), vec!["3".into()])) && a.len() == 3,
            "{a:?}"
        );
        let t = dir.path().join("p.txt");
        std::fs::write(&t, "star\nheart\n").unwrap();
        assert_eq!(
            read(&t, "class").unwrap()[1],
            vec![("class".to_string(), vec!["heart".to_string()])]
        );
        std::fs::write(&f, "{\"output\": \"x\"}\n").unwrap();
        assert!(read(&f, "class")
            .unwrap_err()
            .to_string()
            .contains("cannot be set per line"));
    }
}
