//! The model of dockerd restoring and starting a container: every mount
//! point of config.v2.json resolved as `setupMounts` -> `lazyInitializeVolume`
//! -> `MountPoint.Setup` would, offline.
//!
//! dockerd walks the mount points in Go map order and stops at the first
//! failure; we walk all of them in destination order and report each, with
//! the text the daemon prints and a fix. Nothing here writes or prints.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::daemon_version::DaemonVersion;
use crate::dataroot::containers::{Container, ContainerSlot, MountKind, MountPoint};
use crate::dataroot::mountinfo::MountTable;
use crate::dataroot::DataRoot;
use crate::report::{any_failure, Finding, FindingKind, Severity};
use crate::scan::Scan;

mod series;
mod source_fix;
mod volume;

pub use series::{verdict_across_series, SeriesRange, SeriesVerdict};
pub use source_fix::rewrite_command;
use volume::verify_volume;

/// What to predict for.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub version: DaemonVersion,
    /// `docker start --checkpoint NAME`.
    pub checkpoint: Option<String>,
    /// Whether the daemon runs with `--experimental` (needed for checkpoints).
    pub experimental: bool,
    /// Whether a daemon serving the data-root answered: a fix must then
    /// work with it running (or say to stop it).
    pub daemon_running: bool,
}

/// Everything a prediction reads, gathered once for all containers.
pub struct World<'a> {
    pub root: &'a DataRoot,
    pub scan: &'a Scan,
    pub mounts: &'a MountTable,
    pub containers: &'a [ContainerSlot],
}

/// How one mount point fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountStatus {
    Ok,
    Warning,
    Error,
    /// tmpfs and the like: nothing on disk to resolve.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct MountReport {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Volume name, for volumes.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The host path dockerd would mount (recomputed for volumes).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub rw: bool,
    pub status: MountStatus,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerReport {
    pub id: String,
    pub name: String,
    pub config_path: PathBuf,
    pub ok: bool,
    pub mounts: Vec<MountReport>,
    /// Problems of the container as a whole (unloadable, checkpoint...).
    pub findings: Vec<Finding>,
    /// When a series was predicted and the verdict changes inside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_series: Option<SeriesVerdict>,
}

impl ContainerReport {
    pub fn all_findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .chain(self.mounts.iter().flat_map(|m| m.findings.iter()))
    }
}

/// Predicts `docker start` for one container.
pub fn verify_container(
    world: &World,
    slot: &ContainerSlot,
    opts: &VerifyOptions,
) -> ContainerReport {
    let container = match &slot.loaded {
        Ok(c) => c,
        Err(e) => {
            let finding = Finding::new(
                Severity::Error,
                FindingKind::ContainerUnloadable,
                format!("failed to load container {}: `{}`: {}", slot.id, e.path.display(), e.reason),
                format!("restore `{}` from the source data-root (volmig export carries it); dockerd skips this container, so `docker start` says No such container", e.path.display()),
            );
            return ContainerReport {
                id: slot.id.clone(),
                name: String::new(),
                config_path: e.path.clone(),
                ok: false,
                mounts: Vec::new(),
                findings: vec![finding],
                within_series: None,
            };
        }
    };

    let mut findings = Vec::new();
    if world.scan.daemon_fatal() {
        findings.push(Finding::new(
            Severity::Error,
            FindingKind::DaemonWillNotStart,
            "dockerd will not start on this data-root, so this container cannot start",
            "fix the fatal problems `volmig scan` lists first",
        ));
    }
    let stored_root = container.stored_data_root();
    let moved_from = stored_root.filter(|old| old != world.root.path());
    let mut mounts = Vec::new();
    for (destination, mount) in container.mount_points() {
        mounts.push(verify_mount(
            world,
            container,
            destination,
            mount,
            moved_from.as_deref(),
            opts,
        ));
    }
    // A stale Source's fix depends on the container and the daemon's state.
    for m in &mut mounts {
        source_fix::set_fixes(world, container, opts, &m.source, &mut m.findings);
    }
    check_volumes_from(world, container, &mut findings);
    if let Some(name) = &opts.checkpoint {
        check_checkpoint(world, container, name, opts, &mut findings);
    }
    check_network_files(container, &mut findings);

    let ok = !any_failure(
        findings
            .iter()
            .chain(mounts.iter().flat_map(|m| m.findings.iter())),
    );
    ContainerReport {
        id: container.id.clone(),
        name: container.name.clone(),
        config_path: container.config_path(),
        ok,
        mounts,
        findings,
        within_series: None,
    }
}

