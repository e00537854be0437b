//! `backup` and `restore`: the operator's side of [`crate::ops`], with a
//! progress bar on the terminal and a typed confirmation before live data is
//! replaced.

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
