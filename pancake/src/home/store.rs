//! Reads and writes of the `home_notice` table, the same SQL on both engines.

use hearth::{Db, sqlx, with_db};

/// One notice on the home page.
#[derive(Debug, Clone, serde::Serialize)]
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

/// The newest `limit` notices.
pub async fn latest(db: &Db, limit: i64) -> Result<Vec<Notice>, sqlx::Error> {
    let rows: Vec<(i64, String, String, i64)> = with_db!(db, pool => sqlx::query_as(
        "SELECT id, title, body, created_at FROM home_notice ORDER BY created_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
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

/// Deletes every notice (the module's reset for tests).
pub async fn clear(db: &Db) -> Result<(), sqlx::Error> {
    with_db!(db, pool => sqlx::query("DELETE FROM home_notice")
        .execute(pool)
        .await
        .map(|_| ()))
}
