//! Bad GGUF files and bad `steerdiff quantize` commands are refused with exit code 2 and a
//! message naming the problem, never a panic, and nothing is written or replaced.

mod common;

use std::path::Path;
use std::process::Output;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use steerdiff::pipelines::sd::quantize::{quantize_flux, write_gguf};

use common::steerdiff;

fn fixture(name: &str) -> std::path::PathBuf {
    common::fixture("tiny-dit").join(name)
}

/// `generate` on the GGUF `model` with the tiny AE and text encoders: must fail with exit 2,
/// a message containing every one of `words`, and no panic.
fn refused(model: &Path, words: &[&str]) {
    let out = model.with_extension("out");
    let p = |p: &Path| p.display().to_string();
    let o = steerdiff(&[
        "generate",
        "--model",
        &p(model),
        "--ae",
        &p(&fixture("ae.safetensors")),
        "--text-encoders",
        &p(&common::fixture("tiny-text-encoders")),
        "--prompt",
        "x",
        "--steps",
        "1",
        "-o",
        &p(&out),
    ]);
    check(&o, words);
    assert!(!out.join("samples.json").exists());
}

fn check(o: &Output, words: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in words {
        assert!(err.contains(w), "`{w}` not in: {err}");
    }
}

fn write(path: &Path, metadata: &[(&str, &Value)], tensors: &[(&str, &QTensor)]) {
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, metadata, tensors).unwrap();
}

fn q(shape: &[usize], t: GgmlDType) -> QTensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1).collect();
    QTensor::quantize(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap(), t).unwrap()
}

#[test]
fn bad_gguf_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let flux = quantize_flux(&fixture("flux.safetensors"), GgmlDType::Q8_0).unwrap();
    let all: Vec<(&str, &QTensor)> = flux.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let save = |name: &str, tensors: &[(&str, &QTensor)], meta: &[(&str, &Value)]| {
        let path = d.join(name);
        write(&path, meta, tensors);
        path
    };
    let flux_arch = Value::String("flux".into());

    // Another architecture (a llama.cpp LLM), by its metadata.
    let llama = Value::String("llama".into());
    let weights = q(&[64, 64], GgmlDType::Q8_0);
    let path = d.join("llama.gguf");
    write(
        &path,
        &[("general.architecture", &llama)],
        &[("blk.0.attn_q.weight", &weights)],
    );
    refused(&path, &["llama.gguf", "`llama` model", "FLUX"]);

    // No architecture and no FLUX tensors.
    let path = d.join("other.gguf");
    write(&path, &[], &[("blk.0.attn_q.weight", &weights)]);
    refused(&path, &["no FLUX transformer", "double_blocks"]);

    // A tensor of the wrong width.
    let mut bad = all.clone();
    let qkv = "double_blocks.0.img_attn.qkv.weight";
    let narrow = q(&[90, 32], GgmlDType::Q8_0);
    bad.iter_mut().find(|(n, _)| *n == qkv).unwrap().1 = &narrow;
    let path = save(
        "wrong-width.gguf",
        &bad,
        &[("general.architecture", &flux_arch)],
    );
    refused(&path, &[qkv, "[90, 32]", "[96, 32]"]);

    // A tensor missing.
    let mut bad = all.clone();
    bad.retain(|(n, _)| *n != "final_layer.linear.weight");
    let path = save("missing.gguf", &bad, &[]);
    refused(&path, &["final_layer.linear.weight", "is missing"]);

    // Truncated: the whole header, part of the data.
    let good = d.join("good.gguf");
    let mut f = std::fs::File::create(&good).unwrap();
    write_gguf(&mut f, &flux).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let path = d.join("truncated.gguf");
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    refused(&path, &["truncated.gguf", "is truncated"]);
    // … and cut inside the header.
    std::fs::write(&path, &bytes[..200]).unwrap();
    refused(&path, &["truncated or damaged"]);

    // An unsupported type: Q8_1 (candle reads it but has no product for it) and IQ2_XXS
    // (id 16, which candle does not know), patched into the first tensor's type field.
    let mut bad = all.clone();
    let q81 = q(bad[3].1.shape().dims(), GgmlDType::Q8_1);
    bad[3].1 = &q81;
    let name = bad[3].0;
    let path = save("q8_1.gguf", &bad, &[]);
    refused(&path, &[name, "Q8_1", "cannot load", "Q4_K"]);
    let mut bytes = std::fs::read(&good).unwrap();
    let first = flux.tensors[0].0.as_bytes();
    let at = bytes.windows(first.len()).position(|w| w == first).unwrap();
    let rank = flux.tensors[0].1.shape().rank();
    let type_at = at + first.len() + 4 + 8 * rank;
    bytes[type_at..type_at + 4].copy_from_slice(&16u32.to_le_bytes());
    let path = d.join("iq2.gguf");
    std::fs::write(&path, &bytes).unwrap();
    refused(&path, &["IQ2_XXS", "cannot load"]);

    // An alignment of 0 (candle's own reader would divide by it).
    let zero = Value::U32(0);
    let path = save("align0.gguf", &all, &[("general.alignment", &zero)]);
    refused(&path, &["alignment of 0"]);

    // Long metadata (a licence text, a tokenizer's arrays) is skipped, not refused.
    let long = Value::String("x".repeat(100_000));
    let words = Value::Array((0..300).map(|i| Value::String(format!("w{i}"))).collect());
    let ids = Value::Array((0..300).map(Value::U32).collect());
    let meta = [
        ("general.license", &long),
        ("tokenizer.words", &words),
        ("general.architecture", &flux_arch),
        ("tokenizer.ids", &ids),
    ];
    let path = save("long-metadata.gguf", &all, &meta);
    let (header, prefix) = steerdiff::pipelines::sd::flux_gguf::check(&path).unwrap();
    assert_eq!((header.architecture.as_deref(), prefix), (Some("flux"), ""));
    assert_eq!(header.tensors.len(), all.len());

    // Not GGUF at all.
    let path = d.join("text.gguf");
    std::fs::write(&path, b"hello, this is not a model file at all").unwrap();
    refused(&path, &["not a GGUF file"]);
}

#[test]
fn quantize_refuses_bad_commands_and_never_clobbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = fixture("flux.safetensors").display().to_string();
    let out = d.join("out.gguf");
    let o = out.display().to_string();
    std::fs::write(&out, b"keep me").unwrap();
    check(
        &steerdiff(&["quantize", &input, &o]),
        &["exists", "--force"],
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let other = d.join("x.gguf").display().to_string();
    check(
        &steerdiff(&["quantize", &input, &other, "--type", "q3_x"]),
        &["unknown quantization type `q3_x`", "q4_k"],
    );
    let ae = fixture("ae.safetensors").display().to_string();
    check(
        &steerdiff(&["quantize", &ae, &other]),
        &["not a FLUX transformer"],
    );
    let txt = d.join("x.bin").display().to_string();
    check(&steerdiff(&["quantize", &input, &txt]), &[".gguf"]);
    let missing = d.join("nowhere/x.gguf").display().to_string();
    check(&steerdiff(&["quantize", &input, &missing]), &["nowhere"]);
    // Nothing was written by the refusals: only the planted file is there.
    let names: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out.gguf")]);
    // --force replaces it with a whole GGUF.
    let r = steerdiff(&["quantize", &input, &o, "--force", "--type", "Q4_K"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(&out).unwrap().starts_with(b"GGUF"));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("→ Q5_0") && err.contains("256"), "{err}");
}
