//! A changed large file in a delta: read once, chunk by chunk, each chunk
//! hashed and compared with the base's digest of the same chunk; the
//! changed ones are kept (in a spool file, not in memory) to be written
//! as the patch's data. What is sent is what was hashed: the spool holds
//! the very bytes each digest was taken of.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::delta::{chunk_len, to_ranges};
use super::large::read_exact_at;
use super::walk::{read_err, Large};
use super::writer::WriteError;
use super::EntryMeta;
use crate::fileattrs::Stamp;
use crate::manifest::{self, chunks::zero_chunk, Chunked, CHUNK, MAX_CHUNKS};
use crate::progress::Progress;

/// Whether a file can go as a patch onto its base: both longer than one
/// chunk and at most `MAX_CHUNKS` chunks, the base's chunk digests all
/// recorded.
pub(super) fn patchable(meta: &EntryMeta, base: &manifest::Entry) -> bool {
    base.kind == super::EntryKind::File
        && meta.kind == super::EntryKind::File
        && meta.size > CHUNK
        && base.size > CHUNK
        && meta.size.div_ceil(CHUNK) <= MAX_CHUNKS
        && base.chunks.len() as u64 == base.size.div_ceil(CHUNK)
}

/// What reading a changed file against its base found.
pub(super) struct ChangedChunks {
    /// The file's content digest and chunk digests now.
    pub chunked: Chunked,
    /// Chunks whose bytes differ, in order (their bytes are in `spools`).
    pub data: Vec<(u64, u64)>,
    /// Chunks that are zeros only now and were not before.
    pub zero: Vec<(u64, u64)>,
    /// The changed chunks' bytes, in order, in one file per part read.
    pub spools: Vec<(File, u64)>,
    pub spool_len: u64,
    /// It changed while it was read (with `tolerant`: carried as read).
    pub changed_while_read: bool,
}

/// Files of at least this many chunks (8 MiB) are read by two threads,
/// each its half: reading and hashing chunks keeps one core busy.
const SPLIT_AT: u64 = (8 << 20) / CHUNK;

/// Reads `large` chunk by chunk against `base`'s chunk digests. A chunk
/// wholly in a hole (by `meta.sparse`) is not read. The file's stamp is
/// checked after the last chunk: one that changed meanwhile fails the
/// export, naming it.
pub(super) fn changed_chunks(
    large: &Large,
    meta: &EntryMeta,
    base: &manifest::Entry,
    source: &Path,
    tolerant: bool,
    progress: &dyn Progress,
) -> Result<ChangedChunks, WriteError> {
    let count = meta.size.div_ceil(CHUNK);
    let job = Job {
        large,
        meta,
        base,
        source,
        tolerant,
        progress,
    };
    let parts: Vec<Part> = if count >= SPLIT_AT {
        let half = count / 2;
        std::thread::scope(|scope| {
            let second = scope.spawn(|| job.scan(half..count));
            let first = job.scan(0..half);
            let second = second
                .join()
                .map_err(|_| WriteError::Write(io::Error::other("a reading thread failed")))?;
            Ok::<_, WriteError>(vec![first?, second?])
        })?
    } else {
        vec![job.scan(0..count)?]
    };
    let after = Stamp::now(&large.file).map_err(read_err(source))?;
    let moved = after.change_since(&large.stamp);
    if let (Some(what), false) = (&moved, tolerant) {
        return Err(WriteError::Changed {
            path: source.to_path_buf(),
            detail: what.clone(),
        });
    }
    let mut outer = Sha256::new();
    let mut digests = Vec::new();
    let (mut data, mut zero, mut spools) = (Vec::new(), Vec::new(), Vec::new());
    let mut shrank = false;
    let mut spool_len = 0;
    for part in parts {
        for d in &part.digests {
            outer.update(d.as_ref().unwrap_or(zero_chunk()));
        }
        digests.extend(part.digests);
        data.extend(part.data);
        zero.extend(part.zero);
        spool_len += part.spool_len;
        spools.push((part.spool, part.spool_len));
        shrank |= part.shrank;
    }
    Ok(ChangedChunks {
        chunked: Chunked {
            content: outer.finalize().into(),
            chunks: digests,
            recorded: true,
        },
        data: to_ranges(data),
        zero: to_ranges(zero),
        spools,
        spool_len,
        changed_while_read: shrank || moved.is_some(),
    })
}

