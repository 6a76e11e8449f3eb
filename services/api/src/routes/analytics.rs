//! Analytics reports: performance, bottlenecks and cost over a time window, served from the
//! [`Analytics`] port the binary configures.
//!
//! The window is `from`/`to` (RFC 3339) or `window` (a duration such as `24h`, `30m`, `7d`)
//! ending at `to` or now; the default is the last 24 hours. The report types are the
//! store's, served as they are and described to OpenAPI by their own derived schemas.

use super::AppState;
use crate::error::ApiError;
use crate::problem::Problem;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use distorch_store::analytics::{Analytics, Bottlenecks, Cost, Performance, Window};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const DEFAULT_WINDOW_MS: i64 = 24 * 3_600_000;

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WindowQuery {
    /// Start (inclusive), RFC 3339, e.g. `2026-01-31T00:00:00Z`.
    pub(crate) from: Option<String>,
    /// End (exclusive), RFC 3339; default now.
    pub(crate) to: Option<String>,
    /// Length of a window ending at `to`: a number and a unit `s`, `m`, `h` or `d`
    /// (`24h`). Not with `from`. Default `24h` when `from` is absent.
    pub(crate) window: Option<String>,
}

fn bad(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `24h`, `30m`, `90s`, `7d` in ms.
fn parse_duration(raw: &str) -> Option<i64> {
    let unit_at = raw.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = raw.split_at(unit_at);
    let n: i64 = n.parse().ok()?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|ms| *ms > 0)
}

/// RFC 3339 (`2026-01-31T12:00:00Z`, `...T12:00:00.250+02:00`) in ms since the epoch; `None`
/// for anything else, an impossible date (`2026-02-31`) included. Parsed by `jiff`.
fn parse_rfc3339(raw: &str) -> Option<i64> {
    raw.parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_millisecond)
}

impl WindowQuery {
    /// The window these parameters name, as of now.
    pub(crate) fn resolve(&self) -> Result<Window, ApiError> {
        self.window(now_ms())
    }

    fn window(&self, now_ms: i64) -> Result<Window, ApiError> {
        let time = |name: &str, raw: &str| {
            parse_rfc3339(raw).ok_or_else(|| {
                bad(format!(
                    "{name} {raw:?} is not an RFC 3339 time (e.g. 2026-01-31T00:00:00Z)"
                ))
            })
        };
        let to = match self.to.as_deref() {
            Some(raw) => time("to", raw)?,
            None => now_ms,
        };
        let from = match (self.from.as_deref(), self.window.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "give `from` (with an optional `to`) or `window`, not both".into(),
                ));
            }
            (Some(raw), None) => time("from", raw)?,
            (None, Some(raw)) => {
                let ms = parse_duration(raw).ok_or_else(|| {
                    bad(format!(
                        "window {raw:?} is not a duration such as 30m, 24h or 7d"
                    ))
                })?;
                to.saturating_sub(ms)
            }
            (None, None) => to - DEFAULT_WINDOW_MS,
        };
        Window::new(from, to).map_err(|e| bad(e.to_string()))
    }
}

pub(crate) fn analytics(state: &AppState) -> Result<&Arc<dyn Analytics>, ApiError> {
    state
        .analytics
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("analytics are not configured on this server".into()))
}

fn window_of(query: Result<Query<WindowQuery>, QueryRejection>) -> Result<Window, ApiError> {
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    query.window(now_ms())
}

