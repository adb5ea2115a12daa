//! The flags a run was asked for, as data: read from `--config run.toml`, recorded in every
//! PNG, and turned back into a command line by `steerdiff info`.
//!
//! A config file holds the long flags of `steerdiff generate` as keys (`cfg = 3`,
//! `class = "star"`, `guidance = "fk"`, `plugin-timeout = 10`; `_` may stand for `-`): a
//! string or number is the flag's value, an array gives it several, `true` sets a switch and
//! `false` leaves it off. A flag given on the command line wins over the same key in the file.

use std::ffi::OsString;
use std::path::Path;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use crate::cli::Cli;
use crate::error::input_error;

/// Flags as given: each flag's long name and its raw values (none for a switch).
pub type Flags = Vec<(String, Vec<String>)>;

/// Flags that say where outputs go or how a run is split, not what it computes; they are
/// left out of the record that reproduces an image.
pub const NOT_RECORDED: [&str; 7] = [
    "output", "trace", "config", "shard", "num", "seed", "threads",
];

/// The `generate` subcommand as clap builds it (every flag, with its id, long name and heading).
pub fn generate_command() -> clap::Command {
    Cli::command()
        .find_subcommand("generate")
        .expect("generate subcommand")
        .clone()
}

/// The flags of `m` (the `generate` subcommand's matches) that were given, in declaration
/// order, except those in `skip`.
pub fn explicit_flags(m: &ArgMatches, skip: &[&str]) -> Flags {
    let cmd = generate_command();
    let mut out = Flags::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if skip.contains(&long) || m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let values = if arg.get_action().takes_values() {
            m.get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default()
        } else {
            vec![]
        };
        out.push((long.to_string(), values));
    }
    out
}

/// Parses `generate` arguments (`argv` without the program name), filling in the recorded
/// flags; errors are input errors in clap's words.
pub fn parse_generate(argv: &[String]) -> Result<crate::cli::GenerateArgs> {
    use clap::FromArgMatches as _;
    let full = std::iter::once("steerdiff".to_string()).chain(argv.iter().cloned());
    let matches = match Cli::command().try_get_matches_from(full) {
        Ok(m) => m,
        Err(e) => input_error!(
            "{}",
            e.to_string().lines().next().unwrap_or("bad arguments")
        ),
    };
    let cli = Cli::from_arg_matches(&matches)?;
    let crate::cli::Command::Generate(mut g) = cli.command else {
        input_error!("not a generate command line");
    };
    g.flags = explicit_flags(
        matches.subcommand_matches("generate").expect("generate"),
        &NOT_RECORDED,
    );
    Ok(*g)
}

/// `generate` arguments for `flags`, each as `--name=value` (safe for values starting `-`).
pub fn to_argv(flags: &Flags) -> Vec<String> {
    let mut argv = vec!["generate".to_string()];
    for (long, values) in flags {
        if values.is_empty() {
            argv.push(format!("--{long}"));
        }
        for v in values {
            argv.push(format!("--{long}={v}"));
        }
    }
    argv
}

