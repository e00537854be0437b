//! Identity: tokens, accounts, passwords, sessions, guards, CSRF and rate
//! limits, and the `/api/auth/…` routes built on them.
//!
//! Every secret hearth hands a user (a session cookie, an email verification
//! link, a password reset link) is a [`Token`](tokens::Token) in one table,
//! so expiry, revocation and purging work the same way for all of them. The
//! CSRF token is derived from the session token (see [`session`]).
//!
//! Reach it all through `state.auth()`; handlers name the caller with the
//! [`CurrentUser`] extractor, and modules put routes behind the guards by
//! registering them in the matching route group of their
//! [`Context`](crate::Context).

mod config;
pub mod flows;
pub mod guard;
mod hash_pool;
pub mod mailing;
pub mod passwords;
pub mod rate;
pub mod routes;
pub mod session;
pub mod tokens;
pub mod users;

use std::path::Path;
use std::sync::Arc;

pub use config::{Argon2Config, AuthConfig, AuthLimits, Rate};
pub use flows::{AuthForm, AuthRequest, CsrfField, PageSession, page_session};
pub use guard::{CurrentUser, MaybeSession};
pub use passwords::Passwords;
pub use rate::Limiter;
pub use session::{Loaded, Session};
pub use tokens::{Found, NewToken, Secret, Token, Tokens};
pub use users::{User, Users};

use crate::config::Config;
use crate::db::Db;
use crate::events::Events;
use crate::jobs::Jobs;
use crate::mail::Mailer;
use crate::realtime::PubSub;

/// The name of the file in the data dir that holds a generated app secret
/// when `secret_key` is not configured.
pub const SECRET_FILE: &str = "secret.key";

/// The pub/sub channel told about deleted accounts; the payload is
/// `{"user_id":…,"email":…}`.
pub const USER_DESTROYED: &str = "user-destroyed";

/// The domain event hearth publishes when an account is deleted, in the
/// deleting transaction: modules subscribe to it to forget what they hold
/// about the account (a profile, likes, alerts).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AccountDeleted {
    /// The deleted account's id.
    pub account: i64,
}

impl crate::events::Event for AccountDeleted {
    const NAME: &'static str = "hearth.account-deleted";
    fn key(&self) -> Option<String> {
        Some(self.account.to_string())
    }
}

/// The events hearth itself publishes.
pub(crate) const EVENTS: &[crate::events::EventSpec] =
    &[crate::events::EventSpec::of::<AccountDeleted>()];

/// Accounts, sessions and their keys; cheap to clone. Reach it with `state.auth()`.
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

struct Inner {
    config: AuthConfig,
    secure: bool,
    /// The session cookie's name as sent: `__Host-` + `cookie_name` when secure.
    cookie_name: String,
    keys: session::Keys,
    db: Db,
    tokens: Tokens,
    users: Users,
    passwords: Passwords,
    limiter: Limiter,
    proxies: crate::http::client_ip::ProxyTrust,
    wiring: Wiring,
    public_url: String,
    body_limit: u64,
}

/// The other capabilities the account flows use: the queue for their mails,
/// events for `hearth.account-deleted`, the mailer for links sent at once,
/// and what links and pages need.
pub(crate) struct Wiring {
    /// The job queue.
    pub jobs: Jobs,
    /// Domain events.
    pub events: Events,
    /// Pub/sub, which tells every node's streams that an account ended.
    pub pubsub: PubSub,
    /// The mailer.
    pub mailer: Mailer,
    /// The app's name, for the mails.
    pub app_name: &'static str,
    /// Where browsers are sent to sign in, if the app has a page for it.
    pub login_page: Option<&'static str>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("cookie", &self.0.cookie_name)
            .field("secure", &self.0.secure)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Builds the auth handle from the config; the app secret comes from
    /// `secret_key`, or from [`SECRET_FILE`] in the data dir (created on
    /// first start).
    pub(crate) fn new(config: &Config, db: Db, tokens: Tokens, wiring: Wiring) -> Self {
        let master = app_secret(config);
        let public_url = config.public_url();
        let secure = config.is_prod() || public_url.starts_with("https://");
        Self(Arc::new(Inner {
            config: config.auth.clone(),
            cookie_name: cookie_name(&config.auth.cookie_name, secure),
            secure,
            keys: session::Keys::derive(&master),
            users: Users::new(db.clone()),
            passwords: Passwords::new(&config.auth),
            limiter: Limiter::new(db.clone()),
            proxies: config.auth.proxy_trust(),
            tokens,
            db,
            wiring,
            public_url,
            body_limit: config.http.body_limit,
        }))
    }

    pub(crate) fn jobs(&self) -> &Jobs {
        &self.0.wiring.jobs
    }

    pub(crate) fn events(&self) -> &Events {
        &self.0.wiring.events
    }

    pub(crate) fn pubsub(&self) -> &PubSub {
        &self.0.wiring.pubsub
    }

