//! Accounts in the database: email, password hash, verified, admin,
//! disabled, and group memberships.
//!
//! Emails are normalized (trimmed, lowercased) before they are stored or
//! looked up, so `Ana@Example.com` and `ana@example.com` are one account.

use crate::db::{Db, Tx};
use crate::error::Error;
use crate::jobs::now_ms;
use crate::{with_db, with_tx};

/// Longest email accepted (RFC 5321's path limit).
pub const EMAIL_MAX_LEN: usize = 254;

/// Longest group name accepted.
pub const GROUP_MAX_LEN: usize = 64;

/// An account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Normalized email.
    pub email: String,
    /// Whether the email address was confirmed through the emailed link.
    pub verified: bool,
    /// Whether the admin flag is set in the database. The config's admin
    /// list adds to it; see [`Auth::is_admin`](crate::auth::Auth::is_admin).
    pub admin_flag: bool,
    /// Whether the account is disabled: it cannot sign in, its sessions are gone.
    pub disabled: bool,
    /// Created at, unix ms.
    pub created_at: i64,
}

pub(crate) type UserRow = (i64, String, Option<i64>, i64, Option<i64>, i64);

/// A [`UserRow`] followed by the password hash.
type UserHashRow = (i64, String, Option<i64>, i64, Option<i64>, i64, String);

/// The columns that make a [`UserRow`].
macro_rules! user_columns {
    () => {
        "id, email, verified_at, admin, disabled_at, created_at"
    };
}

impl User {
    pub(crate) fn from_row(
        (id, email, verified_at, admin, disabled_at, created_at): UserRow,
    ) -> Self {
        Self {
            id,
            email,
            verified: verified_at.is_some(),
            admin_flag: admin != 0,
            disabled: disabled_at.is_some(),
            created_at,
        }
    }
}

/// Normalizes an email address and checks that it is one: trimmed and
/// lowercased, one `@`, a non-empty local part of at most 64 bytes, a
/// domain with a dot and no empty labels, no spaces, control characters or
/// characters that need quoting. The error names the field `email`.
pub fn normalize_email(raw: &str) -> Result<String, Error> {
    let invalid = || Error::validation("email", "this is not a valid email address");
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err(Error::validation("email", "the email address is required"));
    }
    if email.len() > EMAIL_MAX_LEN {
        return Err(Error::validation(
            "email",
            format!("the email address must be at most {EMAIL_MAX_LEN} characters long"),
        ));
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(invalid())
    }
}

/// Checks a group name: 1 to 64 of lowercase letters, digits, `_`, `-`, `.`.
pub fn check_group(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= GROUP_MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::validation(
            "group",
            "a group name is 1 to 64 lowercase letters, digits, `_`, `-` or `.`",
        ))
    }
}

/// The account store; cheap to clone. Reach it with `state.auth().users()`.
#[derive(Debug, Clone)]
pub struct Users {
    db: Db,
}

