//! One HTTP call of one attempt, and how its response becomes a task result.

use super::breaker;
use distorch_domain::command::{ErrorInfo, TaskMetrics};
use distorch_domain::event::HttpRequest;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// Longest response body quoted in a failure message.
const MESSAGE_BODY_CHARS: usize = 512;
/// Longest `Retry-After` honoured, so a bogus header cannot park a task for years.
const MAX_RETRY_AFTER_MS: u64 = 24 * 3600 * 1000;

/// What an attempt's call ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The output of `CompleteTask`: `{status, headers, body}`.
    Completed(Value),
    Failed {
        error: ErrorInfo,
        retry_after_ms: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Called {
    pub report: Report,
    pub metrics: TaskMetrics,
    /// How the target's breaker sees it; `None` when no call could be made at all (a bad
    /// request), which says nothing about the service.
    pub breaker: Option<breaker::Outcome>,
}

/// `host:port` of a URL: the breaker key.
pub fn host_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
}

/// Makes the call within `req.timeout_ms` (connecting and reading the body included).
pub async fn perform(client: &reqwest::Client, req: &HttpRequest, max_bytes: usize) -> Called {
    let started = Instant::now();
    let request = match build(client, req) {
        Ok(r) => r,
        Err(msg) => {
            return Called {
                report: Report::Failed {
                    error: ErrorInfo {
                        kind: "http.invalid_request".into(),
                        message: msg,
                        retryable: false,
                    },
                    retry_after_ms: None,
                },
                metrics: TaskMetrics::default(),
                breaker: None,
            };
        }
    };
    let timeout = Duration::from_millis(req.timeout_ms.max(1));
    let exchange = async {
        let resp = request.send().await?;
        let status = resp.status().as_u16();
        let headers = headers_json(resp.headers());
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after_ms);
        let body = read_limited(resp, max_bytes).await?;
        Ok::<_, reqwest::Error>((status, headers, retry_after, body))
    };
    let outcome = tokio::time::timeout(timeout, exchange).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let target = format!("{} {}", req.method, req.url);
    match outcome {
        Err(_) => transport_failure(
            "http.timeout",
            format!(
                "{target}: no complete response within {} ms",
                req.timeout_ms
            ),
            latency_ms,
        ),
        Ok(Err(e)) if e.is_timeout() => transport_failure(
            "http.timeout",
            format!("{target}: {}", chain(&e)),
            latency_ms,
        ),
        Ok(Err(e)) => transport_failure(
            "http.connect",
            format!("{target}: {}", chain(&e)),
            latency_ms,
        ),
        Ok(Ok((status, headers, retry_after, Body { bytes, truncated }))) => {
            let metrics = TaskMetrics {
                latency_ms: Some(latency_ms),
                response_bytes: Some(bytes.len() as u64),
                ..TaskMetrics::default()
            };
            if truncated {
                return Called {
                    report: Report::Failed {
                        error: ErrorInfo {
                            kind: "http.response_too_large".into(),
                            message: format!(
                                "{target}: the response body is larger than {max_bytes} bytes"
                            ),
                            retryable: false,
                        },
                        retry_after_ms: None,
                    },
                    metrics,
                    breaker: Some(breaker::Outcome::Success),
                };
            }
            let (report, breaker) = classify(req, &target, status, headers, retry_after, &bytes);
            Called {
                report,
                metrics,
                breaker: Some(breaker),
            }
        }
    }
}

fn build(client: &reqwest::Client, req: &HttpRequest) -> Result<reqwest::RequestBuilder, String> {
    let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid HTTP method {:?}", req.method))?;
    let url =
        reqwest::Url::parse(&req.url).map_err(|e| format!("invalid url {:?}: {e}", req.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("url {:?} is not http(s)", req.url));
    }
    let mut b = client.request(method, url);
    for (name, value) in &req.headers {
        let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let v = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value of header {name}: {value:?}"))?;
        b = b.header(n, v);
    }
    if let Some(body) = &req.body {
        b = b.json(body);
    }
    Ok(b)
}

/// Turns a complete response into the task result and the breaker's view of it.
fn classify(
    req: &HttpRequest,
    target: &str,
    status: u16,
    headers: Value,
    retry_after: Option<u64>,
    bytes: &[u8],
) -> (Report, breaker::Outcome) {
    let ok = if req.success.is_empty() {
        (200..300).contains(&status)
    } else {
        req.success.contains(&status)
    };
    if ok {
        let output = json!({"status": status, "headers": headers, "body": body_json(bytes)});
        return (Report::Completed(output), breaker::Outcome::Success);
    }
    let text = String::from_utf8_lossy(bytes);
    let snippet: String = text.chars().take(MESSAGE_BODY_CHARS).collect();
    let message = if snippet.trim().is_empty() {
        format!("{target} answered {status}")
    } else {
        format!("{target} answered {status}: {}", snippet.trim())
    };
    let (kind, retryable) = match status {
        408 | 429 => ("http.4xx", true),
        400..=499 => ("http.4xx", false),
        500..=599 => ("http.5xx", true),
        _ => ("http.unexpected_status", false),
    };
    let counts = status == 429 || (500..=599).contains(&status);
    let breaker = if counts {
        breaker::Outcome::Failure(format!("{status} from {target}"))
    } else {
        breaker::Outcome::Success
    };
    let retry_after_ms = if matches!(status, 429 | 503) {
        retry_after
    } else {
        None
    };
    let error = ErrorInfo {
        kind: kind.into(),
        message,
        retryable,
    };
    (
        Report::Failed {
            error,
            retry_after_ms,
        },
        breaker,
    )
}

