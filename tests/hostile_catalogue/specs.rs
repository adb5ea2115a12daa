//! Hostile inputs: mixture specs, config files and prompt files.

use super::setup::*;
use super::{case, Case, Untouched};

/// The cases of this category.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        // ---- 2. mixture specs ----
        case("gmm_not_json", 2, &["malformed GMM spec"], Untouched, |d| {
            gmm(d, "dim: 1")
        }),
        case(
            "gmm_empty_file",
            2,
            &["malformed GMM spec", "EOF"],
            Untouched,
            |d| gmm(d, ""),
        ),
        case(
            "gmm_zero_components",
            2,
            &["`components` is empty"],
            Untouched,
            |d| gmm(d, r#"{"dim": 1, "components": []}"#),
        ),
        case(
            "gmm_negative_std",
            2,
            &["component 0 std must be a positive number, got -1"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 1, "mean": [0], "std": -1}]}"#,
                )
            },
        ),
        case(
            "gmm_zero_std",
            2,
            &["std must be a positive number, got 0"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 1, "mean": [0], "std": 0}]}"#,
                )
            },
        ),
        case(
            "gmm_negative_weight",
            2,
            &["component 1 weight must be a positive number, got -1"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 2, "mean": [0], "std": 1}, {"weight": -1, "mean": [1], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_weights_sum_to_zero",
            2,
            &["weight must be a positive number, got 0"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 0, "mean": [0], "std": 1}, {"weight": 0, "mean": [1], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_weights_sum_overflows",
            2,
            &["weights add up to inf"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 1e308, "mean": [0], "std": 1}, {"weight": 1e308, "mean": [1], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_mean_of_the_wrong_dimension",
            2,
            &["mean of length 1 but dim is 2"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 2, "components": [{"weight": 1, "mean": [0], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_nan_as_a_string",
            2,
            &["invalid type: string \"NaN\""],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "components": [{"weight": 1, "mean": ["NaN"], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_dim_zero",
            2,
            &["`dim` must be ≥ 1"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 0, "components": [{"weight": 1, "mean": [], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_unknown_field",
            2,
            &["unknown field `colour`"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "colour": "red", "components": [{"weight": 1, "mean": [0], "std": 1}]}"#,
                )
            },
        ),
        case(
            "gmm_too_few_class_names",
            2,
            &["1 class_names given but labels go up to 3"],
            Untouched,
            |d| {
                gmm(
                    d,
                    r#"{"dim": 1, "class_names": ["a"], "components": [{"weight": 1, "mean": [0], "std": 1, "class": 3}]}"#,
                )
            },
        ),
        case(
            "gmm_spec_is_a_folder",
            2,
            &["not a regular file"],
            Untouched,
            |d| {
                std::fs::create_dir(d.join("spec.json")).unwrap();
                gen(d, &["--model", &format!("gmm:{}", s(&d.join("spec.json")))])
            },
        ),
        case("gmm_no_spec_named", 2, &["no spec file"], Untouched, |d| {
            gen(d, &["--model", "gmm:"])
        }),
        // ---- 3. config files ----
        case(
            "config_not_toml",
            2,
            &["is not valid TOML"],
            Untouched,
            |d| config(d, b"steps = = 3\n"),
        ),
        case(
            "config_unknown_key",
            2,
            &["unknown key `colour`", "run.toml"],
            Untouched,
            |d| config(d, b"colour = \"red\"\n"),
        ),
        case(
            "config_value_of_the_wrong_type",
            2,
            &["invalid value 'high' for '--cfg <CFG>'"],
            Untouched,
            |d| config(d, b"cfg = \"high\"\n"),
        ),
        case(
            "config_inline_table",
            2,
            &["`cfg` must be a string, number, boolean or a list"],
            Untouched,
            |d| config(d, b"cfg = { a = 1 }\n"),
        ),
        case(
            "config_switch_given_a_string",
            2,
            &["`plugin-no-cache` is a switch"],
            Untouched,
            |d| config(d, b"plugin-no-cache = \"yes\"\n"),
        ),
        case(
            "config_duplicate_key",
            2,
            &["duplicate key `class`"],
            Untouched,
            |d| config(d, b"class = \"star\"\nclass = \"ring\"\n"),
        ),
        case(
            "config_not_utf8",
            2,
            &["is not UTF-8 text"],
            Untouched,
            |d| config(d, b"\xff\xfecfg = 3\n"),
        ),
        case(
            "config_is_a_folder",
            2,
            &["cannot read the config file", "Is a directory"],
            Untouched,
            |d| {
                std::fs::create_dir(d.join("run.toml")).unwrap();
                gen(d, &["--config", &s(&d.join("run.toml"))])
            },
        ),
        case(
            "config_endless_device",
            2,
            &["longer than 16777216 bytes"],
            Untouched,
            |d| gen(d, &["--config", "/dev/zero"]),
        ),
        // ---- 4. prompt files ----
        case(
            "prompt_file_line_not_json",
            2,
            &["line 2: not a JSON object"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"{\"class\": \"star\"}\nclass=star\n"),
        ),
        case(
            "prompt_file_line_a_json_array",
            2,
            &["line 1: not a JSON object"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"[\"star\"]\n"),
        ),
        case(
            "prompt_file_flag_of_another_command",
            2,
            &["line 1: unknown key `budget`"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"{\"budget\": 3}\n"),
        ),
        case(
            "prompt_file_value_of_the_wrong_type",
            2,
            &["line 2", "invalid value 'loud' for '--cfg <CFG>'"],
            Untouched,
            |d| {
                prompt_file(
                    d,
                    "runs.jsonl",
                    b"{\"class\": \"star\"}\n{\"cfg\": \"loud\"}\n",
                )
            },
        ),
        case(
            "prompt_file_value_an_object",
            2,
            &["line 1: `class` must be a string"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"{\"class\": {\"name\": \"star\"}}\n"),
        ),
        case(
            "prompt_file_output_per_line",
            2,
            &["`output` cannot be set per line"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b"{\"output\": \"/tmp/elsewhere\"}\n"),
        ),
        case(
            "prompt_file_not_utf8",
            2,
            &["the prompt file", "is not UTF-8 text"],
            Untouched,
            |d| prompt_file(d, "classes.txt", b"star\n\xff\xfe\n"),
        ),
        case(
            "prompt_file_empty",
            2,
            &["has no lines to run"],
            Untouched,
            |d| prompt_file(d, "runs.jsonl", b""),
        ),
        case(
            "prompt_file_only_comments",
            2,
            &["has no lines to run"],
            Untouched,
            |d| prompt_file(d, "classes.txt", b"# nothing\n\n   \n"),
        ),
        case(
            "prompt_file_unknown_class_on_line_2",
            2,
            &["unknown toy class `unicorn`"],
            Untouched,
            |d| prompt_file(d, "classes.txt", b"star\nunicorn\n"),
        ),
    ]
}
