//! The SQL of domain events, on both engines.
//!
//! Order. A reader takes a partition's events in `(tx, position)` order and
//! remembers the last pair it passed (its cursor). That order must never put
//! an event that is still to commit before one already passed.
//!
//! * SQLite has one writer at a time, so `position` (AUTOINCREMENT) is commit
//!   order and `tx` is always 0.
//! * On PostgreSQL positions commit out of order. Each event therefore
//!   carries the id of the transaction that wrote it, and readers take only
//!   events whose `tx` is below the oldest transaction still running
//!   (`pg_snapshot_xmin` of the statement's own snapshot). Every writer
//!   that could still commit has an id at or above that horizon, so nothing
//!   can appear below it later; no gap is ever skipped and none is waited
//!   on with a timeout. The cost: a transaction left open holds back every
//!   reader until it ends.
//! * Events of one key must reach subscribers in publish order even when
//!   the later publisher's transaction id is lower (it took its id before
//!   the earlier one, then waited on a lock). Publishing upserts the key's
//!   row in `hearth_event_key`: the upsert waits for a concurrent publisher
//!   of the same key to finish and stores the greater of the two ids, and
//!   the event takes that value as its `tx`. A stored `tx` is never below
//!   the writer's own id, so the horizon argument above still holds.

use crate::db::{Db, Tx, TxConn, quote_ident};

// The SQL built with `format!` below (wrapped in `AssertSqlSafe`) only
// splices in this file's constants (column lists, the horizon expression);
// every value is bound.

/// How many partitions each subscriber's stream is split into. Events of
/// one key always land in the same partition, so they stay ordered;
/// different partitions are handled in parallel, on one node or several.
/// Stored with every event: changing it would reorder keys.
pub(crate) const PARTS: i16 = 4;

/// The horizon expression: the oldest running transaction id of the
/// statement's snapshot (PostgreSQL only).
const PG_HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// A module's event-state table (`hearth_event_cursor`, `hearth_event_held`
/// or `hearth_event_outbox`): in the SQLite file of its own when it has
/// one, so that it commits with the module's writes (WAL commits attached
/// files one by one), in the main database otherwise.
fn state_table(file: Option<&str>, table: &str) -> String {
    match file {
        Some(schema) => format!("{}.{table}", quote_ident(schema)),
        None => table.to_owned(),
    }
}

/// The partition of an event with `key`; keyless events are spread at random.
pub(crate) fn part_of(key: Option<&str>) -> i16 {
    match key {
        Some(k) => {
            // FNV-1a: stable across builds and platforms, unlike std's hasher.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in k.as_bytes() {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            (h % PARTS as u64) as i16
        }
        None => fastrand::i16(0..PARTS),
    }
}

/// An event to write.
pub(crate) struct NewEvent<'a> {
    pub(crate) part: i16,
    pub(crate) id: uuid::Uuid,
    pub(crate) name: &'a str,
    pub(crate) version: i32,
    pub(crate) module: &'a str,
    pub(crate) actor: Option<i64>,
    pub(crate) key: Option<&'a str>,
    pub(crate) payload: &'a str,
    pub(crate) published_at: i64,
}

