//! Reads and writes of the `home_notice` table, the same SQL on both engines.

use hearth::db::Tx;
use hearth::{Db, sqlx, with_db, with_tx};

/// One notice on the home page.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Notice {
    /// Row id.
    pub id: i64,
    /// Short title.
    pub title: String,
    /// Text.
    pub body: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// The newest `limit` notices that have not expired.
pub async fn latest(db: &Db, limit: i64) -> Result<Vec<Notice>, sqlx::Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let rows: Vec<(i64, String, String, i64)> = with_db!(db, pool => sqlx::query_as(
        "SELECT id, title, body, created_at FROM home_notice
         WHERE expires_at IS NULL OR expires_at > $2
         ORDER BY created_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .bind(now)
    .fetch_all(pool)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|(id, title, body, created_at)| Notice {
            id,
            title,
            body,
            created_at,
        })
        .collect())
}

/// Adds a notice and returns its id.
pub async fn add(db: &Db, title: &str, body: &str, created_at: i64) -> Result<i64, sqlx::Error> {
    with_db!(db, pool => sqlx::query_scalar(
        "INSERT INTO home_notice (title, body, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(title)
    .bind(body)
    .bind(created_at)
    .fetch_one(pool)
    .await)
}

/// Inserts a notice inside `tx` and returns it.
pub async fn insert(
    tx: &mut Tx,
    title: &str,
    body: &str,
    created_at: i64,
    expires_at: Option<i64>,
) -> Result<Notice, sqlx::Error> {
    let id: i64 = with_tx!(tx, t => sqlx::query_scalar(
        "INSERT INTO home_notice (title, body, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(title)
    .bind(body)
    .bind(created_at)
    .bind(expires_at)
    .fetch_one(&mut **t)
    .await)?;
    Ok(Notice {
        id,
        title: title.to_owned(),
        body: body.to_owned(),
        created_at,
    })
}

/// Notices stored.
pub async fn total(db: &Db) -> Result<i64, sqlx::Error> {
    with_db!(db, pool => sqlx::query_scalar("SELECT count(*) FROM home_notice")
        .fetch_one(pool)
        .await)
}

/// Notices stored, as seen inside `tx`.
pub async fn count(tx: &mut Tx) -> Result<i64, sqlx::Error> {
    with_tx!(tx, t => sqlx::query_scalar("SELECT count(*) FROM home_notice")
        .fetch_one(&mut **t)
        .await)
}

/// Deletes notices whose expiry is before `now` (unix seconds); returns how many.
pub async fn delete_expired(db: &Db, now: i64) -> Result<u64, sqlx::Error> {
    with_db!(db, pool => sqlx::query("DELETE FROM home_notice WHERE expires_at IS NOT NULL AND expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}

/// Deletes every notice (the module's reset for tests).
pub async fn clear(db: &Db) -> Result<(), sqlx::Error> {
    with_db!(db, pool => sqlx::query("DELETE FROM home_notice")
        .execute(pool)
        .await
        .map(|_| ()))
}
