//! Bind-type volumes whose data the bundle carries (`BundleDevice` with
//! `data_carried`): their data goes to the device path on the target
//! (`--map-path OLD=NEW` moves it), not into `_data`, which stays the
//! empty mountpoint dockerd binds the device over.
//!
//! The data is staged beside the target, in the nearest directory that
//! exists above it, so that committing it is one rename on its own
//! filesystem (the device path is often on another one than the
//! data-root). Those directories are listed in the staging's
//! `outside.json` before the first is created: removing the staging
//! removes them too.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::journal::{self, Item, OUTSIDE_PREFIX};
use super::stage::BindPlan;
use super::Conflict;
use crate::bundle::reader::ReadError;
use crate::bundle::{BundleHeader, HEADER_PATH};
use crate::dataroot::device::DataLocation;
use crate::dataroot::mountinfo::MountTable;
use crate::dataroot::DataRoot;

/// # Security
/// Where a bind volume's data goes is the bundle's to say (its header
/// names the device path), so a bundle could name any host path. Those
/// that hold the system itself are refused; `inspect` and `import
/// --dry-run` show every target, and `--map-path` moves it.
const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

/// `device` with the longest matching `OLD` prefix of `maps` (whole path
/// components) replaced by its `NEW`.
pub fn map_path(maps: &[(PathBuf, PathBuf)], device: &str) -> String {
    let path = Path::new(device);
    for (old, new) in maps {
        if let Ok(rest) = path.strip_prefix(old) {
            let mapped = match rest.as_os_str().is_empty() {
                true => new.clone(),
                false => new.join(rest),
            };
            return mapped.display().to_string();
        }
    }
    device.to_string()
}

