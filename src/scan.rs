//! The volume scan dockerd runs once at its start (`local.New`, then the
//! volume store over `metadata.db`), predicted offline.
//!
//! Produces the set of volumes the local driver would load, with their
//! options and labels, and every problem: those that stop the daemon
//! (`Severity::Fatal`) and those that lose data or labels quietly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::daemon_version::DaemonVersion;
use crate::dataroot::device::DataLocation;
use crate::dataroot::metadata::{self, MetadataError, VolumeRecord, VolumeStore};
use crate::dataroot::mountinfo::MountTable;
use crate::dataroot::opts::VolumeOptions;
use crate::dataroot::volumes::{
    self, DataDir, OptsFile, VolumeDirKind, VolumeName, VolumesDirError,
};
use crate::dataroot::DataRoot;
use crate::report::{Finding, FindingKind, Severity};

/// A volume the local driver loads at start.
#[derive(Debug, Clone, Serialize)]
pub struct ScannedVolume {
    pub name: String,
    /// `R/volumes/<name>`.
    pub path: PathBuf,
    /// Owner and mode of `_data`, when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DataDir>,
    /// Decoded opts.json; `None` when there is none (a plain directory).
    pub options: Option<VolumeOptions>,
    /// Where the data is: `_data`, or a device mounted over it.
    pub data_location: DataLocation,
    /// The driver recorded in metadata.db (`local` when there is no record).
    pub driver: String,
    /// Labels from metadata.db; `None` when there is no record.
    pub labels: Option<BTreeMap<String, String>>,
    /// The create options recorded in metadata.db.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_options: Option<BTreeMap<String, String>>,
    /// `_data` is a mount point right now.
    pub mounted: bool,
    pub findings: Vec<Finding>,
}

impl ScannedVolume {
    pub fn has_data_dir(&self) -> bool {
        self.data.is_some()
    }
}

/// The prediction for a whole data-root.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    pub data_root: PathBuf,
    pub daemon_version: String,
    /// Volumes the local driver loads, by name.
    pub volumes: BTreeMap<String, ScannedVolume>,
    /// Records of metadata.db, when it could be read.
    #[serde(skip)]
    pub store: Option<VolumeStore>,
    /// Problems of the daemon as a whole (fatal ones stop it).
    pub findings: Vec<Finding>,
}

impl Scan {
    /// Whether dockerd would refuse to start on this data-root.
    pub fn daemon_fatal(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Fatal)
    }

    /// Whether the data-root is broken: dockerd will not start, or an
    /// import was interrupted mid-commit (exit 1).
    pub fn broken(&self) -> bool {
        crate::report::any_failure(&self.findings)
    }

    pub fn volume(&self, name: &str) -> Option<&ScannedVolume> {
        self.volumes.get(name)
    }

    pub fn record(&self, name: &str) -> Option<&VolumeRecord> {
        self.store.as_ref()?.records.get(name)
    }

    /// Every finding, daemon-level first, then per volume.
    pub fn all_findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .chain(self.volumes.values().flat_map(|v| v.findings.iter()))
    }
}

/// How dockerd words a start failure, by generation.
pub fn daemon_start_failure(version: DaemonVersion, detail: &str) -> String {
    if version.has_volume_service() {
        format!("failed to start daemon: {detail}")
    } else {
        format!("Error starting daemon: {detail}")
    }
}

/// The local driver's failure, wrapped as the volume service wraps it.
fn driver_setup_failure(version: DaemonVersion, detail: &str) -> String {
    if version.has_volume_service() {
        daemon_start_failure(
            version,
            &format!("error setting up default driver: {detail}"),
        )
    } else {
        daemon_start_failure(version, detail)
    }
}

