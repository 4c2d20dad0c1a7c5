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

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use nix::dir::Type;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

use super::ustar::write_tar_header;
use super::writer::WriteError;
use super::{EntryKind, EntryMeta};
use crate::beneath::{name_path, DirFd, OpenError};
use crate::fileattrs::{self, FileAttrs, FileKind, Stamp};
use crate::idmap::IdShift;

/// Files up to this size are read, hashed and buffered by the readers.
pub(super) const SMALL_FILE: u64 = 256 * 1024;
/// Threads reading entries for `add_tree`.
pub(super) const READERS: usize = 2;
/// Batches in flight, and their size: at most `BATCHES_AHEAD *
/// BATCH_ENTRIES` small files (each <= SMALL_FILE) are in memory.
pub(super) const BATCHES_AHEAD: usize = 8;
const BATCH_ENTRIES: usize = 64;

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
}

/// One entry as the lister found it.
pub(super) struct Listed {
    /// The bundle path.
    pub path: Vec<u8>,
    pub at: At,
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
}

pub(super) type Batch = Vec<Result<Source, WriteError>>;
/// A numbered batch of listed entries to read.
pub(super) type Job = (u64, Vec<Result<Listed, WriteError>>);

/// Sends numbered batches, taking a token per batch.
struct Batcher<'a> {
    seq: u64,
    batch: Vec<Result<Listed, WriteError>>,
    tokens: &'a Receiver<()>,
    jobs: &'a SyncSender<Job>,
}

impl Batcher<'_> {
    /// Queues one item; false when the walk must stop (the writer hung up,
    /// or this was an error).
    fn push(&mut self, item: Result<Listed, WriteError>) -> bool {
        let failed = item.is_err();
        self.batch.push(item);
        if failed || self.batch.len() >= BATCH_ENTRIES {
            return self.flush() && !failed;
        }
        true
    }

    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ENTRIES));
        if self.tokens.recv().is_err() || self.jobs.send((self.seq, batch)).is_err() {
            return false;
        }
        self.seq += 1;
        true
    }
}

/// A directory being listed: its descriptor, bundle path, and the names
/// still to visit.
struct Level {
    dir: Arc<DirFd>,
    path: Vec<u8>,
    names: std::vec::IntoIter<(CString, Option<FileKind>)>,
}

/// Lists `root` in bundle order (depth-first, names in byte order), in
/// numbered batches; stops when the writer hangs up or at the first error.
pub(super) fn list_tree(
    prefix: &[u8],
    root: Arc<DirFd>,
    tokens: &Receiver<()>,
    jobs: &SyncSender<Job>,
) {
    let mut out = Batcher {
        seq: 0,
        batch: Vec::with_capacity(BATCH_ENTRIES),
        tokens,
        jobs,
    };
    let mut stack = Vec::new();
    let first = list_dir(&root).map(|names| {
        stack.push(Level {
            dir: Arc::clone(&root),
            path: prefix.to_vec(),
            names: names.into_iter(),
        });
        Listed {
            path: prefix.to_vec(),
            at: At::Dir(root),
        }
    });
    if !out.push(first) {
        return;
    }
    while let Some(level) = stack.last_mut() {
        let Some((name, kind)) = level.names.next() else {
            stack.pop();
            continue;
        };
        let mut path = Vec::with_capacity(level.path.len() + 1 + name.as_bytes().len());
        path.extend_from_slice(&level.path);
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        let (item, descend) = visit(&level.dir, path, name, kind);
        if let Some(next) = descend {
            stack.push(next);
        }
        if !out.push(item) {
            return;
        }
    }
    out.flush();
}

/// One name of a directory: its entry, and the level to descend into when
/// it is a directory.
fn visit(
    parent: &Arc<DirFd>,
    path: Vec<u8>,
    name: CString,
    kind: Option<FileKind>,
) -> (Result<Listed, WriteError>, Option<Level>) {
    if kind != Some(FileKind::Dir) {
        let at = At::Child {
            parent: Arc::clone(parent),
            name,
            kind,
        };
        return (Ok(Listed { path, at }), None);
    }
    match parent.open_dir(name_path(&name)) {
        Ok(dir) => {
            let dir = Arc::new(dir);
            match list_dir(&dir) {
                Ok(names) => {
                    let level = Level {
                        dir: Arc::clone(&dir),
                        path: path.clone(),
                        names: names.into_iter(),
                    };
                    (
                        Ok(Listed {
                            path,
                            at: At::Dir(dir),
                        }),
                        Some(level),
                    )
                }
                Err(e) => (Err(e), None),
            }
        }
        // Listed as a directory, now something else (a symlink, say): the
        // reader carries what is there now, or refuses a directory again.
        Err(e) if matches!(e, OpenError::Symlink { .. }) || e.errno() == Some(libc::ENOTDIR) => {
            let at = At::Child {
                parent: Arc::clone(parent),
                name,
                kind: None,
            };
            (Ok(Listed { path, at }), None)
        }
        Err(e) => (Err(e.into()), None),
    }
}

