//! `jobs …` and `cron …`: look at and manage the queue from a shell, as text
//! for people or `--json` for scripts.

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::app::App;
use crate::config::Config;
use crate::jobs::{JobInfo, JobState, NewJob};
use crate::state::AppState;

/// `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// List jobs in one state, oldest first.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// pending, active, dead or done (recent history).
        #[arg(long, default_value = "pending", value_parser = parse_state)]
        state: JobState,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move a dead job (or all of them) back to pending with fresh attempts.
    Retry(RetryArgs),
    /// Delete dead jobs (or history) older than a given age.
    Purge {
        /// dead, or done (history).
        #[arg(long, value_parser = parse_purge_state)]
        state: JobState,
        /// Only jobs that died (or finished) longer ago than this, e.g. 7d; default: all.
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<Duration>,
        /// Print the count as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Depth per queue and state, and the age of the oldest due job.
    Stats {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a job by name with a JSON payload, e.g. to run a report now.
    Enqueue {
        /// The job's registered name.
        name: String,
        /// The payload as JSON; it must fit the job's payload type.
        #[arg(default_value = "null")]
        payload: String,
        /// Run no earlier than this from now, e.g. 10m.
        #[arg(long, value_parser = parse_duration)]
        delay: Option<Duration>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which dead jobs to retry.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct RetryArgs {
    /// The dead job's id.
    id: Option<i64>,
    /// Every dead job.
    #[arg(long)]
    all_dead: bool,
}

/// `cron` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CronCommand {
    /// Every schedule: expression, next run, last run and its result.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(s: &str) -> Result<JobState, String> {
    s.parse()
}

fn parse_purge_state(s: &str) -> Result<JobState, String> {
    match s.parse()? {
        st @ (JobState::Dead | JobState::Done) => Ok(st),
        _ => Err("only dead jobs and history (done) can be purged".into()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::Duration::parse(s).map(|d| d.get())
}

/// Opens the database and builds the app's state (no server, no workers),
/// refusing a database whose migrations are not current.
pub(crate) async fn open(app: &App, config: Config) -> anyhow::Result<AppState> {
    let specs = app.specs()?;
    let db = app.open_db(&config).await?;
    let status = crate::db::migrate::status(&db, &specs).await?;
    if let Some(problem) = status.problem() {
        db.close().await;
        anyhow::bail!(problem);
    }
    Ok(app.build(config, db)?.state)
}

pub(crate) async fn run_jobs(app: &App, config: Config, cmd: JobsCommand) -> anyhow::Result<()> {
    let state = open(app, config).await?;
    let jobs = state.jobs().clone();
    let result = async {
        match cmd {
            JobsCommand::List {
                queue,
                state: st,
                limit,
                json,
            } => {
                let list = jobs.list(st, queue.as_deref(), limit).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    print_jobs(&list);
                }
            }
            JobsCommand::Retry(RetryArgs { id, all_dead }) => {
                if all_dead {
                    let n = jobs.retry_all_dead().await?;
                    println!("moved {n} dead job(s) back to pending");
                } else if let Some(id) = id {
                    jobs.retry(id).await?;
                    println!("job {id} is pending again");
                }
            }
            JobsCommand::Purge {
                state: st,
                older_than,
                json,
            } => {
                let age = older_than.unwrap_or(Duration::ZERO);
                let n = match st {
                    JobState::Done => jobs.purge_history(age).await?,
                    _ => jobs.purge_dead(age).await?,
                };
                if json {
                    println!("{}", serde_json::json!({ "purged": n, "state": st }));
                } else {
                    println!("purged {n} {} job(s)", st.as_str());
                }
            }
            JobsCommand::Stats { json } => {
                let stats = jobs.stats().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&stats)?);
                } else if stats.is_empty() {
                    println!("no jobs");
                } else {
                    println!(
                        "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
                        "QUEUE", "PENDING", "DUE", "ACTIVE", "DEAD", "DONE", "OLDEST DUE"
                    );
                    for s in &stats {
                        println!(
                            "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
                            s.queue,
                            s.pending,
                            s.due,
                            s.active,
                            s.dead,
                            s.done,
                            age(s.oldest_due_ms)
                        );
                    }
                }
            }
            JobsCommand::Enqueue {
                name,
                payload,
                delay,
                json,
            } => {
                let mut job = NewJob::from_json(name, payload);
                if let Some(d) = delay {
                    job = job.delay(d);
                }
                let out = jobs.enqueue_now(job).await?;
                if json {
                    println!("{}", serde_json::to_string(&out)?);
                } else if out.duplicate {
                    println!("job {} already holds this unique key", out.id);
                } else {
                    println!("enqueued job {}", out.id);
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    state.db().close().await;
    result
}

pub(crate) async fn run_cron(app: &App, config: Config, cmd: CronCommand) -> anyhow::Result<()> {
    let state = open(app, config).await?;
    let result = async {
        match cmd {
            CronCommand::List { json } => {
                let list = state.jobs().cron_list().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else if list.is_empty() {
                    println!("no schedules (they are stored when `serve` or `worker` starts)");
                } else {
                    println!(
                        "{:<28} {:<16} {:<22} {:<22} LAST RESULT",
                        "NAME", "EXPRESSION", "NEXT RUN (UTC)", "LAST RUN (UTC)"
                    );
                    for c in &list {
                        println!(
                            "{:<28} {:<16} {:<22} {:<22} {}",
                            c.name,
                            c.expr,
                            time(Some(c.next_at)),
                            time(c.last_tick),
                            c.last_result.as_deref().unwrap_or("-")
                        );
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    state.db().close().await;
    result
}

fn print_jobs(list: &[JobInfo]) {
    if list.is_empty() {
        println!("no jobs");
        return;
    }
    println!(
        "{:>8} {:<8} {:<12} {:<28} {:>8} {:<22} LAST ERROR",
        "ID", "STATE", "QUEUE", "NAME", "ATTEMPTS", "RUN AT (UTC)"
    );
    for j in list {
        let err = j.last_error.as_deref().unwrap_or("");
        let err: String = err.chars().take(60).collect();
        println!(
            "{:>8} {:<8} {:<12} {:<28} {:>8} {:<22} {}",
            j.id,
            j.state.as_str(),
            j.queue,
            j.name,
            format!("{}/{}", j.attempts, j.max_attempts),
            time(Some(j.run_at)),
            err.replace('\n', " ")
        );
    }
}

fn time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub(crate) fn age(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
