//! `setup`, `doctor`, `backup`, `restore`, `install` and `cleanup`: the operator's side of
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
    let target = Target::new(app, &config, &db, &specs);
    let progress = Progress::bytes("backup", 0);
    let report = ops::backup::backup(&target, args.to.as_deref(), &progress).await;
    progress.done();
    if let Err(e) = &report {
        notify_backup_failed(app, &config, &db, e).await;
    }
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

/// Sends `backup_failed` through the app's funnel (log, webhook, mail to the
/// admins as configured) and waits for it to go out.
async fn notify_backup_failed(app: &App, config: &Config, db: &crate::Db, e: &ops::OpsError) {
    let Ok(built) = app.build(config.clone(), db.clone()) else {
        return;
    };
    let state = built.state;
    let notifier = state.notifier();
    notifier.start(state.db().clone(), state.jobs().clone());
    notifier.send(
        crate::telemetry::EventKind::BackupFailed,
        "backup",
        format!("`backup` failed: {e}"),
    );
    notifier
        .close(config.notify.webhook_timeout.get() * 2)
        .await;
}

pub(super) async fn run_restore(
    app: &App,
    config: Config,
    args: RestoreArgs,
) -> anyhow::Result<()> {
    let specs = app.specs()?;
    let db = match app.open_db(&config).await {
        Ok(db) => db,
        // A SQLite file too damaged to open is the usual reason to restore.
        // Restoring needs only the engine from it (the file is moved aside
        // by path), so stand in an empty in-memory database for it.
        Err(e) if config.database_url(app.name()).starts_with("sqlite:") => {
            eprintln!(
                "warning: the live database cannot be opened ({e}); a restore moves it aside as it is"
            );
            crate::Db::connect("sqlite::memory:", &config.db).await?
        }
        Err(e) => return Err(e.into()),
    };
    let target = Target::new(app, &config, &db, &specs);
    let progress = Progress::bytes(if args.verify { "verify" } else { "restore" }, 0);
    if args.verify {
        let report = ops::restore::verify(&target, &args.path, &progress, Some(app)).await;
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
        if let Some(st) = &report.self_test {
            print_self_test(st);
        }
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

/// `cleanup` arguments.
#[derive(Debug, Args)]
pub(super) struct CleanupArgs {
    /// Required: confirms that everything listed is deleted for good,
    /// backups in the data dir included.
    #[arg(long)]
    i_understand_this_deletes_everything: bool,
    /// PostgreSQL: a connection allowed to drop the app's database and role
    /// (e.g. postgres://postgres@127.0.0.1/postgres).
    #[arg(long, value_name = "URL", env = "HEARTH_ADMIN_DATABASE_URL")]
    admin_url: Option<String>,
}

pub(super) async fn run_cleanup(
    app: &App,
    config: Config,
    args: CleanupArgs,
) -> anyhow::Result<()> {
    let doomed = ops::cleanup::plan(app.name(), &config)?;
    if !args.i_understand_this_deletes_everything {
        let list: Vec<String> = doomed.iter().map(ToString::to_string).collect();
        return Err(UsageError(format!(
            "cleanup deletes for good: {}; pass --i-understand-this-deletes-everything to go on",
            if list.is_empty() {
                "nothing (nothing is there)".to_owned()
            } else {
                list.join(", ")
            }
        ))
        .into());
    }
    let removed = ops::cleanup::cleanup(app.name(), &config, args.admin_url.as_deref()).await?;
    for d in &removed {
        println!("removed {d}");
    }
    if removed.is_empty() {
        println!("nothing to remove");
    }
    Ok(())
}

/// `setup` arguments.
#[derive(Debug, Args)]
pub(super) struct SetupArgs {
    /// PostgreSQL: an admin connection used once to create the app's own
    /// role (no superuser, no CREATEDB) and database; the app's URL, with a
    /// fresh password, goes to hearth.secrets.toml.
    #[arg(long, value_name = "URL", env = "HEARTH_ADMIN_DATABASE_URL")]
    admin_url: Option<String>,
    /// PostgreSQL: the name of the role and database to create.
    /// [default: the app's name]
    #[arg(long, value_name = "NAME")]
    db_name: Option<String>,
    /// The first admin's address; the password is asked for on a terminal
    /// or read as one line of stdin.
    #[arg(long, value_name = "EMAIL")]
    admin_email: Option<String>,
}

pub(super) async fn run_setup(
    app: &App,
    config_path: Option<PathBuf>,
    overrides: crate::config::Overrides,
    args: SetupArgs,
) -> anyhow::Result<()> {
    use crate::ops::setup::{self, Provisioned};
    let db_name = args
        .db_name
        .clone()
        .unwrap_or_else(|| app.name().to_owned());
    let valid = db_name.len() <= 63
        && db_name.starts_with(|c: char| c.is_ascii_lowercase())
        && db_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(UsageError(format!(
            "--db-name {db_name:?}: use lowercase letters, digits and _, starting with a letter"
        ))
        .into());
    }
    let mut changes = Vec::new();
    let file = config_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("hearth.toml"));
    if setup::ensure_config_file(&file, app.name())? {
        changes.push(format!("wrote {}", file.display()));
    }
    let mut new_url = None;
    if let Some(admin) = &args.admin_url
        && let Provisioned::Created { url } = setup::provision_postgres(admin, &db_name).await?
    {
        changes.push(format!(
            "created the PostgreSQL role and database {db_name} (login, no superuser, no CREATEDB; database closed to other roles)"
        ));
        new_url = Some(url);
    }
    let secrets = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| std::path::Path::new("."))
        .join(crate::config::SECRETS_FILE);
    let added = setup::ensure_secrets(&secrets, new_url.as_deref())?;
    if !added.is_empty() {
        changes.push(format!(
            "wrote {} to {} (mode 0600)",
            added.join(" and "),
            secrets.display()
        ));
    }
    // From here on the new files count.
    let config = Config::load(Some(&file), &overrides).map_err(|e| UsageError(e.to_string()))?;
    if args.admin_url.is_some() && config.database_url.is_none() {
        anyhow::bail!(
            "the role {db_name} exists but no database_url is configured: put its URL in {} or DATABASE_URL",
            secrets.display()
        );
    }
    if setup::ensure_data_dir(&config.data_dir)? {
        changes.push(format!("created {}", config.data_dir.display()));
    }
    let specs = app.specs()?;
    let db = app.open_db(&config).await?;
    let report = crate::db::migrate::migrate(&db, &specs).await;
    db.close().await;
    let report = report?;
    if !report.applied.is_empty() {
        changes.push(format!("applied {} migration(s)", report.applied.len()));
    }
    let state = super::jobs::open(app, config).await?;
    let result = first_admin(&state, args.admin_email, &mut changes).await;
    state.db().close().await;
    result?;
    if changes.is_empty() {
        println!("nothing to change: {} is set up", app.name());
    } else {
        for c in &changes {
            println!("{c}");
        }
    }
    Ok(())
}

