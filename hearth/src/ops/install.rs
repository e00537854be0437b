//! `install`: the files that make the binary a hardened systemd service: a
//! unit for the web process and one for the job workers, an environment
//! file, a dedicated system user (`sysusers.d`) and its data directory
//! (`tmpfiles.d`, mode 0750).
//!
//! Everything is written under a root (`/` by default; another directory for
//! packaging and tests), or only printed with `--dry-run`. Running it again
//! rewrites nothing that is already right, and never overwrites the
//! environment file, which by then holds the operator's settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::OpsError;

/// What to install.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    /// The app's name: the service, user and directory names.
    pub app: String,
    /// The binary the units start (absolute).
    pub bin: PathBuf,
    /// The system user and group the services run as.
    pub user: String,
    /// The address the web process listens on.
    pub addr: SocketAddr,
}

/// One file `install` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallFile {
    /// Absolute path on the target system.
    pub path: PathBuf,
    /// Content.
    pub content: String,
    /// Permission bits.
    pub mode: u32,
    /// Written only when missing (the operator edits it).
    pub keep_existing: bool,
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written (new or changed).
    Written,
    /// Already had this content.
    Unchanged,
    /// Left as the operator has it.
    Kept,
}

impl InstallPlan {
    /// The data directory on the target system.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/{}", self.app))
    }

    /// The environment file on the target system.
    pub fn env_file(&self) -> PathBuf {
        PathBuf::from(format!("/etc/{0}/{0}.env", self.app))
    }

    /// Every file, in the order they are written.
    pub fn files(&self) -> Vec<InstallFile> {
        let app = &self.app;
        let user = &self.user;
        let data = self.data_dir();
        vec![
            InstallFile {
                path: format!("/usr/lib/sysusers.d/{app}.conf").into(),
                content: format!(
                    "# The system user {app} runs as (written by `{app} install`).\n\
                     u {user} - \"{app} service\" {} /usr/sbin/nologin\n",
                    data.display()
                ),
                mode: 0o644,
                keep_existing: false,
            },
            InstallFile {
                path: format!("/usr/lib/tmpfiles.d/{app}.conf").into(),
                content: format!(
                    "# {app}'s data: database, uploaded files, backups (written by `{app} install`).\n\
                     d {} 0750 {user} {user} -\n",
                    data.display()
                ),
                mode: 0o644,
                keep_existing: false,
            },
            InstallFile {
                path: self.env_file(),
                content: self.env_content(),
                mode: 0o640,
                keep_existing: true,
            },
            InstallFile {
                path: format!("/etc/systemd/system/{app}.service").into(),
                content: self.unit(
                    "web server",
                    "serve",
                    // The worker unit runs the jobs; the web process only serves.
                    Some("HEARTH_JOBS__IN_SERVE=false"),
                ),
                mode: 0o644,
                keep_existing: false,
            },
            InstallFile {
                path: format!("/etc/systemd/system/{app}-worker.service").into(),
                content: self.unit("job workers and cron", "worker", None),
                mode: 0o644,
                keep_existing: false,
            },
        ]
    }

    fn env_content(&self) -> String {
        format!(
            "# Settings for {app}'s services (read by both units). Secrets belong here or in\n\
             # {data}/hearth.secrets.toml, never in the unit files.\n\
             HEARTH_ENV=prod\n\
             HEARTH_DATA_DIR={data}\n\
             HEARTH_ADDR={addr}\n\
             # DATABASE_URL=postgres://{app}@127.0.0.1:5432/{app}\n\
             # HEARTH_PUBLIC_URL=https://example.com\n\
             # HEARTH_MAIL__SMTP__HOST=smtp.example.com\n",
            app = self.app,
            data = self.data_dir().display(),
            addr = self.addr,
        )
    }

    fn unit(&self, what: &str, command: &str, extra_env: Option<&str>) -> String {
        let app = &self.app;
        let user = &self.user;
        let data = self.data_dir();
        let env = extra_env.map_or_else(String::new, |e| format!("Environment={e}\n"));
        // Binding below port 1024 is the one privilege the web process may need.
        let caps = if command == "serve" && self.addr.port() < 1024 {
            "CAP_NET_BIND_SERVICE"
        } else {
            ""
        };
        format!(
            "# {app} {what} (written by `{app} install`; run it again after an upgrade).\n\
             [Unit]\n\
             Description={app} {what}\n\
             After=network-online.target postgresql.service\n\
             Wants=network-online.target\n\
             \n\
             [Service]\n\
             Type=exec\n\
             User={user}\n\
             Group={user}\n\
             EnvironmentFile={env_file}\n\
             {env}\
             WorkingDirectory={data}\n\
             ExecStart={bin} {command}\n\
             Restart=on-failure\n\
             RestartSec=2s\n\
             # SIGTERM starts a graceful stop: in-flight requests and jobs finish first.\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=90s\n\
             UMask=0077\n\
             LimitNOFILE=65536\n\
             # Hardening: the service can write its data dir and nothing else.\n\
             NoNewPrivileges=yes\n\
             ProtectSystem=strict\n\
             ReadWritePaths={data}\n\
             ProtectHome=yes\n\
             PrivateTmp=yes\n\
             PrivateDevices=yes\n\
             ProtectKernelTunables=yes\n\
             ProtectKernelModules=yes\n\
             ProtectKernelLogs=yes\n\
             ProtectControlGroups=yes\n\
             ProtectClock=yes\n\
             ProtectHostname=yes\n\
             RestrictSUIDSGID=yes\n\
             RestrictRealtime=yes\n\
             RestrictNamespaces=yes\n\
             LockPersonality=yes\n\
             MemoryDenyWriteExecute=yes\n\
             RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
             SystemCallArchitectures=native\n\
             SystemCallFilter=@system-service\n\
             CapabilityBoundingSet={caps}\n\
             AmbientCapabilities={caps}\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            env_file = self.env_file().display(),
            data = data.display(),
            bin = self.bin.display(),
        )
    }
}

