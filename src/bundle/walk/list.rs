//! The lister: the tree in bundle order, each directory opened beneath
//! its parent and listed through its descriptor.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use nix::dir::Type;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::beneath::{name_path, DirFd, OpenError};
use crate::bundle::writer::WriteError;
use crate::fileattrs::FileKind;

use super::{read_err, At, BaseEntry, Job, Listed, BATCH_ENTRIES};
use crate::bundle::since::VolumeBase;
use crate::manifest;

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
pub(super) struct Level {
    pub(super) dir: Arc<DirFd>,
    pub(super) path: Vec<u8>,
    pub(super) names: std::vec::IntoIter<(CString, Option<FileKind>)>,
}

/// Lists `root` in bundle order (depth-first, names in byte order), in
/// numbered batches; stops when the writer hangs up or at the first error.
///
/// In a delta (`base`), the base's entries are read alongside: each listed
/// entry carries its base entry, and the base entries met by no listed
/// one go out as deletions in their place in the order.
pub(in crate::bundle) fn list_tree(
    prefix: &[u8],
    root: Arc<DirFd>,
    tokens: &Receiver<()>,
    jobs: &SyncSender<Job>,
    mut base: Option<VolumeBase<'_>>,
    tolerant: bool,
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
            base: None,
            tolerant: false,
        }
    });
    let first = first.map(|mut l| {
        l.tolerant = tolerant;
        l
    });
    if !merged(&mut out, first, base.as_mut(), prefix) {
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
        let item = item.map(|mut l| {
            l.tolerant = tolerant;
            l
        });
        if let Some(next) = descend {
            stack.push(next);
        }
        if !merged(&mut out, item, base.as_mut(), prefix) {
            return;
        }
    }
    if let Some(vb) = base.as_mut() {
        let mut go_on = true;
        let finished = vb.finish(&mut |e| {
            go_on = out.push(Ok(deletion(prefix, e)));
            go_on
        });
        if let Err(e) = finished {
            out.push(Err(e.into()));
            return;
        }
        if !go_on {
            return;
        }
    }
    out.flush();
}

/// The listed entry for a base entry that the walk did not meet.
fn deletion(prefix: &[u8], e: manifest::Entry) -> Listed {
    let mut path = prefix.to_vec();
    if !e.path.is_empty() {
        path.push(b'/');
        path.extend_from_slice(&e.path);
    }
    Listed {
        path,
        at: At::Deleted,
        base: None,
        tolerant: false,
    }
}

/// Queues `item` after the deletions that come before it in a delta,
/// with its base entry; false when the walk must stop.
fn merged(
    out: &mut Batcher<'_>,
    item: Result<Listed, WriteError>,
    base: Option<&mut VolumeBase<'_>>,
    prefix: &[u8],
) -> bool {
    let Some(vb) = base else {
        return out.push(item);
    };
    let mut listed = match item {
        Ok(listed) => listed,
        Err(e) => return out.push(Err(e)),
    };
    let rel: &[u8] = match listed.path.get(prefix.len() + 1..) {
        Some(rel) if listed.path.len() > prefix.len() => rel,
        _ => b"",
    };
    let is_dir = match &listed.at {
        At::Dir(_) => Some(true),
        // Listed as a directory it could not be opened as: unknown now.
        At::Child {
            kind: Some(FileKind::Dir),
            ..
        } => None,
        At::Child { .. } => Some(false),
        At::Deleted => None,
    };
    let mut go_on = true;
    let trust_stat = !vb.checksum();
    let found = vb.step(rel, is_dir, &mut |e| {
        go_on = out.push(Ok(deletion(prefix, e)));
        go_on
    });
    match found {
        Ok(found) => {
            listed.base = found.map(|entry| Box::new(BaseEntry { entry, trust_stat }));
        }
        Err(e) => {
            out.push(Err(e.into()));
            return false;
        }
    }
    go_on && out.push(Ok(listed))
}

/// One name of a directory: its entry, and the level to descend into when
/// it is a directory.
pub(super) fn visit(
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
        return (
            Ok(Listed {
                path,
                at,
                base: None,
                tolerant: false,
            }),
            None,
        );
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
                            base: None,
                            tolerant: false,
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
            (
                Ok(Listed {
                    path,
                    at,
                    base: None,
                    tolerant: false,
                }),
                None,
            )
        }
        Err(e) => (Err(e.into()), None),
    }
}

/// The names in `dir` in byte order (the bundle's), with the kind the
/// directory gives (asked with `fstatat` where it gives none, DT_UNKNOWN:
/// the lister must know the directories).
pub(super) fn list_dir(dir: &DirFd) -> Result<Vec<(CString, Option<FileKind>)>, WriteError> {
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
