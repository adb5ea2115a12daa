//! Guidance strategies, one file each.

pub mod cfg;
pub mod code;
pub mod fk;

pub use cfg::ClassifierFree;
pub use code::{Code, Selection};
pub use fk::{FkSteering, Potential, ResampleSchedule};
