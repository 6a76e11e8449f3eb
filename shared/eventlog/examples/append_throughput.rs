//! Measures group commit: many tasks appending small records concurrently to `SqliteLog`.
//!
//! `cargo run --release -p distorch-eventlog --example append_throughput -- [tasks] [seconds]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("bench.db"))?);
    log.create_topic("bench", 8).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (log, stop, appended) = (log.clone(), stop.clone(), appended.clone());
        handles.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("{{\"task\":{task},\"seq\":{seq}}}").into_bytes();
                let record = NewRecord::new("bench", format!("wf-{task}-{}", seq % 16), payload);
                log.append(vec![record]).await?;
                appended.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            Ok::<_, distorch_eventlog::LogError>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = appended.load(Ordering::Relaxed);
    println!(
        "append: {tasks} tasks, {total} records in {elapsed:.1}s = {:.0} records/s",
        total as f64 / elapsed
    );

    let mut consumer = log.consumer("bench", &["bench".to_owned()]).await?;
    let started = Instant::now();
    let mut read = 0u64;
    while read < total {
        read += consumer.poll(1000, Duration::from_secs(1)).await?.len() as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "consume: {read} records in {elapsed:.2}s = {:.0} records/s",
        read as f64 / elapsed
    );
    Ok(())
}
