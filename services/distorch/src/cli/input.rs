//! Reading what the user gives the CLI: JSON inline or `@file`, definition files, durations.

use super::outcome::Failure;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Where a JSON argument comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    Inline(&'a str),
    /// `@-`
    Stdin,
    /// `@path`
    File(&'a str),
}

/// `@-` is stdin, `@path` a file, anything else the JSON itself.
pub fn source(raw: &str) -> Source<'_> {
    match raw.strip_prefix('@') {
        Some("-") => Source::Stdin,
        Some(path) => Source::File(path),
        None => Source::Inline(raw),
    }
}

/// Parses JSON text given to `flag`, saying where it came from and where it is wrong.
pub fn parse_json(flag: &str, origin: &Source<'_>, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| {
        let whence = match origin {
            Source::Inline(_) => String::new(),
            Source::Stdin => " (from stdin)".into(),
            Source::File(path) => format!(" (from {path})"),
        };
        Failure::Usage(format!("{flag}{whence} is not valid JSON: {e}"))
    })
}

/// Reads the JSON argument of `flag`: inline, `@file` or `@-` (stdin).
pub fn json_arg(flag: &str, raw: &str) -> Result<Value, Failure> {
    let origin = source(raw);
    let text = match &origin {
        Source::Inline(text) => (*text).to_owned(),
        Source::Stdin => read_stdin(flag)?,
        Source::File(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("{flag}: cannot read {path}: {e}")))?,
    };
    parse_json(flag, &origin, &text)
}

fn read_stdin(what: &str) -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::Usage(format!("{what}: cannot read stdin: {e}")))?;
    Ok(text)
}

pub const JSON: &str = "application/json";
pub const YAML: &str = "application/yaml";

/// The media type to send a definition document with: by its extension, else JSON when it
/// starts like a JSON object and YAML otherwise (the API accepts both).
pub fn definition_media_type(path: &str, text: &str) -> &'static str {
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("json") => JSON,
        Some("yaml" | "yml") => YAML,
        _ if text.trim_start().starts_with('{') => JSON,
        _ => YAML,
    }
}

/// The definition file (`-` is stdin) and the media type to send it with.
pub fn definition_file(path: &str) -> Result<(String, &'static str), Failure> {
    let text = if path == "-" {
        read_stdin("-f -")?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read definition file {path}: {e}")))?
    };
    if text.trim().is_empty() {
        return Err(Failure::Usage(format!("definition file {path} is empty")));
    }
    let media = definition_media_type(path, &text);
    Ok((text, media))
}

/// Parses `--timeout`: `30s`, `5m`, `1h30m`, `250ms`...
pub fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("{raw:?} is not a duration such as 30s, 5m or 1h30m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn at_names_a_file_or_stdin_and_anything_else_is_inline() {
        assert_eq!(source("{}"), Source::Inline("{}"));
        assert_eq!(source("@in.json"), Source::File("in.json"));
        assert_eq!(source("@-"), Source::Stdin);
        assert_eq!(source("\"@x\""), Source::Inline("\"@x\""));
    }

    #[test]
    fn inline_json_is_parsed() {
        assert_eq!(
            json_arg("--input", r#"{"a": [1, 2]}"#).unwrap(),
            json!({"a": [1, 2]})
        );
        assert_eq!(json_arg("--input", "42").unwrap(), json!(42));
        assert_eq!(json_arg("--input", "null").unwrap(), Value::Null);
    }

    #[test]
    fn a_file_is_read_and_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.json");
        std::fs::write(&file, "{\"order\": 7}\n").unwrap();
        let arg = format!("@{}", file.display());
        assert_eq!(json_arg("--input", &arg).unwrap(), json!({"order": 7}));
    }

    #[test]
    fn bad_json_is_a_usage_error_naming_the_flag_and_position() {
        let err = json_arg("--input", "{\"a\": }").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.starts_with("--input is not valid JSON"), "{text}");
        assert!(text.contains("line 1 column 7"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.json");
        std::fs::write(&file, "{oops").unwrap();
        let text = json_arg("--payload", &format!("@{}", file.display()))
            .unwrap_err()
            .to_string();
        assert!(text.contains("(from "), "{text}");
        assert!(text.contains("bad.json"), "{text}");
    }

    #[test]
    fn a_missing_file_is_a_usage_error() {
        let err = json_arg("--input", "@/nonexistent/in.json").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("cannot read /nonexistent/in.json"));
        let err = definition_file("/nonexistent/def.yaml").unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn definitions_are_sent_as_yaml_or_json() {
        assert_eq!(definition_media_type("a.json", "name: x"), JSON);
        assert_eq!(definition_media_type("a.YML", "{}"), YAML);
        assert_eq!(definition_media_type("a.yaml", "{}"), YAML);
        assert_eq!(definition_media_type("-", "  {\"name\": 1}"), JSON);
        assert_eq!(definition_media_type("def", "name: x\nsteps: []"), YAML);
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(duration("soon").unwrap_err().contains("not a duration"));
        assert!(duration("10").is_err());
    }
}
