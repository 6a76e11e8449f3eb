//! Typed reads of raw JSON values that fail with the path of the value and a message a
//! user can act on. Everything here is shape checking; the meaning of a definition lives in
//! the parent module.

use std::time::Duration;

use serde_json::{Map, Value};

use super::DefinitionError;
use crate::definition::{Join, OnFailure};
use crate::expr::Expr;

pub(super) type Result<T> = std::result::Result<T, DefinitionError>;

pub(super) fn error(path: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        path: path.into(),
        message: message.into(),
    }
}

/// `parent.key`, or `key` at the root.
pub(super) fn field(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub(super) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// "found ..." wording for type errors.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

pub(super) fn expected(path: &str, what: &str, v: &Value) -> DefinitionError {
    error(path, format!("expected {what}, found {}", describe(v)))
}

/// A JSON object being read at `path`, already checked for unknown fields.
pub(super) struct Obj<'a> {
    pub path: String,
    pub map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// `what` names the object in messages ("a retry policy"); `allowed` is the complete
    /// list of its fields, so a typo is reported together with what was meant.
    pub fn new(v: &'a Value, path: &str, what: &str, allowed: &[&str]) -> Result<Self> {
        let map = v.as_object().ok_or_else(|| expected(path, what, v))?;
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(error(
                field(path, unknown),
                format!("unknown field `{unknown}`; allowed: {}", allowed.join(", ")),
            ));
        }
        Ok(Obj {
            path: path.to_string(),
            map,
        })
    }

    pub fn at(&self, key: &str) -> String {
        field(&self.path, key)
    }

    /// Reads an optional field with `read`, which gets the value and its path.
    pub fn opt<T>(
        &self,
        key: &str,
        read: impl FnOnce(&'a Value, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        self.map
            .get(key)
            .map(|v| read(v, &self.at(key)))
            .transpose()
    }

    pub fn req<T>(&self, key: &str, read: impl FnOnce(&'a Value, &str) -> Result<T>) -> Result<T> {
        match self.map.get(key) {
            Some(v) => read(v, &self.at(key)),
            None => Err(error(
                self.path.clone(),
                format!("missing required field `{key}`"),
            )),
        }
    }
}

pub(super) fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str> {
    v.as_str().ok_or_else(|| expected(path, "a string", v))
}

pub(super) fn non_empty_string<'a>(v: &'a Value, path: &str) -> Result<&'a str> {
    let s = string(v, path)?;
    if s.trim().is_empty() {
        return Err(error(path, "must not be empty"));
    }
    Ok(s)
}

fn check_charset(s: &str, path: &str, what: &str, extra: &[char], shown: &str) -> Result<()> {
    if s.is_empty() {
        return Err(error(path, format!("{what} must not be empty")));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(c)))
    {
        Some(c) => Err(error(
            path,
            format!("{what} `{s}` contains {c:?}; only {shown} are allowed"),
        )),
        None => Ok(()),
    }
}

/// Definition names, task types and queues: they end up in topic names (`tasks.<queue>`),
/// so they keep to what every Kafka-compatible broker accepts.
pub(super) fn name<'a>(v: &'a Value, path: &str, what: &str) -> Result<&'a str> {
    let s = string(v, path)?;
    check_charset(
        s,
        path,
        what,
        &['_', '-', '.'],
        "letters, digits, `_`, `-` and `.`",
    )?;
    Ok(s)
}

/// Step ids: no `.` or brackets, which the engine uses to build keys of nested steps
/// (`pack.pack-item[3]`).
pub(super) fn step_id<'a>(v: &'a Value, path: &str) -> Result<&'a str> {
    let s = string(v, path)?;
    check_charset(
        s,
        path,
        "step id",
        &['_', '-'],
        "letters, digits, `_` and `-`",
    )?;
    Ok(s)
}

pub(super) fn expr(v: &Value, path: &str) -> Result<Expr> {
    let src = non_empty_string(v, path)?;
    Expr::compile(src).map_err(|e| error(path, e.0))
}

/// A positive humantime duration (`250ms`, `30s`, `5m`, `24h`).
pub(super) fn duration(v: &Value, path: &str) -> Result<Duration> {
    let s = v
        .as_str()
        .ok_or_else(|| expected(path, "a duration such as \"30s\" or \"5m\"", v))?;
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        error(
            path,
            format!("invalid duration {s:?} ({e}); use e.g. \"250ms\", \"30s\", \"5m\", \"24h\""),
        )
    })?;
    if d.is_zero() {
        return Err(error(
            path,
            format!("duration {s:?} must be greater than zero"),
        ));
    }
    Ok(d)
}

pub(super) fn uint(v: &Value, path: &str, min: u32) -> Result<u32> {
    let n = v
        .as_u64()
        .ok_or_else(|| expected(path, "a non-negative integer", v))?;
    let n = u32::try_from(n).map_err(|_| error(path, format!("{n} is too large")))?;
    if n < min {
        return Err(error(path, format!("must be at least {min}, found {n}")));
    }
    Ok(n)
}

pub(super) fn number(v: &Value, path: &str) -> Result<f64> {
    v.as_f64().ok_or_else(|| expected(path, "a number", v))
}

pub(super) fn array<'a>(v: &'a Value, path: &str) -> Result<&'a [Value]> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| expected(path, "an array", v))
}

fn one_of<T: Copy>(v: &Value, path: &str, options: &[(&str, T)]) -> Result<T> {
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let s = v
        .as_str()
        .ok_or_else(|| expected(path, &format!("one of {}", names.join(" | ")), v))?;
    options
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            error(
                path,
                format!("unknown value {s:?}; expected one of {}", names.join(" | ")),
            )
        })
}

pub(super) fn on_failure(v: &Value, path: &str) -> Result<OnFailure> {
    one_of(
        v,
        path,
        &[
            ("compensate", OnFailure::Compensate),
            ("park", OnFailure::Park),
            ("fail", OnFailure::Fail),
            ("continue", OnFailure::Continue),
        ],
    )
}

pub(super) fn join(v: &Value, path: &str) -> Result<Join> {
    one_of(v, path, &[("all", Join::All), ("any", Join::Any)])
}
