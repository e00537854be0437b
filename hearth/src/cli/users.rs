//! `user …` and `mail test`: manage accounts and check mail settings from a
//! shell.
//!
//! A change of rights made here (admin flag, groups, disabling) ends the
//! account's sessions: the person signs in again and gets a fresh session
//! with the new rights, never an old session that gained them.

use std::io::{BufRead, IsTerminal, Write};

use clap::Subcommand;
use serde::Serialize;

use crate::app::App;
use crate::auth::User;
use crate::auth::users::{check_group, normalize_email};
use crate::config::Config;
use crate::state::AppState;

/// `user` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account. The password is asked for on a terminal, or read
    /// as the first line of standard input (`echo "$PW" | app user create …`).
    Create {
        /// The account's email address.
        email: String,
        /// Make it an admin.
        #[arg(long)]
        admin: bool,
        /// Mark the address as verified (no verification mail is sent).
        #[arg(long)]
        verified: bool,
    },
    /// List accounts in the order they were created.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give an account admin rights (or take them with --off); ends its sessions.
    SetAdmin {
        /// The account's email address.
        email: String,
        /// Take admin rights away instead.
        #[arg(long)]
        off: bool,
    },
    /// Put an account in a group; ends its sessions.
    AddGroup {
        /// The account's email address.
        email: String,
        /// The group: lowercase letters, digits, `_`, `-`, `.`.
        group: String,
    },
    /// Take an account out of a group; ends its sessions.
    RemoveGroup {
        /// The account's email address.
        email: String,
        /// The group.
        group: String,
    },
    /// Disable an account: it cannot sign in and its sessions end.
    Disable {
        /// The account's email address.
        email: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// The account's email address.
        email: String,
    },
}

/// `mail` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum MailCommand {
    /// Send a test message now (not through the queue) and report what the
    /// SMTP server said; in development it goes to the outbox.
    Test {
        /// Where to send it.
        address: String,
    },
}

#[derive(Serialize)]
struct UserLine {
    id: i64,
    email: String,
    verified: bool,
    admin: bool,
    disabled: bool,
    created_at: i64,
}

/// A client-visible error as a command's error: its message alone.
fn said(e: crate::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", e.body().message)
}

async fn find(state: &AppState, email: &str) -> anyhow::Result<User> {
    let email = normalize_email(email).map_err(said)?;
    match state.auth().users().by_email(&email).await? {
        Some((u, _)) => Ok(u),
        None => anyhow::bail!("no account has the address {email}"),
    }
}

/// Reads the new password: hidden prompt twice on a terminal, else one line of stdin.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            anyhow::bail!("the two passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(password)
}

pub(crate) async fn run_user(app: &App, config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let state = super::jobs::open(app, config).await?;
    let result = user_command(&state, cmd).await;
    state.db().close().await;
    result
}

