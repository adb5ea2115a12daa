//! Loading the shipped toy models ([`Assets`]: compiled in, or `$STEERDIFF_ASSETS`):
//! `<dir>/config.json` + `model.safetensors`, checked against the sha256 in `manifest.json`,
//! and the toy flow as a [`Denoiser`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use steerdiff_guidance::{Condition, Denoiser, NoisePath, Parameterization, StepPoint};

pub use super::assets::{source_assets_dir, Assets};
use super::{data, Classifier, FlowNet, ToyConfig, UnetInference, NUM_CLASSES};
use crate::{Error, Result};

/// The manifest entry of the main flow model.
pub const FLOW: &str = "toy-flow";
/// The manifest entry of the weaker twin (same network, an early export of the same run).
pub const FLOW_WEAK: &str = "toy-flow-weak";
/// The manifest entry of the guidance classifier (steers; also a reward).
pub const CLASSIFIER: &str = "toy-classifier";
/// The manifest entry of the first evaluation classifier: cnn-a, the guidance classifier's
/// architecture at another width (measures only, never steers; kept selectable by name).
pub const EVAL_CLASSIFIER: &str = "toy-eval-classifier";
/// The manifest entry of the judge: the default evaluation classifier, a residual network with
/// batch normalisation trained on its own seed with its own augmentation, so that its errors
/// are independent of the cnn-a guidance classifier's.
pub const JUDGE: &str = "toy-judge";

/// One shipped model in `assets/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Folder under `assets/` holding `config.json` and `model.safetensors`.
    pub dir: String,
    /// Hex sha256 of `model.safetensors`.
    pub sha256: String,
    /// Size of `model.safetensors` in bytes.
    pub bytes: u64,
    /// The architecture (identical to the folder's `config.json`).
    pub config: ToyConfig,
    /// How it was trained: command, seeds, steps, batch, final loss, wall time, machine.
    pub training: serde_json::Value,
}

/// `assets/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The dataset: generator, class names, seeds.
    pub dataset: serde_json::Value,
    /// The models by name ([`FLOW`], [`FLOW_WEAK`], [`CLASSIFIER`], [`EVAL_CLASSIFIER`],
    /// [`JUDGE`]).
    pub models: BTreeMap<String, ManifestEntry>,
    /// The CFG scale class-conditional runs of the flow models use when none is given, as a
    /// preset's recommendation (the shipped models: 3, where they reach 90 % class accuracy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_cfg: Option<f64>,
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::Spec(format!("cannot open {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::Spec(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl ManifestEntry {
    /// The generator variant the model was trained on (`training.spec.data_rotation`; runs
    /// recorded before that option existed trained on [`data::Rotation::Full`]). A value that
    /// names no variant is an error, not a silent default.
    pub fn data_rotation(&self) -> Result<data::Rotation> {
        match self.training.pointer("/spec/data_rotation") {
            None => Ok(data::Rotation::Full),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                Error::Spec(format!(
                    "manifest entry `{}`: training.spec.data_rotation {v}: {e} (valid: \"full\", \"upright\")",
                    self.dir
                ))
            }),
        }
    }
}

impl Manifest {
    /// Reads `DIR/manifest.json`.
    pub fn load(assets: &Path) -> Result<Self> {
        let path = assets.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Spec(format!(
                "cannot read the toy model manifest {}: {e} (set STEERDIFF_ASSETS to the assets folder)",
                path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("malformed {}: {e}", path.display())))
    }

