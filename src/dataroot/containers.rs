//! `containers/<id>/`: each container's `config.v2.json` and
//! `hostconfig.json`, decoded as dockerd decodes them at restore, and
//! container lookup by ID, ID prefix or name, like the docker CLI.
//!
//! A container whose files do not decode is kept as a `LoadError` (dockerd
//! logs "failed to load container" and skips it), so one broken container
//! never hides the others.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::regular_file::{self, RegularFileError};
use super::DataRoot;

/// Largest `config.v2.json` or `hostconfig.json` read (here and in a
/// bundle): both are read whole into memory. dockerd writes a few KiB; 16
/// MiB leaves room for huge labels and environments while bounding memory
/// on a hostile file.
pub const MAX_CONTAINER_FILE: u64 = 16 << 20;

/// A mount point from config.v2.json `MountPoints` (a map keyed by
/// destination). Field names are dockerd's; all optional, because 17.06
/// wrote fewer of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MountPoint {
    #[serde(rename = "Source")]
    pub source: String,
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Type")]
    pub kind: String,
    /// The `-v` mode string, e.g. `z`, `ro`, `rw,Z`.
    #[serde(rename = "Relabel")]
    pub relabel: String,
    #[serde(rename = "Propagation")]
    pub propagation: String,
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Spec")]
    pub spec: MountSpec,
    /// 18.09+: set for `--mount type=bind`, whose missing source is an error
    /// rather than silently created.
    #[serde(rename = "SkipMountpointCreation")]
    pub skip_mountpoint_creation: bool,
}

/// `mount.Mount`, the `--mount` spec kept with the mount point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MountSpec {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Source")]
    pub source: String,
    #[serde(rename = "Target")]
    pub target: String,
    #[serde(rename = "ReadOnly")]
    pub read_only: bool,
    #[serde(rename = "BindOptions")]
    pub bind_options: Option<BindOptions>,
    #[serde(rename = "VolumeOptions")]
    pub volume_options: Option<VolumeSpecOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BindOptions {
    #[serde(rename = "Propagation")]
    pub propagation: String,
    #[serde(rename = "CreateMountpoint")]
    pub create_mountpoint: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct VolumeSpecOptions {
    #[serde(rename = "NoCopy")]
    pub no_copy: bool,
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Subpath")]
    pub subpath: String,
    #[serde(rename = "DriverConfig")]
    pub driver_config: Option<DriverConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DriverConfig {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
}

/// What kind of mount a mount point is. 17.06 configs may lack `Type`:
/// then a mount point with a volume name or driver is a volume, else a bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
    Other,
}

impl MountPoint {
    pub fn mount_kind(&self) -> MountKind {
        let kind = if self.kind.is_empty() {
            self.spec.kind.as_str()
        } else {
            self.kind.as_str()
        };
        match kind {
            "bind" => MountKind::Bind,
            "volume" => MountKind::Volume,
            "tmpfs" => MountKind::Tmpfs,
            "" if !self.name.is_empty() || !self.driver.is_empty() => MountKind::Volume,
            "" => MountKind::Bind,
            _ => MountKind::Other,
        }
    }

    /// The propagation dockerd applies (the mount point's, else the spec's).
    pub fn effective_propagation(&self) -> &str {
        if !self.propagation.is_empty() {
            return &self.propagation;
        }
        self.spec
            .bind_options
            .as_ref()
            .map_or("", |b| b.propagation.as_str())
    }

    /// Whether the `-v` mode asks for an SELinux relabel (z or Z).
    pub fn relabels(&self) -> bool {
        self.relabel.split(',').any(|m| m == "z" || m == "Z")
    }

    pub fn subpath(&self) -> &str {
        self.spec
            .volume_options
            .as_ref()
            .map_or("", |v| v.subpath.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    #[serde(rename = "Running")]
    pub running: bool,
    #[serde(rename = "Paused")]
    pub paused: bool,
    #[serde(rename = "Restarting")]
    pub restarting: bool,
}

/// The parts of config.v2.json volmig reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "State")]
    pub state: ContainerState,
    #[serde(rename = "MountPoints")]
    pub mount_points: Option<BTreeMap<String, MountPoint>>,
    #[serde(rename = "HostnamePath")]
    pub hostname_path: String,
    #[serde(rename = "HostsPath")]
    pub hosts_path: String,
    #[serde(rename = "ResolvConfPath")]
    pub resolv_conf_path: String,
    #[serde(rename = "LogPath")]
    pub log_path: String,
    #[serde(rename = "ShmPath")]
    pub shm_path: String,
}

/// The parts of hostconfig.json volmig reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    #[serde(rename = "Binds")]
    pub binds: Option<Vec<String>>,
    #[serde(rename = "Tmpfs")]
    pub tmpfs: Option<BTreeMap<String, String>>,
    #[serde(rename = "VolumesFrom")]
    pub volumes_from: Option<Vec<String>>,
    #[serde(rename = "VolumeDriver")]
    pub volume_driver: String,
    /// `--mount` specs: dockerd re-validates these on every start.
    #[serde(rename = "Mounts")]
    pub mounts: Option<Vec<MountSpec>>,
}

/// A container whose files decoded.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub dir: PathBuf,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
}

