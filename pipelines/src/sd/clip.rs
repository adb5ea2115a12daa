//! CLIP text side: the BPE tokenizer (through the `tokenizers` crate) and the text encoder
//! (transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`, `text_model.*` weights).
//!
//! The encoder is written here rather than taken from candle-transformers because Stable
//! Diffusion needs what candle's versions lack: GELU (OpenCLIP, SD 2.x), configurable LayerNorm
//! ε, every hidden state (SDXL reads the penultimate one), and pooling at the first end-of-text
//! token as current transformers does.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use serde_json::Value;

use super::config::{ClipActivation, ClipTextConfig};
use super::hub::ModelFiles;
use crate::{Error, Result};

/// CLIP's BPE tokenizer with diffusers' call: `[bos] tokens… [eos]` truncated to, and padded
/// up to, `model_max_length` with the pad token.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    /// Sequence length after padding (`model_max_length`).
    pub max_len: usize,
    /// `<|startoftext|>` id.
    pub bos: u32,
    /// `<|endoftext|>` id.
    pub eos: u32,
    /// Padding id (`<|endoftext|>` for SD 1.x, `!` for SD 2.x).
    pub pad: u32,
}

/// A `tokenizer_config.json` token entry: a string or an `AddedToken` object.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl ClipTokenizer {
    /// Loads `folder/tokenizer.json` (or builds the CLIP tokenizer from `vocab.json` +
    /// `merges.txt`, as hub SD repos ship it) with `folder/tokenizer_config.json`.
    /// `max_positions` caps `model_max_length` (the text encoder's position count).
    pub fn load(files: &ModelFiles, folder: &str, max_positions: usize) -> Result<ClipTokenizer> {
        let at = |file: &str| super::hub::in_folder(folder, file);
        let config = files.get(&at("tokenizer_config.json"))?;
        let inner = match files.find(&at("tokenizer.json"))? {
            Some(p) => tokenizers::Tokenizer::from_file(&p).map_err(|e| {
                Error::Spec(format!("cannot load tokenizer `{}`: {e}", p.display()))
            })?,
            None => {
                let vocab = files.get(&at("vocab.json"))?;
                let merges = files.get(&at("merges.txt"))?;
                clip_bpe(&vocab, &merges)?
            }
        };
        ClipTokenizer::new(inner, &config, max_positions)
    }

    /// Wraps a loaded tokenizer with the special tokens and length of `tokenizer_config.json`.
    pub fn new(
        inner: tokenizers::Tokenizer,
        config: &Path,
        max_positions: usize,
    ) -> Result<ClipTokenizer> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| Error::Spec(format!("cannot read `{}`: {e}", config.display())))?;
        let cfg: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("`{}` is not valid JSON: {e}", config.display())))?;
        let id = |key: &str, default: &str| -> Result<u32> {
            let tok = token_text(cfg.get(key)).unwrap_or_else(|| default.to_string());
            inner.token_to_id(&tok).ok_or_else(|| {
                Error::Spec(format!(
                    "`{}`: {key} `{tok}` is not in the tokenizer's vocabulary",
                    config.display()
                ))
            })
        };
        let bos = id("bos_token", "<|startoftext|>")?;
        let eos = id("eos_token", "<|endoftext|>")?;
        let pad = id("pad_token", "<|endoftext|>")?;
        let max_len = cfg
            .get("model_max_length")
            .and_then(|v| v.as_f64())
            .map(|m| (m as usize).min(max_positions))
            .unwrap_or(max_positions);
        if max_len < 2 {
            return Err(Error::Spec(format!(
                "`{}`: model_max_length {max_len} leaves no room for text",
                config.display()
            )));
        }
        Ok(ClipTokenizer {
            inner,
            max_len,
            bos,
            eos,
            pad,
        })
    }

    /// Token ids of `text`: `[bos] tokens [eos] pad…`, exactly `max_len` long (longer prompts
    /// are truncated, as diffusers does).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Spec(format!("cannot tokenize {text:?}: {e}")))?;
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos);
        ids.extend(enc.get_ids().iter().take(self.max_len - 2));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }
}