/// Runs the scan as dockerd `version` would on `root`.
pub fn scan(root: &DataRoot, mounts: &MountTable, version: DaemonVersion) -> Scan {
    let mut result = Scan {
        data_root: root.path().to_path_buf(),
        daemon_version: version.to_string(),
        volumes: BTreeMap::new(),
        store: None,
        findings: Vec::new(),
    };
    note_remap_subtrees(root, &mut result.findings);

    match volumes::list_volume_dir(root) {
        Ok(Some(entries)) => {
            for entry in entries {
                if let Some(volume) = load_entry(root, entry, mounts, version, &mut result.findings) {
                    result.volumes.insert(volume.name.clone(), volume);
                }
            }
        }
        Ok(None) => result.findings.push(Finding::new(
            Severity::Info,
            FindingKind::VolumesDirAbsent,
            format!("`{}` does not exist: dockerd creates it empty, so no volume exists", root.volumes_dir().display()),
            "if volumes were expected here, import them first (volmig import) before starting dockerd",
        )),
        Err(e) => {
            let detail = match &e {
                VolumesDirError::NotADirectory { path } => {
                    format!("mkdir {}: not a directory", path.display())
                }
                VolumesDirError::Unreadable { path, source } => {
                    format!("open {}: {}", path.display(), go_errno_text(source))
                }
            };
            result.findings.push(Finding::new(
                Severity::Fatal,
                FindingKind::VolumesDirUnusable,
                driver_setup_failure(version, &detail),
                format!("{e}: move it aside and restore the volumes directory"),
            ));
        }
    }

    read_metadata(root, version, &mut result);
    // Not dockerd's own, but what decides whether starting it now is safe.
    result
        .findings
        .extend(crate::import::pending_findings(root));
    result
}

/// Go's errno texts are lowercase: "permission denied".
fn go_errno_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text.to_lowercase(),
    }
}

fn note_remap_subtrees(root: &DataRoot, findings: &mut Vec<Finding>) {
    if root.remap().is_some() || root.remap_subtrees().is_empty() {
        return;
    }
    let names: Vec<String> = root.remap_subtrees().iter().map(|r| r.dir_name()).collect();
    findings.push(Finding::new(
        Severity::Info,
        FindingKind::UsernsRemapSubtree,
        format!(
            "`{}` holds userns-remap subtrees ({}): a dockerd started with --userns-remap uses one of them, not the top level checked here",
            root.given().display(),
            names.join(", ")
        ),
        format!(
            "to check what a remapped daemon sees, re-run with --userns-remap {}",
            root.remap_subtrees()[0]
        ),
    ));
}

