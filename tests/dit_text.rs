//! SD3's and FLUX's text conditioning against diffusers' own `encode_prompt` on the tiny
//! fixture `tests/fixtures/tiny-text-encoders` (random CLIP-L, CLIP-G and T5 encoders; written
//! by its `make_fixture.py`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use steerdiff::pipelines::sd::dit_text::{FluxText, Sd3Text};
use steerdiff::pipelines::sd::{ModelFiles, Source};

fn fixture() -> PathBuf {
    match std::env::var_os("STEERDIFF_FIXTURES") {
        Some(d) => PathBuf::from(d).join("tiny-text-encoders"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-text-encoders"),
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn files(dir: &Path) -> ModelFiles {
    ModelFiles::new(Source::Folder(dir.to_path_buf()))
}

#[test]
fn sd3_and_flux_prompt_embeddings_match_diffusers() {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap())
            .unwrap();
    let sd3 = Sd3Text::from_files(&files(&fixture()), 96, DType::F32, &Device::Cpu).unwrap();
    // The fixture is laid out as an SD3 repo; FLUX reads its CLIP-L and its T5.
    let folders = [
        ("tokenizer", "text_encoder"),
        ("tokenizer_3", "text_encoder_3"),
    ];
    let flux =
        FluxText::from_folders(&files(&fixture()), folders, DType::F32, &Device::Cpu).unwrap();
    for case in all["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let negative = case["negative_prompt"].as_str().unwrap();
        let len = case["t5_max_length"].as_u64().unwrap() as usize;
        let t5 = sd3.t5.as_ref().unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(case["t5_input_ids"].clone()).unwrap();
        assert_eq!(
            t5.tokenize(&[prompt], len).unwrap()[0],
            want_ids,
            "{prompt}"
        );

        let (ctx, pooled) = sd3.encode(&[prompt, negative], len).unwrap();
        let shape: Vec<usize> =
            serde_json::from_value(case["sd3_prompt_embeds_shape"].clone()).unwrap();
        assert_eq!(&ctx.dims()[1..], &shape[1..]);
        let errs = [
            max_diff(
                &flat(&ctx.get(0).unwrap()),
                &floats(&case["sd3_prompt_embeds"]),
            ),
            max_diff(
                &flat(&ctx.get(1).unwrap()),
                &floats(&case["sd3_negative_prompt_embeds"]),
            ),
            max_diff(&flat(&pooled.get(0).unwrap()), &floats(&case["sd3_pooled"])),
            max_diff(
                &flat(&pooled.get(1).unwrap()),
                &floats(&case["sd3_negative_pooled"]),
            ),
        ];
        let (txt, vec) = flux.encode(&[prompt], len).unwrap();
        let flux_errs = [
            max_diff(&flat(&txt), &floats(&case["flux_prompt_embeds"])),
            max_diff(&flat(&vec), &floats(&case["flux_pooled"])),
        ];
        eprintln!("{prompt:?}: SD3 context/negative/pooled/negative pooled {errs:?}; FLUX txt/vec {flux_errs:?}");
        assert!(
            errs.iter().chain(&flux_errs).all(|&e| e <= 1e-4),
            "{errs:?} {flux_errs:?}"
        );
    }
}

#[test]
fn sd3_without_t5_uses_zero_rows_and_bad_t5_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("repo");
    for sub in [
        "tokenizer",
        "text_encoder",
        "tokenizer_2",
        "text_encoder_2",
        "tokenizer_3",
        "text_encoder_3",
    ] {
        std::fs::create_dir_all(copy.join(sub)).unwrap();
        for f in std::fs::read_dir(fixture().join(sub)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.join(sub).join(f.file_name())).unwrap();
        }
    }
    // An unknown feed-forward kind is refused by name.
    let cfg = copy.join("text_encoder_3/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"gated-gelu\"", "\"gated-swish\"")).unwrap();
    let e = Sd3Text::from_files(&files(&copy), 96, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("feed_forward_proj") && e.contains("gated-swish"),
        "{e}"
    );
    // No T5 at all: diffusers' zeros in its place.
    std::fs::remove_dir_all(copy.join("text_encoder_3")).unwrap();
    let sd3 = Sd3Text::from_files(&files(&copy), 96, DType::F32, &Device::Cpu).unwrap();
    let (ctx, pooled) = sd3.encode(&["a red cat"], 12).unwrap();
    assert_eq!(ctx.dims(), &[1, 16 + 12, 96]);
    assert_eq!(pooled.dims(), &[1, 32 + 48]);
    let t5_rows = flat(&ctx.narrow(1, 16, 12).unwrap());
    assert!(t5_rows.iter().all(|&v| v == 0.0));
}
