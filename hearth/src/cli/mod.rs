//! The command line every app binary gets: `serve`, `worker`, `migrate`,
//! `jobs …`, `cron …`, `user …`, `mail test`, `setup`, `doctor`, `self-test`, `backup`,
//! `restore`, `install`, `cleanup`, `config`, `version`, and the living
//! documentation: `story`, `summary`, `graph`, `routes`.
//!
//! An app's `main` is one call: `hearth::cli::run(app())`. Exit codes: 0 on
//! success, 1 on a runtime failure, 2 on bad usage or bad configuration.

mod docs;
mod events;
mod jobs;
mod ops;
mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, Overrides};
use crate::db::migrate;

/// Exit code for bad usage or configuration.
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    about = "A hearth app: one binary, one database, the OS",
    propagate_version = true
)]
struct Cli {
    /// Configuration file; a `hearth.secrets.toml` beside it is read too.
    /// [default: hearth.toml, if present]
    #[arg(long, global = true, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `addr` / HEARTH_ADDR).
    #[arg(long, global = true)]
    addr: Option<SocketAddr>,
    /// Data directory (overrides `data_dir` / HEARTH_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP until SIGTERM or Ctrl-C, applying pending migrations first
    /// (unless `db.migrate_on_serve = false`). Job workers and cron run in the
    /// same process unless `jobs.in_serve = false`.
    Serve,
    /// Run job workers and cron only (no HTTP) until SIGTERM or Ctrl-C, so
    /// that web and worker processes can be split.
    Worker,
    /// Inspect and manage the job queue.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Inspect cron schedules.
    #[command(subcommand)]
    Cron(jobs::CronCommand),
    /// See how far each module has read the domain events, and retry, skip
    /// or replay what it holds.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Create and manage accounts.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Check the mail settings.
    #[command(subcommand)]
    Mail(users::MailCommand),
    /// Apply pending migrations, or show where the database stands.
    Migrate {
        /// Only show applied, pending and unknown migrations; change nothing.
        #[arg(long)]
        status: bool,
    },
    /// Prepare this machine, idempotently: data dir, hearth.toml, secrets
    /// with a fresh signing key, on PostgreSQL the app's own role and
    /// database (--admin-url), migrations, the first admin.
    Setup(ops::SetupArgs),
    /// Check everything the app depends on, step by step: config, disk,
    /// database, migrations, queue, cron, workers, TLS, SMTP, the running
    /// server, the clock. Exits 1 when a check fails.
    Doctor(ops::DoctorArgs),
    /// Start this binary on a scratch database (never the live one) and
    /// check it end to end over HTTP: hearth's checks, then the app's own.
    /// Exits 1 when a check fails.
    SelfTest(ops::SelfTestArgs),
    /// Write an online, consistent backup of the database and uploaded
    /// files to one compressed archive with checksums; keeps the newest
    /// `backup.keep` archives.
    Backup(ops::BackupArgs),
    /// Restore a backup archive over the live data (checked first; the
    /// previous data is kept aside), or rehearse it with --verify.
    Restore(ops::RestoreArgs),
    /// Install the binary as hardened systemd services: a web unit, a
    /// worker unit, an environment file, a system user and its data dir.
    Install(ops::InstallArgs),
    /// Delete the app's database (on PostgreSQL also its role) and data dir,
    /// backups included. Needs --i-understand-this-deletes-everything.
    Cleanup(ops::CleanupArgs),
    /// Print the effective configuration, with secrets masked.
    Config,
    /// Print the app's and hearth's versions.
    Version,
    /// Print the modules' use cases as stories: given, when, then.
    Story(docs::StoryArgs),
    /// Print one grep-able line per module fact, route and use case, then
    /// under `uncovered` every route and event no use case covers.
    Summary(docs::SummaryArgs),
    /// Print the graph of modules, routes and events (uncovered in red).
    Graph(docs::GraphArgs),
    /// List every route with its method, module and guard.
    Routes,
}

/// Parses the command line and runs the command for `app`.
pub fn run(app: App) -> ExitCode {
    let cmd = Cli::command()
        .name(app.name())
        .bin_name(app.name())
        .version(app.version());
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    run_parsed(app, cli)
}

