//! Reads and writes of the alerts module's tables, the same SQL on both
//! engines, and the announcement of a member's unread count.

use hearth::db::Tx;
use hearth::realtime::PubSub;
use hearth::{Db, sqlx, with_db, with_tx};

/// One alert as the page shows it.
#[derive(Debug, Clone)]
pub struct Alert {
    /// What happened: `like`.
    pub kind: String,
    /// Who did it.
    pub actor: i64,
    /// Their name, when this module has heard it.
    pub actor_name: Option<String>,
    /// When, in Unix milliseconds.
    pub created_at: i64,
    /// Whether it was read.
    pub read: bool,
}

/// Whether either member blocked the other, as this module has heard.
pub async fn blocked_between(tx: &mut Tx, a: i64, b: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM alerts_block
                        WHERE (blocker = $1 AND blocked = $2) OR (blocker = $2 AND blocked = $1))",
    )
    .bind(a)
    .bind(b)
    .fetch_one(&mut **t)
    .await)
}

/// Whether either account was deleted, as this module has heard.
pub async fn gone(tx: &mut Tx, a: i64, b: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM alerts_gone WHERE member = $1 OR member = $2)")
        .bind(a).bind(b).fetch_one(&mut **t).await)
}

/// Adds an alert for `owner`.
pub async fn add(
    tx: &mut Tx,
    owner: i64,
    kind: &str,
    actor: i64,
    at: i64,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "INSERT INTO alerts_alert (owner, kind, actor, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(owner)
    .bind(kind)
    .bind(actor)
    .bind(at)
    .execute(&mut **t)
    .await
    .map(|_| ()))
}

/// Removes `owner`'s unread alerts of `kind` by `actor`; whether there were any.
pub async fn take_back(
    tx: &mut Tx,
    owner: i64,
    kind: &str,
    actor: i64,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "DELETE FROM alerts_alert WHERE owner = $1 AND kind = $2 AND actor = $3 AND read_at IS NULL",
    )
    .bind(owner)
    .bind(kind)
    .bind(actor)
    .execute(&mut **t)
    .await
    .map(|r| r.rows_affected() > 0))
}

/// Records a block and removes every alert between the two, both ways.
pub async fn block(tx: &mut Tx, blocker: i64, blocked: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "INSERT INTO alerts_block (blocker, blocked) VALUES ($1, $2) ON CONFLICT (blocker, blocked) DO NOTHING",
    )
    .bind(blocker)
    .bind(blocked)
    .execute(&mut **t)
    .await
    .map(|_| ()))?;
    with_tx!(tx, t => sqlx::query(
        "DELETE FROM alerts_alert WHERE (owner = $1 AND actor = $2) OR (owner = $2 AND actor = $1)",
    )
    .bind(blocker)
    .bind(blocked)
    .execute(&mut **t)
    .await
    .map(|_| ()))
}

/// Forgets a block.
pub async fn unblock(tx: &mut Tx, blocker: i64, blocked: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query("DELETE FROM alerts_block WHERE blocker = $1 AND blocked = $2")
        .bind(blocker)
        .bind(blocked)
        .execute(&mut **t)
        .await
        .map(|_| ()))
}

/// Records the name `member` goes by.
pub async fn set_name(tx: &mut Tx, member: i64, name: &str) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "INSERT INTO alerts_name (member, display_name) VALUES ($1, $2)
         ON CONFLICT (member) DO UPDATE SET display_name = excluded.display_name",
    )
    .bind(member)
    .bind(name)
    .execute(&mut **t)
    .await
    .map(|_| ()))
}

/// `owner`'s unread count, inside `tx`.
async fn unread_in(tx: &mut Tx, owner: i64) -> Result<i64, sqlx::Error> {
    with_tx!(tx, t => sqlx::query_scalar(
        "SELECT count(*) FROM alerts_alert WHERE owner = $1 AND read_at IS NULL",
    )
    .bind(owner)
    .fetch_one(&mut **t)
    .await)
}

