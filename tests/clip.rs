//! CLIP (image–text model, rewards, zero-shot classifier) against transformers on the tiny
//! fixture `tests/fixtures/tiny-clip` (written by its `make_fixture.py` with transformers'
//! own `CLIPModel` and `CLIPImageProcessor` on random weights).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde_json::Value;
use steerdiff::pipelines::sd::clip_model::ClipModel;
use steerdiff::pipelines::sd::clip_rewards::{ClipScore, ClipZeroShot, LinearChain};
use steerdiff::pipelines::sd::rewards::Pixels;
use steerdiff::pipelines::sd::{ModelFiles, Source};

use common::{flat, floats, max_diff};

fn fixture() -> PathBuf {
    common::fixture("tiny-clip")
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap()
}

fn load() -> ClipModel {
    let files = ModelFiles::new(Source::Folder(fixture().join("model")));
    ClipModel::from_files(&files, &Device::Cpu).unwrap()
}

#[test]
fn clip_matches_transformers() {
    let clip = load();
    let all = cases();
    assert!(
        (clip.logit_scale - all["logit_scale"].as_f64().unwrap()).abs() < 1e-4,
        "logit scale"
    );
    let mlp = LinearChain::load(&fixture().join("aesthetic.safetensors")).unwrap();
    for (i, case) in all["cases"].as_array().unwrap().iter().enumerate() {
        let prompts: Vec<&str> = case["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let want_ids: Vec<Vec<u32>> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        for (p, ids) in prompts.iter().zip(&want_ids) {
            assert_eq!(&clip.tokenizer.encode(p).unwrap(), ids, "case {i}: {p}");
        }
        let text = clip.text_embeds(&prompts).unwrap();
        let e_text = max_diff(&flat(&text), &floats(&case["text_embeds"]));

        // The towers on transformers' own pixel values.
        let (w, h) = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        let want_pv = floats(&case["pixel_values"]);
        let side = (want_pv.len() / 3) as f64;
        let s = side.sqrt() as usize;
        let pv = Tensor::from_vec(want_pv.clone(), (1, 3, s, s), &Device::Cpu).unwrap();
        let img = clip.pixel_embeds(&pv).unwrap();
        let e_img = max_diff(&flat(&img), &floats(&case["image_embeds"]));
        let logits = clip.logits(&img, &text).unwrap();
        let e_logits = max_diff(&flat(&logits), &floats(&case["logits_per_image"]));
        let aesthetic = mlp.forward(&img).unwrap();
        let e_aes = max_diff(&flat(&aesthetic), &floats(&case["aesthetic"]));

        // Our preprocessing of the same 8-bit image.
        let rgb: Vec<u8> = case["image_hwc_u8"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let (ours, _, _) = clip.preprocess.rgb8(&rgb, w, h).unwrap();
        let e_pre = max_diff(&ours, &want_pv);
        eprintln!(
            "case {i} ({w}×{h}): text {e_text:.1e}, image {e_img:.1e}, logits {e_logits:.1e}, \
             aesthetic {e_aes:.1e}, preprocessing {e_pre:.3} (normalised units)"
        );
        assert!(e_text <= 1e-4 && e_img <= 1e-4, "case {i}: embeddings");
        assert!(
            e_logits <= 1e-3 && e_aes <= 1e-4,
            "case {i}: logits / aesthetic"
        );
        if (w, h) == (s as u32, s as u32) {
            assert!(e_pre <= 1e-5, "case {i}: no resize must be exact ({e_pre})");
        } else {
            // PIL's and the image crate's bicubic round differently: a few 8-bit levels,
            // /(255·std≈0.27) in normalised units.
            assert!(e_pre <= 0.1, "case {i}: preprocessing differs by {e_pre}");
        }
    }
}

#[test]
fn clip_rewards_and_zero_shot_classes() {
    use steerdiff::guidance::{Classifier, Condition, Reward, RewardContext, StepPoint};
    let clip = Arc::new(load());
    let case = &cases()["cases"][0];
    let rgb: Vec<f32> = case["image_hwc_u8"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as f32 / 255.0)
        .collect();
    // [1, 3, 30, 30] in [0, 1], fed as "latents" through an identity decoder.
    let img = Tensor::from_vec(rgb, (1, 30, 30, 3), &Device::Cpu)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap();
    let identity = Pixels::Custom(Arc::new(|x: &Tensor| Ok(x.clone())));
    let prompts = ["a red cat", "a quick fox", "blue"];
    let score = ClipScore::new(clip.clone(), identity.clone(), &prompts).unwrap();
    let logits = floats(&case["logits_per_image"]);
    let scale = clip.logit_scale as f32;
    let at = StepPoint::CLEAN;
    for (k, logit) in logits.iter().enumerate() {
        let conds = [Condition::Prompt(k as u32)];
        let cx = RewardContext { conds: &conds, at };
        let r = score.score(&img, &cx).unwrap()[0] as f32;
        // 100·cos = 100 · logit / scale.
        assert!(
            (r - 100.0 * logit / scale).abs() < 1e-3,
            "prompt {k}: {r} vs {}",
            100.0 * logit / scale
        );
    }
    let conds = [Condition::Null];
    let cx = RewardContext { conds: &conds, at };
    assert!(score.score(&img, &cx).unwrap()[0].is_nan());

    let zs = ClipZeroShot::new(clip.clone(), identity, &prompts).unwrap();
    let lp = zs.log_probs(&img).unwrap();
    let z: f32 = logits.iter().map(|l| l.exp()).sum();
    for (k, logit) in logits.iter().enumerate() {
        let want = logit - z.ln();
        assert!((lp[0][k] as f32 - want).abs() < 1e-3, "{lp:?}");
    }
}

#[test]
fn bad_clip_inputs_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    // An MLP file without `layers.K.weight`.
    let bad = dir.path().join("bad.safetensors");
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &[("other.weight".to_string(), t)].into_iter().collect(),
        &bad,
    )
    .unwrap();
    let e = LinearChain::load(&bad).unwrap_err().to_string();
    assert!(e.contains("layers.K.weight"), "{e}");
    // A pickle is refused before anything is read.
    let pickle = dir.path().join("sac+logos+ava1-l14-linearMSE.pth");
    std::fs::write(&pickle, b"\x80\x02}q\x00.").unwrap();
    let e = LinearChain::load(&pickle).unwrap_err().to_string();
    assert!(e.contains("pickle") || e.contains("safetensors"), "{e}");
    // A CLIP folder whose config is a text encoder's.
    let copy = dir.path().join("model");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(fixture().join("model")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let cfg = copy.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"model_type\": \"clip\"", "\"model_type\": \"t5\"");
    std::fs::write(&cfg, text).unwrap();
    let e = ClipModel::from_files(&ModelFiles::new(Source::Folder(copy)), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model_type") && e.contains("t5"), "{e}");
}
