//! Reads and writes of `members_profile` and `members_block`, the same SQL
//! on both engines.

use hearth::db::Tx;
use hearth::{Db, sqlx, with_db, with_tx};

/// A member's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The account id.
    pub member: i64,
    /// The name others see.
    pub display_name: String,
    /// A few words about them.
    pub bio: String,
    /// Their city.
    pub city: String,
}

type Row = (i64, String, String, String);

fn profile((member, display_name, bio, city): Row) -> Profile {
    Profile {
        member,
        display_name,
        bio,
        city,
    }
}

/// The profile of `member`, if they have one.
pub async fn get(db: &Db, member: i64) -> Result<Option<Profile>, sqlx::Error> {
    let row: Option<Row> = with_db!(db, p => sqlx::query_as(
        "SELECT member, display_name, bio, city FROM members_profile WHERE member = $1",
    )
    .bind(member)
    .fetch_optional(p)
    .await)?;
    Ok(row.map(profile))
}

/// Profiles `viewer` may see (none of the two blocked the other), by name,
/// at most `limit`.
pub async fn directory(db: &Db, viewer: i64, limit: i64) -> Result<Vec<Profile>, sqlx::Error> {
    let rows: Vec<Row> = with_db!(db, p => sqlx::query_as(
        "SELECT member, display_name, bio, city FROM members_profile m
         WHERE NOT EXISTS (SELECT 1 FROM members_block b
                           WHERE (b.blocker = $1 AND b.blocked = m.member)
                              OR (b.blocker = m.member AND b.blocked = $1))
         ORDER BY lower(display_name), member LIMIT $2",
    )
    .bind(viewer)
    .bind(limit)
    .fetch_all(p)
    .await)?;
    Ok(rows.into_iter().map(profile).collect())
}

/// Creates or replaces `member`'s profile in `tx`, unless what is stored
/// was saved later than `now`.
pub async fn save(tx: &mut Tx, p: &Profile, now: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "INSERT INTO members_profile (member, display_name, bio, city, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (member) DO UPDATE SET display_name = excluded.display_name,
             bio = excluded.bio, city = excluded.city, updated_at = excluded.updated_at
         WHERE members_profile.updated_at <= excluded.updated_at",
    )
    .bind(p.member)
    .bind(&p.display_name)
    .bind(&p.bio)
    .bind(&p.city)
    .bind(now)
    .execute(&mut **t)
    .await
    .map(|_| ()))
}

/// Whether either of `a` and `b` blocked the other.
pub async fn blocked_between(db: &Db, a: i64, b: i64) -> Result<bool, sqlx::Error> {
    with_db!(db, p => sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM members_block
                        WHERE (blocker = $1 AND blocked = $2) OR (blocker = $2 AND blocked = $1))",
    )
    .bind(a)
    .bind(b)
    .fetch_one(p)
    .await)
}

/// Records that `blocker` blocked `blocked`; false if it already had.
pub async fn block(tx: &mut Tx, blocker: i64, blocked: i64, now: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query(
        "INSERT INTO members_block (blocker, blocked, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (blocker, blocked) DO NOTHING",
    )
    .bind(blocker)
    .bind(blocked)
    .bind(now)
    .execute(&mut **t)
    .await
    .map(|r| r.rows_affected() == 1))
}

/// Lifts `blocker`'s block of `blocked`; false if there was none.
pub async fn unblock(tx: &mut Tx, blocker: i64, blocked: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query("DELETE FROM members_block WHERE blocker = $1 AND blocked = $2")
        .bind(blocker)
        .bind(blocked)
        .execute(&mut **t)
        .await
        .map(|r| r.rows_affected() == 1))
}

/// Whom `blocker` blocked: their id and, when they have a profile, name.
pub async fn blocked_by(db: &Db, blocker: i64) -> Result<Vec<(i64, Option<String>)>, sqlx::Error> {
    with_db!(db, p => sqlx::query_as(
        "SELECT b.blocked, m.display_name FROM members_block b
         LEFT JOIN members_profile m ON m.member = b.blocked
         WHERE b.blocker = $1 ORDER BY b.created_at, b.blocked",
    )
    .bind(blocker)
    .fetch_all(p)
    .await)
}

/// Whether either account was deleted, as this module has heard.
pub async fn gone(tx: &mut Tx, a: i64, b: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, t => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM members_gone WHERE member = $1 OR member = $2)")
        .bind(a).bind(b).fetch_one(&mut **t).await)
}

/// Forgets a deleted account: its profile and every block it is part of,
/// and remembers that it is gone.
pub async fn forget(tx: &mut Tx, member: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query("INSERT INTO members_gone (member) VALUES ($1) ON CONFLICT (member) DO NOTHING")
        .bind(member).execute(&mut **t).await.map(|_| ()))?;
    with_tx!(tx, t => sqlx::query("DELETE FROM members_profile WHERE member = $1")
        .bind(member).execute(&mut **t).await.map(|_| ()))?;
    with_tx!(tx, t => sqlx::query("DELETE FROM members_block WHERE blocker = $1 OR blocked = $1")
        .bind(member).execute(&mut **t).await.map(|_| ()))
}

/// Clears both tables inside `tx` (a replay rebuilds them from events).
pub async fn clear_tx(tx: &mut Tx) -> Result<(), sqlx::Error> {
    with_tx!(tx, t => sqlx::query("DELETE FROM members_gone").execute(&mut **t).await.map(|_| ()))?;
    with_tx!(tx, t => sqlx::query("DELETE FROM members_block").execute(&mut **t).await.map(|_| ()))?;
    with_tx!(tx, t => sqlx::query("DELETE FROM members_profile").execute(&mut **t).await.map(|_| ()))
}

/// Deletes everything (the module's reset for tests).
pub async fn clear(db: &Db) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    clear_tx(&mut tx).await?;
    tx.commit().await
}
