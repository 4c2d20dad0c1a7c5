//! Reads a bundle in one pass, checking everything on the way.
//!
//! The reader owns the format-level checks: the header comes first, every
//! entry lies under a container or volume the header names, entries come
//! in strictly increasing path order (no duplicates, O(1) memory), nothing
//! sits below a symlink or a file, every file's content is hashed as it
//! streams, and the trailer must match what was read. The visitor (import,
//! inspect) sees each entry once; nothing read is trusted until `read`
//! returns Ok.

use std::cell::Cell;
use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::rc::Rc;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::{
    classify, hex, sums_line, BundleHeader, EntryKind, EntryMeta, Place, RunningDigest, Trailer,
    VolumeSummary,
};
use super::{hash_zeros, parse_pax_time, FORMAT, HEADER_PATH};
use crate::progress::Progress;

/// Largest header or trailer accepted: bounds memory on hostile input.
const MAX_JSON: u64 = 64 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a volmig bundle: {0}")]
    NotABundle(String),
    #[error("bundle format `{0}` is not supported by this volmig (it reads {FORMAT}): use the volmig that wrote it")]
    Format(String),
    #[error("bundle is truncated{0}: copy it again (nothing was written)")]
    Truncated(String),
    #[error("refusing bundle entry `{entry}`: {reason}")]
    Hostile { entry: String, reason: String },
    #[error("bundle is corrupt: {0} (nothing was written)")]
    Corrupt(String),
    #[error("cannot read the bundle: {0}")]
    Io(#[source] io::Error),
    /// An error of the visitor (import's staging).
    #[error("{0}")]
    Visitor(String),
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn hostile(path: &[u8], reason: impl Into<String>) -> ReadError {
    ReadError::Hostile {
        entry: show(path),
        reason: reason.into(),
    }
}

fn io_error(e: io::Error) -> ReadError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ReadError::Truncated(String::new())
    } else if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::Other {
        ReadError::Corrupt(e.to_string())
    } else {
        ReadError::Io(e)
    }
}

/// What a bundle's consumer does with it.
pub trait Visitor {
    /// Called once with the header, before any entry.
    fn header(&mut self, header: &BundleHeader) -> Result<(), ReadError>;
    /// Called for each content entry. `data` yields a file's bytes (for a
    /// sparse file: its data segments back to back, see `meta.sparse`).
    fn entry(
        &mut self,
        header: &BundleHeader,
        meta: &EntryMeta,
        place: Place<'_>,
        data: &mut dyn Read,
    ) -> Result<(), ReadError>;
}

/// Opens a bundle stream, detecting zstd by its magic number.
pub fn open(mut input: Box<dyn Read>) -> Result<Box<dyn Read>, ReadError> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    if got == 0 {
        return Err(ReadError::NotABundle("the input is empty".into()));
    }
    let rest = io::Cursor::new(magic[..got].to_vec()).chain(input);
    if got == 4 && magic == ZSTD_MAGIC {
        let decoder = zstd::stream::read::Decoder::new(rest).map_err(ReadError::Io)?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(rest))
    }
}

/// Counts and digests of what was read, to compare with the trailer.
#[derive(Default)]
struct Tally {
    entries: u64,
    files: u64,
    bytes: u64,
    entries_digest: RunningDigest,
    sums_digest: Sha256,
    volumes: std::collections::BTreeMap<String, (RunningDigest, VolumeSummary)>,
}

/// Compares bundle paths component by component: the order the writer's
/// sorted depth-first walk produces.
fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

fn is_below(path: &[u8], ancestor: &[u8]) -> bool {
    path.len() > ancestor.len() && path.starts_with(ancestor) && path[ancestor.len()] == b'/'
}

/// How much of the content to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Hash every file and match every digest against the trailer.
    Content,
    /// Structure only (order, places, kinds); skips hashing. For listing.
    Structure,
}

