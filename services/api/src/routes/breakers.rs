//! Circuit breakers of the HTTP executor's target services.

use super::AppState;
use axum::Json;
use axum::extract::State;
use distorch_domain::topics::BreakerState;
use distorch_domain::view::rfc3339;
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /api/v1/breakers` body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Breakers {
    /// One per host, ordered by host.
    pub items: Vec<Breaker>,
}

/// The circuit breaker of one target `host:port`.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct Breaker {
    /// `host:port` the `http` steps call.
    pub host: String,
    /// Its state since `since`.
    pub state: BreakerState,
    /// When it entered this state (RFC 3339).
    pub since: String,
    /// Why, e.g. `5 consecutive failures; last: 503 from POST http://...`.
    pub reason: String,
    /// Failures in a row when it changed state.
    pub consecutive_failures: u32,
}

/// Circuit breakers of the services `http` steps call, one per `host:port` ever tripped.
/// Hosts whose breaker never opened are not listed.
#[utoipa::path(get, path = "/api/v1/breakers", tag = "ops",
    responses((status = 200, description = "Breakers by host", body = Breakers)))]
pub(crate) async fn list_breakers(State(state): State<AppState>) -> Json<Breakers> {
    Json(Breakers {
        items: breaker_rows(&state.breakers),
    })
}

/// The breakers as the API shows them (REST and GraphQL alike).
pub(crate) fn breaker_rows(board: &crate::breakers::BreakerBoard) -> Vec<Breaker> {
    board
        .list()
        .into_iter()
        .map(|b| Breaker {
            host: b.host,
            state: b.state,
            since: rfc3339(b.at_ms),
            reason: b.reason,
            consecutive_failures: b.consecutive_failures,
        })
        .collect()
}
