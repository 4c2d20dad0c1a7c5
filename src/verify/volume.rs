//! A volume mount point as dockerd resolves it: the driver and its
//! record, the volume in the scan, its options (a device mounted over
//! `_data`: `dataroot::device`), the stored Source that 20.10.3-25.x
//! evaluate for a z/Z mode, and the subpath.

use std::fs;
use std::path::{Path, PathBuf};

use super::{escapes, first_missing, no_such_volume, plugin_present, World};
use crate::daemon_version::DaemonVersion;
use crate::dataroot::containers::MountPoint;
use crate::dataroot::device::{self, DataLocation};
use crate::dataroot::opts::VolumeOptions;
use crate::dataroot::volumes::VolumeName;
use crate::report::{Finding, FindingKind, Severity};
use crate::scan::ScannedVolume;

/// Resolves a volume mount point; returns the path dockerd would mount.
pub(super) fn verify_volume(
    world: &World,
    mount: &MountPoint,
    moved_from: Option<&Path>,
    version: DaemonVersion,
    f: &mut Vec<Finding>,
) -> Option<PathBuf> {
    let name = mount.name.as_str();
    let record = world.scan.record(name);
    if !check_driver(world, mount, f) {
        return None;
    }
    let Some(volume) = world.scan.volume(name) else {
        let anonymous = VolumeName::new(name).is_ok_and(|n| n.is_anonymous());
        f.push(Finding::new(
            Severity::Error,
            FindingKind::VolumeMissing,
            no_such_volume(version, name),
            format!(
                "{} volume `{name}` is not in `{}`: carry it from the source (volmig export ... | volmig import -) with the daemon stopped, then start it",
                if anonymous { "anonymous" } else { "named" },
                world.root.volumes_dir().display()
            ),
        ));
        return None;
    };
    let data = world.root.volume_data_dir(name);
    let mount_source = if mount.source.is_empty() {
        data.display().to_string()
    } else {
        mount.source.clone()
    };
    if let Some(options) = &volume.options {
        check_options(world, name, options, &mount_source, &data, version, f);
    }
    if !volume.has_data_dir() && volume.options.as_ref().is_none_or(|o| o.is_plain()) {
        f.push(Finding::new(
            Severity::Error,
            FindingKind::VolumeDataMissing,
            format!(
                "error while mounting volume '{mount_source}': `{}` does not exist",
                data.display()
            ),
            format!(
                "restore `{}` with the volume's data (volmig import carries it)",
                data.display()
            ),
        ));
    }
    check_stored_source(mount, &data, moved_from, version, f);
    let path = resolve_subpath(mount, volume, &data, version, f);
    f.extend(
        volume
            .findings
            .iter()
            .filter(|v| {
                v.severity == Severity::Warning && v.kind != FindingKind::MetadataRecordMissing
            })
            .cloned(),
    );
    if record.is_none() && world.scan.store.is_some() {
        f.push(Finding::new(
            Severity::Warning,
            FindingKind::VolumeLabelsLost,
            format!(
                "volume `{name}` has no record in metadata.db: it mounts, but without its labels"
            ),
            "carry the record with the volume (volmig import writes it)",
        ));
    }
    Some(path)
}

/// The driver: the record's must match the mount's, and a plugin must be
/// there. False when the local driver does not serve the volume.
fn check_driver(world: &World, mount: &MountPoint, f: &mut Vec<Finding>) -> bool {
    let name = mount.name.as_str();
    let record = world.scan.record(name);
    let stored_driver = record.map(|r| r.driver.as_str()).filter(|d| !d.is_empty());
    if let Some(stored) = stored_driver {
        if stored != mount.driver {
            f.push(Finding::new(
                Severity::Error,
                FindingKind::VolumeDriverMismatch,
                format!("get {name}: provided volume driver does not match stored driver"),
                format!("metadata.db records driver `{stored}` for `{name}` but the container asks for `{}`: carry the volume's record from the source, or fix the record", mount.driver),
            ));
            return false;
        }
    }
    let driver = stored_driver.unwrap_or(mount.driver.as_str());
    if driver != "local" {
        if plugin_present(world.root, driver) {
            f.push(Finding::new(
                Severity::Info,
                FindingKind::VolumePlugin,
                format!("volume `{name}` is served by plugin `{driver}`: its data is not in this data-root and is not checked"),
                "make sure the plugin can reach the volume on this host",
            ));
        } else {
            f.push(Finding::new(
                Severity::Error,
                FindingKind::VolumePluginMissing,
                format!("get {name}: error while checking if volume \"{name}\" exists in driver \"{driver}\": error looking up volume plugin {driver}: plugin \"{driver}\" not found"),
                format!("install and enable the plugin first: docker plugin install {driver}"),
            ));
        }
        return false;
    }
    true
}

