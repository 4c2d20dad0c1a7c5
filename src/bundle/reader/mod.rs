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
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::hashing::{BackgroundHasher, Digester, HashingReader, BACKGROUND_HASH_MIN};
use super::limits::{ReadLimits, Refusal, TarGuard, MAX_JSON, ZSTD_WINDOW_LOG_MAX};
use super::tally::{check_sums, check_trailer, Tally};
use super::tar_entry::entry_meta;
use super::{
    classify_in, hex, sums_line, BundleHeader, EntryKind, EntryMeta, HeaderIndex, Place, Trailer,
};
use super::{FORMAT, HEADER_PATH};
use crate::dataroot::containers::MAX_CONTAINER_FILE;
use crate::dataroot::opts::MAX_OPTS_JSON;
use crate::progress::Progress;

mod checks;
use checks::{check_data_claims, check_entry, check_header};

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
    /// The visitor refuses the bundle for the target (import's conflicts,
    /// a delta's rounds), one reason each, before anything is written.
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
}

pub(super) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

pub(super) fn hostile(path: &[u8], reason: impl Into<String>) -> ReadError {
    ReadError::Hostile {
        entry: show(path),
        reason: reason.into(),
    }
}

/// An error of the stream (or of a file's data in it) as the reader
/// reports it: truncation, corruption, or an I/O error.
pub fn io_error(e: io::Error) -> ReadError {
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
    /// Called after `entry`, once the entry's bytes are all read, with a
    /// regular file's SHA-256 of its logical content (`None` for other
    /// kinds, and with `Check::Structure`). Not yet checked against
    /// SHA256SUMS: that comes at its end. Import records it in the base of
    /// a pre-copy round rather than hash every file a second time.
    fn digested(
        &mut self,
        _meta: &EntryMeta,
        _place: Place<'_>,
        _digest: Option<&[u8; 32]>,
    ) -> Result<(), ReadError> {
        Ok(())
    }
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
        let mut decoder = zstd::stream::read::Decoder::new(rest).map_err(ReadError::Io)?;
        // # Security
        // Memory exhaustion: a frame header may ask for a 2 GiB window,
        // which the decoder allocates before the first byte.
        decoder
            .window_log_max(ZSTD_WINDOW_LOG_MAX)
            .map_err(ReadError::Io)?;
        Ok(Box::new(ZstdErrors(decoder)))
    } else {
        Ok(Box::new(rest))
    }
}

/// Says what to do about a frame whose window is over the limit (zstd's
/// own text, "Frame requires too much memory for decoding", does not).
struct ZstdErrors<R: Read>(R);

impl<R: Read> Read for ZstdErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.to_string().contains("too much memory") {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "its zstd frames need a window over {} MiB ({e}): decompress it (`zstd -d`) or recompress without --long/--ultra",
                        (1u64 << ZSTD_WINDOW_LOG_MAX) >> 20
                    ),
                )
            } else {
                e
            }
        })
    }
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
    read_with_limits(input, visitor, progress, check, ReadLimits::default())
}