pub(super) async fn user_command(state: &AppState, cmd: UserCommand) -> anyhow::Result<()> {
    let auth = state.auth();
    let users = auth.users();
    match cmd {
        UserCommand::Create {
            email,
            admin,
            verified,
        } => {
            let email = normalize_email(&email).map_err(said)?;
            let password = read_password()?;
            auth.passwords()
                .check_policy(&password, &email, "password")
                .map_err(said)?;
            let hash = auth.passwords().hash(&password).await?;
            let mut tx = state.db().begin().await?;
            let Some(id) = users.create(&mut tx, &email, &hash).await? else {
                anyhow::bail!("an account with the address {email} exists already");
            };
            if admin {
                users.set_admin(&mut tx, id, true).await?;
            }
            if verified {
                users.mark_verified(&mut tx, id).await?;
            } else {
                crate::auth::mailing::queue_verification(state.auth(), &mut tx, id).await?;
            }
            tx.commit().await?;
            let what = if admin { "admin account" } else { "account" };
            println!("created {what} {id} for {email}");
            if !verified {
                println!("a verification link is queued for it (sent by `serve` or `worker`)");
            }
        }
        UserCommand::List { json } => {
            let mut all = Vec::new();
            let mut after = 0;
            loop {
                let page = users.list(after, 500).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                all.extend(page.into_iter().map(|u| UserLine {
                    admin: auth.is_admin(&u),
                    id: u.id,
                    email: u.email,
                    verified: u.verified,
                    disabled: u.disabled,
                    created_at: u.created_at,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_users(&all)?;
            }
        }
        UserCommand::SetAdmin { email, off } => {
            let u = find(state, &email).await?;
            let mut tx = state.db().begin().await?;
            users.set_admin(&mut tx, u.id, !off).await?;
            let ended = auth.end_sessions_of(&mut tx, u.id).await?;
            tx.commit().await?;
            let now = if off {
                "no longer an admin"
            } else {
                "an admin"
            };
            println!("{} is {now}; {ended} session(s) ended", u.email);
            if off && auth.config().is_listed_admin(&u.email) {
                println!(
                    "note: auth.admins in the config still names this address, which makes it an admin"
                );
            }
        }
        UserCommand::AddGroup { email, group } | UserCommand::RemoveGroup { email, group }
            if check_group(&group).is_err() =>
        {
            let _ = email;
            anyhow::bail!(
                "`{group}` is not a group name: use 1 to 64 lowercase letters, digits, `_`, `-` or `.`"
            );
        }
        UserCommand::AddGroup { email, group } => {
            let u = find(state, &email).await?;
            let mut tx = state.db().begin().await?;
            let added = users.add_group(&mut tx, u.id, &group).await?;
            let ended = auth.end_sessions_of(&mut tx, u.id).await?;
            tx.commit().await?;
            if added {
                println!("{} is in {group}; {ended} session(s) ended", u.email);
            } else {
                println!("{} was in {group} already", u.email);
            }
        }
        UserCommand::RemoveGroup { email, group } => {
            let u = find(state, &email).await?;
            let mut tx = state.db().begin().await?;
            let removed = users.remove_group(&mut tx, u.id, &group).await?;
            let ended = auth.end_sessions_of(&mut tx, u.id).await?;
            tx.commit().await?;
            if removed {
                println!(
                    "{} is no longer in {group}; {ended} session(s) ended",
                    u.email
                );
            } else {
                println!("{} was not in {group}", u.email);
            }
        }
        UserCommand::Disable { email } => {
            let u = find(state, &email).await?;
            let mut tx = state.db().begin().await?;
            users.set_disabled(&mut tx, u.id, true).await?;
            let ended = auth.end_sessions_of(&mut tx, u.id).await?;
            tx.commit().await?;
            println!("{} is disabled; {ended} session(s) ended", u.email);
        }
        UserCommand::Enable { email } => {
            let u = find(state, &email).await?;
            let mut tx = state.db().begin().await?;
            users.set_disabled(&mut tx, u.id, false).await?;
            tx.commit().await?;
            println!("{} is enabled", u.email);
        }
    }
    Ok(())
}

fn print_users(all: &[UserLine]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>6}  {:<40} {:<8} {:<5} {:<8}",
        "id", "email", "verified", "admin", "disabled"
    )?;
    for u in all {
        let yes = |b: bool| if b { "yes" } else { "-" };
        writeln!(
            out,
            "{:>6}  {:<40} {:<8} {:<5} {:<8}",
            u.id,
            u.email,
            yes(u.verified),
            yes(u.admin),
            yes(u.disabled)
        )?;
    }
    writeln!(out, "{} account(s)", all.len())
}

pub(crate) async fn run_mail(app: &App, config: Config, cmd: MailCommand) -> anyhow::Result<()> {
    let MailCommand::Test { address } = cmd;
    let smtp = config.mail.smtp.clone();
    let state = super::jobs::open(app, config).await?;
    let result = async {
        let mailer = state.mailer();
        let message = crate::mail::templates::test(state.name(), address.trim())?;
        let sent = tokio::time::timeout(crate::mail::TEST_TIMEOUT, async {
            mailer.check().await?;
            mailer.send_now(&message).await
        })
        .await
        .map_err(|_| anyhow::anyhow!("the mail server did not finish within {:?}", crate::mail::TEST_TIMEOUT))??;
        match sent {
            crate::mail::Delivery::Sent => println!(
                "sent a test message to {} through {}:{}",
                message.to,
                smtp.host,
                smtp.port_or_default()
            ),
            crate::mail::Delivery::Outbox(path) => println!(
                "development: the test message was written to {} (set mail.transport = \"smtp\" to send)",
                path.display()
            ),
        }
        anyhow::Ok(())
    }
    .await;
    state.db().close().await;
    result
}