    /// Reads the manifest of `assets`.
    pub fn of(assets: &Assets) -> Result<Self> {
        let bytes = assets.read("manifest.json")?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Spec(format!(
                "malformed {}: {e}",
                assets.describe("manifest.json")
            ))
        })
    }

    /// The entry `name`.
    pub fn entry(&self, name: &str) -> Result<&ManifestEntry> {
        self.models.get(name).ok_or_else(|| {
            Error::Spec(format!(
                "the manifest has no model `{name}` (has: {})",
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Reads and checks a shipped model: its `config.json` must equal the manifest's config and
/// its weights must have the manifest's sha256. Returns the config and the weights' bytes.
pub fn checked_files(assets: &Assets, name: &str) -> Result<(ToyConfig, Cow<'static, [u8]>)> {
    let manifest = Manifest::of(assets)?;
    let entry = manifest.entry(name)?;
    let cfg_file = format!("{}/config.json", entry.dir);
    let config: ToyConfig = serde_json::from_slice(&assets.read(&cfg_file)?)
        .map_err(|e| Error::Spec(format!("malformed {}: {e}", assets.describe(&cfg_file))))?;
    if config != entry.config {
        return Err(Error::Spec(format!(
            "{} does not match the manifest's config for `{name}`",
            assets.describe(&cfg_file)
        )));
    }
    let weights_file = format!("{}/model.safetensors", entry.dir);
    let weights = assets.read(&weights_file)?;
    let sum = sha256_hex(&weights);
    if sum != entry.sha256 {
        return Err(Error::Spec(format!(
            "{}: sha256 {sum} does not match the manifest ({}); the file is corrupt or was replaced",
            assets.describe(&weights_file),
            entry.sha256
        )));
    }
    Ok((config, weights))
}

/// A `VarBuilder` over safetensors bytes (a shipped model), on `dev`.
pub fn var_builder_from_bytes(
    weights: Cow<'static, [u8]>,
    dev: &Device,
) -> Result<VarBuilder<'static>> {
    Ok(VarBuilder::from_buffered_safetensors(
        weights.into_owned(),
        DType::F32,
        dev,
    )?)
}

/// A read-only `VarBuilder` over a safetensors file, on `dev`.
pub fn var_builder(weights: &Path, dev: &Device) -> Result<VarBuilder<'static>> {
    // SAFETY: the file is memory-mapped read-only; the shipped assets are not modified while
    // a process uses them.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, dev)? })
}

/// The toy class-conditional flow model (or its weaker twin) behind the [`Denoiser`] trait.
#[derive(Debug, Clone)]
pub struct ToyFlow {
    net: FlowNet,
    /// The U-Net's one-image CPU forward (`unet/inference/`), when it runs on the CPU.
    inference: Option<Arc<UnetInference>>,
    path: NoisePath,
    name: String,
    device: Device,
}

impl ToyFlow {
    /// Loads the manifest entry `entry` ([`FLOW`] or [`FLOW_WEAK`]) from `assets`, checking
    /// its sha256, and names it `name` in ledgers and records.
    pub fn load(assets: &Assets, entry: &str, name: &str) -> Result<Self> {
        Self::load_on(assets, entry, name, &Device::Cpu)
    }

    /// [`ToyFlow::load`] with the weights on `device`.
    pub fn load_on(assets: &Assets, entry: &str, name: &str, device: &Device) -> Result<Self> {
        let (config, weights) = checked_files(assets, entry)?;
        let vb = var_builder_from_bytes(weights, device)?;
        Self::from_var_builder(&config, vb, name, &assets.describe(entry))
    }

    /// Builds from what [`checked_files`] returned (a caller that also records the config).
    pub fn from_checked(
        config: &ToyConfig,
        weights: Cow<'static, [u8]>,
        name: &str,
        device: &Device,
    ) -> Result<Self> {
        let vb = var_builder_from_bytes(weights, device)?;
        Self::from_var_builder(config, vb, name, name)
    }

    /// Builds from a config and a safetensors file (no manifest check; for training exports).
    pub fn from_files(config: &ToyConfig, weights: &Path, name: &str) -> Result<Self> {
        Self::from_files_on(config, weights, name, &Device::Cpu)
    }

    /// [`ToyFlow::from_files`] with the weights on `device`.
    pub fn from_files_on(
        config: &ToyConfig,
        weights: &Path,
        name: &str,
        device: &Device,
    ) -> Result<Self> {
        let vb = var_builder(weights, device)?;
        Self::from_var_builder(config, vb, name, &weights.display().to_string())
    }

    /// Builds the network of `config` from `vb` (`origin` names the weights in messages).
    fn from_var_builder(
        config: &ToyConfig,
        vb: VarBuilder<'static>,
        name: &str,
        origin: &str,
    ) -> Result<Self> {
        let device = vb.device().clone();
        let Some(mut net) = FlowNet::new(config, vb)? else {
            return Err(Error::Spec(format!("{origin}: not a flow model")));
        };
        net.set_fused_ops(true);
        let inference = match &net {
            FlowNet::Unet(unet) if device.is_cpu() => Some(Arc::new(UnetInference::new(unet)?)),
            _ => None,
        };
        Ok(ToyFlow {
            net,
            inference,
            path: NoisePath::flow(),
            name: name.to_string(),
            device,
        })
    }

    /// The network.
    pub fn network(&self) -> &FlowNet {
        &self.net
    }
}

/// The label row of a condition: `Class(k)` → `k`, `Null` → the null label `K`.
pub fn label_of(cond: Condition) -> steerdiff_guidance::Result<u32> {
    match cond {
        Condition::Null => Ok(NUM_CLASSES as u32),
        Condition::Class(k) if (k as usize) < NUM_CLASSES => Ok(k),
        Condition::Class(k) => Err(steerdiff_guidance::Error::InvalidArgument(format!(
            "class {k} is not a toy class (labels 0..{}: {})",
            NUM_CLASSES - 1,
            super::CLASS_NAMES.join(", ")
        ))),
        Condition::Prompt(_) => Err(steerdiff_guidance::Error::InvalidArgument(
            "the toy model is class-conditional; it takes no prompts".into(),
        )),
    }
}

impl Denoiser for ToyFlow {
    fn name(&self) -> &str {
        &self.name
    }

    fn parameterization(&self) -> Parameterization {
        Parameterization::Velocity
    }

    fn path(&self) -> &NoisePath {
        &self.path
    }

    fn sample_shape(&self) -> Vec<usize> {
        vec![3, 32, 32]
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn max_batch(&self) -> usize {
        64
    }

    fn forward_copies(
        &self,
        x: &Tensor,
        copies: usize,
        at: &StepPoint,
        conds: &[Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        match &self.inference {
            Some(unet) if copies > 1 && conds.len() == x.dim(0)? * copies => {
                let labels = conds
                    .iter()
                    .map(|&c| label_of(c))
                    .collect::<steerdiff_guidance::Result<Vec<u32>>>()?;
                Ok(unet.forward_copies(x, copies, at.timestep as f32, &labels)?)
            }
            _ => self.forward(
                &steerdiff_guidance::denoiser::stacked(x, copies)?,
                at,
                conds,
            ),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        at: &StepPoint,
        conds: &[Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        let b = x.dim(0)?;
        if conds.len() != b {
            return Err(steerdiff_guidance::Error::InvalidArgument(format!(
                "{} conditions for a batch of {b}",
                conds.len()
            )));
        }
        if let Some(unet) = &self.inference {
            let labels = conds
                .iter()
                .map(|&c| label_of(c))
                .collect::<steerdiff_guidance::Result<Vec<u32>>>()?;
            return Ok(unet.forward(x, at.timestep as f32, &labels)?);
        }
        let t = Tensor::full(at.timestep as f32, 1, &self.device)?;
        let x = x.to_dtype(DType::F32)?;
        // One image at a time: candle's CPU matrix product rounds differently with the number
        // of rows (measured: up to 5e-5 on one 64-row block of a 320-row product), so a batched
        // forward would make a sample depend on the batch it was computed in, and a shard, a
        // re-run from a PNG record or a smaller population would not reproduce it bit for bit.
        use rayon::prelude::*;
        let rows = conds
            .par_iter()
            .enumerate()
            .map(|(i, &c)| {
                let y = Tensor::new(&[label_of(c)?], &self.device)?;
                Ok(self.net.forward(&x.narrow(0, i, 1)?, &t, &y)?)
            })
            .collect::<steerdiff_guidance::Result<Vec<Tensor>>>()?;
        Ok(Tensor::cat(&rows, 0)?)
    }
}

/// A toy classifier of clean images (`[B, 3, 32, 32]` in `[-1, 1]`).
#[derive(Debug, Clone)]
pub struct ToyClassifier {
    net: Classifier,
    name: String,
    device: Device,
}

impl ToyClassifier {
    /// Loads the manifest entry `entry` ([`CLASSIFIER`], [`EVAL_CLASSIFIER`] or [`JUDGE`]),
    /// checking its
    /// sha256.
    pub fn load(assets: &Assets, entry: &str) -> Result<Self> {
        Self::load_on(assets, entry, &Device::Cpu)
    }

    /// [`ToyClassifier::load`] with its weights on `device` (images are classified there).
    pub fn load_on(assets: &Assets, entry: &str, device: &Device) -> Result<Self> {
        let (config, weights) = checked_files(assets, entry)?;
        let vb = var_builder_from_bytes(weights, device)?;
        Self::from_var_builder(&config, vb, entry, &assets.describe(entry))
    }

    /// Builds from a config and a safetensors file (no manifest check), on the CPU.
    pub fn from_files(config: &ToyConfig, weights: &Path, name: &str) -> Result<Self> {
        Self::from_files_on(config, weights, name, &Device::Cpu)
    }

    /// [`ToyClassifier::from_files`] on `device`.
    pub fn from_files_on(
        config: &ToyConfig,
        weights: &Path,
        name: &str,
        device: &Device,
    ) -> Result<Self> {
        let vb = var_builder(weights, device)?;
        Self::from_var_builder(config, vb, name, &weights.display().to_string())
    }

    /// Builds the classifier of `config` from `vb` (`origin` names the weights in messages).
    fn from_var_builder(
        config: &ToyConfig,
        vb: VarBuilder<'static>,
        name: &str,
        origin: &str,
    ) -> Result<Self> {
        let ToyConfig::Classifier(cfg) = config else {
            return Err(Error::Spec(format!("{origin}: not a classifier")));
        };
        let device = vb.device().clone();
        let net = Classifier::new(cfg, vb)?;
        Ok(ToyClassifier {
            net,
            name: name.to_string(),
            device,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network.
    pub fn net(&self) -> &Classifier {
        &self.net
    }

    /// Log-probabilities `[B, K]` of the classes. Each image is classified on its own (in
    /// parallel), as the flow model predicts: candle's CPU matrix product rounds differently
    /// with the row count, and an image's score must not depend on the batch it was scored in
    /// (or a shard's rewards would differ from the whole run's in the last digits).
    pub fn log_probs(&self, x: &Tensor) -> Result<Tensor> {
        use rayon::prelude::*;
        let x = x.to_dtype(DType::F32)?.to_device(&self.device)?;
        let b = x.dim(0)?;
        if b == 0 {
            return Ok(self.net.log_probs(&x)?);
        }
        let parts = (0..b)
            .into_par_iter()
            .map(|i| Ok(self.net.log_probs(&x.narrow(0, i, 1)?)?))
            .collect::<Result<Vec<Tensor>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The most probable class of each image.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        Ok(self.log_probs(x)?.argmax(1)?.to_vec1::<u32>()?)
    }
}

/// FlowChef's classifier cost `−ln p(c | x̂0)` differentiates the toy guidance classifier
/// with respect to its input: its forward pass is written in ops that back-propagate (it was
/// trained with them), and its weights are plain tensors, so autograd reaches only the input.
impl steerdiff_guidance::strategy::DifferentiableClassifier for ToyClassifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn log_prob_tensor(&self, x: &Tensor) -> steerdiff_guidance::Result<Tensor> {
        ToyClassifier::log_probs(self, x).map_err(|e| steerdiff_guidance::Error::Reward {
            name: self.name.clone(),
            message: e.to_string(),
        })
    }
}

impl steerdiff_guidance::Classifier for ToyClassifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn log_probs(&self, x0: &Tensor) -> steerdiff_guidance::Result<Vec<Vec<f64>>> {
        let lp =
            ToyClassifier::log_probs(self, x0).map_err(|e| steerdiff_guidance::Error::Reward {
                name: self.name.clone(),
                message: e.to_string(),
            })?;
        Ok(lp.to_dtype(DType::F64)?.to_vec2::<f64>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reports_the_generator_variant_it_was_trained_on() {
        let entry = |training: serde_json::Value| ManifestEntry {
            dir: "toy-flow".into(),
            sha256: String::new(),
            bytes: 0,
            config: ToyConfig::Unet(super::super::UnetConfig::toy()),
            training,
        };
        let upright = entry(serde_json::json!({"spec": {"data_rotation": "upright"}}));
        assert_eq!(upright.data_rotation().unwrap(), data::Rotation::Upright);
        // Runs recorded before the option existed trained on the full circle.
        let old = entry(serde_json::json!({"spec": {"steps": 5000}}));
        assert_eq!(old.data_rotation().unwrap(), data::Rotation::Full);
        let bad = entry(serde_json::json!({"spec": {"data_rotation": "sideways"}}));
        let err = bad.data_rotation().unwrap_err().to_string();
        assert!(err.contains("toy-flow") && err.contains("upright"), "{err}");
    }

    #[test]
    fn a_prediction_does_not_depend_on_the_batch_it_is_computed_in() {
        // 16 images in one batch, one at a time, and in batches of 3 (the last of 1): every
        // image's prediction is the same bits, classes and the null condition mixed.
        let flow = ToyFlow::load(&Assets::Embedded, FLOW, "toy").unwrap();
        let dev = Device::Cpu;
        let n = 16;
        let x = Tensor::randn(0f32, 1.0, (n, 3, 32, 32), &dev).unwrap();
        let at = StepPoint {
            timestep: 500.0,
            alpha: 0.5,
            sigma: 0.5,
        };
        let conds: Vec<Condition> = (0..n as u32)
            .map(|i| match i % 6 {
                5 => Condition::Null,
                k => Condition::Class(k),
            })
            .collect();
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let all = bits(&flow.forward(&x, &at, &conds).unwrap());
        let per = all.len() / n;
        for size in [1, 3] {
            for start in (0..n).step_by(size) {
                let len = size.min(n - start);
                let part = flow
                    .forward(
                        &x.narrow(0, start, len).unwrap(),
                        &at,
                        &conds[start..start + len],
                    )
                    .unwrap();
                let same = bits(&part)
                    .iter()
                    .zip(&all[start * per..(start + len) * per])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "images {start}..{} in a batch of {len}", start + len);
            }
        }
        // Copies of a state evaluated without stacking them: the bits of the stacked batch.
        let half = x.narrow(0, 0, n / 2).unwrap();
        let stacked = Tensor::cat(&[&half, &half], 0).unwrap();
        let want = bits(&flow.forward(&stacked, &at, &conds).unwrap());
        let got = bits(&flow.forward_copies(&half, 2, &at, &conds).unwrap());
        assert!(got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(got.len(), want.len());
    }
}