/// The CLIP tokenizer (as transformers' `CLIPTokenizerFast` converts it) from `vocab.json`
/// and `merges.txt`.
pub fn clip_bpe(vocab: &Path, merges: &Path) -> Result<tokenizers::Tokenizer> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| Error::Spec(format!("cannot read `{}`: {e}", p.display())))
    };
    let vocab_v: Value = serde_json::from_str(&read(vocab)?)
        .map_err(|e| Error::Spec(format!("`{}` is not valid JSON: {e}", vocab.display())))?;
    let merges_v: Vec<Value> = read(merges)?
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| Value::String(l.to_string()))
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": vocab_v.get("<|startoftext|>").cloned().unwrap_or(Value::Null),
             "content": "<|startoftext|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": true, "special": true},
            {"id": vocab_v.get("<|endoftext|>").cloned().unwrap_or(Value::Null),
             "content": "<|endoftext|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": true, "special": true}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex":
                "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
                  "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab_v, "merges": merges_v}
    });
    json.to_string()
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| {
            Error::Spec(format!(
                "cannot build the CLIP tokenizer from `{}` and `{}`: {e}",
                vocab.display(),
                merges.display()
            ))
        })
}

/// One pre-LayerNorm transformer layer of CLIP (text and vision towers alike):
/// `x += attn(ln1(x)); x += fc2(act(fc1(ln2(x))))`.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Layer {
    /// `vb` = `…encoder.layers.{i}`.
    pub(crate) fn new(
        vb: VarBuilder,
        d: usize,
        inner: usize,
        eps: f64,
    ) -> candle_core::Result<Layer> {
        let ln = |vb: VarBuilder| candle_nn::layer_norm(d, eps, vb);
        let a = vb.pp("self_attn");
        Ok(Layer {
            ln1: ln(vb.pp("layer_norm1"))?,
            q: candle_nn::linear(d, d, a.pp("q_proj"))?,
            k: candle_nn::linear(d, d, a.pp("k_proj"))?,
            v: candle_nn::linear(d, d, a.pp("v_proj"))?,
            out: candle_nn::linear(d, d, a.pp("out_proj"))?,
            ln2: ln(vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(d, inner, vb.pp("mlp").pp("fc1"))?,
            fc2: candle_nn::linear(inner, d, vb.pp("mlp").pp("fc2"))?,
        })
    }

    /// `x` `[B, L, D]`; `mask` an additive `[L, L]` attention mask (causal for text).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        heads: usize,
        activation: ClipActivation,
    ) -> candle_core::Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let dh = d / heads;
        let h = self.ln1.forward(x)?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, l, heads, dh))?.transpose(1, 2)?.contiguous()
        };
        let q = split((self.q.forward(&h)? * (dh as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(&h)?)?;
        let v = split(self.v.forward(&h)?)?;
        let att = q.matmul(&k.t()?)?;
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let o = att.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?;
        let x = (x + self.out.forward(&o)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?;
        let h = match activation {
            ClipActivation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            ClipActivation::Gelu => h.gelu_erf()?,
        };
        x + self.fc2.forward(&h)?
    }
}

/// What the text encoder returns for a batch of token ids.
#[derive(Debug, Clone)]
pub struct TextOutput {
    /// `last_hidden_state` (after the final LayerNorm), `[B, L, D]` — SD 1.x/2.x conditioning.
    pub last_hidden: Tensor,
    /// The hidden state before the last layer (no final LayerNorm), `[B, L, D]` — SDXL's.
    pub penultimate: Tensor,
    /// The pooled output at the end-of-text token, projected when the model has a
    /// `text_projection`, `[B, D or P]`.
    pub pooled: Tensor,
    /// The pooled output before any projection (transformers' `pooler_output`), `[B, D]` —
    /// FLUX's pooled conditioning.
    pub pooler_output: Tensor,
}

/// transformers' CLIP text model.
#[derive(Debug, Clone)]
pub struct ClipTextEncoder {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    projection: Option<Linear>,
    /// The configuration.
    pub config: ClipTextConfig,
}

impl ClipTextEncoder {
    /// Builds the encoder from `text_model.*` (and `text_projection.weight` when the config has
    /// a projection and the weights hold one). A `CLIPTextModel` saved by transformers 5 has
    /// no `text_model.` prefix; both layouts load.
    pub fn new(vb: VarBuilder, config: ClipTextConfig) -> candle_core::Result<ClipTextEncoder> {
        let c = &config;
        let d = c.hidden_size;
        let tm = if !vb.contains_tensor("text_model.embeddings.token_embedding.weight")
            && vb.contains_tensor("embeddings.token_embedding.weight")
        {
            vb.clone()
        } else {
            vb.pp("text_model")
        };
        let emb = tm.pp("embeddings");
        let token_embedding = emb.pp("token_embedding").get((c.vocab_size, d), "weight")?;
        let position_embedding = emb
            .pp("position_embedding")
            .get((c.max_position_embeddings, d), "weight")?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = tm.pp("encoder").pp("layers").pp(i);
            layers.push(Layer::new(l, d, c.intermediate_size, c.layer_norm_eps)?);
        }
        let final_ln = candle_nn::layer_norm(d, c.layer_norm_eps, tm.pp("final_layer_norm"))?;
        let projection = match c.projection_dim {
            Some(p) if vb.contains_tensor("text_projection.weight") => {
                Some(candle_nn::linear_no_bias(d, p, vb.pp("text_projection"))?)
            }
            _ => None,
        };
        Ok(ClipTextEncoder {
            token_embedding,
            position_embedding,
            layers,
            final_ln,
            projection,
            config,
        })
    }

    /// Encodes `[B, L]` token ids (`u32`).
    pub fn forward(&self, ids: &Tensor) -> Result<TextOutput> {
        let (b, l) = ids.dims2()?;
        let c = &self.config;
        if l > c.max_position_embeddings {
            return Err(Error::Spec(format!(
                "{l} tokens exceed the text encoder's {} positions",
                c.max_position_embeddings
            )));
        }
        let device = ids.device();
        let dtype = self.token_embedding.dtype();
        let tok = self
            .token_embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, c.hidden_size))?;
        let pos = self.position_embedding.narrow(0, 0, l)?;
        let mut x = tok.broadcast_add(&pos)?;
        let mask: Vec<f32> = (0..l)
            .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (l, l), device)?.to_dtype(dtype)?;
        let mut penultimate = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if i + 1 == self.layers.len() {
                penultimate = x.clone();
            }
            x = layer.forward(&x, Some(&mask), c.num_attention_heads, c.activation)?;
        }
        let last_hidden = self.final_ln.forward(&x)?;
        let id_rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let positions: Vec<u32> = id_rows
            .iter()
            .map(|row| {
                let at = match c.eos_token_id {
                    Some(e) => row.iter().position(|&t| t == e),
                    None => None,
                };
                at.unwrap_or_else(|| {
                    // Legacy pooling: the largest id (the end-of-text token in OpenAI's vocab).
                    let mut best = 0;
                    for (j, &t) in row.iter().enumerate() {
                        if t > row[best] {
                            best = j;
                        }
                    }
                    best
                }) as u32
            })
            .collect();
        let mut pooled = Vec::with_capacity(b);
        for (row, &p) in positions.iter().enumerate() {
            pooled.push(last_hidden.get(row)?.get(p as usize)?.unsqueeze(0)?);
        }
        let pooler_output = Tensor::cat(&pooled, 0)?;
        let pooled = match &self.projection {
            Some(p) => p.forward(&pooler_output)?,
            None => pooler_output.clone(),
        };
        Ok(TextOutput {
            last_hidden,
            penultimate,
            pooled,
            pooler_output,
        })
    }

    /// Encodes rows of token ids given as vectors.
    pub fn encode_ids(&self, ids: &[Vec<u32>], device: &Device) -> Result<TextOutput> {
        let l = ids.first().map(|r| r.len()).unwrap_or(0);
        if ids.iter().any(|r| r.len() != l) {
            return Err(Error::Spec("token rows of different lengths".into()));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (ids.len(), l), device)?;
        self.forward(&t)
    }
}
