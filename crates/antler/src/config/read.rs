//! Reading the parsed YAML into the section structs. [`Loader::read`] deserializes one mapping
//! at its config path: a key no field names is a warning (`unknown config key 'x.y' ignored`,
//! found by `serde_ignored`), a value of the wrong type an error naming its path (`config 'x.y'
//! must be ...`, the path from `serde_path_to_error`). The scalar types take values the way they
//! end up in YAML: `port: "8123"` is a number, `host: 8123` a string, `examples: "false"` a flag.
//!
//! A key whose value cannot matter given the others is not checked (only that it is a known
//! key): the Redis options beside `stream_bridge.type: memory`, `auth.enabled` beside
//! `auth.mode`, and every value of an MCP server switched off with `enabled: false`.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::{Map, Value};

use super::Config;

/// Reads the sections and collects the warnings.
pub(super) struct Loader<'a> {
    /// The warnings so far, in the order found.
    pub warnings: Vec<String>,
    /// The environment (for `AUTH_JWT_SECRET`, `REDIS_URL`, ...).
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
}

/// A top-level mapping section: its name, and how its values go into the [`Config`].
pub(super) trait Section: DeserializeOwned {
    /// The key of the section.
    const NAME: &'static str;
    /// Validates the values and sets them on `cfg`.
    fn apply(self, l: &mut Loader<'_>, cfg: &mut Config) -> Result<()>;
    /// The keys of `section` whose values do not matter given its other keys: they are not
    /// checked.
    fn moot(_section: &Map<String, Value>) -> &'static [&'static str] {
        &[]
    }
}

impl<'a> Loader<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            warnings: Vec::new(),
            lookup,
        }
    }

    /// Deserializes the mapping at `path` ("" for the top level) into `T`.
    pub fn read<T: DeserializeOwned>(&mut self, path: &str, map: Map<String, Value>) -> Result<T> {
        let value = Value::Object(map);
        let mut track = serde_path_to_error::Track::new();
        let mut unknown = Vec::new();
        let de = serde_path_to_error::Deserializer::new(&value, &mut track);
        match serde_ignored::deserialize(de, |key| unknown.push(key.to_string())) {
            Ok(v) => {
                for key in unknown {
                    let key = join(path, &key);
                    self.warn(format!("unknown config key '{key}' ignored"));
                }
                Ok(v)
            }
            Err(e) => bail!("config '{}' {e}", join(path, &track.path().to_string())),
        }
    }

    /// Reads section `S` from its value and applies it; an absent or empty section changes
    /// nothing, anything but a mapping is an error.
    pub fn apply<S: Section>(&mut self, v: Value, cfg: &mut Config) -> Result<()> {
        match v {
            Value::Null => Ok(()),
            Value::Object(mut m) => {
                for key in S::moot(&m) {
                    if let Some(v) = m.get_mut(*key) {
                        *v = Value::Null;
                    }
                }
                self.read::<S>(S::NAME, m)?.apply(self, cfg)
            }
            other => bail!(
                "config section '{}' must be a mapping, got {other}",
                S::NAME
            ),
        }
    }

    /// Adds a warning.
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }
}

/// `path.key`; `key` is `.` when the error is about the mapping itself.
fn join(path: &str, key: &str) -> String {
    match (path, key) {
        ("", key) => key.to_owned(),
        (path, ".") => path.to_owned(),
        (path, key) => format!("{path}.{key}"),
    }
}

/// A string; a number is taken as written (`host: 8123`).
#[derive(serde::Deserialize)]
#[serde(try_from = "Value")]
pub(super) struct Text(pub String);

impl TryFrom<Value> for Text {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            other => Err(format!("must be a string, got {other}")),
        }
    }
}

/// The string, unless absent or empty.
pub(super) fn filled(t: Option<Text>) -> Option<String> {
    t.map(|Text(s)| s).filter(|s| !s.is_empty())
}

/// A finite non-negative number; a numeric string counts (`"1.5"`).
#[derive(Clone, Copy, serde::Deserialize)]
#[serde(try_from = "Value")]
pub(super) struct Number(pub f64);

impl TryFrom<Value> for Number {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        let n = v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
        match n {
            Some(n) if n.is_finite() && n >= 0.0 => Ok(Number(n)),
            _ => Err(format!("must be a non-negative number, got {v}")),
        }
    }
}

/// A non-negative whole [`Number`].
#[derive(Clone, Copy, serde::Deserialize)]
#[serde(try_from = "Value")]
pub(super) struct Int(pub u64);

impl TryFrom<Value> for Int {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match Number::try_from(v)? {
            Number(n) if n.fract() == 0.0 => Ok(Int(n as u64)),
            Number(n) => Err(format!("must be an integer, got {n}")),
        }
    }
}

/// `true` or `false` (also written as strings).
#[derive(Clone, Copy, serde::Deserialize)]
#[serde(try_from = "Value")]
pub(super) struct Flag(pub bool);

impl TryFrom<Value> for Flag {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(Flag(b)),
            Value::String(s) if matches!(s.as_str(), "true" | "false") => Ok(Flag(s == "true")),
            other => Err(format!("must be true or false, got {other}")),
        }
    }
}

/// A list of strings (tool names, MCP server names, command arguments).
#[derive(serde::Deserialize)]
#[serde(try_from = "Value")]
pub(super) struct Names(pub Vec<String>);

impl TryFrom<Value> for Names {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        let bad = |v: &Value| format!("must be a list of names, got {v}");
        let Value::Array(items) = v else {
            return Err(bad(&v));
        };
        items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(bad(&other)),
            })
            .collect::<Result<_, _>>()
            .map(Names)
    }
}

/// A key that is accepted and not read (DeerFlow options Antler has no use for): any value,
/// no warning.
pub(super) struct Unused;

impl<'de> Deserialize<'de> for Unused {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Not `IgnoredAny`: `serde_ignored` would report what it skips as unknown keys.
        Value::deserialize(d).map(|_| Unused)
    }
}

/// `n` if it lies in `range`, else `config '<path>' must be between <lo> and <hi><unit>, got <n>`.
pub(super) fn within<T: PartialOrd + Display>(
    path: &str,
    n: T,
    range: RangeInclusive<T>,
    unit: &str,
) -> Result<T> {
    if !range.contains(&n) {
        let (lo, hi) = range.into_inner();
        bail!("config '{path}' must be between {lo} and {hi}{unit}, got {n}");
    }
    Ok(n)
}

/// A timeout of more than 0 and at most 3600 seconds.
pub(super) fn timeout(path: &str, t: f64, unit: &str) -> Result<Duration> {
    if !(t > 0.0 && t <= 3600.0) {
        bail!("config '{path}' must be between 0 and 3600{unit}, got {t}");
    }
    Ok(Duration::from_secs_f64(t))
}

/// `n` unless it is 0.
pub(super) fn at_least_one(path: &str, n: u64) -> Result<u64> {
    if n == 0 {
        bail!("config '{path}' must be at least 1");
    }
    Ok(n)
}
