//! The checked-field helpers of [`ConfigReader`]: every numeric field of a config is read
//! through [`ConfigReader::number`] against the [`Bounds`] it must be within, so a present field
//! of the wrong type or out of range is refused (naming the file, the field, what it must be
//! and what it is), never replaced by a default.

use serde_json::Value;

use super::config_reader::ConfigReader;
use crate::Result;

/// The values a numeric config field may take: integers or finite numbers between two limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    integer: bool,
    min: f64,
    min_open: bool,
    max: f64,
}

impl Bounds {
    /// Any non-negative integer (ids, paddings; the count of something that may be absent).
    pub const INDEX: Bounds = Bounds {
        integer: true,
        min: 0.0,
        min_open: false,
        max: f64::INFINITY,
    };
    /// An integer of at least 1 (channel, layer and head counts, sizes).
    pub const COUNT: Bounds = Bounds {
        min: 1.0,
        ..Bounds::INDEX
    };
    /// Any finite number.
    pub const FINITE: Bounds = Bounds {
        integer: false,
        min: f64::NEG_INFINITY,
        min_open: false,
        max: f64::INFINITY,
    };
    /// A finite number greater than 0 (ε, scales).
    pub const POSITIVE: Bounds = Bounds {
        min: 0.0,
        min_open: true,
        ..Bounds::FINITE
    };

    /// These bounds with `max` as the largest value allowed.
    pub const fn at_most(self, max: f64) -> Bounds {
        Bounds { max, ..self }
    }

    /// Whether `v` is a number these bounds admit.
    pub fn admits(&self, v: &Value) -> bool {
        let x = if self.integer {
            v.as_u64().map(|x| x as f64)
        } else {
            v.as_f64().filter(|x| x.is_finite())
        };
        x.is_some_and(|x| {
            (if self.min_open {
                x > self.min
            } else {
                x >= self.min
            }) && x <= self.max
        })
    }

    /// The limits beyond the kind of number: `""`, `"at least 1"`, `"from 1 to 8"`, ….
    fn limits(&self) -> String {
        let natural_min = if self.integer { 0.0 } else { f64::NEG_INFINITY };
        let low = (self.min != natural_min || self.min_open).then(|| {
            if self.min_open {
                format!("greater than {}", self.min)
            } else {
                format!("at least {}", self.min)
            }
        });
        let high = self
            .max
            .is_finite()
            .then(|| format!("at most {}", self.max));
        match (low, high) {
            (None, None) => String::new(),
            (Some(l), None) => l,
            (None, Some(h)) => h,
            (Some(_), Some(_)) if !self.min_open => format!("from {} to {}", self.min, self.max),
            (Some(l), Some(h)) => format!("{l} and {h}"),
        }
    }

    /// What one value must be, for messages: `"a non-negative integer, at least 1"`.
    pub fn describe(&self) -> String {
        let kind = if self.integer {
            "a non-negative integer"
        } else {
            "a finite number"
        };
        match self.limits() {
            l if l.is_empty() => kind.to_string(),
            l => format!("{kind}, {l}"),
        }
    }

    /// What a list of values must be, for messages: `"a list of non-negative integers, each
    /// at least 1"`.
    pub fn describe_list(&self) -> String {
        let kind = if self.integer {
            "non-negative integers"
        } else {
            "finite numbers"
        };
        match self.limits() {
            l if l.is_empty() => format!("a list of {kind}"),
            l => format!("a list of {kind}, each {l}"),
        }
    }
}

