//! The bytes of tar headers as the writer emits them: ustar fields raw
//! (names byte for byte, nothing normalised), PAX records for what ustar
//! cannot hold, GNU sparse 1.0 headers and maps. Pure formatting: nothing
//! here reads a file.
//!
//! Written by hand rather than with tar-rs's `Builder`, which neither
//! writes GNU sparse 1.0 (sparse files would travel with their holes as
//! zeros, or as GNU's old `S` form other readers refuse) nor formats a
//! header apart from writing its data: the export's readers format each
//! small file's header on their own threads, ahead of the one thread that
//! writes the stream. tar-rs's `Header` still fills the ustar fields and
//! the checksum.

use std::io::{self, Write};

use super::{pax_time, EntryKind, EntryMeta};

/// `dir/GNUSparseFile.0/name`: where GNU tar's sparse 1.0 puts the entry
/// name in the ustar header (the real name is in `GNU.sparse.name`).
pub(super) fn sparse_alias(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => [&path[..i], b"/GNUSparseFile.0/", &path[i + 1..]].concat(),
        None => [b"GNUSparseFile.0/", path].concat(),
    }
}

/// Writes a sparse file's header in GNU sparse 1.0 form, with `data_len`
/// bytes of data segments to follow, and returns the sparse map that must
/// come first in its data (a decimal map padded to a block). GNU tar sizes
/// the extracted file by the end of its last segment, so a file that ends
/// in a hole gets an empty segment at its end, as GNU tar itself writes
/// (without it `tar -x` truncates the file to its last data byte).
pub(super) fn write_sparse_header(
    w: &mut impl Write,
    meta: &EntryMeta,
    segments: &[(u64, u64)],
    data_len: u64,
) -> io::Result<Vec<u8>> {
    let end = segments.last().map_or(0, |&(off, len)| off + len);
    let terminator = (end < meta.size).then_some((meta.size, 0));
    let map_segments: Vec<(u64, u64)> = segments.iter().copied().chain(terminator).collect();
    let mut map = format!("{}\n", map_segments.len());
    for (off, len) in &map_segments {
        map.push_str(&format!("{off}\n{len}\n"));
    }
    let mut map = map.into_bytes();
    map.resize(map.len().div_ceil(512) * 512, 0);
    let pax = vec![
        ("GNU.sparse.major".to_string(), b"1".to_vec()),
        ("GNU.sparse.minor".to_string(), b"0".to_vec()),
        ("GNU.sparse.name".to_string(), meta.path.clone()),
        (
            "GNU.sparse.realsize".to_string(),
            meta.size.to_string().into_bytes(),
        ),
    ];
    let mut shown = meta.clone();
    shown.path = sparse_alias(&meta.path);
    write_tar_header(w, &shown, map.len() as u64 + data_len, pax)?;
    Ok(map)
}

pub(super) fn pad(w: &mut impl Write, size: u64) -> io::Result<()> {
    let rem = (size % 512) as usize;
    if rem != 0 {
        w.write_all(&[0u8; 512][..512 - rem])?;
    }
    Ok(())
}

/// The largest value an octal ustar numeric field holds (7 digits).
const USTAR_MAX_ID: u32 = 0o7777777;
/// The largest ustar size (11 octal digits).
const USTAR_MAX_SIZE: u64 = 0o77777777777;

