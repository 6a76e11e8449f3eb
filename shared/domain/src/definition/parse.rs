//! Raw document -> validated [`super::Definition`].
//!
//! The document is walked by hand rather than deserialised with serde: every rule (unknown
//! fields, one step kind, unique ids across nesting, references to compensations, retry
//! bounds) then fails with the exact JSON path of the offending value and a message that
//! lists what would have been accepted. YAML is converted to JSON first so both formats take
//! one path and the stored `source` is always JSON.
//!
//! `schemas/definition.schema.json` describes the same document; keep the two in step.

mod read;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{
    Assignment, Compensation, DEFAULT_TIMEOUT, Definition, HumanSpec, InputSchema, OnFailure,
    RetryPolicy, Sla, Step, StepKind, TaskSpec,
};
use read::{Obj, Result, error, field, index};

/// How a definition's text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// A JSON document.
    Json,
    /// A YAML document (anchors and `<<` merge keys resolved); stored as JSON.
    Yaml,
}

/// What is wrong with a definition, and where (a JSON path such as `steps[2].retry.max_attempts`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DefinitionError {
    /// Where: a JSON path into the document, empty for the document itself.
    pub path: String,
    /// What is wrong, and what would have been accepted.
    pub message: String,
}

const ROOT_FIELDS: &[&str] = &[
    "name",
    "description",
    "input_schema",
    "output",
    "defaults",
    "steps",
    "compensations",
    "sla",
    "fallbacks",
];
const DEFAULTS_FIELDS: &[&str] = &["retry", "timeout", "on_failure"];
const RETRY_FIELDS: &[&str] = &[
    "max_attempts",
    "initial_interval",
    "backoff_coefficient",
    "max_interval",
    "jitter",
    "non_retryable",
];
const COMPENSATION_FIELDS: &[&str] = &["task", "queue", "input", "retry", "timeout"];

/// The keys that select a step's kind; a step has exactly one of them.
const KINDS: &[&str] = &[
    "task", "switch", "parallel", "foreach", "wait", "workflow", "signal", "human", "http",
];
const TASK_STEP_FIELDS: &[&str] = &[
    "id",
    "when",
    "on_failure",
    "task",
    "queue",
    "input",
    "retry",
    "timeout",
    "heartbeat_timeout",
    "schedule_to_start_timeout",
    "compensate",
    "sla",
];

/// Fields of a non-task step. Containers take `retry` and `timeout` as defaults for the
/// steps inside them; `wait` and `workflow` steps run no attempt those could apply to, so
/// they are rejected there rather than silently ignored.
fn step_fields(kind: &str) -> Vec<&str> {
    if kind == "task" {
        return TASK_STEP_FIELDS.to_vec();
    }
    if kind == "http" {
        return vec![
            "id",
            "when",
            "on_failure",
            "sla",
            "http",
            "retry",
            "timeout",
            "compensate",
            "fallback",
        ];
    }
    let mut fields = vec!["id", "when", "on_failure", "sla", kind];
    if matches!(kind, "switch" | "parallel" | "foreach") {
        fields.extend(["retry", "timeout"]);
    }
    fields
}

impl Definition {
    /// Parses and validates a document given as text.
    pub fn from_text(
        text: &str,
        format: SourceFormat,
        version: u32,
    ) -> std::result::Result<Definition, DefinitionError> {
        let source = match format {
            SourceFormat::Json => serde_json::from_str::<Value>(text)
                .map_err(|e| error("", format!("invalid JSON: {e}")))?,
            SourceFormat::Yaml => yaml_to_json(text)?,
        };
        Definition::from_source(&source, version)
    }

