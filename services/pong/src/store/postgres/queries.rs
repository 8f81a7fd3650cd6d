//! The SQL of the PostgreSQL store: one function per statement group, each
//! taking a plain client (no pooling, timing or error mapping here).

use deadpool_postgres::ClientWrapper as Client;
use time::OffsetDateTime;
use uuid::Uuid;

use super::super::record::{Record, join_array};
use super::super::{Incoming, ListQuery};

/// What one write transaction did.
#[derive(Debug)]
pub struct Written {
    /// Per input row: newly stored (`true`) or a duplicate id.
    pub inserted: Vec<bool>,
    /// Oldest rows deleted to stay within the bound.
    pub evicted: usize,
    /// Rows stored after the commit.
    pub stored: i64,
}

/// A page, or the cursor that does not exist.
#[derive(Debug)]
pub enum Page {
    /// The JSON array, oldest first.
    Json(String),
    /// `after` named no stored message.
    UnknownCursor(Uuid),
}

const INSERT: &str = "
    INSERT INTO pong_messages (id, msg, created_at, received_at)
    SELECT id, msg, created_at, received_at
    FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[])
        WITH ORDINALITY AS t(id, msg, created_at, received_at, ord)
    ORDER BY ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id";
const BUMP: &str =
    "UPDATE pong_state SET stored = stored + $1, version = version + 1 RETURNING stored";
const EVICT: &str = "
    WITH gone AS (
        DELETE FROM pong_messages
        WHERE seq IN (SELECT seq FROM pong_messages ORDER BY seq LIMIT $1)
        RETURNING 1
    )
    SELECT count(*) FROM gone";
const SHRINK: &str = "UPDATE pong_state SET stored = stored - $1 RETURNING stored";
const STATE: &str = "SELECT stored, version FROM pong_state";
const ALL: &str = "SELECT id, msg, created_at, received_at FROM pong_messages ORDER BY seq";
const NEWEST: &str = "
    SELECT id, msg, created_at, received_at FROM (
        SELECT seq, id, msg, created_at, received_at
        FROM pong_messages ORDER BY seq DESC LIMIT $1
    ) newest ORDER BY seq";
const CURSOR: &str = "SELECT 1 FROM pong_messages WHERE id = $1";
const AFTER: &str = "
    SELECT id, msg, created_at, received_at FROM pong_messages
    WHERE seq > (SELECT seq FROM pong_messages WHERE id = $1)
    ORDER BY seq LIMIT $2";

/// Inserts `rows` (duplicates ignored), updates `pong_state` and evicts the
/// oldest rows beyond `max`, in one transaction.
///
/// `pong_state` is locked by the `UPDATE` until the commit, so concurrent
/// writers serialise on it and its `stored` stays exact.
pub async fn insert(
    client: &mut Client,
    rows: &[Incoming],
    max: i64,
) -> Result<Written, tokio_postgres::Error> {
    // Repeated ids inside one batch: only the first may be stored.
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let unique: Vec<&Incoming> = rows
        .iter()
        .filter(|(message, _)| seen.insert(message.id))
        .collect();
    let ids: Vec<Uuid> = unique.iter().map(|(m, _)| m.id).collect();
    let msgs: Vec<&str> = unique.iter().map(|(m, _)| m.msg.as_str()).collect();
    let created: Vec<OffsetDateTime> = unique.iter().map(|(m, _)| m.created_at).collect();
    let received: Vec<OffsetDateTime> = unique.iter().map(|(_, at)| *at).collect();

    let tx = client.transaction().await?;
    let insert = tx.prepare_cached(INSERT).await?;
    let new_ids: std::collections::HashSet<Uuid> = tx
        .query(&insert, &[&ids, &msgs, &created, &received])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let count = i64::try_from(new_ids.len()).unwrap_or(i64::MAX);
    let mut evicted = 0;
    let stored: i64;
    if count > 0 {
        let bumped: i64 = tx
            .query_one(&tx.prepare_cached(BUMP).await?, &[&count])
            .await?
            .try_get(0)?;
        if bumped > max {
            let excess = bumped - max;
            let gone: i64 = tx
                .query_one(&tx.prepare_cached(EVICT).await?, &[&excess])
                .await?
                .try_get(0)?;
            stored = tx
                .query_one(&tx.prepare_cached(SHRINK).await?, &[&gone])
                .await?
                .try_get(0)?;
            evicted = usize::try_from(gone).unwrap_or(0);
        } else {
            stored = bumped;
        }
    } else {
        stored = tx
            .query_one(&tx.prepare_cached(STATE).await?, &[])
            .await?
            .try_get(0)?;
    }
    tx.commit().await?;
    // Newly stored: the first occurrence of each id that the INSERT returned.
    let mut first = std::collections::HashSet::with_capacity(rows.len());
    let inserted = rows
        .iter()
        .map(|(message, _)| new_ids.contains(&message.id) && first.insert(message.id))
        .collect();
    Ok(Written {
        inserted,
        evicted,
        stored,
    })
}

/// `(stored, version)` from `pong_state`.
pub async fn state(client: &mut Client) -> Result<(i64, i64), tokio_postgres::Error> {
    let statement = client.prepare_cached(STATE).await?;
    let row = client.query_one(&statement, &[]).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// One page of `GET /pong` as JSON.
pub async fn page(client: &mut Client, query: ListQuery) -> Result<Page, tokio_postgres::Error> {
    let limit = query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let rows = match (query.after, limit) {
        (None, None) => {
            client
                .query(&client.prepare_cached(ALL).await?, &[])
                .await?
        }
        (None, Some(limit)) => {
            client
                .query(&client.prepare_cached(NEWEST).await?, &[&limit])
                .await?
        }
        (Some(cursor), limit) => {
            // One round trip; only an empty page needs to know whether the
            // cursor exists (end of the list) or not (404).
            let rows = client
                .query(&client.prepare_cached(AFTER).await?, &[&cursor, &limit])
                .await?;
            if rows.is_empty() {
                let found = client
                    .query_opt(&client.prepare_cached(CURSOR).await?, &[&cursor])
                    .await?;
                if found.is_none() {
                    return Ok(Page::UnknownCursor(cursor));
                }
            }
            rows
        }
    };
    let mut parts = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = row.try_get(0)?;
        let record = Record {
            id,
            msg: row.try_get(1)?,
            created_at: row.try_get(2)?,
            received_at: row.try_get(3)?,
        };
        match serde_json::to_string(&record) {
            Ok(json) => parts.push(json),
            // Only rows pong wrote exist, and those serialised on the way in.
            Err(error) => tracing::warn!(%id, %error, "stored row cannot be serialised, skipped"),
        }
    }
    Ok(Page::Json(join_array(&parts)))
}