/// Writes `e` in `tx`; returns its position, or `None` when it went to the
/// outbox of a module with a file of its own (it gets a position when it is
/// relayed, see [`relay`]).
pub(crate) async fn insert(tx: &mut Tx, e: &NewEvent<'_>) -> Result<Option<i64>, sqlx::Error> {
    if let Some(file) = tx.file_of(e.module) {
        let sql = format!(
            "INSERT INTO {} (part, id, name, version, module, actor, key, payload, published_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            state_table(Some(file), "hearth_event_outbox")
        );
        crate::with_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(e.part)
            .bind(e.id.to_string())
            .bind(e.name)
            .bind(e.version)
            .bind(e.module)
            .bind(e.actor)
            .bind(e.key)
            .bind(e.payload)
            .bind(e.published_at)
            .execute(&mut **c)
            .await
            .map(|_| ()))?;
        return Ok(None);
    }
    let position = match tx.conn_mut() {
        TxConn::Sqlite(c) => {
            sqlx::query_scalar(
                "INSERT INTO hearth_event (tx, part, id, name, version, module, actor, key, payload, published_at)
                 VALUES (0, $1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING position",
            )
            .bind(e.part)
            .bind(e.id.to_string())
            .bind(e.name)
            .bind(e.version)
            .bind(e.module)
            .bind(e.actor)
            .bind(e.key)
            .bind(e.payload)
            .bind(e.published_at)
            .fetch_one(&mut **c)
            .await
        }
        TxConn::Postgres(c) => match e.key {
            Some(key) => {
                sqlx::query_scalar(
                    "WITH k AS (
                         INSERT INTO hearth_event_key (key, tx)
                         VALUES ($7, pg_current_xact_id()::text::bigint)
                         ON CONFLICT (key) DO UPDATE SET tx = GREATEST(hearth_event_key.tx, EXCLUDED.tx)
                         RETURNING tx)
                     INSERT INTO hearth_event (tx, part, id, name, version, module, actor, key, payload, published_at)
                     SELECT k.tx, $1, $2::uuid, $3, $4, $5, $6, $7, $8, $9 FROM k RETURNING position",
                )
                .bind(e.part)
                .bind(e.id.to_string())
                .bind(e.name)
                .bind(e.version)
                .bind(e.module)
                .bind(e.actor)
                .bind(key)
                .bind(e.payload)
                .bind(e.published_at)
                .fetch_one(&mut **c)
                .await
            }
            None => {
                sqlx::query_scalar(
                    "INSERT INTO hearth_event (tx, part, id, name, version, module, actor, key, payload, published_at)
                     VALUES (pg_current_xact_id()::text::bigint, $1, $2::uuid, $3, $4, $5, $6, NULL, $7, $8)
                     RETURNING position",
                )
                .bind(e.part)
                .bind(e.id.to_string())
                .bind(e.name)
                .bind(e.version)
                .bind(e.module)
                .bind(e.actor)
                .bind(e.payload)
                .bind(e.published_at)
                .fetch_one(&mut **c)
                .await
            }
        },
    }?;
    Ok(Some(position))
}

/// How many outbox rows one relay transaction copies.
const RELAY_BATCH: i64 = 500;

/// Copies events from the outbox in `module`'s own SQLite file into
/// `hearth_event`, in the order they were published; returns how many.
///
/// The two files commit apart, in an order hearth does not rely on, so
/// the copy never deletes what it copies in the same transaction. The
/// main file records how far the module's outbox is copied
/// (`hearth_event_relay`) in the transaction that copies; the next relay
/// first clears the rows up to that mark, which that record proves are
/// copied already. A crash between the two commits therefore leaves
/// either nothing done or rows that are cleared later: never a lost or a
/// doubled event.
pub(crate) async fn relay(db: &Db, module: &str) -> Result<u64, sqlx::Error> {
    let (Db::Sqlite(pool, _), Some(file)) = (db, db.file_of(module)) else {
        return Ok(0);
    };
    let outbox = state_table(Some(file), "hearth_event_outbox");
    // Checked without the write lock: most passes find nothing.
    let pending: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {outbox})"
    )))
    .fetch_one(pool)
    .await?;
    if !pending {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let TxConn::Sqlite(c) = tx.conn_mut() else {
        return Ok(0);
    };
    let mark: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT seq FROM hearth_event_relay WHERE module = $1), 0)",
    )
    .bind(module)
    .fetch_one(&mut **c)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {outbox} WHERE seq <= $1"
    )))
    .bind(mark)
    .execute(&mut **c)
    .await?;
    let top: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT MAX(seq) FROM (SELECT seq FROM {outbox} WHERE seq > $1 ORDER BY seq LIMIT $2)"
    )))
    .bind(mark)
    .bind(RELAY_BATCH)
    .fetch_one(&mut **c)
    .await?;
    let Some(top) = top else {
        tx.commit().await?;
        return Ok(0);
    };
    // In `seq` order, so that positions keep the publishing order (and
    // with it each key's order).
    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO hearth_event (tx, part, id, name, version, module, actor, key, payload, published_at)
         SELECT 0, part, id, name, version, module, actor, key, payload, published_at
         FROM {outbox} WHERE seq > $1 AND seq <= $2 ORDER BY seq"
    )))
    .bind(mark)
    .bind(top)
    .execute(&mut **c)
    .await?
    .rows_affected();
    sqlx::query(
        "INSERT INTO hearth_event_relay (module, seq) VALUES ($1, $2)
         ON CONFLICT (module) DO UPDATE SET seq = excluded.seq",
    )
    .bind(module)
    .bind(top)
    .execute(&mut **c)
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Wakes readers on other nodes after the publishing transaction commits.
pub(crate) const PG_CHANNEL: &str = "hearth_events";

