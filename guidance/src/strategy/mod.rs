//! Guidance strategies, one file each.

pub mod cfg;
pub mod code;
pub mod dsearch;
pub mod fk;
pub mod noise_search;

pub use cfg::ClassifierFree;
pub use code::{Code, Selection};
pub use dsearch::{DSearch, SearchSchedule};
pub use fk::{FkSteering, Potential, ResampleSchedule};
pub use noise_search::{NoiseSearch, SearchKind};