fn transport_failure(kind: &str, message: String, latency_ms: f64) -> Called {
    Called {
        breaker: Some(breaker::Outcome::Failure(message.clone())),
        report: Report::Failed {
            error: ErrorInfo {
                kind: kind.into(),
                message,
                retryable: true,
            },
            retry_after_ms: None,
        },
        metrics: TaskMetrics {
            latency_ms: Some(latency_ms),
            ..TaskMetrics::default()
        },
    }
}

/// `Retry-After` in delta-seconds (the HTTP-date form is not honoured).
fn retry_after_ms(v: &str) -> Option<u64> {
    let secs: f64 = v.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(((secs * 1000.0) as u64).min(MAX_RETRY_AFTER_MS))
}

fn headers_json(h: &reqwest::header::HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in h {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                out.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    Value::Object(out)
}

/// JSON when the body parses as JSON, else its text; `null` when empty.
fn body_json(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

struct Body {
    bytes: Vec<u8>,
    truncated: bool,
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Body, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if bytes.len() + chunk.len() > max {
            return Ok(Body {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        truncated: false,
    })
}

/// The error and its sources, e.g. "error sending request: connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(success: Vec<u16>) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: "http://svc/x".into(),
            headers: Default::default(),
            body: None,
            success,
            timeout_ms: 1000,
            breaker: None,
        }
    }

    fn failed(r: &Report) -> (&ErrorInfo, Option<u64>) {
        match r {
            Report::Failed {
                error,
                retry_after_ms,
            } => (error, *retry_after_ms),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_success_status_completes_with_status_headers_and_a_json_or_text_body() {
        let (r, b) = classify(
            &req(vec![]),
            "t",
            201,
            json!({"a": "b"}),
            None,
            br#"{"id":7}"#,
        );
        assert_eq!(
            r,
            Report::Completed(json!({"status": 201, "headers": {"a": "b"}, "body": {"id": 7}}))
        );
        assert_eq!(b, breaker::Outcome::Success);
        let (r, _) = classify(&req(vec![202]), "t", 202, json!({}), None, b"queued");
        assert_eq!(
            r,
            Report::Completed(json!({"status": 202, "headers": {}, "body": "queued"}))
        );
        let (r, _) = classify(&req(vec![201]), "t", 200, json!({}), None, b"");
        assert_eq!(failed(&r).0.kind, "http.unexpected_status");
    }

    #[test]
    fn client_errors_are_final_except_408_and_429_and_do_not_trip_the_breaker_except_429() {
        let (r, b) = classify(&req(vec![]), "t", 404, json!({}), Some(5), b"nope");
        let (e, after) = failed(&r);
        assert_eq!(
            (e.kind.as_str(), e.retryable, after),
            ("http.4xx", false, None)
        );
        assert!(
            e.message.contains("404") && e.message.contains("nope"),
            "{}",
            e.message
        );
        assert_eq!(b, breaker::Outcome::Success);

        let (r, b) = classify(&req(vec![]), "t", 429, json!({}), Some(2000), b"");
        let (e, after) = failed(&r);
        assert_eq!(
            (e.kind.as_str(), e.retryable, after),
            ("http.4xx", true, Some(2000))
        );
        assert!(matches!(b, breaker::Outcome::Failure(_)));

        let (r, b) = classify(&req(vec![]), "t", 408, json!({}), None, b"");
        assert!(failed(&r).0.retryable);
        assert_eq!(b, breaker::Outcome::Success);
    }

    #[test]
    fn server_errors_are_retried_trip_the_breaker_and_honour_retry_after_on_503() {
        let (r, b) = classify(&req(vec![]), "t", 503, json!({}), Some(1500), b"");
        let (e, after) = failed(&r);
        assert_eq!(
            (e.kind.as_str(), e.retryable, after),
            ("http.5xx", true, Some(1500))
        );
        assert!(matches!(b, breaker::Outcome::Failure(_)));
        let (r, _) = classify(&req(vec![]), "t", 500, json!({}), Some(1500), b"");
        assert_eq!(failed(&r).1, None, "Retry-After only counts on 429 and 503");
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        assert_eq!(retry_after_ms("2"), Some(2000));
        assert_eq!(retry_after_ms(" 0.5 "), Some(500));
        assert_eq!(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_ms("-1"), None);
        assert_eq!(retry_after_ms("1e12"), Some(MAX_RETRY_AFTER_MS));
    }

    #[test]
    fn the_breaker_key_is_host_and_port() {
        assert_eq!(host_of("http://a.b/x?y").as_deref(), Some("a.b:80"));
        assert_eq!(host_of("https://a.b/x").as_deref(), Some("a.b:443"));
        assert_eq!(
            host_of("http://127.0.0.1:9000/").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(host_of("not a url"), None);
    }

    #[test]
    fn an_unusable_request_fails_for_good_without_a_call() {
        let client = reqwest::Client::new();
        let mut r = req(vec![]);
        r.headers.insert("bad header".into(), "x".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let called = rt.block_on(perform(&client, &r, 1024));
        let (e, _) = failed(&called.report);
        assert_eq!(
            (e.kind.as_str(), e.retryable),
            ("http.invalid_request", false)
        );
        assert_eq!(called.breaker, None);
    }
}