/// The bind targets of a bundle's carried bind volumes, refusing targets
/// that are not plain absolute paths, lie inside the data-root or a
/// system directory (also through a symlink on the way), are not
/// directories, are mount points, or hold one another; the conflicts (a
/// target holding data) go to `conflicts`.
pub(super) fn plan_binds(
    root: &DataRoot,
    header: &BundleHeader,
    map: impl Fn(&str) -> String,
    conflicts: &mut Vec<Conflict>,
) -> Result<Vec<(String, BindPlan)>, ReadError> {
    let mut plans = Vec::new();
    let mut odd = Vec::new();
    // Every target as the commit's rename resolves it, for `overlapping`.
    let mut resolved = Vec::new();
    // Sorted by components: the mount points at or below a path are the
    // run that starts where the path would sort.
    let mut mounts: Vec<PathBuf> = MountTable::read_self()
        .map(|t| t.mounts.into_iter().map(|m| m.mount_point).collect())
        .unwrap_or_default();
    mounts.sort();
    for v in &header.volumes {
        let Some(d) = v.device.as_ref().filter(|d| d.data_carried) else {
            continue;
        };
        let target = PathBuf::from(map(&d.device));
        let plain = target.is_absolute()
            && target
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && target.parent().is_some();
        if !plain {
            return Err(ReadError::Hostile {
                entry: HEADER_PATH.into(),
                reason: format!(
                    "volume `{}` has its data at `{}`, which is not an absolute path without `..` below /",
                    v.name,
                    target.display()
                ),
            });
        }
        // # Security
        // The header's device is where the data goes and what inspect and
        // --dry-run show; the record's options are what `docker volume
        // inspect` shows. A record naming another device would hide the
        // real one from whoever reviews it (opts.json, what dockerd
        // mounts, is checked against the header once read:
        // `check_opts_devices`).
        let recorded = v
            .record
            .as_ref()
            .and_then(|r| r.options.as_ref())
            .and_then(|o| o.get("device"));
        if let Some(recorded) = recorded.filter(|r| **r != d.device) {
            return Err(ReadError::Hostile {
                entry: HEADER_PATH.into(),
                reason: format!(
                    "volume `{}` lays its data down at `{}` but its metadata.db record names the device `{recorded}`",
                    v.name, d.device
                ),
            });
        }
        // # Security
        // The checks below are on the path as written and as the kernel
        // resolves it: a symlink on the way (`/srv/x -> /etc`, or into the
        // data-root) would otherwise take the staging and the data where
        // no check looked.
        let real = resolve(&target);
        if let Some(system) = SYSTEM_DIRS
            .iter()
            .find(|d| target.starts_with(d) || real.starts_with(d))
        {
            odd.push(format!(
                "volume `{}` would put its data at `{}`, under the system directory `{system}`: volmig does not write there for a bundle; give it a place with --map-path {}=NEW",
                v.name,
                target.display(),
                target.display()
            ));
            continue;
        }
        let in_root = |p: &Path| {
            p.starts_with(root.path()) || root.path().starts_with(p) || p.starts_with(root.given())
        };
        if in_root(&target) || in_root(&real) {
            odd.push(format!(
                "volume `{}` keeps its data at `{}`, inside (or above) the data-root `{}`: give it another place with --map-path {}=NEW",
                v.name,
                target.display(),
                root.path().display(),
                target.display()
            ));
            continue;
        }
        let exists = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => true,
            Ok(_) => {
                odd.push(format!(
                    "`{}`, where volume `{}` keeps its data, exists and is not a directory (a file or a symlink): move it away, or give the data another place with --map-path {}=NEW",
                    target.display(),
                    v.name,
                    target.display()
                ));
                continue;
            }
            Err(_) => false,
        };
        // # Safety of data
        // The data is committed by renaming it into place, and the kernel
        // refuses to rename a mount point (EBUSY): found now, not after
        // the whole bundle was staged on the filesystem below it. A mount
        // below the target would move aside with the directory it
        // replaces, and removing that after the commit would delete the
        // mounted filesystem's files.
        let below = mounts.partition_point(|m| *m < real);
        let mount = mounts.get(below).filter(|m| exists && m.starts_with(&real));
        if let Some(mount) = mount {
            odd.push(format!(
                "`{}`, where volume `{}` keeps its data, is or holds the mount point `{}`: volmig lays the data down by renaming a directory into place (and moves the old one aside), which a mount refuses; unmount it, or put the data in a new directory with --map-path {}=NEW",
                target.display(),
                v.name,
                mount.display(),
                target.display()
            ));
            continue;
        }
        if exists && !is_empty_dir(&target) {
            conflicts.push(Conflict {
                item: Item::BindData {
                    volume: v.name.clone(),
                    target: target.clone(),
                    staged: PathBuf::new(),
                },
                identical: None,
            });
        }
        resolved.push((real, v.name.clone(), target.clone()));
        plans.push((
            v.name.clone(),
            BindPlan {
                target,
                staged: None,
            },
        ));
    }
    odd.extend(overlapping(resolved));
    if !odd.is_empty() {
        return Err(ReadError::Visitor(odd.join("\n")));
    }
    Ok(plans)
}

