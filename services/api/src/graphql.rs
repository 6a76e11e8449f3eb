//! GraphQL at `/graphql` (GraphiQL on `GET`). It starts with what the REST API already has
//! and the read side (issue 4) extends: today the circuit breakers of the HTTP executor.
//! GraphQL types stay here, at the edge; resolvers read the same sources as REST.

use crate::routes::{AppState, Breaker, breaker_rows};
use async_graphql::{Context, EmptyMutation, EmptySubscription, Object, Schema};
use axum::response::Html;

pub type ApiSchema = Schema<Query, EmptyMutation, EmptySubscription>;

pub struct Query;

#[Object]
impl Query {
    /// Circuit breakers of the services `http` steps call, one per `host:port` that ever
    /// tripped (as `GET /api/v1/breakers`).
    async fn breakers(&self, ctx: &Context<'_>) -> Vec<Breaker> {
        let board = ctx.data_unchecked::<crate::breakers::BreakerBoard>();
        breaker_rows(board)
    }
}

pub(crate) fn schema(state: &AppState) -> ApiSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .data(state.breakers.clone())
        .finish()
}

pub(crate) async fn graphiql() -> Html<String> {
    Html(
        async_graphql::http::GraphiQLSource::build()
            .endpoint("/graphql")
            .finish(),
    )
}
