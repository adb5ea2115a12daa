//! LoRA (Hu et al. 2021, *LoRA: Low-Rank Adaptation of Large Language Models*, eq. 3) merged
//! into the weights at load time, for Stable Diffusion 1.x/2.x/XL (UNet and text encoders) and
//! FLUX (transformer and CLIP-L):
//!
//! ```text
//! W ← W + Σ_files  scale · (alpha / r) · B · A        B = up [out, r], A = down [r, in]
//! ```
//!
//! For a convolution (LoCon) `A` is `[r, in, kh, kw]` and `B` `[out, r, 1, 1]`; the product is
//! taken over the flattened kernel and reshaped to `[out, in, kh, kw]`. The merge happens as
//! each layer is built ([`merge::WithLora`] wraps the weights' backend): the stored weight is
//! read in f32, the deltas are added in f32 and the sum is cast once to the run's dtype;
//! nothing stays behind at sampling time, so a LoRA run costs what a plain one costs.
//!
//! Every module of every file must land on a weight of the model: a module that matches
//! nothing (a LoRA for another family, a misspelt key, a network the model lacks) is an error
//! naming it, as is a shape that disagrees with the weight.

pub mod file;
pub mod flux_names;
pub mod merge;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_nn::var_builder::SimpleBackend;

pub use file::{LoraFile, Module, Target};
pub use merge::WithLora;

use super::ldm::UNetShape;
use crate::{Error, Result};

/// `--lora FILE[:SCALE]`: a LoRA file and its strength (default 1).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// The strength `scale` of the merge.
    pub scale: f64,
}

impl LoraSpec {
    /// Parses `FILE` or `FILE:SCALE` (the part after the last `:` is the scale when it is a
    /// number, so paths with colons still work).
    pub fn parse(text: &str) -> Result<LoraSpec> {
        let (path, scale) = match text.rsplit_once(':') {
            Some((p, s)) if !p.is_empty() && s.trim().parse::<f64>().is_ok() => {
                (p, s.trim().parse::<f64>().expect("checked"))
            }
            _ => (text, 1.0),
        };
        if !scale.is_finite() || scale.abs() > 100.0 {
            return Err(Error::Spec(format!(
                "--lora `{text}`: the scale must be a finite number within ±100"
            )));
        }
        if path.is_empty() {
            return Err(Error::Spec("--lora needs a file: FILE[:SCALE]".into()));
        }
        Ok(LoraSpec {
            path: PathBuf::from(path),
            scale,
        })
    }
}

/// One opened file of a [`Loras`].
struct Opened {
    spec: LoraSpec,
    index: LoraFile,
    tensors: MmapedSafetensors,
}

/// The LoRA files of one model load, and which of their modules have been merged.
pub struct Loras {
    files: Vec<Opened>,
    used: Mutex<BTreeSet<(usize, Target, String)>>,
}

impl std::fmt::Debug for Loras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|o| &o.spec))
            .finish()
    }
}

/// One module that adapts a weight: all of it (`rows: None`), or some of its rows.
struct Hit<'a> {
    file: usize,
    key: String,
    module: &'a Module,
    rows: Option<flux_names::RowPart>,
}

/// Which LoRA modules one network of a model takes: its [`Target`] in `loras`, its naming.
#[derive(Debug, Clone)]
pub struct LoraHook {
    /// The files.
    pub loras: Arc<Loras>,
    /// The network.
    pub target: Target,
    /// How its weights are named.
    pub naming: Naming,
}

impl LoraHook {
    /// `inner` with this network's modules merged.
    pub fn wrap(&self, inner: Box<dyn SimpleBackend>) -> Box<dyn SimpleBackend> {
        self.loras.wrap(inner, self.target, self.naming.clone())
    }
}

/// How the weights a [`WithLora`] serves are named, to find their LoRA modules.
#[derive(Debug, Clone)]
pub enum Naming {
    /// diffusers names (SD's UNet and CLIP encoders); a UNet also answers to its original
    /// (`input_blocks_…`) names, as kohya's SDXL files use.
    Diffusers(Option<UNetShape>),
    /// BFL's original FLUX names (`double_blocks.0.img_attn.qkv`), possibly under ComfyUI's
    /// `model.diffusion_model.`.
    Flux,
}

