//! Whether a target volume equals a bundle's (`--on-conflict
//! skip-identical`): its content digest, computed exactly as a bundle's
//! per-volume digest (by writing it to nowhere), compared with the
//! trailer's. A bind volume is hashed with its data at the device path
//! and, when `--map-path` rewrote its opts.json, with the bundle's own
//! opts.json in its place: the dry run and the real run decide alike.

use std::fs::File;
use std::io;
use std::path::Path;

use super::stage::{restore_attrs, write_new, Stager};
use super::{werr, ImportError};
use crate::bundle::layout::{self, VolumeData};
use crate::bundle::writer::{BundleWriter, Compression};
use crate::bundle::BundleHeader;
use crate::dataroot::DataRoot;
use crate::progress::NoProgress;

/// The digest of the target's volume `name` in the bundle's terms; `None`
/// when a bind volume's data is gone from its device path (not equal, and
/// nothing to hash).
pub(super) fn target_volume(
    root: &DataRoot,
    name: &str,
    stage: &Stager,
) -> Result<Option<String>, ImportError> {
    let volume_dir = root.volume_dir(name);
    let Some(bind) = stage.binds.get(name) else {
        let data = root.volume_data_dir(name);
        return volume_digest(root, name, &volume_dir, &data, None).map(Some);
    };
    if !bind.target.is_dir() {
        return Ok(None);
    }
    let on_disk = root.volume_opts(name);
    let swap = stage
        .bundle_opts
        .get(name)
        .filter(|(_, _, mapped)| std::fs::read(&on_disk).is_ok_and(|b| &b == mapped));
    let Some((meta, bytes, _)) = swap else {
        return volume_digest(root, name, &volume_dir, &bind.target, None).map(Some);
    };
    // The bundle's opts.json, with its attributes, beside the target's.
    let tmp = tempfile::tempdir().map_err(werr(Path::new("/tmp")))?;
    let opts = tmp.path().join("opts.json");
    write_new(&opts, bytes)
        .and_then(|()| restore_attrs(&opts, meta))
        .map_err(werr(&opts))?;
    volume_digest(root, name, &volume_dir, &bind.target, Some(&opts)).map(Some)
}

/// The content digest of a volume directory `volume_dir` whose data is
/// `data_dir` (its `_data`, or a bind volume's device path), computed
/// exactly as a bundle's per-volume digest; `opts_override`: the
/// opts.json to hash in place of the one in `volume_dir`.
pub fn volume_digest(
    root: &DataRoot,
    name: &str,
    volume_dir: &Path,
    data_dir: &Path,
    opts_override: Option<&Path>,
) -> Result<String, ImportError> {
    let header = BundleHeader {
        format: crate::bundle::FORMAT.into(),
        tool: String::new(),
        source_host: String::new(),
        source_data_root: String::new(),
        containers: Vec::new(),
        volumes: Vec::new(),
        userns: None,
        round: None,
    };
    let sink = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(werr(Path::new("/dev/null")))?;
    let fail = |e: crate::bundle::writer::WriteError| ImportError::Write {
        path: volume_dir.to_path_buf(),
        source: io::Error::other(e.to_string()),
    };
    // Compared in the bundle's terms: a remapped target's ids as its
    // containers see them.
    let ids = root
        .id_map()
        .map(|m| crate::idmap::IdShift::new(m.clone(), crate::idmap::Direction::ToContainer));
    let mut w = BundleWriter::new(sink, Compression::None, &header, &NoProgress)
        .map_err(fail)?
        .with_id_shift(ids);
    let opts = opts_override.map_or_else(|| volume_dir.join("opts.json"), Path::to_path_buf);
    let opts = opts.exists().then_some(opts);
    layout::write_volume(
        &mut w,
        name,
        volume_dir,
        VolumeData::Tree(data_dir),
        opts.as_deref(),
    )
    .map_err(fail)?;
    let (trailer, _) = w.finish().map_err(fail)?;
    Ok(trailer
        .volumes
        .get(name)
        .map(|s| s.digest.clone())
        .unwrap_or_default())
}