/// Reads a whole bundle, handing entries to `visitor`; returns the header
/// and the trailer (verified against the content with `Check::Content`).
pub fn read(
    input: Box<dyn Read>,
    visitor: &mut dyn Visitor,
    progress: &dyn Progress,
    check: Check,
) -> Result<(BundleHeader, Trailer), ReadError> {
    let ended = Rc::new(Cell::new(false));
    let mut trailer_read = false;
    let input = Box::new(EofWatch {
        inner: input,
        ended: Rc::clone(&ended),
    });
    read_all(input, visitor, progress, check, &mut trailer_read).map_err(|e| match e {
        // A stream that ended before its trailer is truncated, whatever
        // the layer that noticed first said: tar-rs "failed to read entire
        // block" mid-header, zstd "incomplete frame", a short JSON entry.
        ReadError::Corrupt(_) | ReadError::NotABundle(_) | ReadError::Io(_)
            if ended.get() && !trailer_read =>
        {
            ReadError::Truncated(": it ends in the middle of an entry".into())
        }
        e => e,
    })
}

/// Notes when the input ends (or says it ended early).
struct EofWatch {
    inner: Box<dyn Read>,
    ended: Rc<Cell<bool>>,
}

impl Read for EofWatch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.ended.set(true);
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.ended.set(true);
                Err(e)
            }
            other => other,
        }
    }
}