impl Loras {
    /// Opens and indexes every file (`.safetensors` only).
    pub fn open(specs: &[LoraSpec]) -> Result<Arc<Loras>> {
        let files = specs
            .iter()
            .map(|spec| {
                let tensors = super::weights::open_checked(std::slice::from_ref(&spec.path))?;
                let index = LoraFile::index(&spec.path, &tensors)?;
                Ok(Opened {
                    spec: spec.clone(),
                    index,
                    tensors,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Loras {
            files,
            used: Mutex::new(BTreeSet::new()),
        }))
    }

    /// `inner` with the modules of `target` merged into its weights.
    pub fn wrap(
        self: &Arc<Self>,
        inner: Box<dyn SimpleBackend>,
        target: Target,
        naming: Naming,
    ) -> Box<dyn SimpleBackend> {
        Box::new(WithLora::new(inner, self.clone(), target, naming))
    }

    /// Every module that adapts the weight `name` (`[out, inp, …]`) of `target`: a module
    /// named as the weight is (all its rows), or for FLUX the diffusers modules that make up a
    /// fused BFL weight (some of its rows each).
    fn modules_for(
        &self,
        target: Target,
        naming: &Naming,
        name: &str,
        (out, inp): (usize, usize),
    ) -> Vec<Hit<'_>> {
        let keys = candidate_keys(target, naming, name);
        let row_parts = match (target, naming, name.strip_suffix(".weight")) {
            (Target::Denoiser, Naming::Flux, Some(m)) => {
                let m = m.strip_prefix("model.diffusion_model.").unwrap_or(m);
                flux_names::parts(m, out, inp)
            }
            _ => Vec::new(),
        };
        let mut hits = Vec::new();
        for (file, f) in self.files.iter().enumerate() {
            let module = |k: &String| f.index.modules.get(&(target, k.clone()));
            if let Some((key, m)) = keys.iter().find_map(|k| module(k).map(|m| (k, m))) {
                hits.push(Hit {
                    file,
                    key: key.clone(),
                    module: m,
                    rows: None,
                });
                continue;
            }
            for part in &row_parts {
                if let Some(m) = module(&part.key) {
                    hits.push(Hit {
                        file,
                        key: part.key.clone(),
                        module: m,
                        rows: Some(part.clone()),
                    });
                }
            }
        }
        hits
    }

    fn mark_used(&self, file: usize, target: Target, key: String) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((file, target, key));
    }

    /// Refuses any module that was not merged: it names a layer or a network (`targets` are
    /// those the model has) that the model does not have.
    pub fn check_all_used(&self, targets: &[Target]) -> Result<()> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        for (i, f) in self.files.iter().enumerate() {
            let unused: Vec<&(Target, String)> = f
                .index
                .modules
                .keys()
                .filter(|(t, k)| !used.contains(&(i, *t, k.clone())))
                .collect();
            if unused.is_empty() {
                continue;
            }
            let missing: BTreeSet<Target> = unused
                .iter()
                .map(|(t, _)| *t)
                .filter(|t| !targets.contains(t))
                .collect();
            let why = match missing.first() {
                Some(t) => format!("it adapts {}, which this model does not have", t.describe()),
                None => "they match no layer of this model".into(),
            };
            let names: Vec<String> = unused
                .iter()
                .take(5)
                .map(|(t, k)| format!("{k} ({})", t.describe()))
                .collect();
            return Err(Error::Spec(format!(
                "LoRA `{}`: {} of its {} layers cannot be applied ({why}): {}{} — is it a LoRA \
                 for another model family?",
                f.spec.path.display(),
                unused.len(),
                f.index.modules.len(),
                names.join(", "),
                if unused.len() > 5 { ", …" } else { "" }
            )));
        }
        Ok(())
    }

    fn tensors(&self, file: usize) -> (&MmapedSafetensors, &LoraSpec) {
        (&self.files[file].tensors, &self.files[file].spec)
    }
}

/// The module keys under which a LoRA file may name the weight `name`.
fn candidate_keys(target: Target, naming: &Naming, name: &str) -> Vec<String> {
    let Some(module) = name.strip_suffix(".weight") else {
        return Vec::new();
    };
    let mut keys = vec![file::module_key(module)];
    match (target, naming) {
        (Target::TextEncoder(_), _) => keys = vec![file::text_key(&keys[0])],
        (Target::Denoiser, Naming::Diffusers(Some(shape))) => {
            if let Some(original) = super::ldm::names::unet(name, shape) {
                if let Some(m) = original.strip_suffix(".weight") {
                    keys.push(file::module_key(m));
                }
            }
        }
        (Target::Denoiser, Naming::Flux) => {
            if let Some(m) = module.strip_prefix("model.diffusion_model.") {
                keys.push(file::module_key(m));
            }
        }
        _ => {}
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_take_a_trailing_scale() {
        let s = LoraSpec::parse("a/b.safetensors:0.75").unwrap();
        assert_eq!(
            (s.path.to_str().unwrap(), s.scale),
            ("a/b.safetensors", 0.75)
        );
        let s = LoraSpec::parse("c:/x/b.safetensors").unwrap();
        assert_eq!(
            (s.path.to_str().unwrap(), s.scale),
            ("c:/x/b.safetensors", 1.0)
        );
        assert_eq!(LoraSpec::parse("b.safetensors:-1").unwrap().scale, -1.0);
        assert!(LoraSpec::parse("b.safetensors:1e9").is_err());
        assert!(LoraSpec::parse("").is_err());
    }

    #[test]
    fn a_unet_weight_answers_to_diffusers_and_original_keys() {
        let shape = UNetShape {
            layers_per_block: 2,
            up_has_attention: vec![false, true, true, true],
        };
        let keys = candidate_keys(
            Target::Denoiser,
            &Naming::Diffusers(Some(shape)),
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
        );
        assert_eq!(
            keys,
            [
                "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
                "input_blocks_4_1_transformer_blocks_0_attn1_to_q"
            ]
        );
        assert!(candidate_keys(Target::Denoiser, &Naming::Flux, "x.bias").is_empty());
    }
}
