//! Where everything is in a bundle, in one place: the paths of
//! containers, checkpoints and volumes, and what one volume's entries
//! are (`write_volume`), which both export and the digest of a target
//! volume (`import --on-conflict skip-identical`) write, so that a
//! volume hashes alike wherever it is hashed.

use std::path::Path;

use super::writer::{BundleWriter, WriteError};

/// `containers/<id>`.
pub fn container(id: &str) -> String {
    format!("containers/{id}")
}

/// `containers/<id>/<file>` (config.v2.json, hostconfig.json).
pub fn container_file(id: &str, file: &str) -> String {
    format!("containers/{id}/{file}")
}

/// `containers/<id>/checkpoints`.
pub fn checkpoints(id: &str) -> String {
    format!("containers/{id}/checkpoints")
}

/// `containers/<id>/checkpoints/<name>`.
pub fn checkpoint(id: &str, name: &str) -> String {
    format!("containers/{id}/checkpoints/{name}")
}

/// `volumes/<name>`.
pub fn volume(name: &str) -> String {
    format!("volumes/{name}")
}

/// `volumes/<name>/_data`.
pub fn volume_data(name: &str) -> String {
    format!("volumes/{name}/_data")
}

/// `volumes/<name>/opts.json`.
pub fn volume_opts(name: &str) -> String {
    format!("volumes/{name}/opts.json")
}

/// What a volume's `_data` is carried from.
#[derive(Debug, Clone, Copy)]
pub enum VolumeData<'a> {
    /// This directory's whole tree (`_data` itself, or a bind volume's
    /// device path).
    Tree(&'a Path),
    /// This directory alone: the mountpoint of a device whose data is
    /// not carried.
    DirOnly(&'a Path),
}

/// One volume's entries, in bundle order: its directory, `_data`, and
/// its opts.json when it has one.
pub fn write_volume(
    w: &mut BundleWriter,
    name: &str,
    volume_dir: &Path,
    data: VolumeData<'_>,
    opts: Option<&Path>,
) -> Result<(), WriteError> {
    w.declare_volume(name);
    w.add_file(volume(name).as_bytes(), volume_dir, Some(name))?;
    match data {
        VolumeData::Tree(dir) => w.add_tree(volume_data(name).as_bytes(), dir, Some(name))?,
        VolumeData::DirOnly(dir) => w.add_file(volume_data(name).as_bytes(), dir, Some(name))?,
    }
    if let Some(opts) = opts {
        w.add_file(volume_opts(name).as_bytes(), opts, Some(name))?;
    }
    Ok(())
}
