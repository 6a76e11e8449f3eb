//! Migrations of the ClickHouse analytics database (`schemas/clickhouse/NNN_name.sql`) and
//! the startup check that the database is not older than this build.

use super::{ClickHouseAnalytics, ch};
use crate::{Result, StoreError};
use clickhouse::Row;
use serde::Deserialize;

/// Every migration, in the order they apply. Append only.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "facts",
        include_str!("../../../../../schemas/clickhouse/001_facts.sql"),
    ),
    (
        2,
        "bi_views",
        include_str!("../../../../../schemas/clickhouse/002_bi_views.sql"),
    ),
];

/// The schema version this build needs.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY version";

/// The statements of a migration file: `;` at the end of a line ends one. Comment lines
/// are dropped (a `;` in one must not split a statement).
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix(';') {
            current.push_str(body);
            if !current.trim().is_empty() {
                out.push(current.trim().to_owned());
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

#[derive(Row, Deserialize)]
struct Applied {
    version: u32,
}

impl ClickHouseAnalytics {
    /// Creates the database if needed and applies the migrations it has not recorded yet, in
    /// order. Idempotent (every statement is), so it is safe on every deploy and when two
    /// deploys race.
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        // Validated as a plain identifier when the URL was parsed.
        self.server
            .query(&format!(
                "CREATE DATABASE IF NOT EXISTS `{}`",
                self.database
            ))
            .execute()
            .await
            .map_err(ch)?;
        self.client
            .query(MIGRATIONS_TABLE)
            .execute()
            .await
            .map_err(ch)?;
        let applied = self.applied().await?;
        let mut done = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            for statement in statements(sql) {
                self.client.query(&statement).execute().await.map_err(|e| {
                    StoreError::Storage(format!("migration {version:03}_{name}: {e}"))
                })?;
            }
            self.client
                .query("INSERT INTO schema_migrations (version, name) VALUES (?, ?)")
                .bind(*version)
                .bind(*name)
                .execute()
                .await
                .map_err(ch)?;
            tracing::info!(version, name, database = %self.database, "ClickHouse migration applied");
            done.push(*version);
        }
        Ok(done)
    }

    /// Fails unless every migration of this build is applied: run `distorch migrate` first.
    /// A newer schema is accepted, since migrations are additive and a rolling deploy runs
    /// the previous build against it for a while.
    pub async fn check_schema(&self) -> Result<()> {
        // Asked of the server, not the database, which may not exist yet.
        let exists: u8 = self
            .server
            .query(
                "SELECT toUInt8(count()) FROM system.tables
                 WHERE database = ? AND name = 'schema_migrations'",
            )
            .bind(&self.database)
            .fetch_one()
            .await
            .map_err(ch)?;
        let applied = if exists == 0 {
            Vec::new()
        } else {
            self.applied().await?
        };
        let missing: Vec<String> = MIGRATIONS
            .iter()
            .filter(|m| !applied.contains(&m.0))
            .map(|m| format!("{:03}_{}", m.0, m.1))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::Setup(format!(
            "the ClickHouse analytics database `{}` is older than this build (missing \
             migrations: {}); run `distorch migrate` first",
            self.database,
            missing.join(", ")
        )))
    }

    async fn applied(&self) -> Result<Vec<u32>> {
        Ok(self
            .client
            .query("SELECT version FROM schema_migrations FINAL ORDER BY version")
            .fetch_all::<Applied>()
            .await
            .map_err(ch)?
            .into_iter()
            .map(|a| a.version)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_files_split_into_their_statements() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE a (x UInt8)\nENGINE = Log;\n\n\
                   CREATE VIEW b AS SELECT 1;\n";
        assert_eq!(
            statements(sql),
            [
                "CREATE TABLE a (x UInt8)\nENGINE = Log",
                "CREATE VIEW b AS SELECT 1"
            ]
        );
    }

    #[test]
    fn migrations_are_numbered_in_order_and_every_statement_is_idempotent() {
        for (i, (version, _, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1);
            for s in statements(sql) {
                assert!(
                    s.contains("IF NOT EXISTS") || s.starts_with("CREATE OR REPLACE"),
                    "not idempotent: {s}"
                );
            }
        }
        assert_eq!(latest(), 2);
    }
}