/// Per definition and step: counts, p50/p95/p99 run and end-to-end time, throughput,
/// failure and retry rates of what ended in the window.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/performance",
    tag = "analytics",
    params(WindowQuery),
    responses(
        (status = 200, description = "Performance report", body = distorch_store::analytics::Performance),
        (status = 400, description = "Bad window", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Analytics not configured or unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn analytics_performance(
    State(state): State<AppState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<Performance>, ApiError> {
    let window = window_of(query)?;
    Ok(Json(analytics(&state)?.performance(window).await?))
}

/// Steps ranked by their share of the window's task time, split into queue wait, run
/// time, backoff, time with people and time behind open circuit breakers.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/bottlenecks",
    tag = "analytics",
    params(WindowQuery),
    responses(
        (status = 200, description = "Bottleneck report", body = distorch_store::analytics::Bottlenecks),
        (status = 400, description = "Bad window", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Analytics not configured or unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn analytics_bottlenecks(
    State(state): State<AppState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<Bottlenecks>, ApiError> {
    let window = window_of(query)?;
    Ok(Json(analytics(&state)?.bottlenecks(window).await?))
}

/// Cost per definition, step, task type, queue and tenant: worker CPU-seconds and
/// memory GiB-seconds times the configured rates, plus fixed per-attempt costs.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/cost",
    tag = "analytics",
    params(WindowQuery),
    responses(
        (status = 200, description = "Cost report", body = distorch_store::analytics::Cost),
        (status = 400, description = "Bad window", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Analytics not configured or unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn analytics_cost(
    State(state): State<AppState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<Cost>, ApiError> {
    let window = window_of(query)?;
    Ok(Json(
        analytics(&state)?.cost(window, &state.cost_rates).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_769_860_800_000; // 2026-01-31T12:00:00Z

    fn query(from: Option<&str>, to: Option<&str>, window: Option<&str>) -> WindowQuery {
        WindowQuery {
            from: from.map(Into::into),
            to: to.map(Into::into),
            window: window.map(Into::into),
        }
    }

    #[test]
    fn rfc3339_times_parse_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("2026-01-31T12:00:00Z"), Some(NOW));
        assert_eq!(
            parse_rfc3339("2026-01-31T14:00:00.25+02:00"),
            Some(NOW + 250)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        for bad in [
            "2026-01-31",
            "2026-13-01T00:00:00Z",
            "2026-02-31T00:00:00Z",
            "2026-01-31T12:00:00",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_window_defaults_to_the_last_day() {
        assert_eq!(
            query(None, None, None).window(NOW).unwrap(),
            Window::new(NOW - DEFAULT_WINDOW_MS, NOW).unwrap()
        );
        assert_eq!(
            query(None, Some("2026-01-31T12:00:00Z"), Some("30m"))
                .window(0)
                .unwrap(),
            Window::new(NOW - 1_800_000, NOW).unwrap()
        );
        assert_eq!(
            query(Some("2026-01-31T11:00:00Z"), None, None)
                .window(NOW)
                .unwrap(),
            Window::new(NOW - 3_600_000, NOW).unwrap()
        );
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let cases = [
            (query(Some("noon"), None, None), "not an RFC 3339 time"),
            (query(None, None, Some("24 hours")), "not a duration"),
            (query(None, None, Some("0h")), "not a duration"),
            (
                query(Some("2026-01-31T11:00:00Z"), None, Some("1h")),
                "not both",
            ),
            (
                query(
                    Some("2026-01-31T13:00:00Z"),
                    Some("2026-01-31T12:00:00Z"),
                    None,
                ),
                "must be after",
            ),
        ];
        for (q, expected) in cases {
            let err = q.window(NOW).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{q:?}: {err:?}");
            assert!(err.to_string().contains(expected), "{q:?}: {err}");
        }
    }

    #[test]
    fn the_openapi_document_describes_the_reports() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        for path in ["performance", "bottlenecks", "cost"] {
            let path = format!("/api/v1/analytics/{path}");
            assert!(
                doc["paths"][&path]["get"].is_object(),
                "{path} is documented"
            );
        }
        let schemas = &doc["components"]["schemas"];
        for name in [
            "Performance",
            "DefinitionPerformance",
            "StepPerformance",
            "Percentiles",
            "Bottlenecks",
            "Bottleneck",
            "Cost",
            "CostRow",
            "CostRates",
        ] {
            assert!(
                schemas[name].is_object(),
                "schema {name} is in the document"
            );
        }
    }
}