/// Sends the wake-up for readers on other nodes, inside `tx` (PostgreSQL
/// delivers it at commit, once per transaction however often it is sent).
pub(crate) async fn announce(tx: &mut Tx) -> Result<(), sqlx::Error> {
    if let TxConn::Postgres(c) = tx.conn_mut() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(PG_CHANNEL)
            .execute(&mut **c)
            .await?;
    }
    Ok(())
}

/// A stored event, as a reader sees it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) position: i64,
    pub(crate) tx: i64,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) module: String,
    pub(crate) actor: Option<i64>,
    pub(crate) key: Option<String>,
    pub(crate) payload: String,
    pub(crate) published_at: i64,
}

const COLUMNS_SQLITE: &str =
    "position, tx, id, name, version, module, actor, key, payload, published_at";
const COLUMNS_PG: &str = "position, tx, id::text AS id, name, version::bigint AS version, module, actor, key, payload, published_at";

fn stored<R>(r: &R) -> Result<Stored, sqlx::Error>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Stored {
        position: r.try_get("position")?,
        tx: r.try_get("tx")?,
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        module: r.try_get("module")?,
        actor: r.try_get("actor")?,
        key: r.try_get("key")?,
        payload: r.try_get("payload")?,
        published_at: r.try_get("published_at")?,
    })
}

/// A partition's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cursor {
    pub(crate) tx: i64,
    pub(crate) position: i64,
}

/// Creates `module`'s cursors if they do not exist: at the start of the
/// retained history, or past everything already readable.
pub(crate) async fn init_cursors(
    db: &Db,
    module: &str,
    from_now: bool,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let start = if from_now {
        match tx.conn_mut() {
            TxConn::Sqlite(c) => {
                let p: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM hearth_event")
                        .fetch_one(&mut **c)
                        .await?;
                Cursor { tx: 0, position: p }
            }
            TxConn::Postgres(c) => {
                // Everything below the horizon is passed; whatever is still
                // running commits above it and will be read.
                let h: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {PG_HORIZON}")))
                        .fetch_one(&mut **c)
                        .await?;
                Cursor {
                    tx: h - 1,
                    position: i64::MAX,
                }
            }
        }
    } else {
        Cursor { tx: 0, position: 0 }
    };
    let sql = format!(
        "INSERT INTO {} (module, part, tx, position, handled, updated_at)
         VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (module, part) DO NOTHING",
        state_table(db.file_of(module), "hearth_event_cursor")
    );
    for part in 0..PARTS {
        crate::with_tx!(&mut tx, c => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(module)
        .bind(part)
        .bind(start.tx)
        .bind(start.position)
        .bind(now)
        .execute(&mut **c)
        .await
        .map(|_| ()))?;
    }
    tx.commit().await
}

/// What a reader may find in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// Events past the cursor that may be read, or held events that are due.
    Ready,
    /// Events past the cursor that may not be read yet: a transaction older
    /// than them is still open (PostgreSQL).
    HeldBack,
    /// Nothing.
    None,
}