/// `owner`'s unread count.
pub async fn unread(db: &Db, owner: i64) -> Result<i64, sqlx::Error> {
    with_db!(db, p => sqlx::query_scalar(
        "SELECT count(*) FROM alerts_alert WHERE owner = $1 AND read_at IS NULL",
    )
    .bind(owner)
    .fetch_one(p)
    .await)
}

/// Publishes `owner`'s unread count on their channel, inside `tx`: their
/// open pages get it once `tx` commits.
pub async fn announce(pubsub: &PubSub, tx: &mut Tx, owner: i64) -> hearth::anyhow::Result<()> {
    let n = unread_in(tx, owner).await?;
    pubsub
        .publish(
            tx,
            &super::channel(owner),
            &serde_json::json!({ "unread": n }),
        )
        .await?;
    Ok(())
}

/// kind, actor, actor's name, created at, read at.
type AlertRow = (String, i64, Option<String>, i64, Option<i64>);

/// `owner`'s newest alerts, at most `limit`.
pub async fn list(db: &Db, owner: i64, limit: i64) -> Result<Vec<Alert>, sqlx::Error> {
    let rows: Vec<AlertRow> = with_db!(db, p => sqlx::query_as(
        "SELECT a.kind, a.actor, n.display_name, a.created_at, a.read_at FROM alerts_alert a
         LEFT JOIN alerts_name n ON n.member = a.actor
         WHERE a.owner = $1 ORDER BY a.id DESC LIMIT $2",
    )
    .bind(owner)
    .bind(limit)
    .fetch_all(p)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|(kind, actor, actor_name, created_at, read_at)| Alert {
            kind,
            actor,
            actor_name,
            created_at,
            read: read_at.is_some(),
        })
        .collect())
}

/// Marks `owner`'s alerts read; how many were unread.
pub async fn mark_read(tx: &mut Tx, owner: i64, now: i64) -> Result<u64, sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "UPDATE alerts_alert SET read_at = $2 WHERE owner = $1 AND read_at IS NULL",
    )
    .bind(owner)
    .bind(now)
    .execute(&mut **t)
    .await
    .map(|r| r.rows_affected()))
}

/// Forgets a deleted account: its alerts, those it caused, its name and
/// blocks. Returns the members whose unread count dropped.
pub async fn forget(tx: &mut Tx, member: i64) -> Result<Vec<i64>, sqlx::Error> {
    let owners: Vec<i64> = with_tx!(tx, t => sqlx::query_scalar(
        "SELECT DISTINCT owner FROM alerts_alert WHERE actor = $1 AND owner <> $1 AND read_at IS NULL",
    )
    .bind(member)
    .fetch_all(&mut **t)
    .await)?;
    with_tx!(tx, t => sqlx::query("INSERT INTO alerts_gone (member) VALUES ($1) ON CONFLICT (member) DO NOTHING")
        .bind(member).execute(&mut **t).await.map(|_| ()))?;
    for sql in [
        "DELETE FROM alerts_alert WHERE owner = $1 OR actor = $1",
        "DELETE FROM alerts_name WHERE member = $1",
        "DELETE FROM alerts_block WHERE blocker = $1 OR blocked = $1",
    ] {
        with_tx!(tx, t => sqlx::query(sql).bind(member).execute(&mut **t).await.map(|_| ()))?;
    }
    Ok(owners)
}

/// Clears every table inside `tx` (a replay rebuilds them).
pub async fn clear_tx(tx: &mut Tx) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM alerts_alert",
        "DELETE FROM alerts_name",
        "DELETE FROM alerts_block",
        "DELETE FROM alerts_gone",
    ] {
        with_tx!(tx, t => sqlx::query(sql).execute(&mut **t).await.map(|_| ()))?;
    }
    Ok(())
}

/// Deletes everything (the module's reset for tests).
pub async fn clear(db: &Db) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    clear_tx(&mut tx).await?;
    tx.commit().await
}