/// `read` with limits other than the defaults.
pub fn read_with_limits(
    input: Box<dyn Read>,
    visitor: &mut dyn Visitor,
    progress: &dyn Progress,
    check: Check,
    limits: ReadLimits,
) -> Result<(BundleHeader, Trailer), ReadError> {
    let ended = Rc::new(Cell::new(false));
    let refusal = Refusal::default();
    let mut trailer_read = false;
    let input = EofWatch {
        inner: input,
        ended: Rc::clone(&ended),
    };
    let input = Box::new(TarGuard::new(input, Rc::clone(&refusal)));
    let result = read_all(input, visitor, progress, check, limits, &mut trailer_read);
    if let (Err(_), Some((entry, reason))) = (&result, refusal.borrow_mut().take()) {
        // The guard's reason, whatever error tar-rs made of it.
        return Err(hostile(&entry, reason));
    }
    result.map_err(|e| match e {
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
    limits: ReadLimits,
    trailer_read: &mut bool,
) -> Result<(BundleHeader, Trailer), ReadError> {
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries().map_err(io_error)?;
    let (header, header_sha256) = read_header(&mut entries)?;
    check_header(&header)?;
    visitor.header(&header)?;

    let trailer = {
        let mut walk = Walk::new(&header, check, limits)?;
        for entry in entries {
            if progress.cancelled() {
                return Err(ReadError::Visitor(
                    "interrupted: nothing was written".into(),
                ));
            }
            let mut entry = entry.map_err(io_error)?;
            walk.step(&mut entry, visitor, progress)?;
            *trailer_read = walk.trailer.is_some();
        }
        walk.finish(&header_sha256)?
    };
    Ok((header, trailer))
}

/// The first entry: the header, parsed, with the SHA-256 of its bytes.
fn read_header<R: Read>(
    entries: &mut tar::Entries<'_, R>,
) -> Result<(BundleHeader, String), ReadError> {
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
    /// Only the format, to name it before anything else fails to parse;
    /// the other fields are skipped without being built.
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        format: serde_json::Value,
    }
    let probe: Probe = serde_json::from_slice(&header_bytes)
        .map_err(|e| ReadError::Corrupt(format!("header is not JSON: {e}")))?;
    let format = probe.format.as_str().unwrap_or("");
    if format != FORMAT {
        return Err(ReadError::Format(format.to_string()));
    }
    let header: BundleHeader = serde_json::from_slice(&header_bytes)
        .map_err(|e| ReadError::Corrupt(format!("header does not match {FORMAT}: {e}")))?;
    Ok((header, header_sha256))
}

/// The walk over the entries after the header: order, places, limits,
/// digests, and what to compare with the trailer.
struct Walk<'h> {
    index: HeaderIndex<'h>,
    check: Check,
    limits: ReadLimits,
    tally: Tally,
    spool: io::BufWriter<File>,
    previous: Option<Vec<u8>>,
    last_leaf: Option<Vec<u8>>,
    sums_checked: bool,
    trailer: Option<Trailer>,
    scratch: Vec<u8>,
    background: Option<BackgroundHasher>,
    /// Bytes of holes in the sparse files so far.
    holes: u64,
    /// Volumes whose `_data` entry was read (and checked against the
    /// header's claims).
    data_seen: HashSet<&'h str>,
    /// The volume the last entry belonged to, named on the progress.
    volume: Option<&'h str>,
}

impl<'h> Walk<'h> {
    fn new(header: &'h BundleHeader, check: Check, limits: ReadLimits) -> Result<Self, ReadError> {
        // Volumes enter the tally with their first entry, not from the
        // header: a header listing 100,000 volumes and nothing else must
        // not cost their digests' memory (every listed volume must still
        // carry its `_data`, see `finish`).
        let tally = Tally::default();
        Ok(Walk {
            index: HeaderIndex::new(header),
            check,
            limits,
            tally,
            spool: io::BufWriter::new(tempfile::tempfile().map_err(ReadError::Io)?),
            previous: None,
            last_leaf: None,
            sums_checked: false,
            trailer: None,
            scratch: vec![0u8; super::IO_CHUNK],
            background: None,
            holes: 0,
            data_seen: HashSet::new(),
            volume: None,
        })
    }