fn verify_mount(
    world: &World,
    container: &Container,
    destination: &str,
    mount: &MountPoint,
    moved_from: Option<&Path>,
    opts: &VerifyOptions,
) -> MountReport {
    let kind = mount.mount_kind();
    let mut report = MountReport {
        destination: destination.to_string(),
        kind: match kind {
            MountKind::Bind => "bind".into(),
            MountKind::Volume => "volume".into(),
            MountKind::Tmpfs => "tmpfs".into(),
            MountKind::Other => mount.kind.clone(),
        },
        name: mount.name.clone(),
        source: mount.source.clone(),
        rw: mount.rw,
        status: MountStatus::Ok,
        findings: Vec::new(),
    };
    let f = &mut report.findings;
    if kind == MountKind::Tmpfs || container.is_tmpfs_destination(destination) {
        report.status = MountStatus::Skipped;
        return report;
    }
    match kind {
        MountKind::Other => f.push(Finding::new(
            Severity::Info,
            FindingKind::MountTypeUnchecked,
            format!("mount type `{}` is not checked offline", mount.kind),
            "nothing to do on Linux data-roots",
        )),
        // lazyInitializeVolume runs only for mount points with a Driver.
        MountKind::Volume if !mount.driver.is_empty() => {
            if let Some(path) = verify_volume(world, mount, moved_from, opts.version, f) {
                report.source = path.display().to_string();
            }
        }
        MountKind::Volume | MountKind::Bind => verify_bind(
            world,
            container,
            destination,
            mount,
            moved_from,
            opts.version,
            f,
        ),
        MountKind::Tmpfs => {}
    }
    report.status = if any_failure(report.findings.iter()) {
        MountStatus::Error
    } else if report
        .findings
        .iter()
        .any(|f| f.severity == Severity::Warning)
    {
        MountStatus::Warning
    } else {
        MountStatus::Ok
    };
    report
}

/// The missing-volume text, by generation.
pub fn no_such_volume(version: DaemonVersion, name: &str) -> String {
    if version.has_volume_service() {
        format!("get {name}: no such volume")
    } else {
        format!("get {name}: volume not found")
    }
}

fn verify_bind(
    world: &World,
    container: &Container,
    destination: &str,
    mount: &MountPoint,
    moved_from: Option<&Path>,
    version: DaemonVersion,
    f: &mut Vec<Finding>,
) {
    if mount.source.is_empty() {
        f.push(Finding::new(
            Severity::Error,
            FindingKind::MountUndefined,
            "Unable to setup mount point, neither source nor volume defined",
            format!("re-create the container with a source for {destination}"),
        ));
        return;
    }
    let source = Path::new(&mount.source);
    if let Some(old) = moved_from {
        if source.starts_with(old) {
            f.push(Finding::new(
                Severity::Warning,
                FindingKind::BindIntoOldRoot,
                format!(
                    "bind source `{}` lies inside the old data-root `{}`, not in this one",
                    source.display(),
                    old.display()
                ),
                format!(
                    "re-create the container with the source under `{}`",
                    world.root.path().display()
                ),
            ));
        }
    }
    let exists = fs::metadata(source).is_ok();
    if !exists {
        // `--mount type=bind` is re-validated on every start; `-v` creates it.
        let spec = container.mount_spec(destination);
        let from_mount_flag =
            spec.is_some_and(|s| s.kind == "bind") || mount.skip_mountpoint_creation;
        let create = spec
            .and_then(|s| s.bind_options.as_ref())
            .is_some_and(|b| b.create_mountpoint);
        if from_mount_flag && !create {
            f.push(Finding::new(
                Severity::Error,
                FindingKind::BindSourceMissing,
                format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                    source.display()
                ),
                format!(
                    "create or restore `{}` on this host before starting the container",
                    source.display()
                ),
            ));
        } else {
            f.push(Finding::new(
                Severity::Warning,
                FindingKind::BindSourceCreatedEmpty,
                format!("bind source `{}` does not exist: dockerd silently creates it as an empty directory, so the container sees no data there", source.display()),
                format!("restore `{}` on this host before starting the container", source.display()),
            ));
        }
        return;
    }
    check_propagation(
        world.mounts,
        source,
        mount.effective_propagation(),
        version,
        f,
    );
}