impl ConfigReader {
    /// The one checked read of a numeric field: `None` when absent or null, the value when
    /// `bounds` admit it, else an error naming the file, the field and what it must be.
    pub fn number(&mut self, key: &str, bounds: Bounds) -> Result<Option<Value>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) if bounds.admits(&v) => Ok(Some(v)),
            Some(_) => Err(self.bad(key, &bounds.describe())),
        }
    }

    /// An optional integer within `bounds`.
    pub fn usize_opt(&mut self, key: &str, bounds: Bounds) -> Result<Option<usize>> {
        match self.number(key, bounds)? {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.bad(key, &bounds.describe())),
        }
    }

    /// A required integer within `bounds`.
    pub fn usize(&mut self, key: &str, bounds: Bounds) -> Result<usize> {
        self.usize_opt(key, bounds)?
            .ok_or_else(|| self.missing(key))
    }

    /// An optional integer within `bounds`, `default` when absent.
    pub fn usize_or(&mut self, key: &str, default: usize, bounds: Bounds) -> Result<usize> {
        Ok(self.usize_opt(key, bounds)?.unwrap_or(default))
    }

    /// An optional number within `bounds`, `None` when absent or null.
    pub fn f64_opt(&mut self, key: &str, bounds: Bounds) -> Result<Option<f64>> {
        Ok(self.number(key, bounds)?.and_then(|v| v.as_f64()))
    }

    /// An optional number within `bounds`, `default` when absent.
    pub fn f64_or(&mut self, key: &str, default: f64, bounds: Bounds) -> Result<f64> {
        Ok(self.f64_opt(key, bounds)?.unwrap_or(default))
    }

    /// The integers of a list, each within `bounds`; `None` unless every one is.
    fn ints(list: &[Value], bounds: Bounds) -> Option<Vec<usize>> {
        list.iter()
            .map(|v| v.as_u64().filter(|_| bounds.admits(v)).map(|x| x as usize))
            .collect()
    }

    /// A required list of integers, each within `bounds`.
    pub fn usizes(&mut self, key: &str, bounds: Bounds) -> Result<Vec<usize>> {
        match self.raw(key) {
            None => Err(self.missing(key)),
            Some(Value::Array(a)) => {
                Self::ints(&a, bounds).ok_or_else(|| self.bad(key, &bounds.describe_list()))
            }
            Some(_) => Err(self.bad(key, &bounds.describe_list())),
        }
    }

    /// An integer within `bounds` (repeated `n` times) or a list of `n` of them (diffusers'
    /// per-block fields, a `sample_size` side or `[height, width]`); `None` if absent.
    pub fn one_or_list(
        &mut self,
        key: &str,
        n: usize,
        bounds: Bounds,
    ) -> Result<Option<Vec<usize>>> {
        let want = || format!("{}, or a list of {n} of them", bounds.describe());
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Array(a)) => match Self::ints(&a, bounds) {
                Some(v) if v.len() == n => Ok(Some(v)),
                _ => Err(self.bad(key, &want())),
            },
            Some(v) => match Self::ints(std::slice::from_ref(&v), bounds) {
                Some(x) => Ok(Some(vec![x[0]; n])),
                None => Err(self.bad(key, &want())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str) -> ConfigReader {
        ConfigReader::parse(text, "x/config.json").unwrap()
    }

    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn bounds_admit_and_describe() {
        let c = Bounds::COUNT;
        assert!(c.admits(&1.into()) && c.admits(&u64::MAX.into()));
        for bad in [
            Value::from(0),
            (-4).into(),
            1.5.into(),
            "8".into(),
            true.into(),
        ] {
            assert!(!c.admits(&bad), "{bad}");
        }
        assert!(Bounds::INDEX.admits(&0.into()));
        assert!(!Bounds::INDEX.at_most(2.0).admits(&3.into()));
        let p = Bounds::POSITIVE;
        assert!(p.admits(&1e-9.into()) && p.admits(&1.into()));
        for bad in [
            Value::from(0.0),
            (-1.0).into(),
            "Infinity".into(),
            "NaN".into(),
        ] {
            assert!(!p.admits(&bad), "{bad}");
        }
        assert!(Bounds::FINITE.admits(&(-3.5).into()));
        assert_eq!(Bounds::INDEX.describe(), "a non-negative integer");
        assert_eq!(c.describe(), "a non-negative integer, at least 1");
        assert_eq!(
            c.at_most(8.0).describe(),
            "a non-negative integer, from 1 to 8"
        );
        assert_eq!(
            Bounds::INDEX.at_most(2.0).describe(),
            "a non-negative integer, at most 2"
        );
        assert_eq!(p.describe(), "a finite number, greater than 0");
        assert_eq!(Bounds::FINITE.describe(), "a finite number");
        assert_eq!(
            c.describe_list(),
            "a list of non-negative integers, each at least 1"
        );
    }

    #[test]
    fn numeric_fields_are_read_checked_or_defaulted() {
        let mut c = reader(
            r#"{"a": 4, "neg": -8, "zero": 0, "s": "64", "eps": 1e-5, "inf": Infinity,
                "nul": null, "list": [32, 64], "badlist": [32, 0], "big": 100}"#,
        );
        assert_eq!(c.usize("a", Bounds::COUNT).unwrap(), 4);
        assert_eq!(c.usize_or("absent", 64, Bounds::COUNT).unwrap(), 64);
        assert_eq!(c.usize_or("nul", 7, Bounds::COUNT).unwrap(), 7);
        assert_eq!(c.usize_opt("absent", Bounds::COUNT).unwrap(), None);
        let e = err(c.usize_or("neg", 64, Bounds::COUNT));
        assert_eq!(
            e,
            "x/config.json: `neg` must be a non-negative integer, at least 1 (got -8)"
        );
        let e = err(c.usize("zero", Bounds::COUNT));
        assert!(
            e.contains("`zero` must be a non-negative integer") && e.contains("got 0"),
            "{e}"
        );
        assert_eq!(c.usize("zero", Bounds::INDEX).unwrap(), 0);
        assert!(err(c.usize_opt("s", Bounds::COUNT)).contains("`s` must be"));
        assert!(err(c.usize("big", Bounds::COUNT.at_most(10.0))).contains("from 1 to 10"));
        assert!(err(c.usize("absent", Bounds::COUNT)).contains("missing"));
        assert_eq!(c.f64_or("eps", 1.0, Bounds::POSITIVE).unwrap(), 1e-5);
        assert_eq!(c.f64_or("absent", 0.5, Bounds::POSITIVE).unwrap(), 0.5);
        assert!(err(c.f64_opt("inf", Bounds::FINITE)).contains("`inf` must be a finite number"));
        assert!(err(c.f64_or("zero", 1.0, Bounds::POSITIVE)).contains("greater than 0"));
        assert_eq!(c.usizes("list", Bounds::COUNT).unwrap(), vec![32, 64]);
        let e = err(c.usizes("badlist", Bounds::COUNT));
        assert!(
            e.contains("`badlist` must be a list of non-negative integers, each at least 1"),
            "{e}"
        );
        assert_eq!(
            c.one_or_list("a", 3, Bounds::COUNT).unwrap(),
            Some(vec![4; 3])
        );
        assert_eq!(
            c.one_or_list("list", 2, Bounds::COUNT).unwrap(),
            Some(vec![32, 64])
        );
        assert!(err(c.one_or_list("list", 3, Bounds::COUNT)).contains("a list of 3 of them"));
        assert!(err(c.one_or_list("zero", 2, Bounds::COUNT)).contains("`zero`"));
        assert_eq!(c.one_or_list("absent", 2, Bounds::COUNT).unwrap(), None);
    }
}
