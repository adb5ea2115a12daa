//! One LoRA file, read into its modules: for each adapted layer the names of its down (`A`)
//! and up (`B`) matrices and its `alpha`, under a key that both layouts share.
//!
//! Layouts (the tensor names tell them apart):
//!
//! * **kohya** (sd-scripts, A1111, ComfyUI, most shared LoRAs):
//!   `lora_unet_<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`, with the module path's
//!   dots written as `_`; `lora_te_` (SD 1.x/2.x), `lora_te1_`/`lora_te2_` (SDXL) for the text
//!   encoders. SD 1.x files name UNet modules as diffusers does (`down_blocks_0_…`), SDXL files
//!   as the original layout does (`input_blocks_4_1_…`), FLUX files as BFL does
//!   (`double_blocks_0_img_attn_qkv`).
//! * **diffusers / peft**: `unet.<module>.lora_A.weight` / `.lora_B.weight` (or
//!   `.lora.down.weight` / `.lora.up.weight`), `text_encoder.`, `text_encoder_2.`,
//!   `transformer.` prefixes; alpha in `<module>.alpha` tensors when present, else in the
//!   safetensors metadata diffusers writes (`lora_adapter_metadata`: `lora_alpha`, `r`), else
//!   `alpha = r`.
//!
//! Module keys are the module path with `.` replaced by `_`, without the component prefix, so a
//! layer is found the same way whatever layout the file uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Which network of a pipeline a LoRA module adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The denoiser: a UNet, or a FLUX transformer.
    Denoiser,
    /// The `i`-th text encoder (0: `text_encoder`, 1: `text_encoder_2`).
    TextEncoder(usize),
}

impl Target {
    /// A name for messages.
    pub fn describe(self) -> String {
        match self {
            Target::Denoiser => "the UNet / transformer".into(),
            Target::TextEncoder(0) => "the text encoder".into(),
            Target::TextEncoder(i) => format!("text encoder {}", i + 1),
        }
    }
}

/// One adapted layer: `W += scale · alpha / rank · up · down`.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// The down (`lora_A`) tensor's name in the file, `[rank, in(, kh, kw)]`.
    pub down: String,
    /// The up (`lora_B`) tensor's name in the file, `[out, rank(, 1, 1)]`.
    pub up: String,
    /// `alpha` (`None`: equal to the rank).
    pub alpha: Option<f64>,
}

/// A LoRA file, indexed.
#[derive(Debug, Clone)]
pub struct LoraFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its modules by `(target, module key)`.
    pub modules: BTreeMap<(Target, String), Module>,
}

const KOHYA_PREFIXES: [(&str, Target); 4] = [
    ("lora_unet_", Target::Denoiser),
    ("lora_te1_", Target::TextEncoder(0)),
    ("lora_te2_", Target::TextEncoder(1)),
    ("lora_te_", Target::TextEncoder(0)),
];

const DIFFUSERS_PREFIXES: [(&str, Target); 6] = [
    ("unet.", Target::Denoiser),
    ("transformer.", Target::Denoiser),
    ("diffusion_model.", Target::Denoiser),
    ("base_model.model.", Target::Denoiser),
    ("text_encoder.", Target::TextEncoder(0)),
    ("text_encoder_2.", Target::TextEncoder(1)),
];

