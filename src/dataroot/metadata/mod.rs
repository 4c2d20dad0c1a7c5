//! `volumes/metadata.db`: dockerd's volume store, a bbolt database with one
//! bucket `volumes` mapping a volume name to `{"Name","Driver","Labels","Options"}`.
//!
//! Labels live only here, so a volume copied without its record loses them.
//! A running dockerd holds an exclusive flock on the file, and bbolt's own
//! open blocks on that lock forever; every open here first probes the lock
//! without blocking so a live daemon is reported, never waited for.
//! One handle at a time: bbolt-rs must not open the same file twice.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bbolt_rs::{BucketApi, DbApi, TxApi};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::regular_file::{self, RegularFileError};

mod write;
pub use write::{
    encode_record, lock_for_write, write_records, DbWriteLock, RecordChange, WriteAccess,
    READER_PATIENCE,
};

/// The bucket dockerd keeps volume records in.
const BUCKET: &[u8] = b"volumes";

/// One record of the volume store, in dockerd's JSON layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Driver", default)]
    pub driver: String,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
}

/// The records read from a metadata.db, and the ones that did not decode.
#[derive(Debug, Clone, Default)]
pub struct VolumeStore {
    pub records: BTreeMap<String, VolumeRecord>,
    /// Keys whose value is not valid JSON: dockerd logs and skips them.
    pub undecodable: Vec<(String, String)>,
    /// The file is 0 bytes: bbolt initializes it as an empty store when
    /// dockerd opens it (seen on 20.10.24: the daemon starts, no labels).
    pub uninitialized: bool,
}

/// Largest metadata.db read. bbolt maps the whole file and every record is
/// copied out, so memory follows the file's size. dockerd's records are
/// about 200 bytes: 64 MiB holds hundreds of thousands of volumes, while a
/// hostile (or sparse 1 TiB) file is refused before it is mapped.
pub const MAX_METADATA_DB: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A dockerd (or another process) holds the database.
    #[error("`{path}` is locked: a dockerd is running on this data-root; stop it first (systemctl stop docker), or register volumes through the Engine API")]
    Locked { path: PathBuf },
    #[error("cannot open `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// bbolt could not open or read it: dockerd will not start either.
    #[error("`{path}` is not a readable bolt database: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A FIFO, device, directory or symlink: never opened for reading (a
    /// FIFO would block bbolt's open, `/dev/zero` would be read forever).
    #[error("`{path}` {reason}")]
    NotRegular { path: PathBuf, reason: String },
    /// Larger than volmig reads; dockerd itself opens it.
    #[error("`{path}` is {size} bytes, more than the {limit} bytes volmig reads")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
}

impl MetadataError {
    /// The reason as dockerd's bolt would word it, for the daemon's message.
    pub fn daemon_reason(&self) -> String {
        match self {
            MetadataError::Locked { .. } => "timeout".into(),
            MetadataError::Io { source, .. } => source.to_string(),
            MetadataError::Corrupt { reason, .. } | MetadataError::NotRegular { reason, .. } => {
                reason.clone()
            }
            MetadataError::TooLarge { size, .. } => format!("{size} bytes"),
        }
    }
}

/// Takes a non-blocking lock on `path` to learn whether dockerd holds it.
/// The returned guard keeps a shared lock until dropped.
fn probe_lock(path: &Path, exclusive: bool) -> Result<Flock<File>, MetadataError> {
    let file = File::options()
        .read(true)
        .write(exclusive)
        .open(path)
        .map_err(|source| MetadataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let arg = if exclusive {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    Flock::lock(file, arg).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => MetadataError::Locked {
            path: path.to_path_buf(),
        },
        other => MetadataError::Io {
            path: path.to_path_buf(),
            source: io::Error::from(other),
        },
    })
}

thread_local! {
    /// Set while this thread runs bbolt code under `guarded`.
    static IN_BOLT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs bbolt code, turning a panic inside it (it has asserts on page
/// layout) into an error: a corrupt file must never crash volmig.
///
/// Its panic message is kept off stderr by one hook, installed once in
/// front of the process's own, that is silent on a thread inside `guarded`
/// only. Swapping the process-wide hook around each call instead lost it
/// when two threads did so at once (the second took the first's silent
/// hook as the one to restore): every later panic of the process went
/// unsaid, such as a failed test's message in the one test binary.
fn guarded<T>(path: &Path, work: impl FnOnce() -> Result<T, String>) -> Result<T, MetadataError> {
    static QUIET_IN_BOLT: std::sync::Once = std::sync::Once::new();
    QUIET_IN_BOLT.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_BOLT.with(|b| b.get()) {
                previous(info);
            }
        }));
    });
    IN_BOLT.with(|b| b.set(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    IN_BOLT.with(|b| b.set(false));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(reason)) => Err(MetadataError::Corrupt {
            path: path.to_path_buf(),
            reason,
        }),
        Err(_) => Err(MetadataError::Corrupt {
            path: path.to_path_buf(),
            reason: "bolt page layout is invalid".into(),
        }),
    }
}

