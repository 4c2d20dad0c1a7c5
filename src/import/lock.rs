//! One import (or recovery) at a time per data-root: an exclusive flock on
//! the data-root directory itself, held from before the bundle is read
//! until the import has committed and cleaned up.
//!
//! It is volmig's own lock, independent of metadata.db's (which dockerd
//! holds while it runs): two imports must never stage, judge conflicts or
//! commit at the same time, and whoever holds this lock knows that every
//! other staging directory belongs to a dead process (no PID guesswork:
//! `kill(pid, 0)` is wrong across PID namespaces and after PID reuse).
//! The directory is the same inode from every mount namespace and every
//! path to it (bind mounts, symlinked roots), nothing is written to take
//! it (an import refused for bad input leaves the data-root exactly as it
//! was), and the kernel drops it when its holder dies, SIGKILL included.
//! dockerd does not flock its data-root.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

/// Largest /proc/locks read to name a holder.
const MAX_PROC_LOCKS: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another volmig import is running on this data-root ({holder}; it holds a lock on `{path}`): wait for it to finish, or re-run with --wait")]
    Held { path: PathBuf, holder: String },
    #[error("cannot lock `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("interrupted while waiting for the import running on `{path}`")]
    Interrupted { path: PathBuf },
}

/// The held lock; released when dropped (or when the process dies).
pub struct ImportLock {
    _dir: Flock<File>,
}

fn open_dir(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

impl ImportLock {
    /// Takes the lock on the data-root `dir`. With `wait`, polls until the
    /// holder releases it (a signal ends the wait); otherwise fails at
    /// once, naming the holder.
    pub fn acquire(dir: &Path, wait: bool) -> Result<ImportLock, LockError> {
        let io_err = |source| LockError::Io {
            path: dir.to_path_buf(),
            source,
        };
        loop {
            let file = open_dir(dir).map_err(io_err)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => return Ok(ImportLock { _dir: locked }),
                Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                    if !wait {
                        return Err(LockError::Held {
                            path: dir.to_path_buf(),
                            holder: holder(&file),
                        });
                    }
                    if crate::interrupt::requested().is_some() {
                        return Err(LockError::Interrupted {
                            path: dir.to_path_buf(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, errno)) => return Err(io_err(io::Error::from(errno))),
            }
        }
    }
}

/// Whether an import holds the lock on the data-root `dir` now.
pub fn is_held(dir: &Path) -> bool {
    let Ok(file) = open_dir(dir) else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// Who holds a flock on `file`, from /proc/locks (`pid N: volmig import
/// ...`), for the message a second import prints.
fn holder(file: &File) -> String {
    use std::io::Read;
    let Ok(meta) = file.metadata() else {
        return "holder unknown".into();
    };
    let dev = meta.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let mut text = String::new();
    if let Ok(f) = File::open("/proc/locks") {
        let _ = f.take(MAX_PROC_LOCKS).read_to_string(&mut text);
    }
    // "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF"
    let pid = text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_ours = fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&want.as_str());
        is_ours
            .then(|| fields.get(4).map(|p| p.to_string()))
            .flatten()
    });
    let Some(pid) = pid else {
        return "holder unknown".into();
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command: String = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    match command.is_empty() {
        true => format!("pid {pid}"),
        false => format!("pid {pid}: {command}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = ImportLock::acquire(dir.path(), false).unwrap();
        assert!(is_held(dir.path()));
        let err = match ImportLock::acquire(dir.path(), false) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a second lock must fail"),
        };
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("--wait"), "{err}");
    }

    #[test]
    fn the_lock_is_free_again_once_dropped_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        drop(ImportLock::acquire(dir.path(), false).unwrap());
        assert!(!is_held(dir.path()));
        assert!(ImportLock::acquire(dir.path(), false).is_ok());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
