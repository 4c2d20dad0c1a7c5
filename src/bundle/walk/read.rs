//! The readers: each listed entry opened or stat'ed by its one name in
//! its parent's descriptor, read, hashed and formatted ahead of the writer.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};

use nix::fcntl::OFlag;
use sha2::{Digest, Sha256};

use crate::beneath::{name_path, DirFd, OpenError};
use crate::bundle::ustar::write_tar_header;
use crate::bundle::writer::WriteError;
use crate::bundle::{EntryKind, EntryMeta};
use crate::fileattrs::{self, FileAttrs, FileKind, Stamp};
use crate::idmap::IdShift;

use super::{
    header_error, read_err, At, Batch, Job, Large, Listed, Prepared, Source, Walked, SMALL_FILE,
};

/// A reader thread: reads every entry of each batch it takes.
pub(in crate::bundle) fn read_batches(
    jobs: &std::sync::Mutex<Receiver<Job>>,
    done: &mpsc::Sender<(u64, Batch)>,
    ids: Option<&IdShift>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, items)) = job else { return };
        let batch: Batch = items
            .into_iter()
            .map(|item| item.and_then(|listed| read_listed(listed, ids)))
            .collect();
        if done.send((seq, batch)).is_err() {
            return;
        }
    }
}

/// Reads one listed entry and prepares what can be prepared; with `ids`
/// (a userns-remapped source) its ids are shifted to the container's.
///
/// In a delta, an entry whose stat is its base's is not read at all
/// (`Source::Unchanged`); any other keeps its base for the writer.
pub(in crate::bundle) fn read_listed(
    mut listed: Listed,
    ids: Option<&IdShift>,
) -> Result<Source, WriteError> {
    if let At::Deleted = listed.at {
        return Ok(Source::Deleted(listed.path));
    }
    let base = listed.base.take();
    if let Some(b) = base.as_deref().filter(|b| b.trust_stat) {
        if let Some(now) = unchanged_by_stat(&listed.at, &b.entry, ids) {
            return Ok(Source::Unchanged(Box::new(now)));
        }
    }
    let source = match (read_listed_as_is(listed)?, ids) {
        (Source::Entry(walked), Some(ids)) => Source::Entry(Box::new(shift_ids(*walked, ids)?)),
        (source, _) => source,
    };
    Ok(match source {
        Source::Entry(mut walked) => {
            walked.base = base;
            Source::Entry(walked)
        }
        other => other,
    })
}

