//! The embedded toy models: a procedural dataset of ten shape classes, a class-conditional
//! rectified-flow network (a DiT or a U-Net) and its weaker twin, and two classifiers, all
//! trained on this CPU by `steerdiff toy train` and shipped in `assets/`.

pub mod assets;
pub mod augment;
pub mod classifier;
pub mod conv;
pub mod data;
pub mod dit;
pub mod model;
pub mod network;
pub mod nn;
pub mod pixel_ops;
pub mod repa;
pub mod resnet;
pub mod train;
pub mod unet;

use serde::{Deserialize, Serialize};

pub use assets::Assets;
pub use classifier::{Classifier, ClassifierArch, ClassifierConfig};
pub use data::{class_by_name, CLASS_NAMES, NUM_CLASSES};
pub use dit::{Dit, DitConfig};
pub use model::{Manifest, ToyClassifier, ToyFlow};
pub use network::FlowNet;
pub use unet::{Unet, UnetConfig, UnetInference};

/// A toy model's `config.json`: `{"model_type": "dit" | "unet" | "classifier", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model_type", rename_all = "snake_case")]
pub enum ToyConfig {
    /// A flow model: the diffusion transformer.
    Dit(DitConfig),
    /// A flow model: the U-Net.
    Unet(UnetConfig),
    /// A classifier.
    Classifier(ClassifierConfig),
}