/// Suffix pairs of the down and up matrices.
const PAIRS: [(&str, &str); 3] = [
    (".lora_down.weight", ".lora_up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
];

/// `(target, module key)` of a module path written in a file (`prefix` + path), and for the
/// diffusers layout the component (`unet`, `text_encoder`, …) its metadata is keyed by.
fn split_module(module: &str) -> Option<(Target, String, Option<&'static str>)> {
    for (prefix, target) in KOHYA_PREFIXES {
        if let Some(rest) = module.strip_prefix(prefix) {
            return Some((target, rest.to_string(), None));
        }
    }
    for (prefix, target) in DIFFUSERS_PREFIXES {
        if let Some(rest) = module.strip_prefix(prefix) {
            let component = prefix.trim_end_matches('.');
            return Some((target, module_key(rest), Some(component)));
        }
    }
    None
}

/// The shared key of a dotted module path.
pub fn module_key(path: &str) -> String {
    path.replace('.', "_")
}

/// A text-encoder module key without transformers' optional `text_model` wrapper (files and
/// models name CLIP layers with or without it).
pub fn text_key(key: &str) -> String {
    key.strip_prefix("text_model_").unwrap_or(key).to_string()
}

/// LyCORIS and DoRA tensor names steerdiff does not merge, with what they are.
const UNSUPPORTED: [(&str, &str); 4] = [
    ("hada_w1_a", "LoHa (LyCORIS)"),
    ("lokr_w1", "LoKr (LyCORIS)"),
    ("dora_scale", "DoRA"),
    (".diff", "a full-weight difference (LyCORIS `diff`)"),
];

impl LoraFile {
    /// Indexes the modules of `st`, the opened file `path`, with their alphas.
    pub fn index(
        path: &Path,
        st: &candle_core::safetensors::MmapedSafetensors,
    ) -> Result<LoraFile> {
        let names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
        let file = path.display();
        if let Some((_, what)) = UNSUPPORTED
            .iter()
            .find(|(needle, _)| names.iter().any(|n| n.contains(needle)))
        {
            return Err(Error::Spec(format!(
                "LoRA `{file}` is {what}; steerdiff merges plain LoRA (and LoCon) files: kohya \
                 `lora_down/lora_up` or peft `lora_A/lora_B`"
            )));
        }
        let meta_alphas = metadata_alphas(path);
        let scalar = |name: &str| -> Result<Option<f64>> {
            let Ok(t) = st.load(name, &candle_core::Device::Cpu) else {
                return Ok(None);
            };
            let v = t
                .to_dtype(candle_core::DType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .map_err(|e| Error::Spec(format!("LoRA `{file}`: `{name}`: {e}")))?;
            match v.as_slice() {
                [a] if a.is_finite() => Ok(Some(*a)),
                _ => Err(Error::Spec(format!(
                    "LoRA `{file}`: `{name}` must be one finite number"
                ))),
            }
        };
        let mut modules = BTreeMap::new();
        for name in &names {
            let Some((down_suffix, up_suffix)) = PAIRS.iter().find(|(d, _)| name.ends_with(d))
            else {
                continue;
            };
            let module = &name[..name.len() - down_suffix.len()];
            let up = format!("{module}{up_suffix}");
            if !names.contains(&up) {
                return Err(Error::Spec(format!(
                    "LoRA `{file}`: `{name}` has no `{up}`"
                )));
            }
            let Some((target, mut key, component)) = split_module(module) else {
                return Err(Error::Spec(format!(
                    "LoRA `{file}`: `{module}` names no network steerdiff knows (expected \
                     lora_unet_/lora_te_/lora_te1_/lora_te2_ or unet./transformer./\
                     text_encoder./text_encoder_2. prefixes)"
                )));
            };
            if let Target::TextEncoder(_) = target {
                key = text_key(&key);
            }
            let alpha = match scalar(&format!("{module}.alpha"))? {
                Some(a) => Some(a),
                None => component.and_then(|c| {
                    meta_alphas
                        .get(&format!("{c}.lora_alpha"))
                        .or_else(|| meta_alphas.get("lora_alpha"))
                        .copied()
                }),
            };
            modules.insert(
                (target, key),
                Module {
                    down: name.clone(),
                    up,
                    alpha,
                },
            );
        }
        if modules.is_empty() {
            return Err(Error::Spec(format!(
                "`{file}` holds no LoRA layers (no `*.lora_down.weight` or `*.lora_A.weight` \
                 tensors)"
            )));
        }
        Ok(LoraFile {
            path: path.to_path_buf(),
            modules,
        })
    }
}

/// The `lora_alpha` entries of the `lora_adapter_metadata` that diffusers writes into the
/// safetensors header (`unet.lora_alpha`, `text_encoder.lora_alpha`, …, or a bare `lora_alpha`).
fn metadata_alphas(path: &Path) -> BTreeMap<String, f64> {
    metadata_entries(path).unwrap_or_default()
}

fn metadata_entries(path: &Path) -> Option<BTreeMap<String, f64>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    // The header only (safetensors caps it at 100 MB); `open_checked` has parsed it already.
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let text = v
        .get("__metadata__")?
        .get("lora_adapter_metadata")?
        .as_str()?;
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(
        v.as_object()?
            .iter()
            .filter(|(k, _)| *k == "lora_alpha" || k.ends_with(".lora_alpha"))
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_give_one_module_key() {
        let key = |m: &str| split_module(m).map(|(t, k, _)| (t, k));
        assert_eq!(
            key("lora_unet_down_blocks_0_attentions_0_proj_in"),
            Some((
                Target::Denoiser,
                "down_blocks_0_attentions_0_proj_in".into()
            ))
        );
        assert_eq!(
            key("unet.down_blocks.0.attentions.0.proj_in"),
            Some((
                Target::Denoiser,
                "down_blocks_0_attentions_0_proj_in".into()
            ))
        );
        assert_eq!(
            key("lora_te2_text_model_encoder_layers_1_mlp_fc1"),
            key("text_encoder_2.text_model.encoder.layers.1.mlp.fc1")
        );
        assert_eq!(split_module("vae.decoder.conv_in"), None);
    }
}
