//! Schema migrations: the CQL files of `schemas/cql/`, applied in order by `distorch
//! migrate`, and the check every service makes at startup.
//!
//! `migrate` creates the keyspace if needed, then applies every migration newer than the
//! highest version recorded in `schema_migrations`, recording each one after its last
//! statement. It is safe on every deploy and under concurrent deploys: migrations are
//! written with `IF NOT EXISTS`, so one interrupted (or raced) half way is simply run
//! again. A migration, once released, is never edited: a change is a new file.

use super::{cql_error, storage};
use crate::{Result, StoreError};
use scylla::client::session::Session;
use std::time::{SystemTime, UNIX_EPOCH};

/// One file of `schemas/cql/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its number, the `NNN` of the file name; recorded in `schema_migrations` once applied.
    pub version: u32,
    /// The rest of the file name, without the extension.
    pub name: &'static str,
    /// The file's text: CQL statements, each ending with `;` at the end of a line.
    pub cql: &'static str,
}

/// Every migration, in the order they apply. A new file goes at the end, with the next
/// version number (a unit test holds this list and the directory in step).
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "read_models",
    cql: include_str!("../../../../schemas/cql/001_read_models.cql"),
}];

/// The schema version this code reads and writes.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// `schema_migrations` rows of this schema live in this partition.
const SCOPE: &str = "read_models";

/// What [`super::migrate()`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The keyspace migrated.
    pub keyspace: String,
    /// `NNN_name` of each migration applied now; empty when the schema was current.
    pub applied: Vec<String>,
    /// The schema version after the run.
    pub version: u32,
}

