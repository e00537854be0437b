//! The backup archive: a gzip-compressed tar holding the database snapshot,
//! the uploaded files and, last, `manifest.json` with a SHA-256 and size for
//! every other entry.
//!
//! The manifest goes last so that one pass both writes the data and learns
//! its checksums. Reading therefore takes two passes: the first reads only
//! the tar headers and the manifest, so that the names and sizes are checked
//! and the total is known to fit before a byte is written (a small archive
//! can decompress to far more than the disk holds); the second unpacks and
//! checks every entry's checksum before anything is used. Entry names are plain relative paths: an archive that tries to
//! write outside its directory, holds links or devices, or has entries the
//! manifest does not list is refused as damaged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::OpsError;
use super::progress::Progress;

/// The manifest's name inside the archive.
pub const MANIFEST: &str = "manifest.json";
/// The SQLite snapshot's name inside the archive.
pub const SQLITE_ENTRY: &str = "database.sqlite";
/// The PostgreSQL dump's name inside the archive (`pg_dump` custom format).
pub const POSTGRES_ENTRY: &str = "database.pgdump";
/// Where uploaded files go inside the archive.
pub const FILES_PREFIX: &str = "files";
/// The archive layout this binary writes and reads.
pub const FORMAT: u32 = 1;

/// What an archive holds, written as its last entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Archive layout version ([`FORMAT`]).
    pub format: u32,
    /// The app that wrote it.
    pub app: String,
    /// That app's version.
    pub app_version: String,
    /// hearth's version.
    pub hearth_version: String,
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// When the snapshot was taken, RFC 3339 UTC.
    pub created_at: String,
    /// The migrations recorded in the snapshot.
    pub migrations: Vec<ManifestMigration>,
    /// Rows per table in the snapshot, counted inside the snapshot itself.
    pub tables: BTreeMap<String, i64>,
    /// Every other entry, with its size and SHA-256.
    pub entries: Vec<Entry>,
}

/// One applied migration, as recorded in the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestMigration {
    /// Module name.
    pub module: String,
    /// Version number.
    pub version: i64,
    /// Name.
    pub name: String,
    /// Checksum of its SQL text.
    pub checksum: String,
}

/// One file in the archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Path inside the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// Highest migration per module.
    pub fn levels(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for m in &self.migrations {
            let level = out.entry(m.module.clone()).or_insert(0);
            *level = (*level).max(m.version);
        }
        out
    }
}

/// Copies while hashing and counting, and moves the progress bar.
struct Hashing<'a, R> {
    inner: R,
    hash: Sha256,
    size: u64,
    progress: &'a Progress,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Writes an archive to `<path>.partial` and renames it into place when
/// [`ArchiveWriter::finish`] succeeds; dropped unfinished, it removes the
/// partial file.
pub struct ArchiveWriter {
    builder: Option<tar::Builder<flate2::write::GzEncoder<BufWriter<File>>>>,
    partial: PathBuf,
    path: PathBuf,
    entries: Vec<Entry>,
}