    /// Validates and compiles an already-parsed JSON document.
    pub fn from_source(
        source: &Value,
        version: u32,
    ) -> std::result::Result<Definition, DefinitionError> {
        let root = Obj::new(source, "", "a definition object", ROOT_FIELDS)?;
        let name = root
            .req("name", |v, p| read::name(v, p, "name"))?
            .to_string();
        let description = root.opt("description", read::string)?.map(str::to_string);
        let input_schema = root.opt("input_schema", input_schema)?;
        let output = root.opt("output", read::expr)?;
        let defaults = root
            .opt("defaults", defaults)?
            .unwrap_or_else(Defaults::builtin);

        let compensations = root
            .opt("compensations", |v, p| compensations(v, p, &defaults.scope))?
            .unwrap_or_default();

        let mut builder = Builder::new(&defaults, &compensations);
        let fallbacks = root
            .opt("fallbacks", |v, p| builder.steps(v, p, &defaults.scope))?
            .unwrap_or_default();
        builder.fallbacks = fallbacks.iter().map(|s| s.id.clone()).collect();
        let steps = root.req("steps", |v, p| {
            let steps = builder.steps(v, p, &defaults.scope)?;
            if steps.is_empty() {
                return Err(error(p, "a definition needs at least one step"));
            }
            Ok(steps)
        })?;

        Ok(Definition {
            name,
            version,
            description,
            input_schema,
            output,
            steps,
            compensations,
            sla: root.opt("sla", sla)?,
            fallbacks,
            source: source.clone(),
        })
    }

    /// Validates one step added to a running run (an ad-hoc task) against this definition's
    /// defaults and compensations. Paths in errors are relative to the step (`retry.jitter`).
    /// Its id must be new to the definition and to `taken_ids` (steps added earlier).
    pub fn parse_step(
        &self,
        value: &Value,
        taken_ids: &[String],
    ) -> std::result::Result<Step, DefinitionError> {
        if let Some(kind) = value
            .as_object()
            .and_then(|o| KINDS.iter().find(|k| o.contains_key(**k)))
            .filter(|k| **k != "task")
        {
            return Err(error(
                "",
                format!("an added step must be a task step, found a `{kind}` step"),
            ));
        }
        // The stored source was validated when the definition was registered.
        let defaults = match self.source.get("defaults") {
            Some(v) => defaults(v, "defaults")?,
            None => Defaults::builtin(),
        };
        let mut builder = Builder::new(&defaults, &self.compensations);
        collect_ids(&self.steps, "steps", &mut builder.ids);
        collect_ids(&self.fallbacks, "fallbacks", &mut builder.ids);
        for id in taken_ids {
            builder
                .ids
                .entry(id.clone())
                .or_insert_with(|| "a step added earlier to this run".to_string());
        }
        builder.step(value, "", &defaults.scope)
    }
}

fn yaml_to_json(text: &str) -> Result<Value> {
    // The parser's message already carries the line and column.
    let yaml_error = |e: serde_yaml_ng::Error| error("", format!("invalid YAML: {e}"));
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(yaml_error)?;
    // Anchors and `<<` merge keys are common in hand-written YAML; resolve them so the
    // stored JSON is self-contained.
    yaml.apply_merge().map_err(yaml_error)?;
    serde_json::to_value(&yaml).map_err(|e| error("", format!("YAML is not valid JSON data: {e}")))
}

fn input_schema(v: &Value, path: &str) -> Result<InputSchema> {
    if !v.is_object() && !v.is_boolean() {
        return Err(error(
            path,
            "expected a JSON Schema (an object or a boolean)",
        ));
    }
    jsonschema::validator_for(v)
        .map(|validator| InputSchema(Arc::new(validator)))
        .map_err(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            error(path, format!("invalid JSON Schema at {at}: {e}"))
        })
}

/// What a step inherits when it does not say: from `defaults`, or from the container step
/// it sits in.
#[derive(Clone)]
struct Scope {
    retry: RetryPolicy,
    timeout: Duration,
}

struct Defaults {
    scope: Scope,
    on_failure: Option<OnFailure>,
}

impl Defaults {
    fn builtin() -> Self {
        Defaults {
            scope: Scope {
                retry: RetryPolicy::default(),
                timeout: DEFAULT_TIMEOUT,
            },
            on_failure: None,
        }
    }
}

