//! What a bundle may make the reader hold in memory or spend time on, and
//! the raw-header guard that enforces the part tar-rs cannot.
//!
//! # Security
//! tar-rs 0.4 reads a PAX extended header (`x`) and a GNU long name or
//! link (`L`, `K`) whole into a `Vec` before it returns the entry they
//! describe, whatever their size: a 1 GiB PAX record cost 2.6-3.2 GB of
//! RSS, and a 99 KB zstd file inflating to one cost 4.3 GB (import) and
//! 5.4 GB (inspect). An old GNU sparse entry (`S`) makes it collect
//! extension blocks without end. `TarGuard` sits between the stream and
//! tar-rs, parses every 512-byte header as it passes, and fails the read
//! of any such header that is over `MAX_EXTENSION`, before tar-rs has the
//! whole header and can allocate for it. It follows entry boundaries as
//! tar-rs does (the ustar size, or a PAX `size` record of the preceding
//! `x` header, parsed with tar-rs's own rules), so the two never disagree
//! on where a header starts.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

/// Largest PAX extended header, GNU long name or long link. Paths are at
/// most a few KiB and Linux xattr values at most 64 KiB; 1 MiB holds a
/// dozen maximal xattrs on one file.
pub const MAX_EXTENSION: u64 = 1 << 20;

/// Largest `header.json` or `trailer.json`, read whole and parsed. volmig
/// writes about 350 bytes per volume: 8 MiB holds some 24,000 volumes
/// (compact JSON, twice as many), while the bytes, the parsed header and
/// the per-volume digests stay within the 64 MiB the reader is meant to
/// need (measured: a 16 MiB header of 100,000 volumes took 93 MB).
pub const MAX_JSON: u64 = 8 << 20;

/// Largest SHA256SUMS line: a digest, two spaces and a path, which the
/// escaping of `\` and newlines can double (paths are within
/// `MAX_EXTENSION`).
pub const MAX_SUMS_LINE: u64 = 2 * MAX_EXTENSION + 80;

/// zstd window accepted: 2^24 = 16 MiB, what `zstd -19` uses (volmig
/// writes level 3, 2 MiB). A frame may ask for up to 2 GiB (`--long=31`),
/// all of which the decoder would allocate.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Total holes of the sparse files in one bundle: 64 GiB.
///
/// A file's SHA-256 in SHA256SUMS is over its logical content, zeros of
/// the holes included (it must match `sha256sum` after `tar -xf`), and the
/// SHA-256 of a run of zeros has no shortcut: the reader feeds them from
/// a static buffer (no memory), but at 1.4 GB/s here. A few bytes of
/// sparse map can declare a 1 TiB hole (12 minutes of hashing) or an
/// exabyte (never). Export hashed the same zeros to write the bundle, so
/// an honest bundle with this many holes already took as long to make;
/// 64 GiB keeps the worst case under a minute.
pub const MAX_SPARSE_HOLES: u64 = 64 << 30;

/// Limits a caller may raise (e.g. a CLI flag for a bundle known to hold
/// huge sparse disk images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// See `MAX_SPARSE_HOLES`.
    pub sparse_holes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            sparse_holes: MAX_SPARSE_HOLES,
        }
    }
}

/// Why `TarGuard` stopped the stream: the entry (its raw ustar name) and
/// the reason, for `ReadError::Hostile`.
pub type Refusal = Rc<RefCell<Option<(Vec<u8>, String)>>>;

const BLOCK: usize = 512;

enum State {
    /// Collecting a 512-byte header.
    Header { filled: usize },
    /// Inside an entry's data (`left`) and padding (`pad`); an `x`
    /// header's data is kept (at most `MAX_EXTENSION`) for its `size`.
    Data { left: u64, pad: u64, keep: bool },
    /// Past the end-of-archive block, or past a header tar-rs will refuse
    /// itself (bad checksum or size): nothing more reaches an entry.
    Done,
}

