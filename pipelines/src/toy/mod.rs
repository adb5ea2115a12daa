//! The embedded toy models: a procedural dataset of ten shape classes, a class-conditional
//! rectified-flow DiT (and its weaker twin), and two classifiers, all trained on this CPU by
//! `steerdiff toy train` and shipped in `assets/`.

pub mod classifier;
pub mod data;
pub mod dit;
pub mod model;
pub mod nn;
pub mod repa;
pub mod train;

use serde::{Deserialize, Serialize};

pub use classifier::{Classifier, ClassifierArch, ClassifierConfig};
pub use data::{class_by_name, CLASS_NAMES, NUM_CLASSES};
pub use dit::{Dit, DitConfig};
pub use model::{Manifest, ToyClassifier, ToyFlow};

/// A toy model's `config.json`: `{"model_type": "dit", …}` or `{"model_type": "classifier", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model_type", rename_all = "snake_case")]
pub enum ToyConfig {
    /// The flow model.
    Dit(DitConfig),
    /// A classifier.
    Classifier(ClassifierConfig),
}
