//! Failing fast while PostgreSQL is down.
//!
//! When the server stops, sqlx retries each refused connection until the
//! pool's acquire timeout, so every request would wait `db.acquire_timeout`
//! (5 s by default) and then answer 503. The circuit stops that:
//!
//! - The pipeline tells it about every request that failed for want of the
//!   database ([`Circuit::suspect`]), and so does `/readyz`. It then tries
//!   one connection of its own, one check at a time.
//! - When that connection is refused or times out, the circuit opens: the
//!   pools are pointed at a Unix socket that cannot exist, which sqlx
//!   reports at once instead of retrying, so requests get 503
//!   `database_unavailable` straight away.
//! - While open, it tries to connect once a second with the real settings,
//!   and closes on the first success.
//!
//! An authentication error or "too many connections" means the server
//! answers: those never open the circuit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions as _, Connection as _};

/// How long one check may take to connect.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an open circuit checks again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// A directory no system has, so connecting through it fails at once.
const NOWHERE: &str = "/nonexistent/hearth-database-is-down";

/// The circuit of one PostgreSQL database and the pools that reach it;
/// cheap to clone.
#[derive(Clone, Debug)]
pub struct Circuit(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Each pool with the options it connects with when the circuit is closed.
    pools: Vec<(PgPool, PgConnectOptions)>,
    open: AtomicBool,
    checking: AtomicBool,
}

impl Circuit {
    /// The circuit for `pools`, closed.
    pub fn new(pools: &[&PgPool]) -> Self {
        let pools = pools
            .iter()
            .map(|p| ((*p).clone(), p.connect_options().as_ref().clone()))
            .collect();
        Self(Arc::new(Inner {
            pools,
            open: AtomicBool::new(false),
            checking: AtomicBool::new(false),
        }))
    }

    /// Whether the database is known to be down.
    pub fn is_open(&self) -> bool {
        self.0.open.load(Ordering::Acquire)
    }

    /// A request failed for want of the database: check (in the background,
    /// one check at a time) whether the server answers, and open the
    /// circuit if it does not.
    pub fn suspect(&self) {
        if self.is_open() || self.0.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if !this.reachable().await {
                this.open();
                while !this.reachable().await {
                    tokio::time::sleep(RETRY_EVERY).await;
                }
                this.close();
            }
            this.0.checking.store(false, Ordering::Release);
        });
    }

    /// Whether a fresh connection with the real settings gets an answer.
    async fn reachable(&self) -> bool {
        let Some((_, opts)) = self.0.pools.first() else {
            return true;
        };
        match tokio::time::timeout(CHECK_TIMEOUT, opts.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                true
            }
            // The server answered, if only to refuse us.
            Ok(Err(sqlx::Error::Database(e))) => e.code().is_none_or(|c| !c.starts_with("57P")),
            Ok(Err(_)) | Err(_) => false,
        }
    }

    fn open(&self) {
        for (pool, opts) in &self.0.pools {
            pool.set_connect_options(opts.clone().socket(NOWHERE));
        }
        self.0.open.store(true, Ordering::Release);
        tracing::error!(
            "the database does not answer; requests that need it fail at once until it is back"
        );
    }

    fn close(&self) {
        for (pool, opts) in &self.0.pools {
            pool.set_connect_options(opts.clone());
        }
        self.0.open.store(false, Ordering::Release);
        tracing::warn!("the database answers again");
    }
}

/// Whether `e` means the database cannot be reached right now (a lost or
/// refused connection, a server shutting down or starting up), as opposed
/// to a bug or bad data: the request may be retried.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exceptions; 57P01-57P03: the server is
        // shutting down, crashed or not accepting connections yet.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        // A connection cut mid-message shows as a protocol error.
        sqlx::Error::Protocol(m) => {
            m.contains("closed") || m.contains("EOF") || m.contains("reset")
        }
        _ => false,
    }
}