fn run_parsed(app: App, cli: Cli) -> ExitCode {
    // The living documentation reads only what modules declare: no config,
    // no database.
    let command = match cli.command {
        Command::Story(args) => return docs::story(&app, args),
        Command::Summary(args) => return docs::summary(&app, args),
        Command::Graph(args) => return docs::graph(&app, args),
        Command::Routes => return docs::routes(&app),
        other => other,
    };
    let cli = Cli { command, ..cli };
    if let Command::Version = cli.command {
        println!(
            "{} {} (hearth {})",
            app.name(),
            app.version(),
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let overrides = Overrides {
        addr: cli.addr,
        data_dir: cli.data_dir,
    };
    // `setup` writes the config files, then loads them again.
    let (config_path, setup_overrides) = (cli.config.clone(), overrides.clone());
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Config = cli.command {
        let db_url = crate::config::Secret::new(config.database_url(app.name()));
        println!(
            "# effective configuration of {} (secrets masked)",
            app.name()
        );
        println!("# database in use: {}", db_url.masked());
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    // Held to the end of `run_parsed`, so pending log lines are flushed on exit.
    let _log = crate::telemetry::init(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(&app, config, false).await,
            Command::Worker => serve(&app, config, true).await,
            Command::Jobs(cmd) => jobs::run_jobs(&app, config, cmd).await,
            Command::Cron(cmd) => jobs::run_cron(&app, config, cmd).await,
            Command::Events(cmd) => events::run_events(&app, config, cmd).await,
            Command::User(cmd) => users::run_user(&app, config, cmd).await,
            Command::Mail(cmd) => users::run_mail(&app, config, cmd).await,
            Command::Migrate { status } => run_migrate(&app, &config, status).await,
            Command::Setup(args) => {
                drop(config);
                ops::run_setup(&app, config_path, setup_overrides, args).await
            }
            Command::Doctor(args) => ops::run_doctor(&app, config, args).await,
            Command::SelfTest(args) => ops::run_self_test(&app, config, args).await,
            Command::Backup(args) => ops::run_backup(&app, config, args).await,
            Command::Restore(args) => ops::run_restore(&app, config, args).await,
            Command::Install(args) => ops::run_install(&app, config, args).await,
            Command::Cleanup(args) => ops::run_cleanup(&app, config, args).await,
            Command::Config
            | Command::Version
            | Command::Story(_)
            | Command::Summary(_)
            | Command::Graph(_)
            | Command::Routes => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<UsageError>() => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "command failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A command used the wrong way (exit code 2, like a bad flag).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

async fn serve(app: &App, config: Config, worker_only: bool) -> anyhow::Result<()> {
    // Shared with other servers and workers on this data dir; a restore
    // takes it exclusively, so neither starts while the other runs.
    let _lock = crate::ops::lock_data_dir(&config.data_dir, false)?;
    // Listening starts before the app does: a SIGTERM that arrives while it
    // starts (a slow migration, a service manager that gives up) is kept and
    // stops it, gracefully and with exit 0, as soon as it is up.
    let signals = Signals::listen();
    let running = if worker_only {
        app.start_worker(config).await?
    } else {
        app.start(config).await?
    };
    let stopper = running.stopper();
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutdown signal received");
        stopper.stop();
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), registered at once so that none is missed.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let open = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for {name}");
                    None
                }
            };
            Self {
                term: open(SignalKind::terminate(), "SIGTERM"),
                int: open(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Until one of them arrives (or, if none could be listened to, forever).
    async fn wait(self) {
        #[cfg(unix)]
        {
            let mut term = self.term;
            let mut int = self.int;
            let one = |s: &mut Option<tokio::signal::unix::Signal>| {
                let s = s.take();
                async move {
                    match s {
                        Some(mut s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                () = one(&mut term) => {},
                () = one(&mut int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

async fn run_migrate(app: &App, config: &Config, only_status: bool) -> anyhow::Result<()> {
    let specs = app.specs()?;
    let db = app.open_db(config).await?;
    if only_status {
        let status = migrate::status(&db, &specs).await?;
        for m in &status.applied {
            println!("applied  {}/{}_{}", m.module, m.version, m.name);
        }
        for m in &status.pending {
            println!("pending  {m}");
        }
        for m in &status.unknown {
            println!("UNKNOWN  {m}");
        }
        for m in &status.changed {
            println!("CHANGED  {m}");
        }
        db.close().await;
        if let Some(problem) = status.problem()
            && (!status.unknown.is_empty() || !status.changed.is_empty())
        {
            anyhow::bail!(problem);
        }
        return Ok(());
    }
    let report = migrate::migrate(&db, &specs).await;
    db.close().await;
    let report = report?;
    if report.applied.is_empty() {
        println!("database is up to date");
    } else {
        for m in &report.applied {
            println!("applied  {m}");
        }
    }
    Ok(())
}