impl ArchiveWriter {
    /// Starts an archive at `path` (readable by the owner only: it holds
    /// password hashes and whatever else the database has).
    pub fn create(path: &Path) -> Result<Self, OpsError> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = create_private(&partial)
            .map_err(|e| OpsError::io(format!("cannot create {}", partial.display()), e))?;
        let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        builder.mode(tar::HeaderMode::Deterministic);
        Ok(Self {
            builder: Some(builder),
            partial,
            path: path.to_owned(),
            entries: Vec::new(),
        })
    }

    fn builder(&mut self) -> &mut tar::Builder<flate2::write::GzEncoder<BufWriter<File>>> {
        // Only `finish` takes the builder, and it consumes `self`.
        match self.builder.as_mut() {
            Some(b) => b,
            None => unreachable!("the archive builder is only taken by finish"),
        }
    }

    /// Adds the file at `src` as `name`.
    pub fn add_file(
        &mut self,
        name: &str,
        src: &Path,
        progress: &Progress,
    ) -> Result<(), OpsError> {
        let file = File::open(src)
            .map_err(|e| OpsError::io(format!("cannot read {}", src.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| OpsError::io(format!("cannot read {}", src.display()), e))?
            .len();
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        // A file that grows while it is read is cut at the size in the
        // header; the checksum covers exactly what went in.
        let mut reader = Hashing {
            inner: file.take(size),
            hash: Sha256::new(),
            size: 0,
            progress,
        };
        self.builder()
            .append_data(&mut header, name, &mut reader)
            .map_err(|e| OpsError::io(format!("cannot write {name} to the archive"), e))?;
        if reader.size != size {
            return Err(OpsError::Failed(format!(
                "{} shrank while it was archived ({} of {size} bytes)",
                src.display(),
                reader.size
            )));
        }
        self.entries.push(Entry {
            path: name.to_owned(),
            size,
            sha256: hex::encode(reader.hash.finalize()),
        });
        Ok(())
    }

    /// Adds every regular file under `dir` as `prefix/<relative path>`, in
    /// name order. Links and special files are skipped.
    pub fn add_dir(
        &mut self,
        prefix: &str,
        dir: &Path,
        progress: &Progress,
    ) -> Result<(), OpsError> {
        for (rel, path) in walk(dir)? {
            self.add_file(&format!("{prefix}/{rel}"), &path, progress)?;
        }
        Ok(())
    }

    /// The entries written so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Writes `manifest` (with the entries filled in), flushes everything to
    /// disk and moves the archive into place. Returns its size in bytes.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<u64, OpsError> {
        manifest.entries = std::mem::take(&mut self.entries);
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| OpsError::Failed(format!("cannot encode the manifest: {e}")))?;
        let mut builder = self
            .builder
            .take()
            .ok_or_else(|| OpsError::Failed("the archive was already finished".into()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        let write_err = |e| OpsError::io("cannot write the archive".to_owned(), e);
        builder
            .append_data(&mut header, MANIFEST, json.as_slice())
            .map_err(write_err)?;
        let gz = builder.into_inner().map_err(write_err)?;
        let buffered = gz.finish().map_err(write_err)?;
        let file = buffered
            .into_inner()
            .map_err(|e| OpsError::io("cannot write the archive".to_owned(), e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        let size = file.metadata().map_err(write_err)?.len();
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| {
            OpsError::io(
                format!("cannot move the archive to {}", self.path.display()),
                e,
            )
        })?;
        if let Some(dir) = self.path.parent() {
            // The rename is only durable once the directory is synced.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(size)
    }
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        if self.builder.is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Creates `path` for writing, readable and writable by the owner only.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Regular files under `dir`, as (relative path with `/`, full path), sorted.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>, OpsError> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_owned())];
    while let Some((rel, path)) = stack.pop() {
        let read = std::fs::read_dir(&path)
            .map_err(|e| OpsError::io(format!("cannot list {}", path.display()), e))?;
        for entry in read {
            let entry =
                entry.map_err(|e| OpsError::io(format!("cannot list {}", path.display()), e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            let kind = entry
                .file_type()
                .map_err(|e| OpsError::io(format!("cannot read {}", entry.path().display()), e))?;
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if kind.is_dir() {
                stack.push((child, entry.path()));
            } else if kind.is_file() {
                out.push((child, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Opens `archive` as a stream of tar entries, counting compressed bytes.
fn open_tar<'a>(
    archive: &Path,
    progress: &'a Progress,
) -> Result<tar::Archive<flate2::read::GzDecoder<io::BufReader<Counting<'a, File>>>>, OpsError> {
    let file = File::open(archive)
        .map_err(|e| OpsError::io(format!("cannot open {}", archive.display()), e))?;
    let counted = Counting {
        inner: file,
        progress,
    };
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(
        io::BufReader::new(counted),
    )))
}

fn damaged(what: String) -> OpsError {
    OpsError::Damaged(what)
}

/// The name of an entry, checked to be a plain relative path of a regular
/// file.
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, OpsError> {
    let name = entry
        .path()
        .map_err(|e| damaged(format!("an entry has an unreadable name: {e}")))?
        .into_owned();
    let Some(rel) = safe_relative(&name) else {
        return Err(damaged(format!(
            "entry {} points outside the archive",
            name.display()
        )));
    };
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(damaged(format!("entry {rel} is not a regular file")));
    }
    Ok(rel)
}

/// Reads and checks the manifest entry.
fn read_manifest<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Manifest, OpsError> {
    let mut json = Vec::new();
    entry
        .by_ref()
        .take(16 * 1024 * 1024)
        .read_to_end(&mut json)
        .map_err(|e| damaged(format!("cannot read the manifest: {e}")))?;
    let m: Manifest = serde_json::from_slice(&json)
        .map_err(|e| damaged(format!("the manifest is not valid: {e}")))?;
    if m.format != FORMAT {
        return Err(OpsError::Incompatible(format!(
            "archive format {} is not {FORMAT}, the one this binary reads",
            m.format
        )));
    }
    Ok(m)
}

/// The first pass: every entry's name and declared size, then the
/// manifest, without writing anything. The entries must be exactly the
/// manifest's, with its sizes, and together at most `max_bytes`.
fn scan(archive: &Path, progress: &Progress, max_bytes: u64) -> Result<Manifest, OpsError> {
    let mut tar = open_tar(archive, progress)?;
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let entries = tar
        .entries()
        .map_err(|e| damaged(format!("cannot read it as a gzip-compressed tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(format!("cannot read an entry: {e}")))?;
        let rel = entry_name(&entry)?;
        if manifest.is_some() {
            return Err(damaged(format!("entry {rel} comes after the manifest")));
        }
        if rel == MANIFEST {
            manifest = Some(read_manifest(&mut entry)?);
            continue;
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| damaged(format!("entry {rel} has no readable size: {e}")))?;
        if sizes.insert(rel.clone(), size).is_some() {
            return Err(damaged(format!("entry {rel} appears twice")));
        }
    }
    let manifest = manifest.ok_or_else(|| {
        damaged("it has no manifest.json (not a hearth backup, or cut short)".to_owned())
    })?;
    let mut total = 0u64;
    for e in &manifest.entries {
        match sizes.remove(&e.path) {
            None => return Err(damaged(format!("{} is missing", e.path))),
            Some(size) if size != e.size => {
                return Err(damaged(format!(
                    "{} holds {size} bytes; the manifest says {}",
                    e.path, e.size
                )));
            }
            Some(size) => total = total.saturating_add(size),
        }
    }
    if let Some(extra) = sizes.keys().next() {
        return Err(damaged(format!("{extra} is not in the manifest")));
    }
    if total > max_bytes {
        return Err(OpsError::Failed(format!(
            "the archive unpacks to {total} bytes, more than the {max_bytes} bytes free where it would be staged"
        )));
    }
    Ok(manifest)
}

/// Unpacks `archive` into `dest` (an empty directory), checking every entry
/// against the manifest. Nothing is written unless the entries, their sizes
/// and the manifest agree and the total is at most `max_bytes`. Returns the
/// manifest once every checksum matched.
pub fn extract(
    archive: &Path,
    dest: &Path,
    progress: &Progress,
    max_bytes: u64,
) -> Result<Manifest, OpsError> {
    let manifest = scan(archive, progress, max_bytes)?;
    let expected: BTreeMap<&str, &Entry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut tar = open_tar(archive, progress)?;
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let entries = tar
        .entries()
        .map_err(|e| damaged(format!("cannot read it as a gzip-compressed tar: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| damaged(format!("cannot read an entry: {e}")))?;
        let rel = entry_name(&entry)?;
        if rel == MANIFEST {
            break;
        }
        // The file may have changed since the first pass: hold each entry
        // to what was checked then.
        let Some(want) = expected.get(rel.as_str()) else {
            return Err(damaged(format!("{rel} is not in the manifest")));
        };
        let mut entry = entry.take(want.size.saturating_add(1));
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| OpsError::io(format!("cannot create {}", parent.display()), e))?;
        }
        let mut out = BufWriter::new(
            create_private(&target)
                .map_err(|e| OpsError::io(format!("cannot write {}", target.display()), e))?,
        );
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| damaged(format!("cannot read {rel}: {e}")))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            size += n as u64;
            out.write_all(&buf[..n])
                .map_err(|e| OpsError::io(format!("cannot write {}", target.display()), e))?;
        }
        out.flush()
            .map_err(|e| OpsError::io(format!("cannot write {}", target.display()), e))?;
        if seen
            .insert(rel.clone(), (size, hex::encode(hash.finalize())))
            .is_some()
        {
            return Err(damaged(format!("entry {rel} appears twice")));
        }
    }
    for e in &manifest.entries {
        match seen.remove(&e.path) {
            None => return Err(damaged(format!("{} is missing", e.path))),
            Some((size, sum)) if size != e.size || sum != e.sha256 => {
                return Err(damaged(format!(
                    "{} does not match its checksum ({size} bytes, sha256 {sum}; the manifest says {} bytes, {})",
                    e.path, e.size, e.sha256
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().next() {
        return Err(damaged(format!("{extra} is not in the manifest")));
    }
    Ok(manifest)
}

/// `name` as a relative path of normal components joined by `/`, or `None`
/// when it is absolute, empty or climbs out with `..`.
fn safe_relative(name: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Counts the compressed bytes read, for the progress bar.
struct Counting<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_names_are_safe() {
        assert_eq!(
            safe_relative(Path::new("files/a/b.txt")).as_deref(),
            Some("files/a/b.txt")
        );
        assert_eq!(
            safe_relative(Path::new("./manifest.json")).as_deref(),
            Some("manifest.json")
        );
        assert_eq!(safe_relative(Path::new("../etc/passwd")), None);
        assert_eq!(safe_relative(Path::new("files/../../x")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
        assert_eq!(safe_relative(Path::new("")), None);
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            app: "t".into(),
            app_version: "1".into(),
            hearth_version: "1".into(),
            engine: "sqlite".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            migrations: vec![],
            tables: BTreeMap::new(),
            entries: vec![],
        }
    }

    #[test]
    fn an_archive_that_would_unpack_past_the_limit_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        // 32 MiB of zeros compress to a few dozen KiB.
        let big = tmp.path().join("zeros");
        std::fs::write(&big, vec![0u8; 32 << 20]).unwrap();
        let archive = tmp.path().join("bomb.tar.gz");
        let mut w = ArchiveWriter::create(&archive).unwrap();
        w.add_file("files/zeros", &big, &Progress::hidden())
            .unwrap();
        w.finish(manifest()).unwrap();
        assert!(std::fs::metadata(&archive).unwrap().len() < 1 << 20);
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let e = extract(&archive, &dest, &Progress::hidden(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("unpacks to 33554432 bytes"), "{e}");
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "nothing was written"
        );
        // Within the limit it unpacks and checks out.
        let m = extract(&archive, &dest, &Progress::hidden(), 64 << 20).unwrap();
        assert_eq!(m.entries.len(), 1);
        assert_eq!(
            std::fs::metadata(dest.join("files/zeros")).unwrap().len(),
            32 << 20
        );
    }

    #[test]
    fn sizes_that_disagree_with_the_manifest_are_refused_before_unpacking() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("a");
        std::fs::write(&src, b"0123456789").unwrap();
        // A manifest that claims a smaller file than the tar holds.
        let archive = tmp.path().join("lying.tar.gz");
        let file = File::create(&archive).unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(10);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "files/a", &b"0123456789"[..])
            .unwrap();
        let mut m = manifest();
        m.entries = vec![Entry {
            path: "files/a".into(),
            size: 2,
            sha256: "00".into(),
        }];
        let json = serde_json::to_vec(&m).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(json.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, MANIFEST, json.as_slice()).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let e = extract(&archive, &dest, &Progress::hidden(), u64::MAX).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds 10 bytes; the manifest says 2"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    }
}
