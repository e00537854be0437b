//! The `[auth]` section of the configuration: sessions, passwords, who may
//! sign up, who is an admin, and how hard the auth routes may be hit.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Duration};

/// Accounts and sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Name of the session cookie.
    pub cookie_name: String,
    /// A session unused for this long expires; each use pushes it back.
    pub session_idle: Duration,
    /// A session expires this long after sign-in, however much it is used.
    pub session_absolute: Duration,
    /// Idle expiry of the anonymous pre-session that a CSRF token is bound
    /// to before sign-in.
    pub anonymous_idle: Duration,
    /// Shortest password accepted.
    pub password_min_len: usize,
    /// Longest password accepted, in bytes; it bounds the work one request can ask for.
    pub password_max_len: usize,
    /// argon2id cost parameters.
    pub argon2: Argon2Config,
    /// Password hashes computed at once, on as many low-priority threads;
    /// more wait their turn. 0 means one fewer than the cores (at least
    /// one), so that a login storm always leaves a core to other requests.
    pub hash_concurrency: usize,
    /// Hashes that may wait for a free hashing thread; a request that would
    /// wait behind more gets 503 `busy` at once instead of queueing for
    /// seconds.
    pub hash_queue: usize,
    /// Emails of admins, whatever the database says, once the address is
    /// verified (anyone can sign up with an address they do not own).
    pub admins: Vec<String>,
    /// When not empty, only these may sign up: full addresses
    /// (`ana@example.com`) or whole domains (`@example.com`).
    pub signup_allow: Vec<String>,
    /// Origins (`https://app.example.com`) besides the request's own that
    /// may send unsafe requests with a session cookie.
    pub allowed_origins: Vec<String>,
    /// Take the client address for rate limits from the last
    /// `X-Forwarded-For` entry, whoever sent the request; only behind a
    /// proxy that sets it and that nothing can bypass.
    pub trust_forwarded_for: bool,
    /// Proxies (`10.0.0.5`, `10.0.0.0/8`, `2001:db8::/32`) whose
    /// `X-Forwarded-For` entries are believed: the client is the rightmost
    /// entry that is not one of them. Requests from other peers are taken
    /// at their peer address.
    pub trusted_proxies: Vec<String>,
    /// How long an email verification link works.
    pub verify_ttl: Duration,
    /// How long a password reset link works.
    pub reset_ttl: Duration,
    /// Rate limits of the auth routes.
    pub limits: AuthLimits,
}

/// argon2id cost parameters; the defaults are OWASP's (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Config {
    /// Memory per hash in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// At most `max` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Events allowed in one window.
    pub max: u32,
    /// Length of the window.
    pub per: Duration,
}

impl Rate {
    /// `max` per `per`.
    pub const fn new(max: u32, per: Duration) -> Self {
        Self { max, per }
    }
}

/// Rate limits of the auth routes. Counters live in the database, so they
/// hold across nodes and restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthLimits {
    /// Failed logins per account.
    pub login_failures_per_account: Rate,
    /// Login attempts per client address.
    pub login_per_ip: Rate,
    /// Signups per client address.
    pub signup_per_ip: Rate,
    /// Recovery mails per account.
    pub recover_per_account: Rate,
    /// Recovery requests per client address.
    pub recover_per_ip: Rate,
    /// Reset and verification attempts per client address.
    pub reset_per_ip: Rate,
    /// Change-password and delete-account attempts per account, whether
    /// they succeed or fail: each costs a hash.
    pub reauth_per_account: Rate,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            cookie_name: "hearth_session".into(),
            session_idle: Duration::from_secs(7 * DAY),
            session_absolute: Duration::from_secs(30 * DAY),
            anonymous_idle: Duration::from_secs(2 * HOUR),
            password_min_len: 8,
            password_max_len: 1024,
            argon2: Argon2Config::default(),
            hash_concurrency: 0,
            hash_queue: 32,
            admins: Vec::new(),
            signup_allow: Vec::new(),
            allowed_origins: Vec::new(),
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
            verify_ttl: Duration::from_secs(2 * DAY),
            reset_ttl: Duration::from_secs(HOUR),
            limits: AuthLimits::default(),
        }
    }
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Default for AuthLimits {
    fn default() -> Self {
        let quarter = Duration::from_secs(15 * MINUTE);
        let hour = Duration::from_secs(HOUR);
        Self {
            login_failures_per_account: Rate::new(10, quarter),
            login_per_ip: Rate::new(100, quarter),
            signup_per_ip: Rate::new(20, hour),
            recover_per_account: Rate::new(5, hour),
            recover_per_ip: Rate::new(20, hour),
            reset_per_ip: Rate::new(30, quarter),
            reauth_per_account: Rate::new(10, quarter),
        }
    }
}

