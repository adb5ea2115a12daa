//! Hostile inputs: reward plugins: missing programs, protocol breaks, crashes, URLs.

use super::setup::*;
use super::{case, Case, Complete, Untouched};

/// The cases of this category.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        // ---- 6. plugins ----
        case(
            "plugin_program_missing",
            2,
            &["cannot start `/nonexistent/plugin`"],
            Untouched,
            |d| fk(d, "stdio:/nonexistent/plugin", &[]),
        ),
        case(
            "plugin_exits_at_start",
            2,
            &["describe handshake failed", "cannot load my weights"],
            Untouched,
            |d| faulty(d, "exit-at-start", &["--plugin-retries", "0"]),
        ),
        case(
            "plugin_answers_garbage",
            2,
            &["not a JSON header"],
            Untouched,
            |d| faulty(d, "garbage", &["--plugin-retries", "0"]),
        ),
        case("plugin_wrong_count", 2, &["missing ids"], Untouched, |d| {
            faulty(d, "wrong-count", &["--plugin-retries", "0"])
        }),
        case(
            "plugin_nan_skipped",
            0,
            &["null or not finite; scoring 1 item(s) −∞"],
            Complete,
            |d| faulty(d, "nan", &["--plugin-on-error", "skip"]),
        ),
        case(
            "plugin_nan_aborts",
            1,
            &["null or not finite", "--plugin-on-error skip"],
            Untouched,
            |d| faulty(d, "nan", &["--plugin-retries", "0"]),
        ),
        case(
            "plugin_crashes_during_the_run",
            1,
            &["closed its output", "segfault"],
            Untouched,
            |d| faulty(d, "crash", &["--plugin-retries", "0"]),
        ),
        case(
            "plugin_hangs",
            1,
            &["no answer within 1.0 s"],
            Untouched,
            |d| {
                faulty(
                    d,
                    "hang",
                    &["--plugin-timeout", "1", "--plugin-retries", "0"],
                )
            },
        ),
        case(
            "plugin_url_ftp_scheme",
            2,
            &["ftp://127.0.0.1:21", "http://127.0.0.1:PORT"],
            Untouched,
            |d| fk(d, "ftp://127.0.0.1:21", &[]),
        ),
        case(
            "plugin_url_remote_ipv6",
            2,
            &["not on this machine", "--plugin-allow-remote"],
            Untouched,
            |d| fk(d, "http://[2001:db8::1]:8765", &[]),
        ),
        case(
            "plugin_url_closed_port",
            2,
            &["describe handshake failed", "Connection refused"],
            Untouched,
            |d| fk(d, "http://127.0.0.1:1", &[]),
        ),
        case(
            "plugin_url_port_out_of_range",
            2,
            &["99999", "port"],
            Untouched,
            |d| fk(d, "http://127.0.0.1:99999", &["--plugin-allow-remote"]),
        ),
        case(
            "plugin_describe_not_a_description",
            2,
            &["not a valid description", "missing field `protocol`"],
            Untouched,
            |d| plugin(d, "notdesc"),
        ),
        case(
            "plugin_describe_not_json",
            2,
            &["describe handshake failed", "not a JSON header"],
            Untouched,
            |d| plugin(d, "hello"),
        ),
        case(
            "plugin_protocol_version_2",
            2,
            &["speaks `steerdiff-reward/2`"],
            Untouched,
            |d| plugin(d, "version"),
        ),
        case(
            "plugin_batch_size_zero",
            2,
            &["batch_size is 0"],
            Untouched,
            |d| plugin(d, "batch0"),
        ),
        case(
            "plugin_unknown_encoding",
            2,
            &["unknown variant `jpeg`"],
            Untouched,
            |d| plugin(d, "jpeg"),
        ),
        case(
            "plugin_no_encodings",
            2,
            &["accepts encodings []"],
            Untouched,
            |d| plugin(d, "noenc"),
        ),
        case(
            "plugin_unknown_direction",
            2,
            &["unknown variant `sideways`"],
            Untouched,
            |d| plugin(d, "sideways"),
        ),
        case("plugin_unknown_input", 2, &["audio"], Untouched, |d| {
            plugin(d, "audio")
        }),
        case(
            "plugin_scores_wrong_ids",
            2,
            &["unexpected ids", "one score per requested id"],
            Untouched,
            |d| plugin(d, "wrongids"),
        ),
        case(
            "plugin_scores_a_list",
            2,
            &["not a score response"],
            Untouched,
            |d| plugin(d, "scorelist"),
        ),
        case(
            "plugin_scores_strings",
            2,
            &["not a score response", "\"high\""],
            Untouched,
            |d| plugin(d, "scorestr"),
        ),
        Case {
            interrupt_ms: Some(1500),
            ..case(
                "sigint_while_a_plugin_hangs",
                130,
                &["stopping"],
                Untouched,
                |d| {
                    std::fs::create_dir(d.join("out")).unwrap();
                    write(&d.join("out/keep.txt"), "mine");
                    faulty(d, "hang", &[])
                },
            )
        },
    ]
}