impl Users {
    /// The store of `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates an account in the caller's transaction; `None` when the email
    /// is taken. `email` must be normalized.
    pub async fn create(
        &self,
        tx: &mut Tx,
        email: &str,
        password_hash: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        with_tx!(tx, conn => sqlx::query_scalar(
            "INSERT INTO hearth_user (email, password_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(email)
        .bind(password_hash)
        .bind(now_ms())
        .fetch_optional(&mut **conn)
        .await)
    }

    /// The account of a normalized email, with its password hash.
    pub async fn by_email(&self, email: &str) -> Result<Option<(User, String)>, sqlx::Error> {
        let row: Option<UserHashRow> = with_db!(&self.db, pool => sqlx::query_as(concat!(
                "SELECT ", user_columns!(), ", password_hash FROM hearth_user WHERE email = $1"
            ))
            .bind(email)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(|(a, b, c, d, e, f, hash)| (User::from_row((a, b, c, d, e, f)), hash)))
    }

    /// The account with row id `id`, with its password hash.
    pub async fn by_id(&self, id: i64) -> Result<Option<(User, String)>, sqlx::Error> {
        let row: Option<UserHashRow> = with_db!(&self.db, pool => sqlx::query_as(concat!(
                "SELECT ", user_columns!(), ", password_hash FROM hearth_user WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(|(a, b, c, d, e, f, hash)| (User::from_row((a, b, c, d, e, f)), hash)))
    }

    /// Accounts in id order, starting after `after`, at most `limit`.
    pub async fn list(&self, after: i64, limit: u32) -> Result<Vec<User>, sqlx::Error> {
        let rows: Vec<UserRow> = with_db!(&self.db, pool => sqlx::query_as(concat!(
            "SELECT ", user_columns!(), " FROM hearth_user WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(User::from_row).collect())
    }

    /// Emails of the accounts flagged admin in the database and not
    /// disabled (the config's `auth.admins` are not included).
    pub async fn admin_emails(&self) -> Result<Vec<String>, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query_scalar(
            "SELECT email FROM hearth_user WHERE admin <> 0 AND disabled_at IS NULL ORDER BY id"
        )
        .fetch_all(pool)
        .await)
    }

    /// How many accounts there are.
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query_scalar("SELECT count(*) FROM hearth_user")
            .fetch_one(pool)
            .await)
    }

    /// Replaces the password hash.
    pub async fn set_password(&self, tx: &mut Tx, id: i64, hash: &str) -> Result<(), sqlx::Error> {
        with_tx!(tx, conn => sqlx::query("UPDATE hearth_user SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id)
            .execute(&mut **conn)
            .await
            .map(|_| ()))
    }

    /// Replaces the password hash outside any transaction (a rehash at login);
    /// only if the stored hash is still `old`, so a concurrent password
    /// change wins.
    pub async fn rehash(&self, id: i64, old: &str, new: &str) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query(
            "UPDATE hearth_user SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
        )
        .bind(new)
        .bind(id)
        .bind(old)
        .execute(pool)
        .await
        .map(|_| ()))
    }

    /// Marks the email as verified (once; later calls keep the first time).
    pub async fn mark_verified(&self, tx: &mut Tx, id: i64) -> Result<(), sqlx::Error> {
        with_tx!(tx, conn => sqlx::query(
            "UPDATE hearth_user SET verified_at = COALESCE(verified_at, $1) WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut **conn)
        .await
        .map(|_| ()))
    }

    /// Sets or clears the admin flag; false when there is no such account.
    pub async fn set_admin(&self, tx: &mut Tx, id: i64, admin: bool) -> Result<bool, sqlx::Error> {
        with_tx!(tx, conn => sqlx::query("UPDATE hearth_user SET admin = $1 WHERE id = $2")
            .bind(i64::from(admin))
            .bind(id)
            .execute(&mut **conn)
            .await
            .map(|r| r.rows_affected() == 1))
    }

    /// Disables or re-enables an account; false when there is no such account.
    pub async fn set_disabled(
        &self,
        tx: &mut Tx,
        id: i64,
        disabled: bool,
    ) -> Result<bool, sqlx::Error> {
        let at = disabled.then(now_ms);
        with_tx!(tx, conn => sqlx::query("UPDATE hearth_user SET disabled_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut **conn)
            .await
            .map(|r| r.rows_affected() == 1))
    }

    /// Deletes an account and its group memberships; false when it was gone.
    pub async fn delete(&self, tx: &mut Tx, id: i64) -> Result<bool, sqlx::Error> {
        with_tx!(tx, conn => async {
            // Explicit, so it does not depend on SQLite's foreign_keys pragma.
            sqlx::query("DELETE FROM hearth_user_group WHERE user_id = $1")
                .bind(id)
                .execute(&mut **conn)
                .await?;
            sqlx::query("DELETE FROM hearth_user WHERE id = $1")
                .bind(id)
                .execute(&mut **conn)
                .await
                .map(|r| r.rows_affected() == 1)
        }
        .await)
    }

    /// Adds a group membership (checked with [`check_group`]); false when it existed.
    pub async fn add_group(&self, tx: &mut Tx, id: i64, group: &str) -> Result<bool, sqlx::Error> {
        with_tx!(tx, conn => sqlx::query(
            "INSERT INTO hearth_user_group (user_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(group)
        .execute(&mut **conn)
        .await
        .map(|r| r.rows_affected() == 1))
    }

    /// Removes a group membership; false when there was none.
    pub async fn remove_group(
        &self,
        tx: &mut Tx,
        id: i64,
        group: &str,
    ) -> Result<bool, sqlx::Error> {
        with_tx!(tx, conn => sqlx::query("DELETE FROM hearth_user_group WHERE user_id = $1 AND name = $2")
            .bind(id)
            .bind(group)
            .execute(&mut **conn)
            .await
            .map(|r| r.rows_affected() == 1))
    }

    /// Whether account `id` is in `group`.
    pub async fn in_group(&self, id: i64, group: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = with_db!(&self.db, pool => sqlx::query_scalar(
            "SELECT count(*) FROM hearth_user_group WHERE user_id = $1 AND name = $2",
        )
        .bind(id)
        .bind(group)
        .fetch_one(pool)
        .await)?;
        Ok(n > 0)
    }

    /// The groups of account `id`, sorted.
    pub async fn groups(&self, id: i64) -> Result<Vec<String>, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query_scalar(
            "SELECT name FROM hearth_user_group WHERE user_id = $1 ORDER BY name",
        )
        .bind(id)
        .fetch_all(pool)
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_or_refused() {
        assert_eq!(
            normalize_email("  Ana@Example.COM ").unwrap(),
            "ana@example.com"
        );
        assert_eq!(
            normalize_email("o'brien+tag@mail.example.org").unwrap(),
            "o'brien+tag@mail.example.org"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "ana@@example.com",
            "a b@example.com",
            "ana@exa mple.com",
            "ana@.example.com",
            "ana@example..com",
            ".ana@example.com",
            "<script>@example.com",
            "ana\u{0}@example.com",
            "x\"@example.com",
        ] {
            let e = normalize_email(bad).err();
            let e = e.unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(e.body().field.as_deref(), Some("email"));
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn group_names_are_checked() {
        assert!(check_group("editors").is_ok());
        assert!(check_group("team-2.x_y").is_ok());
        for bad in ["", "Editors", "a b", "ü", &"a".repeat(65)] {
            assert!(check_group(bad).is_err(), "{bad}");
        }
    }
}
