//! The token store: one table for every secret a user is handed.
//!
//! A token is 32 random bytes from the operating system's generator, given out
//! once as 43 characters of URL-safe base64. Only its SHA-256 is stored, with
//! a kind (`session`, `verify_email`, `reset`, …), an optional owner,
//! optional data, creation and expiry times, and a single-use flag. A copy of
//! the table therefore holds nothing that can be presented back.
//!
//! Looking a token up hashes what was presented and finds the row by that
//! hash; the stored hash is then compared again in constant time, so the
//! answer never depends on how many leading bytes of a guess were right.
//! Malformed tokens are refused without touching the database. A single-use
//! token is used up by [`Tokens::consume`], which deletes it in the caller's
//! transaction: of two concurrent uses exactly one gets it. Expired tokens
//! stay readable as [`Found::Expired`] (a session needs to tell "expired"
//! from "unknown") until [`Tokens::purge_expired`], run by hearth's
//! housekeeping, deletes them.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::{Db, Tx};
use crate::jobs::now_ms;
use crate::{with_db, with_tx};

/// Length of a token as text: 32 bytes in unpadded base64.
pub const TOKEN_LEN: usize = 43;

/// A token as handed out. Its `Debug` shows nothing of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The token text, to put in a cookie, a link or a response.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Wraps token text that came back from a client (a cookie), once it is known
/// to be well formed.
pub(crate) fn secret_from(text: String) -> Secret {
    Secret(text)
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct NewToken {
    kind: String,
    ttl: Duration,
    owner: Option<String>,
    data: Option<String>,
    single_use: bool,
}

impl NewToken {
    /// A token of `kind` that expires `ttl` from now.
    pub fn new(kind: impl Into<String>, ttl: Duration) -> Self {
        Self {
            kind: kind.into(),
            ttl,
            owner: None,
            data: None,
            single_use: false,
        }
    }

    /// Whose token it is (a user id for hearth's own kinds).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Small data kept with the token (an email address being verified, …).
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Makes the token usable once, through [`Tokens::consume`].
    pub fn single_use(mut self) -> Self {
        self.single_use = true;
        self
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Row id: stable, safe to log and to refer to from other rows.
    pub id: i64,
    /// What it is for.
    pub kind: String,
    /// Whose it is.
    pub owner: Option<String>,
    /// Data kept with it.
    pub data: Option<String>,
    /// Whether [`Tokens::consume`] is the way to use it.
    pub single_use: bool,
    /// Issued at, unix ms.
    pub created_at: i64,
    /// Expires at, unix ms.
    pub expires_at: i64,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A token of the kind asked for, still valid.
    Valid(Token),
    /// A token of the kind asked for, past its expiry.
    Expired(Token),
    /// No such token: malformed, never issued, revoked, used up or purged.
    Missing,
}

impl Found {
    /// The token, if valid.
    pub fn valid(self) -> Option<Token> {
        match self {
            Found::Valid(t) => Some(t),
            _ => None,
        }
    }
}

type Row = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
);

/// The columns every lookup returns, as [`Row`].
macro_rules! token_columns {
    () => {
        "id, hash, kind, owner, data, single_use, created_at, expires_at"
    };
}

/// The token store; cheap to clone. Reach it with `state.tokens()`.
#[derive(Debug, Clone)]
pub struct Tokens {
    db: Db,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// SHA-256 of the token's bytes, as 64 lowercase hex digits; `None` when the
/// text is not a token at all.
pub(crate) fn hash_of(secret: &str) -> Option<String> {
    if secret.len() != TOKEN_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
    if bytes.len() != 32 {
        return None;
    }
    Some(hex(&Sha256::digest(&bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Turns a row into a finding, comparing the stored hash in constant time.
fn found(row: Option<Row>, hash: &str, kind: &str, now: i64) -> Found {
    let Some((id, stored, row_kind, owner, data, single_use, created_at, expires_at)) = row else {
        return Found::Missing;
    };
    let same: bool = stored.as_bytes().ct_eq(hash.as_bytes()).into();
    if !same || row_kind != kind {
        return Found::Missing;
    }
    let token = Token {
        id,
        kind: row_kind,
        owner,
        data,
        single_use: single_use != 0,
        created_at,
        expires_at,
    };
    if expires_at > now {
        Found::Valid(token)
    } else {
        Found::Expired(token)
    }
}

impl Tokens {
    /// The store of `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Issues a token inside the caller's transaction: it exists only if the
    /// transaction commits.
    pub async fn issue(&self, tx: &mut Tx, new: NewToken) -> Result<(Secret, Token), sqlx::Error> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| sqlx::Error::Protocol(format!("no randomness for a token: {e}")))?;
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hex(&Sha256::digest(bytes));
        let now = now_ms();
        let expires_at = now.saturating_add(millis(new.ttl));
        let single_use = i64::from(new.single_use);
        let id: i64 = with_tx!(tx, conn => sqlx::query_scalar(
            "INSERT INTO hearth_token (hash, kind, owner, data, single_use, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&hash)
        .bind(&new.kind)
        .bind(&new.owner)
        .bind(&new.data)
        .bind(single_use)
        .bind(now)
        .bind(expires_at)
        .fetch_one(&mut **conn)
        .await)?;
        Ok((
            Secret(secret),
            Token {
                id,
                kind: new.kind,
                owner: new.owner,
                data: new.data,
                single_use: new.single_use,
                created_at: now,
                expires_at,
            },
        ))
    }

    /// Looks up a token of `kind` without using it up.
    pub async fn find(&self, kind: &str, secret: &str) -> Result<Found, sqlx::Error> {
        let Some(hash) = hash_of(secret) else {
            return Ok(Found::Missing);
        };
        let row: Option<Row> = with_db!(&self.db, pool => sqlx::query_as(
            concat!("SELECT ", token_columns!(), " FROM hearth_token WHERE hash = $1"),
        )
        .bind(&hash)
        .fetch_optional(pool)
        .await)?;
        Ok(found(row, &hash, kind, now_ms()))
    }

    /// Uses up a token of `kind` inside the caller's transaction: the row is
    /// deleted whatever it holds, and returned if it was valid. Of two
    /// concurrent uses, one gets `Valid` and the other `Missing`.
    pub async fn consume(
        &self,
        tx: &mut Tx,
        kind: &str,
        secret: &str,
    ) -> Result<Found, sqlx::Error> {
        let Some(hash) = hash_of(secret) else {
            return Ok(Found::Missing);
        };
        let row: Option<Row> = with_tx!(tx, conn => sqlx::query_as(
            concat!(
                "DELETE FROM hearth_token WHERE hash = $1 AND kind = $2 RETURNING ",
                token_columns!()
            ),
        )
        .bind(&hash)
        .bind(kind)
        .fetch_optional(&mut **conn)
        .await)?;
        Ok(found(row, &hash, kind, now_ms()))
    }

    /// Moves a token's expiry (a session sliding on use); false when it is gone.
    pub async fn extend(&self, id: i64, expires_at: i64) -> Result<bool, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query("UPDATE hearth_token SET expires_at = $1 WHERE id = $2")
            .bind(expires_at)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
    }

    /// Deletes one token; false when it was already gone.
    pub async fn revoke(&self, tx: &mut Tx, id: i64) -> Result<bool, sqlx::Error> {
        with_tx!(tx, conn => sqlx::query("DELETE FROM hearth_token WHERE id = $1")
            .bind(id)
            .execute(&mut **conn)
            .await
            .map(|r| r.rows_affected() == 1))
    }

    /// Deletes every token of `kind` that `owner` holds; returns how many.
    pub async fn revoke_owned(
        &self,
        tx: &mut Tx,
        kind: &str,
        owner: &str,
    ) -> Result<u64, sqlx::Error> {
        with_tx!(tx, conn => sqlx::query("DELETE FROM hearth_token WHERE kind = $1 AND owner = $2")
            .bind(kind)
            .bind(owner)
            .execute(&mut **conn)
            .await
            .map(|r| r.rows_affected()))
    }

    /// Deletes every token `owner` holds, of any kind; returns how many.
    pub async fn revoke_all_owned(&self, tx: &mut Tx, owner: &str) -> Result<u64, sqlx::Error> {
        with_tx!(tx, conn => sqlx::query("DELETE FROM hearth_token WHERE owner = $1")
            .bind(owner)
            .execute(&mut **conn)
            .await
            .map(|r| r.rows_affected()))
    }

    /// Deletes tokens that expired before `now` (unix ms); returns how many.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query("DELETE FROM hearth_token WHERE expires_at <= $1")
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_are_hashed() {
        let token = URL_SAFE_NO_PAD.encode([7_u8; 32]);
        assert_eq!(token.len(), TOKEN_LEN);
        let h = hash_of(&token).unwrap();
        assert_eq!(h.len(), 64);
        assert_eq!(h, hex(&Sha256::digest([7_u8; 32])));
        for bad in [
            "",
            "short",
            &"a".repeat(44),
            &"!".repeat(43),
            &format!("{}=", &token[..42]),
        ] {
            assert_eq!(hash_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Secret("abc".into());
        assert_eq!(format!("{s:?}"), "Secret(…)");
        assert_eq!(s.expose(), "abc");
    }
}
