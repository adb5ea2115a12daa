//! The T5 text encoder of SD3 and FLUX (T5 v1.1 XXL; Raffel et al. 2020): its tokenizer
//! (`tokenizer.json`, through the `tokenizers` crate) and candle-transformers'
//! `T5EncoderModel`, with transformers' `config.json` read strictly.
//!
//! Prompts are tokenized as diffusers does for these pipelines: special tokens added (`</s>`
//! at the end), truncated to `max_sequence_length` keeping the `</s>`, padded with `<pad>`, and
//! encoded without an attention mask (SD3 and FLUX pass none).

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::t5::{ActivationWithOptionalGating, Config, T5EncoderModel};
use serde_json::Value;

use super::config::{Bounds, ConfigReader, TRANSFORMERS_GENERIC};
use super::hub::{in_folder, ModelFiles};
use super::weights::{component_weights, load_error, var_builder};
use crate::{Error, Result};

/// A T5 tokenizer from `tokenizer.json` and `tokenizer_config.json`.
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `</s>`.
    pub eos: u32,
    /// `<pad>`.
    pub pad: u32,
}

impl T5Tokenizer {
    /// Loads `folder/tokenizer.json` (a repo with only `spiece.model` is refused with the fix).
    pub fn load(files: &ModelFiles, folder: &str) -> Result<T5Tokenizer> {
        let Some(path) = files.find(&in_folder(folder, "tokenizer.json"))? else {
            return Err(Error::Spec(format!(
                "{}: `{}` is missing; steerdiff reads T5 tokenizers from tokenizer.json (convert \
                 a spiece.model with transformers: T5TokenizerFast.from_pretrained(…)\
                 .save_pretrained(…))",
                files.source().describe(),
                in_folder(folder, "tokenizer.json")
            )));
        };
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Spec(format!("cannot load `{}`: {e}", path.display())))?;
        let config: Value = match files.find(&in_folder(folder, "tokenizer_config.json"))? {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| Error::Spec(format!("cannot read `{}`: {e}", p.display())))?;
                serde_json::from_str(&text)
                    .map_err(|e| Error::Spec(format!("`{}` is not valid JSON: {e}", p.display())))?
            }
            None => Value::Null,
        };
        let id = |key: &str, default: &str| -> Result<u32> {
            let tok = config.get(key).and_then(Value::as_str).unwrap_or(default);
            inner.token_to_id(tok).ok_or_else(|| {
                Error::Spec(format!(
                    "`{}`: {key} `{tok}` is not in the vocabulary",
                    path.display()
                ))
            })
        };
        Ok(T5Tokenizer {
            eos: id("eos_token", "</s>")?,
            pad: id("pad_token", "<pad>")?,
            inner,
        })
    }

    /// `tokens… </s> <pad>…`, exactly `max_len` ids.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        if max_len == 0 {
            return Err(Error::Spec("max_sequence_length must be at least 1".into()));
        }
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Spec(format!("cannot tokenize {text:?}: {e}")))?;
        let mut ids: Vec<u32> = enc.get_ids().iter().copied().take(max_len - 1).collect();
        ids.push(self.eos);
        ids.resize(max_len, self.pad);
        Ok(ids)
    }
}

