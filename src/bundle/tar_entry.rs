//! How one tar entry becomes an `EntryMeta`: its ustar header, its PAX
//! records (path, mtime, xattrs) and, for a GNU sparse 1.0 file, the
//! sparse map at the start of its data. Nothing here trusts the values:
//! the map's segments must be ordered, inside the file and add up.

use std::io::Read;

use super::delta::{DeltaMark, PAX_DELETE, PAX_PATCH_DATA, PAX_PATCH_SIZE, PAX_PATCH_ZERO};
use super::reader::{hostile, io_error, ReadError};
use super::{parse_pax_time, EntryKind, EntryMeta};

/// Builds the entry's metadata from its ustar header and PAX records.
pub(super) fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<EntryMeta, ReadError> {
    let header = entry.header().clone();
    let raw_path = entry.path_bytes().into_owned();
    let kind = EntryKind::from_tar_type(header.entry_type()).ok_or_else(|| {
        hostile(
            &raw_path,
            format!("tar entry type {:?} is not allowed", header.entry_type()),
        )
    })?;
    let mut path = raw_path.clone();
    let mut xattrs = Vec::new();
    let mut mtime_nsec = 0u32;
    let mut mtime = header
        .mtime()
        .map_err(|e| ReadError::Corrupt(e.to_string()))? as i64;
    let mut sparse_size: Option<u64> = None;
    let mut sparse_major = None;
    let mut delete: Option<Vec<u8>> = None;
    let mut patch: [Option<Vec<u8>>; 3] = [None, None, None];
    if let Some(pax) = entry.pax_extensions().map_err(io_error)? {
        for ext in pax {
            let ext = ext.map_err(|e| ReadError::Corrupt(format!("bad PAX record: {e}")))?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((name.to_vec(), value.to_vec()));
            } else if key == b"mtime" {
                (mtime, mtime_nsec) = std::str::from_utf8(value)
                    .ok()
                    .and_then(parse_pax_time)
                    .ok_or_else(|| hostile(&raw_path, "bad PAX mtime"))?;
            } else if key == b"GNU.sparse.name" {
                path = value.to_vec();
            } else if key == b"GNU.sparse.realsize" || key == b"GNU.sparse.size" {
                let text = std::str::from_utf8(value).unwrap_or("");
                sparse_size = Some(
                    text.parse()
                        .map_err(|_| hostile(&raw_path, "bad GNU.sparse.realsize"))?,
                );
            } else if key == b"GNU.sparse.major" {
                sparse_major = Some(value.to_vec());
            } else if key == PAX_DELETE.as_bytes() {
                delete = Some(value.to_vec());
            } else if key == PAX_PATCH_SIZE.as_bytes() {
                patch[0] = Some(value.to_vec());
            } else if key == PAX_PATCH_DATA.as_bytes() {
                patch[1] = Some(value.to_vec());
            } else if key == PAX_PATCH_ZERO.as_bytes() {
                patch[2] = Some(value.to_vec());
            }
        }
    }
    xattrs.sort();
    if path.len() > 1 && path.last() == Some(&b'/') {
        path.pop();
    }
    let link = entry.link_name_bytes().map(|l| l.into_owned());
    if matches!(kind, EntryKind::Symlink | EntryKind::Hardlink)
        && link.as_deref().is_none_or(|l| l.is_empty())
    {
        return Err(hostile(&path, "link without a target"));
    }
    let mut meta = EntryMeta {
        path,
        kind,
        mode: header
            .mode()
            .map_err(|e| ReadError::Corrupt(e.to_string()))?
            & 0o7777,
        uid: u32::try_from(
            header
                .uid()
                .map_err(|e| ReadError::Corrupt(e.to_string()))?,
        )
        .map_err(|_| hostile(&raw_path, "uid out of range"))?,
        gid: u32::try_from(
            header
                .gid()
                .map_err(|e| ReadError::Corrupt(e.to_string()))?,
        )
        .map_err(|_| hostile(&raw_path, "gid out of range"))?,
        mtime,
        mtime_nsec,
        size: if kind == EntryKind::File {
            entry.size()
        } else {
            0
        },
        link,
        rdev_major: header.device_major().ok().flatten().unwrap_or(0),
        rdev_minor: header.device_minor().ok().flatten().unwrap_or(0),
        xattrs,
        sparse: None,
        delta: None,
    };
    let [size, data, zero] = &patch;
    meta.delta = DeltaMark::from_pax(
        delete.as_deref(),
        [size.as_deref(), data.as_deref(), zero.as_deref()],
        meta.size,
    )
    .map_err(|why| hostile(&meta.path, why))?;
    if meta.delta.is_some() && (kind != EntryKind::File || sparse_major.is_some()) {
        return Err(hostile(
            &meta.path,
            "a delta record on an entry that is not a plain file",
        ));
    }
    if sparse_major.is_some() {
        if sparse_major.as_deref() != Some(b"1") || kind != EntryKind::File {
            return Err(hostile(&meta.path, "unsupported sparse format"));
        }
        let real =
            sparse_size.ok_or_else(|| hostile(&meta.path, "sparse file without its real size"))?;
        let (segments, map_len) = read_sparse_map(entry, &meta.path)?;
        let data: u64 = segments.iter().map(|s| s.1).sum();
        if map_len + data != entry.size() {
            return Err(hostile(
                &meta.path,
                "sparse map does not match the entry size",
            ));
        }
        let mut end = 0u64;
        for &(off, len) in &segments {
            if off < end || off.checked_add(len).is_none_or(|e| e > real) {
                return Err(hostile(
                    &meta.path,
                    "sparse map segments overlap or exceed the file",
                ));
            }
            end = off + len;
        }
        meta.size = real;
        meta.sparse = Some(segments);
    }
    Ok(meta)
}

/// GNU sparse 1.0 map: decimal lines (count, then offset/length pairs),
/// padded to 512 bytes. Returns the segments and the map's padded length.
fn read_sparse_map<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &[u8],
) -> Result<(Vec<(u64, u64)>, u64), ReadError> {
    let mut consumed = 0u64;
    let mut line = Vec::new();
    let mut next_number =
        |entry: &mut tar::Entry<'_, R>, consumed: &mut u64| -> Result<u64, ReadError> {
            line.clear();
            loop {
                let mut b = [0u8; 1];
                entry.read_exact(&mut b).map_err(io_error)?;
                *consumed += 1;
                if b[0] == b'\n' {
                    break;
                }
                if line.len() > 20 {
                    return Err(hostile(path, "bad sparse map"));
                }
                line.push(b[0]);
            }
            std::str::from_utf8(&line)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| hostile(path, "bad sparse map"))
        };
    let count = next_number(entry, &mut consumed)?;
    if count > 1 << 20 {
        return Err(hostile(path, "sparse map too large"));
    }
    let mut segments = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let off = next_number(entry, &mut consumed)?;
        let len = next_number(entry, &mut consumed)?;
        segments.push((off, len));
    }
    let padded = consumed.div_ceil(512) * 512;
    let mut skip = vec![0u8; (padded - consumed) as usize];
    entry.read_exact(&mut skip).map_err(io_error)?;
    Ok((segments, padded))
}
