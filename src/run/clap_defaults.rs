//! Defaults of flag groups, taken from clap itself so that each is stated once, in its
//! `#[arg(default_value_t = …)]`.

use clap::{Args, Command, FromArgMatches};

/// The value of a flag group when no flag is given: what clap parses from an empty command
/// line.
pub fn parse_defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(Command::new("defaults"));
    let matches = cmd
        .try_get_matches_from(["defaults"])
        .expect("every flag of the group has a default or is optional");
    T::from_arg_matches(&matches).expect("clap parses its own defaults")
}

/// `impl Default for T` by [`parse_defaults`], for a flag group whose defaults clap states.
macro_rules! defaults_from_clap {
    ($t:ty) => {
        impl Default for $t {
            /// clap's defaults, as the `#[arg]` attributes state them.
            fn default() -> Self {
                $crate::run::clap_defaults::parse_defaults()
            }
        }
    };
}

pub(crate) use defaults_from_clap;