/// `shared`/`rshared` need the source's mount to be shared; `slave`/`rslave`
/// need it shared or slave (dockerd's `ensureShared` / `ensureSharedOrSlave`).
fn check_propagation(
    mounts: &MountTable,
    source: &Path,
    propagation: &str,
    version: DaemonVersion,
    f: &mut Vec<Finding>,
) {
    let needs_shared = matches!(propagation, "shared" | "rshared");
    let needs_slave = matches!(propagation, "slave" | "rslave");
    if !needs_shared && !needs_slave {
        return;
    }
    let real = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let Some(holder) = mounts.mount_of(&real) else {
        return;
    };
    let ok = holder.is_shared() || (needs_slave && holder.is_slave());
    if ok {
        return;
    }
    let (path, on) = (
        real.display().to_string(),
        holder.mount_point.display().to_string(),
    );
    // Seen on 20.10.24: unquoted paths and a final period; current
    // sources quote the paths and drop the period.
    let (path, on, end) = if version.quotes_propagation_paths() {
        (format!("{path:?}"), format!("{on:?}"), "")
    } else {
        (path, on, ".")
    };
    let what = if needs_shared {
        "a shared mount"
    } else {
        "a shared or slave mount"
    };
    f.push(Finding::new(
        Severity::Error,
        FindingKind::PropagationUnsupported,
        format!("path {path} is mounted on {on} but it is not {what}{end}"),
        format!(
            "mount --make-{}shared {} (systemd hosts make / shared; this one is private)",
            if propagation.starts_with('r') {
                "r"
            } else {
                ""
            },
            holder.mount_point.display()
        ),
    ));
}

/// `--volumes-from X` copied X's mount points at create; re-creating the
/// container fails when X has a tmpfs mount (seen on 20.10.24).
fn check_volumes_from(world: &World, container: &Container, f: &mut Vec<Finding>) {
    for spec in container.host_config.volumes_from.iter().flatten() {
        let source_name = spec.split(':').next().unwrap_or(spec);
        let Ok(slot) = crate::dataroot::containers::find(world.containers, source_name) else {
            f.push(Finding::new(
                Severity::Info,
                FindingKind::VolumesFromSourceAbsent,
                format!("--volumes-from source `{source_name}` is not on this data-root: its mount points were copied at create, so the start does not need it"),
                "carry it too if the container will ever be re-created",
            ));
            continue;
        };
        let Ok(source) = &slot.loaded else { continue };
        let has_tmpfs = source
            .mount_points()
            .any(|(_, m)| m.mount_kind() == MountKind::Tmpfs)
            || source
                .host_config
                .tmpfs
                .as_ref()
                .is_some_and(|t| !t.is_empty());
        if has_tmpfs {
            f.push(Finding::new(
                Severity::Warning,
                FindingKind::VolumesFromTmpfs,
                format!("--volumes-from `{source_name}` has a tmpfs mount: re-creating this container fails with `get : no such volume`"),
                "this restore is unaffected; to re-create, drop --volumes-from and name the volumes with -v",
            ));
        }
    }
}

