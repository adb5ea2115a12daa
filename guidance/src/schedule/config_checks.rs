//! Reading a diffusers scheduler config ([`SchedulerConfig::from_value`]) and checking the
//! range of its numbers ([`SchedulerConfig::check`]) before anything is sized by them: `num_train_timesteps` sizes the noise tables, the betas
//! enter every `ᾱ`, the shifts and sigmas every step. A bad value is refused naming the field,
//! its value and what it must be, never clamped or replaced by a default.

use serde_json::Value;

use super::diffusers::{parse_python_json, SchedulerConfig};
use crate::{Error, Result};

/// Most `num_train_timesteps` a scheduler config may ask for (diffusers' schedulers use 1000;
/// the noise tables hold one value per train timestep).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// The one check of a field: refuses `value`, when present and `ok` rejects it, naming `key`,
/// the value and `want` (what it must be).
fn field<T: std::fmt::Display + Copy>(
    key: &str,
    value: Option<T>,
    ok: impl Fn(T) -> bool,
    want: &str,
) -> Result<()> {
    match value {
        Some(v) if !ok(v) => Err(Error::InvalidArgument(format!(
            "`{key}` = {v} is out of range: it must be {want}"
        ))),
        _ => Ok(()),
    }
}

/// A beta: a probability strictly between 0 and 1 (NaN fails).
fn is_beta(x: f64) -> bool {
    x > 0.0 && x < 1.0
}

