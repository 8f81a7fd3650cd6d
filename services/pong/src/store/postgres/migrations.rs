//! The PostgreSQL schema of pong as an ordered list of embedded migrations.
//!
//! [`migrate`] applies every migration not yet recorded in
//! `pong_schema_migrations`, all in one transaction that first takes a
//! transaction-scoped advisory lock, so several pong processes starting
//! together apply each migration exactly once and none sees a half-made
//! schema. Append new migrations; never edit an applied one.

use std::collections::BTreeSet;

use tokio_postgres::Client;

/// Key of the advisory lock serialising migrations (ASCII "pong").
pub const MIGRATION_LOCK: i64 = 0x706f_6e67;

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Position in the list, starting at 1; recorded when applied.
    pub version: i32,
    /// What it does.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "messages and state",
    sql: "
        CREATE TABLE pong_messages (
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            id UUID PRIMARY KEY,
            msg TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            received_at TIMESTAMPTZ NOT NULL
        );
        CREATE UNIQUE INDEX pong_messages_seq ON pong_messages (seq);
        -- One row: the exact number of stored rows (for retention) and a
        -- version bumped by every change (the key of cached pages). Writers
        -- update it in the same transaction as their rows.
        CREATE TABLE pong_state (
            singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
            stored BIGINT NOT NULL,
            version BIGINT NOT NULL
        );
        INSERT INTO pong_state (singleton, stored, version) VALUES (TRUE, 0, 0);
    ",
}];

/// Applies the missing migrations; returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pong_schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let done: BTreeSet<i32> = tx
        .query("SELECT version FROM pong_schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        if done.contains(&migration.version) {
            continue;
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO pong_schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        applied.push(migration.version);
    }
    if let Some(newest) = done.last()
        && MIGRATIONS.iter().all(|m| m.version < *newest)
    {
        tracing::warn!(
            newest,
            "the database has a newer pong schema than this binary knows"
        );
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
        }
    }
}
