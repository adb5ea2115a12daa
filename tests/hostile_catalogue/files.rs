//! Hostile inputs: info, merge and the output folder.

use serde_json::json;

use super::setup::*;
use super::{case, Case, Untouched};

/// The cases of this category.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        // ---- 7. info ----
        case(
            "info_empty_file",
            2,
            &["is not a PNG file"],
            Untouched,
            |d| strings(&["info", &write(&d.join("empty.png"), b"")]),
        ),
        case(
            "info_png_cut_in_its_header",
            2,
            &["is not a PNG file", "unexpected end of file"],
            Untouched,
            |d| {
                let png = png_with_steerdiff_text("{}");
                strings(&["info", &write(&d.join("cut.png"), &png[..20])])
            },
        ),
        case(
            "info_png_cut_in_its_image_data",
            2,
            &["cut.png", "unexpected end of file"],
            Untouched,
            |d| {
                let full = image_file(&d.join("full.png"), 16, 16);
                let bytes = std::fs::read(&full).unwrap();
                std::fs::remove_file(&full).unwrap();
                strings(&[
                    "info",
                    &write(&d.join("cut.png"), &bytes[..bytes.len() - 20]),
                ])
            },
        ),
        case(
            "info_a_jpeg",
            2,
            &["is not a PNG file", "Invalid PNG signature"],
            Untouched,
            |d| {
                let jpeg = d.join("photo.jpg");
                image::RgbImage::new(4, 4).save(&jpeg).unwrap();
                strings(&["info", &s(&jpeg)])
            },
        ),
        case(
            "info_a_folder",
            2,
            &["is not a PNG file", "Is a directory"],
            Untouched,
            |d| strings(&["info", &s(d)]),
        ),
        case(
            "info_forged_record_not_json",
            2,
            &["is not a steerdiff record"],
            Untouched,
            |d| {
                strings(&[
                    "info",
                    &write(&d.join("forged.png"), png_with_steerdiff_text("{not json")),
                ])
            },
        ),
        case(
            "info_forged_record_of_wrong_types",
            2,
            &["is not a steerdiff record", "invalid type"],
            Untouched,
            |d| {
                strings(&[
                    "info",
                    &write(
                        &d.join("forged.png"),
                        png_with_steerdiff_text("{\"steerdiff\": 1}"),
                    ),
                ])
            },
        ),
        case(
            "info_bad_crc",
            2,
            &["is not a PNG file", "CRC error"],
            Untouched,
            |d| {
                let mut png = png_with_steerdiff_text("{}");
                png[29] ^= 0xff; // the IHDR's CRC
                strings(&["info", &write(&d.join("crc.png"), png)])
            },
        ),
        // ---- 8. merge ----
        case(
            "merge_shards_of_other_seeds",
            2,
            &["other parameters than shard 0", "\"seed\""],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                let b = shard(d, "b1", 1, &["--seed", "5"]);
                merge(&[&a, &b], &out(d))
            },
        ),
        case(
            "merge_shards_of_other_steps",
            2,
            &["other parameters than shard 0", "\"steps\""],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                let b = shard(d, "b1", 1, &["--steps", "3"]);
                merge(&[&a, &b], &out(d))
            },
        ),
        case(
            "merge_the_same_shard_twice",
            2,
            &["shard indices [0, 0]"],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                merge(&[&a, &a], &out(d))
            },
        ),
        case(
            "merge_a_missing_shard_folder",
            2,
            &["cannot read the shard record", "No such file"],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                merge(&[&a, &s(&d.join("a1"))], &out(d))
            },
        ),
        case(
            "merge_a_whole_run",
            2,
            &["is not a shard: its parameters have no `shard`"],
            Untouched,
            |d| {
                let whole = s(&d.join("whole"));
                run_ok(&["generate", "--steps", "2", "-n", "2", "-o", &whole]);
                merge(&[&whole], &out(d))
            },
        ),
        case("merge_into_one_of_the_shards", 2, &["-o"], Untouched, |d| {
            let a = shard(d, "a0", 0, &[]);
            let b = shard(d, "a1", 1, &[]);
            merge(&[&a, &b], &a)
        }),
        case(
            "merge_a_shard_of_another_schema",
            2,
            &["schema 1", "merges schema 2"],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                let b = shard(d, "a1", 1, &[]);
                edit_json(&d.join("a1/samples.json"), |v| {
                    v["parameters"]["schema"] = json!(1)
                });
                merge(&[&a, &b], &out(d))
            },
        ),
        case(
            "merge_shards_of_an_unknown_schema",
            2,
            &["schema"],
            Untouched,
            |d| {
                let a = shard(d, "a0", 0, &[]);
                let b = shard(d, "a1", 1, &[]);
                for name in ["a0", "a1"] {
                    edit_json(&d.join(name).join("samples.json"), |v| {
                        v["parameters"]["schema"] = json!(99)
                    });
                }
                merge(&[&a, &b], &out(d))
            },
        ),
        // ---- 9. outputs ----
        case(
            "output_is_a_regular_file",
            2,
            &["cannot create output directory", "File exists"],
            Untouched,
            |d| {
                write(&d.join("out"), "precious");
                gen(d, &[])
            },
        ),
        case(
            "output_under_a_regular_file",
            2,
            &["cannot create output directory", "Not a directory"],
            Untouched,
            |d| {
                write(&d.join("file"), "precious");
                let o = s(&d.join("file/sub"));
                strings(&["generate", "--steps", "2", "-n", "1", "-o", &o])
            },
        ),
        case(
            "output_grid_png_is_a_folder",
            2,
            &["grid.png", "a directory of that name is in the way"],
            Untouched,
            |d| {
                std::fs::create_dir_all(d.join("out/grid.png")).unwrap();
                write(&d.join("out/keep.txt"), "mine");
                gen(d, &[])
            },
        ),
        case(
            "output_samples_json_is_a_folder",
            2,
            &["samples.json", "a directory of that name is in the way"],
            Untouched,
            |d| {
                std::fs::create_dir_all(d.join("out/samples.json/inner")).unwrap();
                gen(d, &[])
            },
        ),
        case(
            "trace_into_a_missing_folder",
            2,
            &["cannot write trace file", "No such file or directory"],
            Untouched,
            |d| gen(d, &["--trace", &s(&d.join("nowhere/trace.jsonl"))]),
        ),
        case(
            "trace_under_a_regular_file",
            2,
            &["cannot write trace file", "Not a directory"],
            Untouched,
            |d| {
                write(&d.join("file"), "precious");
                gen(d, &["--trace", &s(&d.join("file/trace.jsonl"))])
            },
        ),
    ]
}
