//! The SQL of the PostgreSQL store: one function per statement group, each
//! taking a plain client (no pooling, timing or error mapping here).

use std::collections::HashSet;

use deadpool_postgres::ClientWrapper as Client;
use time::OffsetDateTime;
use uuid::Uuid;

use super::super::record::{StoredMessage, join_array};
use super::super::{Incoming, ListQuery, PAGE_MAX_BYTES, Start};

/// What one write transaction did.
#[derive(Debug)]
pub struct Written {
    /// Per input row: newly stored (`true`) or a duplicate id.
    pub inserted: Vec<bool>,
    /// Oldest rows deleted to stay within the bound.
    pub evicted: usize,
    /// Bytes of `msg` in those rows.
    pub evicted_bytes: u64,
    /// Rows stored after the commit.
    pub stored: i64,
}

/// A page, or the cursor that does not exist.
#[derive(Debug)]
pub enum Page {
    /// The page.
    Found(super::super::Page),
    /// `after` named no stored message.
    UnknownCursor(Uuid),
}

/// The batch write: one statement (see migration 2, `pong_store_batch`).
const STORE_BATCH: &str =
    "SELECT new_ids, evicted, evicted_bytes, stored FROM pong_store_batch($1, $2, $3, $4, $5)";
const STATE: &str = "SELECT stored, version FROM pong_state";
// Pages: `lead(seq)` looks one row past the LIMIT (the window runs before
// it), so the last row knows whether more follow; the running sum of
// `octet_length(msg)` ends the page before it exceeds PAGE_MAX_BYTES ($2),
// keeping at least the first row. Both stream along the `seq` index.
const OLDEST: &str = "
    SELECT id, msg, created_at, received_at, more FROM (
        SELECT seq, id, msg, created_at, received_at,
            lead(seq) OVER w IS NOT NULL AS more,
            sum(octet_length(msg)) OVER w AS running, row_number() OVER w AS n
        FROM pong_messages WINDOW w AS (ORDER BY seq) ORDER BY seq LIMIT $1
    ) page WHERE n = 1 OR running <= $2 ORDER BY seq";
// The newest page starts at the $1-th newest row and runs forward like the
// others: the inner LIMIT picks those rows along the index, backwards.
const NEWEST: &str = "
    SELECT id, msg, created_at, received_at, more FROM (
        SELECT seq, id, msg, created_at, received_at,
            lead(seq) OVER w IS NOT NULL AS more,
            sum(octet_length(msg)) OVER w AS running, row_number() OVER w AS n
        FROM (SELECT * FROM pong_messages ORDER BY seq DESC LIMIT $1) newest
        WINDOW w AS (ORDER BY seq) ORDER BY seq
    ) page WHERE n = 1 OR running <= $2 ORDER BY seq";
const AFTER: &str = "
    SELECT id, msg, created_at, received_at, more FROM (
        SELECT seq, id, msg, created_at, received_at,
            lead(seq) OVER w IS NOT NULL AS more,
            sum(octet_length(msg)) OVER w AS running, row_number() OVER w AS n
        FROM pong_messages
        WHERE seq > (SELECT seq FROM pong_messages WHERE id = $3)
        WINDOW w AS (ORDER BY seq) ORDER BY seq LIMIT $1
    ) page WHERE n = 1 OR running <= $2 ORDER BY seq";
const CURSOR: &str = "SELECT 1 FROM pong_messages WHERE id = $1";

/// Inserts `rows` (duplicates ignored), updates `pong_state` and evicts the
/// oldest rows beyond `max`: one statement, so one round trip and one
/// implicit transaction; the `pong_state` row lock lives only inside it.
pub async fn insert(
    client: &mut Client,
    rows: &[&Incoming],
    max: i64,
) -> Result<Written, tokio_postgres::Error> {
    // Repeated ids inside one batch: only the first may be stored.
    let mut seen = HashSet::with_capacity(rows.len());
    let unique: Vec<&Incoming> = rows
        .iter()
        .copied()
        .filter(|(message, _)| seen.insert(message.id))
        .collect();
    let ids: Vec<Uuid> = unique.iter().map(|(m, _)| m.id).collect();
    let msgs: Vec<&str> = unique.iter().map(|(m, _)| m.msg.as_str()).collect();
    let created: Vec<OffsetDateTime> = unique.iter().map(|(m, _)| m.created_at).collect();
    let received: Vec<OffsetDateTime> = unique.iter().map(|(_, at)| *at).collect();

    let statement = client.prepare_cached(STORE_BATCH).await?;
    let row = client
        .query_one(&statement, &[&ids, &msgs, &created, &received, &max])
        .await?;
    let new_ids: HashSet<Uuid> = row.try_get::<_, Vec<Uuid>>(0)?.into_iter().collect();
    let evicted: i64 = row.try_get(1)?;
    let evicted_bytes: i64 = row.try_get(2)?;
    let stored: i64 = row.try_get(3)?;
    // Newly stored: the first occurrence of each id the statement inserted.
    let mut first = HashSet::with_capacity(rows.len());
    let inserted = rows
        .iter()
        .map(|(message, _)| new_ids.contains(&message.id) && first.insert(message.id))
        .collect();
    Ok(Written {
        inserted,
        evicted: usize::try_from(evicted).unwrap_or(0),
        evicted_bytes: u64::try_from(evicted_bytes).unwrap_or(0),
        stored,
    })
}

/// `(stored, version)` from `pong_state`.
pub async fn state(client: &mut Client) -> Result<(i64, i64), tokio_postgres::Error> {
    let statement = client.prepare_cached(STATE).await?;
    let row = client.query_one(&statement, &[]).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// One page of `GET /pong`.
pub async fn page(client: &mut Client, query: ListQuery) -> Result<Page, tokio_postgres::Error> {
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let budget = i64::try_from(PAGE_MAX_BYTES).unwrap_or(i64::MAX);
    let rows = match query.start {
        Start::Oldest => {
            client
                .query(&client.prepare_cached(OLDEST).await?, &[&limit, &budget])
                .await?
        }
        Start::Newest => {
            client
                .query(&client.prepare_cached(NEWEST).await?, &[&limit, &budget])
                .await?
        }
        Start::After(cursor) => {
            // One round trip; only an empty page needs to know whether the
            // cursor exists (end of the list) or not (404).
            let rows = client
                .query(
                    &client.prepare_cached(AFTER).await?,
                    &[&limit, &budget, &cursor],
                )
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
    let mut next = None;
    for row in &rows {
        let id: Uuid = row.try_get(0)?;
        let record = StoredMessage {
            id,
            msg: row.try_get(1)?,
            created_at: row.try_get(2)?,
            received_at: row.try_get(3)?,
        };
        let more: bool = row.try_get(4)?;
        next = more.then_some(id);
        match serde_json::to_string(&record) {
            Ok(json) => parts.push(json),
            // Only rows pong wrote exist, and those serialised on the way in.
            Err(error) => tracing::warn!(%id, %error, "stored row cannot be serialised, skipped"),
        }
    }
    // Fewer rows than asked while more follow: the byte bound ended it.
    let cut = next.is_some() && rows.len() < query.limit;
    Ok(Page::Found(super::super::Page {
        json: join_array(&parts),
        next,
        cut,
    }))
}