/// The names in `dir` in byte order (the bundle's), with the kind the
/// directory gives (asked with `fstatat` where it gives none, DT_UNKNOWN:
/// the lister must know the directories).
fn list_dir(dir: &DirFd) -> Result<Vec<(CString, Option<FileKind>)>, WriteError> {
    let failed = |e: nix::errno::Errno| read_err(dir.path())(io::Error::from(e));
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    // `.` of a descriptor: no name to swap.
    let mut stream = nix::dir::Dir::openat(Some(dir.file().as_raw_fd()), ".", flags, Mode::empty())
        .map_err(failed)?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let entry = entry.map_err(failed)?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let kind = match entry.file_type() {
            Some(Type::File) => Some(FileKind::File),
            Some(Type::Directory) => Some(FileKind::Dir),
            Some(Type::Symlink) => Some(FileKind::Symlink),
            Some(Type::Fifo) => Some(FileKind::Fifo),
            Some(Type::CharacterDevice) => Some(FileKind::Char),
            Some(Type::BlockDevice) => Some(FileKind::Block),
            Some(Type::Socket) => Some(FileKind::Socket),
            None => None,
        };
        names.push((name.to_owned(), kind));
    }
    names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, kind) in names.iter_mut().filter(|(_, k)| k.is_none()) {
        let st = nix::sys::stat::fstatat(
            Some(dir.file().as_raw_fd()),
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        if st.is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR) {
            *kind = Some(FileKind::Dir);
        }
    }
    Ok(names)
}

