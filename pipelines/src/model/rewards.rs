//! The reward grammar, parsed in one place for every model family.
//!
//! ```text
//! SPEC := stdio:COMMAND | http://HOST:PORT/…        a reward plugin (docs/reward-plugins.md)
//!       | ensemble:MODE:W1*SPEC1;W2*SPEC2;…          MODE sum | z | rank
//!       | many:N[:C]:SPEC                            FK's many-sample estimate of SPEC
//!       | a family reward:
//!           mixtures       quadratic:M | linear:W | constant:C
//!           toy            classifier | brightness
//!           text-to-image  jpeg[:Q] | jpeg-preview[:Q] | clip | aesthetic:MLP.safetensors
//! ```
//!
//! Plugins on a text-to-image model score the decoded image of x̂0 and are told the prompt.

use std::cell::OnceCell;
use std::path::Path;
use std::sync::Arc;

use steerdiff_guidance::{ClassLogProb, Classifier, Reward};

use super::{Family, Model};
use crate::reward::{
    parse_vector_reward, Brightness, Ensemble, EnsembleMode, ManySample, PluginOptions,
    PluginReward, PluginTarget,
};
use crate::sd::clip_model::{ClipModel, DEFAULT_CLIP};
use crate::sd::clip_rewards::{Aesthetic, ClipScore, ClipZeroShot};
use crate::sd::rewards::{parse_image_reward, OnPixels};
use crate::{Error, Result};

/// What rewards are built from, besides the model.
#[derive(Debug, Clone)]
pub struct RewardSettings {
    /// Plugin connection settings.
    pub plugins: PluginOptions,
    /// Text-to-image models: the prompt (told to plugins, scored by `clip`).
    pub prompt: Option<String>,
    /// The CLIP model of `clip`, `aesthetic:` and zero-shot classifiers (a transformers
    /// folder or Hub repo).
    pub clip_model: String,
}

impl Default for RewardSettings {
    fn default() -> Self {
        RewardSettings {
            plugins: PluginOptions::default(),
            prompt: None,
            clip_model: DEFAULT_CLIP.to_string(),
        }
    }
}

/// Builds rewards for one model (see the module docs); the CLIP model is loaded on first use
/// and shared by every reward built here.
pub struct RewardBuilder<'a> {
    model: &'a Model,
    settings: RewardSettings,
    clip: OnceCell<Arc<ClipModel>>,
}

fn spec_error(spec: &str, why: &str, expected: &str) -> Error {
    Error::Spec(format!("--reward `{spec}`: {why}; expected {expected}"))
}

impl<'a> RewardBuilder<'a> {
    /// A builder for `model`.
    pub fn new(model: &'a Model, settings: RewardSettings) -> Self {
        RewardBuilder {
            model,
            settings,
            clip: OnceCell::new(),
        }
    }

    /// The CLIP model (`clip_model`), loaded once on the model's device.
    fn clip(&self) -> Result<Arc<ClipModel>> {
        if let Some(m) = self.clip.get() {
            return Ok(m.clone());
        }
        let spec = &self.settings.clip_model;
        let m = ClipModel::load(spec, self.model.device())
            .map_err(|e| Error::Spec(format!("loading --clip-model `{spec}`: {e}")))?;
        Ok(self.clip.get_or_init(|| Arc::new(m)).clone())
    }

    /// A zero-shot CLIP classifier over `texts` (class `i` = `texts[i]`) on decoded x̂0, the
    /// guidance classifier of a text-to-image model.
    pub fn zero_shot(&self, texts: &[&str]) -> Result<Arc<dyn Classifier>> {
        let pixels = self.pixels("a zero-shot classifier")?;
        Ok(Arc::new(ClipZeroShot::new(self.clip()?, pixels, texts)?))
    }

    fn pixels(&self, what: &str) -> Result<crate::sd::rewards::Pixels> {
        self.model.pixels().ok_or_else(|| {
            Error::Spec(format!(
                "{what} reads decoded images; `{}` has no decoder",
                self.model.source()
            ))
        })
    }