/// Writes the ustar header of `meta` (with `size` bytes of data to follow),
/// preceded by a PAX extended header when a field does not fit ustar:
/// long or non-UTF-8 names, nanosecond mtimes, large ids or sizes, xattrs.
/// Names are copied byte for byte: nothing is normalised.
pub(super) fn write_tar_header(
    w: &mut impl Write,
    meta: &EntryMeta,
    size: u64,
    mut pax: Vec<(String, Vec<u8>)>,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    let entry_type = meta.kind.tar_type();
    header.set_entry_type(entry_type);
    header.set_mode(meta.mode);
    let has_sparse_name = pax.iter().any(|(k, _)| k == "GNU.sparse.name");
    if !set_raw_path(&mut header, &meta.path) && !has_sparse_name {
        pax.push(("path".into(), meta.path.clone()));
    }
    if let Some(link) = &meta.link {
        let ustar = header
            .as_ustar_mut()
            .ok_or_else(|| io::Error::other("ustar header"))?;
        if link.len() <= ustar.linkname.len() && !link.contains(&0) {
            ustar.linkname[..link.len()].copy_from_slice(link);
        } else {
            pax.push(("linkpath".into(), link.clone()));
        }
    }
    if meta.uid > USTAR_MAX_ID {
        pax.push(("uid".into(), meta.uid.to_string().into_bytes()));
        header.set_uid(0);
    } else {
        header.set_uid(meta.uid as u64);
    }
    if meta.gid > USTAR_MAX_ID {
        pax.push(("gid".into(), meta.gid.to_string().into_bytes()));
        header.set_gid(0);
    } else {
        header.set_gid(meta.gid as u64);
    }
    if meta.mtime < 0 || meta.mtime_nsec != 0 {
        pax.push((
            "mtime".into(),
            pax_time(meta.mtime, meta.mtime_nsec).into_bytes(),
        ));
    }
    header.set_mtime(meta.mtime.max(0) as u64);
    if size > USTAR_MAX_SIZE {
        pax.push(("size".into(), size.to_string().into_bytes()));
        header.set_size(0);
    } else {
        header.set_size(size);
    }
    if matches!(meta.kind, EntryKind::Char | EntryKind::Block) {
        header.set_device_major(meta.rdev_major)?;
        header.set_device_minor(meta.rdev_minor)?;
    }
    if let Some(mark) = &meta.delta {
        pax.extend(mark.pax());
    }
    for (name, value) in &meta.xattrs {
        let name = std::str::from_utf8(name).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "an xattr name is not UTF-8")
        })?;
        pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
    }
    if !pax.is_empty() {
        if pax
            .iter()
            .any(|(k, v)| (k == "path" || k == "linkpath") && std::str::from_utf8(v).is_err())
        {
            pax.insert(0, ("hdrcharset".into(), b"BINARY".to_vec()));
        }
        write_pax(w, &pax)?;
    }
    header.set_cksum();
    w.write_all(header.as_bytes())
}

/// Puts `path` into the ustar name (and prefix) fields raw; false when it
/// does not fit and a PAX `path` is needed.
fn set_raw_path(header: &mut tar::Header, path: &[u8]) -> bool {
    let Some(ustar) = header.as_ustar_mut() else {
        return false;
    };
    if path.contains(&0) {
        return false;
    }
    if path.len() <= ustar.name.len() {
        ustar.name[..path.len()].copy_from_slice(path);
        return true;
    }
    // Split at a '/' so the name part fits 100 and the prefix 155.
    let split = path
        .iter()
        .enumerate()
        .filter(|&(i, &b)| {
            b == b'/' && i <= ustar.prefix.len() && path.len() - i - 1 <= ustar.name.len() && i > 0
        })
        .map(|(i, _)| i)
        .next();
    match split {
        Some(i) if path.len() - i - 1 > 0 => {
            ustar.prefix[..i].copy_from_slice(&path[..i]);
            ustar.name[..path.len() - i - 1].copy_from_slice(&path[i + 1..]);
            true
        }
        _ => {
            // A placeholder for readers that ignore PAX: the last bytes.
            let tail = &path[path.len().saturating_sub(ustar.name.len())..];
            ustar.name[..tail.len()].copy_from_slice(tail);
            false
        }
    }
}

/// A PAX extended header entry (`x`) with `len key=value\n` records.
fn write_pax(w: &mut impl Write, records: &[(String, Vec<u8>)]) -> io::Result<()> {
    let mut data = Vec::new();
    for (key, value) in records {
        let rest = 3 + key.len() + value.len();
        let mut len = rest + 1;
        while len.to_string().len() + rest > len {
            len += 1;
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut header = tar::Header::new_ustar();
    let name = b"PaxHeader";
    if let Some(u) = header.as_ustar_mut() {
        u.name[..name.len()].copy_from_slice(name);
    }
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    w.write_all(header.as_bytes())?;
    w.write_all(&data)?;
    pad(w, data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut out = Vec::new();
        write_pax(
            &mut out,
            &[("path".into(), vec![b'a'; 5]), ("k".into(), vec![b'v'; 95])],
        )
        .unwrap();
        let data = &out[512..];
        let text = String::from_utf8_lossy(data);
        let mut rest = text.trim_end_matches('\0');
        while !rest.is_empty() {
            let (len, _) = rest.split_once(' ').unwrap();
            let len: usize = len.parse().unwrap();
            let record = &rest[..len];
            assert!(record.ends_with('\n'), "{record:?}");
            rest = &rest[len..];
        }
    }

    #[test]
    fn long_paths_split_or_go_to_pax() {
        let mut h = tar::Header::new_ustar();
        let p = [vec![b'd'; 120], b"/".to_vec(), vec![b'f'; 50]].concat();
        assert!(set_raw_path(&mut h, &p));
        assert_eq!(&*h.path_bytes(), &p[..]);
        let mut h = tar::Header::new_ustar();
        assert!(!set_raw_path(&mut h, &vec![b'x'; 300]));
    }
}
