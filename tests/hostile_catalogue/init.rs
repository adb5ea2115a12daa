//! Hostile inputs: init latents and images on tiny-sd.

use serde_json::{json, Value};

use super::setup::*;
use super::{case, Case, Untouched};

/// The cases of this category.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        // ---- 10. init inputs on tiny-sd ----
        case(
            "init_latents_wrong_count",
            2,
            &["holds 100 numbers", "need 256"],
            Untouched,
            |d| {
                let f = write(&d.join("lat.json"), json!(vec![0.1; 100]).to_string());
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_nested_of_the_wrong_shape",
            2,
            &["--init-latents", "[4, 8, 8]"],
            Untouched,
            |d| {
                let f = write(&d.join("lat.json"), nested(&[1, 8, 4, 8]).to_string());
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_string_element",
            2,
            &["(\"x\") is not a finite number"],
            Untouched,
            |d| {
                let mut v = vec![json!(0.1); 256];
                v[255] = json!("x");
                let f = write(&d.join("lat.json"), Value::Array(v).to_string());
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_beyond_f32",
            2,
            &["entry 1 (1e", "is not a finite number of f32's range"],
            Untouched,
            |d| {
                let mut v = vec![json!(0.1); 256];
                v[0] = json!(1e308);
                let f = write(&d.join("lat.json"), Value::Array(v).to_string());
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_not_json",
            2,
            &["is not JSON"],
            Untouched,
            |d| {
                let f = write(&d.join("lat.json"), "[[[");
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_latents_field_not_a_list",
            2,
            &["`initial_latents` is not a list"],
            Untouched,
            |d| {
                let f = write(&d.join("lat.json"), r#"{"initial_latents": "noise"}"#);
                sd_gen(d, &fixture_sd(), &["--init-latents", &f])
            },
        ),
        case(
            "init_image_not_an_image",
            2,
            &["cannot read --init-image"],
            Untouched,
            |d| {
                let f = write(&d.join("init.png"), "this is text");
                sd_gen(d, &fixture_sd(), &["--init-image", &f])
            },
        ),
        case(
            "init_image_of_another_size",
            2,
            &["--init-image is 16×24", "--height/--width ask for 16×16"],
            Untouched,
            |d| {
                let f = image_file(&d.join("init.png"), 24, 16);
                sd_gen(
                    d,
                    &fixture_sd(),
                    &["--init-image", &f, "--width", "16", "--height", "16"],
                )
            },
        ),
        case(
            "init_image_empty_file",
            2,
            &["cannot read --init-image", "unexpected end of file"],
            Untouched,
            |d| {
                let f = write(&d.join("init.png"), b"");
                sd_gen(d, &fixture_sd(), &["--init-image", &f])
            },
        ),
    ]
}
