//! Guidance strategies, one file each.

pub mod cfg;

pub use cfg::ClassifierFree;
