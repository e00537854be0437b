//! Sessions: a token in the token store, carried in a signed cookie.
//!
//! The cookie holds the session token and nothing about the user. It is
//! signed (HMAC-SHA256, through the `cookie` crate that axum-extra's signed
//! jar wraps) so that the server can tell a cookie it issued that has since
//! expired from one it never issued: the first gets a plain 401, the second
//! is logged as suspicious. It is `HttpOnly`, `SameSite=Lax`, `Path=/`, and
//! under HTTPS (or in production) `Secure` and named with the `__Host-`
//! prefix, so that no other host can set it.
//!
//! A session expires when unused for `auth.session_idle` and in any case
//! `auth.session_absolute` after it began (kept in the token's data). Each use
//! pushes the idle expiry back, but the row is only written when that moves
//! it by more than a hundredth of the idle time, so reads do not each cost
//! a write.
//!
//! Before sign-in a visitor may hold an anonymous pre-session: what the CSRF
//! token of the login and signup forms is bound to. It is a signed cookie
//! only (`a.<issued ms>.<random>`), never a row, so a crawler loading forms
//! costs no database writes; it lasts `auth.anonymous_idle` from issue.
//! Signing in replaces it with a stored session, so a cookie planted before
//! login is worthless after it (no fixation).
//!
//! The CSRF token of a session is an HMAC of its token under a key derived
//! from the app's secret: bound to the session, different for every session,
//! and the same for its whole life, so forms can carry it without a write.
//! It is never sent as it is: each response carries it XORed with fresh
//! random bytes, followed by those bytes. Otherwise a compressed page that
//! also reflects an attacker's input would leak it a byte at a time through
//! its length (BREACH); masked, no two responses hold the same bytes.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, CookieJar, Key};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::auth::tokens::{NewToken, Secret, Token, hash_of};
use crate::auth::users::User;
use crate::auth::{Auth, Tokens};
use crate::db::Tx;
use crate::error::Error;
use crate::jobs::now_ms;
use crate::with_db;

/// Bytes in a CSRF token (an HMAC-SHA256).
const CSRF_LEN: usize = 32;

/// The token kind of sessions.
pub const SESSION_KIND: &str = "session";

/// How an anonymous pre-session's cookie value begins; a stored session's
/// token (URL-safe base64) never contains a `.`.
const ANON_PREFIX: &str = "a.";

/// A live session, as the gatekeeper found it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session token's row id: safe to log; 0 for an anonymous
    /// pre-session, which has no row.
    pub id: i64,
    secret: Secret,
    /// The signed-in account; `None` for an anonymous pre-session.
    pub user: Option<User>,
    /// Whether the account is an admin (database flag or config list).
    pub admin: bool,
    /// When the session expires if unused, unix ms.
    pub expires_at: i64,
    /// When the session ends whatever happens, unix ms.
    pub absolute_at: i64,
}

impl Session {
    /// The session token itself, for deriving its CSRF token.
    pub(crate) fn secret(&self) -> &Secret {
        &self.secret
    }
}

/// What the cookie of a request amounts to.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// No session cookie.
    Absent,
    /// A cookie this server did not sign: tampered with or made up.
    Forged,
    /// A cookie this server signed whose session is over: expired, revoked,
    /// or its account is gone or disabled.
    Ended,
    /// A live session.
    Valid(Session),
}

/// A stored session with its account: token id, hash, data (absolute end),
/// expiry, then the account's [`UserRow`](crate::auth::users::UserRow).
type SessionRow = (
    i64,
    String,
    Option<String>,
    i64,
    i64,
    String,
    Option<i64>,
    i64,
    Option<i64>,
    i64,
);

pub(crate) struct Keys {
    cookie: Key,
    /// A whole HMAC-SHA256 block, so the MAC is built without a fallible
    /// length check.
    csrf: [u8; 64],
}

impl Keys {
    /// Derives the cookie-signing key and the CSRF key from the app secret.
    /// `master` must hold at least 32 bytes (`Key::derive_from` panics on
    /// less); `Auth::new` only passes secrets it has checked to be.
    pub(crate) fn derive(master: &[u8]) -> Self {
        let cookie = Key::derive_from(master);
        let csrf: [u8; 64] = Sha512::new()
            .chain_update(b"hearth csrf v1\0")
            .chain_update(cookie.signing())
            .finalize()
            .into();
        Self { cookie, csrf }
    }

