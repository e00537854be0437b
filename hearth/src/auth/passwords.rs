//! Passwords: the policy a new password must meet, and argon2id hashing on
//! a bounded slice of the blocking pool.
//!
//! A hash costs ~19 MiB and tens of milliseconds of one core by design, so it
//! never runs on the async workers: it goes to a pool of
//! `auth.hash_concurrency` low-priority threads (see `hash_pool`), and a
//! semaphore lets callers wait for a free one without holding a thread. A
//! login storm therefore queues for hashing while other requests keep
//! flowing. The queue is bounded (`auth.hash_queue`): past it a caller gets
//! 503 `busy` at once, so that a flood of hash requests cannot make one
//! ordinary login wait behind thousands of others.
//!
//! Verifying against an unknown account still hashes, against a dummy hash
//! made with the same parameters, so the time a login takes does not say
//! whether the email exists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::{OnceCell, Semaphore};

use crate::auth::AuthConfig;
use crate::auth::hash_pool::HashPool;
use crate::error::Error;

const COMMON: &str = include_str!("common_passwords.txt");

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The password matches.
    pub matches: bool,
    /// It matches, but the stored hash was made with other parameters (or
    /// another algorithm) and should be replaced.
    pub needs_rehash: bool,
}

/// The password hasher and policy; cheap to clone.
#[derive(Clone)]
pub struct Passwords(Arc<Inner>);

struct Inner {
    params: Params,
    slots: Semaphore,
    /// Hashes waiting for a slot or running, and the most allowed.
    admitted: AtomicUsize,
    admit_max: usize,
    pool: HashPool,
    dummy: OnceCell<String>,
    min_len: usize,
    max_len: usize,
    computed: AtomicU64,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("m_cost", &self.0.params.m_cost())
            .field("t_cost", &self.0.params.t_cost())
            .field("p_cost", &self.0.params.p_cost())
            .finish()
    }
}

impl Passwords {
    /// A hasher with the configured parameters; they were checked when the
    /// config was validated, and OWASP's defaults stand in if they fail here.
    pub fn new(config: &AuthConfig) -> Self {
        let a = config.argon2;
        let params =
            Params::new(a.memory_kib, a.iterations, a.parallelism, None).unwrap_or(Params::DEFAULT);
        Self(Arc::new(Inner {
            params,
            slots: Semaphore::new(config.hash_slots()),
            admitted: AtomicUsize::new(0),
            admit_max: config.hash_slots().saturating_add(config.hash_queue),
            pool: HashPool::new(config.hash_slots()),
            dummy: OnceCell::new(),
            min_len: config.password_min_len,
            max_len: config.password_max_len,
            computed: AtomicU64::new(0),
        }))
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Checks a new password against the policy: long enough (in
    /// characters), not too long (in bytes), not a well-known password and
    /// not the email itself. The error names `field`.
    pub fn check_policy(
        &self,
        password: &str,
        email: &str,
        field: &'static str,
    ) -> Result<(), Error> {
        let inner = &self.0;
        if password.chars().count() < inner.min_len {
            return Err(Error::validation(
                field,
                format!(
                    "the password must be at least {} characters long",
                    inner.min_len
                ),
            ));
        }
        if password.len() > inner.max_len {
            return Err(Error::validation(
                field,
                format!("the password must be at most {} bytes long", inner.max_len),
            ));
        }
        if is_common(password) {
            return Err(Error::validation(
                field,
                "this password is on the list of the most common ones; choose another",
            ));
        }
        if !email.is_empty() && password.trim().eq_ignore_ascii_case(email) {
            return Err(Error::validation(
                field,
                "the password must not be the email address",
            ));
        }
        Ok(())
    }

    /// Whether `password` is within the length a hash will be computed for.
    pub fn within_max_len(&self, password: &str) -> bool {
        password.len() <= self.0.max_len
    }

    /// Hashes a password into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let params = self.0.params.clone();
        let password = password.to_owned();
        self.blocking(move || {
            Self::argon2(params)
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
        })
        .await
    }

    /// Verifies `password` against `stored`, or against a dummy hash when
    /// there is no account, so that both take the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verdict, Error> {
        let stored = match stored {
            Some(s) => s.to_owned(),
            None => self.dummy().await?.to_owned(),
        };
        let want = self.0.params.clone();
        let password = password.to_owned();
        self.blocking(move || {
            let Ok(hash) = PasswordHash::new(&stored) else {
                // An unreadable stored hash matches nothing; say so in the log.
                tracing::warn!("a stored password hash is not a PHC string");
                return Ok(Verdict {
                    matches: false,
                    needs_rehash: false,
                });
            };
            let matches = Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok();
            let current = hash.algorithm.as_str() == argon2::ARGON2ID_IDENT.as_str()
                && Params::try_from(&hash).is_ok_and(|p| {
                    p.m_cost() == want.m_cost()
                        && p.t_cost() == want.t_cost()
                        && p.p_cost() == want.p_cost()
                });
            Ok(Verdict {
                matches,
                needs_rehash: matches && !current,
            })
        })
        .await
    }

    async fn dummy(&self) -> Result<&str, Error> {
        let hash = self
            .0
            .dummy
            .get_or_try_init(|| async {
                let mut random = [0_u8; 24];
                getrandom::fill(&mut random)
                    .map_err(|e| anyhow::anyhow!("no randomness for the dummy hash: {e}"))?;
                self.hash(&crate::auth::tokens::hex(&random)).await
            })
            .await?;
        Ok(hash)
    }

