//! The macro behind the one list of strategies in [`super`]: from `Variant => module` lines
//! it declares each strategy's module and makes [`StrategyKind`] (what `--guidance` names,
//! with `ValueEnum` and `Serialize` read off each module's `DEF`) and the flag groups that
//! gather every strategy's own `Flags` for clap and the run record.
//!
//! The ripgrep way (`crates/core/flags/defs.rs`: each flag a definition, one list of them),
//! with clap's derive doing the parsing: a strategy is its file plus one line in the list.

/// Declares the strategies; see the module docs. `steering` strategies keep their flags at
/// the top of the record's `strategy` object, `per_step` ones under `strategy.per_step`.
macro_rules! strategies {
    (
        steering: { $($svar:ident => $smod:ident),* $(,)? }
        per_step: { $($pvar:ident => $pmod:ident),* $(,)? }
    ) => {
        $(pub mod $smod;)*
        $(pub mod $pmod;)*

        /// The strategies `--guidance` can name, in the registry's order; each one's
        /// [`Def`](crate::run::strategy::Def) says the rest.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum StrategyKind {
            #[default]
            $(
                #[doc = concat!("`", stringify!($smod), "`: see its `DEF`.")]
                $svar,
            )*
            $(
                #[doc = concat!("`", stringify!($pmod), "`: see its `DEF`.")]
                $pvar,
            )*
        }

        impl StrategyKind {
            /// Every strategy, in the registry's order.
            pub const ALL: &'static [StrategyKind] =
                &[$(StrategyKind::$svar,)* $(StrategyKind::$pvar,)*];

            /// What the strategy declares about itself.
            pub fn def(self) -> &'static $crate::run::strategy::Def {
                match self {
                    $(StrategyKind::$svar => &$smod::DEF,)*
                    $(StrategyKind::$pvar => &$pmod::DEF,)*
                }
            }
        }

        /// The own flags of every particle strategy and noise search.
        #[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize)]
        #[command(next_help_heading = $crate::run::help::STRATEGIES)]
        pub struct SteeringFlags {
            $(
                #[doc = concat!("Flags of `", stringify!($smod), "`.")]
                #[command(flatten)]
                #[serde(flatten)]
                pub $smod: $smod::Flags,
            )*
        }

        /// The own flags of every per-step strategy.
        #[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize)]
        #[command(next_help_heading = $crate::run::help::STRATEGIES)]
        pub struct PerStepFlags {
            $(
                #[doc = concat!("Flags of `", stringify!($pmod), "`.")]
                #[command(flatten)]
                #[serde(flatten)]
                pub $pmod: $pmod::Flags,
            )*
        }

        $crate::run::clap_defaults::defaults_from_clap!(SteeringFlags);
        $crate::run::clap_defaults::defaults_from_clap!(PerStepFlags);
    };
}

pub(super) use strategies;