    fn csrf_mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new(&self.csrf.into())
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Auth {
    /// The value of the session cookie in `headers`, if any. When a browser
    /// sends the name twice (a cookie planted for a parent domain), the
    /// first that carries a valid signature wins.
    fn session_cookie(&self, headers: &HeaderMap) -> Option<Result<String, ()>> {
        let name = self.cookie_name();
        let mut seen = false;
        for value in headers.get_all(header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                let Some((n, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if n != name {
                    continue;
                }
                seen = true;
                let signed = Cookie::new(name.to_owned(), v.to_owned());
                if let Some(c) = CookieJar::new().signed(&self.keys().cookie).verify(signed) {
                    return Some(Ok(c.value().to_owned()));
                }
            }
        }
        seen.then_some(Err(()))
    }

    /// Loads the session a request carries, sliding its idle expiry.
    pub async fn load(&self, headers: &HeaderMap) -> Result<Loaded, Error> {
        let secret = match self.session_cookie(headers) {
            None => return Ok(Loaded::Absent),
            Some(Err(())) => return Ok(Loaded::Forged),
            Some(Ok(s)) => s,
        };
        if let Some(rest) = secret.strip_prefix(ANON_PREFIX) {
            return Ok(self.anonymous(rest, &secret));
        }
        // A signed value that is not a token cannot come from this server's
        // sessions; treat it as over rather than forged (old formats, bugs).
        let Some(hash) = hash_of(&secret) else {
            return Ok(Loaded::Ended);
        };
        let row: Option<SessionRow> = with_db!(self.db(), pool => sqlx::query_as(
            "SELECT t.id, t.hash, t.data, t.expires_at,
                    u.id, u.email, u.verified_at, u.admin, u.disabled_at, u.created_at
             FROM hearth_token t JOIN hearth_user u ON u.id = CAST(t.owner AS BIGINT)
             WHERE t.hash = $1 AND t.kind = 'session'",
        )
        .bind(&hash)
        .fetch_optional(pool)
        .await)?;
        // No row: expired and purged, revoked, or its account is gone.
        let Some((
            id,
            stored,
            data,
            expires_at,
            uid,
            email,
            verified_at,
            admin,
            disabled_at,
            created_at,
        )) = row
        else {
            return Ok(Loaded::Ended);
        };
        if !bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
            return Ok(Loaded::Ended);
        }
        let now = now_ms();
        let absolute_at = data
            .as_deref()
            .and_then(|d| d.parse::<i64>().ok())
            .unwrap_or(0);
        if expires_at <= now || absolute_at <= now {
            return Ok(Loaded::Ended);
        }
        let user = User::from_row((uid, email, verified_at, admin, disabled_at, created_at));
        if user.disabled {
            return Ok(Loaded::Ended);
        }
        let idle = self.config().session_idle.get();
        let mut expires_at = expires_at;
        let slid = now.saturating_add(millis(idle)).min(absolute_at);
        let step = (millis(idle) / 100).max(1000);
        if slid - expires_at >= step {
            self.tokens().extend(id, slid).await?;
            expires_at = slid;
        }
        let admin = self.is_admin(&user);
        // The request's later log lines (and its access line) name the user.
        crate::http::front_set_current_user(user.id);
        Ok(Loaded::Valid(Session {
            id,
            secret: crate::auth::tokens::secret_from(secret),
            user: Some(user),
            admin,
            expires_at,
            absolute_at,
        }))
    }

    /// An anonymous pre-session from the part of its cookie after the prefix.
    fn anonymous(&self, rest: &str, secret: &str) -> Loaded {
        let issued = rest
            .split_once('.')
            .and_then(|(ms, _)| ms.parse::<i64>().ok());
        let Some(issued) = issued else {
            return Loaded::Ended;
        };
        let ends = issued.saturating_add(millis(self.config().anonymous_idle.get()));
        if ends <= now_ms() {
            return Loaded::Ended;
        }
        Loaded::Valid(Session {
            id: 0,
            secret: crate::auth::tokens::secret_from(secret.to_owned()),
            user: None,
            admin: false,
            expires_at: ends,
            absolute_at: ends,
        })
    }

    /// Starts an anonymous pre-session: nothing is stored. Send
    /// [`Auth::session_cookie_header`] of the secret with the response.
    pub fn start_anonymous(&self) -> Result<Secret, Error> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::internal(anyhow::anyhow!("no randomness for a session: {e}")))?;
        Ok(crate::auth::tokens::secret_from(format!(
            "{ANON_PREFIX}{}.{}",
            now_ms(),
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// Starts a session for `user` in the caller's transaction. Send
    /// [`Auth::session_cookie_header`] of the secret with the response once
    /// the transaction has committed.
    pub async fn start_session(
        &self,
        tx: &mut Tx,
        user: &User,
    ) -> Result<(Secret, Token), sqlx::Error> {
        let c = self.config();
        let absolute = now_ms().saturating_add(millis(c.session_absolute.get()));
        let new = NewToken::new(SESSION_KIND, c.session_idle.get())
            .data(absolute.to_string())
            .owner(user.id.to_string());
        self.tokens().issue(tx, new).await
    }

    /// Ends a stored session (an anonymous one has nothing to end).
    pub async fn end_session(&self, tx: &mut Tx, session: &Session) -> Result<(), sqlx::Error> {
        if session.id > 0 {
            self.tokens().revoke(tx, session.id).await?;
        }
        Ok(())
    }

    /// Ends every session of account `user_id`; returns how many.
    pub async fn end_sessions_of(&self, tx: &mut Tx, user_id: i64) -> Result<u64, sqlx::Error> {
        self.tokens()
            .revoke_owned(tx, SESSION_KIND, &user_id.to_string())
            .await
    }

    /// `Set-Cookie` for a session token.
    pub fn session_cookie_header(&self, secret: &Secret) -> Result<HeaderValue, Error> {
        let name = self.cookie_name();
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.keys().cookie)
            .add(Cookie::new(name.to_owned(), secret.expose().to_owned()));
        let signed = jar.get(name).ok_or_else(|| {
            Error::internal(anyhow::anyhow!("the signed cookie jar lost the cookie"))
        })?;
        // The browser may keep it as long as the session can last; the
        // server decides earlier ends.
        let c = self.config();
        let max_age = if secret.expose().starts_with(ANON_PREFIX) {
            c.anonymous_idle.get().as_secs()
        } else {
            c.session_absolute.get().as_secs()
        };
        self.cookie_line(signed.value(), max_age)
    }

    /// `Set-Cookie` that makes the browser forget the session cookie.
    pub fn clear_cookie_header(&self) -> HeaderValue {
        self.cookie_line("", 0)
            .unwrap_or_else(|_| HeaderValue::from_static("hearth_session=; Path=/; Max-Age=0"))
    }

    fn cookie_line(&self, value: &str, max_age: u64) -> Result<HeaderValue, Error> {
        let secure = if self.secure() { "; Secure" } else { "" };
        let line = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
            self.cookie_name()
        );
        HeaderValue::from_str(&line)
            .map_err(|e| Error::internal(anyhow::anyhow!("cookie header: {e}")))
    }

    /// The CSRF token of a session.
    pub fn csrf_token(&self, session: &Session) -> String {
        self.csrf_for(session.secret())
    }

    /// The hidden form field with the CSRF token of a session.
    pub fn csrf_field(&self, session: &Session) -> crate::auth::CsrfField {
        crate::auth::CsrfField::new(&self.csrf_token(session))
    }

    /// The CSRF token of the session whose token is `secret`, masked for
    /// one response: a new string every call, each of them accepted.
    pub fn csrf_for(&self, secret: &Secret) -> String {
        let raw = self.raw_csrf(secret);
        let mut mask = [0_u8; CSRF_LEN];
        if getrandom::fill(&mut mask).is_err() {
            // Without OS randomness the mask only loses its BREACH defence;
            // the token itself stays bound to the session.
            mask.iter_mut().for_each(|b| *b = fastrand::u8(..));
        }
        let mut masked = [0_u8; 2 * CSRF_LEN];
        for i in 0..CSRF_LEN {
            masked[i] = raw[i] ^ mask[i];
            masked[CSRF_LEN + i] = mask[i];
        }
        URL_SAFE_NO_PAD.encode(masked)
    }

    /// The session's CSRF token itself, never sent as it is.
    fn raw_csrf(&self, secret: &Secret) -> [u8; CSRF_LEN] {
        let mut mac = self.keys().csrf_mac();
        mac.update(secret.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `presented` is the CSRF token of `session` (masked, or as
    /// it is), compared in constant time.
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        let mut token = [0_u8; CSRF_LEN];
        match bytes.len() {
            CSRF_LEN => token.copy_from_slice(&bytes),
            n if n == 2 * CSRF_LEN => {
                for i in 0..CSRF_LEN {
                    token[i] = bytes[i] ^ bytes[CSRF_LEN + i];
                }
            }
            _ => return false,
        }
        bool::from(self.raw_csrf(session.secret()).ct_eq(&token))
    }
}

/// The token store a session lives in (a shorthand for the auth code).
impl Auth {
    pub(crate) fn tokens(&self) -> &Tokens {
        &self.inner().tokens
    }
}
