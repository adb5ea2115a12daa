//! [`ConfigReader`]: a `config.json` object read field by field, remembering which fields were
//! read so unknown ones can be refused. Numeric fields are read checked against their
//! [`Bounds`](super::config_fields::Bounds) (see [`super::config_fields`]).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// A JSON object being read field by field; remembers which fields were read.
#[derive(Debug)]
pub struct ConfigReader {
    /// The file (for messages).
    pub file: String,
    map: Map<String, Value>,
    seen: BTreeSet<String>,
}

impl ConfigReader {
    /// Reads and parses a JSON object file (Python's `NaN`/`Infinity` accepted).
    pub fn open(path: &Path, name: &str) -> Result<ConfigReader> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Spec(format!("cannot read {name} (`{}`): {e}", path.display())))?;
        ConfigReader::parse(&text, name)
    }

    /// Parses a JSON object.
    pub fn parse(text: &str, name: &str) -> Result<ConfigReader> {
        let v = steerdiff_guidance::schedule::diffusers::parse_python_json(text)
            .map_err(|e| Error::Spec(format!("{name}: {e}")))?;
        ConfigReader::from_value(v, name)
    }

    /// Reads an already-parsed JSON object (e.g. a nested `text_config`).
    pub fn from_value(v: Value, name: &str) -> Result<ConfigReader> {
        match v {
            Value::Object(map) => Ok(ConfigReader {
                file: name.into(),
                map,
                seen: BTreeSet::new(),
            }),
            _ => Err(Error::Spec(format!("{name} is not a JSON object"))),
        }
    }

    /// The field `key` (`None` when absent or null), marked as read.
    pub(super) fn raw(&mut self, key: &str) -> Option<Value> {
        self.seen.insert(key.into());
        self.map.get(key).filter(|v| !v.is_null()).cloned()
    }

    /// The error for a field that is not `want`, naming the file, the field and its value.
    pub fn bad(&self, key: &str, want: &str) -> Error {
        Error::Spec(format!(
            "{}: `{key}` must be {want} (got {})",
            self.file,
            self.map.get(key).map(|v| v.to_string()).unwrap_or_default()
        ))
    }

    /// The error for a required field that is absent.
    pub fn missing(&self, key: &str) -> Error {
        Error::Spec(format!(
            "{}: required field `{key}` is missing (is this a complete diffusers config?)",
            self.file
        ))
    }

    /// An optional boolean.
    pub fn bool_or(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, "true or false")),
        }
    }

    /// An optional string.
    pub fn str_opt(&mut self, key: &str) -> Result<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }

    /// A required list of strings.
    pub fn strings(&mut self, key: &str) -> Result<Vec<String>> {
        match self.raw(key) {
            None => Err(self.missing(key)),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.bad(key, "a list of strings")),
            Some(_) => Err(self.bad(key, "a list of strings")),
        }
    }

    /// Refuses `key` unless it is absent or equal to `default` (or null / `false`).
    pub fn must_be(&mut self, key: &str, default: Value, what: &str) -> Result<()> {
        match self.raw(key) {
            None => Ok(()),
            Some(v)
                if v == default
                    || (v == Value::Bool(false) && default.is_null())
                    || matches!((v.as_f64(), default.as_f64()), (Some(a), Some(b)) if a == b) =>
            {
                Ok(())
            }
            Some(v) => Err(Error::Spec(format!(
                "{}: `{key}` = {v} is not supported ({what}); steerdiff supports {}",
                self.file,
                if default.is_null() {
                    "only null".to_string()
                } else {
                    default.to_string()
                }
            ))),
        }
    }

    /// A required nested object (e.g. CLIP's `vision_config`), as a reader of its own.
    pub fn object(&mut self, key: &str) -> Result<ConfigReader> {
        match self.raw(key) {
            None => Err(self.missing(key)),
            Some(v @ Value::Object(_)) => {
                ConfigReader::from_value(v, &format!("{}: {key}", self.file))
            }
            Some(_) => Err(self.bad(key, "an object")),
        }
    }

    /// Marks fields as read without using them (bookkeeping).
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.seen.insert((*k).into());
        }
    }

    /// Refuses every field not read, unless it is null, `false`, or starts with `_`.
    pub fn finish(&self) -> Result<()> {
        let unknown: Vec<String> = self
            .map
            .iter()
            .filter(|(k, v)| {
                !self.seen.contains(*k)
                    && !k.starts_with('_')
                    && !v.is_null()
                    && **v != Value::Bool(false)
            })
            .map(|(k, v)| format!("`{k}` = {v}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::Spec(format!(
                "{}: unknown field(s) {} — steerdiff does not know what they change, so it \
                 refuses rather than misread the model",
                self.file,
                unknown.join(", ")
            )))
        }
    }
}
