//! Definition registry: register (JSON or YAML) and read back.

use super::AppState;
use crate::actions;
use crate::dto::{DefinitionDoc, Definitions, Registered};
use crate::error::ApiError;
use crate::problem::{Document, Problem};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

/// Register the next version of a definition.
///
/// The body is the definition document as JSON, or as YAML with `Content-Type:
/// application/yaml`. The engine validates everything (steps, jq expressions, durations,
/// compensations) and its detail names the offending path. A document identical to the
/// latest version registers nothing and answers with that version.
#[utoipa::path(
    post,
    path = "/api/v1/definitions",
    tag = "definitions",
    request_body(
        description = "A workflow definition document",
        content((Object = "application/json"), (String = "application/yaml"))
    ),
    responses(
        (status = 201, description = "Registered as a new version", body = Registered),
        (status = 200, description = "Identical to the latest version, which it names; nothing registered", body = Registered),
        (status = 400, description = "Invalid document", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor YAML", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn register_definition(
    State(state): State<AppState>,
    Document(source): Document,
) -> Result<impl IntoResponse, ApiError> {
    let registered = actions::register_definition(&state, source).await?;
    let location = format!(
        "/api/v1/definitions/{}/versions/{}",
        registered.name, registered.version
    );
    let status = if registered.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, [(header::LOCATION, location)], Json(registered)))
}

/// List registered definitions.
#[utoipa::path(
    get,
    path = "/api/v1/definitions",
    tag = "definitions",
    responses((status = 200, description = "Every definition with its versions", body = Definitions))
)]
pub(crate) async fn list_definitions(
    State(state): State<AppState>,
) -> Result<Json<Definitions>, ApiError> {
    let items = state.store.definitions().await?;
    Ok(Json(Definitions { items }))
}

/// The latest version of a definition.
#[utoipa::path(
    get,
    path = "/api/v1/definitions/{name}",
    tag = "definitions",
    params(("name" = String, Path, description = "Definition name")),
    responses(
        (status = 200, description = "Latest version", body = DefinitionDoc),
        (status = 404, description = "Unknown definition", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn latest_definition(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DefinitionDoc>, ApiError> {
    let def = state.store.definition(&name, None).await?;
    let def = def.ok_or_else(|| ApiError::NotFound(format!("no definition named {name:?}")))?;
    Ok(Json(DefinitionDoc {
        name: def.name,
        version: def.version,
        definition: def.source,
    }))
}

/// One version of a definition.
#[utoipa::path(
    get,
    path = "/api/v1/definitions/{name}/versions/{version}",
    tag = "definitions",
    params(
        ("name" = String, Path, description = "Definition name"),
        ("version" = u32, Path, description = "Version, from 1"),
    ),
    responses(
        (status = 200, description = "That version", body = DefinitionDoc),
        (status = 400, description = "Version is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown definition or version", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn definition_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<DefinitionDoc>, ApiError> {
    let version: u32 = version.parse().map_err(|_| {
        ApiError::BadRequest(format!("version {version:?} is not a positive integer"))
    })?;
    let def = state.store.definition(&name, Some(version)).await?;
    let def = def.ok_or_else(|| {
        ApiError::NotFound(format!("definition {name:?} has no version {version}"))
    })?;
    Ok(Json(DefinitionDoc {
        name: def.name,
        version: def.version,
        definition: def.source,
    }))
}