/// A command line a shell reads back as `argv` (single quotes where needed).
pub fn shell_line(argv: &[String]) -> String {
    let quote = |s: &String| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c))
        {
            s.clone()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once("steerdiff".to_string())
        .chain(argv.iter().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splices the keys of a `generate --config FILE` into the arguments, after the subcommand
/// name, leaving out keys the command line gives itself. Other commands pass through.
pub fn expand_config(argv: Vec<OsString>) -> Result<Vec<OsString>> {
    if argv.get(1).and_then(|a| a.to_str()) != Some("generate") {
        return Ok(argv);
    }
    let text: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut file = None;
    for (i, a) in text.iter().enumerate() {
        if let Some(f) = a.strip_prefix("--config=") {
            file = Some(f.to_string());
        } else if a == "--config" {
            file = text.get(i + 1).cloned();
        }
    }
    let Some(file) = file else { return Ok(argv) };
    let cmd = generate_command();
    let long_of = |token: &str| -> Option<String> {
        if let Some(name) = token.strip_prefix("--") {
            let name = name.split('=').next().unwrap_or(name);
            // An alias stands for its flag's long name.
            return Some(
                cmd.get_arguments()
                    .find(|a| {
                        a.get_long_and_visible_aliases()
                            .is_some_and(|names| names.contains(&name))
                    })
                    .and_then(|a| a.get_long())
                    .unwrap_or(name)
                    .to_string(),
            );
        }
        let c = token.strip_prefix('-')?.chars().next()?;
        cmd.get_arguments()
            .find(|a| a.get_short() == Some(c))
            .and_then(|a| a.get_long().map(String::from))
    };
    let given: Vec<String> = text[2..].iter().filter_map(|t| long_of(t)).collect();
    let extra = config_flags(Path::new(&file), &given)?;
    let mut out: Vec<OsString> = argv[..2].to_vec();
    out.extend(extra.into_iter().map(OsString::from));
    out.extend(argv[2..].iter().cloned());
    Ok(out)
}

/// The flag a key of a config file or prompt-file line sets, and its values: a string,
/// number or boolean is one value and an array several; for a switch, `true` sets it (no
/// values) and `false` leaves it off (`None`). Keys are long flags of `generate`, `_` allowed
/// for `-`. The error says what is wrong with the key, for the caller to place.
pub fn flag_for(
    key: &str,
    value: &serde_json::Value,
) -> Result<Option<(String, Vec<String>)>, String> {
    use serde_json::Value;
    let long = key.replace('_', "-");
    let cmd = generate_command();
    let Some(arg) = cmd.get_arguments().find(|a| {
        a.get_long_and_visible_aliases()
            .is_some_and(|names| names.contains(&long.as_str()))
    }) else {
        return Err(format!(
            "unknown key `{key}` (keys are the long flags of `steerdiff generate`, e.g. class, \
             cfg, guidance, reward; see `steerdiff generate --help`)"
        ));
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        // Whole numbers without a fraction part, whether written 3 or 3.0.
        Value::Number(x) => Ok(x
            .as_i64()
            .map(|i| i.to_string())
            .unwrap_or_else(|| x.as_f64().unwrap_or(f64::NAN).to_string())),
        _ => Err(format!(
            "`{key}` must be a string, number, boolean or a list of them"
        )),
    };
    let values = match (value, arg.get_action().takes_values()) {
        (Value::Bool(true), false) => vec![],
        (Value::Bool(false), false) => return Ok(None),
        (_, false) => return Err(format!("`{key}` is a switch; write true or false")),
        (Value::Array(items), true) => items.iter().map(scalar).collect::<Result<_, _>>()?,
        (v, true) => vec![scalar(v)?],
    };
    // The flag's own long name, whichever alias the key used.
    let long = arg.get_long().map_or(long.clone(), str::to_string);
    Ok(Some((long, values)))
}

/// The `--name=value` arguments of a config file, skipping the long names in `given`.
fn config_flags(path: &Path, given: &[String]) -> Result<Vec<String>> {
    let text = crate::error::read_user_text(path, "the config file", 16 << 20)?;
    config_text_flags(&text, path, given)
}

/// The `--name=value` arguments of a config file's `text` (`path` names it in messages),
/// skipping the long names in `given`.
pub fn config_text_flags(text: &str, path: &Path, given: &[String]) -> Result<Vec<String>> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => input_error!("config file `{}` is not valid TOML: {e}", path.display()),
    };
    let mut out = vec![];
    for (key, value) in table {
        let flag = serde_json::to_value(&value)
            .map_err(|e| e.to_string())
            .and_then(|v| flag_for(&key, &v));
        let (long, values) = match flag {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => input_error!("config file `{}`: {e}", path.display()),
        };
        if long == "config" || given.contains(&long) {
            continue;
        }
        let args: Vec<String> = to_argv(&vec![(long, values)]).into_iter().skip(1).collect();
        // A value clap would refuse is refused here, where the file and key can be named.
        let probe = std::iter::once("generate".to_string()).chain(args.iter().cloned());
        if let Err(e) = generate_command().try_get_matches_from(probe) {
            use clap::error::ErrorKind::{InvalidValue, ValueValidation};
            if matches!(e.kind(), InvalidValue | ValueValidation) {
                let why = e.to_string();
                input_error!(
                    "config file `{}`, key `{key}`: {}",
                    path.display(),
                    why.lines()
                        .next()
                        .unwrap_or("a bad value")
                        .trim_start_matches("error: ")
                );
            }
        }
        out.extend(args);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_become_flags_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(
            &file,
            "class = \"star\"\ncfg = 3.0\nnum = 4\nplugin_no_cache = true\ncfg-interval = \"-1,2\"\n",
        )
        .unwrap();
        let argv: Vec<OsString> = [
            "steerdiff",
            "generate",
            "--config",
            file.to_str().unwrap(),
            "-n",
            "2",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let out: Vec<String> = expand_config(argv)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(out.contains(&"--class=star".to_string()), "{out:?}");
        assert!(out.contains(&"--cfg=3".to_string()), "{out:?}");
        assert!(out.contains(&"--plugin-no-cache".to_string()), "{out:?}");
        assert!(out.contains(&"--cfg-interval=-1,2".to_string()), "{out:?}");
        assert!(
            !out.iter().any(|a| a.starts_with("--num")),
            "-n on the command line wins: {out:?}"
        );
        std::fs::write(&file, "colour = 1\n").unwrap();
        let argv = vec![
            "steerdiff".into(),
            "generate".into(),
            format!("--config={}", file.display()).into(),
        ];
        let err = expand_config(argv).unwrap_err().to_string();
        assert!(err.contains("unknown key `colour`"), "{err}");
    }

    #[test]
    fn shell_lines_quote_what_needs_it() {
        let argv = vec![
            "generate".to_string(),
            "--reward=stdio:python3 my plugin.py".into(),
        ];
        assert_eq!(
            shell_line(&argv),
            "steerdiff generate '--reward=stdio:python3 my plugin.py'"
        );
    }
}
