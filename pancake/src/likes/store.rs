//! Reads and writes of the likes module's tables, the same SQL on both engines.

use hearth::db::Tx;
use hearth::{Db, sqlx, with_db, with_tx};

/// Whether either member blocked the other, as this module has heard.
pub async fn blocked_between(db: &Db, a: i64, b: i64) -> Result<bool, sqlx::Error> {
    with_db!(db, p => sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM likes_block
                        WHERE (blocker = $1 AND blocked = $2) OR (blocker = $2 AND blocked = $1))",
    )
    .bind(a)
    .bind(b)
    .fetch_one(p)
    .await)
}

/// Whether either member blocked the other, inside `tx`.
pub async fn blocked_between_tx(tx: &mut Tx, a: i64, b: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM likes_block
                        WHERE (blocker = $1 AND blocked = $2) OR (blocker = $2 AND blocked = $1))",
    )
    .bind(a)
    .bind(b)
    .fetch_one(&mut **t)
    .await)
}

/// Whether either account was deleted, as this module has heard.
pub async fn gone(tx: &mut Tx, a: i64, b: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM likes_gone WHERE member = $1 OR member = $2)")
        .bind(a).bind(b).fetch_one(&mut **t).await)
}

/// Records a like; false when it existed.
pub async fn like(tx: &mut Tx, liker: i64, liked: i64, now: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "INSERT INTO likes_like (liker, liked, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (liker, liked) DO NOTHING",
    )
    .bind(liker)
    .bind(liked)
    .bind(now)
    .execute(&mut **t)
    .await
    .map(|r| r.rows_affected() == 1))
}

/// Removes a like; false when there was none.
pub async fn unlike(tx: &mut Tx, liker: i64, liked: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query("DELETE FROM likes_like WHERE liker = $1 AND liked = $2")
        .bind(liker)
        .bind(liked)
        .execute(&mut **t)
        .await
        .map(|r| r.rows_affected() == 1))
}

/// Records a block and removes the likes between the two, both ways.
pub async fn block(tx: &mut Tx, blocker: i64, blocked: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "INSERT INTO likes_block (blocker, blocked) VALUES ($1, $2) ON CONFLICT (blocker, blocked) DO NOTHING",
    )
    .bind(blocker)
    .bind(blocked)
    .execute(&mut **t)
    .await
    .map(|_| ()))?;
    with_tx!(tx, t => sqlx::query(
        "DELETE FROM likes_like WHERE (liker = $1 AND liked = $2) OR (liker = $2 AND liked = $1)",
    )
    .bind(blocker)
    .bind(blocked)
    .execute(&mut **t)
    .await
    .map(|_| ()))
}

/// Forgets a block.
pub async fn unblock(tx: &mut Tx, blocker: i64, blocked: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query("DELETE FROM likes_block WHERE blocker = $1 AND blocked = $2")
        .bind(blocker)
        .bind(blocked)
        .execute(&mut **t)
        .await
        .map(|_| ()))
}

/// Records the name `member` goes by.
pub async fn set_name(tx: &mut Tx, member: i64, name: &str) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "INSERT INTO likes_name (member, display_name) VALUES ($1, $2)
         ON CONFLICT (member) DO UPDATE SET display_name = excluded.display_name",
    )
    .bind(member)
    .bind(name)
    .execute(&mut **t)
    .await
    .map(|_| ()))
}

/// Who likes `member` (`incoming`) or whom `member` likes: id and name, newest first.
pub async fn list(
    db: &Db,
    member: i64,
    incoming: bool,
) -> Result<Vec<(i64, Option<String>)>, sqlx::Error> {
    let sql = if incoming {
        "SELECT l.liker, n.display_name FROM likes_like l LEFT JOIN likes_name n ON n.member = l.liker
         WHERE l.liked = $1 ORDER BY l.created_at DESC, l.liker LIMIT 500"
    } else {
        "SELECT l.liked, n.display_name FROM likes_like l LEFT JOIN likes_name n ON n.member = l.liked
         WHERE l.liker = $1 ORDER BY l.created_at DESC, l.liked LIMIT 500"
    };
    with_db!(db, p => sqlx::query_as(sql).bind(member).fetch_all(p).await)
}

/// Forgets a deleted account: its likes both ways, its name, its blocks.
pub async fn forget(tx: &mut Tx, member: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query("INSERT INTO likes_gone (member) VALUES ($1) ON CONFLICT (member) DO NOTHING")
        .bind(member).execute(&mut **t).await.map(|_| ()))?;
    for sql in [
        "DELETE FROM likes_like WHERE liker = $1 OR liked = $1",
        "DELETE FROM likes_name WHERE member = $1",
        "DELETE FROM likes_block WHERE blocker = $1 OR blocked = $1",
    ] {
        with_tx!(tx, t => sqlx::query(sql).bind(member).execute(&mut **t).await.map(|_| ()))?;
    }
    Ok(())
}

/// Clears every table for a replay, which rebuilds them from events.
pub async fn clear_projections(tx: &mut Tx) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query("DELETE FROM likes_like").execute(&mut **t).await.map(|_| ()))?;
    with_tx!(tx, t => sqlx::query("DELETE FROM likes_gone").execute(&mut **t).await.map(|_| ()))?;
    with_tx!(tx, t => sqlx::query("DELETE FROM likes_name").execute(&mut **t).await.map(|_| ()))?;
    with_tx!(tx, t => sqlx::query("DELETE FROM likes_block").execute(&mut **t).await.map(|_| ()))
}

/// Deletes everything (the module's reset for tests).
pub async fn clear(db: &Db) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM likes_like",
        "DELETE FROM likes_name",
        "DELETE FROM likes_block",
        "DELETE FROM likes_gone",
    ] {
        with_db!(db, p => sqlx::query(sql).execute(p).await.map(|_| ()))?;
    }
    Ok(())
}
