//! `events …`: see how far each subscribing module has got, and manage the
//! events it holds, as text for people or `--json` for scripts.

use clap::Subcommand;

use crate::app::App;
use crate::config::Config;
use crate::events::Held;

/// `events` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Per subscribing module: events handled, how far behind it is (count
    /// and age of the oldest unread event), and what it holds.
    Status {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Events taken out of a module's stream: parked (out of attempts),
    /// retrying, and those waiting behind them.
    Parked {
        /// Only this module.
        #[arg(long)]
        module: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give a parked (or retrying) event a fresh set of attempts, now.
    Retry {
        /// The subscribing module.
        module: String,
        /// The event's position (see `events parked`).
        position: i64,
    },
    /// Drop a held event without handling it; the events of its key that
    /// waited behind it go on. The module will never see it.
    Skip {
        /// The subscribing module.
        module: String,
        /// The event's position (see `events parked`).
        position: i64,
    },
    /// Rebuild a module's projection: clear what it derived from events
    /// (its replay hook) and start its subscriptions over from the oldest
    /// retained event. The running app's readers then do the work.
    Replay {
        /// The subscribing module.
        module: String,
    },
    /// Delete events older than `events.retention` that every subscriber
    /// has passed (housekeeping does this every ten minutes).
    Purge,
}

pub(crate) async fn run_events(
    app: &App,
    config: Config,
    cmd: EventsCommand,
) -> anyhow::Result<()> {
    let state = super::jobs::open(app, config).await?;
    let events = state.events().clone();
    let result = async {
        match cmd {
            EventsCommand::Status { json } => {
                let status = events.status().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else if status.is_empty() {
                    println!("no module subscribes to events");
                } else {
                    println!(
                        "{:<20} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8}",
                        "MODULE", "HANDLED", "BEHIND", "LAG", "RETRY", "PARKED", "WAITING"
                    );
                    for m in &status {
                        println!(
                            "{:<20} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8}",
                            m.module,
                            m.handled,
                            m.behind,
                            super::jobs::age(m.lag_ms),
                            m.retrying,
                            m.parked,
                            m.waiting
                        );
                    }
                }
            }
            EventsCommand::Parked {
                module,
                limit,
                json,
            } => {
                let held = events.held(module.as_deref(), limit).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&held)?);
                } else {
                    print_held(&held);
                }
            }
            EventsCommand::Retry { module, position } => {
                events.retry(&module, position).await?;
                println!("event {position} will be handled again by `{module}` now");
            }
            EventsCommand::Skip { module, position } => {
                let h = events.skip(&module, position).await?;
                println!(
                    "event {position} ({}) skipped for `{module}`; the events of its key go on",
                    if h.name.is_empty() { "gone" } else { &h.name }
                );
            }
            EventsCommand::Replay { module } => {
                let oldest = events.replay(&module).await?;
                match oldest {
                    Some((position, at)) => println!(
                        "`{module}` starts over from the oldest retained event ({position}, published {} ago); `events status` shows its progress",
                        super::jobs::age(crate::jobs::now_ms() - at)
                    ),
                    None => println!("`{module}` starts over; no events are retained"),
                }
            }
            EventsCommand::Purge => {
                let n = events.purge().await?;
                println!("purged {n} event(s)");
            }
        }
        anyhow::Ok(())
    }
    .await;
    state.db().close().await;
    result
}

fn print_held(held: &[Held]) {
    if held.is_empty() {
        println!("no held events");
        return;
    }
    println!(
        "{:<16} {:>10} {:<28} {:<16} {:<8} {:>4}  ERROR",
        "MODULE", "POSITION", "EVENT", "KEY", "STATE", "TRY"
    );
    for h in held {
        let error = h.error.as_deref().unwrap_or("");
        let error: String = error.chars().take(80).collect();
        println!(
            "{:<16} {:>10} {:<28} {:<16} {:<8} {:>4}  {}",
            h.module,
            h.position,
            h.name,
            h.key.as_deref().unwrap_or("-"),
            h.state,
            h.attempts,
            error
        );
    }
}
