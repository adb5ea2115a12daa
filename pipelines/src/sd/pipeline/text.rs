//! One tokenizer + CLIP text encoder pair of a diffusers repo (SDXL has two), with its weights
//! from its folder, a single file, and LoRA layers merged.

use candle_core::{DType, Device};

use crate::sd::clip::{ClipTextEncoder, ClipTokenizer, TextOutput};
use crate::sd::component_weights::ComponentWeights;
use crate::sd::config::{ClipTextConfig, ConfigReader};
use crate::sd::hub::ModelFiles;
use crate::sd::lora::LoraHook;
use crate::sd::weights::component_weights;
use crate::Result;

/// One tokenizer + text encoder pair (SDXL has two).
#[derive(Debug, Clone)]
pub struct TextBranch {
    /// The tokenizer.
    pub tokenizer: ClipTokenizer,
    /// The text encoder.
    pub encoder: ClipTextEncoder,
}

impl TextBranch {
    /// Loads `tok_dir/` (tokenizer) and `enc_dir/` (config.json + weights) of a diffusers repo.
    pub fn load(
        files: &ModelFiles,
        tok_dir: &str,
        enc_dir: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<TextBranch> {
        let weights = ComponentWeights::Files(component_weights(files, enc_dir, "model")?);
        TextBranch::load_from(files, tok_dir, enc_dir, &weights, None, dtype, device)
    }

    /// Loads the tokenizer `tok_dir/` and the config `enc_dir/config.json` of a diffusers
    /// repo, with the encoder's weights from `weights` (and `lora`'s modules merged).
    pub fn load_from(
        files: &ModelFiles,
        tok_dir: &str,
        enc_dir: &str,
        weights: &ComponentWeights,
        lora: Option<&LoraHook>,
        dtype: DType,
        device: &Device,
    ) -> Result<TextBranch> {
        let config_path = format!("{enc_dir}/config.json");
        let cfg =
            ClipTextConfig::read(ConfigReader::open(&files.get(&config_path)?, &config_path)?)?;
        let tokenizer = ClipTokenizer::load(files, tok_dir, cfg.max_position_embeddings)?;
        let encoder = weights.build(
            &format!("the text encoder ({enc_dir})"),
            dtype,
            device,
            lora,
            |vb| ClipTextEncoder::new(vb, cfg),
        )?;
        Ok(TextBranch { tokenizer, encoder })
    }

    /// Encodes `texts` (padded to the tokenizer's length).
    pub fn encode(&self, texts: &[&str], device: &Device) -> Result<TextOutput> {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        self.encoder.encode_ids(&ids, device)
    }
}