    fn step<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        visitor: &mut dyn Visitor,
        progress: &dyn Progress,
    ) -> Result<(), ReadError> {
        if self.trailer.is_some() {
            return Err(hostile(&entry.path_bytes(), "entry after the trailer"));
        }
        let meta = entry_meta(entry)?;
        let place =
            classify_in(&meta.path, &self.index).map_err(|e| hostile(&meta.path, e.to_string()))?;
        match place {
            Place::Header => return Err(hostile(&meta.path, "a second header")),
            Place::Sums => return self.sums(entry, &meta),
            Place::Trailer => return self.read_trailer(entry, &meta),
            _ if self.sums_checked => {
                return Err(hostile(&meta.path, "content entry after SHA256SUMS"))
            }
            _ => {}
        }
        self.check_position(&meta)?;
        check_entry(&meta, &place)?;
        self.check_limits(&meta, &place)?;
        if let Place::VolumeData { name, rel: b"" } = place {
            if let Some(volume) = self.index.volume(name) {
                check_data_claims(&meta, volume)?;
                self.data_seen.insert(volume.name.as_str());
            }
        }
        self.name_volume(&place, progress);

        let digest = {
            let digester = match self.check {
                Check::Structure => Digester::Off,
                Check::Content if meta.size >= BACKGROUND_HASH_MIN => {
                    Digester::Background(self.background.get_or_insert_with(BackgroundHasher::new))
                }
                Check::Content => Digester::Inline(Sha256::new()),
            };
            let mut hashing = HashingReader::new(entry, &meta, digester);
            visitor.entry(self.index.header(), &meta, place.clone(), &mut hashing)?;
            hashing.finish(&mut self.scratch)?
        };
        visitor.digested(&meta, place.clone(), digest.as_ref())?;
        progress.advance(meta.size);
        self.count(&meta, &place, digest)?;
        self.previous = Some(meta.path);
        Ok(())
    }

    /// Names the volume on the progress as its first entry comes.
    fn name_volume(&mut self, place: &Place<'_>, progress: &dyn Progress) {
        let name = match place {
            Place::VolumeDir { name }
            | Place::VolumeOpts { name }
            | Place::VolumeData { name, .. } => *name,
            _ => return,
        };
        if self.volume != Some(name) {
            if let Some(v) = self.index.volume(name) {
                self.volume = Some(v.name.as_str());
                progress.begin(&format!("volume {name}"), None);
            }
        }
    }

    fn sums<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        meta: &EntryMeta,
    ) -> Result<(), ReadError> {
        if self.sums_checked {
            return Err(hostile(&meta.path, "a second SHA256SUMS"));
        }
        self.sums_checked = true;
        if self.check == Check::Structure {
            return Ok(());
        }
        let fresh = io::BufWriter::new(tempfile::tempfile().map_err(ReadError::Io)?);
        let spooled = std::mem::replace(&mut self.spool, fresh)
            .into_inner()
            .map_err(|e| ReadError::Io(e.into_error()))?;
        check_sums(entry, spooled, &mut self.tally)
    }

    fn read_trailer<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        meta: &EntryMeta,
    ) -> Result<(), ReadError> {
        if !self.sums_checked {
            return Err(hostile(&meta.path, "trailer before SHA256SUMS"));
        }
        let bytes = read_json_entry(entry)?;
        let t: Trailer = serde_json::from_slice(&bytes)
            .map_err(|e| ReadError::Corrupt(format!("trailer is not valid: {e}")))?;
        self.trailer = Some(t);
        Ok(())
    }

    /// Order and nesting against the entries before.
    fn check_position(&mut self, meta: &EntryMeta) -> Result<(), ReadError> {
        // Order: strictly increasing, so no duplicates and no re-visits.
        if let Some(prev) = &self.previous {
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
        if let Some(leaf) = &self.last_leaf {
            if is_below(&meta.path, leaf) {
                return Err(hostile(
                    &meta.path,
                    format!("lies below `{}`, which is not a directory", show(leaf)),
                ));
            }
        }
        self.last_leaf = (meta.kind != EntryKind::Dir).then(|| meta.path.clone());
        Ok(())
    }

    /// Sizes that cost memory or time, refused before any byte is read.
    fn check_limits(&mut self, meta: &EntryMeta, place: &Place<'_>) -> Result<(), ReadError> {
        // # Security
        // Memory exhaustion: import reads these whole into memory (a 1 GiB
        // config.v2.json was read whole).
        let whole = match place {
            Place::Container {
                rel: rel @ (b"config.v2.json" | b"hostconfig.json"),
                ..
            } => Some((format!("a {}", show(rel)), MAX_CONTAINER_FILE)),
            Place::VolumeOpts { .. } => Some(("an opts.json".to_string(), MAX_OPTS_JSON)),
            _ => None,
        };
        if let Some((file, limit)) = whole.filter(|(_, limit)| meta.size > *limit) {
            return Err(hostile(
                &meta.path,
                format!(
                    "{} bytes is too large for {file} (volmig reads at most {limit} bytes of it)",
                    meta.size
                ),
            ));
        }
        // # Security
        // Hashing without end: a few bytes of sparse map can declare holes
        // of any size, each hashed as zeros (see MAX_SPARSE_HOLES).
        if let Some(map) = &meta.sparse {
            let data: u64 = map.iter().map(|s| s.1).sum();
            self.holes = self.holes.saturating_add(meta.size.saturating_sub(data));
            if self.holes > self.limits.sparse_holes {
                return Err(hostile(
                    &meta.path,
                    format!(
                        "the bundle's sparse files hold {} bytes of holes up to here, more than the {} bytes volmig hashes (SHA-256 over zeros at about 1 GB/s): carry such a file outside the bundle, e.g. with `tar --sparse`",
                        self.holes, self.limits.sparse_holes
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Adds a read entry to the counts and digests.
    fn count(
        &mut self,
        meta: &EntryMeta,
        place: &Place<'_>,
        digest: Option<[u8; 32]>,
    ) -> Result<(), ReadError> {
        let tally = &mut self.tally;
        tally.entries += 1;
        if meta.kind == EntryKind::File && self.check == Check::Structure {
            tally.files += 1;
            tally.bytes += meta.size;
        }
        tally
            .entries_digest
            .update(&meta.describe(&meta.path, digest.as_ref()));
        if let Some(d) = &digest {
            tally.files += 1;
            tally.bytes += meta.size;
            self.spool
                .write_all(&sums_line(d, &meta.path))
                .map_err(ReadError::Io)?;
        }
        let volume = match place {
            Place::VolumeOpts { name }
            | Place::VolumeData { name, .. }
            | Place::VolumeDir { name } => Some(*name),
            _ => None,
        };
        if let Some(name) = volume {
            let (vd, vs) = tally.volumes.entry(name.to_string()).or_default();
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
        Ok(())
    }

    /// After the last entry: the trailer must be there and match.
    fn finish(self, header_sha256: &str) -> Result<Trailer, ReadError> {
        let Some(trailer) = self.trailer else {
            return Err(ReadError::Truncated(": it ends before its trailer".into()));
        };
        // A delta carries a volume's `_data` only when it changed.
        let is_delta = self
            .index
            .header()
            .round
            .as_ref()
            .is_some_and(|r| r.base.is_some());
        if let Some(missing) = self
            .index
            .header()
            .volumes
            .iter()
            .find(|v| !is_delta && !self.data_seen.contains(v.name.as_str()))
        {
            return Err(ReadError::Corrupt(format!(
                "volume `{}` is described by the header but not carried in the bundle",
                missing.name
            )));
        }
        let tally = self.tally;
        if self.check == Check::Content {
            check_trailer(&trailer, tally, header_sha256)?;
        } else if trailer.entries != tally.entries
            || trailer.files != tally.files
            || trailer.bytes != tally.bytes
        {
            return Err(ReadError::Corrupt(
                "the entry counts do not match the trailer".into(),
            ));
        }
        Ok(trailer)
    }
}

fn read_json_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<u8>, ReadError> {
    if entry.size() > MAX_JSON {
        return Err(hostile(
            &entry.path_bytes(),
            format!(
                "{} bytes is too large for a JSON entry (volmig reads at most {MAX_JSON})",
                entry.size()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}