/// What `module` has to do in `part`, checked without taking a lock.
pub(crate) async fn has_work(
    db: &Db,
    module: &str,
    part: i16,
    now: i64,
) -> Result<Work, sqlx::Error> {
    let horizon = match db {
        Db::Sqlite(..) => "1 = 1".to_owned(),
        Db::Postgres(_) => format!("e.tx < {PG_HORIZON}"),
    };
    let file = db.file_of(module);
    let cursors = state_table(file, "hearth_event_cursor");
    let held = state_table(file, "hearth_event_held");
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {cursors} c JOIN hearth_event e
                          ON e.part = c.part AND (e.tx, e.position) > (c.tx, c.position)
                        WHERE c.module = $1 AND c.part = $2 AND {horizon})
             OR EXISTS (SELECT 1 FROM {held} h
                        WHERE h.module = $1 AND h.part = $2
                          AND ((h.state = 'retry' AND h.next_at <= $3)
                               OR (h.state = 'waiting' AND NOT EXISTS (
                                   SELECT 1 FROM {held} f
                                   WHERE f.module = h.module AND f.key = h.key
                                     AND (f.tx, f.position) < (h.tx, h.position))))),
                EXISTS (SELECT 1 FROM {cursors} c JOIN hearth_event e
                          ON e.part = c.part AND (e.tx, e.position) > (c.tx, c.position)
                        WHERE c.module = $1 AND c.part = $2)"
    );
    let (ready, any): (bool, bool) = crate::with_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(module)
        .bind(part)
        .bind(now)
        .fetch_one(pool)
        .await)?;
    Ok(if ready {
        Work::Ready
    } else if any {
        Work::HeldBack
    } else {
        Work::None
    })
}

/// Locks `module`'s cursor of `part` for this transaction; `None` when
/// another node holds it (PostgreSQL) or it does not exist.
pub(crate) async fn lock_cursor(
    tx: &mut Tx,
    module: &str,
    part: i16,
) -> Result<Option<Cursor>, sqlx::Error> {
    let cursors = state_table(tx.file_of(module), "hearth_event_cursor");
    let row: Option<(i64, i64)> = match tx.conn_mut() {
        TxConn::Sqlite(c) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT tx, position FROM {cursors} WHERE module = $1 AND part = $2"
            )))
            .bind(module)
            .bind(part)
            .fetch_optional(&mut **c)
            .await?
        }
        TxConn::Postgres(c) => {
            sqlx::query_as(
                "SELECT tx, position FROM hearth_event_cursor WHERE module = $1 AND part = $2
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(module)
            .bind(part)
            .fetch_optional(&mut **c)
            .await?
        }
    };
    Ok(row.map(|(tx, position)| Cursor { tx, position }))
}

/// Moves a locked cursor to `to`, counting `handled` more events.
pub(crate) async fn advance(
    tx: &mut Tx,
    module: &str,
    part: i16,
    to: Cursor,
    handled: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE {} SET tx = $3, position = $4, handled = handled + $5, updated_at = $6
         WHERE module = $1 AND part = $2",
        state_table(tx.file_of(module), "hearth_event_cursor")
    );
    crate::with_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
    .bind(module)
    .bind(part)
    .bind(to.tx)
    .bind(to.position)
    .bind(handled)
    .bind(now)
    .execute(&mut **c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Up to `limit` readable events of `part` after `from`, in order.
pub(crate) async fn read(
    tx: &mut Tx,
    part: i16,
    from: Cursor,
    limit: i64,
) -> Result<Vec<Stored>, sqlx::Error> {
    match tx.conn_mut() {
        TxConn::Sqlite(c) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS_SQLITE} FROM hearth_event
                 WHERE part = $1 AND (tx, position) > ($2, $3)
                 ORDER BY tx, position LIMIT $4"
            )))
            .bind(part)
            .bind(from.tx)
            .bind(from.position)
            .bind(limit)
            .fetch_all(&mut **c)
            .await?;
            rows.iter().map(stored).collect()
        }
        TxConn::Postgres(c) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS_PG} FROM hearth_event
                 WHERE part = $1 AND (tx, position) > ($2, $3) AND tx < {PG_HORIZON}
                 ORDER BY tx, position LIMIT $4"
            )))
            .bind(part)
            .bind(from.tx)
            .bind(from.position)
            .bind(limit)
            .fetch_all(&mut **c)
            .await?;
            rows.iter().map(stored).collect()
        }
    }
}

