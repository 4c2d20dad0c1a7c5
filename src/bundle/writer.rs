//! Writes a bundle in one pass with constant memory.
//!
//! Content is hashed off the writing thread: large files go to the output
//! with `sendfile` (no copy through user space when the output is a pipe or
//! a file) while a pool of threads hashes them with `pread`, so hashing
//! costs no wall time over what tar would take. Small files are read once,
//! hashed inline and buffered. SHA256SUMS lines are produced in entry order
//! and spooled to a temporary file, so memory does not grow with the
//! number of files.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use sha2::{Digest, Sha256};

use super::{hash_zeros, pax_time, FORMAT, HEADER_PATH, SUMS_PATH, TRAILER_PATH};
use super::{
    hex, sums_line, BundleHeader, EntryKind, EntryMeta, RunningDigest, Trailer, VolumeSummary,
};
use crate::fileattrs::{self, FileAttrs, FileKind};
use crate::progress::Progress;

/// Files up to this size are read, hashed and buffered inline.
const SMALL_FILE: u64 = 256 * 1024;
/// Large files hashed at once: bounds memory and open descriptors.
const MAX_IN_FLIGHT: usize = 8;
const CHUNK: usize = 1 << 20;
/// Read size of the hashing threads: it stays in L2 between the copy out of
/// the page cache and SHA-256 (1 MiB buffers made pread cost 3x).
const HASH_CHUNK: usize = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("`{path}` changed while it was exported ({detail}): stop the container first, or export again")]
    Changed { path: PathBuf, detail: String },
    #[error("cannot write the bundle: {0}")]
    Write(#[source] io::Error),
    #[error("interrupted")]
    Cancelled,
    #[error("`{path}`: {detail}")]
    Unsupported { path: PathBuf, detail: String },
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The output: a file (or a duplicate of stdout), raw or zstd-compressed.
enum Sink {
    Raw(BufWriter<File>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Raw(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Raw(w) => w.write_all(buf),
            Sink::Zstd(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Raw(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

impl Sink {
    /// Copies `len` bytes of `file` from `offset`, through the kernel when
    /// the output allows it. Returns how many bytes the file still had.
    fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        scratch: &mut Vec<u8>,
    ) -> io::Result<u64> {
        if let Sink::Raw(w) = self {
            w.flush()?;
            let out = w.get_ref();
            let mut off = offset as i64;
            let end = offset + len;
            let mut sent = 0u64;
            while (off as u64) < end {
                let want = ((end - off as u64) as usize).min(1 << 30);
                match nix::sys::sendfile::sendfile64(out, file, Some(&mut off), want) {
                    Ok(0) => return Ok(sent),
                    Ok(n) => sent += n as u64,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) if sent == 0 => {
                        break
                    }
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
            if sent == len {
                return Ok(sent);
            }
            if sent > 0 {
                return Ok(sent);
            }
        }
        // Compressed output, or an output sendfile does not take.
        scratch.resize(CHUNK, 0);
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(CHUNK);
            let n = file.read_at(&mut scratch[..want], offset + done)?;
            if n == 0 {
                break;
            }
            self.write_all(&scratch[..n])?;
            done += n as u64;
        }
        Ok(done)
    }

    fn finish(self) -> io::Result<File> {
        let w = match self {
            Sink::Raw(w) => w,
            Sink::Zstd(z) => z.finish()?,
        };
        w.into_inner().map_err(|e| e.into_error())
    }
}

/// A file to hash off-thread.
struct HashJob {
    seq: u64,
    file: File,
    size: u64,
    segments: Option<Vec<(u64, u64)>>,
}

struct HashPool {
    jobs: Option<SyncSender<HashJob>>,
    results: Receiver<(u64, io::Result<[u8; 32]>)>,
    workers: Vec<JoinHandle<()>>,
}

impl HashPool {
    fn new() -> HashPool {
        let threads = thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4);
        let (job_tx, job_rx) = mpsc::sync_channel::<HashJob>(MAX_IN_FLIGHT);
        let job_rx = Arc::new(std::sync::Mutex::new(job_rx));
        let (res_tx, res_rx) = mpsc::channel();
        let workers = (0..threads)
            .map(|_| {
                let job_rx = Arc::clone(&job_rx);
                let res_tx = res_tx.clone();
                thread::spawn(move || {
                    let mut buf = vec![0u8; HASH_CHUNK];
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let digest = hash_file(&job, &mut buf);
                        if res_tx.send((job.seq, digest)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        HashPool {
            jobs: Some(job_tx),
            results: res_rx,
            workers,
        }
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// SHA-256 of a file's logical content (holes read as zeros), by `pread`.
fn hash_file(job: &HashJob, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let whole = [(0u64, job.size)];
    let segments: &[(u64, u64)] = job.segments.as_deref().unwrap_or(&whole);
    let mut pos = 0u64;
    for &(off, len) in segments {
        hash_zeros(&mut h, off - pos);
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = job.file.read_at(&mut buf[..want], off + done)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
            }
            h.update(&buf[..n]);
            done += n as u64;
        }
        pos = off + len;
    }
    hash_zeros(&mut h, job.size - pos);
    Ok(h.finalize().into())
}

/// An entry written whose description waits for its digest.
struct Pending {
    seq: u64,
    meta: EntryMeta,
    volume: Option<Arc<str>>,
    /// Offset of the volume-relative path in `meta.path`.
    rel_start: usize,
    source: PathBuf,
    digest: Option<[u8; 32]>,
    needs_digest: bool,
    /// The description after the path, when it was prepared ahead.
    tail: Option<Vec<u8>>,
}

#[derive(Default)]
struct VolumeTally {
    digest: RunningDigest,
    entries: u64,
    files: u64,
    bytes: u64,
}

/// Writes one bundle. Call `add_*` in bundle order, then `finish`.
pub struct BundleWriter<'p> {
    sink: Sink,
    pool: HashPool,
    pending: VecDeque<Pending>,
    next_seq: u64,
    in_flight: usize,
    sums: BufWriter<File>,
    sums_digest: Sha256,
    entries_digest: RunningDigest,
    header_sha256: String,
    volumes: BTreeMap<Arc<str>, VolumeTally>,
    entries: u64,
    files: u64,
    bytes: u64,
    scratch: Vec<u8>,
    progress: &'p dyn Progress,
    /// Things not carried (sockets), for the caller to report.
    pub skipped: Vec<String>,
}

impl<'p> BundleWriter<'p> {
    /// Starts a bundle on `out` and writes its header entry.
    pub fn new(
        out: File,
        compression: Compression,
        header: &BundleHeader,
        progress: &'p dyn Progress,
    ) -> Result<Self, WriteError> {
        let buffered = BufWriter::with_capacity(CHUNK, out);
        let sink = match compression {
            Compression::None => Sink::Raw(buffered),
            Compression::Zstd => {
                let mut enc =
                    zstd::stream::write::Encoder::new(buffered, 3).map_err(WriteError::Write)?;
                // Hashing and tar writing keep one core busy; give zstd the other.
                let _ = enc.multithread(1);
                Sink::Zstd(enc)
            }
        };
        let header_json = serde_json::to_vec_pretty(header)
            .map_err(|e| WriteError::Write(io::Error::other(e)))?;
        let mut writer = BundleWriter {
            sink,
            pool: HashPool::new(),
            pending: VecDeque::new(),
            next_seq: 0,
            in_flight: 0,
            sums: BufWriter::new(tempfile::tempfile().map_err(WriteError::Write)?),
            sums_digest: Sha256::new(),
            entries_digest: RunningDigest::default(),
            header_sha256: hex(&Sha256::digest(&header_json)),
            volumes: BTreeMap::new(),
            entries: 0,
            files: 0,
            bytes: 0,
            scratch: Vec::new(),
            progress,
            skipped: Vec::new(),
        };
        writer
            .write_plain(HEADER_PATH.as_bytes(), &header_json)
            .map_err(WriteError::Write)?;
        Ok(writer)
    }

    /// Adds a file of the source (config.v2.json, opts.json) under `path`.
    pub fn add_file(
        &mut self,
        path: &[u8],
        source: &Path,
        volume: Option<&str>,
    ) -> Result<(), WriteError> {
        let rel_start = volume.map_or(0, |v| "volumes/".len() + v.len() + 1);
        let is_file = std::fs::symlink_metadata(source).is_ok_and(|m| m.is_file());
        match read_entry(path.to_vec(), source, is_file)? {
            Source::Entry(walked) => self.add_walked(*walked, volume, rel_start),
            Source::Skipped(why) => {
                self.skipped.push(why);
                Ok(())
            }
        }
    }

    /// Adds the tree at `root` under bundle path `prefix`, depth-first in
    /// byte order of names, never following symlinks.
    ///
    /// For many small files the per-file system calls (open, fstat,
    /// xattrs, read) are the whole cost, so they run on `READERS` threads:
    /// a lister walks the tree and hands out numbered batches of paths, the
    /// readers open, read, hash and format each entry, and this thread
    /// writes the batches back in order. Tokens bound the batches in
    /// flight, so memory stays bounded whatever the tree.
    pub fn add_tree(
        &mut self,
        prefix: &[u8],
        root: &Path,
        volume: Option<&str>,
    ) -> Result<(), WriteError> {
        let rel_start = volume.map_or(0, |v| "volumes/".len() + v.len() + 1);
        std::thread::scope(|scope| {
            let (token_tx, token_rx) = mpsc::sync_channel::<()>(BATCHES_AHEAD);
            for _ in 0..BATCHES_AHEAD {
                let _ = token_tx.send(());
            }
            let (job_tx, job_rx) = mpsc::sync_channel::<Job>(READERS);
            let job_rx = Arc::new(std::sync::Mutex::new(job_rx));
            let (done_tx, done_rx) = mpsc::channel::<(u64, Batch)>();
            scope.spawn(move || list_tree(prefix, root, &token_rx, &job_tx));
            for _ in 0..READERS {
                let job_rx = Arc::clone(&job_rx);
                let done_tx = done_tx.clone();
                scope.spawn(move || read_batches(&job_rx, &done_tx));
            }
            // The readers hold the only handles: when they stop, the lister
            // sees the job channel close.
            drop(job_rx);
            drop(done_tx);
            let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
            let mut waiting: BTreeMap<u64, Batch> = BTreeMap::new();
            let mut next = 0u64;
            for (seq, batch) in done_rx {
                waiting.insert(seq, batch);
                while let Some(batch) = waiting.remove(&next) {
                    next += 1;
                    for item in batch {
                        match item? {
                            Source::Entry(walked) => {
                                let walked = keep_hardlinks(*walked, &mut links)?;
                                self.add_walked(walked, volume, rel_start)?;
                            }
                            Source::Skipped(why) => self.skipped.push(why),
                        }
                    }
                    // One batch written: the lister may start another.
                    let _ = token_tx.send(());
                }
            }
            // Dropping the channels (on an error above, too) stops the others.
            Ok(())
        })
    }

    fn add_walked(
        &mut self,
        walked: Walked,
        volume: Option<&str>,
        rel_start: usize,
    ) -> Result<(), WriteError> {
        if self.progress.cancelled() {
            return Err(WriteError::Cancelled);
        }
        let Walked {
            meta,
            source,
            file,
            small,
            prepared,
            ..
        } = walked;
        let volume: Option<Arc<str>> = volume.map(|v| match self.volumes.get_key_value(v) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(v),
        });
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut digest = None;
        let mut tail = None;
        match (prepared, small, &file) {
            (Some(prep), small, _) => {
                self.sink
                    .write_all(&prep.header)
                    .map_err(WriteError::Write)?;
                if let Some((content, sha)) = small {
                    self.sink.write_all(&content).map_err(WriteError::Write)?;
                    pad(&mut self.sink, meta.size).map_err(WriteError::Write)?;
                    self.progress.advance(meta.size);
                    digest = Some(sha);
                }
                tail = Some(prep.tail);
            }
            (None, _, Some(file)) => self.write_file(&meta, file, &source, seq)?,
            (None, _, None) => {
                return Err(WriteError::Changed {
                    path: source,
                    detail: "it could not be opened as a file".into(),
                })
            }
        }
        if meta.kind == EntryKind::File {
            self.files += 1;
            self.bytes += meta.size;
        }
        self.entries += 1;
        self.pending.push_back(Pending {
            seq,
            needs_digest: meta.kind == EntryKind::File,
            meta,
            volume,
            rel_start,
            source,
            digest,
            tail,
        });
        self.collect(false)?;
        Ok(())
    }

    /// A large or sparse file: sent by the kernel, hashed by the pool.
    fn write_file(
        &mut self,
        meta: &EntryMeta,
        file: &File,
        source: &Path,
        seq: u64,
    ) -> Result<(), WriteError> {
        let changed = |detail: String| WriteError::Changed {
            path: source.to_path_buf(),
            detail,
        };
        if let Some(segments) = &meta.sparse {
            // GNU sparse 1.0: a decimal map, padded to a block, then the data.
            // GNU tar sizes the extracted file by the end of its last
            // segment, so a file that ends in a hole gets an empty segment
            // at its end, as GNU tar itself writes (without it `tar -x`
            // truncates the file to its last data byte).
            let end = segments.last().map_or(0, |&(off, len)| off + len);
            let terminator = (end < meta.size).then_some((meta.size, 0));
            let map_segments: Vec<(u64, u64)> =
                segments.iter().copied().chain(terminator).collect();
            let mut map = format!("{}\n", map_segments.len());
            for (off, len) in &map_segments {
                map.push_str(&format!("{off}\n{len}\n"));
            }
            let mut map = map.into_bytes();
            map.resize(map.len().div_ceil(512) * 512, 0);
            let data_len: u64 = segments.iter().map(|s| s.1).sum();
            let real = meta.size.to_string();
            let name = meta.path.clone();
            let pax = vec![
                ("GNU.sparse.major".to_string(), b"1".to_vec()),
                ("GNU.sparse.minor".to_string(), b"0".to_vec()),
                ("GNU.sparse.name".to_string(), name),
                ("GNU.sparse.realsize".to_string(), real.into_bytes()),
            ];
            let mut shown = meta.clone();
            shown.path = sparse_alias(&meta.path);
            write_tar_header(&mut self.sink, &shown, map.len() as u64 + data_len, pax)
                .map_err(|e| header_error(e, source))?;
            self.sink.write_all(&map).map_err(WriteError::Write)?;
            for &(off, len) in segments {
                let got = self
                    .sink
                    .send_file(file, off, len, &mut self.scratch)
                    .map_err(WriteError::Write)?;
                if got != len {
                    return Err(changed(format!(
                        "a data segment shrank from {len} to {got} bytes"
                    )));
                }
            }
            pad(&mut self.sink, data_len).map_err(WriteError::Write)?;
            self.progress.advance(data_len);
            return self.submit(seq, file, meta);
        }
        write_tar_header(&mut self.sink, meta, meta.size, Vec::new())
            .map_err(|e| header_error(e, source))?;
        let got = self
            .sink
            .send_file(file, 0, meta.size, &mut self.scratch)
            .map_err(WriteError::Write)?;
        if got != meta.size {
            return Err(changed(format!(
                "size went from {} to {got} bytes",
                meta.size
            )));
        }
        pad(&mut self.sink, meta.size).map_err(WriteError::Write)?;
        self.progress.advance(meta.size);
        self.submit(seq, file, meta)
    }

    fn submit(&mut self, seq: u64, file: &File, meta: &EntryMeta) -> Result<(), WriteError> {
        while self.in_flight >= MAX_IN_FLIGHT {
            self.collect(true)?;
        }
        let job = HashJob {
            seq,
            file: file.try_clone().map_err(WriteError::Write)?,
            size: meta.size,
            segments: meta.sparse.clone(),
        };
        let sender = self
            .pool
            .jobs
            .as_ref()
            .ok_or_else(|| WriteError::Write(io::Error::other("hash pool stopped")))?;
        sender
            .send(job)
            .map_err(|_| WriteError::Write(io::Error::other("hash pool stopped")))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Takes finished digests (waiting for one if `block`) and flushes the
    /// descriptions of every entry whose predecessors are all complete.
    fn collect(&mut self, block: bool) -> Result<(), WriteError> {
        let mut wait = block;
        loop {
            let result = if wait {
                wait = false;
                match self.pool.results.recv() {
                    Ok(r) => r,
                    Err(_) => return Err(WriteError::Write(io::Error::other("hash pool stopped"))),
                }
            } else {
                match self.pool.results.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            let (seq, digest) = result;
            self.in_flight -= 1;
            let first = self.pending.front().map_or(seq, |p| p.seq);
            let Some(entry) = self.pending.get_mut((seq - first) as usize) else {
                continue;
            };
            match digest {
                Ok(d) => entry.digest = Some(d),
                Err(e) => {
                    return Err(WriteError::Changed {
                        path: entry.source.clone(),
                        detail: e.to_string(),
                    })
                }
            }
        }
        while self
            .pending
            .front()
            .is_some_and(|p| !p.needs_digest || p.digest.is_some())
        {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.describe(p).map_err(WriteError::Write)?;
        }
        Ok(())
    }

    fn describe(&mut self, p: Pending) -> io::Result<()> {
        let digest = p.digest.as_ref();
        let tail = match p.tail {
            Some(t) => t,
            None => p.meta.describe_tail(digest),
        };
        let kind = p.meta.kind;
        self.entries_digest
            .update_description(kind, &p.meta.path, &tail);
        if let Some(d) = digest {
            let line = sums_line(d, &p.meta.path);
            self.sums_digest.update(&line);
            self.sums.write_all(&line)?;
        }
        if let Some(v) = p.volume {
            let tally = self.volumes.entry(v).or_default();
            let rel = &p.meta.path[p.rel_start.min(p.meta.path.len())..];
            tally.digest.update_description(kind, rel, &tail);
            tally.entries += 1;
            if kind == EntryKind::File {
                tally.files += 1;
                tally.bytes += p.meta.size;
            }
        }
        Ok(())
    }

    /// Registers a volume with no entries yet, so it gets a summary.
    pub fn declare_volume(&mut self, name: &str) {
        self.volumes.entry(Arc::from(name)).or_default();
    }

    fn write_plain(&mut self, path: &[u8], data: &[u8]) -> io::Result<()> {
        let meta = EntryMeta {
            path: path.to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: data.len() as u64,
            link: None,
            rdev_major: 0,
            rdev_minor: 0,
            xattrs: Vec::new(),
            sparse: None,
        };
        write_tar_header(&mut self.sink, &meta, data.len() as u64, Vec::new())?;
        self.sink.write_all(data)?;
        pad(&mut self.sink, data.len() as u64)
    }

    /// Waits for every digest, writes SHA256SUMS and the trailer, ends the
    /// tar and flushes. Returns the trailer and the output file.
    pub fn finish(mut self) -> Result<(Trailer, File), WriteError> {
        while !self.pending.is_empty() {
            let blocked = self
                .pending
                .front()
                .is_some_and(|p| p.needs_digest && p.digest.is_none());
            self.collect(blocked)?;
        }
        self.sums.flush().map_err(WriteError::Write)?;
        let mut sums = self.sums.get_ref().try_clone().map_err(WriteError::Write)?;
        let sums_len = sums.seek(SeekFrom::End(0)).map_err(WriteError::Write)?;
        let sums_meta = EntryMeta {
            path: SUMS_PATH.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: sums_len,
            link: None,
            rdev_major: 0,
            rdev_minor: 0,
            xattrs: Vec::new(),
            sparse: None,
        };
        write_tar_header(&mut self.sink, &sums_meta, sums_len, Vec::new())
            .map_err(WriteError::Write)?;
        let got = self
            .sink
            .send_file(&sums, 0, sums_len, &mut self.scratch)
            .map_err(WriteError::Write)?;
        if got != sums_len {
            return Err(WriteError::Write(io::Error::other(
                "SHA256SUMS spool shrank",
            )));
        }
        pad(&mut self.sink, sums_len).map_err(WriteError::Write)?;
        let trailer = Trailer {
            format: FORMAT.into(),
            entries: self.entries,
            files: self.files,
            bytes: self.bytes,
            header_sha256: self.header_sha256.clone(),
            sums_sha256: hex(&self.sums_digest.clone().finalize()),
            entries_sha256: self.entries_digest.clone().hex(),
            volumes: std::mem::take(&mut self.volumes)
                .into_iter()
                .map(|(name, t)| {
                    (
                        name.to_string(),
                        VolumeSummary {
                            entries: t.entries,
                            files: t.files,
                            bytes: t.bytes,
                            digest: t.digest.hex(),
                        },
                    )
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&trailer)
            .map_err(|e| WriteError::Write(io::Error::other(e)))?;
        self.write_plain(TRAILER_PATH.as_bytes(), &json)
            .map_err(WriteError::Write)?;
        self.sink
            .write_all(&[0u8; 1024])
            .map_err(WriteError::Write)?;
        let mut out = self.sink.finish().map_err(WriteError::Write)?;
        out.flush().map_err(WriteError::Write)?;
        drop(self.pool);
        Ok((trailer, out))
    }
}

/// Threads reading entries for `add_tree`.
const READERS: usize = 2;
/// Batches in flight, and their size: at most `BATCHES_AHEAD *
/// BATCH_ENTRIES` small files (each <= SMALL_FILE) are in memory.
const BATCHES_AHEAD: usize = 8;
const BATCH_ENTRIES: usize = 64;

type Batch = Vec<Result<Source, WriteError>>;

/// What the walker read and prepared for one entry.
struct Walked {
    meta: EntryMeta,
    source: PathBuf,
    /// (device, inode) of a non-directory with several names.
    identity: Option<(u64, u64)>,
    /// A large or sparse file's open handle: sent and hashed from it.
    file: Option<File>,
    /// A small file's content and its SHA-256.
    small: Option<(Vec<u8>, [u8; 32])>,
    /// Everything but the data, ready to write, when no digest is pending.
    prepared: Option<Prepared>,
}

struct Prepared {
    /// The tar header, preceded by its PAX header when one is needed.
    header: Vec<u8>,
    /// `EntryMeta::describe_tail` with the digest.
    tail: Vec<u8>,
}

enum Source {
    Entry(Box<Walked>),
    /// Not carried, with the reason for the user.
    Skipped(String),
}

/// A numbered batch of paths to read: (bundle path, source path, whether
/// the directory listing says it is a regular file).
type Job = (u64, Vec<Result<(Vec<u8>, PathBuf, bool), WriteError>>);

/// Lists `root` in bundle order, in numbered batches, taking a token per
/// batch; stops when the writer hangs up or at the first error.
fn list_tree(prefix: &[u8], root: &Path, tokens: &Receiver<()>, jobs: &SyncSender<Job>) {
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        // Not even the root: a `_data` that is a symlink is carried as
        // the symlink, never as what it points to.
        .follow_root_links(false)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()));
    let root_len = root.as_os_str().len();
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(BATCH_ENTRIES);
    let send = |batch: Vec<_>, seq: &mut u64| -> bool {
        if tokens.recv().is_err() || jobs.send((*seq, batch)).is_err() {
            return false;
        }
        *seq += 1;
        true
    };
    for item in walk {
        let item = item
            .map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                WriteError::Read {
                    path,
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("filesystem loop")),
                }
            })
            .map(|item| {
                // walkdir joins names onto `root`: the rest is the relative path.
                let full = item.path().as_os_str().as_bytes();
                let rel = full.get(root_len + 1..).unwrap_or_default();
                let mut path = Vec::with_capacity(prefix.len() + 1 + rel.len());
                path.extend_from_slice(prefix);
                if !rel.is_empty() {
                    path.push(b'/');
                    path.extend_from_slice(rel);
                }
                let is_file = item.file_type().is_file();
                (path, item.into_path(), is_file)
            });
        let failed = item.is_err();
        batch.push(item);
        if failed || batch.len() >= BATCH_ENTRIES {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ENTRIES));
            if !send(full, &mut seq) || failed {
                return;
            }
        }
    }
    if !batch.is_empty() {
        send(batch, &mut seq);
    }
}

/// A reader thread: reads every entry of each batch it takes.
fn read_batches(jobs: &std::sync::Mutex<Receiver<Job>>, done: &mpsc::Sender<(u64, Batch)>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, items)) = job else { return };
        let batch: Batch = items
            .into_iter()
            .map(|item| item.and_then(|(path, source, is_file)| read_entry(path, &source, is_file)))
            .collect();
        if done.send((seq, batch)).is_err() {
            return;
        }
    }
}

/// Keeps hardlinks as links: the first name of an inode (in bundle order)
/// carries it, later names become link entries to it. Any non-directory
/// can have several names (a hardlinked symlink, fifo or device node too),
/// as GNU tar keeps them.
fn keep_hardlinks(
    mut walked: Walked,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<Walked, WriteError> {
    let Some(identity) = walked.identity else {
        return Ok(walked);
    };
    let Some(first) = links.get(&identity) else {
        links.insert(identity, walked.meta.path.clone());
        return Ok(walked);
    };
    let meta = &mut walked.meta;
    meta.kind = EntryKind::Hardlink;
    meta.link = Some(first.clone());
    meta.size = 0;
    meta.sparse = None;
    walked.file = None;
    walked.small = None;
    let mut header = Vec::with_capacity(1024);
    write_tar_header(&mut header, meta, 0, Vec::new())
        .map_err(|e| header_error(e, &walked.source))?;
    let tail = meta.describe_tail(None);
    walked.prepared = Some(Prepared { header, tail });
    Ok(walked)
}

/// Reads one entry of the source and prepares what can be prepared. A
/// regular file is opened once (`O_NOFOLLOW`, so a file swapped for a
/// symlink is never followed; `O_NONBLOCK`, so one swapped for a fifo
/// never blocks) and everything else comes from that descriptor.
fn read_entry(path: Vec<u8>, source: &Path, is_file: bool) -> Result<Source, WriteError> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = if is_file {
        File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(source)
            .ok()
    } else {
        None
    };
    let (attrs, blocks, file) = match opened {
        Some(f) => {
            let (attrs, blocks) = FileAttrs::read_open(&f).map_err(read_err(source))?;
            let file = (attrs.kind == FileKind::File).then_some(f);
            (attrs, blocks, file)
        }
        None => (FileAttrs::read(source).map_err(read_err(source))?, 0, None),
    };
    if attrs.kind == FileKind::File && file.is_none() {
        // It was not a file a moment ago (or it could not be opened).
        return Err(WriteError::Changed {
            path: source.to_path_buf(),
            detail: "it could not be opened as a regular file".into(),
        });
    }
    if attrs.kind == FileKind::Socket {
        return Ok(Source::Skipped(format!(
            "{} (a socket: recreated by the program that listens on it)",
            source.display()
        )));
    }
    let identity =
        (attrs.kind != FileKind::Dir && attrs.nlink > 1).then_some((attrs.dev, attrs.ino));
    let kind = match attrs.kind {
        FileKind::File => EntryKind::File,
        FileKind::Dir => EntryKind::Dir,
        FileKind::Symlink => EntryKind::Symlink,
        FileKind::Fifo => EntryKind::Fifo,
        FileKind::Char => EntryKind::Char,
        FileKind::Block => EntryKind::Block,
        FileKind::Socket => {
            return Err(WriteError::Unsupported {
                path: source.to_path_buf(),
                detail: "sockets cannot be carried".into(),
            })
        }
    };
    let link = match kind {
        EntryKind::Symlink => Some(
            std::fs::read_link(source)
                .map_err(read_err(source))?
                .into_os_string()
                .into_vec(),
        ),
        _ => None,
    };
    let size = if kind == EntryKind::File {
        attrs.size
    } else {
        0
    };
    let mut meta = EntryMeta {
        path,
        kind,
        mode: attrs.mode,
        uid: attrs.uid,
        gid: attrs.gid,
        mtime: attrs.mtime,
        mtime_nsec: attrs.mtime_nsec,
        size,
        link,
        rdev_major: attrs.rdev_major,
        rdev_minor: attrs.rdev_minor,
        xattrs: attrs.xattrs,
        sparse: None,
    };
    let mut walked = Walked {
        meta,
        source: source.to_path_buf(),
        identity,
        file: None,
        small: None,
        prepared: None,
    };
    let mut digest = None;
    if let (EntryKind::File, Some(file)) = (kind, file) {
        walked.meta.sparse =
            fileattrs::data_segments(&file, size, blocks).map_err(read_err(source))?;
        if walked.meta.sparse.is_some() || size > SMALL_FILE {
            // Sent by the kernel and hashed by the pool: nothing to prepare.
            walked.file = Some(file);
            return Ok(Source::Entry(Box::new(walked)));
        }
        let content = read_small(&file, size as usize, source)?;
        let sha: [u8; 32] = Sha256::digest(&content).into();
        digest = Some(sha);
        walked.small = Some((content, sha));
    }
    meta = walked.meta;
    let mut header = Vec::with_capacity(1536);
    write_tar_header(&mut header, &meta, meta.size, Vec::new())
        .map_err(|e| header_error(e, source))?;
    let tail = meta.describe_tail(digest.as_ref());
    walked.meta = meta;
    walked.prepared = Some(Prepared { header, tail });
    Ok(Source::Entry(Box::new(walked)))
}

/// Reads exactly `size` bytes of a small file (one read, usually).
fn read_small(file: &File, size: usize, source: &Path) -> Result<Vec<u8>, WriteError> {
    let mut content = vec![0u8; size];
    let mut got = 0;
    while got < size {
        match file.read_at(&mut content[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(source)(e)),
        }
    }
    if got != size {
        return Err(WriteError::Changed {
            path: source.to_path_buf(),
            detail: format!("size went from {size} to {got} bytes"),
        });
    }
    Ok(content)
}

fn header_error(e: io::Error, source: &Path) -> WriteError {
    if e.kind() == io::ErrorKind::InvalidInput {
        WriteError::Unsupported {
            path: source.to_path_buf(),
            detail: e.to_string(),
        }
    } else {
        WriteError::Write(e)
    }
}

/// `dir/GNUSparseFile.0/name`: where GNU tar's sparse 1.0 puts the entry
/// name in the ustar header (the real name is in `GNU.sparse.name`).
fn sparse_alias(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => [&path[..i], b"/GNUSparseFile.0/", &path[i + 1..]].concat(),
        None => [b"GNUSparseFile.0/", path].concat(),
    }
}

fn pad(w: &mut impl Write, size: u64) -> io::Result<()> {
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
fn write_tar_header(
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
