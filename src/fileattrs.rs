//! The attributes of one file that a migration must carry and restore:
//! type, permission bits (setuid/setgid/sticky included), numeric owner,
//! mtime to the nanosecond, xattrs (user.*, security.capability, POSIX
//! ACLs as system.posix_acl_*), device numbers, and the data segments of
//! sparse files.
//!
//! Never follows a symlink: every call here works on the link itself
//! (lstat, llistxattr, lchown, utimensat with AT_SYMLINK_NOFOLLOW). Export
//! reads through descriptors only (`read_open`, `read_at`): see
//! `crate::beneath` for why a path is never resolved inside a volume.
//! Restoring order matters: chown clears setuid bits and
//! security.capability, so owner first, then mode, then xattrs, then times.

use std::ffi::{CStr, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::unistd::{lseek, Whence};

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

impl FileKind {
    /// The kind of a `st_mode` (the only table of `S_IFMT`; a kind this
    /// enum does not name is a socket, the last one Linux has).
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFCHR => FileKind::Char,
            libc::S_IFBLK => FileKind::Block,
            _ => FileKind::Socket,
        }
    }
}

/// The attributes read from (or to restore on) one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAttrs {
    pub kind: FileKind,
    /// Permission bits incl. setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    /// Change time (what a later round compares to see a change).
    pub ctime: (i64, u32),
    /// Sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl FileAttrs {
    /// Reads the attributes of `path` itself (a symlink is not followed).
    pub fn read(path: &Path) -> io::Result<FileAttrs> {
        let meta = fs::symlink_metadata(path)?;
        let xattrs = read_xattrs(path)?;
        Ok(FileAttrs::from_metadata(&meta, xattrs))
    }

    /// Reads the attributes of an open file (fstat and flistxattr: no
    /// path lookup), with the fstat they came from (for its allocated
    /// blocks and its `Stamp`).
    pub fn read_open(file: &File) -> io::Result<(FileAttrs, fs::Metadata)> {
        let meta = file.metadata()?;
        let xattrs = read_xattrs_fd(file)?;
        Ok((FileAttrs::from_metadata(&meta, xattrs), meta))
    }

    /// Reads the attributes of `name` in the open directory `dir`, never
    /// following it: for what export does not open (symlinks, fifos,
    /// devices, sockets: opening a fifo or a device could block or wake a
    /// driver). `fstatat(AT_SYMLINK_NOFOLLOW)`, and the xattrs through
    /// `/proc/self/fd/<dir>/<name>` with `llistxattr`: the one way to read
    /// a symlink's own xattrs (`trusted.*`, `security.*`) relative to a
    /// descriptor (an `O_PATH` descriptor takes no `fgetxattr`). The magic
    /// link resolves to `dir` itself, so no path is resolved outside it.
    pub fn read_at(dir: &File, name: &CStr) -> io::Result<FileAttrs> {
        let st = nix::sys::stat::fstatat(
            Some(dir.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        let mut via_proc = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        via_proc.extend_from_slice(name.to_bytes());
        let xattrs = read_xattrs(Path::new(std::ffi::OsStr::from_bytes(&via_proc))).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound && !Path::new("/proc/self/fd").is_dir() {
                io::Error::other("its xattrs are read through /proc/self/fd, and /proc is not mounted: mount it (mount -t proc proc /proc)")
            } else {
                e
            }
        })?;
        Ok(FileAttrs::from_stat(&st, xattrs))
    }

    fn from_stat(st: &libc::stat, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> FileAttrs {
        let kind = FileKind::from_mode(st.st_mode);
        FileAttrs {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            size: if kind == FileKind::File {
                st.st_size as u64
            } else {
                0
            },
            rdev_major: libc::major(st.st_rdev),
            rdev_minor: libc::minor(st.st_rdev),
            nlink: st.st_nlink,
            dev: st.st_dev,
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
            xattrs,
        }
    }

    fn from_metadata(meta: &fs::Metadata, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> FileAttrs {
        let kind = FileKind::from_mode(meta.mode());
        let rdev = meta.rdev();
        FileAttrs {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec() as u32,
            size: if kind == FileKind::File {
                meta.size()
            } else {
                0
            },
            rdev_major: libc::major(rdev),
            rdev_minor: libc::minor(rdev),
            nlink: meta.nlink(),
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec() as u32),
            xattrs,
        }
    }
}

