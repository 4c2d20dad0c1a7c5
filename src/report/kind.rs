//! The `kind` of every finding: a closed set with stable names, which
//! scripts match on (`--json`), and the README's table lists (checked
//! against `FindingKind::ALL` by a test).

use serde::{Deserialize, Serialize};

/// Defines `FindingKind` from one list: each variant's stable name and
/// its one-line meaning.
macro_rules! finding_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $meaning:literal; )*) => {
        /// What a finding is about. The serialized name never changes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum FindingKind {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl FindingKind {
            /// Every kind, in the README's order.
            pub const ALL: &'static [FindingKind] = &[$(FindingKind::$variant),*];

            /// The stable name (`--json`'s `kind`).
            pub fn as_str(self) -> &'static str {
                match self { $(FindingKind::$variant => $name,)* }
            }

            /// What it means, in a line (the README's table).
            pub fn meaning(self) -> &'static str {
                match self { $(FindingKind::$variant => $meaning,)* }
            }
        }
    };
}

finding_kinds! {
    // The data-root as dockerd loads it (`volmig scan`).
    VolumesDirUnusable = "volumes-dir-unusable", "`volumes/` cannot be read as a directory: dockerd does not start";
    VolumesDirAbsent = "volumes-dir-absent", "`volumes/` does not exist: dockerd creates it empty, no volume exists";
    OptsInvalid = "opts-invalid", "an `opts.json` dockerd cannot parse: dockerd does not start";
    OptsBlocking = "opts-blocking", "an `opts.json` that is a FIFO, a device or endless: dockerd's scan never ends";
    OptsUnreadable = "opts-unreadable", "an `opts.json` that cannot be read: the volume loads without its mount options";
    MetadataDbUnopenable = "metadata-db-unopenable", "`metadata.db` is no readable bolt database: dockerd does not start";
    MetadataDbAbsent = "metadata-db-absent", "no `metadata.db`: every volume loses its labels";
    MetadataDbEmpty = "metadata-db-empty", "`metadata.db` is 0 bytes: dockerd starts with no labels";
    MetadataDbUnchecked = "metadata-db-unchecked", "`metadata.db` could not be read by volmig: labels not checked";
    MetadataRecordMissing = "metadata-record-missing", "a volume without its `metadata.db` record: it loads without labels";
    MetadataRecordOrphan = "metadata-record-orphan", "a record whose volume directory is gone: dockerd deletes it at start";
    MetadataRecordUndecodable = "metadata-record-undecodable", "a record that is not valid JSON: dockerd skips it";
    DaemonRunning = "daemon-running", "a dockerd runs on the data-root: volumes added now stay unknown to it";
    DataDirMissing = "data-dir-missing", "a volume without `_data`: it loads, a container mounting it fails";
    DataDirNotDir = "data-dir-not-dir", "a volume whose `_data` is not a directory: a container mounting it fails";
    DataDirMounted = "data-dir-mounted", "a volume's `_data` is still mounted";
    VolumeDirSkipped = "volume-dir-skipped", "a directory in `volumes/` with neither `_data` nor `opts.json`: dockerd skips it";
    VolumeSymlinkIgnored = "volume-symlink-ignored", "a symlink in `volumes/`: the local driver loads only directories";
    VolumeNameInvalid = "volume-name-invalid", "a volume name dockerd refuses at create";
    QuotaIgnored = "quota-ignored", "a quota that this dockerd version ignores";
    UsernsOwnerMismatch = "userns-owner-mismatch", "`_data` owned by ids the container's root (userns-remap or not) does not map to";
    UsernsRemapSubtree = "userns-remap-subtree", "the data-root holds userns-remap subtrees, checked apart";
    // Interrupted or running imports (`volmig recover`).
    ImportInterrupted = "import-interrupted", "an import was interrupted in its commit: run `volmig recover`";
    ImportUnfinished = "import-unfinished", "an import committed but did not finish: run `volmig recover`";
    ImportRunning = "import-running", "an import into this data-root is running";
    StagingLeftover = "staging-leftover", "the staging of an import that died before its commit";
    // One container's restore (`volmig verify`).
    ContainerUnloadable = "container-unloadable", "a container's `config.v2.json` dockerd cannot load";
    DaemonWillNotStart = "daemon-will-not-start", "a fatal scan finding: no container starts";
    MountUndefined = "mount-undefined", "a mount point with neither source nor volume";
    MountTypeUnchecked = "mount-type-unchecked", "a mount type not checked offline";
    VolumeMissing = "volume-missing", "`get <name>: no such volume`: the volume is not in `volumes/`";
    VolumeDataMissing = "volume-data-missing", "the volume's `_data` does not exist";
    VolumeDeviceMissing = "volume-device-missing", "a bind-type volume whose device is missing";
    VolumeOptsIncomplete = "volume-opts-incomplete", "volume options without their device";
    VolumeDriverMismatch = "volume-driver-mismatch", "the mount's driver is not the one `metadata.db` records";
    VolumeLabelsLost = "volume-labels-lost", "the mounted volume has no record: it mounts without labels";
    VolumeNeedsNetwork = "volume-needs-network", "a volume mounted over the network: not decidable offline";
    VolumeNeedsQuota = "volume-needs-quota", "a volume with a quota: needs XFS project quota";
    VolumePlugin = "volume-plugin", "a volume served by a plugin: its data is not checked";
    VolumePluginMissing = "volume-plugin-missing", "a volume whose plugin is not installed";
    SubpathEscapes = "subpath-escapes", "a volume subpath outside its volume";
    SubpathMissing = "subpath-missing", "a volume subpath that does not exist";
    SubpathUnsupported = "subpath-unsupported", "a volume subpath this dockerd version does not support";
    StaleSource = "stale-source", "a stored Source in the old data-root, which this dockerd recomputes";
    StaleSourceRelabel = "stale-source-relabel", "a stored Source in the old data-root that dockerd relabels (z/Z)";
    BindSourceMissing = "bind-source-missing", "a bind mount's source does not exist";
    BindSourceCreatedEmpty = "bind-source-created-empty", "a missing bind source that dockerd creates empty";
    BindIntoOldRoot = "bind-into-old-root", "a bind source inside the old data-root";
    PropagationUnsupported = "propagation-unsupported", "a shared or slave mount propagation the host mount does not allow";
    VolumesFromTmpfs = "volumes-from-tmpfs", "`--volumes-from` a container with a tmpfs mount";
    VolumesFromSourceAbsent = "volumes-from-source-absent", "`--volumes-from` a container not on this data-root";
    NetworkFilesMissing = "network-files-missing", "`hostname`, `hosts` or `resolv.conf` missing: regenerated at start";
    CheckpointMissing = "checkpoint-missing", "the checkpoint to restore is not there";
    CheckpointNameInvalid = "checkpoint-name-invalid", "a checkpoint name dockerd refuses";
    CheckpointNeedsExperimental = "checkpoint-needs-experimental", "a checkpoint restore needs dockerd's experimental mode";
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::FindingKind;

    #[test]
    fn names_are_unique_kebab_case_and_serialize_as_themselves() {
        let mut seen = std::collections::BTreeSet::new();
        for k in FindingKind::ALL {
            let name = k.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{name}\""));
            let back: FindingKind = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(back, *k);
        }
    }
}

#[cfg(test)]
mod readme {
    use super::FindingKind;

    /// The README's table of kinds is exactly `FindingKind::ALL`, in order,
    /// with their meanings.
    #[test]
    fn the_readme_lists_every_finding_kind() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let start = readme
            .find("<!-- finding kinds: begin -->")
            .expect("the README's table of finding kinds");
        let end = readme[start..]
            .find("<!-- finding kinds: end -->")
            .expect("the end of the README's table")
            + start;
        let rows: Vec<String> = readme[start..end]
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(str::to_string)
            .collect();
        let want: Vec<String> = FindingKind::ALL
            .iter()
            .map(|k| format!("| `{}` | {} |", k.as_str(), k.meaning()))
            .collect();
        assert_eq!(rows, want);
    }
}
