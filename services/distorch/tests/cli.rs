//! The `distorch` client commands, run as a user runs them (the real binary, its exit code,
//! stdout and stderr) against a real `distorch standalone`. Every definition here completes
//! or fails without a worker: `wait`, `signal` steps (with or without a timeout), and a task
//! no worker takes within its schedule-to-start timeout, which parks it.

mod common;

use common::{Server, tempdir};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one CLI invocation did.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn code(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `distorch <args>` with `DISTORCH_URL` pointing at `url`.
fn distorch(url: &str, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_distorch"))
        .args(args)
        .env("DISTORCH_URL", url)
        .env_remove("DISTORCH_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run distorch");
    Out {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The value of `KEY` in a `KEY  value` block (`workflow show` and the like).
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.strip_prefix(key)
            .filter(|rest| rest.starts_with("  "))
            .map(|rest| rest.trim().to_owned())
    })
}

/// Runs `distorch <args>` with `stdin` as its standard input.
fn distorch_stdin(url: &str, args: &[&str], stdin: &str) -> Out {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_distorch"))
        .args(args)
        .env("DISTORCH_URL", url)
        .env_remove("DISTORCH_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run distorch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for distorch");
    Out {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

/// Completes after a short wait, with output `{got: .input.x}`.
const QUICK: &str = "
name: quick
description: naps, then echoes input.x
output: '{got: .input.x}'
steps:
  - id: nap
    wait: 100ms
";

/// Fails: the signal it waits for never comes.
const IMPATIENT: &str = "
name: impatient
steps:
  - id: ack
    signal: {name: ack, timeout: 300ms}
";

/// Waits for signal `go`; its output is the payload's `ok`.
const GATED: &str = "
name: gated
output: '{approved: .steps.go.output.ok}'
steps:
  - id: go
    signal: {name: go}
";

/// No worker serves `cli-nobody`: the task times out before it starts and is parked.
const PARKING: &str = "
name: parking
steps:
  - id: charge
    task: charge-card
    queue: cli-nobody
    schedule_to_start_timeout: 200ms
    retry: {max_attempts: 1}
    on_failure: park
";

fn apply(url: &str, dir: &Path, name: &str, yaml: &str) {
    let file = write(dir, &format!("{name}.yaml"), yaml);
    distorch(url, &["definition", "apply", "-f", &file]).ok();
}

/// Starts a run of `definition` and returns its id.
fn start(url: &str, definition: &str) -> String {
    let out = distorch(url, &["workflow", "start", definition, "-o", "json"]).ok();
    out.json()["workflow_id"]
        .as_str()
        .expect("workflow_id")
        .to_owned()
}

/// `workflow show ID -o json`.
fn show(url: &str, id: &str) -> Value {
    distorch(url, &["workflow", "show", id, "-o", "json"])
        .ok()
        .json()
}

/// Shows the run until `pred` holds (30 s at most).
fn show_until(url: &str, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = show(url, id);
        if pred(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never held for {id}: {run}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_count(url: &str) -> usize {
    let out = distorch(url, &["workflow", "list", "-o", "json", "--limit", "1000"]).ok();
    out.json()["items"].as_array().expect("items").len()
}

#[test]
fn definitions_are_applied_from_files_then_listed_and_shown() {
    let data = tempdir();
    let server = Server::start(data.path());
    let url = &server.url;
    let files = tempdir();

    let yaml = write(files.path(), "quick.yaml", QUICK);
    let out = distorch(url, &["definition", "apply", "-f", &yaml]).ok();
    assert_eq!(out.stdout, "registered definition quick version 1\n");
    // Applying the same file again registers nothing.
    let out = distorch(url, &["definition", "apply", "-f", &yaml]).ok();
    assert_eq!(out.stdout, "definition quick version 1 unchanged\n");

    // JSON, by extension; and a file without extension that starts with `{`.
    let doc = json!({"name": "quick", "steps": [{"id": "nap", "wait": "50ms"}]});
    let json_file = write(files.path(), "quick.json", &doc.to_string());
    let out = distorch(
        url,
        &["definition", "apply", "-f", &json_file, "-o", "json"],
    )
    .ok();
    assert_eq!(
        out.json(),
        json!({"name": "quick", "version": 2, "unchanged": false})
    );
    let bare = write(
        files.path(),
        "other",
        &doc.to_string().replace("quick", "other"),
    );
    distorch(url, &["definition", "apply", "--file", &bare]).ok();

    let out = distorch(url, &["definition", "list"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("NAME "), "{}", out.stdout);
    assert!(
        lines[0].contains("LATEST  VERSIONS  DESCRIPTION"),
        "{}",
        out.stdout
    );
    let quick = lines
        .iter()
        .find(|l| l.starts_with("quick "))
        .expect("quick row");
    let cells: Vec<&str> = quick.split_whitespace().collect();
    assert_eq!(cells[..3], ["quick", "2", "1,2"], "{quick}");
    assert!(quick.ends_with("naps, then echoes input.x") || quick.ends_with('-'));

    let list = distorch(url, &["definition", "list", "-o", "json"])
        .ok()
        .json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"quick") && names.contains(&"other"),
        "{list}"
    );

    let latest = distorch(url, &["definition", "show", "quick", "-o", "json"])
        .ok()
        .json();
    assert_eq!(latest["version"], 2, "{latest}");
    assert_eq!(latest["definition"]["steps"][0]["wait"], "50ms", "{latest}");
    let first = distorch(
        url,
        &[
            "definition",
            "show",
            "quick",
            "--version",
            "1",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["definition"]["steps"][0]["wait"], "100ms", "{first}");
    let text = distorch(url, &["definition", "show", "quick", "--version", "1"]).ok();
    assert!(
        text.stdout.starts_with("NAME     quick\nVERSION  1\n"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("\"wait\": \"100ms\""),
        "{}",
        text.stdout
    );

    // `-f -` reads stdin: YAML unless it starts with `{`.
    let out = distorch_stdin(url, &["definition", "apply", "-f", "-"], GATED).ok();
    assert_eq!(out.stdout, "registered definition gated version 1\n");
    let doc = json!({"name": "gated", "steps": [{"id": "go", "signal": {"name": "go"}}]});
    let out = distorch_stdin(url, &["definition", "apply", "-f", "-"], &doc.to_string()).ok();
    assert_eq!(out.stdout, "registered definition gated version 2\n");

    let missing = distorch(url, &["definition", "show", "nope"]).code(2);
    assert!(missing.stdout.is_empty(), "{}", missing.stdout);
    assert!(
        missing.stderr.contains("Not Found (404)") && missing.stderr.contains("\"nope\""),
        "{}",
        missing.stderr
    );
    let missing = distorch(url, &["definition", "show", "quick", "--version", "9"]).code(2);
    assert!(
        missing.stderr.contains("no version 9"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_bad_definition_is_refused_with_the_api_problem_and_registers_nothing() {
    let data = tempdir();
    let server = Server::start(data.path());
    let url = &server.url;
    let files = tempdir();

    let bad_duration = "name: broken\nsteps:\n  - id: nap\n    wait: soon\n";
    let file = write(files.path(), "broken.yaml", bad_duration);
    let out = distorch(url, &["definition", "apply", "-f", &file]).code(2);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.starts_with("distorch: Bad Request (400): "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("steps[0]"),
        "the API's detail names the path: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Failure"),
        "no Rust debug dump: {}",
        out.stderr
    );

    let malformed = write(
        files.path(),
        "broken.json",
        "{\"name\": \"broken\", \"steps\": [",
    );
    let out = distorch(url, &["definition", "apply", "-f", &malformed]).code(2);
    assert!(out.stderr.contains("Bad Request (400)"), "{}", out.stderr);

    let nameless = write(files.path(), "nameless.yaml", "steps: []\n");
    let out = distorch(url, &["definition", "apply", "-f", &nameless]).code(2);
    assert!(out.stderr.contains("no `name`"), "{}", out.stderr);

    let out = distorch(url, &["definition", "apply", "-f", "/nonexistent/x.yaml"]).code(2);
    assert!(
        out.stderr
            .contains("cannot read definition file /nonexistent/x.yaml"),
        "{}",
        out.stderr
    );

    let out = distorch(url, &["definition", "list", "-o", "json"]).ok();
    assert_eq!(out.json(), json!({"items": []}));
    let out = distorch(url, &["definition", "list"]).ok();
    assert_eq!(out.stdout, "no definitions registered\n");
}

#[test]
fn start_with_an_input_file_and_wait_prints_the_completed_run() {
    let data = tempdir();
    let server = Server::start(data.path());
    let url = &server.url;
    let files = tempdir();
    apply(url, files.path(), "quick", QUICK);
    let input = write(files.path(), "input.json", r#"{"x": 42}"#);

    let arg = format!("@{input}");
    let out = distorch(
        url,
        &[
            "workflow", "start", "quick", "--input", &arg, "--wait", "-o", "json",
        ],
    )
    .ok();
    let run = out.json();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["input"], json!({"x": 42}), "{run}");
    assert_eq!(run["output"], json!({"got": 42}), "{run}");
    let id = run["workflow_id"].as_str().unwrap().to_owned();

    // The table form: the run's fields on stdout, the start on stderr.
    let out = distorch(
        url,
        &[
            "workflow",
            "start",
            "quick",
            "--input",
            r#"{"x": "hi"}"#,
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .ok();
    assert!(out.stderr.starts_with("started run "), "{}", out.stderr);
    assert_eq!(field(&out.stdout, "STATUS").as_deref(), Some("completed"));
    assert_eq!(
        field(&out.stdout, "OUTPUT").as_deref(),
        Some(r#"{"got":"hi"}"#)
    );

    // `--input @-` reads stdin.
    let out = distorch_stdin(
        url,
        &[
            "workflow", "start", "quick", "--input", "@-", "--wait", "-o", "json",
        ],
        r#"{"x": [1, 2]}"#,
    )
    .ok();
    assert_eq!(out.json()["output"], json!({"got": [1, 2]}));

    // `wait` on a run that already ended answers at once.
    let out = distorch(url, &["workflow", "wait", &id]).ok();
    assert_eq!(field(&out.stdout, "WORKFLOW ID"), Some(id.clone()));

    // The same idempotency key names the same run, and the CLI says so.
    let first = distorch(
        url,
        &["workflow", "start", "quick", "--idempotency-key", "order-7"],
    )
    .ok();
    assert!(first.stdout.starts_with("started run "), "{}", first.stdout);
    let again = distorch(
        url,
        &[
            "workflow",
            "start",
            "quick",
            "--idempotency-key",
            "order-7",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    let repeated = distorch(
        url,
        &["workflow", "start", "quick", "--idempotency-key", "order-7"],
    )
    .ok();
    let again_id = again["workflow_id"].as_str().unwrap();
    assert!(
        first.stdout.contains(again_id),
        "{} vs {again}",
        first.stdout
    );
    assert!(
        repeated
            .stdout
            .starts_with(&format!("run {again_id} already exists (")),
        "{}",
        repeated.stdout
    );

    // A caller-chosen id.
    let chosen = "0190a5e2-0000-7000-8000-000000000001";
    let out = distorch(
        url,
        &[
            "workflow",
            "start",
            "quick",
            "--workflow-id",
            chosen,
            "-o",
            "json",
        ],
    )
    .ok();
    assert_eq!(out.json()["workflow_id"], chosen);

    // History, as a table and as the API's JSON.
    let out = distorch(url, &["workflow", "history", &id]).ok();
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(header.starts_with("SEQ  TIME"), "{}", out.stdout);
    assert!(out.stdout.contains("workflow_started"), "{}", out.stdout);
    assert!(out.stdout.contains("workflow_completed"), "{}", out.stdout);
    let events = distorch(url, &["workflow", "history", &id, "-o", "json"])
        .ok()
        .json();
    let events = events["events"].as_array().expect("events");
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["type"], "workflow_started");
}

#[test]
fn wait_exits_1_for_runs_that_fail_or_are_cancelled_and_4_on_timeout() {
    let data = tempdir();
    let server = Server::start(data.path());
    let url = &server.url;
    let files = tempdir();
    apply(url, files.path(), "impatient", IMPATIENT);
    apply(url, files.path(), "gated", GATED);

    let out = distorch(url, &["workflow", "start", "impatient", "--wait"]).code(1);
    assert_eq!(field(&out.stdout, "STATUS").as_deref(), Some("failed"));
    assert!(out.stdout.contains("timeout.signal"), "{}", out.stdout);
    let failed = field(&out.stdout, "WORKFLOW ID").expect("run id");
    let out = distorch(url, &["workflow", "wait", &failed, "-o", "json"]).code(1);
    assert_eq!(out.json()["status"], "failed");

    // A run that has not ended: `--timeout` gives up with 4 and says it goes on.
    let gated = start(url, "gated");
    let begun = Instant::now();
    let out = distorch(url, &["workflow", "wait", &gated, "--timeout", "300ms"]).code(4);
    assert!(begun.elapsed() < Duration::from_secs(10));
    assert_eq!(field(&out.stdout, "STATUS").as_deref(), Some("running"));
    assert!(
        out.stderr
            .contains(&format!("run {gated} is still running after 300ms")),
        "{}",
        out.stderr
    );

    distorch(url, &["workflow", "cancel", &gated]).ok();
    let out = distorch(url, &["workflow", "wait", &gated, "-o", "json"]).code(1);
    assert_eq!(out.json()["status"], "cancelled");
}

#[test]
fn list_filters_by_status_and_definition() {
    let data = tempdir();
    let server = Server::start(data.path());
    let url = &server.url;
    let files = tempdir();
    apply(url, files.path(), "quick", QUICK);
    apply(url, files.path(), "gated", GATED);

    let done = distorch(url, &["workflow", "start", "quick", "--wait", "-o", "json"])
        .ok()
        .json()["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = start(url, "gated");

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["workflow", "list", "-o", "json"];
        all.extend_from_slice(args);
        let page = distorch(url, &all).ok().json();
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["workflow_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&["--status", "completed"]), [done.as_str()]);
    assert_eq!(ids(&["--status", "running"]), [waiting.as_str()]);
    assert_eq!(ids(&["--definition", "gated"]), [waiting.as_str()]);
    assert!(ids(&["--status", "failed"]).is_empty());
    assert_eq!(ids(&[]).len(), 2);

    let out = distorch(url, &["workflow", "list", "--status", "running"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with("WORKFLOW ID") && lines[0].contains("DEFINITION  VERSION  STATUS"),
        "{}",
        out.stdout
    );
    assert!(lines[1].starts_with(&waiting), "{}", out.stdout);
    assert!(
        lines[1].contains(" gated ") && lines[1].contains(" running "),
        "{}",
        out.stdout
    );
    let out = distorch(url, &["workflow", "list", "--status", "failed"]).ok();
    assert_eq!(out.stdout, "no runs\n");

    // Paging: one run per page, the next cursor on stderr.
    let out = distorch(url, &["workflow", "list", "--limit", "1"]).ok();
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    let cursor = out
        .stderr
        .trim()
        .strip_prefix("more runs: add --cursor ")
        .unwrap_or_else(|| panic!("no cursor hint: {}", out.stderr))
        .to_owned();
    let next = ids(&["--limit", "1", "--cursor", &cursor]);
    assert_eq!(next.len(), 1);
    assert_ne!(next, ids(&["--limit", "1"]));

    // An unknown status is a usage error, caught before anything is sent.
    let out = distorch(url, &["workflow", "list", "--status", "sleeping"]).code(2);
    assert!(out.stderr.contains("possible values"), "{}", out.stderr);
}

#[test]
fn pause_resume_signal_and_cancel_change_the_run() {
    let data = tempdir();
    let server = Server::start(data.path());
    let url = &server.url;
    let files = tempdir();
    apply(url, files.path(), "gated", GATED);

    let id = start(url, "gated");
    assert_eq!(show(url, &id)["status"], "running");

    let out = distorch(url, &["workflow", "pause", &id]).ok();
    assert_eq!(out.stdout, format!("run {id}: paused\n"));
    assert_eq!(show(url, &id)["status"], "paused");
    let out = distorch(url, &["workflow", "pause", &id]).code(2);
    assert!(out.stderr.contains("Conflict (409)"), "{}", out.stderr);

    let out = distorch(url, &["workflow", "resume", &id, "-o", "json"]).ok();
    assert_eq!(out.json(), json!({"workflow_id": id, "status": "running"}));
    assert_eq!(show(url, &id)["status"], "running");

    let payload = write(files.path(), "payload.json", r#"{"ok": true}"#);
    let arg = format!("@{payload}");
    let out = distorch(url, &["workflow", "signal", &id, "go", "--payload", &arg]).ok();
    assert_eq!(out.stdout, format!("signal go delivered to run {id}\n"));
    let run = show_until(url, &id, "completed", |r| r["status"] == "completed");
    assert_eq!(run["output"], json!({"approved": true}), "{run}");
    let out = distorch(url, &["workflow", "signal", &id, "go"]).code(2);
    assert!(out.stderr.contains("Conflict (409)"), "{}", out.stderr);

    // Cancel, with a reason that the history keeps.
    let other = start(url, "gated");
    let out = distorch(
        url,
        &[
            "workflow",
            "cancel",
            &other,
            "--reason",
            "customer changed their mind",
        ],
    )
    .ok();
    assert_eq!(out.stdout, format!("run {other}: cancelled\n"));
    assert_eq!(show(url, &other)["status"], "cancelled");
    let history = distorch(url, &["workflow", "history", &other, "-o", "json"])
        .ok()
        .stdout;
    assert!(history.contains("customer changed their mind"), "{history}");
    let out = distorch(url, &["workflow", "cancel", &other, "--compensate"]).code(2);
    assert!(out.stderr.contains("Conflict (409)"), "{}", out.stderr);

    // Unknown and malformed ids are refusals (2), not server trouble.
    let unknown = "0190a5e2-0000-7000-8000-00000000abcd";
    let out = distorch(url, &["workflow", "show", unknown]).code(2);
    assert!(out.stderr.contains("Not Found (404)"), "{}", out.stderr);
    let out = distorch(url, &["workflow", "pause", "not-a-uuid"]).code(2);
    assert!(out.stderr.contains("Bad Request (400)"), "{}", out.stderr);
    assert!(out.stderr.contains("not a workflow id"), "{}", out.stderr);
}

#[test]
fn parked_tasks_are_listed_in_the_dlq_and_redriven_or_skipped() {
    let data = tempdir();
    let server = Server::start(data.path());
    let url = &server.url;
    let files = tempdir();
    apply(url, files.path(), "parking", PARKING);

    let id = start(url, "parking");
    let run = show_until(url, &id, "parked", |r| r["status"] == "parked");
    let task = run["tasks"][0]["task_id"].as_str().unwrap().to_owned();

    let dlq = distorch(url, &["dlq", "list", "-o", "json"]).ok().json();
    assert_eq!(dlq["items"][0]["task_id"], task, "{dlq}");
    let out = distorch(url, &["dlq", "list"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("TASK ID"), "{}", out.stdout);
    assert!(lines[1].starts_with(&task), "{}", out.stdout);
    assert!(lines[1].contains("charge-card"), "{}", out.stdout);
    assert!(
        lines[1].contains("timeout.schedule_to_start"),
        "{}",
        out.stdout
    );

    let shown = distorch(url, &["task", "show", &task]).ok();
    assert!(shown.stdout.contains("(parked)"), "{}", shown.stdout);

    // Redrive: a fresh attempt, which parks again once nobody takes it.
    let out = distorch(url, &["dlq", "redrive", &task]).ok();
    assert!(
        out.stdout
            .starts_with(&format!("task {task} of run {id}: ")),
        "{}",
        out.stdout
    );
    show_until(url, &id, "a second attempt parked", |r| {
        r["status"] == "parked" && r["tasks"][0]["attempt"].as_u64() >= Some(2)
    });

    // Skip with an output: the run goes on and completes with it.
    let out = distorch(
        url,
        &[
            "task",
            "skip",
            &task,
            "--output",
            r#"{"charged": false}"#,
            "-o",
            "json",
        ],
    )
    .ok();
    assert_eq!(out.json()["task_id"], task);
    let out = distorch(
        url,
        &["workflow", "wait", &id, "--timeout", "30s", "-o", "json"],
    )
    .ok();
    let run = out.json();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        run["output"],
        json!({"charge": {"charged": false}}),
        "{run}"
    );
    assert_eq!(
        distorch(url, &["dlq", "list"]).ok().stdout,
        "the dead-letter queue is empty\n"
    );

    // Retrying a task that is done is refused.
    let out = distorch(url, &["task", "retry", &task]).code(2);
    assert!(out.stderr.contains("Conflict (409)"), "{}", out.stderr);
    let out = distorch(url, &["task", "retry", "nope"]).code(2);
    assert!(out.stderr.contains("not a task id"), "{}", out.stderr);
}

#[test]
fn bad_json_arguments_exit_2_and_change_nothing() {
    let data = tempdir();
    let server = Server::start(data.path());
    let url = &server.url;
    let files = tempdir();
    apply(url, files.path(), "quick", QUICK);
    apply(url, files.path(), "gated", GATED);
    let waiting = start(url, "gated");
    let before = run_count(url);

    let out = distorch(url, &["workflow", "start", "quick", "--input", "{\"x\": }"]).code(2);
    assert!(
        out.stderr.contains("--input is not valid JSON") && out.stderr.contains("line 1 column 7"),
        "{}",
        out.stderr
    );
    let bad = write(files.path(), "bad.json", "{oops");
    let arg = format!("@{bad}");
    let out = distorch(url, &["workflow", "start", "quick", "--input", &arg]).code(2);
    assert!(
        out.stderr.contains(&format!("(from {bad})")),
        "{}",
        out.stderr
    );
    let out = distorch(
        url,
        &[
            "workflow",
            "start",
            "quick",
            "--input",
            "@/nonexistent.json",
        ],
    )
    .code(2);
    assert!(
        out.stderr.contains("cannot read /nonexistent.json"),
        "{}",
        out.stderr
    );
    let out = distorch(
        url,
        &["workflow", "signal", &waiting, "go", "--payload", "[1,"],
    )
    .code(2);
    assert!(
        out.stderr.contains("--payload is not valid JSON"),
        "{}",
        out.stderr
    );

    // Refused by the API: an unknown definition, a malformed run id.
    let out = distorch(url, &["workflow", "start", "nope"]).code(2);
    assert!(out.stderr.contains("Not Found (404)"), "{}", out.stderr);
    let out = distorch(url, &["workflow", "start", "quick", "--workflow-id", "x"]).code(2);
    assert!(out.stderr.contains("Bad Request (400)"), "{}", out.stderr);

    assert_eq!(run_count(url), before, "no run was started");
    assert_eq!(
        show(url, &waiting)["status"],
        "running",
        "no signal was sent"
    );
}

#[test]
fn an_unreachable_server_exits_3_with_a_clear_message() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["workflow", "list"][..],
        &["definition", "list", "-o", "json"],
        &["dlq", "list"],
        &["task", "retry", "x.1"],
    ] {
        let out = distorch(&url, args).code(3);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.starts_with(&format!(
                "distorch: cannot reach the DisTorch API at {url}: cannot connect: "
            )),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("--url or DISTORCH_URL"),
            "{}",
            out.stderr
        );
    }
    // --url wins over DISTORCH_URL.
    let out = distorch("http://127.0.0.1:1", &["workflow", "list", "--url", &url]).code(3);
    assert!(out.stderr.contains(&url), "{}", out.stderr);
    let out = distorch(&url, &["workflow", "list", "--url", "https://example.test"]).code(2);
    assert!(out.stderr.contains("plain HTTP only"), "{}", out.stderr);
}

#[test]
fn completions_print_scripts_and_usage_errors_exit_2() {
    let nowhere = "http://127.0.0.1:1";
    let out = distorch(nowhere, &["completion", "bash"]).ok();
    assert!(out.stdout.contains("_distorch()"), "{}", out.stdout);
    assert!(
        out.stdout.contains("complete -F _distorch"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("workflow") && out.stdout.contains("standalone"));
    let out = distorch(nowhere, &["completion", "zsh"]).ok();
    assert!(
        out.stdout.starts_with("#compdef distorch"),
        "{}",
        out.stdout
    );
    let out = distorch(nowhere, &["completion", "fish"]).ok();
    assert!(
        out.stdout.contains("complete -c distorch"),
        "{}",
        out.stdout
    );
    distorch(nowhere, &["completion", "tcsh"]).code(2);

    // clap's usage errors, before anything is sent.
    for args in [
        &["workflow"][..],
        &["workflow", "start"],
        &["workflow", "frobnicate"],
        &["workflow", "wait", "x", "--timeout", "soon"],
        &["workflow", "start", "q", "--timeout", "5s"],
        &[
            "workflow",
            "start",
            "q",
            "--workflow-id",
            "a",
            "--idempotency-key",
            "b",
        ],
        &["definition", "apply"],
        &["dlq", "list", "-o", "yaml"],
    ] {
        let out = distorch(nowhere, args).code(2);
        assert!(!out.stderr.is_empty(), "{args:?}");
    }

    // The server subcommands are still there, next to the client ones.
    let help = distorch(nowhere, &["--help"]).ok().stdout;
    for cmd in [
        "standalone",
        "api",
        "engine",
        "saga",
        "projector",
        "migrate",
        "workflow",
        "dlq",
    ] {
        assert!(help.contains(&format!("\n  {cmd} ")), "{cmd} in:\n{help}");
    }
}