/// The statements of a CQL file: `--` comments dropped, split on `;` at the end of a line.
/// (The migrations hold no string literal with `;` or `--` in it, which keeps this simple.)
pub fn statements(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in cql.lines() {
        let line = line
            .split_once("--")
            .map_or(line, |(code, _)| code)
            .trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        if let Some(last) = line.strip_suffix(';') {
            current.push_str(last);
            out.push(std::mem::take(&mut current).trim().to_owned());
        } else {
            current.push_str(line);
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

fn schema_error(keyspace: &str, found: &str) -> StoreError {
    StoreError::Setup(format!(
        "the ScyllaDB keyspace {keyspace:?} {found}, but this version of distorch needs schema \
         version {}: run `distorch migrate` with the same store URL (it is idempotent and safe \
         to run on every deploy)",
        latest()
    ))
}

/// Creates `keyspace` (if needed) and applies the pending migrations.
pub(super) async fn run(
    session: &Session,
    keyspace: &str,
    replication_factor: u32,
) -> Result<MigrationReport> {
    let create = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}"
    );
    session.query_unpaged(create, ()).await.map_err(cql_error)?;
    session
        .use_keyspace(keyspace, false)
        .await
        .map_err(cql_error)?;
    session
        .query_unpaged(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                scope text, version int, name text, applied_at_ms bigint,
                PRIMARY KEY ((scope), version))",
            (),
        )
        .await
        .map_err(cql_error)?;

    let mut version = applied_version(session, keyspace).await?.unwrap_or(0);
    let pending: Vec<&Migration> = MIGRATIONS.iter().filter(|m| m.version > version).collect();
    let mut applied = Vec::new();
    for m in pending {
        for statement in statements(m.cql) {
            session
                .query_unpaged(statement, ())
                .await
                .map_err(|e| storage(format!("migration {:03}_{}: {e}", m.version, m.name)))?;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        session
            .query_unpaged(
                "INSERT INTO schema_migrations (scope, version, name, applied_at_ms)
                 VALUES (?, ?, ?, ?)",
                (SCOPE, m.version as i32, m.name, now_ms),
            )
            .await
            .map_err(cql_error)?;
        tracing::info!(
            keyspace,
            version = m.version,
            name = m.name,
            "applied migration"
        );
        applied.push(format!("{:03}_{}", m.version, m.name));
        version = m.version;
    }
    Ok(MigrationReport {
        keyspace: keyspace.to_owned(),
        applied,
        version,
    })
}

/// The highest applied version, `None` when nothing is recorded.
async fn applied_version(session: &Session, keyspace: &str) -> Result<Option<u32>> {
    let rows = session
        .query_unpaged(
            format!(
                "SELECT version FROM {keyspace}.schema_migrations WHERE scope = ? \
                 ORDER BY version DESC LIMIT 1"
            ),
            (SCOPE,),
        )
        .await
        .map_err(cql_error)?
        .into_rows_result()
        .map_err(storage)?;
    let row = rows.maybe_first_row::<(i32,)>().map_err(storage)?;
    Ok(row.map(|(v,)| u32::try_from(v).unwrap_or(0)))
}

/// Fails with [`crate::StoreError::Setup`] unless `keyspace` exists and is at least at this
/// code's schema version. A newer schema is accepted (migrations only add), with a warning,
/// so a rolling deploy can migrate before the old services are gone.
pub async fn check_schema(session: &Session, keyspace: &str) -> Result<()> {
    let exists = |table: &'static str| async move {
        let rows = session
            .query_unpaged(
                "SELECT table_name FROM system_schema.tables \
                 WHERE keyspace_name = ? AND table_name = ?",
                (keyspace, table),
            )
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(storage)?;
        Ok::<bool, StoreError>(rows.rows_num() > 0)
    };
    if !exists("schema_migrations").await? {
        return Err(schema_error(
            keyspace,
            "has no DisTorch schema (or does not exist)",
        ));
    }
    let found = applied_version(session, keyspace).await?.unwrap_or(0);
    if found < latest() {
        return Err(schema_error(
            keyspace,
            &format!("is at schema version {found}"),
        ));
    }
    if found > latest() {
        tracing::warn!(
            keyspace,
            found,
            expected = latest(),
            "the store's schema is newer than this distorch; running on, as migrations only add"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{m:?}");
        }
        assert_eq!(latest() as usize, MIGRATIONS.len());
    }

    #[test]
    fn every_file_in_schemas_cql_is_a_listed_migration() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/cql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("schemas/cql")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".cql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:03}_{}.cql", m.version, m.name))
            .collect();
        assert_eq!(files, listed);
        for m in MIGRATIONS {
            let path = format!("{dir}/{:03}_{}.cql", m.version, m.name);
            assert_eq!(std::fs::read_to_string(path).expect("read"), m.cql);
        }
    }

    #[test]
    fn every_statement_is_idempotent() {
        for m in MIGRATIONS {
            for s in statements(m.cql) {
                assert!(
                    s.contains("IF NOT EXISTS") || s.starts_with("ALTER"),
                    "{:03}_{}: not idempotent: {s}",
                    m.version,
                    m.name
                );
            }
        }
    }

    #[test]
    fn statements_split_on_line_ending_semicolons_and_drop_comments() {
        let cql = "-- header; not a statement\n\
                   CREATE TABLE a (\n    x int, -- why; x\n    PRIMARY KEY (x)\n);\n\n\
                   CREATE TABLE b (y int PRIMARY KEY);\nALTER TABLE b ADD z text";
        assert_eq!(
            statements(cql),
            [
                "CREATE TABLE a (\n    x int,\n    PRIMARY KEY (x)\n)",
                "CREATE TABLE b (y int PRIMARY KEY)",
                "ALTER TABLE b ADD z text",
            ]
        );
        assert!(statements("-- only a comment\n\n").is_empty());
    }

    #[test]
    fn the_first_migration_creates_every_table_the_store_uses() {
        let all = statements(MIGRATIONS[0].cql).join("\n");
        for table in crate::scylla::READ_MODEL_TABLES {
            assert!(
                all.contains(&format!("CREATE TABLE IF NOT EXISTS {table} (")),
                "{table}"
            );
        }
    }

    #[test]
    fn an_old_schema_tells_the_operator_what_to_run() {
        let err = schema_error("distorch", "is at schema version 0");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("run `distorch migrate`"), "{text}");
        assert!(
            text.contains("\"distorch\" is at schema version 0"),
            "{text}"
        );
    }
}