fn check_checkpoint(
    world: &World,
    container: &Container,
    name: &str,
    opts: &VerifyOptions,
    f: &mut Vec<Finding>,
) {
    if !opts.experimental {
        f.push(Finding::new(
            Severity::Error,
            FindingKind::CheckpointNeedsExperimental,
            "checkpoint is only supported in experimental mode",
            "start dockerd with --experimental (or \"experimental\": true in daemon.json), then re-run with --experimental",
        ));
    }
    // dockerd's restricted-name rule: at least two characters, so a
    // one-character name fails too.
    if !crate::dataroot::is_restricted_name(name) {
        f.push(Finding::new(
            Severity::Error,
            FindingKind::CheckpointNameInvalid,
            format!("Invalid checkpoint ID ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
            "pass the checkpoint's directory name under containers/<id>/checkpoints/",
        ));
        return;
    }
    let dir = world.root.checkpoint_dir(&container.id, name);
    if !dir.is_dir() {
        f.push(Finding::new(
            Severity::Error,
            FindingKind::CheckpointMissing,
            format!("checkpoint `{name}` does not exist: `{}` is missing (checked after every mount point)", dir.display()),
            format!("carry it from the source (volmig export --checkpoint {name})"),
        ));
    }
}

/// hosts, resolv.conf and hostname are regenerated at start; missing ones
/// only make dockerd warn.
fn check_network_files(container: &Container, f: &mut Vec<Finding>) {
    let c = &container.config;
    let missing: Vec<String> = [&c.hostname_path, &c.hosts_path, &c.resolv_conf_path]
        .into_iter()
        .filter(|p| !p.is_empty() && fs::symlink_metadata(p).is_err())
        .map(|p| {
            Path::new(p)
                .file_name()
                .map_or_else(|| p.clone(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    if !missing.is_empty() {
        f.push(Finding::new(
            Severity::Info,
            FindingKind::NetworkFilesMissing,
            format!(
                "{} missing: dockerd regenerates them at start",
                missing.join(", ")
            ),
            "nothing to do",
        ));
    }
}

/// Whether a subpath leaves the volume: absolute, or `..` anywhere.
fn escapes(subpath: &str) -> bool {
    Path::new(subpath).components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    })
}

/// The first ancestor of `path` (or `path` itself) that does not exist, as
/// Go's EvalSymlinks reports it in `lstat <path>`.
fn first_missing(path: &Path) -> Option<PathBuf> {
    let mut current = PathBuf::new();
    for component in path.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(current),
            Err(_) => return None,
        }
    }
    None
}

/// Whether a volume plugin is installed: a managed plugin under
/// `R/plugins/*/config.json`, or a legacy spec or socket.
fn plugin_present(root: &DataRoot, driver: &str) -> bool {
    let bare = driver.split(':').next().unwrap_or(driver);
    let managed = fs::read_dir(root.plugins_dir())
        .into_iter()
        .flatten()
        .flatten()
        // # Security
        // A FIFO or /dev/zero here must not hang or exhaust `verify`.
        .filter_map(|e| {
            crate::dataroot::regular_file::read(
                &e.path().join("config.json"),
                crate::dataroot::containers::MAX_CONTAINER_FILE,
            )
            .ok()
        })
        .filter_map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .any(|v| {
            let name = v.get("Name").and_then(|n| n.as_str()).unwrap_or("");
            name == driver || name.split(':').next() == Some(bare)
        });
    if managed {
        return true;
    }
    [
        "/run/docker/plugins",
        "/etc/docker/plugins",
        "/usr/lib/docker/plugins",
    ]
    .iter()
    .flat_map(|dir| {
        ["sock", "spec", "json"].map(|ext| Path::new(dir).join(format!("{bare}.{ext}")))
    })
    .any(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subpaths_that_escape_are_caught() {
        assert!(escapes("../x"));
        assert!(escapes("a/../../x"));
        assert!(escapes("/etc"));
        assert!(!escapes("a/b"));
    }

    #[test]
    fn first_missing_names_the_first_absent_component() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a/b/c");
        assert_eq!(first_missing(&p), Some(tmp.path().join("a")));
        assert_eq!(first_missing(tmp.path()), None);
    }

    #[test]
    fn propagation_needs_a_shared_or_slave_source_mount() {
        let table = MountTable::parse(
            "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
             40 22 8:1 /srv /srv rw shared:4 - ext4 /dev/vda rw\n\
             41 22 8:1 /opt /opt rw master:4 - ext4 /dev/vda rw\n",
        );
        let d2010 = DaemonVersion::new(20, 10, 24);
        let mut f = Vec::new();
        check_propagation(
            &table,
            Path::new("/nonexistent-volmig/x"),
            "rshared",
            d2010,
            &mut f,
        );
        assert_eq!(
            f[0].message,
            "path /nonexistent-volmig/x is mounted on / but it is not a shared mount."
        );
        f.clear();
        check_propagation(
            &table,
            Path::new("/nonexistent-volmig/x"),
            "rslave",
            DaemonVersion::CURRENT,
            &mut f,
        );
        assert_eq!(f[0].message, "path \"/nonexistent-volmig/x\" is mounted on \"/\" but it is not a shared or slave mount");
        f.clear();
        check_propagation(&table, Path::new("/srv/data"), "rshared", d2010, &mut f);
        check_propagation(&table, Path::new("/opt/data"), "rslave", d2010, &mut f);
        check_propagation(
            &table,
            Path::new("/nonexistent-volmig/x"),
            "rprivate",
            d2010,
            &mut f,
        );
        assert!(f.is_empty(), "{f:?}");
        check_propagation(&table, Path::new("/opt/data"), "shared", d2010, &mut f);
        assert_eq!(f.len(), 1, "a slave mount is not enough for shared");
    }

    #[test]
    fn missing_volume_text_follows_the_generation() {
        assert_eq!(
            no_such_volume(DaemonVersion::new(20, 10, 24), "data1"),
            "get data1: no such volume"
        );
        assert_eq!(
            no_such_volume(DaemonVersion::new(17, 6, 0), "data1"),
            "get data1: volume not found"
        );
    }
}