    /// How many argon2 computations (hashes and verifications, the dummy's
    /// included) this process has run: each costs the same, so equal counts
    /// mean equal time.
    pub fn computed(&self) -> u64 {
        self.0.computed.load(Ordering::Relaxed)
    }

    /// Runs `work` on a hashing thread once one is free.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let _admitted = Admitted::enter(&self.0.admitted, self.0.admit_max).ok_or_else(|| {
            Error::unavailable(
                "busy",
                "too many passwords are being checked right now; try again in a moment",
            )
        })?;
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self
            .0
            .slots
            .acquire()
            .await
            .map_err(|e| Error::internal(anyhow::anyhow!("hashing slots closed: {e}")))?;
        self.0.computed.fetch_add(1, Ordering::Relaxed);
        let out = self
            .0
            .pool
            .run(work)
            .await
            .map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
        out.map_err(Error::internal)
    }
}

/// A place among the admitted hashes, given back when dropped (also when
/// the waiting request is cancelled).
struct Admitted<'a>(&'a AtomicUsize);

impl<'a> Admitted<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a password is on the common list (compared without case).
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    COMMON
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l == lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> AuthConfig {
        let mut c = AuthConfig::default();
        c.argon2.memory_kib = 64;
        c.argon2.iterations = 1;
        c
    }

    #[tokio::test]
    async fn hashes_verify_and_flag_old_parameters() {
        let p = Passwords::new(&cheap());
        let h = p.hash("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        let v = p.verify("correct horse", Some(&h)).await.unwrap();
        assert_eq!(
            v,
            Verdict {
                matches: true,
                needs_rehash: false
            }
        );
        let v = p.verify("wrong horse", Some(&h)).await.unwrap();
        assert!(!v.matches);
        // Unknown account: checked against the dummy, never matches.
        assert!(!p.verify("correct horse", None).await.unwrap().matches);
        // Stronger parameters in the config: the old hash still works and asks to be redone.
        let mut stronger = cheap();
        stronger.argon2.iterations = 2;
        let v = Passwords::new(&stronger)
            .verify("correct horse", Some(&h))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verdict {
                matches: true,
                needs_rehash: true
            }
        );
        // Garbage in the column matches nothing.
        assert!(!p.verify("x", Some("not a hash")).await.unwrap().matches);
    }

    #[tokio::test]
    async fn past_the_queue_a_hash_is_refused_at_once_with_503() {
        let mut c = cheap();
        c.hash_concurrency = 1;
        c.hash_queue = 1;
        let p = Passwords::new(&c);
        // One runs, one waits, the third finds the queue full. All three are
        // polled once before any can finish, so the outcome is fixed.
        let (a, b, third) = tokio::join!(
            p.hash("one one one"),
            p.hash("two two two"),
            p.hash("three three")
        );
        assert!(a.is_ok() && b.is_ok());
        let e = third.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (503, "busy"));
        // The places were given back.
        assert!(p.hash("four four four").await.is_ok());
        // A request dropped while its hash waits or runs gives its place back.
        let busy = p.0.slots.acquire().await.unwrap();
        let mut started = Box::pin(p.hash("five five five"));
        tokio::select! {
            biased;
            _ = &mut started => panic!("the only slot is held, so the hash must wait"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(p.0.admitted.load(Ordering::Acquire), 1);
        drop(started);
        assert_eq!(p.0.admitted.load(Ordering::Acquire), 0);
        drop(busy);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_on_lowest_priority_threads() {
        let p = Passwords::new(&cheap());
        p.hash("correct horse").await.unwrap();
        // Other tests in this process start hashing threads too; one caught
        // between its start and its first statement (which lowers it) still
        // shows nice 0, so look again until every one has been lowered.
        let mut nice = Vec::new();
        for _ in 0..200 {
            nice = hash_thread_nice();
            if !nice.is_empty() && nice.iter().all(|n| n == "19") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!nice.is_empty(), "no hashing thread found");
        assert!(nice.iter().all(|n| n == "19"), "{nice:?}");
    }

    /// The nice value of every `hearth-hash` thread of this process.
    #[cfg(target_os = "linux")]
    fn hash_thread_nice() -> Vec<String> {
        let mut nice = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim().starts_with("hearth-hash") {
                // A thread may exit between listing and reading.
                let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
                    continue;
                };
                // Fields after the `(comm)`: state is the 3rd field, nice the 19th.
                let after = &stat[stat.rfind(')').unwrap() + 2..];
                nice.push(after.split(' ').nth(16).unwrap().to_owned());
            }
        }
        nice
    }

    #[test]
    fn the_defaults_are_owasps() {
        let c = AuthConfig::default();
        assert_eq!(
            (
                c.argon2.memory_kib,
                c.argon2.iterations,
                c.argon2.parallelism
            ),
            (19_456, 2, 1)
        );
    }

    #[test]
    fn policy_names_the_field_and_the_reason() {
        let p = Passwords::new(&cheap());
        assert!(
            p.check_policy("a fine long passphrase", "ana@example.com", "password")
                .is_ok()
        );
        for bad in ["short", "Password123", "QWERTYUIOP", "ana@example.com"] {
            let e = p
                .check_policy(bad, "ana@example.com", "new_password")
                .unwrap_err();
            assert_eq!(e.body().field.as_deref(), Some("new_password"), "{bad}");
            assert_eq!(e.status().as_u16(), 422);
        }
        assert!(p.check_policy(&"x".repeat(2000), "", "password").is_err());
        // Length counts characters, not bytes.
        assert!(p.check_policy("ééééééé", "", "password").is_err());
        assert!(p.check_policy("éééééééé", "", "password").is_ok());
    }
}
