//! Live import: registering committed volumes with the running dockerd
//! that serves the data-root (its volume scan ran at its start, so a
//! directory laid down now stays unknown until `POST /volumes/create`).

use std::fs;
use std::io;
use std::path::PathBuf;

use super::stage::{restore_attrs, write_new, VolumeTop};
use super::{ImportReport, MetadataOutcome};
use crate::dataroot::metadata::VolumeRecord;
use crate::dataroot::DataRoot;
use crate::engine::Engine;

/// Registers committed volumes with a running daemon, then puts `_data`
/// back as the bundle had it: dockerd 20.10 chowns/chmods `_data` to
/// root:root 0755 when it creates a volume over an existing directory.
pub(super) fn register(
    root: &DataRoot,
    engine: &dyn Engine,
    report: &ImportReport,
    records: &[VolumeRecord],
) -> MetadataOutcome {
    let mut ok = 0;
    let mut failed = Vec::new();
    for (v, record) in report.header.volumes.iter().zip(records) {
        if let Err(e) = engine.create_volume(record) {
            failed.push((v.name.clone(), e.to_string()));
            continue;
        }
        // A carried bind volume's `_data` is the empty mountpoint: the
        // bundle's `_data` attributes are its device directory's, already
        // on the data laid down there, and dockerd's root 0755 is what
        // `docker volume create` gives a mountpoint.
        let top = report.tops.get(&v.name).map(|top| match &v.device {
            Some(d) if d.data_carried => VolumeTop {
                data: None,
                ..top.clone()
            },
            _ => top.clone(),
        });
        match put_back(root, &v.name, top.as_ref()) {
            Ok(()) => ok += 1,
            Err((path, e)) => failed.push((
                v.name.clone(),
                format!(
                    "registered, but `{}` could not be put back as it was: {e}",
                    path.display()
                ),
            )),
        }
    }
    MetadataOutcome::Registered { ok, failed }
}

/// Restores a registered volume's `_data`, opts.json and directory as the
/// bundle had them: dockerd 20.10 chowns/chmods `_data` to root:root 0755
/// and rewrites opts.json when it creates a volume over existing files.
/// The directory comes last: writing inside it changes its mtime.
fn put_back(
    root: &DataRoot,
    name: &str,
    top: Option<&VolumeTop>,
) -> Result<(), (PathBuf, io::Error)> {
    let Some(top) = top else { return Ok(()) };
    if let Some(meta) = &top.data {
        let data = root.volume_data_dir(name);
        restore_attrs(&data, meta).map_err(|e| (data, e))?;
    }
    if let Some((meta, bytes)) = &top.opts {
        let opts = root.volume_opts(name);
        let tmp = root.volume_dir(name).join(".opts.json.volmig-tmp");
        // A leftover of a killed run is replaced; the file is made durable
        // before it replaces the one dockerd wrote.
        let write = || -> io::Result<()> {
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            write_new(&tmp, bytes)?;
            restore_attrs(&tmp, meta)?;
            fs::File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &opts)?;
            fs::File::open(root.volume_dir(name))?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err((opts, e));
        }
    }
    if let Some(meta) = &top.dir {
        let dir = root.volume_dir(name);
        restore_attrs(&dir, meta).map_err(|e| (dir, e))?;
    }
    Ok(())
}
