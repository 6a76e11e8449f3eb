//! The shipping service's worker (Rust SDK, `distorch-worker`): ships an order, or fails
//! non-retryably when the address cannot be delivered to, which makes the saga refund the
//! card and release the stock.
//!
//! ```sh
//! DISTORCH_URL=http://127.0.0.1:8000 cargo run --offline
//! ```

use distorch_worker::{TaskError, Worker};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DISTORCH_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let worker = Worker::builder(url, "shipping")
        .worker_id(format!("rust-shipping-{}", std::process::id()))
        .poll_wait(std::time::Duration::from_secs(5))
        .handler("ship-order", |ctx| async move {
            let order = ctx.input["order_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let address = ctx.input["address"].as_str().unwrap_or_default();
            if address.is_empty() || address.eq_ignore_ascii_case("nowhere") {
                return Err(TaskError::fatal(
                    "undeliverable",
                    format!("no carrier delivers to {address:?}"),
                ));
            }
            eprintln!("[rust] shipped {order} (task {})", ctx.task_id);
            Ok(json!({
                "tracking": format!("trk-{order}"),
                "reservation": ctx.input["reservation"],
                "served_by": "rust",
            }))
        })
        .build()?;
    eprintln!(
        "[rust] worker {} polling queue shipping",
        worker.worker_id()
    );

    let mut term = signal(SignalKind::terminate())?;
    worker
        .run(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await;
    eprintln!("[rust] worker stopped");
    Ok(())
}
