//! `backup`, `restore` and `install`: the operator's side of
//! [`crate::ops`], with a progress bar on the terminal and a typed
//! confirmation before live data is replaced.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;

use super::UsageError;
use crate::app::App;
use crate::config::Config;
use crate::ops::progress::Progress;
use crate::ops::{self, Target};

/// `backup` arguments.
#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// Where to write the archive: a directory (it gets a dated name there)
    /// or a file name. [default: backup.dir, else <data_dir>/backups]
    #[arg(long, value_name = "PATH")]
    to: Option<PathBuf>,
}

/// `restore` arguments.
#[derive(Debug, Args)]
pub(super) struct RestoreArgs {
    /// The backup archive (`*.backup.tar.gz`).
    path: PathBuf,
    /// Replace the live data without asking.
    #[arg(long)]
    yes: bool,
    /// Only rehearse: restore into a scratch place, check integrity and row
    /// counts, migrate the copy, remove it. Nothing live is touched.
    #[arg(long, conflicts_with = "yes")]
    verify: bool,
}

pub(super) async fn run_backup(app: &App, config: Config, args: BackupArgs) -> anyhow::Result<()> {
    let specs = app.specs()?;
    let db = app.open_db(&config).await?;
    let target = Target {
        app: app.name(),
        version: app.version(),
        config: &config,
        db: &db,
        specs: &specs,
    };
    let progress = Progress::bytes("backup", 0);
    let report = ops::backup::backup(&target, args.to.as_deref(), &progress).await;
    progress.done();
    db.close().await;
    let report = report?;
    let rows: i64 = report.manifest.tables.values().sum();
    println!(
        "backup written: {} ({} bytes; {} tables, {rows} rows; {} files)",
        report.path.display(),
        report.size,
        report.manifest.tables.len(),
        report.manifest.entries.len()
    );
    for old in &report.removed {
        println!("removed old backup {}", old.display());
    }
    Ok(())
}

pub(super) async fn run_restore(
    app: &App,
    config: Config,
    args: RestoreArgs,
) -> anyhow::Result<()> {
    let specs = app.specs()?;
    let db = app.open_db(&config).await?;
    let target = Target {
        app: app.name(),
        version: app.version(),
        config: &config,
        db: &db,
        specs: &specs,
    };
    let progress = Progress::bytes(if args.verify { "verify" } else { "restore" }, 0);
    if args.verify {
        let report = ops::restore::verify(&target, &args.path, &progress).await;
        progress.done();
        db.close().await;
        let report = report?;
        println!(
            "ok: {} is intact: checksums match; {} tables hold the rows of the snapshot taken {}; {}",
            args.path.display(),
            report.tables_checked,
            report.manifest.created_at,
            if report.migrations_applied.is_empty() {
                "no migration was needed".to_owned()
            } else {
                format!(
                    "this binary migrated the copy ({})",
                    report.migrations_applied.join(", ")
                )
            }
        );
        return Ok(());
    }
    let prepared = match ops::restore::prepare(&target, &args.path, &progress).await {
        Ok(p) => p,
        Err(e) => {
            progress.done();
            db.close().await;
            return Err(e.into());
        }
    };
    progress.done();
    let m = prepared.manifest();
    let what = format!(
        "This replaces the live data of {} ({}) with the backup taken {} by {} {}.\nThe current data is kept aside.",
        app.name(),
        crate::config::Secret::new(target.database_url()).masked(),
        m.created_at,
        m.app,
        m.app_version
    );
    if !args.yes && !confirm(&what, app.name())? {
        db.close().await;
        anyhow::bail!("restore cancelled: nothing was changed");
    }
    let report = prepared.apply(&target).await?;
    println!(
        "restored the backup taken {}; the previous data is in {}",
        report.manifest.created_at, report.kept_aside
    );
    println!("pending migrations, if any, are applied by `migrate` or when `serve` starts");
    Ok(())
}

/// Asks the operator to type the app's name. Without a terminal there is no
/// one to ask: that is a usage error (pass `--yes`).
fn confirm(what: &str, app: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "restore replaces live data: pass --yes to confirm (or run it on a terminal to type the confirmation)".into(),
        )
        .into());
    }
    let mut err = std::io::stderr();
    writeln!(err, "{what}")?;
    write!(err, "Type {app} to go on: ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == app)
}

/// `install` arguments.
#[derive(Debug, Args)]
pub(super) struct InstallArgs {
    /// Write under this directory instead of / (packaging, tests). The system
    /// user is only created on the real root.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Print the files instead of writing them; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The binary the units start. [default: this executable]
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// The system user and group the services run as. [default: the app's name]
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

pub(super) async fn run_install(
    app: &App,
    config: Config,
    args: InstallArgs,
) -> anyhow::Result<()> {
    use crate::ops::install::{self, InstallPlan, Outcome};
    let user = args.user.unwrap_or_else(|| app.name().to_owned());
    let valid_user = user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid_user {
        return Err(UsageError(format!(
            "--user {user:?}: a system user name is lowercase letters, digits, _ and -, at most 32"
        ))
        .into());
    }
    let bin = match args.bin {
        Some(b) if b.is_absolute() => b,
        Some(b) => {
            return Err(UsageError(format!("--bin {}: give an absolute path", b.display())).into());
        }
        None => std::env::current_exe()?,
    };
    let plan = InstallPlan {
        app: app.name().to_owned(),
        bin,
        user,
        addr: config.addr,
    };
    if args.dry_run {
        for f in plan.files() {
            println!(
                "# {} (mode {:o}{})",
                f.path.display(),
                f.mode,
                if f.keep_existing {
                    ", kept if present"
                } else {
                    ""
                }
            );
            println!("{}", f.content);
        }
        println!(
            "# {} (directory, mode 750, owner {})",
            plan.data_dir().display(),
            plan.user
        );
        return Ok(());
    }
    let done = install::write(&plan, &args.root)?;
    let mut changed = false;
    for (path, outcome) in &done {
        let word = match outcome {
            Outcome::Written => {
                changed = true;
                "wrote    "
            }
            Outcome::Unchanged => "unchanged",
            Outcome::Kept => "kept     ",
        };
        println!("{word} {}", install::under(&args.root, path).display());
    }
    if !changed {
        println!("nothing to change: {} is installed", app.name());
    }
    if args.root == std::path::Path::new("/") {
        for line in install::activate(&plan) {
            println!("{line}");
        }
        println!(
            "next: edit {}, then systemctl enable --now {1}.service {1}-worker.service",
            plan.env_file().display(),
            app.name()
        );
    }
    Ok(())
}