fn defaults(v: &Value, path: &str) -> Result<Defaults> {
    let o = Obj::new(v, path, "an object", DEFAULTS_FIELDS)?;
    let builtin = Defaults::builtin();
    Ok(Defaults {
        scope: Scope {
            retry: o
                .opt("retry", |v, p| retry(v, p, &builtin.scope.retry))?
                .unwrap_or(builtin.scope.retry),
            timeout: o
                .opt("timeout", read::duration)?
                .unwrap_or(builtin.scope.timeout),
        },
        on_failure: o.opt("on_failure", read::on_failure)?,
    })
}

/// A partial policy merged field by field over `base`, then checked as a whole.
fn retry(v: &Value, path: &str, base: &RetryPolicy) -> Result<RetryPolicy> {
    let o = Obj::new(v, path, "a retry policy object", RETRY_FIELDS)?;
    let mut r = base.clone();
    if let Some(n) = o.opt("max_attempts", |v, p| read::uint(v, p, 1))? {
        r.max_attempts = n;
    }
    if let Some(d) = o.opt("initial_interval", read::duration)? {
        r.initial_interval = d;
    }
    if let Some(c) = o.opt("backoff_coefficient", |v, p| {
        let c = read::number(v, p)?;
        if c < 1.0 {
            return Err(error(p, format!("must be at least 1.0, found {c}")));
        }
        Ok(c)
    })? {
        r.backoff_coefficient = c;
    }
    if let Some(d) = o.opt("max_interval", read::duration)? {
        r.max_interval = d;
    }
    if let Some(j) = o.opt("jitter", |v, p| {
        let j = read::number(v, p)?;
        if !(0.0..=1.0).contains(&j) {
            return Err(error(p, format!("must be between 0.0 and 1.0, found {j}")));
        }
        Ok(j)
    })? {
        r.jitter = j;
    }
    if let Some(types) = o.opt("non_retryable", |v, p| {
        read::array(v, p)?
            .iter()
            .enumerate()
            .map(|(i, t)| read::non_empty_string(t, &index(p, i)).map(str::to_string))
            .collect::<Result<Vec<_>>>()
    })? {
        r.non_retryable = types;
    }
    if r.max_interval < r.initial_interval {
        // Blame the field this document set; the other one may be inherited.
        let key = if o.map.contains_key("max_interval") {
            "max_interval"
        } else {
            "initial_interval"
        };
        return Err(error(
            o.at(key),
            format!(
                "max_interval ({}) must be at least initial_interval ({})",
                humantime::format_duration(r.max_interval),
                humantime::format_duration(r.initial_interval)
            ),
        ));
    }
    Ok(r)
}

fn compensations(v: &Value, path: &str, scope: &Scope) -> Result<BTreeMap<String, Compensation>> {
    let map = v.as_object().ok_or_else(|| {
        error(
            path,
            "expected an object mapping compensation names to tasks",
        )
    })?;
    map.iter()
        .map(|(name, v)| {
            let path = field(path, name);
            if name.trim().is_empty() {
                return Err(error(path, "compensation names must not be empty"));
            }
            let o = Obj::new(v, &path, "a compensation object", COMPENSATION_FIELDS)?;
            let task = o.req("task", |v, p| read::name(v, p, "task type"))?;
            let compensation = Compensation {
                task: task.to_string(),
                queue: o
                    .opt("queue", |v, p| read::name(v, p, "queue"))?
                    .unwrap_or(task)
                    .to_string(),
                input: o.opt("input", read::expr)?,
                retry: o
                    .opt("retry", |v, p| retry(v, p, &scope.retry))?
                    .unwrap_or_else(|| scope.retry.clone()),
                timeout: o.opt("timeout", read::duration)?.unwrap_or(scope.timeout),
            };
            Ok((name.clone(), compensation))
        })
        .collect()
}

/// Walks the step tree; owns the definition-wide state (ids seen so far).
struct Builder<'d> {
    /// Resolved fallback for steps without their own `on_failure`.
    on_failure: OnFailure,
    compensations: &'d BTreeMap<String, Compensation>,
    /// Every id seen so far, with where it was declared, to name both places on a clash.
    ids: HashMap<String, String>,
    /// Ids of the top-level `fallbacks`, which `fallback:` may name.
    fallbacks: Vec<String>,
}