/// Creates the first admin when there is none.
async fn first_admin(
    state: &crate::AppState,
    email: Option<String>,
    changes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let auth = state.auth();
    let mut after = 0;
    loop {
        let page = auth.users().list(after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        if let Some(admin) = page.iter().find(|u| auth.is_admin(u)) {
            if email.is_some() {
                println!(
                    "an admin exists already ({}); --admin-email is ignored",
                    admin.email
                );
            }
            return Ok(());
        }
    }
    let email = match email {
        Some(e) => e,
        None if std::io::stdin().is_terminal() => {
            eprint!("Email of the first admin (empty to skip): ");
            std::io::stderr().flush()?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let line = line.trim().to_owned();
            if line.is_empty() {
                return Ok(());
            }
            line
        }
        None => {
            println!(
                "no admin account yet: run `{0} setup --admin-email EMAIL` or `{0} user create EMAIL --admin --verified`",
                state.name()
            );
            return Ok(());
        }
    };
    super::users::user_command(
        state,
        super::users::UserCommand::Create {
            email,
            admin: true,
            verified: true,
        },
    )
    .await?;
    changes.push("created the first admin".into());
    Ok(())
}

/// `self-test` arguments.
#[derive(Debug, Args)]
pub(super) struct SelfTestArgs {
    /// On PostgreSQL, create the scratch database through this URL (a role
    /// with CREATEDB) instead of the app's own connection.
    #[arg(long, value_name = "URL")]
    admin_url: Option<String>,
    /// Print the report as JSON ({database, checks: [{name, ok, detail, ms}]}).
    #[arg(long)]
    json: bool,
}

pub(super) async fn run_self_test(
    app: &App,
    config: Config,
    args: SelfTestArgs,
) -> anyhow::Result<()> {
    if let Some(url) = &args.admin_url
        && !url.starts_with("postgres://")
        && !url.starts_with("postgresql://")
    {
        return Err(UsageError(format!(
            "--admin-url must be a postgres:// URL, not `{}`",
            crate::config::Secret::new(url.clone()).masked()
        ))
        .into());
    }
    let report = ops::selftest::run(app, &config, args.admin_url.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_self_test(&report);
    }
    let failed: Vec<&str> = report.failures().iter().map(|c| c.name.as_str()).collect();
    if !failed.is_empty() {
        anyhow::bail!("self-test failed: {}", failed.join(", "));
    }
    Ok(())
}

fn print_self_test(report: &ops::selftest::Report) {
    println!("self-test on a scratch {} database", report.database);
    for c in &report.checks {
        let label = if c.ok { "ok" } else { "FAIL" };
        println!("{label:<5} {:<28} {} ({} ms)", c.name, c.detail, c.ms);
    }
    let failed = report.failures().len();
    println!("{} passed, {failed} failed", report.checks.len() - failed);
}

/// `doctor` arguments.
#[derive(Debug, Args)]
pub(super) struct DoctorArgs {
    /// Print the report as JSON (an array of {name, status, value, hint}).
    #[arg(long)]
    json: bool,
}

pub(super) async fn run_doctor(app: &App, config: Config, args: DoctorArgs) -> anyhow::Result<()> {
    use crate::ops::doctor::{self, Status};
    let report = doctor::run(app, &config).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.checks)?);
    } else {
        for c in &report.checks {
            println!("{:<5} {:<21} {}", c.status.label(), c.name, c.value);
            if let Some(h) = &c.hint {
                println!("{:<5} {:<21} -> {h}", "", "");
            }
        }
        let count = |s: Status| report.checks.iter().filter(|c| c.status == s).count();
        println!(
            "{} ok, {} warning(s), {} failure(s), {} skipped",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip)
        );
    }
    if report.failed() {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .collect();
        anyhow::bail!("doctor found failures: {}", failed.join(", "));
    }
    Ok(())
}
