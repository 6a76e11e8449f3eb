//! Test harness: starts the real `distorch standalone` binary on port 0 and talks to it over
//! HTTP as a user would.
#![allow(dead_code)]

pub mod kafka;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `distorch standalone` on a free port with its data in `data_dir`.
    pub fn start(data_dir: &Path) -> Server {
        Self::spawn(data_dir, None)
    }

    /// Starts the binary, optionally with `--config`, and reads the port it printed.
    fn spawn(data_dir: &Path, config: Option<&Path>) -> Server {
        let mut args: Vec<std::ffi::OsString> =
            vec!["standalone".into(), "--listen".into(), "127.0.0.1:0".into()];
        args.push("--data-dir".into());
        args.push(data_dir.into());
        Self::run("standalone", config, &args, data_dir)
    }

    /// Starts `distorch <role>` (`api`, `engine`, `saga`, `projector`) on a free port with
    /// the configuration in `config`.
    pub fn service(role: &str, config: &Path) -> Server {
        let args: Vec<std::ffi::OsString> =
            vec![role.into(), "--listen".into(), "127.0.0.1:0".into()];
        let dir = config.parent().expect("config file in a directory");
        Self::run(role, Some(config), &args, dir)
    }

    fn run(
        role: &str,
        config: Option<&Path>,
        args: &[std::ffi::OsString],
        data_dir: &Path,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_distorch"));
        if let Some(file) = config {
            cmd.arg("--config").arg(file);
        }
        let ready = format!("distorch {role} listening on ");
        let mut child = cmd
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("DISTORCH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn distorch");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix(&ready) {
                        break url.trim().to_string();
                    }
                }
                _ => panic!("distorch {role} exited before it was listening"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child: Some(child),
            url,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn api(&self) -> Api {
        Api {
            base: format!("{}/api/v1", self.url),
            http: reqwest::Client::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// Status and JSON body of a response (Null when the body is not JSON).
pub type Resp = (u16, Value);

impl Api {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn register_yaml(&self, yaml: &str) -> Resp {
        let req = self
            .http
            .post(format!("{}/definitions", self.base))
            .header("content-type", "application/yaml")
            .body(yaml.to_string());
        self.send(req).await
    }

    pub async fn start(&self, definition: &str, input: Value) -> String {
        let (status, body) = self
            .post(
                "/workflows",
                json!({"definition": definition, "input": input}),
            )
            .await;
        assert_eq!(status, 201, "start {definition}: {body}");
        body["workflow_id"]
            .as_str()
            .expect("workflow_id")
            .to_string()
    }

    pub async fn workflow(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/workflows/{id}")).await;
        assert_eq!(status, 200, "get workflow {id}: {body}");
        body
    }

    /// Polls the run until `pred` holds (30 s at most, then fails with the last state).
    pub async fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(&format!("/workflows/{id}")).await;
            if status == 200 && pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} on {id}; last: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_for(id, status, |w| w["status"] == status).await
    }

    /// One poll of `queue` (long-polls up to `wait_ms`).
    pub async fn poll(&self, queue: &str, max: u32, wait_ms: u64) -> Vec<Value> {
        let (status, body) = self
            .post(
                &format!("/queues/{queue}/poll"),
                json!({"worker_id": "test", "max_tasks": max, "wait_ms": wait_ms}),
            )
            .await;
        assert_eq!(status, 200, "poll {queue}: {body}");
        body["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until a task arrives (10 s at most).
    pub async fn take(&self, queue: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(t) = self.poll(queue, 1, 1000).await.into_iter().next() {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no task arrived on queue {queue}"
            );
        }
    }

    pub async fn complete(&self, task: &Value, output: Value) -> Resp {
        let id = task["task_id"].as_str().unwrap();
        self.post(
            &format!("/tasks/{id}/complete"),
            json!({"attempt": task["attempt"], "output": output}),
        )
        .await
    }

    pub async fn fail(&self, task: &Value, kind: &str, retryable: bool) -> Resp {
        let id = task["task_id"].as_str().unwrap();
        let error =
            json!({"type": kind, "message": format!("{kind} happened"), "retryable": retryable});
        self.post(
            &format!("/tasks/{id}/fail"),
            json!({"attempt": task["attempt"], "error": error}),
        )
        .await
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

impl Server {
    /// Like [`Server::start`], with `toml` written to `<data_dir>/distorch.toml` and passed
    /// as `--config`.
    pub fn start_with_config(data_dir: &Path, toml: &str) -> Server {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let file = data_dir.join("distorch.toml");
        std::fs::write(&file, toml).expect("write config file");
        Self::spawn(data_dir, Some(&file))
    }

    /// The Prometheus exposition at `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status().as_u16(), 200, "GET /metrics");
        resp.text().await.expect("metrics body")
    }
}

/// The value of an unlabelled sample in a Prometheus exposition, if present.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// One long-poll of `queue` at `url` (a server's base URL) as an HTTP worker makes it: the
/// tasks it got, or none when the server did not answer (after a short pause, so a loop
/// around it does not spin while a server is down).
pub async fn poll_once(
    http: &reqwest::Client,
    url: &str,
    queue: &str,
    worker_id: &str,
    max_tasks: u32,
    wait_ms: u64,
) -> Vec<Value> {
    let polled = http
        .post(format!("{url}/api/v1/queues/{queue}/poll"))
        .json(&json!({"worker_id": worker_id, "max_tasks": max_tasks, "wait_ms": wait_ms}))
        .send()
        .await;
    let Ok(resp) = polled else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Vec::new();
    };
    match resp.json::<Value>().await {
        Ok(body) => body["tasks"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Completes `task` at the base URL `url()` gives (asked again at each try) as the SDKs do:
/// retried while the server does not answer, up to 100 times. True once a 200 came back;
/// false on a 4xx (the attempt no longer counts) or when every try failed.
pub async fn complete_until_answered(
    http: &reqwest::Client,
    url: impl Fn() -> String,
    task: &Value,
    output: Value,
    pause: Duration,
) -> bool {
    let id = task["task_id"].as_str().expect("task_id");
    for _ in 0..100 {
        let resp = http
            .post(format!("{}/api/v1/tasks/{id}/complete", url()))
            .json(&json!({"attempt": task["attempt"], "output": output}))
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 200 => return true,
            Ok(r) if r.status().is_client_error() => return false,
            _ => tokio::time::sleep(pause).await,
        }
    }
    false
}