/// What changes when a file's content changes: size, mtime and ctime to
/// the nanosecond. Every write moves mtime and ctime, but to the kernel's
/// clock tick unless the filesystem has multigrain timestamps (Linux
/// 6.13+: ext4, xfs, btrfs, tmpfs): on older kernels a write in the same
/// tick as the one before it can leave the stamp as it was. So a stamp
/// that moved proves a change; one that did not is the best evidence
/// there is (no change counter reaches user space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of an open file now (one fstat).
    pub fn now(file: &File) -> io::Result<Stamp> {
        Ok(Stamp::of(&file.metadata()?))
    }

    /// What moved, for a message (`None`: nothing did).
    pub fn change_since(&self, before: &Stamp) -> Option<String> {
        if self.size != before.size {
            Some(format!(
                "size went from {} to {} bytes",
                before.size, self.size
            ))
        } else if self.mtime != before.mtime || self.ctime != before.ctime {
            Some("it was modified while it was read".into())
        } else {
            None
        }
    }
}

/// Every xattr of `path` itself (`llistxattr`, `lgetxattr`: a symlink is
/// not followed), sorted by name. A filesystem without xattr support has
/// none.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    collect_xattrs(names, |name| xattr::get(path, name))
}

/// Every xattr of an open file, sorted by name (no path lookup).
pub fn read_xattrs_fd(file: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use xattr::FileExt as _;
    let names = match file.list_xattr() {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    collect_xattrs(names, |name| file.get_xattr(name))
}

/// The value of each listed name. A name removed between the list and
/// the get (`ENODATA`, which the `xattr` crate gives as `None`) keeps an
/// empty value, as it always has.
fn collect_xattrs(
    names: xattr::XAttrs,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in names.filter(|n| !n.is_empty()) {
        let value = get(&name)?.unwrap_or_default();
        out.push((name.into_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Sets one xattr on `path` itself (`lsetxattr`).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    if name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "xattr name with NUL",
        ));
    }
    xattr::set(path, OsStr::from_bytes(name), value)
}

/// Restores owner, mode, xattrs and mtime on `path` (created by the
/// caller), in the order that keeps setuid bits and capabilities.
pub fn restore(path: &Path, attrs: &FileAttrs) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid))?;
    if attrs.kind != FileKind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(attrs.mode))?;
    }
    for (name, value) in &attrs.xattrs {
        set_xattr(path, name, value)?;
    }
    set_mtime(path, attrs.mtime, attrs.mtime_nsec)
}

/// Sets owner, mode, exactly these xattrs (others are removed) and mtime
/// on an open file or directory, through its descriptor: for what is
/// changed in place under a volume, where a path could be swapped for a
/// symlink between the open and the change.
pub fn restore_fd(
    file: &File,
    (uid, gid, mode): (u32, u32, u32),
    xattrs: &[(Vec<u8>, Vec<u8>)],
    mtime: (i64, u32),
) -> io::Result<()> {
    use std::os::fd::AsFd;
    use xattr::FileExt as _;
    nix::unistd::fchown(
        file.as_raw_fd(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )?;
    nix::sys::stat::fchmod(
        file.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
    )?;
    for name in file.list_xattr()? {
        if !xattrs.iter().any(|(n, _)| n.as_slice() == name.as_bytes()) {
            file.remove_xattr(&name)?;
        }
    }
    for (name, value) in xattrs {
        file.set_xattr(std::ffi::OsStr::from_bytes(name), value)?;
    }
    set_mtime_fd(file.as_fd(), mtime)
}

/// Sets atime and mtime of an open file to `mtime`.
pub fn set_mtime_fd(fd: std::os::fd::BorrowedFd<'_>, (sec, nsec): (i64, u32)) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(sec as libc::time_t, nsec as libc::c_long);
    nix::sys::stat::futimens(fd.as_raw_fd(), &t, &t)?;
    Ok(())
}

/// Sets atime and mtime of `path` itself to the given mtime.
pub fn set_mtime(path: &Path, sec: i64, nsec: u32) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(sec as libc::time_t, nsec as libc::c_long);
    nix::sys::stat::utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

/// Creates a fifo or device node at `path`.
pub fn make_node(path: &Path, kind: FileKind, major: u32, minor: u32) -> io::Result<()> {
    let (fmt, dev) = match kind {
        FileKind::Fifo => (SFlag::S_IFIFO, 0),
        FileKind::Char => (SFlag::S_IFCHR, libc::makedev(major, minor)),
        FileKind::Block => (SFlag::S_IFBLK, libc::makedev(major, minor)),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a node kind",
            ))
        }
    };
    nix::sys::stat::mknod(path, fmt, Mode::from_bits_truncate(0o600), dev)?;
    Ok(())
}

