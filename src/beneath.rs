//! Opening files beneath a directory descriptor, never following a symlink
//! at any component: the primitive export reads a volume with.
//!
//! # Security
//! A path-based open (`open("<_data>/a/shadow", O_NOFOLLOW)`) checks only
//! the last component; the kernel resolves `a` as it finds it, and a
//! container writing its volume can make `a` a symlink to `/etc` at any
//! moment (`renameat2(RENAME_EXCHANGE)` swaps a directory and a symlink
//! atomically). Export then carried `/etc/shadow` and exited 0 (issue 7,
//! item 5). Here every component is resolved beneath a directory
//! descriptor, itself opened this way, with no symlink followed:
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//! on Linux 5.6+, else one `openat(O_NOFOLLOW)` per component (`O_PATH |
//! O_DIRECTORY` for the directories on the way).
//!
//! A descriptor follows its directory when it is renamed. A container
//! cannot move a directory out of its volume (`rename` across mounts fails
//! with EXDEV), so a descriptor opened inside the volume stays inside it.
//!
//! This module must never open by a path that is not relative to a
//! descriptor, except `DirFd::open`, the root of a walk (a data-root path:
//! root's, outside any container).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::NixPath;

/// Why a path beneath a directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("`{path}` is reached through a symlink (or is one): volmig never follows symlinks inside a volume; if it changed during the export, quiesce the container (volmig export --pause or --stop) and export again")]
    Symlink { path: PathBuf },
    #[error("`{path}` leads out of the directory it is opened in: volmig never opens a path outside the volume")]
    Escapes { path: PathBuf },
    #[error("cannot open `{path}`: too many open files (a tree deeper than the descriptor limit): raise it (ulimit -n 65536) and export again")]
    TooManyOpen { path: PathBuf },
    #[error("cannot open `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl OpenError {
    /// The path that could not be opened.
    pub fn path(&self) -> &Path {
        match self {
            OpenError::Symlink { path }
            | OpenError::Escapes { path }
            | OpenError::TooManyOpen { path }
            | OpenError::Io { path, .. } => path,
        }
    }

    /// The system error, when the kernel gave one other than a symlink.
    pub fn errno(&self) -> Option<i32> {
        match self {
            OpenError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn new(path: PathBuf, failure: Failure) -> OpenError {
        match failure {
            Failure::Symlink => OpenError::Symlink { path },
            Failure::Escapes => OpenError::Escapes { path },
            Failure::Errno(Errno::EMFILE | Errno::ENFILE) => OpenError::TooManyOpen { path },
            Failure::Errno(e) => OpenError::Io {
                path,
                source: io::Error::from(e),
            },
        }
    }
}

/// An open directory and the path it was reached by (for messages only:
/// nothing is ever opened by that path).
#[derive(Debug)]
pub struct DirFd {
    file: File,
    path: PathBuf,
}

impl DirFd {
    /// Opens `path` as the root of a walk. Its last component must not be
    /// a symlink (`O_NOFOLLOW`); the ones above it are the data-root's and
    /// resolve as usual (a data-root may well live behind a symlink).
    pub fn open(path: &Path) -> Result<DirFd, OpenError> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
                let is_link = path.symlink_metadata().is_ok_and(|m| m.is_symlink());
                let failure = if is_link {
                    Failure::Symlink
                } else {
                    Failure::Errno(errno)
                };
                OpenError::new(path.to_path_buf(), failure)
            })?;
        Ok(DirFd {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The path this directory was reached by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open directory, for fstat, flistxattr and `*at` calls.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Opens the directory `rel` beneath this one.
    pub fn open_dir(&self, rel: &Path) -> Result<DirFd, OpenError> {
        let fd = self.open_fd(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        Ok(DirFd {
            file: File::from(fd),
            path: self.path.join(rel),
        })
    }

    /// Opens the file `rel` beneath this one with `flags` (`O_NOFOLLOW` and
    /// `O_CLOEXEC` are always added).
    pub fn open_file(&self, rel: &Path, flags: OFlag) -> Result<File, OpenError> {
        Ok(File::from(self.open_fd(rel, flags)?))
    }

    fn open_fd(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd, OpenError> {
        open_beneath(
            self.file.as_fd(),
            rel,
            flags,
            openat2_works(self.file.as_fd()),
        )
        .map_err(|f| OpenError::new(self.path.join(rel), f))
    }
}

/// What went wrong, before the path is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Symlink,
    Escapes,
    Errno(Errno),
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether this kernel has openat2 (Linux 5.6+), found out once by opening
/// `.` of `dir`. ENOSYS: an older kernel; EPERM: a seccomp profile that
/// does not know it (Docker's before 20.10 answered unknown calls so).
fn openat2_works(dir: BorrowedFd<'_>) -> bool {
    match OPENAT2.load(Ordering::Relaxed) {
        YES => return true,
        NO => return false,
        _ => {}
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH);
    let works = openat2_owned(dir, c".", how).is_ok();
    OPENAT2.store(if works { YES } else { NO }, Ordering::Relaxed);
    works
}

/// Opens `rel` beneath `dir`, following no symlink at any component, with
/// openat2 when `use_openat2`, else by a walk of single-component opens.
fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    use_openat2: bool,
) -> Result<OwnedFd, Failure> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if use_openat2 {
        let how = OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        loop {
            return match openat2_owned(dir, rel, how) {
                Ok(fd) => Ok(fd),
                // A rename raced a `..` (we pass none, but the kernel may say so).
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(Errno::ELOOP) => Err(Failure::Symlink),
                Err(Errno::EXDEV) => Err(Failure::Escapes),
                // O_DIRECTORY on a trailing symlink says ENOTDIR: the walk
                // tells which (only on this error path).
                Err(Errno::ENOTDIR) => walk_beneath(dir, rel, flags)
                    .map(drop)
                    .and(Err(Failure::Errno(Errno::ENOTDIR))),
                Err(e) => Err(Failure::Errno(e)),
            };
        }
    }
    walk_beneath(dir, rel, flags)
}

/// The fallback for kernels without openat2: one `openat(O_NOFOLLOW)` per
/// component, the directories on the way with `O_PATH | O_DIRECTORY` (a
/// symlink there fails with ENOTDIR or ELOOP). `..` is refused outright:
/// no caller needs it, and refusing it is simpler than proving it stays
/// beneath.
fn walk_beneath(dir: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> Result<OwnedFd, Failure> {
    let components: Vec<&[u8]> = rel
        .as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if rel.as_os_str().as_bytes().starts_with(b"/") || components.contains(&&b".."[..]) {
        return Err(Failure::Escapes);
    }
    let Some((last, parents)) = components.split_last() else {
        return openat_owned(dir, c".", flags & !OFlag::O_NOFOLLOW);
    };
    let mut held: Option<OwnedFd> = None;
    for name in parents {
        let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
        let step = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let next = openat_owned(at, *name, step).map_err(|f| explain(at, name, f))?;
        held = Some(next);
    }
    let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
    openat_owned(at, *last, flags).map_err(|f| explain(at, last, f))
}

/// `openat2(2)` beneath `dir`, the new descriptor owned.
fn openat2_owned<P: ?Sized + NixPath>(
    dir: BorrowedFd<'_>,
    path: &P,
    how: OpenHow,
) -> Result<OwnedFd, Errno> {
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), path, how)?;
    // SAFETY: nix 0.29's `openat2` hands back the new descriptor as a bare
    // `RawFd` and has no variant that returns it owned, hence this block.
    // The descriptor was created by this very call and given to no one
    // else, so the `OwnedFd` is its one owner and closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat_owned<P: ?Sized + NixPath>(
    at: BorrowedFd<'_>,
    name: &P,
    flags: OFlag,
) -> Result<OwnedFd, Failure> {
    loop {
        return match nix::fcntl::openat(Some(at.as_raw_fd()), name, flags, Mode::empty()) {
            // SAFETY: nix 0.29's `openat` hands back the new descriptor as
            // a bare `RawFd` and has no variant that returns it owned. It
            // was created by this very call and given to no one else, so
            // the `OwnedFd` is its one owner and closes it exactly once.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(Failure::Errno(e)),
        };
    }
}

