//! Mutations: each publishes the same command as its REST twin, through the same
//! [`crate::actions`], and answers once the read model reflects it (or says it does not
//! yet, with `caughtUp: false`).

use super::error::OrGql;
use crate::actions;
use crate::error::ApiError;
use crate::routes::{AppState, parse_task_id, parse_workflow_id};
use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use distorch_domain::command::Command;
use distorch_domain::workflow::{Status, TaskStatus};
use serde_json::Value;

pub struct Mutation;

#[derive(InputObject, Debug)]
pub struct StartWorkflowInput {
    /// Definition name.
    pub definition: String,
    /// Latest when absent.
    pub version: Option<u32>,
    /// Checked against the definition's `input_schema`.
    pub input: Option<Value>,
    /// The same key for the same definition always names the same run.
    pub idempotency_key: Option<String>,
    /// The run's id chosen by the caller (a UUID), instead of an idempotency key: a repeated
    /// start with it returns the existing run. An UNAVAILABLE error carries the id a pending
    /// start will create in `extensions.workflowId`.
    pub workflow_id: Option<ID>,
}

/// The run a start named.
#[derive(SimpleObject, Debug)]
pub struct StartedRun {
    pub workflow_id: ID,
    /// `null` when the read model has not caught up yet.
    pub status: Option<Status>,
    /// The idempotency key (or workflow id) had already started this run.
    pub existing: bool,
}

/// A run after an operator verb.
#[derive(SimpleObject, Debug)]
pub struct RunStatus {
    pub workflow_id: ID,
    pub status: Option<Status>,
    /// The read model reflects the verb (else `status` is what the engine said).
    pub caught_up: bool,
}

/// A task after an operator verb.
#[derive(SimpleObject, Debug)]
pub struct TaskAction {
    pub task_id: ID,
    pub workflow_id: ID,
    /// `null` when the read model has not caught up yet.
    pub status: Option<TaskStatus>,
    pub caught_up: bool,
}

#[derive(SimpleObject, Debug)]
pub struct Registered {
    pub name: String,
    pub version: u32,
}

#[derive(SimpleObject, Debug)]
pub struct SignalSent {
    pub workflow_id: ID,
    pub signal: String,
}

async fn run_verb(
    ctx: &Context<'_>,
    id: &ID,
    command: impl FnOnce(distorch_domain::WorkflowId) -> Command,
) -> Result<RunStatus> {
    let state = ctx.data_unchecked::<AppState>();
    let workflow_id = parse_workflow_id(id).gql()?;
    let applied = actions::run_verb(state, workflow_id, command(workflow_id))
        .await
        .gql()?;
    Ok(RunStatus {
        workflow_id: ID(workflow_id.to_string()),
        status: applied.status,
        caught_up: applied.caught_up,
    })
}

async fn task_verb(
    ctx: &Context<'_>,
    id: &ID,
    command: impl FnOnce(distorch_domain::TaskId) -> Command,
) -> Result<TaskAction> {
    let state = ctx.data_unchecked::<AppState>();
    let (task_id, workflow_id) = parse_task_id(id).gql()?;
    let applied = actions::task_verb(state, &task_id, workflow_id, command(task_id.clone()))
        .await
        .gql()?;
    Ok(TaskAction {
        task_id: ID(task_id.0),
        workflow_id: ID(workflow_id.to_string()),
        status: applied.status,
        caught_up: applied.caught_up,
    })
}

#[Object]
impl Mutation {
    /// Start a run.
    async fn start_workflow(
        &self,
        ctx: &Context<'_>,
        input: StartWorkflowInput,
    ) -> Result<StartedRun> {
        let state = ctx.data_unchecked::<AppState>();
        let started = actions::start_workflow(
            state,
            input.definition,
            input.version,
            input.input.unwrap_or(Value::Null),
            input.idempotency_key,
            input.workflow_id.map(|id| id.0),
        )
        .await
        .gql()?;
        Ok(StartedRun {
            workflow_id: ID(started.workflow_id.to_string()),
            status: started.status,
            existing: started.existing,
        })
    }

    /// Cancel a run, optionally compensating its completed steps first.
    async fn cancel_workflow(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default = false)] compensate: bool,
        reason: Option<String>,
    ) -> Result<RunStatus> {
        run_verb(ctx, &id, |workflow_id| Command::CancelWorkflow {
            workflow_id,
            compensate,
            reason,
        })
        .await
    }

    /// Pause a run: nothing new is scheduled until it is resumed.
    async fn pause_workflow(&self, ctx: &Context<'_>, id: ID) -> Result<RunStatus> {
        run_verb(ctx, &id, |workflow_id| Command::PauseWorkflow {
            workflow_id,
        })
        .await
    }

    /// Resume a paused run.
    async fn resume_workflow(&self, ctx: &Context<'_>, id: ID) -> Result<RunStatus> {
        run_verb(ctx, &id, |workflow_id| Command::ResumeWorkflow {
            workflow_id,
        })
        .await
    }

    /// Send signal `name` to a run; a `signal` step of that name takes its payload.
    async fn send_signal(
        &self,
        ctx: &Context<'_>,
        workflow_id: ID,
        name: String,
        payload: Option<Value>,
    ) -> Result<SignalSent> {
        let state = ctx.data_unchecked::<AppState>();
        let id = parse_workflow_id(&workflow_id).gql()?;
        actions::send_signal(state, id, name.clone(), payload.unwrap_or(Value::Null))
            .await
            .gql()?;
        Ok(SignalSent {
            workflow_id: ID(id.to_string()),
            signal: name,
        })
    }

    /// Run a failed or parked task again with a fresh attempt budget.
    async fn retry_task(&self, ctx: &Context<'_>, id: ID) -> Result<TaskAction> {
        task_verb(ctx, &id, |task_id| Command::RetryTask { task_id }).await
    }

    /// Treat a task as completed with `output`.
    async fn skip_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        output: Option<Value>,
    ) -> Result<TaskAction> {
        task_verb(ctx, &id, |task_id| Command::SkipTask {
            task_id,
            output: output.unwrap_or(Value::Null),
        })
        .await
    }

    /// Register the next version of a definition, given as a JSON `definition` or as
    /// `yaml` text (exactly one of them).
    async fn register_definition(
        &self,
        ctx: &Context<'_>,
        definition: Option<Value>,
        yaml: Option<String>,
    ) -> Result<Registered> {
        let state = ctx.data_unchecked::<AppState>();
        let source = match (definition, yaml) {
            (Some(json), None) => json,
            (None, Some(text)) => serde_yaml_ng::from_str(&text)
                .map_err(|e| ApiError::BadRequest(format!("invalid YAML: {e}")))
                .gql()?,
            _ => {
                return Err(ApiError::BadRequest(
                    "give exactly one of `definition` (JSON) and `yaml`".into(),
                ))
                .gql();
            }
        };
        let (name, version) = actions::register_definition(state, source).await.gql()?;
        Ok(Registered { name, version })
    }
}