/// The data segments `(offset, length)` of a file with holes, or `None`
/// when it has none worth keeping (fewer allocated blocks than its size is
/// the cheap test; SEEK_DATA/SEEK_HOLE give the map).
pub fn data_segments(file: &File, size: u64, blocks: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    if size == 0 || blocks.saturating_mul(512) >= size {
        return Ok(None);
    }
    let fd = file.as_raw_fd();
    let mut segments = Vec::new();
    let mut pos: i64 = 0;
    let end = size as i64;
    while pos < end {
        let data = match lseek(fd, pos, Whence::SeekData) {
            Ok(data) => data,
            Err(Errno::ENXIO) => break,            // only a hole remains
            Err(Errno::EINVAL) => return Ok(None), // filesystem without SEEK_DATA
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(fd, data, Whence::SeekHole)?.min(end);
        if hole > data {
            segments.push((data as u64, (hole - data) as u64));
        }
        pos = hole;
    }
    // Rewind for the reader that follows (it reads from the start).
    lseek(fd, 0, Whence::SeekSet)?;
    let data_bytes: u64 = segments.iter().map(|s| s.1).sum();
    if data_bytes >= size {
        return Ok(None);
    }
    Ok(Some(segments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_and_restores_mode_owner_xattrs_and_nanosecond_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        fs::write(&a, b"x").unwrap();
        fs::set_permissions(&a, fs::Permissions::from_mode(0o4755)).unwrap();
        set_xattr(&a, b"user.k", b"v").unwrap();
        set_mtime(&a, 1_600_000_000, 123_456_789).unwrap();
        let attrs = FileAttrs::read(&a).unwrap();
        assert_eq!(attrs.mode, 0o4755);
        assert_eq!(attrs.mtime_nsec, 123_456_789);
        assert_eq!(attrs.xattrs, vec![(b"user.k".to_vec(), b"v".to_vec())]);

        let b = tmp.path().join("b");
        fs::write(&b, b"x").unwrap();
        let mut want = attrs.clone();
        want.uid = 1234;
        want.gid = 5678;
        restore(&b, &want).unwrap();
        let got = FileAttrs::read(&b).unwrap();
        assert_eq!(
            (got.uid, got.gid, got.mode, got.mtime, got.mtime_nsec),
            (1234, 5678, 0o4755, 1_600_000_000, 123_456_789)
        );
        assert_eq!(got.xattrs, want.xattrs);
    }

    #[test]
    fn symlinks_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("t");
        fs::write(&target, b"x").unwrap();
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let attrs = FileAttrs::read(&link).unwrap();
        assert_eq!(attrs.kind, FileKind::Symlink);
        set_mtime(&link, 1, 0).unwrap();
        assert_ne!(FileAttrs::read(&target).unwrap().mtime, 1);
    }

    #[test]
    fn finds_the_data_segments_of_a_sparse_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sparse");
        let mut f = File::create(&p).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        f.set_len(4 << 20).unwrap();
        drop(f);
        let f = File::open(&p).unwrap();
        let attrs = FileAttrs::read(&p).unwrap();
        let blocks = fs::metadata(&p).unwrap().blocks();
        let segs = data_segments(&f, attrs.size, blocks)
            .unwrap()
            .expect("sparse");
        assert_eq!(segs, vec![(1 << 20, 4096)]);
    }
}
