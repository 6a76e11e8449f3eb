//! GraphQL at `/graphql`: queries and mutations over `POST`, subscriptions over a
//! WebSocket upgrade of `GET` (graphql-ws), GraphiQL on a plain `GET`.
//!
//! GraphQL types live here, at the edge (`types.rs`); resolvers call the same read store and
//! `crate::actions` as REST, so both APIs publish the same commands and read the same
//! views. Errors carry `extensions.code` (`error.rs`). The SDL is committed in
//! `schemas/graphql/schema.graphql` and a test fails when it drifts ([`sdl`]).

mod error;
mod mutation;
mod query;
mod subscription;
mod types;

pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

use crate::routes::AppState;
use async_graphql::Schema;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// The executable schema: [`Query`], [`Mutation`] and [`Subscription`], with the depth limit.
pub type ApiSchema = Schema<Query, Mutation, Subscription>;

/// Deepest selection a query may make; the schema's real depth is far below, so only
/// abusive queries hit it.
const MAX_DEPTH: usize = 16;

fn builder() -> async_graphql::SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query, Mutation, Subscription).limit_depth(MAX_DEPTH)
}

pub(crate) fn schema(state: &AppState) -> ApiSchema {
    builder().data(state.clone()).finish()
}

/// The schema in SDL, as committed in `schemas/graphql/schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// `GET /graphql`: a WebSocket upgrade speaks graphql-ws; anything else gets GraphiQL.
pub(crate) async fn get(
    schema: ApiSchema,
    protocol: Result<GraphQLProtocol, StatusCode>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match (upgrade, protocol) {
        (Ok(upgrade), Ok(protocol)) => upgrade
            .protocols(ALL_WEBSOCKET_PROTOCOLS)
            .on_upgrade(move |socket| GraphQLWebSocket::new(socket, schema, protocol).serve())
            .into_response(),
        (Ok(_), Err(_)) => crate::problem::Problem::new(
            StatusCode::BAD_REQUEST,
            "a GraphQL WebSocket needs Sec-WebSocket-Protocol `graphql-transport-ws` \
             (or `graphql-ws`)",
        )
        .into_response(),
        (Err(_), _) => Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response(),
    }
}
