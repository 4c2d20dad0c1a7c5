//! The landed tree of one volume, stat by stat, in bundle order
//! (depth-first, names in byte order: `manifest::path_order`), so that the
//! base can take each entry's inode and ctime from the target while it
//! reads the entries' other attributes from the spool in the same order.
//!
//! Every directory is opened beneath its parent and every name is
//! `fstatat`ed through that descriptor without following it
//! (`crate::beneath`): the tree is the committed volume, which a
//! container may already be using, and a directory swapped for a symlink
//! must not make the walk describe a tree outside the volume. It only
//! reads: never opens a file, never writes.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use crate::beneath::{name_path, DirFd, OpenError};
use crate::bundle::EntryKind;
use crate::manifest::Entry;

/// One entry as the target has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Landed {
    /// Relative to the walk's root (`""` for the root itself).
    pub path: Vec<u8>,
    /// `st_mode & S_IFMT`.
    pub format: u32,
    /// Permission bits, `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub ino: u64,
}

impl Landed {
    pub(crate) fn of(path: Vec<u8>, st: &FileStat) -> Landed {
        let nsec = |n: i64| u32::try_from(n).unwrap_or(0);
        Landed {
            path,
            format: st.st_mode & libc::S_IFMT,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime, nsec(st.st_mtime_nsec)),
            ctime: (st.st_ctime, nsec(st.st_ctime_nsec)),
            ino: st.st_ino,
        }
    }

    /// What differs between this entry on disk and `e`, the entry a
    /// manifest records or a bundle lays down (`None`: alike): the kind,
    /// and where the kernel keeps them as given, mode, owner, mtime and a
    /// file's size; with `exact` also the ctime and inode a base recorded
    /// (which only an untouched entry keeps). A hardlink is whatever it
    /// links: only not a directory.
    pub(crate) fn differs(&self, e: &Entry, exact: bool) -> Option<String> {
        let link = e.kind == EntryKind::Hardlink && self.format != libc::S_IFDIR;
        let mut wrong = Vec::new();
        match EntryKind::from_mode(self.format) {
            None => wrong.push(format!(
                "type {:o} on disk, which no bundle carries",
                self.format
            )),
            Some(kind) if kind != e.kind && !link => {
                wrong.push(format!("a {kind:?} on disk, a {:?} expected", e.kind).to_lowercase())
            }
            Some(_) => {}
        }
        // Linux keeps no mode of its own for a symlink (always 0777).
        if e.kind != EntryKind::Symlink && self.mode != e.mode {
            wrong.push(format!(
                "mode {:04o} on disk, {:04o} expected",
                self.mode, e.mode
            ));
        }
        if (self.uid, self.gid) != (e.uid, e.gid) {
            wrong.push(format!(
                "owner {}:{} on disk, {}:{} expected",
                self.uid, self.gid, e.uid, e.gid
            ));
        }
        if self.mtime != e.mtime {
            wrong.push(format!(
                "mtime {} on disk, {} expected",
                crate::bundle::pax_time(self.mtime.0, self.mtime.1),
                crate::bundle::pax_time(e.mtime.0, e.mtime.1)
            ));
        }
        if e.kind == EntryKind::File && self.size != e.size {
            wrong.push(format!("{} bytes on disk, {} expected", self.size, e.size));
        }
        if exact && (Some(self.ctime) != e.ctime || Some(self.ino) != e.ino) {
            wrong.push("it was changed since (its ctime or inode moved)".into());
        }
        match wrong.is_empty() {
            true => None,
            false => Some(wrong.join("; ")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot read `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A directory being walked: its descriptor, path, and the names left.
struct Level {
    dir: DirFd,
    path: Vec<u8>,
    names: std::vec::IntoIter<CString>,
}

/// The walk; `next` gives the entries one at a time.
pub(crate) struct LandedWalk {
    first: Option<Landed>,
    stack: Vec<Level>,
}

impl LandedWalk {
    /// Starts at `root` (a volume's `_data`, or a bind volume's device
    /// directory), which must be a directory and not a symlink.
    pub(crate) fn open(root: &Path) -> Result<LandedWalk, WalkError> {
        let dir = DirFd::open(root)?;
        let st = fstat(dir.file().as_raw_fd()).map_err(io_err(root))?;
        let names = list(&dir)?;
        Ok(LandedWalk {
            first: Some(Landed::of(Vec::new(), &st)),
            stack: vec![Level {
                dir,
                path: Vec::new(),
                names: names.into_iter(),
            }],
        })
    }

    /// The next entry in bundle order; `None` after the last. Sockets are
    /// passed over: a bundle never carries one (export names and skips
    /// them), so neither does a tree imported from one.
    pub(crate) fn next(&mut self) -> Result<Option<Landed>, WalkError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        while let Some(level) = self.stack.last_mut() {
            let Some(name) = level.names.next() else {
                self.stack.pop();
                continue;
            };
            let mut path = Vec::with_capacity(level.path.len() + 1 + name.as_bytes().len());
            if !level.path.is_empty() {
                path.extend_from_slice(&level.path);
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let st = fstatat(
                Some(level.dir.file().as_raw_fd()),
                name.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io_err(&level.dir.path().join(name_path(&name))))?;
            match st.st_mode & libc::S_IFMT {
                libc::S_IFSOCK => continue,
                libc::S_IFDIR => {}
                _ => return Ok(Some(Landed::of(path, &st))),
            }
            // A directory: its own descriptor, opened beneath its parent
            // (a symlink there now fails), gives the stat recorded and the
            // names below.
            let dir = level.dir.open_dir(name_path(&name))?;
            let st = fstat(dir.file().as_raw_fd()).map_err(io_err(dir.path()))?;
            let names = list(&dir)?;
            self.stack.push(Level {
                dir,
                path: path.clone(),
                names: names.into_iter(),
            });
            return Ok(Some(Landed::of(path, &st)));
        }
        Ok(None)
    }
}

fn io_err(path: &Path) -> impl FnOnce(nix::errno::Errno) -> WalkError + '_ {
    move |e| WalkError::Io {
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// The names in `dir`, in byte order.
pub(crate) fn list(dir: &DirFd) -> Result<Vec<CString>, WalkError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    // `.` of the descriptor: no name to swap.
    let mut stream = nix::dir::Dir::openat(Some(dir.file().as_raw_fd()), ".", flags, Mode::empty())
        .map_err(io_err(dir.path()))?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let entry = entry.map_err(io_err(dir.path()))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;

    fn walk_all(root: &Path) -> Vec<Landed> {
        let mut w = LandedWalk::open(root).unwrap();
        let mut out = Vec::new();
        while let Some(e) = w.next().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn walks_in_bundle_order_with_the_stat_of_each_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/c"), b"x").unwrap();
        fs::write(root.join("a-b"), b"yy").unwrap();
        fs::write(root.join("a/a"), b"").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("b")).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        let got = walk_all(root);
        drop(sock);
        let paths: Vec<&[u8]> = got.iter().map(|e| e.path.as_slice()).collect();
        let want: Vec<&[u8]> = vec![b"", b"a", b"a/a", b"a/b", b"a/b/c", b"a-b", b"b"];
        assert_eq!(paths, want, "sockets are passed over");
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| crate::manifest::path_order(a, b));
        assert_eq!(paths, sorted);
        use std::os::unix::fs::MetadataExt;
        for e in &got {
            let p = root.join(std::ffi::OsStr::from_bytes(&e.path));
            let m = fs::symlink_metadata(&p).unwrap();
            assert_eq!(e.ino, m.ino());
            assert_eq!(e.ctime, (m.ctime(), m.ctime_nsec() as u32));
            assert_eq!(e.format, m.mode() & libc::S_IFMT);
        }
        assert_eq!(got[6].format, libc::S_IFLNK, "a symlink is not followed");
        assert_eq!(got[5].size, 2);
    }

    #[test]
    fn a_root_that_is_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
        assert!(matches!(
            LandedWalk::open(&tmp.path().join("link")),
            Err(WalkError::Open(OpenError::Symlink { .. }))
        ));
    }
}
