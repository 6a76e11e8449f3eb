//! Human-readable output: aligned tables and `KEY  value` blocks, built from the API's JSON.
//! Pure: every function takes the JSON body and returns text. An absent field and a `null`
//! one read alike (`-`), so the renderers do not depend on how the server serialises `None`.

use super::outcome::shorten;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// Widest a free-text cell (an error, a payload) gets in a table.
const WIDE_CELL: usize = 60;
/// Widest an input or output gets in a run's details.
const WIDE_FIELD: usize = 200;

/// A table with a header row; columns are left-aligned and two spaces apart.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; control characters (newlines, tabs) become spaces so a row stays a line.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "one cell per column");
        self.rows
            .push(cells.into_iter().map(|c| one_line(&c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `KEY  value` lines with the values aligned; `None` values are left out.
fn fields(pairs: &[(&str, Option<String>)]) -> String {
    let width = pairs
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        if let Some(value) = value {
            let _ = writeln!(out, "{key:<width$}  {}", one_line(value));
        }
    }
    out
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The field `key` of `v`; `None` when absent or `null`.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A scalar as text (strings without quotes), anything else as compact JSON; `-` for
/// absent or null.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

fn text(v: &Value, key: &str) -> String {
    cell(get(v, key))
}

/// Compact JSON of a present, non-null field, cut to `max` characters.
fn json_field(v: &Value, key: &str, max: usize) -> Option<String> {
    get(v, key).map(|x| shorten(&x.to_string(), max))
}

/// A failure as `type: message` (the message left out when empty).
pub fn failure(v: Option<&Value>) -> String {
    let Some(err) = v.filter(|e| !e.is_null()) else {
        return "-".into();
    };
    let kind = text(err, "type");
    match get(err, "message").and_then(Value::as_str) {
        Some(msg) if !msg.is_empty() => format!("{kind}: {msg}"),
        _ => kind,
    }
}

fn items(v: &Value) -> &[Value] {
    get(v, "items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A table, or `none` when it has no rows.
fn table_or(table: Table, none: &str) -> String {
    if table.is_empty() {
        format!("{none}\n")
    } else {
        table.render()
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn epoch_ms(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => cell(Some(ms)),
    }
}

/// Re-indents valid JSON text as `serde_json::to_string_pretty` would (two spaces, `"k": v`,
/// `{}` and `[]` when empty), but keeps the text as it is otherwise: the server's key order
/// (a `serde_json::Value` would sort the keys) and its number and string spellings.
pub fn pretty_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = 0usize;
    let mut chars = raw.trim().chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                let mut escaped = false;
                for s in chars.by_ref() {
                    out.push(s);
                    match (escaped, s) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

// ---- definitions ----

/// `POST /definitions` → `{"name","version","unchanged"}`.
pub fn registered(v: &Value) -> String {
    let (name, version) = (text(v, "name"), text(v, "version"));
    if v["unchanged"] == true {
        format!("definition {name} version {version} unchanged\n")
    } else {
        format!("registered definition {name} version {version}\n")
    }
}

/// `GET /definitions` → `{"items":[{"name","latest_version","versions","description"}]}`.
pub fn definitions(v: &Value) -> String {
    let mut table = Table::new(&["NAME", "LATEST", "VERSIONS", "DESCRIPTION"]);
    for d in items(v) {
        let versions = get(d, "versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .map(|x| cell(Some(x)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "-".into());
        table.row(vec![
            text(d, "name"),
            text(d, "latest_version"),
            versions,
            shorten(&text(d, "description"), WIDE_CELL),
        ]);
    }
    table_or(table, "no definitions registered")
}

/// `GET /definitions/{name}[/versions/{v}]` → `{"name","version","definition"}`.
pub fn definition(v: &Value) -> String {
    let mut out = fields(&[
        ("NAME", Some(text(v, "name"))),
        ("VERSION", Some(text(v, "version"))),
    ]);
    if let Some(doc) = get(v, "definition") {
        out.push('\n');
        out.push_str(&serde_json::to_string_pretty(doc).unwrap_or_default());
        out.push('\n');
    }
    out
}

// ---- runs ----

/// `POST /workflows` → `{"workflow_id","status"}`; `existing` when it answered 200.
pub fn started(v: &Value, existing: bool) -> String {
    let id = text(v, "workflow_id");
    let status = text(v, "status");
    if existing {
        format!("run {id} already exists ({status})\n")
    } else {
        format!("started run {id} ({status})\n")
    }
}

/// `GET /workflows` → `{"items":[...],"next_cursor"}`.
pub fn workflows(v: &Value) -> String {
    let mut table = Table::new(&[
        "WORKFLOW ID",
        "DEFINITION",
        "VERSION",
        "STATUS",
        "CREATED",
        "UPDATED",
    ]);
    for w in items(v) {
        table.row(vec![
            text(w, "workflow_id"),
            text(w, "definition"),
            text(w, "version"),
            text(w, "status"),
            text(w, "created_at"),
            text(w, "updated_at"),
        ]);
    }
    table_or(table, "no runs")
}

/// The cursor of the next page of a listing, if there is one.
pub fn next_cursor(v: &Value) -> Option<String> {
    get(v, "next_cursor")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
}

/// `GET /workflows/{id}`: the run's fields, then its tasks.
pub fn workflow(v: &Value) -> String {
    let current = get(v, "current_steps")
        .and_then(Value::as_array)
        .filter(|steps| !steps.is_empty())
        .map(|steps| {
            steps
                .iter()
                .map(|s| cell(Some(s)))
                .collect::<Vec<_>>()
                .join(", ")
        });
    let sla = get(v, "sla")
        .and_then(Value::as_array)
        .filter(|alerts| !alerts.is_empty())
        .map(|alerts| {
            alerts
                .iter()
                .map(|a| {
                    let on = get(a, "step_key").map_or("run".into(), |s| cell(Some(s)));
                    format!("{} on {on} at {}", text(a, "kind"), text(a, "at"))
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
    let mut out = fields(&[
        ("WORKFLOW ID", Some(text(v, "workflow_id"))),
        (
            "DEFINITION",
            Some(format!("{} v{}", text(v, "definition"), text(v, "version"))),
        ),
        ("STATUS", Some(text(v, "status"))),
        ("CREATED", Some(text(v, "created_at"))),
        ("UPDATED", Some(text(v, "updated_at"))),
        (
            "PARENT",
            get(v, "parent_workflow_id").map(|p| cell(Some(p))),
        ),
        ("CURRENT STEPS", current),
        ("ERROR", get(v, "error").map(|e| failure(Some(e)))),
        ("INPUT", json_field(v, "input", WIDE_FIELD)),
        ("OUTPUT", json_field(v, "output", WIDE_FIELD)),
        ("SLA", sla),
    ]);
    let tasks = get(v, "tasks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !tasks.is_empty() {
        let mut table = Table::new(&[
            "TASK ID", "STEP", "KIND", "TASK", "STATUS", "ATTEMPT", "ERROR",
        ]);
        for t in tasks {
            table.row(vec![
                text(t, "task_id"),
                get(t, "step_key")
                    .or_else(|| get(t, "step_id"))
                    .map_or("-".into(), |s| cell(Some(s))),
                text(t, "kind"),
                text(t, "task"),
                task_status(t),
                text(t, "attempt"),
                shorten(&failure(get(t, "error")), WIDE_CELL),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

/// A task's status, with `(parked)` when it waits in the dead-letter queue.
fn task_status(t: &Value) -> String {
    let status = text(t, "status");
    if get(t, "parked").and_then(Value::as_bool) == Some(true) {
        format!("{status} (parked)")
    } else {
        status
    }
}

/// Envelope fields shown in their own columns, not in DETAILS.
const ENVELOPE: [&str; 6] = ["workflow_id", "seq", "at_ms", "type", "v", "command_id"];

/// `GET /workflows/{id}/history` → `{"events":[...]}`.
pub fn history(v: &Value) -> String {
    let mut table = Table::new(&["SEQ", "TIME", "TYPE", "DETAILS"]);
    let events = get(v, "events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in events {
        let details: serde_json::Map<String, Value> = e
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, x)| !ENVELOPE.contains(&k.as_str()) && !x.is_null())
                    .map(|(k, x)| (k.clone(), x.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let details = if details.is_empty() {
            "-".into()
        } else {
            shorten(&Value::Object(details).to_string(), WIDE_CELL + 20)
        };
        table.row(vec![
            text(e, "seq"),
            get(e, "at_ms").map_or("-".into(), epoch_ms),
            text(e, "type"),
            details,
        ]);
    }
    table_or(table, "no events")
}

/// `POST /workflows/{id}/cancel|pause|resume` → `{"workflow_id","status"}` (status `null`
/// on a 202: applied, but the read model had not caught up).
pub fn run_status(v: &Value) -> String {
    let id = text(v, "workflow_id");
    match get(v, "status") {
        Some(status) => format!("run {id}: {}\n", cell(Some(status))),
        None => format!("run {id}: accepted (its new status is not readable yet)\n"),
    }
}

/// `POST /workflows/{id}/signals/{name}` → `{"workflow_id","signal"}`.
pub fn signal_sent(v: &Value) -> String {
    format!(
        "signal {} delivered to run {}\n",
        text(v, "signal"),
        text(v, "workflow_id")
    )
}

// ---- tasks and dead letters ----

/// `POST /tasks/{id}/retry|skip` → `{"task_id","workflow_id","status"}`.
pub fn task_action(v: &Value) -> String {
    let id = text(v, "task_id");
    let run = text(v, "workflow_id");
    match get(v, "status") {
        Some(status) => format!("task {id} of run {run}: {}\n", cell(Some(status))),
        None => format!("task {id} of run {run}: accepted (its new status is not readable yet)\n"),
    }
}

/// `GET /tasks/{id}`.
pub fn task(v: &Value) -> String {
    fields(&[
        ("TASK ID", Some(text(v, "task_id"))),
        ("WORKFLOW ID", Some(text(v, "workflow_id"))),
        (
            "STEP",
            Some(
                get(v, "step_key")
                    .or_else(|| get(v, "step_id"))
                    .map_or("-".into(), |s| cell(Some(s))),
            ),
        ),
        ("KIND", Some(text(v, "kind"))),
        ("TASK", Some(text(v, "task"))),
        ("QUEUE", Some(text(v, "queue"))),
        ("STATUS", Some(task_status(v))),
        ("ATTEMPT", Some(text(v, "attempt"))),
        ("WORKER", get(v, "worker_id").map(|w| cell(Some(w)))),
        ("SCHEDULED", Some(text(v, "scheduled_at"))),
        ("STARTED", get(v, "started_at").map(|s| cell(Some(s)))),
        ("FINISHED", get(v, "finished_at").map(|s| cell(Some(s)))),
        ("ERROR", get(v, "error").map(|e| failure(Some(e)))),
        ("INPUT", json_field(v, "input", WIDE_FIELD)),
        ("OUTPUT", json_field(v, "output", WIDE_FIELD)),
    ])
}

/// `GET /dlq` → `{"items":[{"task_id","workflow_id","step_id","task","attempts","error","input"}]}`.
pub fn dead_letters(v: &Value) -> String {
    let mut table = Table::new(&[
        "TASK ID",
        "WORKFLOW ID",
        "STEP",
        "TASK",
        "ATTEMPTS",
        "ERROR",
    ]);
    for d in items(v) {
        table.row(vec![
            text(d, "task_id"),
            text(d, "workflow_id"),
            text(d, "step_id"),
            text(d, "task"),
            text(d, "attempts"),
            shorten(&failure(get(d, "error")), WIDE_CELL),
        ]);
    }
    table_or(table, "the dead-letter queue is empty")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pretty_json_matches_serde_json_and_keeps_the_key_order() {
        let compact = r#"{"z":1,"a":{"nested":[1,2.50,{"k":"v, with: \"quotes\" {[ ]}"}],"empty":{},"none":[ ]},"b":null,"e":"\\"}"#;
        let pretty = pretty_json(compact);
        let value: Value = serde_json::from_str(compact).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&pretty).unwrap(), value);
        assert!(
            pretty.starts_with(
                "{\n  \"z\": 1,\n  \"a\": {\n    \"nested\": [\n      1,\n      2.50,"
            ),
            "{pretty}"
        );
        assert!(
            pretty.contains("\"empty\": {},\n    \"none\": []\n  },"),
            "{pretty}"
        );
        assert!(pretty.ends_with("\"e\": \"\\\\\"\n}"), "{pretty}");
        // Apart from key order and number spelling, the very text serde_json writes.
        let sorted = r#"{"a":{"empty":{},"list":[true,"x"]},"b":[],"c":"d"}"#;
        let value: Value = serde_json::from_str(sorted).unwrap();
        assert_eq!(
            pretty_json(sorted),
            serde_json::to_string_pretty(&value).unwrap()
        );
        assert_eq!(pretty_json(" 42 "), "42");
        assert_eq!(pretty_json("[]"), "[]");
    }

    #[test]
    fn a_table_aligns_columns_two_spaces_apart_without_trailing_blanks() {
        let mut t = Table::new(&["ID", "STATUS", "NOTE"]);
        t.row(vec!["a".into(), "running".into(), "x".into()]);
        t.row(vec!["abcdef".into(), "ok".into(), String::new()]);
        assert_eq!(
            t.render(),
            "ID      STATUS   NOTE\n\
             a       running  x\n\
             abcdef  ok\n"
        );
    }

    #[test]
    fn a_table_measures_characters_and_flattens_newlines() {
        let mut t = Table::new(&["K", "V"]);
        t.row(vec!["é".into(), "one\ntwo".into()]);
        t.row(vec!["ab".into(), "z".into()]);
        assert_eq!(t.render(), "K   V\né   one two\nab  z\n");
    }

    #[test]
    fn null_and_absent_fields_read_alike() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&Value::Null)), "-");
        assert_eq!(cell(Some(&json!("s"))), "s");
        assert_eq!(cell(Some(&json!(3))), "3");
        assert_eq!(cell(Some(&json!({"a": 1}))), r#"{"a":1}"#);
        let with_null = json!({"workflow_id": "w", "status": null});
        let without = json!({"workflow_id": "w"});
        assert_eq!(run_status(&with_null), run_status(&without));
        assert!(run_status(&without).contains("accepted"));
        assert_eq!(
            workflow(&json!({"workflow_id": "w", "error": null, "tasks": null})),
            workflow(&json!({"workflow_id": "w"}))
        );
    }

    #[test]
    fn failures_show_type_and_message() {
        let e = json!({"type": "timeout.signal", "message": "no signal", "retryable": false});
        assert_eq!(failure(Some(&e)), "timeout.signal: no signal");
        assert_eq!(failure(Some(&json!({"type": "x", "message": ""}))), "x");
        assert_eq!(failure(Some(&Value::Null)), "-");
        assert_eq!(failure(None), "-");
    }

    #[test]
    fn definitions_list_as_a_table() {
        let v = json!({"items": [
            {"name": "orders", "latest_version": 2, "versions": [1, 2], "description": "ship"},
            {"name": "q", "latest_version": 1, "versions": [1]}
        ]});
        assert_eq!(
            definitions(&v),
            "NAME    LATEST  VERSIONS  DESCRIPTION\n\
             orders  2       1,2       ship\n\
             q       1       1         -\n"
        );
        assert_eq!(
            definitions(&json!({"items": []})),
            "no definitions registered\n"
        );
    }

    #[test]
    fn a_run_shows_its_fields_and_tasks() {
        let v = json!({
            "workflow_id": "0190", "definition": "orders", "version": 3, "status": "parked",
            "input": {"id": 7}, "output": null, "error": null,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:01Z",
            "current_steps": ["charge"], "last_seq": 9, "parent_workflow_id": null, "sla": [],
            "tasks": [{
                "task_id": "0190.1", "step_id": "charge", "step_key": "charge", "kind": "step",
                "task": "charge-card", "queue": "pay", "status": "failed", "attempt": 3,
                "parked": true, "error": {"type": "declined", "message": "card declined"}
            }]
        });
        let text = workflow(&v);
        assert!(
            text.starts_with(
                "WORKFLOW ID    0190\nDEFINITION     orders v3\nSTATUS         parked\n"
            ),
            "{text}"
        );
        assert!(text.contains("CURRENT STEPS  charge\n"), "{text}");
        assert!(text.contains("INPUT          {\"id\":7}\n"), "{text}");
        assert!(!text.contains("OUTPUT"), "{text}");
        assert!(!text.contains("PARENT"), "{text}");
        assert!(
            text.contains(
                "\nTASK ID  STEP    KIND  TASK         STATUS           ATTEMPT  ERROR\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "0190.1   charge  step  charge-card  failed (parked)  3        declined: card declined\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn history_puts_the_event_fields_in_details() {
        let v = json!({"events": [
            {"workflow_id": "w", "seq": 1, "at_ms": 0, "v": 1, "type": "workflow_started",
             "definition": "q", "input": null},
            {"workflow_id": "w", "seq": 2, "at_ms": 1500, "type": "workflow_completed"}
        ]});
        assert_eq!(
            history(&v),
            "SEQ  TIME                      TYPE                DETAILS\n\
             1    1970-01-01T00:00:00.000Z  workflow_started    {\"definition\":\"q\"}\n\
             2    1970-01-01T00:00:01.500Z  workflow_completed  -\n"
        );
    }

    #[test]
    fn verbs_and_lists_read_as_sentences_or_tables() {
        assert_eq!(
            registered(&json!({"name": "q", "version": 2})),
            "registered definition q version 2\n"
        );
        assert_eq!(
            registered(&json!({"name": "q", "version": 2, "unchanged": true})),
            "definition q version 2 unchanged\n"
        );
        assert_eq!(
            started(&json!({"workflow_id": "w", "status": "running"}), false),
            "started run w (running)\n"
        );
        assert_eq!(
            started(&json!({"workflow_id": "w", "status": "completed"}), true),
            "run w already exists (completed)\n"
        );
        assert_eq!(
            run_status(&json!({"workflow_id": "w", "status": "paused"})),
            "run w: paused\n"
        );
        assert_eq!(
            signal_sent(&json!({"workflow_id": "w", "signal": "go"})),
            "signal go delivered to run w\n"
        );
        assert_eq!(
            task_action(&json!({"task_id": "w.1", "workflow_id": "w", "status": "skipped"})),
            "task w.1 of run w: skipped\n"
        );
        assert_eq!(
            dead_letters(&json!({"items": []})),
            "the dead-letter queue is empty\n"
        );
        let page = json!({"items": [{"workflow_id": "w", "definition": "q", "version": 1,
            "status": "completed", "created_at": "c", "updated_at": "u"}], "next_cursor": "abc"});
        assert_eq!(
            workflows(&page),
            "WORKFLOW ID  DEFINITION  VERSION  STATUS     CREATED  UPDATED\n\
             w            q           1        completed  c        u\n"
        );
        assert_eq!(next_cursor(&page).as_deref(), Some("abc"));
        assert_eq!(
            next_cursor(&json!({"items": [], "next_cursor": null})),
            None
        );
        assert_eq!(next_cursor(&json!({"items": []})), None);
    }
}