impl AuthLimits {
    /// The longest window of any limit: counters older than it count for nothing.
    pub fn longest_window(&self) -> std::time::Duration {
        [
            self.login_failures_per_account,
            self.login_per_ip,
            self.signup_per_ip,
            self.recover_per_account,
            self.recover_per_ip,
            self.reset_per_ip,
            self.reauth_per_account,
        ]
        .iter()
        .map(|r| r.per.get())
        .max()
        .unwrap_or_default()
    }
}

impl AuthConfig {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let valid_cookie = !self.cookie_name.is_empty()
            && self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_cookie {
            return Err(ConfigError::new(
                "auth.cookie_name",
                "must be letters, digits, `_` and `-`",
            ));
        }
        for (key, d) in [
            ("auth.session_idle", self.session_idle),
            ("auth.session_absolute", self.session_absolute),
            ("auth.anonymous_idle", self.anonymous_idle),
            ("auth.verify_ttl", self.verify_ttl),
            ("auth.reset_ttl", self.reset_ttl),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if self.password_min_len == 0 || self.password_min_len > self.password_max_len {
            return Err(ConfigError::new(
                "auth.password_min_len",
                "must be at least 1 and at most auth.password_max_len",
            ));
        }
        let a = &self.argon2;
        if argon2::Params::new(a.memory_kib, a.iterations, a.parallelism, None).is_err() {
            return Err(ConfigError::new(
                "auth.argon2",
                "is not a valid argon2 setting (memory_kib ≥ 8 × parallelism, iterations ≥ 1, parallelism ≥ 1)",
            ));
        }
        let l = &self.limits;
        for (key, r) in [
            (
                "auth.limits.login_failures_per_account",
                l.login_failures_per_account,
            ),
            ("auth.limits.login_per_ip", l.login_per_ip),
            ("auth.limits.signup_per_ip", l.signup_per_ip),
            ("auth.limits.recover_per_account", l.recover_per_account),
            ("auth.limits.recover_per_ip", l.recover_per_ip),
            ("auth.limits.reset_per_ip", l.reset_per_ip),
            ("auth.limits.reauth_per_account", l.reauth_per_account),
        ] {
            if r.max == 0 || r.per.is_zero() {
                return Err(ConfigError::new(key, "max and per must be greater than 0"));
            }
        }
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            if crate::http::client_ip::IpNet::parse(p).is_none() {
                return Err(ConfigError::new(
                    &format!("auth.trusted_proxies[{i}]"),
                    "must be an IP address or a block such as 10.0.0.0/8",
                ));
            }
        }
        for (i, o) in self.allowed_origins.iter().enumerate() {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(ConfigError::new(
                    &format!("auth.allowed_origins[{i}]"),
                    "must look like https://host[:port], without a path",
                ));
            }
        }
        Ok(())
    }

    /// Whether `email` (already normalized) is on the admin list.
    pub fn is_listed_admin(&self, email: &str) -> bool {
        self.admins
            .iter()
            .any(|a| a.trim().eq_ignore_ascii_case(email))
    }

    /// Whether `email` (already normalized) may sign up.
    pub fn may_sign_up(&self, email: &str) -> bool {
        if self.signup_allow.is_empty() {
            return true;
        }
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        self.signup_allow.iter().any(|entry| {
            let entry = entry.trim();
            match entry.strip_prefix('@') {
                Some(d) => d.eq_ignore_ascii_case(domain),
                None => entry.eq_ignore_ascii_case(email),
            }
        })
    }

    /// Whose `X-Forwarded-For` entries are believed (entries that do not
    /// parse were refused by [`validate`](Self::validate) and are skipped).
    pub fn proxy_trust(&self) -> crate::http::client_ip::ProxyTrust {
        crate::http::client_ip::ProxyTrust {
            any: self.trust_forwarded_for,
            proxies: self
                .trusted_proxies
                .iter()
                .filter_map(|p| crate::http::client_ip::IpNet::parse(p))
                .collect(),
        }
    }

    /// The number of hashes computed at once.
    pub fn hash_slots(&self) -> usize {
        if self.hash_concurrency > 0 {
            return self.hash_concurrency;
        }
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        cores.saturating_sub(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signup_list_takes_addresses_and_domains() {
        let mut c = AuthConfig::default();
        assert!(c.may_sign_up("anyone@anywhere.org"));
        c.signup_allow = vec!["ana@example.com".into(), "@team.example".into()];
        assert!(c.may_sign_up("ana@example.com"));
        assert!(c.may_sign_up("bo@team.example"));
        assert!(!c.may_sign_up("bo@example.com"));
        assert!(!c.may_sign_up("ana@example.com.evil"));
        assert!(!c.may_sign_up("x@evilteam.example"));
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(AuthConfig::default().validate().is_ok());
        let mut c = AuthConfig::default();
        c.argon2.memory_kib = 1;
        assert_eq!(c.validate().unwrap_err().key, "auth.argon2");
        let c = AuthConfig {
            cookie_name: "a b".into(),
            ..AuthConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "auth.cookie_name");
        let c = AuthConfig {
            allowed_origins: vec!["example.com".into()],
            ..AuthConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "auth.allowed_origins[0]");
    }
}
