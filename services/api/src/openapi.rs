//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.

use crate::routes::{
    analytics, breakers, definitions, dlq, human, ops, path, sla, streams, tasks, worker, workflows,
};
use utoipa::OpenApi;

/// The OpenAPI document of the REST API (`ApiDoc::openapi()`), served at
/// `/api/v1/openapi.json` with Swagger UI at `/docs`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DisTorch API",
        description = "Register workflow definitions, start and operate runs, and run tasks \
                       as a worker. Every error is `application/problem+json`."
    ),
    paths(
        definitions::register_definition,
        definitions::list_definitions,
        definitions::latest_definition,
        definitions::definition_version,
        workflows::start_workflow,
        workflows::list_workflows,
        workflows::get_workflow,
        workflows::workflow_history,
        path::workflow_path,
        workflows::cancel_workflow,
        workflows::pause_workflow,
        workflows::resume_workflow,
        workflows::add_task,
        workflows::send_signal,
        tasks::get_task,
        tasks::retry_task,
        tasks::skip_task,
        tasks::dead_letters,
        dlq::dead_commands,
        human::list_human_tasks,
        human::claim_human_task,
        human::release_human_task,
        human::reassign_human_task,
        human::complete_human_task,
        sla::sla_breaches,
        analytics::analytics_performance,
        analytics::analytics_bottlenecks,
        analytics::analytics_cost,
        worker::poll,
        worker::take,
        worker::complete_task,
        worker::fail_task,
        worker::heartbeat,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        breakers::list_breakers,
        streams::sse_events,
        streams::ws_workflow,
        streams::ws_tasks,
    ),
    components(schemas(crate::problem::Problem)),
    tags(
        (name = "definitions", description = "Workflow definitions (versioned)"),
        (name = "workflows", description = "Runs and operator verbs"),
        (name = "tasks", description = "Tasks and the dead-letter queue"),
        (name = "human-tasks", description = "The inbox of human tasks: claim, release, reassign, complete"),
        (name = "signals", description = "Signals to runs"),
        (name = "sla", description = "SLA warnings and breaches"),
        (name = "analytics", description = "Performance, bottlenecks and cost over a time window"),
        (name = "workers", description = "The worker protocol"),
        (name = "ops", description = "Health and metrics"),
        (name = "streams", description = "Live events over SSE and WebSocket"),
        (name = "internal", description = "Between API replicas; not for clients"),
    )
)]
pub struct ApiDoc;