/// One event by position.
pub(crate) async fn get(tx: &mut Tx, position: i64) -> Result<Option<Stored>, sqlx::Error> {
    match tx.conn_mut() {
        TxConn::Sqlite(c) => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS_SQLITE} FROM hearth_event WHERE position = $1"
            )))
            .bind(position)
            .fetch_optional(&mut **c)
            .await?;
            row.as_ref().map(stored).transpose()
        }
        TxConn::Postgres(c) => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS_PG} FROM hearth_event WHERE position = $1"
            )))
            .bind(position)
            .fetch_optional(&mut **c)
            .await?;
            row.as_ref().map(stored).transpose()
        }
    }
}

/// A held event of one module.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Held {
    /// The subscribing module.
    pub module: String,
    /// The event's position.
    pub position: i64,
    /// The event's name (empty when the event is gone).
    pub name: String,
    /// The ordering key; later events of it wait.
    pub key: Option<String>,
    /// `retry` (failed, will run again), `parked` (out of attempts, waits
    /// for `events retry` or `events skip`) or `waiting` (behind another).
    pub state: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When the next attempt runs (Unix ms), for `retry`.
    pub next_at: i64,
    /// The last failure.
    pub error: Option<String>,
    /// When it was taken out of the stream (Unix ms).
    pub held_at: i64,
}

type HeldRow = (
    String,
    i64,
    Option<String>,
    String,
    i64,
    i64,
    Option<String>,
    i64,
    Option<String>,
);

fn held_from(r: HeldRow) -> Held {
    Held {
        module: r.0,
        position: r.1,
        key: r.2,
        state: r.3,
        attempts: r.4,
        next_at: r.5,
        error: r.6,
        held_at: r.7,
        name: r.8.unwrap_or_default(),
    }
}

/// The columns of [`HeldRow`] from a module's held events (in `file`, or
/// in the main database).
fn held_select(file: Option<&str>) -> String {
    format!(
        "SELECT h.module, h.position, h.key, h.state, CAST(h.attempts AS BIGINT), h.next_at, h.error, h.held_at, e.name
         FROM {} h LEFT JOIN hearth_event e ON e.position = h.position",
        state_table(file, "hearth_event_held")
    )
}

/// The held events of `module` in `part`, grouped by key, in order.
pub(crate) async fn held_of(
    tx: &mut Tx,
    module: &str,
    part: i16,
) -> Result<Vec<Held>, sqlx::Error> {
    let sql = format!(
        "{} WHERE h.module = $1 AND h.part = $2 ORDER BY h.key, h.tx, h.position",
        held_select(tx.file_of(module))
    );
    let rows: Vec<HeldRow> = crate::with_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(module)
        .bind(part)
        .fetch_all(&mut **c)
        .await)?;
    Ok(rows.into_iter().map(held_from).collect())
}

/// Held events of every module (or one), in order; at most `limit`.
pub(crate) async fn held_list(
    db: &Db,
    module: Option<&str>,
    limit: i64,
) -> Result<Vec<Held>, sqlx::Error> {
    let mut out = Vec::new();
    // The main database, then each module file (which holds one module's).
    for file in std::iter::once(None).chain(db.module_files().iter().map(|f| Some(f.module))) {
        if let (Some(f), Some(m)) = (file, module)
            && f != m
        {
            continue;
        }
        let sql = format!(
            "{} WHERE ($1 IS NULL OR h.module = $1)
             ORDER BY h.module, h.key, h.tx, h.position LIMIT $2",
            held_select(file)
        );
        let rows: Vec<HeldRow> = crate::with_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(module)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        out.extend(rows.into_iter().map(held_from));
    }
    // Stable: each module's rows keep their order.
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(out)
}