impl<'d> Builder<'d> {
    fn new(defaults: &Defaults, compensations: &'d BTreeMap<String, Compensation>) -> Self {
        let on_failure = defaults.on_failure.unwrap_or(if compensations.is_empty() {
            OnFailure::Fail
        } else {
            OnFailure::Compensate
        });
        Builder {
            on_failure,
            compensations,
            ids: HashMap::new(),
            fallbacks: Vec::new(),
        }
    }

    fn steps(&mut self, v: &Value, path: &str, scope: &Scope) -> Result<Vec<Step>> {
        read::array(v, path)?
            .iter()
            .enumerate()
            .map(|(i, s)| self.step(s, &index(path, i), scope))
            .collect()
    }

    /// Like [`Self::steps`] for lists where an empty list would be a mistake.
    fn non_empty_steps(
        &mut self,
        v: &Value,
        path: &str,
        scope: &Scope,
        what: &str,
    ) -> Result<Vec<Step>> {
        let steps = self.steps(v, path, scope)?;
        if steps.is_empty() {
            return Err(error(path, format!("{what} needs at least one step")));
        }
        Ok(steps)
    }

    fn step(&mut self, v: &Value, path: &str, scope: &Scope) -> Result<Step> {
        let kind = step_kind(v, path)?;
        let o = Obj::new(v, path, "a step object", &step_fields(kind))?;

        let id = o.req("id", read::step_id)?;
        if let Some(first) = self.ids.get(id) {
            return Err(error(
                o.at("id"),
                format!("duplicate step id `{id}`: already used at {first}"),
            ));
        }
        self.ids.insert(id.to_string(), o.at("id"));

        let when = o.opt("when", read::expr)?;
        let sla = o.opt("sla", sla)?;
        let on_failure = o
            .opt("on_failure", read::on_failure)?
            .unwrap_or(self.on_failure);
        let scope = Scope {
            retry: o
                .opt("retry", |v, p| retry(v, p, &scope.retry))?
                .unwrap_or_else(|| scope.retry.clone()),
            timeout: o.opt("timeout", read::duration)?.unwrap_or(scope.timeout),
        };

        let kind_path = o.at(kind);
        let kind_value = &o.map[kind];
        let kind = match kind {
            "task" => StepKind::Task(self.task(&o, scope)?),
            "switch" => self.switch(kind_value, &kind_path, &scope)?,
            "parallel" => self.parallel(kind_value, &kind_path, &scope)?,
            "foreach" => self.foreach(kind_value, &kind_path, &scope)?,
            "wait" => StepKind::Wait(read::duration(kind_value, &kind_path)?),
            "workflow" => child_workflow(kind_value, &kind_path)?,
            "signal" => signal(kind_value, &kind_path)?,
            "human" => human(kind_value, &kind_path)?,
            "http" => StepKind::Task(self.http_task(&o, &kind_path, scope)?),
            other => unreachable!("step_kind returned {other}"),
        };
        Ok(Step {
            id: id.to_string(),
            when,
            on_failure,
            sla,
            kind,
        })
    }

    fn http_task(&self, o: &Obj<'_>, path: &str, scope: Scope) -> Result<TaskSpec> {
        let mut spec = self.task_common(o, "http", scope)?;
        spec.http = Some(Box::new(http(&o.map["http"], path)?));
        spec.fallback = o.opt("fallback", |v, p| {
            let id = read::string(v, p)?;
            if self.fallbacks.iter().any(|f| f == id) {
                return Ok(id.to_string());
            }
            Err(error(
                p,
                if self.fallbacks.is_empty() {
                    format!("unknown fallback `{id}`: the definition has no `fallbacks`")
                } else {
                    format!(
                        "unknown fallback `{id}`; defined in `fallbacks`: {}",
                        self.fallbacks.join(", ")
                    )
                },
            ))
        })?;
        Ok(spec)
    }

    fn task(&self, o: &Obj<'_>, scope: Scope) -> Result<TaskSpec> {
        let task = o.req("task", |v, p| read::name(v, p, "task type"))?;
        self.task_common(o, task, scope)
    }

