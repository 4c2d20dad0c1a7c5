//! A delta's part in metadata.db: the records of the volumes whose
//! labels, driver or options changed on the source since the base round,
//! and of the volumes the round adds. Written as a full import writes
//! them (one atomic replacement of the file, under volmig's exclusive
//! lock held for the whole import), before any volume changes, with the
//! target's old values saved in the journal to put them back on rollback.

use std::collections::BTreeMap;
use std::fs;

use crate::bundle::BundleHeader;
use crate::dataroot::metadata::{self, DbWriteLock, VolumeRecord, WriteAccess};
use crate::dataroot::DataRoot;
use crate::import::journal::{FileId, MetadataPlan, Record};
use crate::import::plan::bundle_record;
use crate::manifest::ManifestReader;

/// metadata.db as the import found it.
pub enum Db {
    /// Free: volmig holds it now, for the rest of the import.
    Held(DbWriteLock),
    /// A running dockerd holds it: records can be neither read nor written.
    Daemon,
}

pub fn take(root: &DataRoot) -> Result<Db, String> {
    match metadata::lock_for_write(&root.metadata_db(), metadata::READER_PATIENCE) {
        Ok(WriteAccess::Free(lock)) => Ok(Db::Held(lock)),
        Ok(WriteAccess::Daemon) => Ok(Db::Daemon),
        Err(e) => Err(e.to_string()),
    }
}

/// The records of `header`'s volumes that differ from the target's
/// (read from a copy in `work`), with the target's values; `None` when
/// every one is already as the bundle has it.
pub fn plan(
    root: &DataRoot,
    db: &DbWriteLock,
    work: &std::path::Path,
    header: &BundleHeader,
) -> Result<Option<MetadataPlan>, String> {
    let names: Vec<String> = header.volumes.iter().map(|v| v.name.clone()).collect();
    let now = db.read_raw(work, &names).map_err(|e| e.to_string())?;
    let mut plan = MetadataPlan {
        orig: fs::symlink_metadata(root.metadata_db())
            .ok()
            .map(|m| FileId::of(&m)),
        new: Vec::new(),
        saved: Vec::new(),
    };
    for (v, (name, value)) in header.volumes.iter().zip(now) {
        let theirs = bundle_record(v);
        let ours = value
            .as_deref()
            .and_then(|raw| serde_json::from_slice::<VolumeRecord>(raw).ok());
        if ours.as_ref() == Some(&theirs) {
            continue;
        }
        plan.new.push(Record::from_change((
            name.clone(),
            Some(metadata::encode_record(&theirs)),
        )));
        plan.saved.push(Record::from_change((name, value)));
    }
    Ok((!plan.new.is_empty()).then_some(plan))
}

/// The record each new base keeps: the bundle's where metadata.db was
/// ours (written or equal), the old base's where a running dockerd held
/// it (what metadata.db still has, as far as volmig knows).
pub fn for_bases(
    root: &DataRoot,
    header: &BundleHeader,
    db: &Db,
) -> BTreeMap<String, Option<VolumeRecord>> {
    header
        .volumes
        .iter()
        .map(|v| {
            let record = match db {
                Db::Held(_) => Some(bundle_record(v)),
                Db::Daemon => based_record(root, &v.name),
            };
            (v.name.clone(), record)
        })
        .collect()
}

fn based_record(root: &DataRoot, vol: &str) -> Option<VolumeRecord> {
    ManifestReader::open(&root.base_manifest(vol))
        .ok()
        .and_then(|r| r.header().record.clone())
}

/// While a running dockerd holds metadata.db: the volumes whose record in
/// the bundle differs from the one their base round wrote (`changed`),
/// and those whose base does not say (`unknown`: recorded by an older
/// volmig).
pub fn unwritable(root: &DataRoot, header: &BundleHeader) -> (Vec<String>, Vec<String>) {
    let (mut changed, mut unknown) = (Vec::new(), Vec::new());
    for v in &header.volumes {
        match based_record(root, &v.name) {
            Some(r) if r == bundle_record(v) => {}
            Some(_) => changed.push(v.name.clone()),
            None => unknown.push(v.name.clone()),
        }
    }
    (changed, unknown)
}

/// Writes the plan's records (idempotent).
pub fn write(
    db: &mut DbWriteLock,
    work: &std::path::Path,
    plan: &MetadataPlan,
) -> Result<(), String> {
    let changes: Vec<_> = plan.new.iter().map(|r| r.to_change()).collect();
    db.apply(work, &changes)
        .map_err(|e| format!("metadata.db: {e}"))
}

/// Puts the target's records back, unless metadata.db is still the file
/// the plan found (never replaced: nothing to undo, nothing to write on
/// a filesystem that may be full).
pub fn undo(
    root: &DataRoot,
    db: &mut DbWriteLock,
    work: &std::path::Path,
    plan: &MetadataPlan,
) -> Result<(), String> {
    let now = fs::symlink_metadata(root.metadata_db())
        .ok()
        .map(|m| FileId::of(&m));
    if now == plan.orig {
        return Ok(());
    }
    let changes: Vec<_> = plan.saved.iter().map(|r| r.to_change()).collect();
    db.apply(work, &changes)
        .map_err(|e| format!("putting metadata.db's records back: {e}"))
}