fn load_entry(
    root: &DataRoot,
    entry: volumes::VolumeDirEntry,
    mounts: &MountTable,
    version: DaemonVersion,
    daemon_findings: &mut Vec<Finding>,
) -> Option<ScannedVolume> {
    match entry.kind {
        VolumeDirKind::Directory => {}
        VolumeDirKind::Symlink => {
            daemon_findings.push(Finding::new(
                Severity::Warning,
                FindingKind::VolumeSymlinkIgnored,
                format!("`{}` is a symlink: the local driver loads only directories, so no volume `{}` exists", entry.path.display(), entry.name),
                "replace the symlink with the directory it points to (`mv` that directory into its place), or remove the symlink and carry the volume with volmig export | volmig import (which never writes over a symlink)",
            ));
            return None;
        }
        // metadata.db and backingFsBlockDev belong here; anything else is noise.
        VolumeDirKind::Other => return None,
    }
    if version.skips_empty_volume_dirs() && entry.data.is_none() && entry.opts == OptsFile::Absent {
        daemon_findings.push(Finding::new(
            Severity::Warning,
            FindingKind::VolumeDirSkipped,
            format!("`{}` holds neither _data nor opts.json: dockerd {version} skips it, so no volume `{}` exists", entry.path.display(), entry.name),
            "remove the empty directory, or re-import the volume",
        ));
        return None;
    }

    let mut findings = Vec::new();
    let options = match entry.opts {
        OptsFile::Absent => None,
        OptsFile::Options(o) => Some(o),
        OptsFile::Unreadable(reason) => {
            findings.push(Finding::new(
                Severity::Warning,
                FindingKind::OptsUnreadable,
                format!("cannot read `{}/opts.json`: {reason}: dockerd loads the volume without its mount options", entry.path.display()),
                "fix the file's permissions (0600 root) so dockerd can read it",
            ));
            None
        }
        OptsFile::Blocking(reason) => {
            daemon_findings.push(Finding::new(
                Severity::Fatal,
                FindingKind::OptsBlocking,
                format!("`{}/opts.json` {reason}: dockerd's volume scan blocks reading it or reads it without end, so the daemon never finishes starting", entry.path.display()),
                format!(
                    "remove `{}/opts.json` (a plain volume needs none) or put the volume's real opts.json back",
                    entry.path.display()
                ),
            ));
            None
        }
        OptsFile::Invalid(go_error) => {
            daemon_findings.push(Finding::new(
                Severity::Fatal,
                FindingKind::OptsInvalid,
                driver_setup_failure(
                    version,
                    &format!("error while unmarshaling volume options for volume: {}: {go_error}", entry.name),
                ),
                format!(
                    "repair or remove `{}/opts.json` before starting dockerd (a plain volume needs none)",
                    entry.path.display()
                ),
            ));
            None
        }
    };
    if let Some(opts) = &options {
        if opts.quota.size > 0 && !version.supports_quota() {
            findings.push(Finding::new(
                Severity::Info,
                FindingKind::QuotaIgnored,
                format!(
                    "volume `{}` asks for a quota of {} bytes, which dockerd {version} ignores",
                    entry.name, opts.quota.size
                ),
                "nothing to do unless the quota matters",
            ));
        }
    }

    let data = entry.data;
    match data {
        None => findings.push(Finding::new(
            Severity::Warning,
            FindingKind::DataDirMissing,
            format!(
                "`{}` has no _data: the volume loads but a container mounting it fails",
                entry.path.display()
            ),
            format!(
                "restore `{}/_data` (volmig import carries it)",
                entry.path.display()
            ),
        )),
        Some(DataDir { is_dir: false, .. }) => findings.push(Finding::new(
            Severity::Warning,
            FindingKind::DataDirNotDir,
            format!(
                "`{}/_data` is not a directory: a container mounting the volume fails",
                entry.path.display()
            ),
            "replace it with the volume's data directory",
        )),
        Some(_) => {}
    }

    if VolumeName::new(&entry.name).is_err() {
        findings.push(Finding::new(
            Severity::Warning,
            FindingKind::VolumeNameInvalid,
            format!("volume name `{}` is one dockerd refuses at create ([a-zA-Z0-9][a-zA-Z0-9_.-]+): it loads now, but `docker volume create` and volmig import cannot re-create it", entry.name),
            "rename the volume (docker volume create with a valid name, copy the data, update the containers)",
        ));
    }

    let data_path = root.volume_data_dir(&entry.name);
    let mounted = mounts.is_mount_point(&data_path);
    if mounted {
        let what = if version.unmounts_stale_mounts() {
            format!("dockerd {version} unmounts it at start, so the container sees the bare _data underneath")
        } else {
            format!("dockerd {version} marks the volume as mounted and keeps it")
        };
        findings.push(Finding::new(
            Severity::Warning,
            FindingKind::DataDirMounted,
            format!("`{}` is still mounted: {what}", data_path.display()),
            format!(
                "umount {} before starting dockerd, unless that mount is intended",
                data_path.display()
            ),
        ));
    }

    if let (Some(remap), Some(d)) = (root.remap(), data) {
        // With the daemon's ranges known, any owner in them is one of the
        // container's own (a postgres _data is 999:999 inside it).
        let seen = match root.id_map() {
            Some(map) => map.maps_host_owner(d.uid, d.gid),
            None => d.uid == remap.uid && d.gid == remap.gid,
        };
        if !seen {
            findings.push(Finding::new(
                Severity::Warning,
                FindingKind::UsernsOwnerMismatch,
                format!("`{}` is owned by {}:{} but container root is {} under --userns-remap: the container cannot write its own volume", data_path.display(), d.uid, d.gid, remap),
                format!("chown {} {}", remap, data_path.display()),
            ));
        }
    } else if let Some(d) = data {
        if let Some(r) = root
            .remap_subtrees()
            .iter()
            .find(|r| r.uid == d.uid && d.uid != 0)
        {
            findings.push(Finding::new(
                Severity::Warning,
                FindingKind::UsernsOwnerMismatch,
                format!("`{}` is owned by {}:{}, the remapped root of subtree {}, but this daemon runs without --userns-remap", data_path.display(), d.uid, d.gid, r.dir_name()),
                format!("re-run with --userns-remap {r} if the daemon is remapped, else chown 0:0 {}", data_path.display()),
            ));
        }
    }

    Some(ScannedVolume {
        name: entry.name,
        path: entry.path,
        data,
        data_location: DataLocation::of(options.as_ref()),
        options,
        driver: "local".into(),
        labels: None,
        create_options: None,
        mounted,
        findings,
    })
}

