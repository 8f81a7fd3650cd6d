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
pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        name: "one-statement batch write",
        sql: "
        -- Stores a batch in one statement (one round trip, its own implicit
        -- transaction): inserts the rows whose id is new, bumps the version
        -- and the exact count, and deletes the oldest rows beyond p_max. The
        -- pong_state row lock is taken by the UPDATE and held only until this
        -- statement commits, so concurrent writers serialise on it and the
        -- eviction that follows sees every committed row. Ids must be unique
        -- within one call. Returns the ids that were new, the rows (and bytes
        -- of msg) evicted and the rows stored after the call.
        CREATE FUNCTION pong_store_batch(
            p_ids UUID[],
            p_msgs TEXT[],
            p_created TIMESTAMPTZ[],
            p_received TIMESTAMPTZ[],
            p_max BIGINT
        ) RETURNS TABLE (new_ids UUID[], evicted BIGINT, evicted_bytes BIGINT, stored BIGINT)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_new UUID[];
            v_stored BIGINT;
            v_gone BIGINT := 0;
            v_gone_bytes BIGINT := 0;
        BEGIN
            WITH inserted AS (
                INSERT INTO pong_messages (id, msg, created_at, received_at)
                SELECT t.id, t.msg, t.created_at, t.received_at
                FROM UNNEST(p_ids, p_msgs, p_created, p_received)
                    WITH ORDINALITY AS t(id, msg, created_at, received_at, ord)
                ORDER BY t.ord
                ON CONFLICT (id) DO NOTHING
                RETURNING pong_messages.id
            )
            SELECT coalesce(array_agg(inserted.id), '{}') INTO v_new FROM inserted;
            IF cardinality(v_new) = 0 THEN
                SELECT s.stored INTO v_stored FROM pong_state s;
                RETURN QUERY SELECT v_new, 0::BIGINT, 0::BIGINT, v_stored;
                RETURN;
            END IF;
            UPDATE pong_state s
                SET stored = s.stored + cardinality(v_new), version = s.version + 1
                RETURNING s.stored INTO v_stored;
            IF v_stored > p_max THEN
                WITH gone AS (
                    DELETE FROM pong_messages
                    WHERE seq IN (
                        SELECT m.seq FROM pong_messages m ORDER BY m.seq LIMIT v_stored - p_max
                    )
                    RETURNING octet_length(pong_messages.msg) AS size
                )
                SELECT count(*), coalesce(sum(gone.size), 0) INTO v_gone, v_gone_bytes FROM gone;
                UPDATE pong_state s SET stored = s.stored - v_gone RETURNING s.stored INTO v_stored;
            END IF;
            RETURN QUERY SELECT v_new, v_gone, v_gone_bytes, v_stored;
        END
        $$;
    ",
    },
];

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
