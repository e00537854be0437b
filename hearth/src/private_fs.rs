//! The app's directories and files are its own: directories are created
//! 0750 and files that hold data 0600, whatever the umask, so that other
//! users of the machine cannot read the database, the outbox or backups.
//!
//! SQLite gives its `-wal` and `-shm` files the mode of the database file,
//! so creating that file 0600 before SQLite opens it covers all three.

use std::io;
use std::path::Path;

/// The mode of the directories hearth creates.
pub const DIR_MODE: u32 = 0o750;

/// The mode of the files hearth creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0750. Existing
/// directories are left as they are (`doctor` reports loose ones).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// Creates `path` empty with mode 0600 unless it exists. True when created.
pub fn create_file(path: &Path) -> io::Result<bool> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(FILE_MODE);
    }
    match opts.open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The permission bits of `path` when they let in more than its owner
/// (for a file) or its owner and group (for a directory): `None` when they
/// do not, or when `path` does not exist.
pub fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).ok()?;
        let allowed = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
        let mode = meta.permissions().mode() & 0o777;
        (mode & !allowed != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_private_and_loose_ones_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&tmp.path().join("a")), DIR_MODE);
        let file = dir.join("x.db");
        assert!(create_file(&file).unwrap());
        assert!(!create_file(&file).unwrap());
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(loose_mode(&file), None);
        assert_eq!(loose_mode(&dir), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(loose_mode(&file), Some(0o644));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(loose_mode(&dir), Some(0o755));
        assert_eq!(loose_mode(&tmp.path().join("missing")), None);
    }
}
