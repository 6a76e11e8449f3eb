//! Mutations: each publishes the same command as its REST twin, through the same
//! [`crate::actions`], and answers once the read model reflects it (or says it does not
//! yet, with `caughtUp: false`).

use super::error::OrGql;
use crate::actions;
use crate::dto::Registered;
use crate::error::ApiError;
use crate::routes::{AppState, parse_task_id, parse_workflow_id};
use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use distorch_domain::command::Command;
use distorch_domain::workflow::{Status, TaskStatus};
use serde_json::Value;

/// The mutation root: the write side, through the same `crate::actions` as REST.
pub struct Mutation;

/// A request to start a run.
#[derive(InputObject, Debug)]
pub struct StartWorkflowInput {
    /// Definition name.
    pub definition: String,
    /// Definition version; the latest when absent.
    pub version: Option<u32>,
    /// The run's input, any JSON; checked against the definition's `input_schema`. Default
    /// `null`.
    pub input: Option<Value>,
    /// The same key for the same definition always names the same run: a repeated start
    /// returns that run (`existing: true`). Not with `workflowId`.
    pub idempotency_key: Option<String>,
    /// The run's id chosen by the caller (a UUID), instead of an idempotency key: a repeated
    /// start with it returns the existing run. An `UNAVAILABLE` error about a start that may
    /// still be applied carries the run's id in `extensions.workflowId`: retry with it.
    pub workflow_id: Option<ID>,
}

/// The run a start named.
#[derive(SimpleObject, Debug)]
pub struct StartedRun {
    /// The run's id (UUID).
    pub workflow_id: ID,
    /// The run's status: from the read model once it shows the run, else as the engine
    /// reported it.
    pub status: Option<Status>,
    /// The idempotency key (or workflow id) had already started this run.
    pub existing: bool,
}

/// A run after an operator verb.
#[derive(SimpleObject, Debug)]
pub struct RunStatus {
    /// The run's id (UUID).
    pub workflow_id: ID,
    /// The run's status after the verb: from the read model when `caughtUp`, else as the
    /// engine reported it.
    pub status: Option<Status>,
    /// The read model reflects the verb (else `status` is what the engine said).
    pub caught_up: bool,
}

/// A task after an operator verb.
#[derive(SimpleObject, Debug)]
pub struct TaskAction {
    /// The task's id (`<run uuid>.<n>`).
    pub task_id: ID,
    /// The task's run (UUID).
    pub workflow_id: ID,
    /// `null` when the read model has not caught up yet.
    pub status: Option<TaskStatus>,
    /// The read model reflects the verb.
    pub caught_up: bool,
}

/// A signal the run has received.
#[derive(SimpleObject, Debug)]
pub struct SignalSent {
    /// The run's id (UUID).
    pub workflow_id: ID,
    /// Signal name.
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

/// Changes: each publishes the same command as its REST twin and answers once the engine
/// has decided, after a bounded wait for the read model to reflect it.
#[Object]
impl Mutation {
    /// Start a run. With `idempotencyKey` or `workflowId`, repeating it returns the run it
    /// started (`existing: true`) instead of starting another.
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

    /// Send signal `name` (letters, digits, `_`, `-` and `.`) to a run. The run keeps it until
    /// a `signal` step of that name takes it; `payload` (any JSON, default `null`) becomes
    /// that step's output.
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

    /// Run a task parked in the dead-letter queue again, with a fresh attempt budget (a
    /// human task goes back to the inbox unclaimed). A task that is not parked is a `CONFLICT`.
    async fn retry_task(&self, ctx: &Context<'_>, id: ID) -> Result<TaskAction> {
        task_verb(ctx, &id, |task_id| Command::RetryTask { task_id }).await
    }

    /// Skip a parked or unfinished task: it counts as completed with `output` (any JSON,
    /// default `null`). A finished task that is not parked is a `CONFLICT`.
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
    /// `yaml` text (exactly one of them). A document identical to the latest version
    /// registers nothing and answers with that version.
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
        actions::register_definition(state, source).await.gql()
    }
}
