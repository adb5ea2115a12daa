//! Command-line settings of reward plugins (`--reward stdio:…` or `--reward http://…`).

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use steerdiff_pipelines::reward::plugin::protocol::MAX_ANSWER_PAYLOAD_BYTES;
use steerdiff_pipelines::reward::{OnError, PluginOptions, PluginReward, PluginTarget};

/// What to do with items a plugin cannot score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnErrorArg {
    /// Stop the run with an error.
    #[default]
    Abort,
    /// Score the items −∞ (zero weight), warn, and go on.
    Skip,
}

/// Flags of reward plugins.
#[derive(Debug, Clone, Args, PartialEq, Serialize)]
#[command(next_help_heading = crate::run::help::REWARDS)]
pub struct PluginArgs {
    /// Reward plugins: seconds to wait for one answer before the plugin is stopped.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60.0,
        allow_negative_numbers = true
    )]
    pub plugin_timeout: f64,
    /// Reward plugins: seconds to wait for the describe handshake (start-up, model loading).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 120.0,
        allow_negative_numbers = true
    )]
    pub plugin_startup_timeout: f64,
    /// Reward plugins: extra attempts of a failed request (a child is restarted first).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub plugin_retries: u32,
    /// Reward plugins: what to do with items that still fail.
    #[arg(long, value_enum, default_value_t = OnErrorArg::Abort)]
    pub plugin_on_error: OnErrorArg,
    /// Reward plugins: requests in flight at once (child processes or HTTP connections).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub plugin_concurrency: usize,
    /// Reward plugins: items per request (default: the plugin's preferred batch size).
    #[arg(long, value_name = "N")]
    pub plugin_batch: Option<usize>,
    /// Reward plugins: allow HTTP plugins on other machines (they receive every image).
    #[arg(long)]
    pub plugin_allow_remote: bool,
    /// Reward plugins: score repeated items again instead of answering from the cache.
    #[arg(long)]
    pub plugin_no_cache: bool,
    /// Reward plugins: most payload one answer may carry, in MiB; a header announcing more
    /// is refused before anything is read or allocated.
    #[arg(long, value_name = "MIB", default_value_t = MAX_ANSWER_PAYLOAD_BYTES >> 20)]
    pub plugin_max_answer_mib: usize,
}

/// The largest `--plugin-max-answer-mib` (4 GiB).
const MAX_ANSWER_MIB: usize = 4096;

impl Default for PluginArgs {
    /// clap's defaults, as the `#[arg]` attributes above state them.
    fn default() -> Self {
        crate::run::clap_defaults::parse_defaults()
    }
}

impl PluginArgs {
    /// The engine-side options, checked.
    pub fn options(&self) -> anyhow::Result<PluginOptions> {
        for (flag, v) in [
            ("--plugin-timeout", self.plugin_timeout),
            ("--plugin-startup-timeout", self.plugin_startup_timeout),
        ] {
            if !(v.is_finite() && v > 0.0) {
                crate::error::input_error!("{flag} must be a positive number of seconds, got {v}");
            }
        }
        if self.plugin_concurrency == 0 || self.plugin_batch == Some(0) {
            crate::error::input_error!(
                "--plugin-concurrency and --plugin-batch must be at least 1"
            );
        }
        if !(1..=MAX_ANSWER_MIB).contains(&self.plugin_max_answer_mib) {
            crate::error::input_error!(
                "--plugin-max-answer-mib must be from 1 to {MAX_ANSWER_MIB}, got {}",
                self.plugin_max_answer_mib
            );
        }
        Ok(PluginOptions {
            timeout: Duration::from_secs_f64(self.plugin_timeout),
            startup_timeout: Duration::from_secs_f64(self.plugin_startup_timeout),
            retries: self.plugin_retries,
            on_error: match self.plugin_on_error {
                OnErrorArg::Abort => OnError::Abort,
                OnErrorArg::Skip => OnError::Skip,
            },
            concurrency: self.plugin_concurrency,
            batch_size: self.plugin_batch,
            allow_remote: self.plugin_allow_remote,
            cache: !self.plugin_no_cache,
            max_answer_bytes: self.plugin_max_answer_mib << 20,
            ..PluginOptions::default()
        })
    }

    /// The plugin `spec` names (`stdio:…`, `http://…`), connected and handshaken; `None` when
    /// `spec` is not a plugin. Errors are input errors (the plugin cannot be used as given).
    pub fn connect(&self, spec: &str) -> Option<anyhow::Result<PluginReward>> {
        let input = |m: String| anyhow::Error::new(crate::error::InputError(m));
        PluginTarget::parse(spec).map(|target| {
            let target = target.map_err(|e| input(format!("--reward {e}")))?;
            PluginReward::connect(&target, self.options()?).map_err(|e| input(e.to_string()))
        })
    }
}