fn read_all(
    input: Box<dyn Read>,
    visitor: &mut dyn Visitor,
    progress: &dyn Progress,
    check: Check,
    trailer_read: &mut bool,
) -> Result<(BundleHeader, Trailer), ReadError> {
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries().map_err(io_error)?;

    // 1. The header.
    let mut first = match entries.next() {
        None => return Err(ReadError::NotABundle("it holds no tar entries".into())),
        Some(e) => e.map_err(|e| ReadError::NotABundle(format!("not a tar archive ({e})")))?,
    };
    if &*first.path_bytes() != HEADER_PATH.as_bytes() {
        return Err(ReadError::NotABundle(format!(
            "its first entry is `{}`, not {HEADER_PATH}",
            show(&first.path_bytes())
        )));
    }
    let header_bytes = read_json_entry(&mut first)?;
    drop(first);
    let header_sha256 = hex(&Sha256::digest(&header_bytes));
    let probe: serde_json::Value = serde_json::from_slice(&header_bytes)
        .map_err(|e| ReadError::Corrupt(format!("header is not JSON: {e}")))?;
    let format = probe.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != FORMAT {
        return Err(ReadError::Format(format.to_string()));
    }
    let header: BundleHeader = serde_json::from_slice(&header_bytes)
        .map_err(|e| ReadError::Corrupt(format!("header does not match {FORMAT}: {e}")))?;
    check_header(&header)?;
    visitor.header(&header)?;

    // 2. Content entries, then SHA256SUMS and the trailer.
    let mut tally = Tally::default();
    for v in &header.volumes {
        tally.volumes.insert(v.name.clone(), Default::default());
    }
    let mut spool = io::BufWriter::new(tempfile::tempfile().map_err(ReadError::Io)?);
    let mut previous: Option<Vec<u8>> = None;
    let mut last_leaf: Option<Vec<u8>> = None;
    let mut sums_checked = false;
    let mut trailer: Option<Trailer> = None;
    let mut scratch = vec![0u8; super::IO_CHUNK];
    let mut background: Option<BackgroundHasher> = None;

    for entry in entries {
        if progress.cancelled() {
            return Err(ReadError::Visitor(
                "interrupted: nothing was written".into(),
            ));
        }
        let mut entry = entry.map_err(io_error)?;
        if trailer.is_some() {
            return Err(hostile(&entry.path_bytes(), "entry after the trailer"));
        }
        let meta = entry_meta(&mut entry)?;
        let place =
            classify(&meta.path, &header).map_err(|e| hostile(&meta.path, e.to_string()))?;
        match place {
            Place::Header => return Err(hostile(&meta.path, "a second header")),
            Place::Sums => {
                if sums_checked {
                    return Err(hostile(&meta.path, "a second SHA256SUMS"));
                }
                if check == Check::Structure {
                    sums_checked = true;
                    continue;
                }
                let spooled = spool
                    .into_inner()
                    .map_err(|e| ReadError::Io(e.into_error()))?;
                check_sums(&mut entry, spooled, &mut tally)?;
                spool = io::BufWriter::new(tempfile::tempfile().map_err(ReadError::Io)?);
                sums_checked = true;
                continue;
            }
            Place::Trailer => {
                if !sums_checked {
                    return Err(hostile(&meta.path, "trailer before SHA256SUMS"));
                }
                let bytes = read_json_entry(&mut entry)?;
                let t: Trailer = serde_json::from_slice(&bytes)
                    .map_err(|e| ReadError::Corrupt(format!("trailer is not valid: {e}")))?;
                trailer = Some(t);
                *trailer_read = true;
                continue;
            }
            _ if sums_checked => return Err(hostile(&meta.path, "content entry after SHA256SUMS")),
            _ => {}
        }
        // Order: strictly increasing, so no duplicates and no re-visits.
        if let Some(prev) = &previous {
            if path_order(&meta.path, prev) != Ordering::Greater {
                return Err(hostile(
                    &meta.path,
                    format!("out of order or duplicate (after `{}`)", show(prev)),
                ));
            }
        }
        // # Security
        // Symlink write-through (CVE-2018-20482 class): nothing may be
        // written below a symlink, or below any other non-directory.
        if let Some(leaf) = &last_leaf {
            if is_below(&meta.path, leaf) {
                return Err(hostile(
                    &meta.path,
                    format!("lies below `{}`, which is not a directory", show(leaf)),
                ));
            }
        }
        last_leaf = (meta.kind != EntryKind::Dir).then(|| meta.path.clone());
        check_entry(&meta, &place)?;

        let digest = {
            let digester = match check {
                Check::Structure => Digester::Off,
                Check::Content if meta.size >= BACKGROUND_HASH_MIN => {
                    Digester::Background(background.get_or_insert_with(BackgroundHasher::new))
                }
                Check::Content => Digester::Inline(Sha256::new()),
            };
            let mut hashing = HashingReader::new(&mut entry, &meta, digester);
            visitor.entry(&header, &meta, place.clone(), &mut hashing)?;
            hashing.finish(&mut scratch)?
        };
        progress.advance(meta.size);
        tally.entries += 1;
        if meta.kind == EntryKind::File && check == Check::Structure {
            tally.files += 1;
            tally.bytes += meta.size;
        }
        tally
            .entries_digest
            .update(&meta.describe(&meta.path, digest.as_ref()));
        if let Some(d) = &digest {
            tally.files += 1;
            tally.bytes += meta.size;
            spool
                .write_all(&sums_line(d, &meta.path))
                .map_err(ReadError::Io)?;
        }
        let volume = match &place {
            Place::VolumeOpts { name }
            | Place::VolumeData { name, .. }
            | Place::VolumeDir { name } => Some(*name),
            _ => None,
        };
        if let Some(name) = volume {
            if let Some((vd, vs)) = tally.volumes.get_mut(name) {
                let rel_start = "volumes/".len() + name.len() + 1;
                vd.update(&meta.describe(
                    &meta.path[rel_start.min(meta.path.len())..],
                    digest.as_ref(),
                ));
                vs.entries += 1;
                if digest.is_some() {
                    vs.files += 1;
                    vs.bytes += meta.size;
                }
            }
        }
        previous = Some(meta.path);
    }
    let Some(trailer) = trailer else {
        return Err(ReadError::Truncated(": it ends before its trailer".into()));
    };
    if check == Check::Content {
        check_trailer(&trailer, tally, &header_sha256)?;
    } else if trailer.entries != tally.entries
        || trailer.files != tally.files
        || trailer.bytes != tally.bytes
    {
        return Err(ReadError::Corrupt(
            "the entry counts do not match the trailer".into(),
        ));
    }
    Ok((header, trailer))
}

