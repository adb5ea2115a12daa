//! Hostile inputs: numeric and named flags.

use super::setup::*;
use super::{case, Case, Untouched};

/// The cases of this category.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        // ---- 5. numeric and named flags ----
        case(
            "cfg_nan",
            2,
            &["CFG scale must be a finite number, got NaN"],
            Untouched,
            |d| gen(d, &["--class", "star", "--cfg", "nan"]),
        ),
        case(
            "cfg_inf",
            2,
            &["CFG scale must be a finite number, got inf"],
            Untouched,
            |d| gen(d, &["--class", "star", "--cfg", "inf"]),
        ),
        case("cfg_minus_inf", 2, &["got -inf"], Untouched, |d| {
            gen(d, &["--class", "star", "--cfg=-inf"])
        }),
        case(
            "eta_negative",
            2,
            &["eta must be a finite number ≥ 0 (got -1)"],
            Untouched,
            |d| gen(d, &["--eta=-1"]),
        ),
        case(
            "steps_zero",
            2,
            &["steps must be at least 1"],
            Untouched,
            |d| gen_raw(d, &["--steps", "0", "-n", "1"]),
        ),
        case("num_zero", 2, &["-n must be at least 1"], Untouched, |d| {
            gen_raw(d, &["--steps", "2", "-n", "0"])
        }),
        case(
            "shard_index_past_count",
            2,
            &["--shard", "got `3/2`"],
            Untouched,
            |d| gen(d, &["--shard", "3/2"]),
        ),
        case(
            "shard_zero_of_zero",
            2,
            &["--shard", "got `0/0`"],
            Untouched,
            |d| gen(d, &["--shard", "0/0"]),
        ),
        case(
            "shard_not_a_fraction",
            2,
            &["--shard expects I/N", "got `x`"],
            Untouched,
            |d| gen(d, &["--shard", "x"]),
        ),
        case(
            "seed_out_of_range",
            2,
            &["--seed", "18446744073709551616"],
            Untouched,
            |d| gen(d, &["--seed", "18446744073709551616"]),
        ),
        case(
            "seed_negative_not_minus_one",
            2,
            &["--seed", "or -1 for a random seed"],
            Untouched,
            |d| gen(d, &["--seed=-2"]),
        ),
        case(
            "lambda_nan_with_fk",
            2,
            &["--lambda must be a finite number", "NaN"],
            Untouched,
            |d| fk(d, "classifier", &["--lambda", "nan"]),
        ),
        case(
            "particles_zero",
            2,
            &["--particles must be at least 1"],
            Untouched,
            |d| fk(d, "classifier", &["--particles", "0"]),
        ),
        case(
            "strength_two_on_img2img",
            2,
            &["img2img strength must be in (0, 1] (got 2)"],
            Untouched,
            |d| {
                let img = image_file(&d.join("init.png"), 16, 16);
                sd_gen(d, &fixture_sd(), &["--init-image", &img, "--strength", "2"])
            },
        ),
        case(
            "width_not_a_multiple_of_the_vae_scale",
            2,
            &["16×17", "multiples of 2"],
            Untouched,
            |d| sd_gen(d, &fixture_sd(), &["--width", "17"]),
        ),
        case(
            "unknown_class",
            2,
            &["unknown toy class `unicorn`", "valid: circle"],
            Untouched,
            |d| gen(d, &["--class", "unicorn"]),
        ),
        case(
            "unknown_sampler",
            2,
            &["unknown sampler `warp`"],
            Untouched,
            |d| gen(d, &["--sampler", "warp"]),
        ),
        case(
            "unknown_reward",
            2,
            &["--reward `nope`", "the toy model's rewards"],
            Untouched,
            |d| fk(d, "nope", &[]),
        ),
        case(
            "cfg_interval_reversed",
            2,
            &["--cfg-interval 2,1"],
            Untouched,
            |d| gen(d, &["--class", "star", "--cfg-interval", "2,1"]),
        ),
        case(
            "unknown_device",
            2,
            &["unknown --device `tpu`"],
            Untouched,
            |d| gen(d, &["--device", "tpu"]),
        ),
        case(
            "max_batch_zero",
            2,
            &["--max-batch must be at least 1"],
            Untouched,
            |d| gen(d, &["--max-batch", "0"]),
        ),
    ]
}