/// Takes event `e` out of `module`'s stream.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn hold(
    tx: &mut Tx,
    module: &str,
    part: i16,
    e: &Stored,
    state: &str,
    attempts: i64,
    next_at: i64,
    error: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {} (module, position, part, tx, key, state, attempts, next_at, error, held_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        state_table(tx.file_of(module), "hearth_event_held")
    );
    crate::with_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
    .bind(module)
    .bind(e.position)
    .bind(part)
    .bind(e.tx)
    .bind(e.key.as_deref())
    .bind(state)
    .bind(attempts as i32)
    .bind(next_at)
    .bind(error)
    .bind(now)
    .execute(&mut **c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Records another failure of a held event.
pub(crate) async fn set_held(
    tx: &mut Tx,
    module: &str,
    position: i64,
    state: &str,
    attempts: i64,
    next_at: i64,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE {} SET state = $3, attempts = $4, next_at = $5, error = $6
         WHERE module = $1 AND position = $2",
        state_table(tx.file_of(module), "hearth_event_held")
    );
    crate::with_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
    .bind(module)
    .bind(position)
    .bind(state)
    .bind(attempts as i32)
    .bind(next_at)
    .bind(error)
    .execute(&mut **c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Removes a held event (handled, or skipped).
pub(crate) async fn release(tx: &mut Tx, module: &str, position: i64) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM {} WHERE module = $1 AND position = $2",
        state_table(tx.file_of(module), "hearth_event_held")
    );
    crate::with_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
    .bind(module)
    .bind(position)
    .execute(&mut **c)
    .await
    .map(|r| r.rows_affected()))
}

/// Per module: cursors' progress, what is still to read, and what is held.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleStatus {
    /// The subscribing module.
    pub module: String,
    /// Events handled so far (by this module, over its life).
    pub handled: i64,
    /// Events published but not yet read by this module (any name).
    pub behind: i64,
    /// Age in milliseconds of the oldest event it has not read yet; 0 when caught up.
    pub lag_ms: i64,
    /// Events in `retry`.
    pub retrying: i64,
    /// Events `parked`.
    pub parked: i64,
    /// Events waiting behind a held one.
    pub waiting: i64,
}

/// The status of every module with cursors.
pub(crate) async fn status(db: &Db, now: i64) -> Result<Vec<ModuleStatus>, sqlx::Error> {
    type Row = (String, i64, i64, Option<i64>, i64, i64, i64);
    let mut rows: Vec<Row> = Vec::new();
    // The main database, then each module file.
    for file in std::iter::once(None).chain(db.module_files().iter().map(|f| Some(f.module))) {
        let cursors = state_table(file, "hearth_event_cursor");
        let held = state_table(file, "hearth_event_held");
        let sql = format!(
            "SELECT c.module,
                    SUM(c.handled)::bigint,
                    (SELECT COUNT(*) FROM hearth_event e JOIN {cursors} c2
                       ON c2.module = c.module AND e.part = c2.part AND (e.tx, e.position) > (c2.tx, c2.position))::bigint,
                    (SELECT MIN(e.published_at) FROM hearth_event e JOIN {cursors} c2
                       ON c2.module = c.module AND e.part = c2.part AND (e.tx, e.position) > (c2.tx, c2.position)),
                    (SELECT COUNT(*) FROM {held} h WHERE h.module = c.module AND h.state = 'retry')::bigint,
                    (SELECT COUNT(*) FROM {held} h WHERE h.module = c.module AND h.state = 'parked')::bigint,
                    (SELECT COUNT(*) FROM {held} h WHERE h.module = c.module AND h.state = 'waiting')::bigint
             FROM {cursors} c GROUP BY c.module ORDER BY c.module"
        );
        let sql = match db {
            // SQLite has no `::` casts; its integers are already 64-bit.
            Db::Sqlite(..) => sql.replace("::bigint", ""),
            Db::Postgres(_) => sql,
        };
        rows.extend(crate::with_db!(db, pool => sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool).await)?);
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(rows
        .into_iter()
        .map(|r| ModuleStatus {
            module: r.0,
            handled: r.1,
            behind: r.2,
            lag_ms: r.3.map_or(0, |t| (now - t).max(0)),
            retrying: r.4,
            parked: r.5,
            waiting: r.6,
        })
        .collect())
}