impl Container {
    /// Mount points in destination order (dockerd's map order is random).
    pub fn mount_points(&self) -> impl Iterator<Item = (&String, &MountPoint)> {
        self.config.mount_points.iter().flatten()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.v2.json")
    }

    /// The `--mount` spec for `destination`, if the mount came from one.
    pub fn mount_spec(&self, destination: &str) -> Option<&MountSpec> {
        self.host_config
            .mounts
            .iter()
            .flatten()
            .find(|m| m.target == destination)
    }

    /// The data-root this container was created under, read back from the
    /// paths dockerd stored (`<R>/containers/<id>/hostname` and friends).
    pub fn stored_data_root(&self) -> Option<PathBuf> {
        let c = &self.config;
        [
            &c.hostname_path,
            &c.hosts_path,
            &c.resolv_conf_path,
            &c.log_path,
        ]
        .into_iter()
        .filter(|p| !p.is_empty())
        .find_map(|p| {
            let dir = Path::new(p).parent()?;
            if dir.file_name()? != self.id.as_str() {
                return None;
            }
            let containers = dir.parent()?;
            if containers.file_name()? != "containers" {
                return None;
            }
            containers.parent().map(Path::to_path_buf)
        })
    }

    /// Destinations of `--tmpfs` (HostConfig.Tmpfs): never resolved.
    pub fn is_tmpfs_destination(&self, destination: &str) -> bool {
        self.host_config
            .tmpfs
            .as_ref()
            .is_some_and(|t| t.contains_key(destination))
    }
}

/// Why a container's files did not decode.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load container {id}: `{}`: {reason}", path.display())]
pub struct LoadError {
    pub id: String,
    pub path: PathBuf,
    pub reason: String,
}

/// One directory under `containers/`, loaded or not.
#[derive(Debug, Clone)]
pub struct ContainerSlot {
    pub id: String,
    pub dir: PathBuf,
    pub loaded: Result<Container, LoadError>,
}

impl ContainerSlot {
    pub fn name(&self) -> Option<&str> {
        self.loaded.as_ref().ok().map(|c| c.name.as_str())
    }
}

/// Loads every container directory, sorted by name then ID. A missing
/// `containers/` is an empty list.
pub fn load_all(root: &DataRoot) -> io::Result<Vec<ContainerSlot>> {
    let dir = root.containers_dir();
    let entries = match fs::read_dir(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut slots = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let id = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let loaded = load_container(&id, &path);
        slots.push(ContainerSlot {
            id,
            dir: path,
            loaded,
        });
    }
    slots.sort_by(|a, b| (a.name().unwrap_or("~"), &a.id).cmp(&(b.name().unwrap_or("~"), &b.id)));
    Ok(slots)
}

fn read_json<T: for<'de> Deserialize<'de>>(id: &str, path: &Path) -> Result<Option<T>, LoadError> {
    let fail = |reason: String| LoadError {
        id: id.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match regular_file::read(path, MAX_CONTAINER_FILE) {
        Err(RegularFileError::NotFound) => return Ok(None),
        Err(e @ RegularFileError::NotRegular { .. }) if e.blocks_a_plain_read() => {
            return Err(fail(format!(
                "{e}: dockerd would block or run out of memory reading it; replace it with the container's real file"
            )))
        }
        Err(e) => return Err(fail(e.to_string())),
        Ok(b) => b,
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| fail(format!("malformed JSON: {e}")))
}

/// Loads one container as dockerd's restore does: config.v2.json must
/// exist and decode; a missing hostconfig.json is an empty one.
pub fn load_container(id: &str, dir: &Path) -> Result<Container, LoadError> {
    let config_path = dir.join("config.v2.json");
    let config: ContainerConfig = read_json(id, &config_path)?.ok_or_else(|| LoadError {
        id: id.to_string(),
        path: config_path.clone(),
        reason: "missing (dockerd skips this directory)".into(),
    })?;
    let host_config: HostConfig = read_json(id, &dir.join("hostconfig.json"))?.unwrap_or_default();
    if !config.id.is_empty() && config.id != id {
        // dockerd: "Container <dir> ID mismatch. Skipping."
        return Err(LoadError {
            id: id.to_string(),
            path: config_path,
            reason: format!(
                "holds ID {} but lives in directory {id}: dockerd skips it (rename the directory to its ID)",
                config.id
            ),
        });
    }
    Ok(Container {
        id: id.to_string(),
        name: config.name.trim_start_matches('/').to_string(),
        dir: dir.to_path_buf(),
        config,
        host_config,
    })
}

/// The first 12 characters of an ID, as docker shows it. A directory
/// under `containers/` may have any name: cutting 12 bytes panicked inside
/// a multi-byte character (`verify --all` on a directory `aααααααx`).
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// Why a container reference did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The docker CLI's own text.
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("multiple IDs found with provided prefix: {prefix} (candidates: {}); give more of the ID", candidates.join(", "))]
    Ambiguous {
        prefix: String,
        candidates: Vec<String>,
    },
}

