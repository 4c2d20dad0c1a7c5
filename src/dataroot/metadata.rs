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

use bbolt_rs::{BucketApi, BucketRwApi, DbApi, DbRwAPI, TxApi, TxRwRefApi};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

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
}

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
}

impl MetadataError {
    /// The reason as dockerd's bolt would word it, for the daemon's message.
    pub fn daemon_reason(&self) -> String {
        match self {
            MetadataError::Locked { .. } => "timeout".into(),
            MetadataError::Io { source, .. } => source.to_string(),
            MetadataError::Corrupt { reason, .. } => reason.clone(),
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

/// Runs bbolt code, turning a panic inside it (it has asserts on page
/// layout) into an error: a corrupt file must never crash volmig.
fn guarded<T>(path: &Path, work: impl FnOnce() -> Result<T, String>) -> Result<T, MetadataError> {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    panic::set_hook(previous);
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

/// Reads every record. `Ok(None)` when the file does not exist (dockerd
/// creates an empty one at start).
pub fn read_store(path: &Path) -> Result<Option<VolumeStore>, MetadataError> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MetadataError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => {}
    }
    // Keep the shared lock while bbolt opens: a daemon starting meanwhile
    // then waits for us instead of racing.
    let _guard = probe_lock(path, false)?;
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

/// Writes (inserts or replaces) records, creating the file and bucket as
/// dockerd would. Fails with `Locked` while a daemon runs.
pub fn write_records(path: &Path, records: &[VolumeRecord]) -> Result<(), MetadataError> {
    let exists = path.exists();
    let _guard = if exists {
        Some(probe_lock(path, true)?)
    } else {
        None
    };
    let mut encoded = Vec::with_capacity(records.len());
    for record in records {
        let json = serde_json::to_vec(record).map_err(|e| MetadataError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?;
        encoded.push((record.name.clone(), json));
    }
    // Our probe holds LOCK_EX on another descriptor; bbolt would block on
    // it, so release it right before bbolt takes its own.
    drop(_guard);
    guarded(path, || {
        let mut db = bbolt_rs::Bolt::open(path).map_err(|e| e.to_string())?;
        db.update(|mut tx| {
            let mut bucket = tx.create_bucket_if_not_exists(BUCKET)?;
            for (name, json) in &encoded {
                bucket.put(name.as_bytes(), json)?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        db.sync().map_err(|e| e.to_string())?;
        Ok(())
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
        std::fs::write(&db, b"").unwrap();
        assert!(read_store(&db).is_err());
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