/// A reader that refuses oversized extension headers (see the module).
pub struct TarGuard<R: Read> {
    inner: R,
    state: State,
    block: [u8; BLOCK],
    /// Data of the current `x` header, then pending for the next entry.
    pax: Vec<u8>,
    pending_pax: Option<Vec<u8>>,
    refusal: Refusal,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R, refusal: Refusal) -> TarGuard<R> {
        TarGuard {
            inner,
            state: State::Header { filled: 0 },
            block: [0; BLOCK],
            pax: Vec::new(),
            pending_pax: None,
            refusal,
        }
    }

    /// Follows the stream over `bytes`, which are about to be handed on.
    fn follow(&mut self, mut bytes: &[u8]) -> Result<(), (Vec<u8>, String)> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header { filled } => {
                    let n = (BLOCK - *filled).min(bytes.len());
                    self.block[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == BLOCK {
                        self.state = self.on_header()?;
                    }
                }
                State::Data { left, pad, keep } => {
                    let in_data = (*left).min(bytes.len() as u64) as usize;
                    if *keep {
                        self.pax.extend_from_slice(&bytes[..in_data]);
                    }
                    *left -= in_data as u64;
                    bytes = &bytes[in_data..];
                    let in_pad = (*pad).min(bytes.len() as u64) as usize;
                    *pad -= in_pad as u64;
                    bytes = &bytes[in_pad..];
                    if *left == 0 && *pad == 0 {
                        if *keep {
                            self.pending_pax = Some(std::mem::take(&mut self.pax));
                        }
                        self.state = State::Header { filled: 0 };
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a complete header and returns the state after it.
    fn on_header(&mut self) -> Result<State, (Vec<u8>, String)> {
        if self.block.iter().all(|&b| b == 0) {
            return Ok(State::Done);
        }
        let header = tar::Header::from_byte_slice(&self.block);
        let name = header.path_bytes().into_owned();
        let kind = header.entry_type();
        let Ok(mut size) = header.entry_size() else {
            return Ok(State::Done);
        };
        let what = if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            Some("a PAX extended header")
        } else if kind.is_gnu_longname() {
            Some("a GNU long name")
        } else if kind.is_gnu_longlink() {
            Some("a GNU long link name")
        } else {
            None
        };
        if kind.is_gnu_sparse() {
            return Err((
                name,
                "old GNU sparse entries are not part of a bundle (volmig writes GNU sparse 1.0)"
                    .into(),
            ));
        }
        if kind.is_pax_global_extensions() {
            // tar-rs hands a pending `x` to a `g` entry as its own.
            self.pending_pax = None;
        }
        match what {
            Some(what) if size > MAX_EXTENSION => {
                return Err((
                    name,
                    format!(
                        "{what} of {size} bytes, more than the {MAX_EXTENSION} bytes volmig reads into memory"
                    ),
                ));
            }
            Some(_) => {}
            // tar-rs applies the pending PAX `size` to the next entry that
            // is not itself an extension header, and only then drops it.
            None => {
                if let Some(size_record) = self.pending_pax.take().and_then(|p| pax_size(&p)) {
                    size = size_record;
                }
            }
        }
        let keep = kind.is_pax_local_extensions();
        self.pax.clear();
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        Ok(if size == 0 {
            if keep {
                self.pending_pax = Some(Vec::new());
            }
            State::Header { filled: 0 }
        } else {
            State::Data {
                left: size,
                pad,
                keep,
            }
        })
    }
}

/// tar-rs's `pax_extensions_value(.., "size")`: the first `size` record,
/// and nothing at all if a record before it does not parse.
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(refusal) = self.follow(&buf[..n]) {
            let reason = refusal.1.clone();
            *self.refusal.borrow_mut() = Some(refusal);
            self.state = State::Done;
            return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, name: &[u8], size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn read_through(bytes: &[u8], chunk: usize) -> (io::Result<Vec<u8>>, Refusal) {
        let refusal = Refusal::default();
        let mut guard = TarGuard::new(bytes, Rc::clone(&refusal));
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match guard.read(&mut buf) {
                Ok(0) => return (Ok(out), refusal),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (Err(e), refusal),
            }
        }
    }

    #[test]
    fn an_oversized_long_name_is_refused_at_its_header() {
        let mut tar = header(tar::EntryType::GNULongName, b"././@LongLink", 1 << 30);
        tar.extend_from_slice(&[b'a'; 4096]);
        for chunk in [1, 100, 512, 8192] {
            let (out, refusal) = read_through(&tar, chunk);
            assert!(out.is_err());
            let (name, reason) = refusal.borrow().clone().unwrap();
            assert_eq!(name, b"././@LongLink");
            assert!(
                reason.contains("GNU long name of 1073741824 bytes"),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_pax_size_record_moves_the_next_header_like_tar_rs() {
        // An `x` header says the next file is 1024 bytes though its ustar
        // size says 0: the block after those 1024 bytes is a header (here
        // an oversized `x`), the bytes in between are data.
        let record = b"13 size=1024\n";
        let mut tar = header(tar::EntryType::XHeader, b"PaxHeader", record.len() as u64);
        tar.extend_from_slice(record);
        tar.resize(1024, 0);
        tar.extend_from_slice(&header(tar::EntryType::Regular, b"f", 0));
        // This looks like a huge header, but it is file data.
        tar.extend_from_slice(&header(tar::EntryType::XHeader, b"fake", 1 << 40));
        tar.resize(tar.len() + 512, 0);
        tar.extend_from_slice(&header(tar::EntryType::XHeader, b"real", 1 << 40));
        let (out, refusal) = read_through(&tar, 700);
        assert!(out.is_err());
        assert_eq!(refusal.borrow().as_ref().unwrap().0, b"real");
    }

    #[test]
    fn ordinary_entries_pass_untouched() {
        let mut tar = header(tar::EntryType::Regular, b"big", 5 << 20);
        tar.resize(tar.len() + (5 << 20), 7);
        tar.extend_from_slice(&header(tar::EntryType::XHeader, b"x", 100));
        tar.resize(tar.len() + 512, b'1');
        tar.resize(tar.len() + 1024, 0);
        let (out, refusal) = read_through(&tar, 65536);
        assert_eq!(out.unwrap(), tar);
        assert!(refusal.borrow().is_none());
    }
}