/// Finds a container like `docker`: full ID, then name (with or without
/// the leading `/`), then a unique ID prefix.
pub fn find<'a>(slots: &'a [ContainerSlot], query: &str) -> Result<&'a ContainerSlot, LookupError> {
    if query.is_empty() {
        return Err(LookupError::NotFound(query.to_string()));
    }
    if let Some(slot) = slots.iter().find(|s| s.id == query) {
        return Ok(slot);
    }
    let name = query.strip_prefix('/').unwrap_or(query);
    if let Some(slot) = slots.iter().find(|s| s.name() == Some(name)) {
        return Ok(slot);
    }
    let matches: Vec<&ContainerSlot> = slots.iter().filter(|s| s.id.starts_with(query)).collect();
    match matches.as_slice() {
        [] => Err(LookupError::NotFound(query.to_string())),
        [one] => Ok(one),
        many => Err(LookupError::Ambiguous {
            prefix: query.to_string(),
            candidates: many
                .iter()
                .map(|s| match s.name() {
                    Some(n) => format!("{} ({n})", s.id),
                    None => s.id.clone(),
                })
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: &str, name: &str) -> ContainerSlot {
        ContainerSlot {
            id: id.into(),
            dir: PathBuf::from(id),
            loaded: Ok(Container {
                id: id.into(),
                name: name.into(),
                dir: PathBuf::from(id),
                config: ContainerConfig::default(),
                host_config: HostConfig::default(),
            }),
        }
    }

    #[test]
    fn lookup_matches_docker() {
        let slots = vec![
            slot("abc123", "web"),
            slot("abd456", "db"),
            slot("fff", "abc"),
        ];
        assert_eq!(find(&slots, "abc123").unwrap().id, "abc123");
        assert_eq!(find(&slots, "/web").unwrap().id, "abc123");
        assert_eq!(find(&slots, "db").unwrap().id, "abd456");
        // a name wins over an ID prefix, as in docker
        assert_eq!(find(&slots, "abc").unwrap().id, "fff");
        assert_eq!(find(&slots, "abd").unwrap().id, "abd456");
        match find(&slots, "ab").unwrap_err() {
            LookupError::Ambiguous { candidates, .. } => assert_eq!(candidates.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            find(&slots, "zzz").unwrap_err().to_string(),
            "No such container: zzz"
        );
        assert!(find(&slots, "").is_err());
    }

    #[test]
    fn short_ids_cut_at_a_character_boundary() {
        assert_eq!(short_id(&"ab".repeat(32)), "abababababab");
        assert_eq!(short_id("aααααααx"), "aααααααx");
        assert_eq!(short_id("aααααααααααααα"), "aααααααααααα");
        assert_eq!(short_id(""), "");
    }

    #[test]
    fn mount_kind_falls_back_for_old_configs() {
        let mut m = MountPoint {
            name: "data1".into(),
            driver: "local".into(),
            ..Default::default()
        };
        assert_eq!(m.mount_kind(), MountKind::Volume);
        m = MountPoint {
            source: "/srv".into(),
            ..Default::default()
        };
        assert_eq!(m.mount_kind(), MountKind::Bind);
        m.relabel = "ro,Z".into();
        assert!(m.relabels());
    }

    #[test]
    fn malformed_config_names_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("config.v2.json"), b"{\"ID\": ").unwrap();
        let err = load_container("abc", tmp.path()).unwrap_err();
        assert!(err.to_string().contains("config.v2.json"), "{err}");
        assert!(err.reason.contains("malformed JSON"), "{err}");
    }

    #[test]
    fn id_mismatch_is_skipped_like_dockerd() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("config.v2.json"),
            br#"{"ID":"other","Name":"/x"}"#,
        )
        .unwrap();
        assert!(load_container("abc", tmp.path()).is_err());
    }
}