/// A volume's options: a device mounted over `_data` must be complete and
/// present; the network and quotas cannot be checked offline.
fn check_options(
    world: &World,
    name: &str,
    options: &VolumeOptions,
    mount_source: &str,
    data: &Path,
    version: DaemonVersion,
    f: &mut Vec<Finding>,
) {
    if !options.mount_type.is_empty() && options.mount_device.is_empty() {
        f.push(Finding::new(
            Severity::Error,
            FindingKind::VolumeOptsIncomplete,
            format!(
                "error while mounting volume '{mount_source}': missing device in volume options"
            ),
            format!(
                "add MountDevice to `{}/opts.json` (docker volume create --opt device=...)",
                world.root.volume_dir(name).display()
            ),
        ));
    }
    if let Some(text) = device::missing_device_error(options, data) {
        f.push(device_missing_finding(name, options, mount_source, text));
    }
    if options.network_filesystem() {
        f.push(Finding::new(
            Severity::Warning,
            FindingKind::VolumeNeedsNetwork,
            format!("volume `{name}` mounts `{}` over the network ({}): whether it mounts cannot be decided offline", options.mount_device, options.mount_type),
            "make sure the server is reachable from this host before starting the container",
        ));
    }
    if options.quota.size > 0 && version.supports_quota() {
        f.push(Finding::new(
            Severity::Warning,
            FindingKind::VolumeNeedsQuota,
            format!(
                "volume `{name}` has a quota of {} bytes: dockerd needs XFS project quota on `{}`",
                options.quota.size,
                world.root.volumes_dir().display()
            ),
            "put the data-root on XFS mounted with pquota, or drop the quota",
        ));
    }
}

/// The Source stored in config.v2.json: 20.10.3-25.x evaluate its
/// symlinks for a z/Z mode, and a moved data-root leaves it stale.
fn check_stored_source(
    mount: &MountPoint,
    data: &Path,
    moved_from: Option<&Path>,
    version: DaemonVersion,
    f: &mut Vec<Finding>,
) {
    // 20.10.3-25.x evaluate the symlinks of the STORED Source for a z/Z mode.
    if version.evaluates_stored_source_for_relabel()
        && mount.relabels()
        && !mount.source.is_empty()
        && Path::new(&mount.source) != data
    {
        match first_missing(Path::new(&mount.source)) {
            Some(missing) => f.push(Finding::new(
                Severity::Error,
                FindingKind::StaleSourceRelabel,
                format!("error evaluating symlinks from mount source \"{}\": lstat {}: no such file or directory", mount.source, missing.display()),
                String::new(), // set by source_fix::set_fixes
            )),
            None => f.push(Finding::new(
                Severity::Warning,
                FindingKind::StaleSourceRelabel,
                format!("dockerd {version} relabels the stored Source `{}`, not `{}`: it still exists (the old data-root?), so the container gets the old data", mount.source, data.display()),
                String::new(), // set by source_fix::set_fixes
            )),
        }
    } else if let Some(old) = moved_from {
        if mount.relabels() && Path::new(&mount.source).starts_with(old) {
            f.push(Finding::new(
                Severity::Info,
                FindingKind::StaleSource,
                format!("Source `{}` points into the old data-root `{}`; dockerd {version} recomputes it, but 20.10.3-25.x would fail on it (z/Z mode)", mount.source, old.display()),
                String::new(), // set by source_fix::set_fixes
            ));
        }
    }
}

/// The path mounted: `_data`, or the mount's subpath inside it.
fn resolve_subpath(
    mount: &MountPoint,
    volume: &ScannedVolume,
    data: &Path,
    version: DaemonVersion,
    f: &mut Vec<Finding>,
) -> PathBuf {
    let name = mount.name.as_str();
    let subpath = mount.subpath();
    let mut path = data.to_path_buf();
    if !subpath.is_empty() {
        if !version.supports_subpath() {
            f.push(Finding::new(
                Severity::Error,
                FindingKind::SubpathUnsupported,
                format!("volume subpath `{subpath}` needs dockerd 26 or newer"),
                "upgrade the daemon, or mount the whole volume",
            ));
        } else if escapes(subpath) {
            f.push(Finding::new(
                Severity::Error,
                FindingKind::SubpathEscapes,
                format!("subpath must be a relative path within the volume: {subpath}"),
                "fix the mount's volume-subpath",
            ));
        } else {
            path = data.join(subpath);
            if volume.has_data_dir() && fs::symlink_metadata(&path).is_err() {
                f.push(Finding::new(
                    Severity::Error,
                    FindingKind::SubpathMissing,
                    format!(
                        "cannot access path {}: lstat {}: no such file or directory",
                        path.display(),
                        path.display()
                    ),
                    format!("create `{subpath}` inside the volume `{name}`"),
                ));
            }
        }
    }
    path
}

/// A bind or block device that is not on this host: dockerd's mount fails.
fn device_missing_finding(
    name: &str,
    options: &crate::dataroot::opts::VolumeOptions,
    mount_source: &str,
    text: String,
) -> Finding {
    let device = &options.mount_device;
    let fix = match DataLocation::of(Some(options)) {
        DataLocation::Bind { .. } => format!(
            "volume `{name}` is a bind of `{device}`, which is not on this host: carry its data (volmig export carries it unless given --bind-data skip; volmig import puts it at `{device}`, or elsewhere with --map-path {device}=NEW), or create `{device}`"
        ),
        _ => format!(
            "volume `{name}` mounts the device `{device}`, which is not on this host: attach it, or point the volume at another device"
        ),
    };
    Finding::new(
        Severity::Error,
        FindingKind::VolumeDeviceMissing,
        format!("error while mounting volume '{mount_source}': {text}"),
        fix,
    )
}
