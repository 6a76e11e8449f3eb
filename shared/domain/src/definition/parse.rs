//! Raw document -> validated [`Definition`](super::Definition).
use super::Definition;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Json,
    Yaml,
}

/// What is wrong with a definition, and where (a JSON path such as `steps[2].retry.max_attempts`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DefinitionError {
    pub path: String,
    pub message: String,
}

impl Definition {
    /// Parses and validates a document given as text.
    pub fn from_text(text: &str, format: SourceFormat, version: u32) -> Result<Definition, DefinitionError> {
        let _ = (text, format, version);
        unimplemented!()
    }

    /// Validates and compiles an already-parsed JSON document.
    pub fn from_source(source: &serde_json::Value, version: u32) -> Result<Definition, DefinitionError> {
        let _ = (source, version);
        unimplemented!()
    }
}