    /// What task and http steps share; `task` is the task type.
    fn task_common(&self, o: &Obj<'_>, task: &str, scope: Scope) -> Result<TaskSpec> {
        let compensate = o.opt("compensate", |v, p| {
            let name = read::string(v, p)?;
            if self.compensations.contains_key(name) {
                return Ok(name.to_string());
            }
            let known: Vec<&str> = self.compensations.keys().map(String::as_str).collect();
            Err(error(
                p,
                if known.is_empty() {
                    format!("unknown compensation `{name}`: the definition has no `compensations`")
                } else {
                    format!(
                        "unknown compensation `{name}`; defined: {}",
                        known.join(", ")
                    )
                },
            ))
        })?;
        Ok(TaskSpec {
            task: task.to_string(),
            queue: o
                .opt("queue", |v, p| read::name(v, p, "queue"))?
                .unwrap_or(task)
                .to_string(),
            input: o.opt("input", read::expr)?,
            retry: scope.retry,
            timeout: scope.timeout,
            heartbeat_timeout: o.opt("heartbeat_timeout", read::duration)?,
            schedule_to_start_timeout: o.opt("schedule_to_start_timeout", read::duration)?,
            compensate,
            http: None,
            fallback: None,
        })
    }

    fn switch(&mut self, v: &Value, path: &str, scope: &Scope) -> Result<StepKind> {
        let o = Obj::new(v, path, "a switch object", &["cases", "default"])?;
        let cases = o.req("cases", |v, p| {
            let cases = read::array(v, p)?;
            if cases.is_empty() {
                return Err(error(p, "a switch needs at least one case"));
            }
            cases
                .iter()
                .enumerate()
                .map(|(i, case)| {
                    let case = Obj::new(case, &index(p, i), "a case object", &["when", "steps"])?;
                    let when = case.req("when", read::expr)?;
                    let steps = case.req("steps", |v, p| self.steps(v, p, scope))?;
                    Ok((when, steps))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let default = o
            .opt("default", |v, p| self.steps(v, p, scope))?
            .unwrap_or_default();
        Ok(StepKind::Switch { cases, default })
    }

    fn parallel(&mut self, v: &Value, path: &str, scope: &Scope) -> Result<StepKind> {
        let o = Obj::new(v, path, "a parallel object", &["join", "branches"])?;
        let join = o.opt("join", read::join)?.unwrap_or(super::Join::All);
        let branches = o.req("branches", |v, p| {
            let branches = read::array(v, p)?;
            if branches.is_empty() {
                return Err(error(p, "a parallel step needs at least one branch"));
            }
            branches
                .iter()
                .enumerate()
                .map(|(i, branch)| {
                    let branch = Obj::new(branch, &index(p, i), "a branch object", &["steps"])?;
                    branch.req("steps", |v, p| {
                        self.non_empty_steps(v, p, scope, "a branch")
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(StepKind::Parallel { join, branches })
    }

    fn foreach(&mut self, v: &Value, path: &str, scope: &Scope) -> Result<StepKind> {
        let o = Obj::new(
            v,
            path,
            "a foreach object",
            &["items", "max_concurrency", "steps"],
        )?;
        let items = o.req("items", read::expr)?;
        let max_concurrency = o
            .opt("max_concurrency", |v, p| read::uint(v, p, 1))?
            .unwrap_or(u32::MAX);
        let steps = o.req("steps", |v, p| {
            self.non_empty_steps(v, p, scope, "a foreach step")
        })?;
        Ok(StepKind::Foreach {
            items,
            max_concurrency,
            steps,
        })
    }
}

/// The one kind key a step carries. Checked before unknown fields so that a step with a
/// misspelt or missing kind gets a message about kinds, not a list of allowed fields.
fn step_kind(v: &Value, path: &str) -> Result<&'static str> {
    let Some(map) = v.as_object() else {
        return Err(read::expected(path, "a step object", v));
    };
    let present: Vec<&'static str> = KINDS
        .iter()
        .copied()
        .filter(|k| map.contains_key(*k))
        .collect();
    match present.as_slice() {
        [kind] => Ok(kind),
        [] => {
            let known = |k: &str| TASK_STEP_FIELDS.contains(&k) || KINDS.contains(&k);
            Err(match map.keys().find(|k| !known(k)) {
                Some(unknown) => error(
                    field(path, unknown),
                    format!(
                        "unknown step kind `{unknown}`; a step needs exactly one of: {}",
                        KINDS.join(", ")
                    ),
                ),
                None => error(
                    path,
                    format!(
                        "missing step kind; a step needs exactly one of: {}",
                        KINDS.join(", ")
                    ),
                ),
            })
        }
        many => Err(error(
            path,
            format!(
                "ambiguous step kind: found {}; a step has exactly one",
                many.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        )),
    }
}

fn child_workflow(v: &Value, path: &str) -> Result<StepKind> {
    let o = Obj::new(v, path, "a workflow object", &["name", "version", "input"])?;
    Ok(StepKind::Workflow {
        name: o
            .req("name", |v, p| read::name(v, p, "workflow name"))?
            .to_string(),
        version: o.opt("version", |v, p| read::uint(v, p, 1))?,
        input: o.opt("input", read::expr)?,
    })
}

/// Records the ids of an already-built tree under the paths they had in the document.
fn collect_ids(steps: &[Step], path: &str, ids: &mut HashMap<String, String>) {
    for (i, step) in steps.iter().enumerate() {
        let path = index(path, i);
        ids.insert(step.id.clone(), field(&path, "id"));
        match &step.kind {
            StepKind::Switch { cases, default } => {
                for (j, (_, steps)) in cases.iter().enumerate() {
                    collect_ids(steps, &format!("{path}.switch.cases[{j}].steps"), ids);
                }
                collect_ids(default, &format!("{path}.switch.default"), ids);
            }
            StepKind::Parallel { branches, .. } => {
                for (j, steps) in branches.iter().enumerate() {
                    collect_ids(steps, &format!("{path}.parallel.branches[{j}].steps"), ids);
                }
            }
            StepKind::Foreach { steps, .. } => {
                collect_ids(steps, &format!("{path}.foreach.steps"), ids)
            }
            StepKind::Task(_)
            | StepKind::Wait(_)
            | StepKind::Workflow { .. }
            | StepKind::Signal { .. }
            | StepKind::Human(_) => {}
        }
    }
}

/// `sla: 10m` or `sla: {duration: 10m, warn_at: 80%}` (`warn_at` also takes 0.8).
fn sla(v: &Value, path: &str) -> Result<Sla> {
    if v.is_string() {
        return Ok(Sla {
            duration: read::duration(v, path)?,
            warn_at: None,
        });
    }
    let o = Obj::new(
        v,
        path,
        "a duration or an sla object",
        &["duration", "warn_at"],
    )?;
    let warn_at = o.opt("warn_at", |v, p| {
        let fraction = match v {
            Value::String(s) => s
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .map(|n| n / 100.0)
                .ok_or_else(|| {
                    error(
                        p,
                        format!("expected a percentage such as \"80%\", found {s:?}"),
                    )
                })?,
            other => read::number(other, p)?,
        };
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(error(p, "warn_at must be between 0% and 100% (exclusive)"));
        }
        Ok(fraction)
    })?;
    Ok(Sla {
        duration: o.req("duration", read::duration)?,
        warn_at,
    })
}

fn signal(v: &Value, path: &str) -> Result<StepKind> {
    let o = Obj::new(v, path, "a signal object", &["name", "timeout"])?;
    Ok(StepKind::Signal {
        name: o
            .req("name", |v, p| read::name(v, p, "signal name"))?
            .to_string(),
        timeout: o.opt("timeout", read::duration)?,
    })
}

fn assignment(o: &Obj<'_>, required: bool) -> Result<Assignment> {
    let who = |key: &str| -> Result<Option<String>> {
        Ok(o.opt(key, read::non_empty_string)?.map(str::to_string))
    };
    let a = Assignment {
        assignee: who("assignee")?,
        group: who("group")?,
    };
    if required && a.assignee.is_none() && a.group.is_none() {
        return Err(error(&o.path, "needs an `assignee` or a `group`"));
    }
    Ok(a)
}

fn human(v: &Value, path: &str) -> Result<StepKind> {
    let o = Obj::new(
        v,
        path,
        "a human task object",
        &["title", "assignee", "group", "form", "timeout", "escalate"],
    )?;
    let title = o.req("title", |v, p| {
        crate::expr::Template::parse(read::string(v, p)?).map_err(|e| error(p, e.to_string()))
    })?;
    let form = o.opt("form", |v, p| Ok((input_schema(v, p)?, v.clone())))?;
    let escalate = o.opt("escalate", |v, p| {
        let e = Obj::new(v, p, "an escalation object", &["after", "to"])?;
        let after = e.req("after", read::duration)?;
        let to = e.req("to", |v, p| {
            assignment(
                &Obj::new(v, p, "an assignment object", &["assignee", "group"])?,
                true,
            )
        })?;
        Ok((after, to))
    })?;
    Ok(StepKind::Human(Box::new(HumanSpec {
        title,
        assign: assignment(&o, true)?,
        form,
        timeout: o.opt("timeout", read::duration)?,
        escalate,
    })))
}

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

fn http(v: &Value, path: &str) -> Result<super::HttpSpec> {
    let o = Obj::new(
        v,
        path,
        "an http object",
        &[
            "method", "url", "headers", "body", "success", "timeout", "breaker",
        ],
    )?;
    let template = |v: &Value, p: &str| {
        crate::expr::Template::parse(read::string(v, p)?).map_err(|e| error(p, e.to_string()))
    };
    let method = o
        .opt("method", |v, p| {
            let m = read::string(v, p)?.to_ascii_uppercase();
            if HTTP_METHODS.contains(&m.as_str()) {
                Ok(m)
            } else {
                Err(error(
                    p,
                    format!("unknown method `{m}`; allowed: {}", HTTP_METHODS.join(", ")),
                ))
            }
        })?
        .unwrap_or_else(|| "GET".to_string());
    let url = o.req("url", |v, p| {
        let t = template(v, p)?;
        let src = t.source();
        if !(src.starts_with("http://") || src.starts_with("https://") || src.starts_with('{')) {
            return Err(error(p, "the url must start with http:// or https://"));
        }
        Ok(t)
    })?;
    let headers = o
        .opt("headers", |v, p| {
            let map = v
                .as_object()
                .ok_or_else(|| read::expected(p, "an object of headers", v))?;
            map.iter()
                .map(|(k, v)| Ok((k.clone(), template(v, &field(p, k))?)))
                .collect::<Result<Vec<_>>>()
        })?
        .unwrap_or_default();
    let success = o
        .opt("success", |v, p| {
            read::array(v, p)?
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let n = read::uint(s, &index(p, i), 100)?;
                    u16::try_from(n)
                        .ok()
                        .filter(|n| *n < 600)
                        .ok_or_else(|| error(index(p, i), "an HTTP status is 100..=599"))
                })
                .collect::<Result<Vec<u16>>>()
        })?
        .unwrap_or_default();
    let breaker = o.opt("breaker", |v, p| {
        let b = Obj::new(
            v,
            p,
            "a breaker object",
            &[
                "consecutive_failures",
                "failure_ratio",
                "min_calls",
                "window",
                "cooldown",
            ],
        )?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(super::BreakerSpec {
            consecutive_failures: b.opt("consecutive_failures", |v, p| read::uint(v, p, 1))?,
            failure_ratio: b.opt("failure_ratio", |v, p| {
                let r = read::number(v, p)?;
                if r > 0.0 && r <= 1.0 {
                    Ok(r)
                } else {
                    Err(error(p, "failure_ratio is in (0, 1]"))
                }
            })?,
            min_calls: b.opt("min_calls", |v, p| read::uint(v, p, 1))?,
            window_ms: b.opt("window", read::duration)?.map(ms),
            cooldown_ms: b.opt("cooldown", read::duration)?.map(ms),
        })
    })?;
    Ok(super::HttpSpec {
        method,
        url,
        headers,
        body: o.opt("body", read::expr)?,
        success,
        timeout: o.opt("timeout", read::duration)?,
        breaker,
    })
}
