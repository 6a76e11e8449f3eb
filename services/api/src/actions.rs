//! What a REST handler and a GraphQL resolver both do, once: publish the command, read the
//! engine's answer, wait (bounded) for the read model, and read back what changed. The
//! callers only translate their own input and output shapes.

use crate::dto::Registered;
use crate::error::ApiError;
use crate::routes::{AppState, accepted, unexpected};
use distorch_domain::command::{Answer, Command};
use distorch_domain::definition::Definition;
use distorch_domain::path::ExecutionPath;
use distorch_domain::workflow::{Status, TaskStatus};
use distorch_domain::{TaskId, WorkflowId};
use serde_json::Value;

fn status_of(answer: &Answer) -> Option<Status> {
    match answer {
        Answer::Started { status, .. }
        | Answer::Applied { status, .. }
        | Answer::CancelRequested { status, .. } => Some(*status),
        _ => None,
    }
}

/// A run that a start request names.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    pub workflow_id: WorkflowId,
    pub status: Option<Status>,
    /// The idempotency key or workflow id had already started it.
    pub existing: bool,
}

/// Starts a run of `definition` (the latest version unless `version`).
pub(crate) async fn start_workflow(
    state: &AppState,
    definition: String,
    version: Option<u32>,
    input: Value,
    idempotency_key: Option<String>,
    workflow_id: Option<String>,
) -> Result<Started, ApiError> {
    if definition.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "`definition` must name a definition".into(),
        ));
    }
    let workflow_id = match (&idempotency_key, workflow_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give `workflow_id` or `idempotency_key`, not both: each names the run".into(),
            ));
        }
        (Some(key), None) => WorkflowId::from_idempotency_key(&definition, key),
        (None, Some(raw)) => raw.parse().map_err(|e| {
            ApiError::BadRequest(format!(
                "`workflow_id` {raw:?} is not a workflow id (expected a UUID): {e}"
            ))
        })?,
        (None, None) => WorkflowId::new_random(uuid::Uuid::now_v7()),
    };
    let command = Command::StartWorkflow {
        workflow_id,
        definition,
        version,
        input,
        idempotency_key,
        parent: None,
    };
    let outcome = match state.bus.send(command).await {
        Err(e @ (ApiError::Timeout(_) | ApiError::Unavailable(_))) => Err(ApiError::StartPending {
            workflow_id,
            reason: format!("the start of run {workflow_id} is not confirmed: {e}"),
        }),
        other => other,
    };
    let (seq, answer) = accepted(outcome?)?;
    let Answer::Started {
        workflow_id,
        status,
        existing,
    } = answer
    else {
        return Err(unexpected("StartWorkflow", &answer));
    };
    let caught_up = state.caught_up(workflow_id, seq).await;
    let status = match caught_up {
        true => state.store.workflow(workflow_id).await?.map(|v| v.status),
        false => None,
    }
    .or(Some(status));
    Ok(Started {
        workflow_id,
        status,
        existing,
    })
}

/// The outcome of an accepted operator verb.
#[derive(Debug, Clone)]
pub(crate) struct Applied<S> {
    /// The read model reflects the command.
    pub caught_up: bool,
    pub status: Option<S>,
}

/// Publishes a verb about a run (cancel, pause, resume) and reads back the run's status.
pub(crate) async fn run_verb(
    state: &AppState,
    workflow_id: WorkflowId,
    command: Command,
) -> Result<Applied<Status>, ApiError> {
    let (seq, result) = accepted(state.bus.send(command).await?)?;
    if state.caught_up(workflow_id, seq).await {
        let view = state.store.workflow(workflow_id).await?;
        Ok(Applied {
            caught_up: true,
            status: view.map(|v| v.status).or_else(|| status_of(&result)),
        })
    } else {
        Ok(Applied {
            caught_up: false,
            status: status_of(&result),
        })
    }
}

/// Publishes an operator command about a task (retry, skip) and reads back its status.
pub(crate) async fn task_verb(
    state: &AppState,
    task_id: &TaskId,
    workflow_id: WorkflowId,
    command: Command,
) -> Result<Applied<TaskStatus>, ApiError> {
    let (seq, _) = accepted(state.bus.send(command).await?)?;
    if state.caught_up(workflow_id, seq).await {
        Ok(Applied {
            caught_up: true,
            status: state.store.task(task_id).await?.map(|t| t.status),
        })
    } else {
        Ok(Applied {
            caught_up: false,
            status: None,
        })
    }
}

/// Registers the definition in `source` as its next version, or answers the latest version
/// when the document is identical to it (`unchanged`).
pub(crate) async fn register_definition(
    state: &AppState,
    source: Value,
) -> Result<Registered, ApiError> {
    // The name is the command's partitioning key, so it must be checked before publishing.
    match source.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => {}
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`name` of the definition must be a non-empty string".into(),
            ));
        }
        None if !source.is_object() => {
            return Err(ApiError::BadRequest(
                "a definition must be an object with at least `name` and `steps`".into(),
            ));
        }
        None => return Err(ApiError::BadRequest("the definition has no `name`".into())),
    };
    let (_, answer) = accepted(
        state
            .bus
            .send(Command::RegisterDefinition { source })
            .await?,
    )?;
    let Answer::Registered {
        name,
        version,
        unchanged,
    } = answer
    else {
        return Err(unexpected("RegisterDefinition", &answer));
    };
    match state
        .store
        .wait_for_definition(&name, version, state.read_your_writes)
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::debug!(name, version, "definition not readable yet"),
        Err(e) => tracing::warn!(name, version, error = %e, "waiting for the definition failed"),
    }
    Ok(Registered {
        name,
        version,
        unchanged,
    })
}

/// Signal names follow the definition's rule for them.
fn check_signal_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "signal name {name:?} must be letters, digits, `_`, `-` and `.`"
        )))
    }
}

/// Delivers signal `name` with `payload` to a run.
pub(crate) async fn send_signal(
    state: &AppState,
    workflow_id: WorkflowId,
    name: String,
    payload: Value,
) -> Result<(), ApiError> {
    check_signal_name(&name)?;
    let command = Command::SendSignal {
        workflow_id,
        name,
        payload,
    };
    let (seq, _) = accepted(state.bus.send(command).await?)?;
    state.caught_up(workflow_id, seq).await;
    Ok(())
}

/// The run's execution path; `NotFound` for an unknown run.
pub(crate) async fn execution_path(
    state: &AppState,
    id: WorkflowId,
) -> Result<ExecutionPath, ApiError> {
    let events = state.store.history(id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("no workflow run {id}")));
    }
    let definition = match state.store.workflow(id).await? {
        Some(view) => state
            .store
            .definition(&view.definition, Some(view.version))
            .await?
            // Registered definitions compile; should one not, kinds are inferred instead.
            .and_then(|d| Definition::from_source(&d.source, d.version).ok()),
        None => None,
    };
    Ok(ExecutionPath::build(&events, definition.as_ref()))
}
