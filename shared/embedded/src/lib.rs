#![warn(missing_docs)]
//! What DisTorch's embedded stores share (the journal and SQLite event logs, the SQLite read
//! store and analytics): one implementation of each mechanism.
//!
//! - [`lock_file`]: an advisory lock on `<path>.lock`, held while the returned file is open
//!   and released by the OS when the process dies, so a crash never leaves a file locked.
//! - [`ReadPool`]: idle SQLite read connections reused across blocking calls.

use rusqlite::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Why [`lock_file`] failed.
#[derive(Debug)]
pub enum LockError {
    /// Another process (or another handle in this one) holds the lock.
    InUse,
    /// The lock file could not be opened or locked.
    Io {
        /// The lock file (`<path>.lock`) that could not be opened or locked.
        lock_path: PathBuf,
        /// What the OS reported.
        error: std::io::Error,
    },
}

/// Takes the lock on `<path>.lock`: exclusive (one holder) or shared (any number of shared
/// holders, no exclusive one). Held for as long as the returned file is open.
pub fn lock_file(path: &Path, exclusive: bool) -> Result<File, LockError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| LockError::Io {
            lock_path: lock_path.clone(),
            error,
        })?;
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::InUse),
        Err(std::fs::TryLockError::Error(error)) => Err(LockError::Io { lock_path, error }),
    }
}

/// Idle read connections to one SQLite file, reused across calls. A call takes an idle
/// connection or opens one with `open`, and gives it back afterwards unless `max_idle` are
/// already idle. Calls block (SQLite is synchronous): make them on a blocking thread. The
/// number of connections is bounded by the number of threads that call at once.
pub struct ReadPool {
    path: PathBuf,
    max_idle: usize,
    open: fn(&Path) -> rusqlite::Result<Connection>,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool")
            .field("path", &self.path)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl ReadPool {
    /// A pool of connections to `path`, each opened (and configured) by `open`.
    pub fn new(
        path: impl Into<PathBuf>,
        max_idle: usize,
        open: fn(&Path) -> rusqlite::Result<Connection>,
    ) -> Self {
        Self {
            path: path.into(),
            max_idle,
            open,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a pooled connection; a connection that fails to open is the error
    /// `opening` makes of it.
    pub fn with<T, E>(
        &self,
        opening: impl FnOnce(rusqlite::Error) -> E,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => (self.open)(&self.path).map_err(opening)?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        out
    }

    /// Connections idle now.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> rusqlite::Result<Connection> {
        Connection::open(path)
    }

    #[test]
    fn connections_are_reused_and_at_most_max_idle_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ReadPool::new(dir.path().join("db"), 1, open);
        let n: i64 = pool
            .with(|e| e, |c| c.query_row("SELECT 41 + 1", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 42);
        assert_eq!(pool.idle(), 1);
        // Two at once: the second is opened, and only one goes back.
        pool.with(
            |e| e,
            |_| pool.with(|e| e, |_| Ok::<_, rusqlite::Error>(())),
        )
        .unwrap();
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn a_connection_that_cannot_open_is_an_error_of_the_callers_type() {
        let pool = ReadPool::new("/nonexistent-dir/db", 4, open);
        let err = pool
            .with(|e| format!("opening: {e}"), |_| Ok::<(), String>(()))
            .expect_err("no such directory");
        assert!(err.starts_with("opening: unable to open"), "{err}");
    }

    #[test]
    fn an_exclusive_lock_excludes_every_other_and_shared_locks_share() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let held = lock_file(&path, true).unwrap();
        assert!(matches!(lock_file(&path, true), Err(LockError::InUse)));
        assert!(matches!(lock_file(&path, false), Err(LockError::InUse)));
        drop(held);
        let a = lock_file(&path, false).unwrap();
        let _b = lock_file(&path, false).unwrap();
        assert!(matches!(lock_file(&path, true), Err(LockError::InUse)));
        drop(a);
    }
}
