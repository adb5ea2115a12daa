//! A diffusers or transformers `config.json` (UNet, VAE, CLIP text), with Python's NaN and
//! Infinity tokens.
#![no_main]
use libfuzzer_sys::fuzz_target;
use steerdiff_guidance::schedule::diffusers::parse_python_json;
use steerdiff_pipelines::sd::config::{ClipTextConfig, ConfigReader, UNetConfig, VaeConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = parse_python_json(text) else {
        return;
    };
    if let Ok(c) = ConfigReader::from_value(value.clone(), "unet/config.json") {
        let _ = UNetConfig::read(c);
    }
    if let Ok(c) = ConfigReader::from_value(value.clone(), "vae/config.json") {
        let _ = VaeConfig::read(c);
    }
    if let Ok(c) = ConfigReader::from_value(value, "text_encoder/config.json") {
        let _ = ClipTextConfig::read(c);
    }
});
