//! Walks a source tree for the writer: which entries, in bundle order, and
//! everything about each one that can be read ahead of the writer (attrs,
//! xattrs, symlink targets, small files' content and digest, headers).
//!
//! # Security
//! Never resolves a path inside the tree (issue 7, item 5: a directory
//! swapped for a symlink to `/etc` between the listing and the open got
//! `/etc/shadow` exported). The lister opens each directory beneath its
//! parent's descriptor with no symlink followed (`crate::beneath`) and
//! lists it through that descriptor; the readers open or stat each entry
//! by its one name in its parent's descriptor. Whatever a container does to
//! its volume meanwhile, every byte read is the volume's.
//!
//! Never reads what is not a regular file: a fifo could block and a device
//! node could wake a driver. Those, symlinks and sockets are read with
//! `fstatat` and `readlinkat` relative to the parent, never opened. A name
//! the listing called a regular file is opened (`O_NONBLOCK | O_NOCTTY`)
//! and then fstat'ed: one swapped for a fifo or device in between is
//! carried from that fstat, unread; its driver's open is the one side
//! effect left (closing it would take an `O_PATH` open and a reopen
//! through /proc per file).

mod list;
mod read;
#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::writer::WriteError;
use super::{EntryKind, EntryMeta};
use crate::beneath::DirFd;
use crate::fileattrs::{FileKind, Stamp};
use crate::manifest;
use read::prepare;

pub use list::file_bytes;
pub(super) use list::list_tree;
pub(super) use read::{read_batches, read_listed};

/// Files up to this size are read, hashed and buffered by the readers.
pub(super) const SMALL_FILE: u64 = 256 * 1024;
/// Threads reading entries for `add_tree`.
pub(super) const READERS: usize = 2;
/// Batches in flight, and their size: at most `BATCHES_AHEAD *
/// BATCH_ENTRIES` small files (each <= SMALL_FILE) are in memory.
pub(super) const BATCHES_AHEAD: usize = 8;
pub(super) const BATCH_ENTRIES: usize = 64;

pub(super) fn read_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// What the walker read and prepared for one entry.
pub(super) struct Walked {
    pub meta: EntryMeta,
    pub source: PathBuf,
    /// (device, inode) of a non-directory with several names.
    pub identity: Option<(u64, u64)>,
    /// Inode and change time, for a manifest.
    pub stat: (u64, (i64, u32)),
    /// A large or sparse file: read, hashed and written by the writer.
    pub large: Option<Large>,
    /// A small file's content and its SHA-256.
    pub small: Option<(Vec<u8>, [u8; 32])>,
    /// Everything but the data, ready to write, when no digest is pending.
    pub prepared: Option<Prepared>,
    /// In a delta: the entry's base (`since`), for the writer to compare.
    pub base: Option<Box<BaseEntry>>,
    /// It changed while it was read, and a pre-copy round carried it as
    /// read (`Listed::tolerant`): its manifest entry is marked so that the
    /// next round carries it again.
    pub dirty: bool,
}

/// An entry's base in a delta, and whether an unchanged stat proves it
/// unchanged (false with `--checksum`: everything is read and compared).
pub(super) struct BaseEntry {
    pub entry: manifest::Entry,
    pub trust_stat: bool,
}

/// A large file's open handle and its stamp when its size was taken: the
/// writer checks it again once the content is written.
pub(super) struct Large {
    pub file: File,
    pub stamp: Stamp,
}

pub(super) struct Prepared {
    /// The tar header, preceded by its PAX header when one is needed.
    pub header: Vec<u8>,
    /// `EntryMeta::describe_tail` with the digest.
    pub tail: Vec<u8>,
}

pub(super) enum Source {
    Entry(Box<Walked>),
    /// Not carried, with the reason for the user.
    Skipped(String),
    /// In a delta: as in the base (by stat), not read; its base entry.
    Unchanged(Box<manifest::Entry>),
    /// In a delta: a base entry the source does not have any more, at
    /// this bundle path.
    Deleted(Vec<u8>),
}

/// One entry as the lister found it.
pub(super) struct Listed {
    /// The bundle path.
    pub path: Vec<u8>,
    pub at: At,
    /// In a delta: the base's entry at the same path.
    pub base: Option<Box<BaseEntry>>,
    /// A pre-copy round: a file that keeps changing while it is read is
    /// carried as read (what is hashed is what is written) and marked
    /// dirty, instead of failing the export.
    pub tolerant: bool,
}

pub(super) enum At {
    /// A directory the lister opened; its entries follow it.
    Dir(Arc<DirFd>),
    /// Anything else: `name` in `parent`, of the kind the listing gave
    /// (`None`: ask). Never a directory: its entries were not listed.
    Child {
        parent: Arc<DirFd>,
        name: CString,
        kind: Option<FileKind>,
    },
    /// In a delta: a base entry the walk did not meet.
    Deleted,
}

pub(super) type Batch = Vec<Result<Source, WriteError>>;
/// A numbered batch of listed entries to read.
pub(super) type Job = (u64, Vec<Result<Listed, WriteError>>);

/// Keeps hardlinks as links: the first name of an inode (in bundle order)
/// carries it, later names become link entries to it. Any non-directory
/// can have several names (a hardlinked symlink, fifo or device node too),
/// as GNU tar keeps them.
pub(super) fn keep_hardlinks(
    mut walked: Walked,
    links: &mut std::collections::HashMap<(u64, u64), Vec<u8>>,
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
    walked.large = None;
    walked.small = None;
    prepare(&mut walked, None)?;
    Ok(walked)
}

pub(super) fn header_error(e: io::Error, source: &Path) -> WriteError {
    if e.kind() == io::ErrorKind::InvalidInput {
        WriteError::Unsupported {
            path: source.to_path_buf(),
            detail: e.to_string(),
        }
    } else {
        WriteError::Write(e)
    }
}