/// A reader thread: reads every entry of each batch it takes.
pub(super) fn read_batches(
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
pub(super) fn read_listed(listed: Listed, ids: Option<&IdShift>) -> Result<Source, WriteError> {
    match (read_listed_as_is(listed)?, ids) {
        (Source::Entry(walked), Some(ids)) => Ok(Source::Entry(Box::new(shift_ids(*walked, ids)?))),
        (source, _) => Ok(source),
    }
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
    let Listed { path, at } = listed;
    match at {
        At::Dir(dir) => {
            let (attrs, _) = FileAttrs::read_open(dir.file()).map_err(read_err(dir.path()))?;
            finish_entry(path, dir.path().to_path_buf(), attrs, None)
        }
        At::Child { parent, name, kind } => read_child(path, &parent, &name, kind),
    }
}

fn read_child(
    path: Vec<u8>,
    parent: &DirFd,
    name: &CStr,
    kind: Option<FileKind>,
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
            Ok(file) => return read_file(path, source, file),
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
fn read_file(path: Vec<u8>, source: PathBuf, file: File) -> Result<Source, WriteError> {
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
    let kind = match attrs.kind {
        FileKind::File => EntryKind::File,
        FileKind::Dir => EntryKind::Dir,
        FileKind::Symlink => EntryKind::Symlink,
        FileKind::Fifo => EntryKind::Fifo,
        FileKind::Char => EntryKind::Char,
        FileKind::Block => EntryKind::Block,
        FileKind::Socket => {
            return Err(WriteError::Unsupported {
                path: source,
                detail: "sockets cannot be carried".into(),
            })
        }
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
    };
    Ok(Walked {
        meta,
        source,
        identity,
        stat: (attrs.ino, attrs.ctime),
        large: None,
        small: None,
        prepared: None,
    })
}

/// Formats the header and the description tail ahead of the writer.
fn prepare(walked: &mut Walked, digest: Option<&[u8; 32]>) -> Result<(), WriteError> {
    let meta = &walked.meta;
    let mut header = Vec::with_capacity(1536);
    write_tar_header(&mut header, meta, meta.size, Vec::new())
        .map_err(|e| header_error(e, &walked.source))?;
    let tail = meta.describe_tail(digest);
    walked.prepared = Some(Prepared { header, tail });
    Ok(())
}

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

/// Bytes of the regular files under `root`, for a progress bar's total;
/// walked like `list_tree` (by descriptors, never through a symlink), and
/// 0 for what cannot be read: the export itself reports those.
pub fn file_bytes(root: &Path) -> u64 {
    let Ok(root) = DirFd::open(root) else {
        return 0;
    };
    // Directories to visit as (parent, name): opened only when their turn
    // comes, so open descriptors stay near the depth of the tree.
    let mut todo: Vec<(Arc<DirFd>, CString)> = Vec::new();
    let mut total = 0u64;
    let mut next = Some(Arc::new(root));
    loop {
        let Some(dir) = next.take().or_else(|| {
            let (parent, name) = todo.pop()?;
            parent.open_dir(name_path(&name)).ok().map(Arc::new)
        }) else {
            if todo.is_empty() {
                return total;
            }
            continue;
        };
        for (name, kind) in list_dir(&dir).unwrap_or_default() {
            match kind {
                Some(FileKind::Dir) => todo.push((Arc::clone(&dir), name)),
                Some(FileKind::File) | None => {
                    let st = nix::sys::stat::fstatat(
                        Some(dir.file().as_raw_fd()),
                        name.as_c_str(),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    );
                    match st {
                        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                            total += st.st_size as u64;
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// `_data` with `a/secret`, and `outside/secret` (a canary) next to it.
    fn volume() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("_data");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(data.join("a")).unwrap();
        fs::write(data.join("a/secret"), b"inside").unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"CANARY").unwrap();
        (tmp, data, outside)
    }

    fn entry(source: Source) -> Walked {
        match source {
            Source::Entry(w) => *w,
            Source::Skipped(why) => panic!("skipped: {why}"),
        }
    }

    /// Issue 7 item 5, made deterministic: `a` is listed as a directory,
    /// then swapped for a symlink to outside before the lister opens it.
    #[test]
    fn a_directory_swapped_for_a_symlink_after_listing_is_carried_as_the_symlink() {
        let (_tmp, data, outside) = volume();
        let root = Arc::new(DirFd::open(&data).unwrap());
        let names = list_dir(&root).unwrap();
        assert_eq!(names, vec![(c"a".to_owned(), Some(FileKind::Dir))]);
        fs::rename(data.join("a"), data.join("a.real")).unwrap();
        symlink(&outside, data.join("a")).unwrap();

        let (item, descend) = visit(&root, b"p/a".to_vec(), c"a".to_owned(), Some(FileKind::Dir));
        assert!(descend.is_none(), "descended into a symlink");
        let walked = entry(read_listed(item.unwrap(), None).unwrap());
        assert_eq!(walked.meta.kind, EntryKind::Symlink);
        assert_eq!(
            walked.meta.link.as_deref(),
            Some(outside.as_os_str().as_encoded_bytes())
        );
    }

    /// The same after the lister opened `a`: its descriptor stays on the
    /// real directory, wherever it is renamed to; the symlink put in its
    /// place is never read through.
    #[test]
    fn a_directory_swapped_after_it_was_opened_is_read_through_its_descriptor() {
        let (_tmp, data, outside) = volume();
        let root = Arc::new(DirFd::open(&data).unwrap());
        let (_, level) = visit(&root, b"p/a".to_vec(), c"a".to_owned(), Some(FileKind::Dir));
        let mut level = level.unwrap();
        fs::rename(data.join("a"), data.join("a.real")).unwrap();
        symlink(&outside, data.join("a")).unwrap();

        let (name, kind) = level.names.next().unwrap();
        let at = At::Child {
            parent: Arc::clone(&level.dir),
            name,
            kind,
        };
        let walked = entry(
            read_listed(
                Listed {
                    path: b"p/a/secret".to_vec(),
                    at,
                },
                None,
            )
            .unwrap(),
        );
        assert_eq!(walked.small.unwrap().0, b"inside");
    }

    /// A name listed as a file, then swapped for a symlink to a file
    /// outside: carried as the symlink, never opened through it.
    #[test]
    fn a_file_swapped_for_a_symlink_is_carried_as_the_symlink() {
        let (_tmp, data, outside) = volume();
        let a = Arc::new(DirFd::open(&data.join("a")).unwrap());
        fs::remove_file(data.join("a/secret")).unwrap();
        symlink(outside.join("secret"), data.join("a/secret")).unwrap();
        let walked = entry(read_child(b"p".to_vec(), &a, c"secret", Some(FileKind::File)).unwrap());
        assert_eq!(walked.meta.kind, EntryKind::Symlink);
        assert!(walked.small.is_none() && walked.large.is_none());
    }

    /// A name listed as a file that is a directory by the time it is read
    /// (its entries were never listed): refused, not carried empty.
    #[test]
    fn a_file_swapped_for_a_directory_is_refused() {
        let (_tmp, data, _) = volume();
        let root = Arc::new(DirFd::open(&data).unwrap());
        let err = read_child(b"p".to_vec(), &root, c"a", Some(FileKind::File))
            .err()
            .unwrap();
        assert!(matches!(err, WriteError::Changed { .. }), "{err}");
        assert!(err.to_string().contains("--pause"), "{err}");
    }

    #[test]
    fn file_bytes_counts_regular_files_and_never_follows_a_symlink() {
        let (_tmp, data, outside) = volume();
        fs::write(data.join("b"), b"12345").unwrap();
        symlink(&outside, data.join("c")).unwrap();
        assert_eq!(file_bytes(&data), "inside".len() as u64 + 5);
    }
}
