//! The thin HTTP layer of the CLI: builds `/api/v1/...` URLs (path segments percent-encoded),
//! sends one request, and turns any error status into [`Failure::Api`] read from its
//! problem+json body, and any transport error into [`Failure::Network`].

use super::outcome::{ApiError, Failure};
use reqwest::Url;
use serde_json::Value;
use std::time::Duration;

/// How long a plain request may take. A start or an operator verb waits for the engine's
/// answer and for the read model, which take well under this on a healthy server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Api {
    base: Url,
    /// The URL as given, for messages.
    shown: String,
    http: reqwest::Client,
}

/// A successful answer: its status and JSON body (`null` when empty), parsed and as sent.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

/// A request body.
pub enum Body {
    None,
    Json(Value),
    /// Text with its media type (a definition document as YAML or JSON).
    Text(&'static str, String),
}

impl Api {
    /// A client of the server at `url` (`http://host:port`, optionally with a path prefix).
    pub fn new(url: &str) -> Result<Self, Failure> {
        let base = Url::parse(url.trim())
            .map_err(|e| Failure::Usage(format!("--url {url:?} is not a URL: {e}")))?;
        match base.scheme() {
            "http" => {}
            "https" => {
                return Err(Failure::Usage(format!(
                    "--url {url:?}: this build of the CLI speaks plain HTTP only (no TLS); \
                     use http://, e.g. through a local TLS-terminating proxy"
                )));
            }
            other => {
                return Err(Failure::Usage(format!(
                    "--url {url:?}: the scheme must be http, not {other}"
                )));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| Failure::Usage(format!("cannot set up the HTTP client: {e}")))?;
        let shown = url.trim().trim_end_matches('/').to_owned();
        Ok(Self { base, shown, http })
    }

    /// `<base>/api/v1/<segments...>?<query>`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Reply, Failure> {
        self.get_within(segments, query, REQUEST_TIMEOUT).await
    }

    /// A GET that may take up to `timeout` (a long-poll).
    pub async fn get_within(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let url = self.url(segments, query);
        self.send(self.http.get(url.clone()).timeout(timeout), &url)
            .await
    }

    pub async fn post(&self, segments: &[&str], body: Body) -> Result<Reply, Failure> {
        let url = self.url(segments, &[]);
        let req = self.http.post(url.clone()).timeout(REQUEST_TIMEOUT);
        let req = match body {
            Body::None => req,
            Body::Json(value) => req.json(&value),
            Body::Text(media, text) => req.header(reqwest::header::CONTENT_TYPE, media).body(text),
        };
        self.send(req, &url).await
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<Reply, Failure> {
        let network = |e: reqwest::Error| Failure::Network {
            url: self.shown.clone(),
            cause: cause(&e, url),
        };
        let resp = req.send().await.map_err(network)?;
        let status = resp.status();
        let text = resp.text().await.map_err(network)?;
        if !status.is_success() {
            return Err(Failure::Api(ApiError::from_response(
                status.as_u16(),
                status.canonical_reason(),
                &text,
            )));
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| Failure::Network {
                url: self.shown.clone(),
                cause: format!("{url} answered {status} with a body that is not JSON ({e})"),
            })?
        };
        Ok(Reply {
            status: status.as_u16(),
            body,
            text,
        })
    }
}

/// What went wrong, for a person: the innermost cause (`Connection refused (os error 111)`,
/// a DNS failure...) rather than reqwest's nested wrappers.
fn cause(e: &reqwest::Error, url: &Url) -> String {
    if e.is_timeout() {
        return format!("no answer from {url} in time");
    }
    let mut innermost: &dyn std::error::Error = e;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    let text = innermost.to_string();
    if e.is_connect() {
        format!("cannot connect: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_under_api_v1_and_segments_are_encoded() {
        let api = Api::new("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            api.url(&["workflows", "abc"], &[]).as_str(),
            "http://127.0.0.1:8000/api/v1/workflows/abc"
        );
        assert_eq!(
            api.url(&["definitions", "a/b c"], &[]).as_str(),
            "http://127.0.0.1:8000/api/v1/definitions/a%2Fb%20c"
        );
        let q = [("status", "running".to_string()), ("limit", "5".into())];
        assert_eq!(
            api.url(&["workflows"], &q).as_str(),
            "http://127.0.0.1:8000/api/v1/workflows?status=running&limit=5"
        );
    }

    #[test]
    fn a_base_path_prefix_is_kept() {
        let api = Api::new("http://proxy/distorch/").unwrap();
        assert_eq!(
            api.url(&["dlq"], &[]).as_str(),
            "http://proxy/distorch/api/v1/dlq"
        );
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        for url in ["not a url", "ftp://x", "https://x"] {
            let err = Api::new(url).err().expect(url);
            assert_eq!(err.exit_code(), 2, "{url}");
        }
    }
}
