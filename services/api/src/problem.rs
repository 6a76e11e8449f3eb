//! RFC 9457 problem details: the one error shape every endpoint returns, and the request
//! extractors that turn malformed input into a problem that says what is wrong and where
//! (axum's own rejections are plain text, which clients cannot parse reliably).

use crate::error::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// Media type of every error response.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error response (RFC 9457 problem details), sent as `application/problem+json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// Stable, machine-readable problem type, e.g. `urn:distorch:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What exactly is wrong, and where.
    pub detail: String,
    /// Only on a 503 answer to a start: the run id the unconfirmed start may still create.
    /// Retry the start with it as `workflow_id`; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
}

impl Problem {
    /// The problem of `status`: its `type` slug and `title` follow from the status.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let slug = match status {
            StatusCode::BAD_REQUEST => "bad-request",
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        };
        Self {
            kind: format!("urn:distorch:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            workflow_id: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
    }
}

/// The media type of a request body, lower-cased and without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        raw.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn is_yaml(media: &str) -> bool {
    matches!(
        media,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
    )
}

/// Reads the whole body, honouring `DefaultBodyLimit`; an oversized body becomes a 413
/// problem instead of axum's plain-text rejection.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "the request body is larger than the configured limit (api.max_body_bytes)".into(),
            )
        } else {
            ApiError::BadRequest(format!(
                "could not read the request body: {}",
                rejection.body_text()
            ))
        }
    })
}

/// Deserialises JSON, naming the JSON path and line/column of the first problem. A field
/// the body's type does not know, at any depth, is an error naming its path: a typo such as
/// `error.mesage` must not be dropped silently (the types themselves stay lenient, as the
/// log's records must be for rolling upgrades).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut unknown = Vec::new();
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(de, &mut note);
    let value = serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        if path.is_empty() || path == "." {
            ApiError::BadRequest(format!("invalid JSON body: {}", err.inner()))
        } else {
            ApiError::BadRequest(format!("invalid JSON body at `{path}`: {}", err.inner()))
        }
    })?;
    match unknown.as_slice() {
        [] => Ok(value),
        [one] => Err(ApiError::BadRequest(format!(
            "invalid JSON body: unknown field `{one}`"
        ))),
        many => Err(ApiError::BadRequest(format!(
            "invalid JSON body: unknown fields {}",
            many.iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn unsupported(found: Option<&str>, expected: &str) -> ApiError {
    ApiError::UnsupportedMediaType(match found {
        Some(m) => format!("Content-Type {m:?} is not supported here; send {expected}"),
        None => format!("the request has no Content-Type; send {expected}"),
    })
}

/// A JSON body (`application/json` or `application/*+json`), rejected as problem+json.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = media_type(req.headers());
        match media.as_deref() {
            Some(m) if is_json(m) => {}
            other => return Err(unsupported(other, "application/json")),
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body that may be omitted (an empty or blank body is `T::default()`), e.g. cancel's
/// options.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = media_type(req.headers());
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        match media.as_deref() {
            Some(m) if is_json(m) => parse_json(&bytes).map(OptionalJson),
            other => Err(unsupported(other, "application/json")),
        }
    }
}

/// A document sent as JSON or YAML, normalised to a JSON value (definition registration).
pub struct Document(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for Document {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = media_type(req.headers());
        let yaml = match media.as_deref() {
            Some(m) if is_json(m) => false,
            Some(m) if is_yaml(m) => true,
            other => return Err(unsupported(other, "application/json or application/yaml")),
        };
        let bytes = body_bytes(req, state).await?;
        if !yaml {
            return parse_json(&bytes).map(Document);
        }
        serde_yaml_ng::from_slice(&bytes)
            .map(Document)
            .map_err(|err| {
                // serde_yaml_ng's message already ends with "at line L column C" when it knows.
                ApiError::BadRequest(format!("invalid YAML body: {err}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_path_and_position() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            attempt: u32,
        }
        let err = parse_json::<Body>(br#"{"attempt": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`attempt`"), "{err}");
        assert!(err.contains("line 1 column"), "{err}");
        let err = parse_json::<Body>(b"{\n  \"attempt\": 1,,\n}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused_at_any_depth_with_their_path() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            attempt: u32,
            error: distorch_domain::command::ErrorInfo,
        }
        let ok = parse_json::<Body>(br#"{"attempt": 1, "error": {"type": "x"}}"#);
        assert!(ok.is_ok(), "{ok:?}");
        let err = parse_json::<Body>(br#"{"attempt": 1, "error": {"type": "x", "mesage": "m"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `error.mesage`"), "{err}");
        let err =
            parse_json::<Body>(br#"{"attempt": 1, "eror": {}, "error": {"type": "x"}, "x": 1}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("`eror`") && err.contains("`x`"), "{err}");
    }

    #[test]
    fn media_types_ignore_parameters_and_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&media_type(&headers).unwrap()));
        assert!(is_json("application/merge-patch+json"));
        assert!(is_yaml("text/yaml"));
        assert!(!is_json("text/plain"));
    }
}
