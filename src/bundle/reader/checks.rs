//! The reader's checks of what the header and each entry claim: names,
//! the kinds allowed at each place, and `_data`'s attributes against the
//! header's.

use std::cmp::Ordering;

use super::{hostile, path_order, show, ReadError};
use std::collections::BTreeMap;

use crate::bundle::{hex, layout, BundleHeader, BundleVolume, EntryKind, EntryMeta, Place};

/// # Security
/// The header's claims about `_data` (owner, mode, mtime, xattrs) are what
/// import gives the volume directory and what `inspect` prints; the
/// entries digest covers only the `_data` entry. Both must agree, or a
/// bundle could show one owner and install another.
pub(super) fn check_data_claims(meta: &EntryMeta, volume: &BundleVolume) -> Result<(), ReadError> {
    let claimed = &volume.data;
    let mut differs = Vec::new();
    if (claimed.uid, claimed.gid) != (meta.uid, meta.gid) {
        differs.push(format!(
            "owner {}:{} in the header, {}:{} in the entry",
            claimed.uid, claimed.gid, meta.uid, meta.gid
        ));
    }
    if u32::from_str_radix(&claimed.mode, 8)
        .ok()
        .map(|m| m & 0o7777)
        != Some(meta.mode)
    {
        differs.push(format!(
            "mode {} in the header, {:04o} in the entry",
            claimed.mode, meta.mode
        ));
    }
    if (claimed.mtime, claimed.mtime_nsec) != (meta.mtime, meta.mtime_nsec) {
        differs.push(format!(
            "mtime {} in the header, {} in the entry",
            crate::bundle::pax_time(claimed.mtime, claimed.mtime_nsec),
            crate::bundle::pax_time(meta.mtime, meta.mtime_nsec)
        ));
    }
    let xattrs: BTreeMap<String, String> = meta
        .xattrs
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), hex(v)))
        .collect();
    if claimed.xattrs != xattrs {
        differs.push("different xattrs".into());
    }
    if differs.is_empty() {
        return Ok(());
    }
    Err(hostile(
        &meta.path,
        format!(
            "the header's claims about it do not match the entry ({}): the bundle was altered",
            differs.join("; ")
        ),
    ))
}

/// The header must name valid volumes and containers, each once.
pub(super) fn check_header(header: &BundleHeader) -> Result<(), ReadError> {
    let mut seen = std::collections::BTreeSet::new();
    for v in &header.volumes {
        crate::dataroot::volumes::VolumeName::new(&v.name)
            .map_err(|e| hostile(layout::volume(&v.name).as_bytes(), e.to_string()))?;
        // dockerd's own files in volumes/: no volume can have these names
        // (its mkdir fails), and one laid down in their place would take
        // the daemon's database or quota device.
        if matches!(v.name.as_str(), "metadata.db" | "backingFsBlockDev") {
            return Err(hostile(
                layout::volume(&v.name).as_bytes(),
                format!(
                    "`{}` is dockerd's own file in volumes/, not a volume",
                    v.name
                ),
            ));
        }
        if !seen.insert(("v", v.name.as_str())) {
            return Err(hostile(
                layout::volume(&v.name).as_bytes(),
                "volume listed twice in the header",
            ));
        }
    }
    for c in &header.containers {
        let valid = c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(hostile(
                layout::container(&c.id).as_bytes(),
                "container ID is not 64 hex digits",
            ));
        }
        if !seen.insert(("c", c.id.as_str())) {
            return Err(hostile(
                layout::container(&c.id).as_bytes(),
                "container listed twice in the header",
            ));
        }
        // # Security
        // Import joins the name to the target container's directory:
        // `../../../containers/<id>` would install a whole container
        // (config and hostconfig of the bundle's choosing) beside it.
        if let Some(cp) = c
            .checkpoint
            .as_deref()
            .filter(|cp| !crate::dataroot::is_restricted_name(cp))
        {
            return Err(hostile(
                layout::checkpoint(&c.id, cp).as_bytes(),
                format!("invalid checkpoint name `{cp}`: dockerd accepts only [a-zA-Z0-9][a-zA-Z0-9_.-]+"),
            ));
        }
    }
    Ok(())
}

/// Entry kinds allowed at each place.
pub(super) fn check_entry(meta: &EntryMeta, place: &Place<'_>) -> Result<(), ReadError> {
    let ok = match place {
        Place::VolumeDir { .. } => meta.kind == EntryKind::Dir,
        Place::VolumeOpts { .. } => meta.kind == EntryKind::File,
        Place::VolumeData { rel: b"", .. } => meta.kind == EntryKind::Dir,
        Place::VolumeData { .. } => true,
        Place::Container { rel: b"", .. } => meta.kind == EntryKind::Dir,
        // Container state is plain files and directories.
        Place::Container { .. } => matches!(meta.kind, EntryKind::File | EntryKind::Dir),
        _ => false,
    };
    if !ok {
        return Err(hostile(
            &meta.path,
            format!("a {:?} is not allowed there", meta.kind).to_lowercase(),
        ));
    }
    if meta.kind == EntryKind::Hardlink {
        // # Security
        // Hardlink escape: a link's target must be an earlier entry of the
        // same volume, never a path outside it (CVE-2021-20206 class).
        let target = meta.link.as_deref().unwrap_or_default();
        let (Place::VolumeData { name, .. }, true) = (place, !target.is_empty()) else {
            return Err(hostile(&meta.path, "hardlink outside a volume"));
        };
        let prefix = format!("{}/", layout::volume_data(name));
        let inside = target.starts_with(prefix.as_bytes())
            && !target
                .split(|&b| b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..");
        if !inside || path_order(target, &meta.path) != Ordering::Less {
            return Err(hostile(
                &meta.path,
                format!(
                    "hardlink to `{}`, which is not an earlier file of the same volume",
                    show(target)
                ),
            ));
        }
    }
    Ok(())
}
