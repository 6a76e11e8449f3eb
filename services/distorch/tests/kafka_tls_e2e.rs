//! DisTorch's services on a Kafka cluster reached over TLS, configured only through
//! `[kafka] properties` as a user would: a run goes through engine, projector and API with
//! every connection encrypted; a certificate the client does not trust, and a SASL exchange
//! the cluster refuses, stop a service at startup with an error that says so.
//!
//! The cluster is a broker of its own (tansu, from `DISTORCH_TEST_TANSU`) behind a
//! TLS-terminating proxy (`scripts/tls_proxy.py`) with a certificate the test makes with the
//! `openssl` CLI; the broker advertises the proxy's address, so every connection a client
//! opens goes through TLS. `bash scripts/test.sh` installs tansu and sets the variable.

mod common;

use common::{Server, tempdir};
use serde_json::json;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a helper process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A self-signed certificate for 127.0.0.1 (its own CA) and its key.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("the openssl CLI (bash scripts/test.sh installs it)");
    assert!(status.success(), "openssl could not make a certificate");
    (cert, key)
}

/// A broker listening in plain text on a port of its own and advertising `advertised`, and
/// the TLS proxy in front of it on `advertised`.
fn tls_cluster(dir: &Path, cert: &Path, key: &Path) -> (u16, Killed, Killed) {
    let tansu = std::env::var("DISTORCH_TEST_TANSU").unwrap_or_else(|_| {
        panic!(
            "DISTORCH_TEST_TANSU is not set: run `bash scripts/test.sh`, which installs tansu \
             and names it"
        )
    });
    let (broker, proxy) = (free_port(), free_port());
    let broker_dir = dir.join("tansu");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let tansu = Command::new(tansu)
        .current_dir(&broker_dir)
        .args(["broker", "--storage-engine", "sqlite://tansu.db"])
        .arg("--listener-url")
        .arg(format!("tcp://127.0.0.1:{broker}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{proxy}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let tansu = Killed(tansu);
    wait_for_port(broker, "tansu");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/tls_proxy.py");
    let mut proxy_child = Command::new("python3")
        .arg(script)
        .arg(proxy.to_string())
        .arg(broker.to_string())
        .arg(cert)
        .arg(key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the TLS proxy");
    let mut ready = String::new();
    BufReader::new(proxy_child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "the TLS proxy did not start");
    (proxy, tansu, Killed(proxy_child))
}

/// The configuration of every process of the cluster, with `properties` for librdkafka.
fn config(dir: &Path, name: &str, port: u16, properties: &str) -> PathBuf {
    let toml = format!(
        r#"
[backends]
log = "kafka://127.0.0.1:{port}"
store = "sqlite://{store}"

[api]
topic_prefix = "tls"
read_your_writes_ms = 0

[kafka]
properties = {{ {properties} }}
"#,
        store = dir.join("read.db").display(),
    );
    let file = dir.join(name);
    std::fs::write(&file, toml).unwrap();
    file
}

/// Runs `distorch engine` with `config` and expects it to stop at startup; returns what it
/// printed on stderr.
fn refused_at_startup(config: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distorch"))
        .arg("--config")
        .arg(config)
        .args(["engine", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn distorch");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("distorch engine kept running with a configuration the cluster refuses");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "exited successfully: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_run_over_tls_and_refuse_an_untrusted_certificate_or_a_refused_login() {
    let dir = tempdir();
    let (cert, key) = certificate(dir.path());
    let (port, _tansu, _proxy) = tls_cluster(dir.path(), &cert, &key);
    let ca = format!(
        r#""security.protocol" = "ssl", "ssl.ca.location" = "{}""#,
        cert.display()
    );

    // A run, every hop over TLS.
    let good = config(dir.path(), "tls.toml", port, &ca);
    let _engine = Server::service("engine", &good);
    let _projector = Server::service("projector", &good);
    let api_server = Server::service("api", &good);
    let api = api_server.api();
    let (status, body) = api
        .post(
            "/definitions",
            json!({"name": "tls", "steps": [{"id": "a", "task": "a", "queue": "tls"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = api.start("tls", json!({"over": "tls"})).await;
    let task = api.take("tls").await;
    assert_eq!(task["input"], json!({"over": "tls"}));
    let (status, body) = api.complete(&task, json!({"ok": true})).await;
    assert_eq!(status, 200, "{body}");
    let run = api.wait_status(&id, "completed").await;
    assert_eq!(run["tasks"][0]["output"], json!({"ok": true}));

    // A certificate the client does not trust: a clear error at startup.
    let untrusted = config(
        dir.path(),
        "untrusted.toml",
        port,
        r#""security.protocol" = "ssl""#,
    );
    let stderr = refused_at_startup(&untrusted);
    assert!(
        stderr.contains("refused the connection") && stderr.contains("certificate verify failed"),
        "{stderr}"
    );

    // SASL (SCRAM over TLS) that the cluster refuses: a clear error at startup, not a hang.
    let sasl = config(
        dir.path(),
        "sasl.toml",
        port,
        &format!(
            r#""security.protocol" = "sasl_ssl", "ssl.ca.location" = "{}", "sasl.mechanisms" = "SCRAM-SHA-256", "sasl.username" = "ann", "sasl.password" = "wrong""#,
            cert.display()
        ),
    );
    let stderr = refused_at_startup(&sasl);
    assert!(
        stderr.contains("refused the connection") && stderr.contains("SASL"),
        "{stderr}"
    );
}
