//! Writes a bundle in one pass with constant memory.
//!
//! The walk (`super::walk`) reads entries ahead of this thread; small files
//! arrive read, hashed and formatted. Large files are read once, in chunks,
//! by a helper thread that hashes each chunk before handing it here to be
//! written: the bytes hashed are the bytes written (see `stream_large`).
//! SHA256SUMS lines are produced in entry order and spooled to a temporary
//! file, so memory does not grow with the number of files.
//!
//! Must never read the source by path: everything comes through the
//! descriptors the walk opened beneath the volume (`crate::beneath`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::large::grow_pipe;
use super::patch::patchable;
use super::since::{Base, VolumeBase};
use super::ustar::{pad, write_tar_header};
use super::walk::{self, At, Batch, Listed, Source, Walked, BATCHES_AHEAD, READERS};
use super::{
    hex, sums_line, BundleHeader, EntryKind, EntryMeta, RunningDigest, Trailer, VolumeSummary,
};
use super::{FORMAT, HEADER_PATH, SUMS_PATH, TRAILER_PATH};
use crate::beneath::{DirFd, OpenError};
use crate::idmap::{IdError, IdShift};
use crate::manifest::{Chunked, ManifestError};
use crate::progress::Progress;

pub use super::walk::file_bytes;

mod large_entry;
mod round;
mod sink;

use round::{manifest_entry, RoundOut};
use sink::Sink;