    pub(crate) fn mailer(&self) -> &Mailer {
        &self.0.wiring.mailer
    }

    pub(crate) fn app_name(&self) -> &'static str {
        self.0.wiring.app_name
    }

    /// The sign-in page the app set (`App::login_page`), if any.
    pub fn login_page(&self) -> Option<&'static str> {
        self.0.wiring.login_page
    }

    /// The app's public URL, which links in mails start with.
    pub(crate) fn public_url(&self) -> &str {
        &self.0.public_url
    }

    /// The request body limit, which forms read by the guard respect too.
    pub(crate) fn body_limit(&self) -> u64 {
        self.0.body_limit
    }

    fn inner(&self) -> &Inner {
        &self.0
    }

    /// The `[auth]` configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.0.config
    }

    /// Whether cookies are marked `Secure`: in production, and whenever
    /// the app is reached over HTTPS (TLS here, or an `https://` public URL).
    pub fn secure(&self) -> bool {
        self.0.secure
    }

    /// The session cookie's name as browsers see it.
    pub fn cookie_name(&self) -> &str {
        &self.0.cookie_name
    }

    pub(crate) fn keys(&self) -> &session::Keys {
        &self.0.keys
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.db
    }

    /// The account store.
    pub fn users(&self) -> &Users {
        &self.0.users
    }

    /// The password hasher and policy.
    pub fn passwords(&self) -> &Passwords {
        &self.0.passwords
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.0.limiter
    }

    /// Whose `X-Forwarded-For` entries name the client.
    pub fn proxy_trust(&self) -> &crate::http::client_ip::ProxyTrust {
        &self.0.proxies
    }

    /// Whether `user` is an admin: the database flag, or the config's list
    /// for an address the user has proved to own. Anyone can sign up with a
    /// listed address, so before it is verified the list grants nothing.
    pub fn is_admin(&self, user: &User) -> bool {
        user.admin_flag || (user.verified && self.0.config.is_listed_admin(&user.email))
    }
}

/// The session cookie's name: under HTTPS with the `__Host-` prefix, which
/// browsers only accept from this exact host, over HTTPS, for path `/`, so
/// a sibling subdomain cannot plant ("toss") a session cookie of its own.
fn cookie_name(configured: &str, secure: bool) -> String {
    if secure && !configured.starts_with("__Host-") {
        format!("__Host-{configured}")
    } else {
        configured.to_owned()
    }
}

/// The app secret: `secret_key` when set; otherwise the contents of
/// [`SECRET_FILE`] in the data dir, which is generated (readable by the
/// owner only) when missing. If the file can be neither read nor written,
/// a random secret for this process only is used, and sessions end with it.
///
/// Every branch yields at least [`MIN_SECRET`] bytes, which the key
/// derivation requires.
fn app_secret(config: &Config) -> Vec<u8> {
    if let Some(key) = &config.secret_key {
        if key.expose().len() >= MIN_SECRET {
            return key.expose().as_bytes().to_vec();
        }
        // Only a config built in code skips the check of `Config::load`.
        tracing::error!("secret_key is shorter than 32 bytes; using the key file instead");
    }
    let path = config.data_dir.join(SECRET_FILE);
    match read_or_create_secret(&path) {
        Ok(secret) => {
            if config.is_prod() {
                tracing::warn!(
                    path = %path.display(),
                    "secret_key is not set; using the generated key file. Every node must share one \
                     secret: set secret_key when running more than one"
                );
            }
            secret
        }
        Err(e) => {
            tracing::error!(
                path = %path.display(),
                error = %e,
                "cannot read or create the secret key file; sessions will not survive a restart"
            );
            random_secret().into_bytes()
        }
    }
}

fn random_secret() -> String {
    let mut bytes = [0_u8; 32];
    // The OS generator does not fail on the systems hearth runs on; if it
    // ever does, a weaker but unpredictable-enough seed keeps the process up
    // and the log says so.
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no OS randomness for the app secret");
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    tokens::hex(&bytes)
}

/// The shortest app secret accepted, in bytes.
const MIN_SECRET: usize = 32;

/// The secret in an existing key file, checked for length.
fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    let s = std::fs::read_to_string(path)?;
    if s.trim().len() >= MIN_SECRET {
        Ok(s.trim().as_bytes().to_vec())
    } else {
        Err(std::io::Error::other(
            "the file holds fewer than 32 characters",
        ))
    }
}

fn read_or_create_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    match read_secret(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        found => return found,
    }
    if let Some(dir) = path.parent() {
        crate::private_fs::create_dir(dir)?;
    }
    let secret = random_secret();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            use std::io::Write as _;
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
            Ok(secret.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_secret(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_secret_is_kept_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join(SECRET_FILE);
        let first = read_or_create_secret(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(read_or_create_secret(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(read_or_create_secret(&path).is_err());
    }
}
