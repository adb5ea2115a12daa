//! [`StrategyKind`] as clap and serde see it: its values, help lines and recorded names are
//! each strategy's `DEF.name` and `DEF.about`.

use clap::builder::PossibleValue;
use clap::ValueEnum;
use serde::{Serialize, Serializer};

use super::StrategyKind;

impl StrategyKind {
    /// The name as written on the command line (`dynamic-cfg`).
    pub fn cli_name(self) -> &'static str {
        self.def().name
    }

    /// The strategy named `name` on the command line.
    pub fn from_name(name: &str) -> Option<StrategyKind> {
        Self::ALL.iter().copied().find(|k| k.cli_name() == name)
    }
}

impl ValueEnum for StrategyKind {
    fn value_variants<'a>() -> &'a [Self] {
        Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.def().name).help(self.def().about))
    }
}

impl Serialize for StrategyKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.cli_name())
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.cli_name())
    }
}