/// Output buffer, and the copy size of the zstd and SHA256SUMS paths.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("`{path}` changed while it was exported ({detail}): quiesce the container for the export (volmig export --pause or --stop), or stop it first, and export again")]
    Changed {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot write the bundle: {0}")]
    Write(#[source] io::Error),
    #[error("interrupted")]
    Cancelled,
    #[error("`{path}`: {source}")]
    Ids {
        path: std::path::PathBuf,
        source: IdError,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("`{path}`: {detail}")]
    Unsupported {
        path: std::path::PathBuf,
        detail: String,
    },
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
    /// The shift of volume data ids (a userns-remapped source).
    ids: Option<IdShift>,
    /// With a round in the header: the manifest written beside the bundle
    /// (if asked for) and the volumes' tree digests.
    round: Option<RoundOut>,
    /// A delta (`export --since`): the base round's manifest.
    base: Option<Base>,
    /// A pre-copy round: files that change while read are carried as read
    /// and marked for the next round (`walk::Listed::tolerant`).
    tolerant: bool,
    /// Files that changed while they were read (with `tolerant`).
    pub dirty: Vec<String>,
}

impl<'p> BundleWriter<'p> {
    /// Starts a bundle on `out` and writes its header entry.
    pub fn new(
        out: File,
        compression: Compression,
        header: &BundleHeader,
        progress: &'p dyn Progress,
    ) -> Result<Self, WriteError> {
        grow_pipe(&out);
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
            ids: None,
            round: header.round.as_ref().map(|_| RoundOut {
                manifest: None,
                current: None,
                trees: BTreeMap::new(),
            }),
            base: None,
            tolerant: false,
            dirty: Vec::new(),
        };
        writer
            .write_plain(HEADER_PATH.as_bytes(), &header_json)
            .map_err(WriteError::Write)?;
        Ok(writer)
    }

    /// Shifts the ids of every entry of the volumes' data (`volumes/<name>/_data`
    /// and below) by `ids`: a userns-remapped source's are written as its
    /// containers see them. The daemon's own files (the volume directory,
    /// opts.json, containers/) keep their host ids.
    pub fn with_id_shift(mut self, ids: Option<IdShift>) -> Self {
        self.ids = ids;
        self
    }

    fn ids_for(&self, path: &[u8]) -> Option<&IdShift> {
        let ids = self.ids.as_ref()?;
        let rest = path.strip_prefix(b"volumes/")?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        let sub = &rest[slash + 1..];
        (sub == b"_data" || sub.starts_with(b"_data/")).then_some(ids)
    }

    /// Adds one file or directory of the data-root itself (a container's
    /// directory, config.v2.json, a volume's directory, opts.json) under
    /// `path`. Its parent directories are the data-root's, root's and
    /// outside any container, so it is reached by path; it is opened
    /// without following it, and read through that descriptor.
    pub fn add_file(
        &mut self,
        path: &[u8],
        source: &Path,
        volume: Option<&str>,
    ) -> Result<(), WriteError> {
        let rel_start = volume.map_or(0, |v| "volumes/".len() + v.len() + 1);
        let at = if std::fs::symlink_metadata(source).is_ok_and(|m| m.is_dir()) {
            At::Dir(Arc::new(DirFd::open(source)?))
        } else {
            let unsupported = || WriteError::Unsupported {
                path: source.to_path_buf(),
                detail: "not a file name".into(),
            };
            let parent = source.parent().ok_or_else(unsupported)?;
            let name = source.file_name().ok_or_else(unsupported)?;
            At::Child {
                parent: Arc::new(DirFd::open(parent)?),
                name: CString::new(name.as_bytes()).map_err(|_| unsupported())?,
                kind: None,
            }
        };
        let listed = Listed {
            path: path.to_vec(),
            at,
            base: None,
            tolerant: false,
        };
        let source = walk::read_listed(listed, self.ids_for(path))?;
        self.add_source(source, volume, rel_start, None)
    }

    /// Writes (or, in a delta, records) one entry the walk produced.
    fn add_source(
        &mut self,
        source: Source,
        volume: Option<&str>,
        rel_start: usize,
        links: Option<&mut HashMap<(u64, u64), Vec<u8>>>,
    ) -> Result<(), WriteError> {
        match source {
            Source::Entry(walked) => {
                let walked = match links {
                    Some(links) => walk::keep_hardlinks(*walked, links)?,
                    None => *walked,
                };
                self.add_walked(walked, volume, rel_start)
            }
            Source::Skipped(why) => {
                self.skipped.push(why);
                Ok(())
            }
            Source::Unchanged(entry) => self.record(volume, &entry),
            Source::Deleted(path) => self.add_deletion(path, volume, rel_start),
        }
    }

    /// Adds the tree at `root` under bundle path `prefix`, depth-first in
    /// byte order of names, never following symlinks (a `root` that is one
    /// is carried as the symlink).
    ///
    /// For many small files the per-file system calls (open, fstat,
    /// xattrs, read) are the whole cost, so they run on `READERS` threads:
    /// a lister walks the tree and hands out numbered batches of entries,
    /// the readers open, read, hash and format each entry, and this thread
    /// writes the batches back in order. Tokens bound the batches in
    /// flight, so memory stays bounded whatever the tree.
    pub fn add_tree(
        &mut self,
        prefix: &[u8],
        root: &Path,
        volume: Option<&str>,
    ) -> Result<(), WriteError> {
        let rel_start = volume.map_or(0, |v| "volumes/".len() + v.len() + 1);
        let root_dir = match DirFd::open(root) {
            Ok(dir) => Arc::new(dir),
            Err(OpenError::Symlink { .. }) => return self.add_file(prefix, root, volume),
            Err(e) => return Err(e.into()),
        };
        let ids = self.ids_for(prefix).cloned();
        let ids = ids.as_ref();
        // A delta: the base's entries of this volume's `_data`, read
        // alongside the walk (taken out of `self` for the walk's time).
        let mut base = self.base.take();
        let vbase = match (&mut base, volume) {
            (Some(b), Some(v)) if prefix.ends_with(b"/_data") => match b.volume(v) {
                Ok(vb) => vb,
                Err(e) => {
                    self.base = base;
                    return Err(e.into());
                }
            },
            _ => None,
        };
        let result = self.walk_tree(prefix, root_dir, volume, rel_start, ids, vbase);
        self.base = base;
        result
    }

    fn walk_tree(
        &mut self,
        prefix: &[u8],
        root_dir: Arc<DirFd>,
        volume: Option<&str>,
        rel_start: usize,
        ids: Option<&IdShift>,
        vbase: Option<VolumeBase<'_>>,
    ) -> Result<(), WriteError> {
        std::thread::scope(|scope| {
            let (token_tx, token_rx) = mpsc::sync_channel::<()>(BATCHES_AHEAD);
            for _ in 0..BATCHES_AHEAD {
                let _ = token_tx.send(());
            }
            let (job_tx, job_rx) = mpsc::sync_channel::<walk::Job>(READERS);
            let job_rx = Arc::new(std::sync::Mutex::new(job_rx));
            let (done_tx, done_rx) = mpsc::channel::<(u64, Batch)>();
            let tolerant = self.tolerant;
            scope.spawn(move || {
                walk::list_tree(prefix, root_dir, &token_rx, &job_tx, vbase, tolerant)
            });
            for _ in 0..READERS {
                let job_rx = Arc::clone(&job_rx);
                let done_tx = done_tx.clone();
                scope.spawn(move || walk::read_batches(&job_rx, &done_tx, ids));
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
                        self.add_source(item?, volume, rel_start, Some(&mut links))?;
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
            large,
            small,
            prepared,
            stat,
            base,
            dirty,
            ..
        } = walked;
        // A file that changed while read: its stat is not what was read.
        let mut stat = match dirty {
            true => {
                self.dirty.push(source.display().to_string());
                None
            }
            false => Some(stat),
        };
        if let Some(base) = &base {
            // A delta: what is as in the base is recorded, not carried.
            if prepared.is_some() {
                let content = small.as_ref().map(|(_, d)| Chunked::single(*d));
                if let Some(entry) = manifest_entry(&meta, rel_start, content, stat) {
                    if entry.same_description(&base.entry) {
                        return self.record(volume, &entry);
                    }
                }
            } else if let Some(large) = large.as_ref().filter(|_| patchable(&meta, &base.entry)) {
                return self.add_patch(
                    meta,
                    large,
                    &source,
                    &base.entry,
                    (volume, rel_start),
                    stat,
                );
            }
        }
        let mut chunked = None;
        let (digest, tail) = match (prepared, large) {
            (Some(prep), _) => {
                self.sink
                    .write_all(&prep.header)
                    .map_err(WriteError::Write)?;
                let digest = match small {
                    Some((content, sha)) => {
                        self.sink.write_all(&content).map_err(WriteError::Write)?;
                        pad(&mut self.sink, meta.size).map_err(WriteError::Write)?;
                        self.progress.advance(meta.size);
                        Some(sha)
                    }
                    None => None,
                };
                (digest, prep.tail)
            }
            (None, Some(large)) => {
                let (digest, chunks, changed) = self.write_large(&meta, &large, &source)?;
                chunked = chunks;
                if changed {
                    self.dirty.push(source.display().to_string());
                    stat = None;
                }
                (Some(digest), meta.describe_tail(Some(&digest)))
            }
            (None, None) => {
                return Err(WriteError::Changed {
                    path: source,
                    detail: "it could not be opened as a file".into(),
                })
            }
        };
        if meta.kind == EntryKind::File {
            self.files += 1;
            self.bytes += meta.size;
        }
        self.entries += 1;
        self.describe(&meta, volume, rel_start, digest.as_ref(), &tail)
            .map_err(WriteError::Write)?;
        if self.round.is_some() {
            // One chunk or less: the content digest is the SHA-256.
            let content = chunked.or(digest.map(Chunked::single));
            if let Some(entry) = manifest_entry(&meta, rel_start, content, stat) {
                self.record(volume, &entry)?;
            }
        }
        Ok(())
    }

    /// Adds one written entry to SHA256SUMS, the entries digest and its
    /// volume's tally.
    fn describe(
        &mut self,
        meta: &EntryMeta,
        volume: Option<&str>,
        rel_start: usize,
        digest: Option<&[u8; 32]>,
        tail: &[u8],
    ) -> io::Result<()> {
        let kind = meta.kind;
        self.entries_digest
            .update_description(kind, &meta.path, tail);
        if let Some(d) = digest {
            let line = sums_line(d, &meta.path);
            self.sums_digest.update(&line);
            self.sums.write_all(&line)?;
        }
        if let Some(v) = volume {
            if !self.volumes.contains_key(v) {
                self.volumes.insert(Arc::from(v), VolumeTally::default());
            }
            if let Some(tally) = self.volumes.get_mut(v) {
                let rel = &meta.path[rel_start.min(meta.path.len())..];
                tally.digest.update_description(kind, rel, tail);
                tally.entries += 1;
                if kind == EntryKind::File {
                    tally.files += 1;
                    tally.bytes += meta.size;
                }
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
            delta: None,
        };
        write_tar_header(&mut self.sink, &meta, data.len() as u64, Vec::new())?;
        self.sink.write_all(data)?;
        pad(&mut self.sink, data.len() as u64)
    }

    /// Writes SHA256SUMS and the trailer, ends the tar and flushes.
    /// Returns the trailer and the output file.
    pub fn finish(mut self) -> Result<(Trailer, File), WriteError> {
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
            delta: None,
        };
        write_tar_header(&mut self.sink, &sums_meta, sums_len, Vec::new())
            .map_err(WriteError::Write)?;
        let got = self
            .sink
            .send_spool(&sums, sums_len, &mut self.scratch)
            .map_err(WriteError::Write)?;
        if got != sums_len {
            return Err(WriteError::Write(io::Error::other(
                "SHA256SUMS spool shrank",
            )));
        }
        pad(&mut self.sink, sums_len).map_err(WriteError::Write)?;
        let trees = match self.round.take() {
            Some(mut round) => {
                round.close()?;
                if let Some(m) = round.manifest.take() {
                    m.finish()?;
                }
                Some(round.trees)
            }
            None => None,
        };
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
            trees,
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
        Ok((trailer, out))
    }
}
