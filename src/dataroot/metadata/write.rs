//! The write side of metadata.db: changes are made on a copy, checked,
//! made durable, locked and renamed over the original (`DbWriteLock`);
//! the only code that writes dockerd's volume store.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use bbolt_rs::{BucketApi, BucketRwApi, DbApi, DbRwAPI, TxApi, TxRwRefApi};
use nix::fcntl::{Flock, FlockArg};

use super::{checked, guarded, probe_lock, MetadataError, VolumeRecord, BUCKET};

/// Opens `path` (a copy of the database in volmig's staging) and checks
/// it before bbolt may open it read-write.
fn check_copy(original: &Path, copy: &Path) -> Result<(), MetadataError> {
    let file = File::open(copy).map_err(|source| MetadataError::Io {
        path: copy.to_path_buf(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| MetadataError::Io {
            path: copy.to_path_buf(),
            source,
        })?
        .len();
    checked(original, &file, size)
}

/// A record change: the new value (dockerd's JSON) or `None` to delete.
pub type RecordChange = (String, Option<Vec<u8>>);

/// How long `lock_for_write` waits for readers holding a shared lock (a
/// `volmig scan`, a backup tool) before giving up. A dockerd holds an
/// exclusive lock for as long as it runs and is never waited for.
pub const READER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// What `lock_for_write` found.
pub enum WriteAccess {
    /// Nobody else holds the database: volmig holds it now.
    Free(DbWriteLock),
    /// A process holds it exclusively: a running dockerd.
    Daemon,
}

/// metadata.db held exclusively by volmig, for atomic changes.
///
/// Changes are never made in place: the database is copied beside the
/// import (`work`, on the same filesystem), changed there by bbolt in one
/// transaction, made durable, locked, and renamed over the original. A
/// reader sees the old file or the new one, a crash leaves one or the
/// other, and bbolt never has to take a lock someone else may hold (bbolt-rs
/// blocks on its flock with no timeout: a holder arriving between a probe
/// and bbolt's own lock would hang the commit).
pub struct DbWriteLock {
    path: PathBuf,
    held: Vec<Flock<File>>,
}

/// Takes metadata.db for writing: an exclusive lock without blocking,
/// retried while only readers (shared locks) are in the way, for up to
/// `patience`. A missing file is free (dockerd creates it at start).
pub fn lock_for_write(
    path: &Path,
    patience: std::time::Duration,
) -> Result<WriteAccess, MetadataError> {
    let io_err = |source| MetadataError::Io {
        path: path.to_path_buf(),
        source,
    };
    match path.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(WriteAccess::Free(DbWriteLock {
                path: path.to_path_buf(),
                held: Vec::new(),
            }))
        }
        Err(e) => return Err(io_err(e)),
        Ok(m) if !m.file_type().is_file() => {
            return Err(io_err(io::Error::other(
                "not a regular file: move it away, dockerd would not start with it either",
            )))
        }
        Ok(_) => {}
    }
    let deadline = std::time::Instant::now() + patience;
    loop {
        match probe_lock(path, true) {
            Ok(held) => {
                return Ok(WriteAccess::Free(DbWriteLock {
                    path: path.to_path_buf(),
                    held: vec![held],
                }))
            }
            Err(MetadataError::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
        // Exclusive refused: a shared lock tells a reader (which leaves)
        // from a writer such as dockerd (which stays).
        match probe_lock(path, false) {
            Err(MetadataError::Locked { .. }) => return Ok(WriteAccess::Daemon),
            Err(e) => return Err(e),
            Ok(_reader_only) => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(MetadataError::Io {
                path: path.to_path_buf(),
                source: io::Error::other(format!(
                    "readers have held it (shared lock) for more than {} s: find them with `fuser -v {}` and stop them",
                    patience.as_secs(),
                    path.display()
                )),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl DbWriteLock {
    /// The current values of `names` (`None`: no record), read from a copy
    /// in `work` (bbolt's read lock would wait for our own exclusive one).
    pub fn read_raw(
        &self,
        work: &Path,
        names: &[String],
    ) -> Result<Vec<RecordChange>, MetadataError> {
        if !self.path.exists() {
            return Ok(names.iter().map(|n| (n.clone(), None)).collect());
        }
        let copy = work.join("metadata.db.read");
        let result = (|| {
            copy_file(&self.path, &copy)?;
            check_copy(&self.path, &copy)?;
            guarded(&self.path, || {
                let db = bbolt_rs::Bolt::open_ro(&copy).map_err(|e| e.to_string())?;
                let mut out = Vec::with_capacity(names.len());
                db.view(|tx| {
                    let bucket = tx.bucket(BUCKET);
                    for name in names {
                        let value = bucket
                            .as_ref()
                            .and_then(|b| b.get(name.as_bytes()))
                            .map(|v| v.to_vec());
                        out.push((name.clone(), value));
                    }
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
                Ok(out)
            })
        })();
        let _ = std::fs::remove_file(&copy);
        result
    }

    /// Puts or deletes records in one atomic replacement of the file
    /// (see the type). Idempotent: applying the same changes twice gives
    /// the same database.
    pub fn apply(&mut self, work: &Path, changes: &[RecordChange]) -> Result<(), MetadataError> {
        let new = work.join("metadata.db.new");
        let io_err = |source| MetadataError::Io {
            path: self.path.clone(),
            source,
        };
        match std::fs::remove_file(&new) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(e)),
            _ => {}
        }
        if self.path.exists() {
            copy_file(&self.path, &new)?;
            check_copy(&self.path, &new)?;
        }
        guarded(&self.path, || {
            let mut db = bbolt_rs::Bolt::open(&new).map_err(|e| e.to_string())?;
            db.update(|mut tx| {
                let mut bucket = tx.create_bucket_if_not_exists(BUCKET)?;
                for (name, value) in changes {
                    match value {
                        Some(json) => bucket.put(name.as_bytes(), json)?,
                        None if bucket.get(name.as_bytes()).is_some() => {
                            bucket.delete(name.as_bytes())?
                        }
                        None => {}
                    }
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            db.sync().map_err(|e| e.to_string())?;
            Ok(())
        })?;
        // Locked before it becomes visible: a dockerd starting right after
        // the rename waits (and times out after 1 s) instead of reading a
        // database whose volumes are still being moved.
        let file = File::options()
            .read(true)
            .write(true)
            .open(&new)
            .map_err(io_err)?;
        let held = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| io_err(io::Error::from(errno)))?;
        use std::os::unix::fs::PermissionsExt;
        held.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
        held.sync_all().map_err(io_err)?;
        if self.held.is_empty() {
            // There was no database when volmig took it: one that appeared
            // since is a dockerd's that started meanwhile, never replaced.
            nix::fcntl::renameat2(
                None,
                &new,
                None,
                &self.path,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(|e| io_err(io::Error::from(e)))?;
        } else {
            std::fs::rename(&new, &self.path).map_err(io_err)?;
        }
        sync_parent(&self.path).map_err(io_err)?;
        self.held.push(held);
        Ok(())
    }
}

/// Copies without following a symlink at `from` (checked by the caller's
/// lstat) and without reading it into memory.
fn copy_file(from: &Path, to: &Path) -> Result<(), MetadataError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| MetadataError::Io {
            path: from.to_path_buf(),
            source,
        })
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// dockerd's JSON for a record.
pub fn encode_record(record: &VolumeRecord) -> Vec<u8> {
    // Serializing a struct of strings and maps of strings cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Writes (inserts or replaces) records, keyed by their own names, creating
/// the file and bucket as dockerd would. Fails with `Locked` while a daemon
/// runs. Works beside the file (the data-root, never inside `volumes/`).
pub fn write_records(path: &Path, records: &[VolumeRecord]) -> Result<(), MetadataError> {
    let changes: Vec<RecordChange> = records
        .iter()
        .map(|r| (r.name.clone(), Some(encode_record(r))))
        .collect();
    let beside = path
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".volmig-metadata-")
        .tempdir_in(beside)
        .map_err(|source| MetadataError::Io {
            path: beside.to_path_buf(),
            source,
        })?;
    match lock_for_write(path, std::time::Duration::ZERO)? {
        WriteAccess::Daemon => Err(MetadataError::Locked {
            path: path.to_path_buf(),
        }),
        WriteAccess::Free(mut lock) => lock.apply(work.path(), &changes),
    }
}