/// Opens `path` for reading only when it is a regular file within
/// `MAX_METADATA_DB`, and takes a shared lock without blocking; the guard
/// holds the lock until dropped. `Ok(None)` when there is no file.
fn open_for_reading(path: &Path) -> Result<Option<(Flock<File>, u64)>, MetadataError> {
    let (file, size) = match regular_file::open(path, MAX_METADATA_DB) {
        Ok(opened) => opened,
        Err(RegularFileError::NotFound) => return Ok(None),
        Err(RegularFileError::TooLarge { size, limit }) => {
            return Err(MetadataError::TooLarge {
                path: path.to_path_buf(),
                size,
                limit,
            })
        }
        Err(e @ RegularFileError::NotRegular { .. }) => {
            return Err(MetadataError::NotRegular {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
        Err(RegularFileError::Io(source)) => {
            return Err(MetadataError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let guard =
        Flock::lock(file, FlockArg::LockSharedNonblock).map_err(|(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => MetadataError::Locked {
                path: path.to_path_buf(),
            },
            other => MetadataError::Io {
                path: path.to_path_buf(),
                source: io::Error::from(other),
            },
        })?;
    Ok(Some((guard, size)))
}

/// Reads every record. `Ok(None)` when the file does not exist (dockerd
/// creates an empty one at start).
pub fn read_store(path: &Path) -> Result<Option<VolumeStore>, MetadataError> {
    // Keep the shared lock while bbolt opens: a daemon starting meanwhile
    // then waits for us instead of racing.
    let Some((_guard, size)) = open_for_reading(path)? else {
        return Ok(None);
    };
    if size == 0 {
        // bbolt (and bbolt-rs, read-only) refuses a 0-byte file, but
        // dockerd opens it read-write and bbolt initializes it: the daemon
        // starts with an empty store (seen on 20.10.24).
        return Ok(Some(VolumeStore {
            uninitialized: true,
            ..VolumeStore::default()
        }));
    }
    // # Security
    // bbolt-rs follows the file's page ids as pointers: checked first.
    checked(path, &_guard, size)?;
    guarded(path, || {
        let db = bbolt_rs::Bolt::open_ro(path).map_err(|e| e.to_string())?;
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        db.view(|tx| {
            if let Some(bucket) = tx.bucket(BUCKET) {
                for (k, v) in bucket.iter_entries() {
                    entries.push((k.to_vec(), v.to_vec()));
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        drop(db);
        let mut store = VolumeStore::default();
        for (key, value) in entries {
            let name = String::from_utf8_lossy(&key).into_owned();
            match serde_json::from_slice::<VolumeRecord>(&value) {
                Ok(record) => {
                    store.records.insert(name, record);
                }
                Err(e) => store.undecodable.push((name, e.to_string())),
            }
        }
        Ok(store)
    })
    .map(Some)
}

/// `bolt_check::check`, as a `Corrupt` error naming `path`.
fn checked(path: &Path, file: &File, size: u64) -> Result<(), MetadataError> {
    super::bolt_check::check(file, size).map_err(|reason| MetadataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, labels: &[(&str, &str)]) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            options: None,
        }
    }

    #[test]
    fn round_trips_records_in_dockerds_layout() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        write_records(
            &db,
            &[record("data1", &[("com.docker.compose.project", "shop")])],
        )
        .unwrap();
        write_records(&db, &[record("data2", &[])]).unwrap();
        let store = read_store(&db).unwrap().unwrap();
        assert_eq!(store.records.len(), 2);
        assert_eq!(
            store.records["data1"].labels.as_ref().unwrap()["com.docker.compose.project"],
            "shop"
        );
    }

    #[test]
    fn missing_file_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_store(&dir.path().join("metadata.db"))
            .unwrap()
            .is_none());
        assert!(
            !dir.path().join("metadata.db").exists(),
            "reading must not create it"
        );
    }

    #[test]
    fn garbage_file_is_reported_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        std::fs::write(&db, vec![0xAB; 70000]).unwrap();
        let err = read_store(&db).unwrap_err();
        assert!(matches!(err, MetadataError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_0_byte_metadata_db_reads_as_an_empty_store_like_dockerd() {
        // dockerd 20.10.24 starts on it and bbolt initializes it; the old
        // assertion here (an error) predicted a daemon that would not start.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        std::fs::write(&db, b"").unwrap();
        let store = read_store(&db).unwrap().unwrap();
        assert!(store.uninitialized);
        assert!(store.records.is_empty());
        assert_eq!(
            std::fs::metadata(&db).unwrap().len(),
            0,
            "reading must not write"
        );
    }

    #[test]
    fn a_fifo_or_device_metadata_db_is_refused_without_opening_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        nix::unistd::mkfifo(&db, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_store(&db).unwrap_err();
        assert!(matches!(err, MetadataError::NotRegular { .. }), "{err}");
        assert!(err.to_string().contains("fifo"), "{err}");
        std::fs::remove_file(&db).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &db).unwrap();
        assert!(matches!(
            read_store(&db).unwrap_err(),
            MetadataError::NotRegular { .. }
        ));
        std::fs::remove_file(&db).unwrap();
        File::create(&db).unwrap().set_len(1 << 40).unwrap();
        assert!(matches!(
            read_store(&db).unwrap_err(),
            MetadataError::TooLarge { .. }
        ));
    }

    #[test]
    fn a_held_lock_is_reported_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        write_records(&db, &[record("v", &[])]).unwrap();
        let _daemon = probe_lock(&db, true).unwrap();
        let err = read_store(&db).unwrap_err();
        assert!(matches!(err, MetadataError::Locked { .. }), "{err}");
        assert!(matches!(
            write_records(&db, &[record("w", &[])]).unwrap_err(),
            MetadataError::Locked { .. }
        ));
    }
}
