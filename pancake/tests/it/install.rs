//! `install` as a packager runs it: hardened units that `systemd-analyze
//! verify` accepts, safe modes, an environment file that is never
//! overwritten, a second run that changes nothing, `--dry-run` that writes
//! nothing, and usage errors for bad names.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::cli::{pancake, run, text};

const BIN: &str = env!("CARGO_BIN_EXE_pancake");

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_writes_hardened_units_once_and_keeps_the_operators_settings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let install = |extra: &[&str]| {
        let mut cmd = pancake(dir.path());
        cmd.args(["install", "--root", root.to_str().unwrap(), "--bin", BIN])
            .args(extra);
        run(&mut cmd)
    };
    let out = install(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let web = root.join("etc/systemd/system/pancake.service");
    let worker = root.join("etc/systemd/system/pancake-worker.service");
    let env = root.join("etc/pancake/pancake.env");
    for unit in [&web, &worker] {
        let u = std::fs::read_to_string(unit).unwrap();
        for line in [
            "User=pancake",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/pancake",
            "EnvironmentFile=/etc/pancake/pancake.env",
            "CapabilityBoundingSet=\n",
        ] {
            assert!(u.contains(line), "{} lacks {line:?}:\n{u}", unit.display());
        }
        assert_eq!(mode(unit), 0o644);
    }
    let web_unit = std::fs::read_to_string(&web).unwrap();
    assert!(web_unit.contains(&format!("ExecStart={BIN} serve")));
    assert!(web_unit.contains("Environment=HEARTH_JOBS__IN_SERVE=false"));
    assert!(
        std::fs::read_to_string(&worker)
            .unwrap()
            .contains(&format!("ExecStart={BIN} worker"))
    );
    assert!(
        std::fs::read_to_string(&env)
            .unwrap()
            .contains("HEARTH_ENV=prod")
    );
    assert_eq!(mode(&env), 0o640, "the environment file may hold secrets");
    assert_eq!(mode(&root.join("var/lib/pancake")), 0o750);
    let sysusers = std::fs::read_to_string(root.join("usr/lib/sysusers.d/pancake.conf")).unwrap();
    assert!(sysusers.contains("u pancake - "), "{sysusers}");
    assert!(
        std::fs::read_to_string(root.join("usr/lib/tmpfiles.d/pancake.conf"))
            .unwrap()
            .contains("d /var/lib/pancake 0750 pancake pancake")
    );

    match std::process::Command::new("systemd-analyze")
        .args(["verify"])
        .arg(&web)
        .arg(&worker)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "systemd-analyze verify: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        ),
        Err(e) => eprintln!("systemd-analyze not available ({e}); unit check skipped"),
    }

    // The operator's settings survive a second run, which changes nothing.
    std::fs::write(&env, "DATABASE_URL=postgres://mine\n").unwrap();
    let out = install(&[]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("nothing to change"), "{stdout}");
    assert!(stdout.contains("kept"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "DATABASE_URL=postgres://mine\n"
    );

    // A privileged port gets exactly the capability to bind it.
    let out = install(&["--addr", "0.0.0.0:443"]);
    assert!(out.status.success());
    let u = std::fs::read_to_string(&web).unwrap();
    assert!(
        u.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"),
        "{u}"
    );
    assert!(
        !std::fs::read_to_string(&worker)
            .unwrap()
            .contains("CAP_NET_BIND_SERVICE")
    );
}

#[test]
fn install_dry_run_prints_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = run(pancake(dir.path()).args([
        "install",
        "--dry-run",
        "--root",
        root.to_str().unwrap(),
        "--user",
        "cakes",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "# /etc/systemd/system/pancake.service",
        "# /etc/systemd/system/pancake-worker.service",
        "# /etc/pancake/pancake.env",
        "User=cakes",
        "ProtectSystem=strict",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    assert!(!root.exists(), "a dry run writes nothing");
}

#[test]
fn install_refuses_bad_names_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for args in [
        &["--user", "Bad User"][..],
        &["--user", "root;rm"][..],
        &["--bin", "relative/pancake"][..],
        &["--root"][..],
    ] {
        let out = run(pancake(dir.path())
            .args(["install", "--root", root.to_str().unwrap()])
            .args(args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).is_empty());
    }
    assert!(!root.exists());
}