/// What one thread reads of a changed file.
struct Job<'a> {
    large: &'a Large,
    meta: &'a EntryMeta,
    base: &'a manifest::Entry,
    source: &'a Path,
    tolerant: bool,
    progress: &'a dyn Progress,
}

/// One part's findings (see `ChangedChunks`).
struct Part {
    digests: Vec<Option<[u8; 32]>>,
    data: Vec<u64>,
    zero: Vec<u64>,
    spool: File,
    spool_len: u64,
    shrank: bool,
}

impl Job<'_> {
    fn scan(&self, chunks: std::ops::Range<u64>) -> Result<Part, WriteError> {
        let (size, source) = (self.meta.size, self.source);
        let mut part = Part {
            digests: Vec::new(),
            data: Vec::new(),
            zero: Vec::new(),
            spool: tempfile::tempfile().map_err(WriteError::Write)?,
            spool_len: 0,
            shrank: false,
        };
        let mut buf = vec![0u8; CHUNK as usize];
        for i in chunks {
            if self.progress.cancelled() {
                return Err(WriteError::Cancelled);
            }
            let (off, len) = (i * CHUNK, chunk_len(i, size));
            let hole = self.meta.sparse.as_ref().is_some_and(|segments| {
                !segments
                    .iter()
                    .any(|&(s, l)| l > 0 && s < off + len && s + l > off)
            });
            let (digest, zeros) = if hole && len == CHUNK {
                (None, true)
            } else {
                let chunk = &mut buf[..len as usize];
                if hole {
                    chunk.fill(0);
                } else if !read_exact_at(&self.large.file, chunk, off).map_err(read_err(source))? {
                    if !self.tolerant {
                        return Err(WriteError::Changed {
                            path: source.to_path_buf(),
                            detail: format!("it shrank below {size} bytes while it was read"),
                        });
                    }
                    // A pre-copy round: read again what is there, zeros past it.
                    chunk.fill(0);
                    let _ = self.large.file.read_at(chunk, off);
                    part.shrank = true;
                }
                (Some(<[u8; 32]>::from(Sha256::digest(&*chunk))), hole)
            };
            let effective = digest.as_ref().unwrap_or(zero_chunk());
            let before = self
                .base
                .chunks
                .get(i as usize)
                .map(|b| b.as_ref().unwrap_or(zero_chunk()));
            if before != Some(effective) {
                if zeros {
                    part.zero.push(i);
                } else {
                    part.spool
                        .write_all(&buf[..len as usize])
                        .map_err(WriteError::Write)?;
                    part.spool_len += len;
                    part.data.push(i);
                }
            }
            part.digests.push(digest);
            self.progress.advance(len);
        }
        Ok(part)
    }
}

/// Copies the spools to `out` in order, in chunks, hashing what it
/// copies; returns the SHA-256 of the bytes written.
pub(super) fn send_spool(
    spools: &[(File, u64)],
    out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<[u8; 32], WriteError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK as usize];
    for (spool, len) in spools {
        let mut done = 0u64;
        while done < *len {
            let n = (len - done).min(CHUNK) as usize;
            if !read_exact_at(spool, &mut buf[..n], done).map_err(WriteError::Write)? {
                return Err(WriteError::Write(io::Error::other(
                    "the patch spool shrank",
                )));
            }
            h.update(&buf[..n]);
            out(&buf[..n]).map_err(WriteError::Write)?;
            done += n as u64;
        }
    }
    Ok(h.finalize().into())
}
