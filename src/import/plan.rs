//! The plan of a commit: from a verified staging and the target as it is,
//! the journal that `commit` carries out (every move with its inodes,
//! metadata.db's new records and the target's old ones, the configs to
//! rewrite). Reads only; the journal is written by the caller.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::journal::{self, BundleId, Item, Journal, MetadataPlan, Move, Record};
use super::stage::BindPlan;
use super::{werr, ImportError, ImportReport};
use crate::bundle::BundleHeader;
use crate::dataroot::metadata::{self, DbWriteLock, VolumeRecord};
use crate::dataroot::DataRoot;

/// The journal of a verified staging: every move, metadata.db's old and
/// new records, the configs to rewrite.
pub(super) fn plan_commit(
    root: &DataRoot,
    staging: &Path,
    report: &ImportReport,
    db: Option<&DbWriteLock>,
    live: bool,
    binds: &BTreeMap<String, BindPlan>,
) -> Result<Journal, ImportError> {
    let mut journal = Journal::new(BundleId {
        source_host: report.header.source_host.clone(),
        source_data_root: report.header.source_data_root.clone(),
        entries_sha256: report.trailer.entries_sha256.clone(),
    });
    journal.volumes = report
        .header
        .volumes
        .iter()
        .map(|v| v.name.clone())
        .collect();
    let ino = |path: &Path| {
        fs::symlink_metadata(path)
            .map(|m| m.ino())
            .map_err(werr(path))
    };
    // A bind volume's data first: the volume never shows without it.
    let mut items: Vec<Item> = binds
        .iter()
        .filter_map(|(volume, b)| {
            Some(Item::BindData {
                volume: volume.clone(),
                target: b.target.clone(),
                staged: b.staged.clone()?,
            })
        })
        .collect();
    items.extend(report.header.volumes.iter().map(|v| Item::Volume {
        name: v.name.clone(),
    }));
    for c in &report.header.containers {
        let Some(cp) = &c.checkpoint else { continue };
        let item = Item::Checkpoint {
            container: c.id.clone(),
            name: cp.clone(),
        };
        let staged_here = item.paths(root, staging).staged.is_dir();
        if staged_here && root.container_dir(&c.id).is_dir() {
            items.push(item);
        }
    }
    for item in items {
        let conflict = report.conflicts.iter().find(|c| same_place(&c.item, &item));
        if conflict.is_some_and(|c| c.identical == Some(true)) {
            continue;
        }
        let paths = item.paths(root, staging);
        // An empty directory at a bind target is swapped out like a
        // replaced one (and kept until the commit), without a conflict.
        let filled = matches!(item, Item::BindData { .. }) && paths.target.is_dir();
        let old_ino = match conflict.is_some() || filled {
            true => Some(ino(&paths.target)?),
            false => None,
        };
        journal.moves.push(Move {
            new_ino: ino(&paths.staged)?,
            old_ino,
            item,
        });
    }
    if let Some(db) = db {
        let records = bundle_records(&report.header);
        let names: Vec<String> = records.iter().map(|(n, _)| n.clone()).collect();
        let saved = db.read_raw(staging, &names)?;
        journal.metadata = Some(MetadataPlan {
            orig: fs::symlink_metadata(root.metadata_db())
                .ok()
                .map(|m| journal::FileId::of(&m)),
            new: records.into_iter().map(Record::from_change).collect(),
            saved: saved.into_iter().map(Record::from_change).collect(),
        });
        // The daemon is stopped: its container configs may be edited.
        journal.rewrite_configs = report
            .header
            .containers
            .iter()
            .filter(|c| root.container_config(&c.id).exists())
            .map(|c| c.id.clone())
            .collect();
    }
    journal.live = live;
    Ok(journal)
}

/// Whether a conflict is about the place `item` goes (a bind conflict is
/// found before its staging place is chosen).
fn same_place(conflict: &Item, item: &Item) -> bool {
    match (conflict, item) {
        (Item::BindData { volume: a, .. }, Item::BindData { volume: b, .. }) => a == b,
        _ => conflict == item,
    }
}

/// The records to write, keyed by volume name (the header's reader made
/// sure each record names its own volume).
fn bundle_records(header: &BundleHeader) -> Vec<metadata::RecordChange> {
    header
        .volumes
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                Some(metadata::encode_record(&bundle_record(v))),
            )
        })
        .collect()
}

/// A volume's record as the bundle has it; a plain local volume without.
pub(super) fn bundle_record(v: &crate::bundle::BundleVolume) -> VolumeRecord {
    v.record.clone().unwrap_or(VolumeRecord {
        name: v.name.clone(),
        driver: "local".into(),
        labels: None,
        options: None,
    })
}
