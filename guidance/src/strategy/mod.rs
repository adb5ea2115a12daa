//! Guidance strategies, one file each.

pub mod autoguidance;
pub mod cfg;
pub mod classifier_cost;
pub mod code;
pub mod combine;
pub mod costs;
pub mod dsearch;
pub mod dynamic_cfg;
pub mod fk;
pub mod flowchef;
pub mod gfcg;
pub mod noise_search;
pub mod replacement;
pub mod time_travel;

pub use autoguidance::Autoguidance;
pub use cfg::ClassifierFree;
pub use classifier_cost::{ClassifierCost, DifferentiableClassifier};
pub use code::{Code, Selection};
pub use costs::{GaussianDeblur, SuperResolution};
pub use dsearch::{DSearch, SearchSchedule};
pub use dynamic_cfg::DynamicCfg;
pub use fk::{FkSteering, Potential, ResampleSchedule};
pub use flowchef::{Cost, FlowChef, GradientEstimate, MaskedSquare};
pub use gfcg::{Gfcg, ReferenceRule, ScaleRule};
pub use noise_search::{NoiseSearch, SearchKind};
pub use replacement::Replacement;
pub use time_travel::TimeTravel;