    /// The reward `spec` names for this model.
    pub fn build(&self, spec: &str) -> Result<Arc<dyn Reward>> {
        if let Some(target) = PluginTarget::parse(spec) {
            let target = target.map_err(|e| Error::Spec(format!("--reward {e}")))?;
            let plugin = PluginReward::connect(&target, self.settings.plugins.clone())
                .map_err(|e| Error::Spec(e.to_string()))?;
            return Ok(match self.model.family() {
                Family::TextToImage => {
                    let prompts = self.settings.prompt.iter().cloned().collect();
                    Arc::new(OnPixels::new(
                        self.pixels("a plugin")?,
                        Arc::new(plugin.with_prompts(prompts)),
                    ))
                }
                _ => Arc::new(plugin),
            });
        }
        if let Some(rest) = spec.strip_prefix("ensemble:") {
            return self.ensemble(spec, rest);
        }
        if let Some(rest) = spec.strip_prefix("many:") {
            return self.many(spec, rest);
        }
        match self.model.family() {
            Family::Mixture => {
                let dim = self.model.mixture_spec().map(|s| s.dim).unwrap_or(1);
                parse_vector_reward(spec, dim).map_err(|e| Error::Spec(format!("--reward: {e}")))
            }
            Family::Toy => match spec {
                // ln p(class | x̂0) under the toy's guidance classifier (never its evaluation
                // one).
                "classifier" => {
                    let clf = self.model.classifier()?.ok_or_else(|| {
                        Error::Spec("the toy model has no guidance classifier".into())
                    })?;
                    Ok(Arc::new(ClassLogProb::new(clf)))
                }
                // The mean pixel value (the reference for the brightness plugins).
                "brightness" => Ok(Arc::new(Brightness)),
                _ => Err(Error::Spec(format!(
                    "--reward `{spec}`: the toy model's rewards are `classifier`, `brightness`, \
                     many:N:SPEC, or a plugin (stdio:COMMAND or http://127.0.0.1:PORT)"
                ))),
            },
            Family::TextToImage => self.image_reward(spec),
        }
    }

    /// `clip`, `aesthetic:MLP.safetensors`, `jpeg[:Q]`, `jpeg-preview[:Q]`.
    fn image_reward(&self, spec: &str) -> Result<Arc<dyn Reward>> {
        if spec == "clip" {
            let prompt = self.settings.prompt.as_deref().unwrap_or("");
            return Ok(Arc::new(ClipScore::new(
                self.clip()?,
                self.pixels("clip")?,
                &[prompt],
            )?));
        }
        if let Some(path) = spec.strip_prefix("aesthetic:") {
            return Ok(Arc::new(Aesthetic::new(
                self.clip()?,
                Path::new(path),
                self.pixels("aesthetic")?,
            )?));
        }
        let preview = self
            .model
            .latent_preview()
            .ok_or_else(|| Error::Spec(format!("unknown reward `{spec}`")))?;
        parse_image_reward(spec, self.model.pixels(), preview)
    }

    /// `ensemble:MODE:W1*SPEC1;W2*SPEC2;…` with MODE `sum` (weighted sum), `z` (weighted sum
    /// of batch z-scores) or `rank` (weighted mean rank); members are any reward specs,
    /// plugins included (`;` separates them, so commands may contain spaces and colons).
    fn ensemble(&self, spec: &str, rest: &str) -> Result<Arc<dyn Reward>> {
        const EXPECTED: &str = "ensemble:MODE:W1*SPEC1;W2*SPEC2 with MODE sum, z or rank, e.g. \
                                ensemble:z:1*classifier;0.5*brightness";
        let bad = |why: &str| spec_error(spec, why, EXPECTED);
        let (mode, members) = rest.split_once(':').ok_or_else(|| bad("no members"))?;
        let mode = match mode {
            "sum" => EnsembleMode::WeightedSum,
            "z" => EnsembleMode::WeightedZ,
            "rank" => EnsembleMode::RankMean,
            other => return Err(bad(&format!("unknown mode `{other}`"))),
        };
        let mut list = vec![];
        for m in members.split(';').map(str::trim).filter(|m| !m.is_empty()) {
            let (w, inner) = match m.split_once('*') {
                Some((w, inner)) => match w.trim().parse::<f64>() {
                    Ok(w) => (w, inner.trim()),
                    Err(_) => (1.0, m),
                },
                None => (1.0, m),
            };
            if !w.is_finite() {
                return Err(bad(&format!("weight of `{inner}` is not finite")));
            }
            list.push((self.build(inner)?, w));
        }
        if list.is_empty() {
            return Err(bad("no members"));
        }
        Ok(Arc::new(Ensemble::new(list, mode)))
    }

    /// `many:N[:C]:SPEC`: FK's many-sample estimate ([`ManySample`]), the log-mean-exp of
    /// `SPEC` over `N` Gaussian posterior draws around x̂0, for a data prior of standard
    /// deviation `C` (default 0.5, the spread of the toy's pixels in `[-1, 1]`).
    fn many(&self, spec: &str, rest: &str) -> Result<Arc<dyn Reward>> {
        let bad = || {
            Error::Spec(format!(
                "--reward `{spec}`: expected many:N[:C]:SPEC (N ≥ 1 draws, C > 0 the data \
                 standard deviation), e.g. many:8:classifier"
            ))
        };
        let (n, rest) = rest.split_once(':').ok_or_else(bad)?;
        let n: usize = n.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?;
        let (c, inner) = rest
            .split_once(':')
            .and_then(|(c, inner)| c.parse::<f64>().ok().map(|c| (c, inner)))
            .unwrap_or((0.5, rest));
        if !(c.is_finite() && c > 0.0) || inner.is_empty() {
            return Err(bad());
        }
        Ok(Arc::new(ManySample::new(self.build(inner)?, n, c)))
    }
}