/// `path` as the kernel resolves it: its longest existing ancestor with
/// every symlink followed, and the missing rest as written.
fn resolve(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// # Security
/// Two carried volumes whose targets are the same path, or one inside
/// the other: the second commit would land inside the first's tree, just
/// laid down from the bundle, and through any symlink it carries (`d ->
/// /etc` in one volume, `<its device>/d/x` as the other's), or fail
/// half-way through the commit. Refused before anything is written.
/// `targets` is (resolved, volume, target as written).
fn overlapping(mut targets: Vec<(PathBuf, String, PathBuf)>) -> Vec<String> {
    // Sorted by components, a path comes right before the paths inside it.
    targets.sort();
    let mut odd = Vec::new();
    let mut outer: Option<&(PathBuf, String, PathBuf)> = None;
    for t in &targets {
        match outer {
            Some(o) if t.0 == o.0 => odd.push(format!(
                "volumes `{}` and `{}` both keep their data at `{}`: volmig lays down one volume's data per path; export them into separate bundles and give one another place with --map-path {}=NEW, or carry their options only (export --bind-data skip)",
                o.1,
                t.1,
                t.2.display(),
                t.2.display()
            )),
            Some(o) if t.0.starts_with(&o.0) => odd.push(format!(
                "volume `{}` keeps its data at `{}`, inside `{}` where volume `{}` keeps its own: one would be laid down inside the other; give one of them another place with --map-path {}=NEW",
                t.1,
                t.2.display(),
                o.2.display(),
                o.1,
                t.2.display()
            )),
            _ => outer = Some(t),
        }
    }
    odd
}

/// # Security
/// The header's device is where import lays the data down (and what
/// inspect and --dry-run show); opts.json is what dockerd mounts over
/// `_data`. A bundle where they differ would write the data in one place
/// and give the containers another (`/`, say) that nobody reviewed: each
/// carried volume's opts.json (`locations`, as read, before --map-path)
/// must bind-mount the header's device.
pub(super) fn check_opts_devices(
    header: &BundleHeader,
    locations: &BTreeMap<String, DataLocation>,
) -> Result<(), ReadError> {
    for v in &header.volumes {
        let Some(d) = v.device.as_ref().filter(|d| d.data_carried) else {
            continue;
        };
        let agrees = matches!(
            locations.get(&v.name),
            Some(DataLocation::Bind { device }) if device.as_os_str() == d.device.as_str()
        );
        if !agrees {
            return Err(ReadError::Hostile {
                entry: crate::bundle::layout::volume_opts(&v.name),
                reason: format!(
                    "the header lays the volume's data down at `{}`, but its opts.json does not bind-mount that path: dockerd would mount something else",
                    d.device
                ),
            });
        }
    }
    Ok(())
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// Chooses where each bind target is staged (beside its nearest existing
/// ancestor, named after the staging) and records them in `outside.json`.
pub(super) fn place_staging(
    staging: &Path,
    binds: &mut BTreeMap<String, BindPlan>,
) -> Result<(), ReadError> {
    let id = staging
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut dirs = Vec::new();
    for (name, plan) in binds.iter_mut() {
        let mut above = plan.target.parent();
        while let Some(dir) = above {
            if fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
                break;
            }
            above = dir.parent();
        }
        let base = above.unwrap_or(Path::new("/"));
        let staged = base.join(format!("{OUTSIDE_PREFIX}{id}-{name}"));
        dirs.push(staged.clone());
        plan.staged = Some(staged);
    }
    if dirs.is_empty() {
        return Ok(());
    }
    journal::save_outside(staging, &dirs).map_err(|e| {
        ReadError::Visitor(format!(
            "cannot write `{}`: {e}",
            staging.join(journal::OUTSIDE_FILE).display()
        ))
    })
}

/// The bundle path of the data of volume `name`, for entry `rel` below it.
pub(super) fn bundle_path(name: &str, rel: &Path) -> Vec<u8> {
    let mut path = crate::bundle::layout::volume_data(name).into_bytes();
    if !rel.as_os_str().is_empty() {
        path.push(b'/');
        path.extend_from_slice(rel.as_os_str().as_bytes());
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_path_replaces_whole_components_longest_first() {
        let maps = vec![
            (PathBuf::from("/srv/app/data"), PathBuf::from("/data/app")),
            (PathBuf::from("/srv"), PathBuf::from("/mnt/srv")),
        ];
        assert_eq!(map_path(&maps, "/srv/app/data"), "/data/app");
        assert_eq!(map_path(&maps, "/srv/app/data/x"), "/data/app/x");
        assert_eq!(map_path(&maps, "/srv/other"), "/mnt/srv/other");
        // Not a component prefix: left alone.
        assert_eq!(map_path(&maps, "/srvx/a"), "/srvx/a");
        assert_eq!(map_path(&[], "/srv/a"), "/srv/a");
    }

    #[test]
    fn bundle_paths_of_bind_data() {
        assert_eq!(bundle_path("v", Path::new("")), b"volumes/v/_data");
        assert_eq!(bundle_path("v", Path::new("a/b")), b"volumes/v/_data/a/b");
    }
}
