//! `doctor`: step-by-step checks of everything a running app depends on,
//! each with a status, a measured value and, when it is not ok, a hint for
//! the fix. Written once here so every app binary carries them.
//!
//! A check that cannot run because an earlier one failed (no database, no
//! checks of its tables) says `skip` with the reason. The report is a
//! failure when any check failed; warnings do not fail it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::App;
use crate::config::Config;
use crate::db::{Db, DbKind, migrate};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but needs attention soon.
    Warn,
    /// Broken: the app cannot work properly.
    Fail,
    /// Not checked (not configured, or an earlier check failed).
    Skip,
}

impl Status {
    /// `ok`, `warn`, `FAIL` or `skip`, as printed.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was measured.
    pub value: String,
    /// What to do about it, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn check(name: &'static str, status: Status, value: impl Into<String>) -> Check {
    Check {
        name,
        status,
        value: value.into(),
        hint: None,
    }
}

impl Check {
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The check called `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn age(ms: i64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

/// Runs every check for `app` with `config`.
pub async fn run(app: &App, config: &Config) -> Report {
    let mut out = vec![check(
        "config",
        Status::Ok,
        format!(
            "valid ({} mode)",
            if config.is_prod() { "prod" } else { "dev" }
        ),
    )];
    out.push(data_dir(&config.data_dir));
    let url = config.database_url(app.name());
    out.push(file_modes(&config.data_dir, &url));
    out.push(free_disk(&config.data_dir).await);
    let started = Instant::now();
    let db = tokio::time::timeout(
        config.db.acquire_timeout.get() + Duration::from_secs(1),
        Db::connect_with(&url, &config.db, &app.layout()),
    )
    .await;
    let db = match db {
        Ok(Ok(db)) => Some(db),
        Ok(Err(e)) => {
            out.push(
                check("database", Status::Fail, format!("unreachable: {e}"))
                    .hint("check DATABASE_URL and that the server runs and accepts this role"),
            );
            None
        }
        Err(_) => {
            out.push(
                check(
                    "database",
                    Status::Fail,
                    format!("no answer within {}", ms(started.elapsed())),
                )
                .hint("check the network path to the database and its load"),
            );
            None
        }
    };
    match db {
        Some(db) => {
            database_checks(app, config, &db, &mut out).await;
            db.close().await;
        }
        None => {
            for name in ["migrations", "queue", "cron", "workers", "clock"] {
                out.push(check(name, Status::Skip, "the database is unreachable"));
            }
        }
    }
    out.push(tls(config));
    out.push(smtp(config).await);
    out.push(readyz(config).await);
    Report { checks: out }
}

fn data_dir(dir: &Path) -> Check {
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let written = crate::private_fs::create_dir(dir).and_then(|()| std::fs::write(&probe, b"ok"));
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => check(
            "data dir",
            Status::Ok,
            format!("{} is writable", dir.display()),
        ),
        Err(e) => check("data dir", Status::Fail, format!("{}: {e}", dir.display()))
            .hint("create it and give the service user write access (see `install`)"),
    }
}

/// Whether other users can read what the app keeps: the data dir and what
/// is directly in it (database, secret key, outbox, backups, files), and the
/// SQLite database with its `-wal` and `-shm` wherever it lives. Anything
/// looser than 0750 for a directory or 0600 for a file is named.
fn file_modes(dir: &Path, database_url: &str) -> Check {
    let mut paths = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut inside: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        inside.sort();
        paths.extend(inside);
    }
    if matches!(DbKind::from_url(database_url), Ok(DbKind::Sqlite))
        && let Ok(opts) =
            <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(database_url)
    {
        let db = opts.get_filename().to_owned();
        for suffix in ["", "-wal", "-shm"] {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            let p = std::path::PathBuf::from(p);
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    let loose: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            crate::private_fs::loose_mode(p).map(|mode| format!("{} is {mode:o}", p.display()))
        })
        .collect();
    if loose.is_empty() {
        check(
            "file modes",
            Status::Ok,
            "the data dir and database are private to the app's user",
        )
    } else {
        check("file modes", Status::Warn, loose.join("; ")).hint(format!(
            "other users can read these: `chmod {:o}` the directories and `chmod {:o}` the files",
            crate::private_fs::DIR_MODE,
            crate::private_fs::FILE_MODE
        ))
    }
}

/// Free space where the data dir is, from `df` (POSIX output).
async fn free_disk(dir: &Path) -> Check {
    let owned = dir.to_owned();
    let parsed = tokio::task::spawn_blocking(move || super::disk_space_kib(&owned))
        .await
        .ok()
        .flatten();
    let Some((total_kib, avail_kib)) = parsed else {
        return check("free disk", Status::Skip, "`df` gave no answer");
    };
    let pct = if total_kib == 0 {
        0.0
    } else {
        avail_kib as f64 * 100.0 / total_kib as f64
    };
    let value = format!(
        "{:.1} GiB free ({pct:.0} %)",
        avail_kib as f64 / 1024.0 / 1024.0
    );
    if avail_kib < 256 * 1024 || pct < 2.0 {
        check("free disk", Status::Fail, value)
            .hint("free space now: the database, backups and logs need room to grow")
    } else if avail_kib < 2 * 1024 * 1024 || pct < 10.0 {
        check("free disk", Status::Warn, value).hint("free space soon, or lower backup.keep")
    } else {
        check("free disk", Status::Ok, value)
    }
}

async fn database_checks(app: &App, config: &Config, db: &Db, out: &mut Vec<Check>) {
    // Version, and the round trip of a trivial query (median of five).
    let version = match db {
        Db::Sqlite(p, _) => sqlx::query_scalar::<_, String>("SELECT sqlite_version()")
            .fetch_one(p)
            .await
            .map(|v| format!("SQLite {v}")),
        Db::Postgres(p) => sqlx::query_scalar::<_, String>("SHOW server_version")
            .fetch_one(p)
            .await
            .map(|v| format!("PostgreSQL {v}")),
    };
    let mut trips = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r =
            crate::with_db!(db, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()));
        if r.is_ok() {
            trips.push(t.elapsed());
        }
    }
    trips.sort();
    match (version, trips.get(trips.len() / 2)) {
        (Ok(v), Some(rt)) => {
            let c = check(
                "database",
                Status::Ok,
                format!("{v}, round trip {}", ms(*rt)),
            );
            out.push(if *rt > Duration::from_millis(50) {
                Check {
                    status: Status::Warn,
                    ..c
                }
                .hint("a slow round trip: is the database far away or overloaded?")
            } else {
                c
            });
        }
        (Err(e), _) => out.push(check(
            "database",
            Status::Fail,
            format!("connected, but queries fail: {e}"),
        )),
        (Ok(v), None) => out.push(check(
            "database",
            Status::Fail,
            format!("{v}, but `SELECT 1` fails"),
        )),
    }
    let specs = match app.specs() {
        Ok(s) => s,
        Err(e) => {
            out.push(check("migrations", Status::Fail, e.to_string()));
            return;
        }
    };
    let current = match migrate::status(db, &specs).await {
        Ok(s) => {
            let levels: Vec<String> = s.levels().iter().map(|(m, v)| format!("{m} {v}")).collect();
            match s.problem() {
                None => {
                    out.push(check(
                        "migrations",
                        Status::Ok,
                        format!("current ({})", levels.join(", ")),
                    ));
                    true
                }
                Some(p) => {
                    let hint = if s.unknown.is_empty() && s.changed.is_empty() {
                        "run `migrate` (or restart `serve`, which migrates)"
                    } else {
                        "this binary is older than the database: deploy the newer one"
                    };
                    out.push(check("migrations", Status::Fail, p).hint(hint));
                    false
                }
            }
        }
        Err(e) => {
            out.push(check(
                "migrations",
                Status::Fail,
                format!("cannot read them: {e}"),
            ));
            false
        }
    };
    match db {
        Db::Sqlite(p, _) => {
            let integrity: Result<Vec<String>, _> = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_all(p)
                .await;
            out.push(match integrity {
                Ok(rows) if rows == ["ok"] => {
                    check("sqlite integrity", Status::Ok, "integrity_check: ok")
                }
                Ok(rows) => check("sqlite integrity", Status::Fail, rows.join("; "))
                    .hint("restore the last good backup (`restore --verify` it first)"),
                Err(e) => check("sqlite integrity", Status::Fail, e.to_string()),
            });
            let mode: Result<String, _> =
                sqlx::query_scalar("PRAGMA journal_mode").fetch_one(p).await;
            out.push(match mode {
                Ok(m) if m.eq_ignore_ascii_case("wal") => {
                    check("sqlite journal", Status::Ok, "wal")
                }
                Ok(m) => check("sqlite journal", Status::Warn, m)
                    .hint("hearth opens SQLite in WAL mode; another program changed it"),
                Err(e) => check("sqlite journal", Status::Fail, e.to_string()),
            });
        }
        Db::Postgres(p) => {
            let usage: Result<(i64, String), _> = sqlx::query_as(
                "SELECT (SELECT count(*) FROM pg_stat_activity), current_setting('max_connections')",
            )
            .fetch_one(p)
            .await;
            out.push(match usage {
                Ok((used, max)) => {
                    let max: i64 = max.parse().unwrap_or(0);
                    let value = format!(
                        "{used} of {max} connections in use; this node's pool allows {}",
                        config.db.pool_size(DbKind::Postgres)
                    );
                    if max > 0 && used * 10 >= max * 9 {
                        check("postgres connections", Status::Fail, value)
                            .hint("raise max_connections or lower db.max_connections on the nodes")
                    } else if max > 0 && used * 10 >= max * 7 {
                        check("postgres connections", Status::Warn, value)
                            .hint("close to max_connections")
                    } else {
                        check("postgres connections", Status::Ok, value)
                    }
                }
                Err(e) => check(
                    "postgres connections",
                    Status::Warn,
                    format!("cannot read pg_stat_activity: {e}"),
                ),
            });
        }
    }
    if current {
        jobs_checks(app, config, db, out).await;
    } else {
        for name in ["queue", "cron", "workers"] {
            out.push(check(name, Status::Skip, "the schema is not current"));
        }
    }
    out.push(clock(db).await);
}

async fn jobs_checks(app: &App, config: &Config, db: &Db, out: &mut Vec<Check>) {
    let state = match app.build(config.clone(), db.clone()) {
        Ok(b) => b.state,
        Err(e) => {
            out.push(check("queue", Status::Fail, e.to_string()));
            return;
        }
    };
    let jobs = state.jobs();
    match jobs.stats().await {
        Ok(stats) => {
            let pending: i64 = stats.iter().map(|s| s.pending).sum();
            let dead: i64 = stats.iter().map(|s| s.dead).sum();
            let oldest = stats.iter().map(|s| s.oldest_due_ms).max().unwrap_or(0);
            let value = format!(
                "{pending} pending, {dead} dead, oldest due job waiting {}",
                age(oldest)
            );
            // Idle workers poll every poll_interval; a due job older than a
            // minute beyond that is not being taken.
            let stuck = oldest
                > i64::try_from(config.jobs.poll_interval.get().as_millis()).unwrap_or(0) + 60_000;
            out.push(if dead > 0 {
                let queues: Vec<String> = stats.iter().filter(|s| s.dead > 0).map(|s| format!("{} ({})", s.queue, s.dead)).collect();
                check("queue", Status::Fail, value).hint(format!(
                    "dead jobs in {}: read them with `jobs list --state dead`, fix the cause, then `jobs retry --all-dead` or `jobs purge --state dead`",
                    queues.join(", ")
                ))
            } else if stuck {
                check("queue", Status::Warn, value).hint("due jobs are waiting: is a `serve` (with jobs.in_serve) or `worker` running?")
            } else {
                check("queue", Status::Ok, value)
            });
            let active: i64 = stats.iter().map(|s| s.active).sum();
            out.push(workers(db, active).await);
        }
        Err(e) => out.push(check("queue", Status::Fail, e.to_string())),
    }
    out.push(cron(&state).await);
    out.push(events(&state).await);
}

/// Each subscribing module's lag and what it holds.
async fn events(state: &crate::AppState) -> Check {
    let status = match state.events().status().await {
        Ok(s) => s,
        Err(e) => return check("events", Status::Fail, e.to_string()),
    };
    if status.is_empty() {
        return check("events", Status::Ok, "no module subscribes to events");
    }
    let value = status
        .iter()
        .map(|m| {
            format!(
                "{}: {} behind ({}), {} parked",
                m.module,
                m.behind,
                age(m.lag_ms),
                m.parked
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let parked: Vec<&str> = status
        .iter()
        .filter(|m| m.parked > 0)
        .map(|m| m.module.as_str())
        .collect();
    // Idle readers look every poll_interval; an unread event older than a
    // minute beyond that is not being read.
    let slow =
        i64::try_from(state.config().events.poll_interval.get().as_millis()).unwrap_or(0) + 60_000;
    if !parked.is_empty() {
        check("events", Status::Fail, value).hint(format!(
            "parked events in {}: read them with `events parked`, fix the cause, then `events retry` or `events skip`",
            parked.join(", ")
        ))
    } else if status.iter().any(|m| m.lag_ms > slow) {
        check("events", Status::Warn, value).hint(
            "modules are behind: is a `serve` (with jobs.in_serve) or `worker` running, or is a transaction held open?",
        )
    } else {
        check("events", Status::Ok, value)
    }
}

/// Active jobs whose worker stopped renewing its lease (the heartbeat).
async fn workers(db: &Db, active: i64) -> Check {
    let lost: Result<i64, _> = crate::with_db!(db, pool => sqlx::query_scalar(
        "SELECT count(*) FROM hearth_job_active WHERE lease_until < $1",
    )
    .bind(now_ms())
    .fetch_one(pool)
    .await);
    match lost {
        Ok(0) => check(
            "workers",
            Status::Ok,
            format!("{active} job(s) running, every lease renewed"),
        ),
        Ok(n) => check(
            "workers",
            Status::Warn,
            format!("{n} of {active} running job(s) missed their worker's heartbeat"),
        )
        .hint("a worker died or stalls; its jobs return to pending when the lease is reclaimed"),
        Err(e) => check("workers", Status::Fail, e.to_string()),
    }
}

/// Each schedule's last tick against its expression: a tick due more than
/// a grace period ago that never fired means no node runs cron.
async fn cron(state: &crate::AppState) -> Check {
    let stored = match state.jobs().cron_list().await {
        Ok(s) => s,
        Err(e) => return check("cron", Status::Fail, e.to_string()),
    };
    let registered = state.jobs().schedules();
    let now = now_ms();
    let mut stale = Vec::new();
    let mut failed = Vec::new();
    let mut never = Vec::new();
    for s in registered.iter() {
        let name = s.schedule.name();
        match stored.iter().find(|c| c.name == name) {
            None => never.push(name.to_owned()),
            Some(c) => {
                if now - c.next_at > 5 * 60_000 {
                    stale.push(format!("{name} (due {} ago)", age(now - c.next_at)));
                }
                if let Some(r) = &c.last_result
                    && r.starts_with("dead")
                {
                    failed.push(format!("{name}: {r}"));
                }
            }
        }
    }
    let value = format!("{} schedule(s)", registered.len());
    if !stale.is_empty() {
        check(
            "cron",
            Status::Fail,
            format!("{value}; stale: {}", stale.join(", ")),
        )
        .hint(
            "no node fired these ticks: start `serve` or `worker` (cron runs with the job workers)",
        )
    } else if !failed.is_empty() {
        check(
            "cron",
            Status::Warn,
            format!("{value}; last run failed: {}", failed.join("; ")),
        )
        .hint("see `cron list` and `jobs list --state dead`")
    } else if !never.is_empty() {
        check(
            "cron",
            Status::Warn,
            format!("{value}; never run: {}", never.join(", ")),
        )
        .hint("schedules are stored when `serve` or `worker` starts")
    } else {
        check("cron", Status::Ok, format!("{value}, all on time"))
    }
}

/// This machine's clock against the database server's.
async fn clock(db: &Db) -> Check {
    let Db::Postgres(p) = db else {
        return check("clock", Status::Skip, "SQLite shares this machine's clock");
    };
    let before = now_ms();
    let server: Result<i64, _> =
        sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            .fetch_one(p)
            .await;
    let after = now_ms();
    match server {
        Ok(server) => {
            let skew = server - (before + after) / 2;
            let value = format!("database clock {skew:+} ms from this machine's");
            if skew.abs() > 30_000 {
                check("clock", Status::Fail, value).hint("run NTP (systemd-timesyncd, chrony) on both machines: leases and schedules depend on it")
            } else if skew.abs() > 1_000 {
                check("clock", Status::Warn, value).hint("run NTP on both machines")
            } else {
                check("clock", Status::Ok, value)
            }
        }
        Err(e) => check("clock", Status::Fail, e.to_string()),
    }
}

/// Days until the configured certificate expires.
fn tls(config: &Config) -> Check {
    let Some(cert) = &config.tls.cert else {
        return check(
            "tls",
            Status::Skip,
            "no certificate configured (plain HTTP)",
        );
    };
    let pem = match std::fs::read_to_string(cert) {
        Ok(p) => p,
        Err(e) => {
            return check("tls", Status::Fail, format!("{}: {e}", cert.display()))
                .hint("fix tls.cert: serve cannot start without it");
        }
    };
    match super::cert::not_after(&pem) {
        Ok(not_after) => {
            let days = (not_after - now_ms() / 1000) / 86_400;
            let value = format!("{} expires in {days} day(s)", cert.display());
            if days < 0 {
                check("tls", Status::Fail, value).hint("renew the certificate now")
            } else if days < 14 {
                check("tls", Status::Warn, value).hint("renew the certificate")
            } else {
                check("tls", Status::Ok, value)
            }
        }
        Err(e) => check("tls", Status::Fail, format!("{}: {e}", cert.display())),
    }
}

/// Connects to the SMTP server and reads its greeting.
async fn smtp(config: &Config) -> Check {
    if config.mail.transport_for(config.is_prod()) != crate::mail::Transport::Smtp {
        return check(
            "smtp",
            Status::Skip,
            "mail goes to the outbox (no SMTP in use)",
        );
    }
    let host = config.mail.smtp.host.clone();
    let port = config.mail.smtp.port_or_default();
    let limit = config.mail.smtp.timeout.get();
    // With implicit TLS the server waits for a handshake: a connection is
    // all that can be seen without one.
    let implicit_tls = config.mail.smtp.security == crate::mail::SmtpSecurity::Tls;
    let greeting = tokio::time::timeout(limit, async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        if implicit_tls {
            return Ok::<_, std::io::Error>("220 (TLS; greeting not read)".to_owned());
        }
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    })
    .await;
    match greeting {
        Ok(Ok(g)) if g.starts_with("220") => {
            check("smtp", Status::Ok, format!("{host}:{port} answers"))
        }
        Ok(Ok(g)) => check("smtp", Status::Fail, format!("{host}:{port} said {g:?}")),
        Ok(Err(e)) => check("smtp", Status::Fail, format!("{host}:{port}: {e}"))
            .hint("check mail.smtp.host and port; `mail test ADDRESS` sends a real message"),
        Err(_) => check(
            "smtp",
            Status::Fail,
            format!("{host}:{port}: no greeting within {limit:?}"),
        ),
    }
}

/// Asks a server on the configured address for `/readyz`.
async fn readyz(config: &Config) -> Check {
    let mut addr = config.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        if config.tls.cert.is_some() {
            return Ok(None);
        }
        s.write_all(format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut body = Vec::new();
        s.take(64 * 1024).read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(Some(String::from_utf8_lossy(&body).into_owned()))
    })
    .await;
    match answer {
        Ok(Ok(Some(text))) => {
            let status = text.split_whitespace().nth(1).unwrap_or("?").to_owned();
            let body = text
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_owned();
            if status == "200" {
                check(
                    "server",
                    Status::Ok,
                    format!("{addr} answers /readyz with 200"),
                )
            } else {
                check(
                    "server",
                    Status::Fail,
                    format!("{addr} answers /readyz with {status}: {body}"),
                )
            }
        }
        Ok(Ok(None)) => check(
            "server",
            Status::Ok,
            format!("{addr} accepts connections (TLS; /readyz not fetched)"),
        ),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => check(
            "server",
            Status::Skip,
            format!("no server is listening on {addr}"),
        ),
        Ok(Err(e)) => check("server", Status::Fail, format!("{addr}: {e}")),
        Err(_) => check(
            "server",
            Status::Fail,
            format!("{addr}: no answer within 5 s"),
        ),
    }
}