fn read_metadata(root: &DataRoot, version: DaemonVersion, result: &mut Scan) {
    let path = root.metadata_db();
    let store = match metadata::read_store(&path) {
        Ok(Some(store)) => store,
        Ok(None) => {
            if !result.volumes.is_empty() {
                result.findings.push(Finding::new(
                    Severity::Warning,
                    FindingKind::MetadataDbAbsent,
                    format!("`{}` does not exist: dockerd starts with an empty store, so every volume loses its labels", path.display()),
                    "carry volumes/metadata.db with the volumes (volmig export/import does)",
                ));
            }
            return;
        }
        Err(MetadataError::Locked { path }) => {
            result.findings.push(Finding::new(
                Severity::Warning,
                FindingKind::DaemonRunning,
                format!("`{}` is locked: a dockerd is running on this data-root, labels could not be read, and volumes added now stay unknown to it until it restarts", path.display()),
                "stop dockerd to check offline (systemctl stop docker), or register new volumes with `docker volume create NAME`",
            ));
            return;
        }
        Err(e @ MetadataError::TooLarge { .. }) => {
            result.findings.push(Finding::new(
                Severity::Warning,
                FindingKind::MetadataDbUnchecked,
                format!("{e}: its labels and records were not checked (dockerd opens it if it is a valid bolt database)"),
                "check the labels with `docker volume inspect` once dockerd runs",
            ));
            return;
        }
        Err(e) => {
            let reason = e.daemon_reason();
            result.findings.push(Finding::new(
                Severity::Fatal,
                FindingKind::MetadataDbUnopenable,
                daemon_start_failure(
                    version,
                    &format!("error while opening volume store metadata database ({}): {reason}", path.display()),
                ),
                format!("{e}; move it aside (dockerd then starts with no labels) or restore it from the source"),
            ));
            return;
        }
    };

    if store.uninitialized {
        result.findings.push(Finding::new(
            Severity::Info,
            FindingKind::MetadataDbEmpty,
            format!("`{}` is 0 bytes: dockerd initializes it as an empty store at start, so no volume has labels", path.display()),
            "carry volumes/metadata.db with the volumes if they had labels (volmig export/import does)",
        ));
    }
    for (name, reason) in &store.undecodable {
        result.findings.push(Finding::new(
            Severity::Warning,
            FindingKind::MetadataRecordUndecodable,
            format!("metadata.db record `{name}` is not valid JSON ({reason}): dockerd skips it and the volume loses its labels"),
            "re-create the volume's record (volmig import writes it)",
        ));
    }
    for (name, record) in &store.records {
        let driver = if record.driver.is_empty() {
            "local"
        } else {
            record.driver.as_str()
        };
        match result.volumes.get_mut(name) {
            Some(volume) => {
                volume.driver = driver.to_string();
                volume.labels = Some(record.labels.clone().unwrap_or_default());
                volume.create_options = record.options.clone();
            }
            None if driver == "local" => result.findings.push(Finding::new(
                Severity::Warning,
                FindingKind::MetadataRecordOrphan,
                format!("metadata.db holds volume `{name}` but `{}` does not exist: dockerd deletes the record at start, and its labels with it", root.volume_dir(name).display()),
                format!("restore the volume directory `{}` before starting dockerd", root.volume_dir(name).display()),
            )),
            None => {}
        }
    }
    for volume in result.volumes.values_mut() {
        if !store.records.contains_key(&volume.name) {
            volume.findings.push(Finding::new(
                Severity::Warning,
                FindingKind::MetadataRecordMissing,
                format!("volume `{}` has no record in metadata.db: it loads, but without labels", volume.name),
                "carry the record with the volume (volmig import writes it), or ignore if it never had labels",
            ));
        }
    }
    result.store = Some(store);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_still_mounted_data_dir_is_flagged_by_generation() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("volumes/v1/_data")).unwrap();
        let root = DataRoot::open(tmp.path(), None).unwrap();
        let data = root.volume_data_dir("v1");
        let table = MountTable::parse(&format!(
            "22 1 8:1 / / rw - ext4 /dev/vda rw\n41 22 0:40 / {} rw - tmpfs tmpfs rw\n",
            data.display()
        ));
        let old = scan(&root, &table, DaemonVersion::new(24, 0, 7));
        let v = old.volume("v1").unwrap();
        assert!(v.mounted);
        let f = v
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::DataDirMounted)
            .unwrap();
        assert!(f.message.contains("unmounts it at start"), "{}", f.message);
        let new = scan(&root, &table, DaemonVersion::CURRENT);
        let f = new
            .volume("v1")
            .unwrap()
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::DataDirMounted)
            .unwrap();
        assert!(
            f.message.contains("marks the volume as mounted"),
            "{}",
            f.message
        );
        let clean = scan(&root, &MountTable::default(), DaemonVersion::CURRENT);
        assert!(!clean.volume("v1").unwrap().mounted);
    }
}