/// Reads transformers' `T5Config` (encoder side) into candle's.
pub fn read_config(mut c: ConfigReader) -> Result<Config> {
    if let Some(t) = c.str_opt("model_type")? {
        if t != "t5" {
            return Err(Error::Spec(format!(
                "{}: model_type = {t}; a T5 encoder (t5) is expected",
                c.file
            )));
        }
    }
    let ff = c
        .str_opt("feed_forward_proj")?
        .unwrap_or_else(|| "relu".into());
    let (gated, activation, dense) = match ff.as_str() {
        "relu" => (false, candle_nn::Activation::Relu, "relu"),
        "gated-gelu" => (true, candle_nn::Activation::NewGelu, "gelu_new"),
        "gated-silu" => (true, candle_nn::Activation::Silu, "silu"),
        other => {
            return Err(Error::Spec(format!(
                "{}: feed_forward_proj = {other} is not supported (relu, gated-gelu, gated-silu)",
                c.file
            )))
        }
    };
    // transformers derives these two from feed_forward_proj; a mismatch is a hand edit.
    if let Some(d) = c.str_opt("dense_act_fn")? {
        if d != dense {
            return Err(Error::Spec(format!(
                "{}: dense_act_fn = {d} contradicts feed_forward_proj = {ff}",
                c.file
            )));
        }
    }
    c.ignore(&["is_gated_act"]);
    let cfg = Config {
        vocab_size: c.usize("vocab_size", Bounds::COUNT)?,
        d_model: c.usize("d_model", Bounds::COUNT)?,
        d_kv: c.usize("d_kv", Bounds::COUNT)?,
        d_ff: c.usize("d_ff", Bounds::COUNT)?,
        num_layers: c.usize("num_layers", Bounds::COUNT)?,
        num_decoder_layers: None,
        num_heads: c.usize("num_heads", Bounds::COUNT)?,
        relative_attention_num_buckets: c.usize_or(
            "relative_attention_num_buckets",
            32,
            Bounds::COUNT,
        )?,
        relative_attention_max_distance: c.usize_or(
            "relative_attention_max_distance",
            128,
            Bounds::COUNT,
        )?,
        dropout_rate: 0.0,
        layer_norm_epsilon: c.f64_or("layer_norm_epsilon", 1e-6, Bounds::POSITIVE)?,
        initializer_factor: 1.0,
        feed_forward_proj: ActivationWithOptionalGating { gated, activation },
        tie_word_embeddings: c.bool_or("tie_word_embeddings", true)?,
        is_decoder: false,
        is_encoder_decoder: c.bool_or("is_encoder_decoder", true)?,
        use_cache: false,
        pad_token_id: c.usize_or("pad_token_id", 0, Bounds::INDEX.at_most(u32::MAX as f64))?,
        eos_token_id: c.usize_or("eos_token_id", 1, Bounds::INDEX.at_most(u32::MAX as f64))?,
        decoder_start_token_id: None,
    };
    c.ignore(&[
        "num_decoder_layers",
        "dropout_rate",
        "classifier_dropout",
        "initializer_factor",
        "use_cache",
        "scale_decoder_outputs",
        "decoder_start_token_id",
        "n_positions",
        "output_past",
    ]);
    c.ignore(TRANSFORMERS_GENERIC);
    c.finish()?;
    Ok(cfg)
}

/// A T5 encoder with its tokenizer.
pub struct T5Text {
    /// The tokenizer.
    pub tokenizer: T5Tokenizer,
    /// The configuration.
    pub config: Config,
    // candle's forward takes `&mut self` (its decoder keeps a cache); the encoder has none to
    // keep, so the lock only serialises calls.
    model: Mutex<T5EncoderModel>,
    device: Device,
}

impl std::fmt::Debug for T5Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Text")
            .field("d_model", &self.config.d_model)
            .field("num_layers", &self.config.num_layers)
            .finish_non_exhaustive()
    }
}

impl T5Text {
    /// Loads `tok_dir/` and `enc_dir/` (config.json + weights) of a diffusers repo.
    pub fn load(
        files: &ModelFiles,
        tok_dir: &str,
        enc_dir: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<T5Text> {
        let config_path = in_folder(enc_dir, "config.json");
        let config = read_config(ConfigReader::open(&files.get(&config_path)?, &config_path)?)?;
        let tokenizer = T5Tokenizer::load(files, tok_dir)?;
        let weights = component_weights(files, enc_dir, "model")?;
        let model = T5EncoderModel::load(var_builder(&weights, dtype, device)?, &config)
            .map_err(|e| load_error(&format!("the T5 encoder ({enc_dir})"), &weights, e))?;
        Ok(T5Text {
            tokenizer,
            config,
            model: Mutex::new(model),
            device: device.clone(),
        })
    }

    /// Token ids of each text, `max_len` long.
    pub fn tokenize(&self, texts: &[&str], max_len: usize) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| self.tokenizer.encode(t, max_len))
            .collect()
    }

    /// The last hidden state `[N, max_len, d_model]` (f32).
    pub fn encode(&self, texts: &[&str], max_len: usize) -> Result<Tensor> {
        let ids = self.tokenize(texts, max_len)?;
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (texts.len(), max_len), &self.device)?;
        let mut model = self
            .model
            .lock()
            .map_err(|_| Error::Spec("the T5 encoder panicked in another thread".into()))?;
        Ok(model.forward(&ids)?.to_dtype(DType::F32)?)
    }
}