/// Deletes up to `limit` events published before `cutoff` that every
/// cursor has passed and no module holds; returns how many.
pub(crate) async fn purge(db: &Db, cutoff: i64, limit: i64) -> Result<u64, sqlx::Error> {
    // Every cursor and every hold counts, in the main database and in each
    // module file.
    let mut guards = String::new();
    for file in std::iter::once(None).chain(db.module_files().iter().map(|f| Some(f.module))) {
        guards.push_str(&format!(
            "
                     AND NOT EXISTS (SELECT 1 FROM {} c
                                     WHERE c.part = e.part AND (c.tx, c.position) < (e.tx, e.position))
                     AND NOT EXISTS (SELECT 1 FROM {} h WHERE h.position = e.position)",
            state_table(file, "hearth_event_cursor"),
            state_table(file, "hearth_event_held")
        ));
    }
    let sql = format!(
        "DELETE FROM hearth_event WHERE position IN (
                   SELECT e.position FROM hearth_event e
                   WHERE e.published_at < $1{guards}
                   LIMIT $2)"
    );
    let n = crate::with_db!(db, pool => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(cutoff)
        .bind(limit)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    if let Db::Postgres(pool) = db {
        // A key's row only matters while a running transaction could sort
        // below it; below the horizon every new id is higher anyway.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM hearth_event_key WHERE tx < {PG_HORIZON}"
        )))
        .execute(pool)
        .await?;
    }
    Ok(n)
}

/// Sends `module` back to the start of the retained history: cursors to
/// the beginning, held events dropped. Runs in `tx` with the module's own
/// clearing of its projection.
pub(crate) async fn rewind(tx: &mut Tx, module: &str, now: i64) -> Result<u64, sqlx::Error> {
    let file = tx.file_of(module);
    let held = format!(
        "DELETE FROM {} WHERE module = $1",
        state_table(file, "hearth_event_held")
    );
    let cursors = format!(
        "UPDATE {} SET tx = 0, position = 0, updated_at = $2 WHERE module = $1",
        state_table(file, "hearth_event_cursor")
    );
    crate::with_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(held.clone()))
        .bind(module)
        .execute(&mut **c)
        .await
        .map(|_| ()))?;
    crate::with_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(cursors.clone()))
    .bind(module)
    .bind(now)
    .execute(&mut **c)
    .await
    .map(|r| r.rows_affected()))
}

/// The oldest retained event: position and publication time.
pub(crate) async fn oldest(db: &Db) -> Result<Option<(i64, i64)>, sqlx::Error> {
    crate::with_db!(db, pool => sqlx::query_as(
        "SELECT position, published_at FROM hearth_event ORDER BY position LIMIT 1",
    )
    .fetch_optional(pool)
    .await)
}

/// Marks a held event for another attempt now: a parked one gets a fresh
/// set of attempts. Returns false when `module` holds no such event.
pub(crate) async fn retry_held(
    db: &Db,
    module: &str,
    position: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE {} SET state = 'retry', attempts = 0, next_at = $3
         WHERE module = $1 AND position = $2 AND state <> 'waiting'",
        state_table(db.file_of(module), "hearth_event_held")
    );
    let n = crate::with_db!(db, pool => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
    .bind(module)
    .bind(position)
    .bind(now)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Drops a held event of `module` without handling it; the events waiting
/// behind it become due. Returns the dropped event, or `None`.
pub(crate) async fn skip_held(
    db: &Db,
    module: &str,
    position: i64,
) -> Result<Option<Held>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let sql = format!(
        "{} WHERE h.module = $1 AND h.position = $2",
        held_select(db.file_of(module))
    );
    let row: Option<HeldRow> = crate::with_tx!(&mut tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(module)
        .bind(position)
        .fetch_optional(&mut **c)
        .await)?;
    let Some(row) = row else {
        return Ok(None);
    };
    release(&mut tx, module, position).await?;
    tx.commit().await?;
    Ok(Some(held_from(row)))
}