/// ELOOP or ENOTDIR on a name that is a symlink: say so.
fn explain(at: BorrowedFd<'_>, name: &[u8], failure: Failure) -> Failure {
    if !matches!(failure, Failure::Errno(Errno::ELOOP | Errno::ENOTDIR)) {
        return failure;
    }
    let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    match fstatat(Some(at.as_raw_fd()), name, flags) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
            Failure::Symlink
        }
        _ => failure,
    }
}

/// A single name as a path for `DirFd::open_*`.
pub fn name_path(name: &CStr) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// A volume `v` holding `a/b/file`, and `outside/b/file` (a canary)
    /// next to it.
    fn volume_and_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("v");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(volume.join("a/b")).unwrap();
        fs::write(volume.join("a/b/file"), b"inside").unwrap();
        fs::create_dir_all(outside.join("b")).unwrap();
        fs::write(outside.join("b/file"), b"CANARY").unwrap();
        (tmp, volume, outside)
    }

    fn read_beneath(dir: &DirFd, rel: &str, use_openat2: bool) -> Result<Vec<u8>, Failure> {
        let fd = open_beneath(
            dir.file.as_fd(),
            Path::new(rel),
            OFlag::O_RDONLY,
            use_openat2,
        )?;
        let mut out = Vec::new();
        File::from(fd).read_to_end(&mut out).unwrap();
        Ok(out)
    }

    fn modes() -> Vec<bool> {
        // The openat2 path only where the kernel has it; the walk always.
        let tmp = tempfile::tempdir().unwrap();
        let probe = DirFd::open(tmp.path()).unwrap();
        let mut modes = vec![false];
        if openat2_works(probe.file.as_fd()) {
            modes.push(true);
        }
        modes
    }

    #[test]
    fn opens_a_path_beneath_the_directory() {
        let (_tmp, volume, _) = volume_and_outside();
        let dir = DirFd::open(&volume).unwrap();
        for use_openat2 in modes() {
            assert_eq!(
                read_beneath(&dir, "a/b/file", use_openat2).unwrap(),
                b"inside"
            );
        }
        let sub = dir.open_dir(Path::new("a")).unwrap();
        assert_eq!(sub.path(), volume.join("a"));
        let f = sub.open_file(Path::new("b/file"), OFlag::O_RDONLY).unwrap();
        assert!(f.metadata().unwrap().is_file());
    }

    /// Issue 7 item 5, the primitive: `a` swapped for a symlink to a
    /// directory outside the volume after it was listed.
    #[test]
    fn a_directory_swapped_for_a_symlink_to_outside_is_never_followed() {
        let (_tmp, volume, outside) = volume_and_outside();
        let dir = DirFd::open(&volume).unwrap();
        fs::rename(volume.join("a"), volume.join("a.moved")).unwrap();
        symlink(&outside, volume.join("a")).unwrap();
        for use_openat2 in modes() {
            assert_eq!(
                read_beneath(&dir, "a/b/file", use_openat2),
                Err(Failure::Symlink),
                "openat2: {use_openat2}"
            );
        }
        let err = dir
            .open_file(Path::new("a/b/file"), OFlag::O_RDONLY)
            .unwrap_err();
        assert_eq!(err.path(), volume.join("a/b/file"));
        let text = err.to_string();
        assert!(text.contains(&format!("`{}`", volume.join("a/b/file").display())));
        assert!(
            text.contains("symlink") && text.contains("--pause"),
            "{text}"
        );
        assert!(matches!(
            dir.open_dir(Path::new("a")),
            Err(OpenError::Symlink { .. })
        ));
    }

    #[test]
    fn a_relative_symlink_inside_and_dotdot_are_refused_too() {
        let (_tmp, volume, _) = volume_and_outside();
        symlink("a", volume.join("alias")).unwrap();
        symlink("b/file", volume.join("a/flink")).unwrap();
        let dir = DirFd::open(&volume).unwrap();
        for use_openat2 in modes() {
            assert_eq!(
                read_beneath(&dir, "alias/b/file", use_openat2),
                Err(Failure::Symlink)
            );
            assert_eq!(
                read_beneath(&dir, "a/flink", use_openat2),
                Err(Failure::Symlink)
            );
            assert_eq!(
                read_beneath(&dir, "../outside/b/file", use_openat2),
                Err(Failure::Escapes)
            );
            assert_eq!(
                read_beneath(&dir, "/etc/passwd", use_openat2),
                Err(Failure::Escapes)
            );
        }
    }

    #[test]
    fn the_root_of_a_walk_must_not_be_a_symlink() {
        let (_tmp, volume, outside) = volume_and_outside();
        let link = volume.join("to-outside");
        symlink(&outside, &link).unwrap();
        assert!(matches!(DirFd::open(&link), Err(OpenError::Symlink { .. })));
    }
}