fn read_json_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<u8>, ReadError> {
    if entry.size() > MAX_JSON {
        return Err(hostile(
            &entry.path_bytes(),
            format!("{} bytes is too large for a JSON entry", entry.size()),
        ));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

/// The header must name valid volumes and containers, each once.
fn check_header(header: &BundleHeader) -> Result<(), ReadError> {
    let mut seen = std::collections::BTreeSet::new();
    for v in &header.volumes {
        crate::dataroot::volumes::VolumeName::new(&v.name)
            .map_err(|e| hostile(format!("volumes/{}", v.name).as_bytes(), e.to_string()))?;
        // dockerd's own files in volumes/: no volume can have these names
        // (its mkdir fails), and one laid down in their place would take
        // the daemon's database or quota device.
        if matches!(v.name.as_str(), "metadata.db" | "backingFsBlockDev") {
            return Err(hostile(
                format!("volumes/{}", v.name).as_bytes(),
                format!(
                    "`{}` is dockerd's own file in volumes/, not a volume",
                    v.name
                ),
            ));
        }
        if !seen.insert(("v", v.name.as_str())) {
            return Err(hostile(
                format!("volumes/{}", v.name).as_bytes(),
                "volume listed twice in the header",
            ));
        }
    }
    for c in &header.containers {
        let valid = c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(hostile(
                format!("containers/{}", c.id).as_bytes(),
                "container ID is not 64 hex digits",
            ));
        }
        if !seen.insert(("c", c.id.as_str())) {
            return Err(hostile(
                format!("containers/{}", c.id).as_bytes(),
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
                format!("containers/{}/checkpoints/{cp}", c.id).as_bytes(),
                format!("invalid checkpoint name `{cp}`: dockerd accepts only [a-zA-Z0-9][a-zA-Z0-9_.-]+"),
            ));
        }
    }
    Ok(())
}

/// Entry kinds allowed at each place.
fn check_entry(meta: &EntryMeta, place: &Place<'_>) -> Result<(), ReadError> {
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
        let prefix = format!("volumes/{name}/_data/");
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

/// Builds the entry's metadata from its ustar header and PAX records.
fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<EntryMeta, ReadError> {
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
    };
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

/// Files from this size on are hashed on the background thread.
const BACKGROUND_HASH_MIN: u64 = 1 << 20;

/// Hashes large files on a second thread while the reading thread copies
/// them into place: hashing then costs no wall time over the copy (on two
/// cores). Data is handed over in a few recycled buffers, so memory stays
/// constant and the reader waits when the hasher falls behind.
struct BackgroundHasher {
    work: Option<mpsc::SyncSender<HashWork>>,
    free: mpsc::Receiver<Vec<u8>>,
    digests: mpsc::Receiver<[u8; 32]>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum HashWork {
    Data(Vec<u8>, usize),
    Zeros(u64),
    Finish,
}

impl BackgroundHasher {
    const BUFFERS: usize = 4;

    fn new() -> BackgroundHasher {
        let (work_tx, work_rx) = mpsc::sync_channel::<HashWork>(Self::BUFFERS);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let (digest_tx, digest_rx) = mpsc::channel();
        for _ in 0..Self::BUFFERS {
            let _ = free_tx.send(vec![0u8; super::IO_CHUNK]);
        }
        let thread = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for work in work_rx {
                match work {
                    HashWork::Data(buf, n) => {
                        h.update(&buf[..n]);
                        if free_tx.send(buf).is_err() {
                            return;
                        }
                    }
                    HashWork::Zeros(n) => hash_zeros(&mut h, n),
                    HashWork::Finish => {
                        if digest_tx.send(h.finalize_reset().into()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        BackgroundHasher {
            work: Some(work_tx),
            free: free_rx,
            digests: digest_rx,
            thread: Some(thread),
        }
    }

    fn send(&self, work: HashWork) -> io::Result<()> {
        let stopped = || io::Error::other("the hashing thread stopped");
        self.work
            .as_ref()
            .ok_or_else(stopped)?
            .send(work)
            .map_err(|_| stopped())
    }

    fn update(&self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(super::IO_CHUNK) {
            let mut buf = self
                .free
                .recv()
                .map_err(|_| io::Error::other("the hashing thread stopped"))?;
            buf[..piece.len()].copy_from_slice(piece);
            self.send(HashWork::Data(buf, piece.len()))?;
        }
        Ok(())
    }

    fn finish(&self) -> io::Result<[u8; 32]> {
        self.send(HashWork::Finish)?;
        self.digests
            .recv()
            .map_err(|_| io::Error::other("the hashing thread stopped"))
    }
}

impl Drop for BackgroundHasher {
    fn drop(&mut self) {
        self.work.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a file's bytes are hashed.
enum Digester<'h> {
    /// Structure-only reads: nothing.
    Off,
    Inline(Sha256),
    Background(&'h BackgroundHasher),
}

/// Hashes a file's logical content as the visitor reads it.
struct HashingReader<'a, 'h, R: Read> {
    inner: &'a mut R,
    digester: Digester<'h>,
    segments: Vec<(u64, u64)>,
    /// Index of the segment being read, and bytes read of it.
    seg: usize,
    seg_done: u64,
    /// Logical position hashed so far (holes included).
    logical: u64,
    size: u64,
    data_left: u64,
}

impl<'a, 'h, R: Read> HashingReader<'a, 'h, R> {
    fn new(inner: &'a mut R, meta: &EntryMeta, digester: Digester<'h>) -> Self {
        let is_file = meta.kind == EntryKind::File;
        let segments = meta.sparse.clone().unwrap_or_else(|| vec![(0, meta.size)]);
        let data_left = segments.iter().map(|s| s.1).sum();
        HashingReader {
            inner,
            digester: if is_file { digester } else { Digester::Off },
            segments,
            seg: 0,
            seg_done: 0,
            logical: 0,
            size: meta.size,
            data_left: if is_file { data_left } else { 0 },
        }
    }

    fn hash_to(&mut self, logical: u64) -> io::Result<()> {
        let gap = logical.saturating_sub(self.logical);
        match &mut self.digester {
            Digester::Off => {}
            Digester::Inline(h) => hash_zeros(h, gap),
            Digester::Background(b) if gap > 0 => b.send(HashWork::Zeros(gap))?,
            Digester::Background(_) => {}
        }
        self.logical = self.logical.max(logical);
        Ok(())
    }

    /// Drains what the visitor left, and returns the digest of a file.
    fn finish(mut self, scratch: &mut [u8]) -> Result<Option<[u8; 32]>, ReadError> {
        loop {
            let n = self.read(scratch).map_err(io_error)?;
            if n == 0 {
                break;
            }
        }
        if self.data_left != 0 {
            return Err(ReadError::Truncated(String::new()));
        }
        let size = self.size;
        self.hash_to(size).map_err(ReadError::Io)?;
        match self.digester {
            Digester::Inline(h) => Ok(Some(h.finalize().into())),
            Digester::Background(b) => b.finish().map(Some).map_err(ReadError::Io),
            // Unhashed files still count as files.
            Digester::Off => Ok(None),
        }
    }
}

impl<R: Read> Read for HashingReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.seg < self.segments.len() && self.seg_done == self.segments[self.seg].1 {
            self.seg += 1;
            self.seg_done = 0;
        }
        if self.data_left == 0 || self.seg >= self.segments.len() {
            return Ok(0);
        }
        let (off, len) = self.segments[self.seg];
        if self.seg_done == 0 {
            self.hash_to(off)?;
        }
        let want = ((len - self.seg_done) as usize).min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "entry data ends early",
            ));
        }
        match &mut self.digester {
            Digester::Off => {}
            Digester::Inline(h) => h.update(&buf[..n]),
            Digester::Background(b) => b.update(&buf[..n])?,
        }
        self.seg_done += n as u64;
        self.logical = off + self.seg_done;
        self.data_left -= n as u64;
        Ok(n)
    }
}

/// Compares the SHA256SUMS entry with the lines computed while reading,
/// naming the first file whose digest differs.
fn check_sums<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    mut spooled: File,
    tally: &mut Tally,
) -> Result<(), ReadError> {
    spooled.seek(SeekFrom::Start(0)).map_err(ReadError::Io)?;
    let mut ours = BufReader::new(spooled);
    let mut theirs = BufReader::new(entry);
    let mut a = Vec::new();
    let mut b = Vec::new();
    loop {
        a.clear();
        b.clear();
        let na = ours.read_until(b'\n', &mut a).map_err(ReadError::Io)?;
        let nb = theirs.read_until(b'\n', &mut b).map_err(io_error)?;
        tally.sums_digest.update(&b);
        if na == 0 && nb == 0 {
            return Ok(());
        }
        if a != b {
            let name = |l: &[u8]| {
                l.get(66..)
                    .map(|p| show(p).trim_end().to_string())
                    .unwrap_or_default()
            };
            let what = match (na, nb) {
                (0, _) => format!(
                    "SHA256SUMS lists `{}`, which the bundle does not hold",
                    name(&b)
                ),
                (_, 0) => format!("`{}` is not in SHA256SUMS", name(&a)),
                _ if name(&a) == name(&b) => format!(
                    "content of `{}` does not match its digest (SHA-256 {} in the bundle, {} read)",
                    name(&a),
                    show(b.get(..64).unwrap_or_default()),
                    show(a.get(..64).unwrap_or_default())
                ),
                _ => format!(
                    "SHA256SUMS lists `{}` where the bundle holds `{}`",
                    name(&b),
                    name(&a)
                ),
            };
            return Err(ReadError::Corrupt(what));
        }
    }
}

fn check_trailer(trailer: &Trailer, tally: Tally, header_sha256: &str) -> Result<(), ReadError> {
    let mismatch = |what: &str, want: String, got: String| {
        ReadError::Corrupt(format!("{what} is {got} but the trailer says {want}"))
    };
    if trailer.format != FORMAT {
        return Err(ReadError::Format(trailer.format.clone()));
    }
    if trailer.header_sha256 != header_sha256 {
        return Err(ReadError::Corrupt(
            "the header was altered (its digest does not match the trailer)".into(),
        ));
    }
    if trailer.entries != tally.entries {
        return Err(mismatch(
            "the entry count",
            trailer.entries.to_string(),
            tally.entries.to_string(),
        ));
    }
    if trailer.files != tally.files || trailer.bytes != tally.bytes {
        return Err(mismatch(
            "the file count and bytes",
            format!("{} files, {} bytes", trailer.files, trailer.bytes),
            format!("{} files, {} bytes", tally.files, tally.bytes),
        ));
    }
    let sums = hex(&tally.sums_digest.finalize());
    if trailer.sums_sha256 != sums {
        return Err(ReadError::Corrupt(
            "SHA256SUMS does not match the trailer".into(),
        ));
    }
    if trailer.entries_sha256 != tally.entries_digest.hex() {
        return Err(ReadError::Corrupt(
            "entry metadata (modes, owners, times, links or xattrs) does not match the trailer"
                .into(),
        ));
    }
    let got: std::collections::BTreeMap<String, VolumeSummary> = tally
        .volumes
        .into_iter()
        .map(|(name, (d, mut s))| {
            s.digest = d.hex();
            (name, s)
        })
        .collect();
    if got != trailer.volumes {
        return Err(ReadError::Corrupt(
            "per-volume summaries do not match the trailer".into(),
        ));
    }
    Ok(())
}
