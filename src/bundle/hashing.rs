//! Hashing a file's logical content while the visitor reads it: inline
//! for small files, on a second thread for large ones, holes of sparse
//! files as zeros from a static buffer (never materialized).

use std::borrow::Cow;
use std::io::{self, Read};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::reader::{io_error, ReadError};
use super::{hash_zeros, EntryKind, EntryMeta};

/// Files from this size on are hashed on the background thread.
pub(super) const BACKGROUND_HASH_MIN: u64 = 1 << 20;

/// Hashes large files on a second thread while the reading thread copies
/// them into place: hashing then costs no wall time over the copy (on two
/// cores). Data is handed over in a few recycled buffers, so memory stays
/// constant and the reader waits when the hasher falls behind.
pub(super) struct BackgroundHasher {
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

    pub(super) fn new() -> BackgroundHasher {
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
pub(super) enum Digester<'h> {
    /// Structure-only reads: nothing.
    Off,
    Inline(Sha256),
    Background(&'h BackgroundHasher),
}

/// Hashes a file's logical content as the visitor reads it.
pub(super) struct HashingReader<'a, 'h, R: Read> {
    inner: &'a mut R,
    digester: Digester<'h>,
    /// The sparse map, borrowed (it may hold a million segments).
    segments: Cow<'a, [(u64, u64)]>,
    /// Index of the segment being read, and bytes read of it.
    seg: usize,
    seg_done: u64,
    /// Logical position hashed so far (holes included).
    logical: u64,
    size: u64,
    data_left: u64,
}

impl<'a, 'h, R: Read> HashingReader<'a, 'h, R> {
    pub(super) fn new(inner: &'a mut R, meta: &'a EntryMeta, digester: Digester<'h>) -> Self {
        let is_file = meta.kind == EntryKind::File;
        let segments = match &meta.sparse {
            Some(map) => Cow::Borrowed(map.as_slice()),
            None => Cow::Owned(vec![(0, meta.size)]),
        };
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
    pub(super) fn finish(mut self, scratch: &mut [u8]) -> Result<Option<[u8; 32]>, ReadError> {
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