/// `path` (absolute on the target system) under `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Writes `plan`'s files and the data directory under `root`. Returns each
/// file with what happened to it.
pub fn write(plan: &InstallPlan, root: &Path) -> Result<Vec<(PathBuf, Outcome)>, OpsError> {
    let mut done = Vec::new();
    for f in plan.files() {
        let path = under(root, &f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                OpsError::io(
                    format!(
                        "cannot create {} (install writes system files: run it as root, or use --root DIR)",
                        dir.display()
                    ),
                    e,
                )
            })?;
        }
        let existing = std::fs::read_to_string(&path).ok();
        let outcome = match existing {
            Some(_) if f.keep_existing => Outcome::Kept,
            Some(old) if old == f.content => Outcome::Unchanged,
            _ => {
                std::fs::write(&path, &f.content)
                    .map_err(|e| OpsError::io(format!("cannot write {}", path.display()), e))?;
                Outcome::Written
            }
        };
        set_mode(&path, f.mode)?;
        done.push((f.path.clone(), outcome));
    }
    let data = under(root, &plan.data_dir());
    std::fs::create_dir_all(&data)
        .map_err(|e| OpsError::io(format!("cannot create {}", data.display()), e))?;
    set_mode(&data, 0o750)?;
    Ok(done)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), OpsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| OpsError::io(format!("cannot set the mode of {}", path.display()), e))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> Result<(), OpsError> {
    Ok(())
}

/// On the real root: creates the system user and applies the data dir's
/// ownership through systemd's own tools, then lets systemd reload.
/// Returns what it ran; a missing tool is reported, not fatal.
pub fn activate(plan: &InstallPlan) -> Vec<String> {
    let app = &plan.app;
    let steps: [(&str, Vec<String>); 3] = [
        (
            "systemd-sysusers",
            vec![format!("/usr/lib/sysusers.d/{app}.conf")],
        ),
        (
            "systemd-tmpfiles",
            vec!["--create".into(), format!("/usr/lib/tmpfiles.d/{app}.conf")],
        ),
        ("systemctl", vec!["daemon-reload".into()]),
    ];
    let mut report = Vec::new();
    for (tool, args) in steps {
        let line = format!("{tool} {}", args.join(" "));
        match std::process::Command::new(tool).args(&args).status() {
            Ok(s) if s.success() => report.push(format!("ran: {line}")),
            Ok(s) => report.push(format!("FAILED ({s}): {line}")),
            Err(e) => report.push(format!("skipped ({tool}: {e}): {line}")),
        }
    }
    report
}