fn is_positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` (Python-style JSON accepted).
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_value(None, &parse_python_json(text)?)
    }

    /// Reads a config object; `class_name` (when given) overrides the object's `_class_name`
    /// (the fixture files name the class beside the config). A field of the wrong type, or a
    /// number out of range ([`SchedulerConfig::check`]), is refused, naming the field.
    pub fn from_value(class_name: Option<&str>, config: &Value) -> Result<Self> {
        let mut cfg: SchedulerConfig =
            serde_json::from_value(config.clone()).map_err(|e| deserialise_error(config, e))?;
        if let Some(c) = class_name {
            cfg.class_name = Some(c.to_string());
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Refuses numbers no diffusers scheduler can use: `num_train_timesteps` outside
    /// 1..=[`MAX_TRAIN_TIMESTEPS`], betas (`beta_start`, `beta_end`, each of `trained_betas`)
    /// outside (0, 1), a `steps_offset` outside the train timesteps, non-positive or
    /// non-finite sigmas and shifts, a NaN `lambda_min_clipped`, a `shift_terminal` outside
    /// [0, 1), and `max_image_seq_len` ≤ `base_image_seq_len`. Absent fields are not checked
    /// (their defaults are valid).
    pub fn check(&self) -> Result<()> {
        field(
            "num_train_timesteps",
            self.num_train_timesteps,
            |n| (1..=MAX_TRAIN_TIMESTEPS).contains(&n),
            &format!(
                "an integer from 1 to {MAX_TRAIN_TIMESTEPS} (diffusers' schedulers use 1000; \
                 the noise tables hold one value per train timestep)"
            ),
        )?;
        let n = self.num_train_timesteps();
        let beta = "a number in (0, 1)";
        field("beta_start", self.beta_start, is_beta, beta)?;
        field("beta_end", self.beta_end, is_beta, beta)?;
        if let Some(betas) = &self.trained_betas {
            if let Some((i, &b)) = betas.iter().enumerate().find(|(_, &b)| !is_beta(b)) {
                field(&format!("trained_betas[{i}]"), Some(b), is_beta, beta)?;
            }
        }
        field(
            "steps_offset",
            self.steps_offset,
            |o| o >= 0 && (o as u64) < n as u64,
            &format!("a train timestep offset from 0 to {}", n - 1),
        )?;
        let positive = "a finite number greater than 0";
        field("sigma_min", self.sigma_min, is_positive, positive)?;
        field("sigma_max", self.sigma_max, is_positive, positive)?;
        field("shift", self.shift, is_positive, positive)?;
        field(
            "lambda_min_clipped",
            self.lambda_min_clipped,
            |x: f64| !x.is_nan(),
            "a number (or -Infinity: no clipping)",
        )?;
        let finite = "a finite number";
        field("base_shift", self.base_shift, f64::is_finite, finite)?;
        field("max_shift", self.max_shift, f64::is_finite, finite)?;
        field(
            "shift_terminal",
            self.shift_terminal,
            |x: f64| (0.0..1.0).contains(&x),
            "a number in [0, 1) (0: off)",
        )?;
        let base = self.base_image_seq_len.unwrap_or(256);
        field(
            "max_image_seq_len",
            Some(self.max_image_seq_len.unwrap_or(4096)),
            |m| m > base,
            &format!("greater than base_image_seq_len ({base})"),
        )
    }
}

/// The error for a scheduler config object that does not deserialise, naming the first field
/// whose value has the wrong type (serde's own message does not name it).
fn deserialise_error(config: &Value, e: serde_json::Error) -> Error {
    let culprit = config.as_object().and_then(|map| {
        map.iter().find_map(|(k, v)| {
            let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
            serde_json::from_value::<SchedulerConfig>(one)
                .err()
                .map(|e| format!("`{k}` = {v}: {e}"))
        })
    });
    Error::InvalidArgument(format!(
        "invalid scheduler config: {}",
        culprit.unwrap_or_else(|| e.to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::SetTimesteps;

    fn refused(json: &str) -> String {
        match SchedulerConfig::from_json_str(json) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("accepted {json}: {c:?}"),
        }
    }

    #[test]
    fn field_refuses_only_present_bad_values() {
        assert!(field("x", None::<f64>, is_positive, "positive").is_ok());
        assert!(field("x", Some(2.0), is_positive, "positive").is_ok());
        let e = field("x", Some(f64::NAN), is_positive, "positive").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(ref m)
            if m == "`x` = NaN is out of range: it must be positive"));
        assert!(!is_beta(0.0) && !is_beta(1.0) && !is_beta(f64::NAN) && is_beta(0.5));
    }

    #[test]
    fn sizes_and_betas_are_checked_before_anything_is_allocated() {
        let e = refused(r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 100000000000}"#);
        assert!(
            e.contains("`num_train_timesteps` = 100000000000") && e.contains("from 1 to 100000"),
            "{e}"
        );
        assert!(refused(r#"{"num_train_timesteps": 0}"#).contains("num_train_timesteps"));
        let e = refused(r#"{"num_train_timesteps": -5}"#);
        assert!(e.contains("`num_train_timesteps` = -5"), "{e}");
        let e = refused(r#"{"num_train_timesteps": "1000"}"#);
        assert!(e.contains("`num_train_timesteps` = \"1000\""), "{e}");
        assert!(refused(r#"{"beta_start": 0}"#).contains("`beta_start` = 0"));
        assert!(refused(r#"{"beta_end": NaN}"#).contains("`beta_end` = NaN"));
        assert!(refused(r#"{"beta_end": 1.5}"#).contains("(0, 1)"));
        let e = refused(r#"{"num_train_timesteps": 3, "trained_betas": [0.1, -0.2, 0.3]}"#);
        assert!(e.contains("`trained_betas[1]` = -0.2"), "{e}");
        assert!(refused(r#"{"steps_offset": 1000}"#).contains("from 0 to 999"));
        assert!(refused(r#"{"steps_offset": -1}"#).contains("steps_offset"));
        assert!(refused(r#"{"shift": 0}"#).contains("`shift` = 0"));
        assert!(refused(r#"{"sigma_max": Infinity}"#).contains("sigma_max"));
        assert!(refused(r#"{"lambda_min_clipped": NaN}"#).contains("lambda_min_clipped"));
        assert!(refused(r#"{"shift_terminal": 1}"#).contains("shift_terminal"));
        assert!(refused(r#"{"max_image_seq_len": 256}"#).contains("max_image_seq_len"));
        // Valid configs, defaults and −∞ pass; a config built in code is checked when used.
        for ok in [
            r#"{"num_train_timesteps": 100000, "steps_offset": 1, "beta_end": 0.012}"#,
            r#"{"lambda_min_clipped": -Infinity, "shift": 3.0, "shift_terminal": 0.02}"#,
            r#"{"num_train_timesteps": 2, "trained_betas": [0.1, 0.2]}"#,
        ] {
            SchedulerConfig::from_json_str(ok).unwrap();
        }
        let huge = SchedulerConfig {
            class_name: Some("DDIMScheduler".into()),
            num_train_timesteps: Some(usize::MAX),
            clip_sample: Some(false),
            ..Default::default()
        };
        assert!(huge.vp_path().is_err() && huge.noise_path().is_err());
        assert!(huge.sampler(4, &SetTimesteps::default(), None).is_err());
    }
}