/// The base entry, when one stat of the entry now (not followed, ids
/// shifted as the walk shifts them) has its kind, size, mode, owner,
/// mtime, ctime and inode; `None` when anything differs or cannot be told
/// (then the entry is read in full and compared).
fn unchanged_by_stat(
    at: &At,
    base: &crate::manifest::Entry,
    ids: Option<&IdShift>,
) -> Option<crate::manifest::Entry> {
    let st = match at {
        At::Dir(dir) => nix::sys::stat::fstat(dir.file().as_raw_fd()).ok()?,
        At::Child { parent, name, .. } => nix::sys::stat::fstatat(
            Some(parent.file().as_raw_fd()),
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?,
        At::Deleted => return None,
    };
    let kind = EntryKind::from_mode(st.st_mode)?;
    // A later name of a hardlinked file is a link entry in the base.
    let same_kind =
        kind == base.kind || (kind == EntryKind::File && base.kind == EntryKind::Hardlink);
    let (mut uid, mut gid) = (st.st_uid, st.st_gid);
    if let Some(ids) = ids {
        ids.apply(&mut uid, &mut gid, &mut Vec::new()).ok()?;
    }
    let size = if kind == EntryKind::File {
        st.st_size as u64
    } else {
        0
    };
    let base_size = if base.kind == EntryKind::Hardlink {
        size
    } else {
        base.size
    };
    let same = same_kind
        && size == base_size
        && st.st_mode & 0o7777 == base.mode
        && uid == base.uid
        && gid == base.gid
        && (st.st_mtime, st.st_mtime_nsec as u32) == base.mtime
        && Some((st.st_ctime, st.st_ctime_nsec as u32)) == base.ctime
        && Some(st.st_ino) == base.ino;
    same.then(|| base.clone())
}

/// The entry's owner and id-carrying xattrs (ACLs, capability) shifted,
/// and its header formatted again if it was: the header, SHA256SUMS and
/// the entries digest all describe the shifted ids.
fn shift_ids(mut walked: Walked, ids: &IdShift) -> Result<Walked, WriteError> {
    let meta = &mut walked.meta;
    ids.apply(&mut meta.uid, &mut meta.gid, &mut meta.xattrs)
        .map_err(|source| WriteError::Ids {
            path: walked.source.clone(),
            source,
        })?;
    if walked.prepared.is_some() {
        let digest = walked.small.as_ref().map(|(_, sha)| *sha);
        prepare(&mut walked, digest.as_ref())?;
    }
    Ok(walked)
}

fn read_listed_as_is(listed: Listed) -> Result<Source, WriteError> {
    let Listed {
        path, at, tolerant, ..
    } = listed;
    match at {
        At::Dir(dir) => {
            let (attrs, _) = FileAttrs::read_open(dir.file()).map_err(read_err(dir.path()))?;
            finish_entry(path, dir.path().to_path_buf(), attrs, None)
        }
        At::Child { parent, name, kind } => read_child(path, &parent, &name, kind, tolerant),
        At::Deleted => Ok(Source::Deleted(path)),
    }
}

pub(super) fn read_child(
    path: Vec<u8>,
    parent: &DirFd,
    name: &CStr,
    kind: Option<FileKind>,
    tolerant: bool,
) -> Result<Source, WriteError> {
    let source = parent.path().join(name_path(name));
    let kind = match kind {
        Some(k) => k,
        None => {
            FileAttrs::read_at(parent.file(), name)
                .map_err(read_err(&source))?
                .kind
        }
    };
    if kind == FileKind::File {
        // O_NONBLOCK and O_NOCTTY: if it became a fifo or a tty since the
        // listing, opening it neither blocks nor takes a terminal.
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        match parent.open_file(name_path(name), flags) {
            Ok(file) => return read_file(path, source, file, tolerant),
            // A symlink (ELOOP) or a socket (ENXIO) now: read it unopened.
            Err(OpenError::Symlink { .. }) => {}
            Err(e) if e.errno() == Some(libc::ENXIO) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let attrs = FileAttrs::read_at(parent.file(), name).map_err(read_err(&source))?;
    if matches!(attrs.kind, FileKind::File | FileKind::Dir) {
        return Err(WriteError::Changed {
            path: source,
            detail: "it changed type while it was exported".into(),
        });
    }
    let link = match attrs.kind {
        FileKind::Symlink => Some(
            nix::fcntl::readlinkat(Some(parent.file().as_raw_fd()), name)
                .map_err(|e| read_err(&source)(io::Error::from(e)))?
                .into_encoded_bytes(),
        ),
        _ => None,
    };
    finish_entry(path, source, attrs, link)
}

/// A regular file (by the listing), open. A small one is read now and
/// checked against its stamp: what changed while it was read is read
/// again, once (nothing of it is written yet); a large one is left to the
/// writer with its stamp.
///
/// `tolerant` (a pre-copy round): one that changed both times is carried
/// as a third read gives it, padded with zeros to the size taken, and
/// marked dirty.
fn read_file(
    path: Vec<u8>,
    source: PathBuf,
    file: File,
    tolerant: bool,
) -> Result<Source, WriteError> {
    let mut change = String::new();
    for _ in 0..2 {
        let (attrs, meta) = FileAttrs::read_open(&file).map_err(read_err(&source))?;
        if attrs.kind == FileKind::Dir {
            return Err(WriteError::Changed {
                path: source,
                detail: "it became a directory while it was exported".into(),
            });
        }
        if attrs.kind != FileKind::File {
            // A fifo or a device now, opened but never read.
            return finish_entry(path, source, attrs, None);
        }
        let stamp = Stamp::of(&meta);
        let size = attrs.size;
        let sparse =
            fileattrs::data_segments(&file, size, meta.blocks()).map_err(read_err(&source))?;
        if sparse.is_some() || size > SMALL_FILE {
            let mut walked = walked(path, source, attrs, None)?;
            walked.meta.sparse = sparse;
            walked.large = Some(Large { file, stamp });
            return Ok(Source::Entry(Box::new(walked)));
        }
        let content = read_small(&file, size as usize).map_err(read_err(&source))?;
        let after = Stamp::now(&file).map_err(read_err(&source))?;
        match (content, after.change_since(&stamp)) {
            (Some(content), None) => {
                let sha: [u8; 32] = Sha256::digest(&content).into();
                let mut walked = walked(path, source, attrs, None)?;
                walked.small = Some((content, sha));
                prepare(&mut walked, Some(&sha))?;
                return Ok(Source::Entry(Box::new(walked)));
            }
            (None, _) => change = format!("it shrank below {size} bytes while it was read"),
            (Some(_), Some(what)) => change = what,
        }
    }
    if tolerant {
        let (attrs, _) = FileAttrs::read_open(&file).map_err(read_err(&source))?;
        if attrs.kind == FileKind::File && attrs.size <= SMALL_FILE {
            let size = attrs.size as usize;
            let mut content = vec![0u8; size];
            let mut got = 0;
            while got < size {
                match file.read_at(&mut content[got..], got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(read_err(&source)(e)),
                }
            }
            let sha: [u8; 32] = Sha256::digest(&content).into();
            let mut walked = walked(path, source, attrs, None)?;
            walked.small = Some((content, sha));
            walked.dirty = true;
            prepare(&mut walked, Some(&sha))?;
            return Ok(Source::Entry(Box::new(walked)));
        }
    }
    Err(WriteError::Changed {
        path: source,
        detail: format!("{change}, twice"),
    })
}

/// Reads exactly `size` bytes of a small file (one read, usually); `None`
/// when it has fewer.
fn read_small(file: &File, size: usize) -> io::Result<Option<Vec<u8>>> {
    let mut content = vec![0u8; size];
    let mut got = 0;
    while got < size {
        match file.read_at(&mut content[got..], got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(content))
}

/// A finished entry that is not a large file: attrs, then the header.
fn finish_entry(
    path: Vec<u8>,
    source: PathBuf,
    attrs: FileAttrs,
    link: Option<Vec<u8>>,
) -> Result<Source, WriteError> {
    if attrs.kind == FileKind::Socket {
        return Ok(Source::Skipped(format!(
            "{} (a socket: recreated by the program that listens on it)",
            source.display()
        )));
    }
    let mut walked = walked(path, source, attrs, link)?;
    prepare(&mut walked, None)?;
    Ok(Source::Entry(Box::new(walked)))
}

/// The entry's description from its attrs; nothing prepared yet.
fn walked(
    path: Vec<u8>,
    source: PathBuf,
    attrs: FileAttrs,
    link: Option<Vec<u8>>,
) -> Result<Walked, WriteError> {
    let Ok(kind) = EntryKind::try_from(attrs.kind) else {
        return Err(WriteError::Unsupported {
            path: source,
            detail: "sockets cannot be carried".into(),
        });
    };
    let identity =
        (attrs.kind != FileKind::Dir && attrs.nlink > 1).then_some((attrs.dev, attrs.ino));
    let meta = EntryMeta {
        path,
        kind,
        mode: attrs.mode,
        uid: attrs.uid,
        gid: attrs.gid,
        mtime: attrs.mtime,
        mtime_nsec: attrs.mtime_nsec,
        size: if kind == EntryKind::File {
            attrs.size
        } else {
            0
        },
        link,
        rdev_major: attrs.rdev_major,
        rdev_minor: attrs.rdev_minor,
        xattrs: attrs.xattrs,
        sparse: None,
        delta: None,
    };
    Ok(Walked {
        meta,
        source,
        identity,
        stat: (attrs.ino, attrs.ctime),
        base: None,
        dirty: false,
        large: None,
        small: None,
        prepared: None,
    })
}

/// Formats the header and the description tail ahead of the writer.
pub(super) fn prepare(walked: &mut Walked, digest: Option<&[u8; 32]>) -> Result<(), WriteError> {
    let meta = &walked.meta;
    let mut header = Vec::with_capacity(1536);
    write_tar_header(&mut header, meta, meta.size, Vec::new())
        .map_err(|e| header_error(e, &walked.source))?;
    let tail = meta.describe_tail(digest);
    walked.prepared = Some(Prepared { header, tail });
    Ok(())
}
