//! The read-store conformance suite against a live ScyllaDB (or Cassandra) node.
//!
//! Set `DISTORCH_TEST_SCYLLA=host:port[,host2:port]` to run it; each run migrates a fresh
//! keyspace and drops it afterwards. Unset, the tests that need a node say so on stderr and
//! pass: no ScyllaDB can be installed on the project's machines, and docs/api.md
//! ("What was verified where") says what was verified where.

use distorch_store::StoreError;
use distorch_store::conformance;
use distorch_store::scylla::{self, ScyllaStore};
use futures::FutureExt;
use std::io::Write;
use std::panic::AssertUnwindSafe;

const NODE_VAR: &str = "DISTORCH_TEST_SCYLLA";

/// The node to test against, or `None` after telling the person running the tests why
/// nothing ran. Written to stderr directly, past the test harness's capture.
fn node() -> Option<String> {
    match std::env::var(NODE_VAR) {
        Ok(node) if !node.trim().is_empty() => Some(node.trim().to_owned()),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: the ScyllaDB read-store conformance suite was NOT run: {NODE_VAR} is \
                 unset. Set it to a live node (host:9042) to run it."
            );
            None
        }
    }
}

/// Runs `test` against a freshly named keyspace on `node`, then drops the keyspace, also
/// when the test fails.
async fn in_fresh_keyspace<F, Fut>(node: &str, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let keyspace = format!("distorch_test_{}", uuid::Uuid::new_v4().simple());
    let url = format!("scylla://{node}/{keyspace}");
    let outcome = AssertUnwindSafe(test(url)).catch_unwind().await;

    let session = ::scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(node.split(','))
        .build()
        .await
        .expect("connect to drop the test keyspace");
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .expect("drop the test keyspace");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_conforms() {
    let Some(node) = node() else { return };
    in_fresh_keyspace(&node, |url| async move {
        scylla::migrate(&url).await.expect("migrate");
        let store = ScyllaStore::connect(&url).await.expect("connect");
        conformance::run_all(&store).await;
        // A second store on the same keyspace (another API replica) reads the same views,
        // and still conforms.
        let again = ScyllaStore::connect(&url).await.expect("connect again");
        conformance::views_match_the_fold(&again).await;
        conformance::run_all(&again).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_connect_demands_it() {
    let Some(node) = node() else { return };
    let keyspace = format!("distorch_test_{}", uuid::Uuid::new_v4().simple());
    let unmigrated = format!("scylla://{node}/{keyspace}_none");
    let Err(err) = ScyllaStore::connect(&unmigrated).await else {
        panic!("connect to a keyspace that was never migrated");
    };
    assert!(matches!(err, StoreError::Setup(_)), "{err:?}");
    assert!(err.to_string().contains("run `distorch migrate`"), "{err}");

    in_fresh_keyspace(&node, |url| async move {
        let first = scylla::migrate(&url).await.expect("migrate");
        assert_eq!(first.applied, ["001_read_models"]);
        let again = scylla::migrate(&url).await.expect("migrate again");
        assert!(again.applied.is_empty(), "{again:?}");
        assert_eq!(again.version, first.version);
        ScyllaStore::connect(&url)
            .await
            .expect("connect after migrate");
    })
    .await;
}

#[tokio::test]
async fn a_bad_url_is_a_setup_error_without_a_node() {
    for url in ["scylla://db:9042", "kafka://db/ks", "scylla://db/bad-name"] {
        let Err(err) = ScyllaStore::connect(url).await else {
            panic!("{url} connected");
        };
        assert!(matches!(err, StoreError::Setup(_)), "{url}: {err:?}");
        assert!(!err.is_retryable());
    }
}
