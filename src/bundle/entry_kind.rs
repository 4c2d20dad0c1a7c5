//! The kind of a bundle entry, and the one conversion between it and the
//! kind of a file on disk.

use crate::fileattrs::FileKind;

/// What kind of tar entry a bundle entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Char,
    Block,
}

/// A file on disk as a bundle entry; a socket is none (it cannot be
/// carried), and is given back as the error.
impl TryFrom<FileKind> for EntryKind {
    type Error = FileKind;

    fn try_from(kind: FileKind) -> Result<EntryKind, FileKind> {
        Ok(match kind {
            FileKind::File => EntryKind::File,
            FileKind::Dir => EntryKind::Dir,
            FileKind::Symlink => EntryKind::Symlink,
            FileKind::Fifo => EntryKind::Fifo,
            FileKind::Char => EntryKind::Char,
            FileKind::Block => EntryKind::Block,
            FileKind::Socket => return Err(kind),
        })
    }
}

impl EntryKind {
    /// The tar typeflag this kind is written as.
    pub fn tar_type(self) -> tar::EntryType {
        match self {
            EntryKind::File => tar::EntryType::Regular,
            EntryKind::Dir => tar::EntryType::Directory,
            EntryKind::Symlink => tar::EntryType::Symlink,
            EntryKind::Hardlink => tar::EntryType::Link,
            EntryKind::Fifo => tar::EntryType::Fifo,
            EntryKind::Char => tar::EntryType::Char,
            EntryKind::Block => tar::EntryType::Block,
        }
    }

    /// The kind a tar typeflag reads as; `None` for anything a bundle may
    /// not hold (old GNU sparse, volume labels, ...).
    pub fn from_tar_type(t: tar::EntryType) -> Option<EntryKind> {
        Some(match t {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::Hardlink,
            tar::EntryType::Fifo => EntryKind::Fifo,
            tar::EntryType::Char => EntryKind::Char,
            tar::EntryType::Block => EntryKind::Block,
            _ => return None,
        })
    }

    /// The kind of a `stat`'s `st_mode` (a socket, never carried, has
    /// none).
    pub fn from_mode(mode: u32) -> Option<EntryKind> {
        EntryKind::try_from(FileKind::from_mode(mode)).ok()
    }

    /// What the entry is on disk once laid down (a hardlink: a file).
    pub fn file_kind(self) -> FileKind {
        match self {
            EntryKind::File | EntryKind::Hardlink => FileKind::File,
            EntryKind::Dir => FileKind::Dir,
            EntryKind::Symlink => FileKind::Symlink,
            EntryKind::Fifo => FileKind::Fifo,
            EntryKind::Char => FileKind::Char,
            EntryKind::Block => FileKind::Block,
        }
    }

    pub(super) fn tag(self) -> u8 {
        match self {
            EntryKind::File => b'f',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
            EntryKind::Hardlink => b'h',
            EntryKind::Fifo => b'p',
            EntryKind::Char => b'c',
            EntryKind::Block => b'b',
        }
    }
}
